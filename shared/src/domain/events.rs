//! The event envelope every Kafka record carries, and the events of the domain.

use super::{
    Concert, ConcertId, EventId, Mail, Money, PaymentId, Reservation, ReservationId, SeatId, UserId,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// A record or event that can never be read: retrying it fails the same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event is malformed: {0}")]
pub struct MalformedEvent(pub String);

/// Kafka header with the event id, so a consumer can deduplicate without parsing the value.
pub const HEADER_EVENT_ID: &str = "event-id";
/// Kafka header with the event type.
pub const HEADER_EVENT_TYPE: &str = "event-type";

/// The type of an event: `eventType` in the envelope, the `event-type` header and
/// the outbox item, spelled as `as_str` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    PaymentCompleted,
    SeatHoldExpired,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::PaymentCompleted => "PaymentCompleted",
            EventType::SeatHoldExpired => "SeatHoldExpired",
        }
    }

    pub fn schema_version(self) -> u32 {
        1
    }

    pub fn aggregate_type(self) -> &'static str {
        match self {
            EventType::PaymentCompleted | EventType::SeatHoldExpired => "Reservation",
        }
    }

    pub fn parse(text: &str) -> Result<Self, MalformedEvent> {
        match text {
            "PaymentCompleted" => Ok(EventType::PaymentCompleted),
            "SeatHoldExpired" => Ok(EventType::SeatHoldExpired),
            other => Err(MalformedEvent(format!("unknown event type {other:?}"))),
        }
    }
}

/// The JSON value of every record, as ARCHITECTURE.md specifies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventEnvelope {
    pub event_id: EventId,
    pub event_type: EventType,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub occurred_at: DateTime<Utc>,
    pub schema_version: u32,
    pub payload: serde_json::Value,
}

impl EventEnvelope {
    fn new<P: Serialize>(
        event_id: EventId,
        event_type: EventType,
        aggregate_id: String,
        occurred_at: DateTime<Utc>,
        payload: &P,
    ) -> Self {
        EventEnvelope {
            event_id,
            event_type,
            aggregate_type: event_type.aggregate_type().to_owned(),
            aggregate_id,
            occurred_at,
            schema_version: event_type.schema_version(),
            // The payloads are the plain structs below (ids, strings, numbers,
            // times): serialising them cannot fail.
            payload: serde_json::to_value(payload).expect("an event payload always serialises"),
        }
    }

    pub fn payment_completed(event_id: EventId, payload: &PaymentCompleted) -> Self {
        Self::new(
            event_id,
            EventType::PaymentCompleted,
            payload.reservation_id.to_string(),
            payload.paid_at,
            payload,
        )
    }

    pub fn seat_hold_expired(event_id: EventId, payload: &SeatHoldExpired) -> Self {
        Self::new(
            event_id,
            EventType::SeatHoldExpired,
            payload.reservation_id.to_string(),
            payload.released_at,
            payload,
        )
    }

    pub fn to_json(&self) -> String {
        // An envelope is plain data (strings, numbers, a JSON value): serialising
        // it cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, MalformedEvent> {
        serde_json::from_slice(bytes)
            .map_err(|e| MalformedEvent(format!("the value is not an event envelope: {e}")))
    }

