//! The errors of the domain crate, one enum per layer:
//!
//! - [`Refusal`](crate::domain::Refusal): the domain refuses the request (the API
//!   answers 4xx; `shared::api` holds the mapping);
//! - [`InfraError`]: DynamoDB, Kafka or a notification channel failed, retryable or
//!   not as an exhaustive property;
//! - [`MalformedEvent`] (of `domain::events`): a record or event that can never
//!   be read (a poison pill);
//! - [`ConfigError`](crate::config::ConfigError): a setting cannot be used.
//!
//! [`Error`] is what a use case answers when more than one layer can fail (the
//! repository refuses or fails, delivery fails or meets a poison record); its
//! retryability and dead-letter name come from the layer that failed.

use crate::config::ConfigError;
use crate::domain::Refusal;
pub use crate::domain::events::MalformedEvent;

type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A failure of the services the functions depend on.
#[derive(Debug, thiserror::Error)]
pub enum InfraError {
    #[error("storage failed during {operation}")]
    Storage {
        operation: &'static str,
        #[source]
        source: Cause,
    },
    /// DynamoDB refuses the request itself (a key or item it does not accept):
    /// sending it again fails the same way.
    #[error("storage refused {operation} for good")]
    StorageRefused {
        operation: &'static str,
        #[source]
        source: Cause,
    },
    #[error("stored item is corrupt: {0}")]
    CorruptItem(String),
    #[error("publishing event {event_id} to topic {topic} failed")]
    Publish {
        event_id: String,
        topic: String,
        #[source]
        source: Cause,
    },
    /// The broker refuses this record for good (too large, invalid): sending it
    /// again fails the same way.
    #[error("the broker refuses event {event_id} for topic {topic} for good")]
    Unpublishable {
        event_id: String,
        topic: String,
        #[source]
        source: Cause,
    },
    #[error("Kafka failed during {operation}")]
    Kafka {
        operation: &'static str,
        #[source]
        source: Cause,
    },
    #[error("sending through {channel} failed: {message}")]
    Channel {
        channel: &'static str,
        retryable: bool,
        /// The request may have reached the channel and its answer was lost (a
        /// timeout after it was sent, a dropped connection, a gateway's 502 or
        /// 504): the customer may have the message.
        maybe_delivered: bool,
        /// How long the channel asked us to wait (HTTP 429 `retry_after`).
        retry_after: Option<std::time::Duration>,
        message: String,
        #[source]
        source: Option<Cause>,
    },
    /// A send that may have reached the customer, on a channel whose policy for
    /// such sends is `park`: it is not sent again by itself (at most once).
    #[error(
        "a send through {channel} may have reached the customer ({message}); parked, not \
         sent again: check the chat, then `ops failed redrive <event-id> --channel {channel}` \
         if it never arrived"
    )]
    AmbiguousSend {
        channel: &'static str,
        message: String,
        #[source]
        source: Option<Cause>,
    },
}

/// The dead-letter kind of a send parked because it may have reached the
/// customer: `ops failed redrive` reopens its idempotency key before sending
/// it again.
pub const AMBIGUOUS_SEND_KIND: &str = "shared::Error::AmbiguousSend";

/// The longest wait a channel's `retry_after` is honoured for: dlq-retry's
/// default longest back-off.
pub const MAX_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

impl InfraError {
    pub fn storage(operation: &'static str, source: impl Into<Cause>) -> Self {
        InfraError::Storage {
            operation,
            source: source.into(),
        }
    }

    /// Whether trying the same thing again later may succeed: storage, a broker
    /// or a channel that is down or throttling. A corrupt item or a channel that
    /// refused the message will fail the same way every time.
    pub fn is_retryable(&self) -> bool {
        match self {
            InfraError::Channel { retryable, .. } => *retryable,
            InfraError::Storage { .. } | InfraError::Publish { .. } | InfraError::Kafka { .. } => {
                true
            }
            InfraError::StorageRefused { .. }
            | InfraError::CorruptItem(_)
            | InfraError::Unpublishable { .. }
            | InfraError::AmbiguousSend { .. } => false,
        }
    }

    /// How long the channel asked us to wait before trying again, if it did,
    /// at most [`MAX_RETRY_AFTER`]: a channel's number is never trusted to
    /// keep a letter away for longer, nor to overflow the time arithmetic.
    pub fn retry_after(&self) -> Option<chrono::Duration> {
        match self {
            InfraError::Channel {
                retry_after: Some(after),
                ..
            } => chrono::Duration::from_std((*after).min(MAX_RETRY_AFTER)).ok(),
            _ => None,
        }
    }

    /// Whether a failed send may have reached the customer all the same.
    pub fn maybe_delivered(&self) -> bool {
        matches!(
            self,
            InfraError::Channel {
                maybe_delivered: true,
                ..
            } | InfraError::AmbiguousSend { .. }
        )
    }

