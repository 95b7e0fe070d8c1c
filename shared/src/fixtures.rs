//! Sample events for tests (feature `fixtures`; never in a function's build).

use crate::domain::{ConcertId, EventId, Mail, Money, PaymentId, ReservationId, SeatId, UserId};
use crate::events::{ConcertInfo, Customer, EventEnvelope, PaymentCompleted, SeatInfo};
use crate::kafka_event::DecodedRecord;

/// A PaymentCompleted of `reservation` for a customer with `mail`.
pub fn payment_completed(reservation: ReservationId, mail: &str, amount: i64) -> PaymentCompleted {
    PaymentCompleted {
        payment_id: PaymentId::random(),
        reservation_id: reservation,
        customer: Customer {
            user_id: UserId::random(),
            mail: Mail::parse(mail).expect("a valid sample mail"),
        },
        concert: ConcertInfo {
            id: ConcertId::random(),
            title: "아이유 콘서트".into(),
            starts_at: "2026-12-24T10:00:00Z".parse().expect("a valid time"),
        },
        seat: SeatInfo {
            id: SeatId::random(),
            number: 3,
        },
        amount_krw: Money::krw(amount).expect("a valid amount"),
        paid_at: "2026-11-21T05:30:00Z".parse().expect("a valid time"),
    }
}

/// The envelope of a sample PaymentCompleted, with a new event id.
pub fn payment_completed_envelope(
    reservation: ReservationId,
    mail: &str,
    amount: i64,
) -> EventEnvelope {
    EventEnvelope::payment_completed(
        EventId::random(),
        &payment_completed(reservation, mail, amount),
    )
}

/// `envelope` as the relay publishes it (key = aggregate id, `event-id`
/// header), read back from `topic` at partition 0, `offset`.
pub fn record_of(envelope: &EventEnvelope, topic: &str, offset: i64) -> DecodedRecord {
    DecodedRecord {
        topic: topic.to_owned(),
        partition: 0,
        offset,
        timestamp_ms: chrono::Utc::now().timestamp_millis(),
        key: Some(envelope.aggregate_id.clone().into_bytes()),
        value: Some(envelope.to_json().into_bytes()),
        headers: vec![(
            "event-id".into(),
            envelope.event_id.to_string().into_bytes(),
        )],
    }
}

/// The DynamoDB Streams record of `envelope`'s outbox item being inserted, with
/// sequence number `seq`: what the relay receives.
pub fn outbox_insert(
    envelope: &EventEnvelope,
    seq: u64,
) -> aws_lambda_events::dynamodb::EventRecord {
    outbox_insert_of(
        crate::outbox::OutboxItem::new(envelope, chrono::Utc::now()),
        seq,
    )
}

/// The stream's INSERT record of `item`, at sequence number `seq`.
pub fn outbox_insert_of(
    item: crate::outbox::OutboxItem,
    seq: u64,
) -> aws_lambda_events::dynamodb::EventRecord {
    let mut record = aws_lambda_events::dynamodb::EventRecord::default();
    record.event_name = "INSERT".into();
    record.change.sequence_number = Some(format!("{seq:021}"));
    record.change.new_image = serde_dynamo::to_item(item).expect("an outbox item serialises");
    record
}

/// The letter of `envelope`, as a consumer parses it from its record.
pub fn letter_of(envelope: &EventEnvelope) -> crate::delivery::Letter {
    crate::delivery::Letter::parse(&record_of(envelope, "payment.completed", 0))
        .expect("a fixture envelope is a letter")
}
