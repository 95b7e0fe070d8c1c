//! The data platform's contract: what it is sent for each event and what it
//! answers. The platform (another team's service) must receive every ticket
//! sale once; it deduplicates by `eventId`, so a batch sent again after a lost
//! answer is harmless.
//!
//! - Request: `POST {DATA_PLATFORM_URL}/v1/events`, `Authorization: Bearer
//!   <API key>`, a JSON array of [`PlatformEvent`]s in offset order.
//! - 200: a [`BatchAnswer`]: each event `accepted`, a `duplicate` of one it
//!   already has (both delivered), or `rejected` with a reason (that event
//!   only is refused for good; the others went through).
//! - 429 (with `Retry-After`) and 5xx: nothing of the batch was taken; retried.
//! - 401, 403: the API key is refused; 400, 413, 422: the request as a whole
//!   is refused. Neither passes by retrying.
//!
//! The customer's mail never leaves the system: the platform gets
//! `customerPseudonym`, HMAC-SHA256 of the user id under a key of ours
//! (`DATA_PLATFORM_PSEUDONYM_KEY`), hex: stable for one customer across events
//! and runs, so the platform can count a customer's purchases, and not
//! reversible without the key.

use crate::domain::UserId;
use crate::error::MalformedEvent;
use crate::events::EventEnvelope;
use chrono::{DateTime, Utc};
use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};

/// What the platform is sent of one event: the envelope, with the payload's
/// `customer` replaced by `customerPseudonym`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlatformEvent {
    pub event_id: String,
    pub event_type: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub occurred_at: DateTime<Utc>,
    pub schema_version: u32,
    pub payload: serde_json::Value,
}

/// What the platform answers a batch with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchAnswer {
    /// Event ids the platform took now.
    #[serde(default)]
    pub accepted: Vec<String>,
    /// Event ids it already had: delivered before.
    #[serde(default)]
    pub duplicates: Vec<String>,
    /// Events it refuses for good, each with why.
    #[serde(default)]
    pub rejected: Vec<Rejection>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejection {
    pub event_id: String,
    pub reason: String,
}

impl BatchAnswer {
    /// The reason `event_id` was refused, if it was.
    pub fn rejection_of(&self, event_id: &str) -> Option<&str> {
        self.rejected
            .iter()
            .find(|r| r.event_id == event_id)
            .map(|r| r.reason.as_str())
    }

    /// Whether the platform has `event_id` now (taken, or had it already).
    pub fn has(&self, event_id: &str) -> bool {
        self.accepted
            .iter()
            .chain(&self.duplicates)
            .any(|id| id == event_id)
    }

    /// What the answer means for `event_id`: delivered, refused for good with
    /// the platform's reason, or not named at all (it may have it: asking
    /// again is harmless, so that is retried).
    pub fn result_for(&self, event_id: &str) -> Result<(), crate::Error> {
        if self.has(event_id) {
            return Ok(());
        }
        let (retryable, message) = match self.rejection_of(event_id) {
            Some(reason) => (
                false,
                format!("the data platform refused event {event_id}: {reason}"),
            ),
            None => (
                true,
                format!("the data platform's answer does not name event {event_id}"),
            ),
        };
        Err(crate::InfraError::Channel {
            channel: crate::notification::ChannelKind::DataPlatform.name(),
            retryable,
            maybe_delivered: retryable,
            retry_after: None,
            message,
            source: None,
        }
        .into())
    }
}

/// The key customer pseudonyms are made with.
#[derive(Clone)]
pub struct PseudonymKey(Vec<u8>);

impl std::fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PseudonymKey(..)")
    }
}

impl PseudonymKey {
    pub fn new(key: &[u8]) -> Self {
        PseudonymKey(key.to_vec())
    }