    pub fn code(&self) -> &'static str {
        match self {
            InfraError::Storage { .. } => "STORAGE_UNAVAILABLE",
            InfraError::StorageRefused { .. } => "STORAGE_REFUSED",
            InfraError::CorruptItem(_) => "INTERNAL",
            InfraError::Publish { .. } => "PUBLISH_FAILED",
            InfraError::Unpublishable { .. } => "UNPUBLISHABLE",
            InfraError::Kafka { .. } => "KAFKA_UNAVAILABLE",
            InfraError::Channel { .. } => "CHANNEL_FAILED",
            InfraError::AmbiguousSend { .. } => "CHANNEL_AMBIGUOUS",
        }
    }

    /// The stable name in the dead-letter header `kafka_dlt-exception-fqcn`
    /// (operators and `ops failed` read it): spelled out, so renaming a variant
    /// never changes the header by accident.
    pub fn kind_name(&self) -> &'static str {
        match self {
            InfraError::Storage { .. } => "shared::Error::Storage",
            InfraError::StorageRefused { .. } => "shared::Error::StorageRefused",
            InfraError::CorruptItem(_) => "shared::Error::CorruptItem",
            InfraError::Publish { .. } => "shared::Error::Publish",
            InfraError::Unpublishable { .. } => "shared::Error::Unpublishable",
            InfraError::Kafka { .. } => "shared::Error::Kafka",
            InfraError::Channel { .. } => "shared::Error::Channel",
            InfraError::AmbiguousSend { .. } => AMBIGUOUS_SEND_KIND,
        }
    }
}

/// What a use case answers: a refusal, a failure of a service, a poison record or
/// a setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(transparent)]
    Infra(#[from] InfraError),
    #[error(transparent)]
    Malformed(#[from] MalformedEvent),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl Error {
    pub fn storage(operation: &'static str, source: impl Into<Cause>) -> Self {
        InfraError::storage(operation, source).into()
    }

    pub fn corrupt(what: impl Into<String>) -> Self {
        InfraError::CorruptItem(what.into()).into()
    }

    pub fn malformed(reason: impl Into<String>) -> Self {
        MalformedEvent(reason.into()).into()
    }

    /// A stable, machine-readable code for logs and dashboards.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Refused(refusal) => refusal.code(),
            Error::Infra(failure) => failure.code(),
            Error::Malformed(_) => "MALFORMED_EVENT",
            Error::Config(_) => "CONFIGURATION",
        }
    }

    /// Whether trying the same thing again later may succeed, as the layer that
    /// failed says. A poison record or a setting that cannot be used fails the
    /// same way every time.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Refused(refusal) => refusal.is_retryable(),
            Error::Infra(failure) => failure.is_retryable(),
            Error::Malformed(_) | Error::Config(_) => false,
        }
    }

    /// Whether a failed send may have reached the customer all the same.
    pub fn maybe_delivered(&self) -> bool {
        matches!(self, Error::Infra(failure) if failure.maybe_delivered())
    }

    /// How long the channel asked us to wait before trying again, if it did.
    pub fn retry_after(&self) -> Option<chrono::Duration> {
        match self {
            Error::Infra(failure) => failure.retry_after(),
            Error::Refused(_) | Error::Malformed(_) | Error::Config(_) => None,
        }
    }

    /// The stable name in the dead-letter header `kafka_dlt-exception-fqcn`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Error::Refused(refusal) => refusal.kind_name(),
            Error::Infra(failure) => failure.kind_name(),
            Error::Malformed(_) => "shared::Error::MalformedEvent",
            Error::Config(_) => "shared::Error::Config",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channels_retry_after_is_capped_at_an_hour() {
        let asking = |after: std::time::Duration| InfraError::Channel {
            channel: "discord",
            retryable: true,
            maybe_delivered: false,
            retry_after: Some(after),
            message: "HTTP 429".into(),
            source: None,
        };
        let ten_minutes = std::time::Duration::from_secs(600);
        assert_eq!(
            asking(ten_minutes).retry_after(),
            Some(chrono::Duration::minutes(10))
        );
        for absurd in [
            std::time::Duration::from_secs(1_000_000_000_000),
            std::time::Duration::MAX,
        ] {
            assert_eq!(
                asking(absurd).retry_after(),
                Some(chrono::Duration::hours(1))
            );
        }
    }

    fn channel_down() -> InfraError {
        InfraError::Channel {
            channel: "telegram",
            maybe_delivered: false,
            retryable: true,
            retry_after: None,
            message: "HTTP 502".into(),
            source: None,
        }
    }

    #[test]
    fn channel_outages_and_storage_are_retryable_and_malformed_events_are_not() {
        assert!(Error::from(channel_down()).is_retryable());
        assert!(Error::storage("GetItem", "timeout").is_retryable());
        assert!(!Error::malformed("not json").is_retryable());
        assert!(!Error::from(Refusal::IdempotencyKeyReused).is_retryable());
        assert!(!Error::corrupt("seat 1 has no price").is_retryable());
    }

    #[test]
    fn the_kind_name_is_the_stable_name_each_layer_gives() {
        assert_eq!(
            Error::malformed("x").kind_name(),
            "shared::Error::MalformedEvent"
        );
        assert_eq!(
            Error::from(Refusal::InProgress).kind_name(),
            "shared::Error::InProgress"
        );
        assert_eq!(
            Error::from(channel_down()).kind_name(),
            "shared::Error::Channel"
        );
        assert_eq!(
            Error::storage("GetItem", "timeout").kind_name(),
            "shared::Error::Storage"
        );
    }

    #[test]
    fn a_refusal_keeps_its_own_message() {
        let error = Error::from(Refusal::TokenUsed);
        assert_eq!(error.to_string(), "the queue token has already been used");
        assert_eq!(error.code(), "TOKEN_USED");
    }
}
