//! A record that can be delivered: parsed once, at the edge, so a poison record
//! is told apart from a channel's failure before anything is sent.

use crate::Error;
use crate::events::{EventEnvelope, HEADER_EVENT_ID};
use crate::idempotency::payload_hash;
use crate::kafka_event::DecodedRecord;
use crate::notification::{self, Notification};

/// A record value above this is poison: an event envelope is a few hundred bytes.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

/// An event record that parsed: its envelope, the customer's message rendered
/// from it, and the hash of its value (the idempotency records' payload hash).
#[derive(Clone, Debug)]
pub struct Letter {
    pub envelope: EventEnvelope,
    pub notification: Notification,
    pub payload_hash: String,
}

impl Letter {
    /// Parses a record. An error means a poison record (no value, above
    /// `MAX_RECORD_BYTES`, not an envelope, an unknown event type or schema, a
    /// missing field, an `event-id` header that does not match): it will fail
    /// the same way every time.
    pub fn parse(record: &DecodedRecord) -> Result<Letter, Error> {
        let value = record
            .value
            .as_deref()
            .ok_or_else(|| Error::malformed("the record has no value"))?;
        if value.len() > MAX_RECORD_BYTES {
            return Err(Error::malformed(format!(
                "the record is {} bytes; the limit is {MAX_RECORD_BYTES}",
                value.len()
            )));
        }
        let envelope = EventEnvelope::from_json(value)?;
        if let Some(header) = record.header(HEADER_EVENT_ID)
            && header != envelope.event_id.to_string()
        {
            return Err(Error::malformed(format!(
                "the event-id header {header} does not match the envelope's {}",
                envelope.event_id
            )));
        }
        let notification = notification::for_event(&envelope)?;
        Ok(Letter {
            envelope,
            notification,
            payload_hash: payload_hash(value),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MalformedEvent;
    use crate::domain::ReservationId;

    fn record() -> DecodedRecord {
        let envelope =
            crate::fixtures::payment_completed_envelope(ReservationId::random(), "a@b.c", 1_000);
        crate::fixtures::record_of(&envelope, "payment.completed", 3)
    }

    fn reason(record: &DecodedRecord) -> String {
        match Letter::parse(record) {
            Err(Error::Malformed(MalformedEvent(reason))) => reason,
            other => panic!("expected a malformed event, got {other:?}"),
        }
    }

    #[test]
    fn a_payment_record_parses_into_its_envelope_and_message() {
        let letter = Letter::parse(&record()).unwrap();
        assert_eq!(letter.notification.event_id, letter.envelope.event_id);
        assert!(letter.notification.text.contains("1,000원"));
    }

    #[test]
    fn a_record_without_a_value_or_above_the_limit_is_poison() {
        let mut empty = record();
        empty.value = None;
        assert_eq!(reason(&empty), "the record has no value");
        let mut big = record();
        big.value = Some(vec![b' '; MAX_RECORD_BYTES + 1]);
        assert!(reason(&big).contains("the limit is 65536"));
    }

    #[test]
    fn an_event_id_header_that_does_not_match_the_envelope_is_poison() {
        let mut r = record();
        for (name, value) in r.headers.iter_mut() {
            if name == HEADER_EVENT_ID {
                *value = b"another-event".to_vec();
            }
        }
        assert!(reason(&r).contains("another-event"));
    }
}