    /// The customer's pseudonym: hex HMAC-SHA256 of the user id.
    pub fn pseudonym(&self, user: &str) -> String {
        // HMAC takes a key of any length: this cannot fail.
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.0)
            .expect("HMAC accepts any key length");
        mac.update(user.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

impl PlatformEvent {
    /// `envelope` as the platform is sent it: its customer (user id and mail)
    /// replaced by the user's pseudonym. An event without a customer is poison.
    pub fn of(envelope: &EventEnvelope, key: &PseudonymKey) -> Result<Self, MalformedEvent> {
        let mut payload = envelope.payload.clone();
        let customer = payload
            .as_object_mut()
            .and_then(|p| p.remove("customer"))
            .ok_or_else(|| MalformedEvent("the event names no customer".into()))?;
        let user: UserId = customer
            .get("userId")
            .and_then(|u| u.as_str())
            .and_then(|u| UserId::parse(u).ok())
            .ok_or_else(|| MalformedEvent("the event's customer has no valid userId".into()))?;
        if let Some(fields) = payload.as_object_mut() {
            fields.insert(
                "customerPseudonym".into(),
                key.pseudonym(&user.to_string()).into(),
            );
        }
        Ok(PlatformEvent {
            event_id: envelope.event_id.to_string(),
            event_type: envelope.event_type.as_str().to_owned(),
            aggregate_type: envelope.aggregate_type.clone(),
            aggregate_id: envelope.aggregate_id.clone(),
            occurred_at: envelope.occurred_at,
            schema_version: envelope.schema_version,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ReservationId;

    fn envelope() -> EventEnvelope {
        crate::fixtures::payment_completed_envelope(
            ReservationId::random(),
            "fan@example.com",
            150_000,
        )
    }

    #[test]
    fn the_platform_gets_a_pseudonym_and_never_the_mail_or_the_user_id() {
        let key = PseudonymKey::new(b"pseudonym-key");
        let envelope = envelope();
        let user = envelope.payload["customer"]["userId"]
            .as_str()
            .unwrap()
            .to_owned();
        let event = PlatformEvent::of(&envelope, &key).unwrap();
        let text = serde_json::to_string(&event).unwrap();
        assert!(!text.contains("fan@example.com"), "{text}");
        assert!(!text.contains(&user), "{text}");
        assert_eq!(event.payload["customerPseudonym"], key.pseudonym(&user));
        assert_eq!(event.event_id, envelope.event_id.to_string());
        assert_eq!(event.payload["amountKrw"], envelope.payload["amountKrw"]);
    }

    #[test]
    fn a_pseudonym_is_stable_per_customer_and_depends_on_the_key() {
        let key = PseudonymKey::new(b"k1");
        assert_eq!(key.pseudonym("u-1"), key.pseudonym("u-1"));
        assert_ne!(key.pseudonym("u-1"), key.pseudonym("u-2"));
        assert_ne!(
            key.pseudonym("u-1"),
            PseudonymKey::new(b"k2").pseudonym("u-1")
        );
        assert_eq!(key.pseudonym("u-1").len(), 64);
        assert_eq!(format!("{key:?}"), "PseudonymKey(..)");
    }

    #[test]
    fn an_event_without_a_customer_is_poison() {
        let mut envelope = envelope();
        envelope.payload.as_object_mut().unwrap().remove("customer");
        let error = PlatformEvent::of(&envelope, &PseudonymKey::new(b"k")).unwrap_err();
        assert!(error.0.contains("names no customer"), "{error:?}");
    }

    #[test]
    fn the_answer_tells_delivered_from_refused_events() {
        let answer: BatchAnswer = serde_json::from_str(
            r#"{"accepted": ["a"], "duplicates": ["b"],
                "rejected": [{"eventId": "c", "reason": "unknown concert"}]}"#,
        )
        .unwrap();
        assert!(answer.has("a") && answer.has("b") && !answer.has("c"));
        assert_eq!(answer.rejection_of("c"), Some("unknown concert"));
        assert_eq!(answer.rejection_of("a"), None);
        let empty: BatchAnswer = serde_json::from_str("{}").unwrap();
        assert!(!empty.has("a"));
        assert!(answer.result_for("b").is_ok());
        let refused = answer.result_for("c").unwrap_err();
        assert!(!refused.is_retryable());
        assert!(crate::error_chain(&refused).contains("unknown concert"));
        let unnamed = empty.result_for("a").unwrap_err();
        assert!(unnamed.is_retryable() && unnamed.maybe_delivered());
    }
}