    /// The payload as the event type's struct, checking type and schema version.
    pub fn decode<P: DeserializeOwned>(&self, expected: EventType) -> Result<P, MalformedEvent> {
        let actual = self.event_type;
        if actual != expected {
            return Err(MalformedEvent(format!(
                "expected a {} event, got {}",
                expected.as_str(),
                actual.as_str()
            )));
        }
        if self.schema_version != expected.schema_version() {
            return Err(MalformedEvent(format!(
                "{} schema version {} is not supported (expected {})",
                actual.as_str(),
                self.schema_version,
                expected.schema_version()
            )));
        }
        serde_json::from_value(self.payload.clone())
            .map_err(|e| MalformedEvent(format!("{} payload: {e}", expected.as_str())))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Customer {
    pub user_id: UserId,
    pub mail: Mail,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConcertInfo {
    pub id: ConcertId,
    pub title: String,
    pub starts_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeatInfo {
    pub id: SeatId,
    pub number: u32,
}

impl Customer {
    /// The customer who made `reservation`, with their mail as it was then.
    pub fn of(reservation: &Reservation) -> Self {
        Customer {
            user_id: reservation.user_id,
            mail: reservation.mail.clone(),
        }
    }
}

impl From<&Concert> for ConcertInfo {
    fn from(concert: &Concert) -> Self {
        ConcertInfo {
            id: concert.id,
            title: concert.title.clone(),
            starts_at: concert.starts_at,
        }
    }
}

impl SeatInfo {
    /// The seat `reservation` holds.
    pub fn of(reservation: &Reservation) -> Self {
        SeatInfo {
            id: reservation.seat_id,
            number: reservation.seat_number,
        }
    }
}

/// What the customer's payment notification needs, so the notifier reads nothing else.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentCompleted {
    pub payment_id: PaymentId,
    pub reservation_id: ReservationId,
    pub customer: Customer,
    pub concert: ConcertInfo,
    pub seat: SeatInfo,
    pub amount_krw: Money,
    pub paid_at: DateTime<Utc>,
}

impl PaymentCompleted {
    pub fn new(payment_id: PaymentId, reservation: &Reservation, paid_at: DateTime<Utc>) -> Self {
        PaymentCompleted {
            payment_id,
            reservation_id: reservation.id,
            customer: Customer::of(reservation),
            concert: ConcertInfo::from(&reservation.concert),
            seat: SeatInfo::of(reservation),
            amount_krw: reservation.amount,
            paid_at,
        }
    }
}

/// A hold ran out and the seat was released: what the customer is told.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeatHoldExpired {
    pub reservation_id: ReservationId,
    pub customer: Customer,
    pub concert: ConcertInfo,
    pub seat: SeatInfo,
    pub hold_expired_at: DateTime<Utc>,
    pub released_at: DateTime<Utc>,
}

impl SeatHoldExpired {
    pub fn new(reservation: &Reservation, released_at: DateTime<Utc>) -> Self {
        SeatHoldExpired {
            reservation_id: reservation.id,
            customer: Customer::of(reservation),
            concert: ConcertInfo::from(&reservation.concert),
            seat: SeatInfo::of(reservation),
            hold_expired_at: reservation.hold_expires_at,
            released_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PaymentCompleted {
        crate::fixtures::payment_completed(ReservationId::random(), "kim@example.com", 150_000)
    }

    #[test]
    fn the_envelope_carries_the_contract_fields_in_camel_case() {
        let p = sample();
        let env = EventEnvelope::payment_completed(EventId::random(), &p);
        let json: serde_json::Value = serde_json::from_str(&env.to_json()).unwrap();
        for field in [
            "eventId",
            "eventType",
            "aggregateType",
            "aggregateId",
            "occurredAt",
            "schemaVersion",
            "payload",
        ] {
            assert!(json.get(field).is_some(), "missing {field}");
        }
        assert_eq!(json["eventType"], "PaymentCompleted");
        assert_eq!(json["aggregateId"], p.reservation_id.to_string());
        assert_eq!(json["payload"]["amountKrw"], 150_000);
        assert_eq!(json["payload"]["customer"]["mail"], "kim@example.com");
    }

    #[test]
    fn an_envelope_round_trips_and_decodes_its_payload() {
        let p = sample();
        let env = EventEnvelope::payment_completed(EventId::random(), &p);
        let back = EventEnvelope::from_json(env.to_json().as_bytes()).unwrap();
        assert_eq!(back, env);
        let decoded: PaymentCompleted = back.decode(EventType::PaymentCompleted).unwrap();
        assert_eq!(decoded, p);
    }

    #[test]
    fn decoding_refuses_an_unknown_type_or_schema_version() {
        let mut env = EventEnvelope::payment_completed(EventId::random(), &sample());
        env.schema_version = 9;
        let err = env
            .decode::<PaymentCompleted>(EventType::PaymentCompleted)
            .unwrap_err();
        assert!(err.to_string().contains("schema version 9"), "{err}");
        let mut json = serde_json::to_value(&env).unwrap();
        json["eventType"] = "Refunded".into();
        let err = EventEnvelope::from_json(json.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("Refunded"), "{err}");
    }

    #[test]
    fn a_value_that_is_not_an_envelope_is_malformed() {
        assert!(matches!(
            EventEnvelope::from_json(b"{\"hello\":1}"),
            Err(MalformedEvent(_))
        ));
    }
}
