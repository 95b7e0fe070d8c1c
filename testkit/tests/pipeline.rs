//! The spine end to end, on real moto, tansu and HTTP: hold, pay, outbox, stream,
//! relay, Kafka, notifier, Telegram.

use aws_sdk_dynamodb::types::AttributeValue;
use rdkafka::message::{Headers, Message};
use shared::events::{EventEnvelope, EventType, PaymentCompleted};
use std::time::Duration;
use testkit::{CHAT_ID, Options, TestPipeline, consume, kafka, seed};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hold_and_pay_sends_exactly_one_telegram_message_with_the_payment_text() {
    let p = TestPipeline::start(Options::default()).await;
    let s = seed(&p.repo, 2, 1, 200_000, 150_000).await;
    let fan = &s.users[0];

    let (status, held) = p.hold(&fan.jwt, s.seats[0].id).await;
    assert_eq!(status, 201, "{held}");
    assert_eq!(held["status"], "PENDING");
    assert_eq!(held["amount"], 150_000);
    let reservation = held["reservationId"].as_str().unwrap().to_owned();

    let (status, paid) = p.pay(&fan.jwt, &reservation).await;
    assert_eq!(status, 200, "{paid}");
    assert_eq!(paid["status"], "CONFIRMED");
    assert_eq!(paid["amount"], 150_000);

    p.wait_for_messages(1, Duration::from_secs(30)).await;
    // A duplicate would have arrived before a marker sent behind the payment.
    p.settle(&[&reservation]).await;
    let messages = p.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    let text = &messages[0].text;
    assert_eq!(messages[0].chat_id, CHAT_ID);
    assert!(text.starts_with("[결제 완료]"), "{text}");
    assert!(
        text.contains(&format!("예약자: {}", fan.user.mail.as_str())),
        "{text}"
    );
    assert!(text.contains("공연: 아이유 콘서트"), "{text}");
    assert!(text.contains("공연 시작: 2026-12-24 19:00 (KST)"), "{text}");
    assert!(text.contains("결제 금액: 150,000원"), "{text}");
    assert!(
        text.contains("공연 시작 10분 전까지 입장해 주세요."),
        "{text}"
    );

    let user = p.repo.user(fan.user.id).await.unwrap().unwrap();
    assert_eq!(user.balance.amount(), 50_000);
    let (status, shown) = p
        .get(&format!("/reservations/{reservation}"), Some(&fan.jwt))
        .await;
    assert_eq!(status, 200);
    assert_eq!(shown["status"], "CONFIRMED");
    assert_eq!(shown["paymentId"], paid["paymentId"]);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_kafka_record_is_keyed_by_reservation_with_event_headers_and_the_envelope() {
    let p = TestPipeline::start(Options::default()).await;
    let s = seed(&p.repo, 1, 1, 100_000, 70_000).await;
    let fan = &s.users[0];
    let (_, held) = p.hold(&fan.jwt, s.seats[0].id).await;
    let reservation = held["reservationId"].as_str().unwrap().to_owned();
    let (status, paid) = p.pay(&fan.jwt, &reservation).await;
    assert_eq!(status, 200, "{paid}");

    let records = consume(
        &kafka().bootstrap_servers,
        &p.topics.payment_completed,
        1,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(records.len(), 1);
    let record = &records[0];
    assert_eq!(record.key(), Some(reservation.as_bytes()));
    let envelope = EventEnvelope::from_json(record.payload().unwrap()).unwrap();
    let headers = record.headers().unwrap();
    let header = |name: &str| {
        headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
    };
    assert_eq!(header("event-id"), Some(envelope.event_id.to_string()));
    assert_eq!(header("event-type").as_deref(), Some("PaymentCompleted"));
    assert_eq!(envelope.aggregate_type, "Reservation");
    assert_eq!(envelope.aggregate_id, reservation);
    assert_eq!(envelope.schema_version, 1);
    let payload: PaymentCompleted = envelope.decode(EventType::PaymentCompleted).unwrap();
    assert_eq!(
        payload.payment_id.to_string(),
        paid["paymentId"].as_str().unwrap()
    );
    assert_eq!(payload.customer.user_id, fan.user.id);
    assert_eq!(payload.customer.mail, fan.user.mail);
    assert_eq!(payload.concert.title, "아이유 콘서트");
    assert_eq!(payload.seat.id, s.seats[0].id);
    assert_eq!(payload.amount_krw.amount(), 70_000);
    p.stop().await;
}

/// An outbox INSERT that can never be published (here: not an outbox item at
/// all) is skipped by the relay: the payment written after it still reaches its
/// customer, once, and nothing of it reaches Kafka.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_outbox_record_that_can_never_be_published_never_holds_up_the_ones_behind_it() {
    let p = TestPipeline::start(Options::default()).await;
    let s = seed(&p.repo, 1, 1, 100_000, 50_000).await;
    let fan = &s.users[0];
    p.dynamodb
        .put_item()
        .table_name(&p.tables.outbox)
        .item("pk", AttributeValue::S(testkit::unique("not-an-event")))
        .item("note", AttributeValue::S("written by hand".into()))
        .send()
        .await
        .unwrap();

    let (status, held) = p.hold(&fan.jwt, s.seats[0].id).await;
    assert_eq!(status, 201, "{held}");
    let reservation = held["reservationId"].as_str().unwrap().to_owned();
    let (status, paid) = p.pay(&fan.jwt, &reservation).await;
    assert_eq!(status, 200, "{paid}");

    p.wait_for_messages(1, Duration::from_secs(30)).await;
    p.settle(&[&reservation]).await;
    assert_eq!(p.messages().len(), 1);
    let records = consume(
        &kafka().bootstrap_servers,
        &p.topics.payment_completed,
        1,
        Duration::from_secs(10),
    )
    .await;
    // The payment's record (and the settling marker's, of the same reservation):
    // nothing of the hand-written item.
    assert!(!records.is_empty());
    assert!(
        records
            .iter()
            .all(|r| r.key() == Some(reservation.as_bytes())),
        "only the reservation's records"
    );
    p.stop().await;
}
