//! The one error type of the domain crate. Each variant reads as a sentence a person
//! can act on; infrastructure failures keep their cause as `source`.

use crate::domain::{Money, ReservationId, SeatId};
use chrono::{DateTime, Utc};

type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{field} is invalid: {reason}")]
    InvalidInput { field: &'static str, reason: String },
    #[error("the request body is not valid: {0}")]
    MalformedBody(String),
    #[error("the request body is {size} bytes; the limit is {limit} bytes")]
    BodyTooLarge { size: usize, limit: usize },

    #[error("missing bearer token: send `Authorization: Bearer <queue token>`")]
    MissingToken,
    #[error("the queue token is invalid: {0}")]
    InvalidToken(String),
    #[error("the queue token has expired; enter the queue again for a new one")]
    TokenExpired,
    #[error("the queue token has already been used")]
    TokenUsed,
    #[error("this reservation belongs to another user")]
    NotOwner,
    #[error("{kind} {id} does not exist")]
    NotFound { kind: &'static str, id: String },
    #[error("{method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },

    #[error("seat {0} is already held or sold")]
    SeatTaken(SeatId),
    #[error("reservation {0} is already paid")]
    AlreadyPaid(ReservationId),
    #[error(
        "the hold of reservation {reservation} expired at {expired_at}; reserve the seat again"
    )]
    HoldExpired {
        reservation: ReservationId,
        expired_at: DateTime<Utc>,
    },
    #[error("reservation {0} has expired; reserve the seat again")]
    ReservationExpired(ReservationId),
    #[error("insufficient balance: the price is {price}, the balance is {balance}")]
    InsufficientBalance { price: Money, balance: Money },
    #[error("a request with this idempotency key is still in progress; retry shortly")]
    InProgress,
    #[error("this idempotency key was already used with a different request")]
    IdempotencyKeyReused,
    #[error("another request changed {0} at the same time; retry")]
    Conflict(String),

    #[error("configuration error: {0}")]
    Config(String),
    #[error("storage failed during {operation}")]
    Storage {
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
    #[error("sending through {channel} failed: {message}")]
    Channel {
        channel: &'static str,
        retryable: bool,
        /// How long the channel asked us to wait (HTTP 429 `retry_after`).
        retry_after: Option<std::time::Duration>,
        message: String,
        #[source]
        source: Option<Cause>,
    },
    #[error("event is malformed: {0}")]
    MalformedEvent(String),
}

impl Error {
    pub fn storage(operation: &'static str, source: impl Into<Cause>) -> Self {
        Error::Storage {
            operation,
            source: source.into(),
        }
    }

    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            field,
            reason: reason.into(),
        }
    }

    /// A stable, machine-readable code for API clients and dashboards.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidInput { .. } => "INVALID_INPUT",
            Error::MalformedBody(_) => "MALFORMED_BODY",
            Error::BodyTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            Error::MissingToken => "MISSING_TOKEN",
            Error::InvalidToken(_) => "INVALID_TOKEN",
            Error::TokenExpired => "TOKEN_EXPIRED",
            Error::TokenUsed => "TOKEN_USED",
            Error::NotOwner => "FORBIDDEN",
            Error::NotFound { .. } => "NOT_FOUND",
            Error::MethodNotAllowed { .. } => "METHOD_NOT_ALLOWED",
            Error::SeatTaken(_) => "SEAT_TAKEN",
            Error::AlreadyPaid(_) => "ALREADY_PAID",
            Error::HoldExpired { .. } => "HOLD_EXPIRED",
            Error::ReservationExpired(_) => "RESERVATION_EXPIRED",
            Error::InsufficientBalance { .. } => "INSUFFICIENT_BALANCE",
            Error::InProgress => "IN_PROGRESS",
            Error::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Error::Conflict(_) => "CONFLICT",
            Error::Config(_) => "CONFIGURATION",
            Error::Storage { .. } => "STORAGE_UNAVAILABLE",
            Error::CorruptItem(_) => "INTERNAL",
            Error::Publish { .. } => "PUBLISH_FAILED",
            Error::Channel { .. } => "CHANNEL_FAILED",
            Error::MalformedEvent(_) => "MALFORMED_EVENT",
        }
    }

    /// The HTTP status an API answers this error with.
    pub fn http_status(&self) -> u16 {
        match self {
            Error::InvalidInput { .. } | Error::MalformedBody(_) => 400,
            Error::MissingToken | Error::InvalidToken(_) | Error::TokenExpired => 401,
            Error::InsufficientBalance { .. } => 402,
            Error::NotOwner => 403,
            Error::NotFound { .. } => 404,
            Error::MethodNotAllowed { .. } => 405,
            Error::SeatTaken(_)
            | Error::AlreadyPaid(_)
            | Error::HoldExpired { .. }
            | Error::ReservationExpired(_)
            | Error::TokenUsed
            | Error::InProgress
            | Error::Conflict(_) => 409,
            Error::BodyTooLarge { .. } => 413,
            Error::IdempotencyKeyReused => 422,
            Error::Storage { .. } => 503,
            Error::Config(_)
            | Error::CorruptItem(_)
            | Error::Publish { .. }
            | Error::Channel { .. }
            | Error::MalformedEvent(_) => 500,
        }
    }

    /// Whether trying the same thing again later may succeed: a channel that is
    /// down or throttling, storage or a broker that is unavailable. A malformed
    /// event or a refused message will fail the same way every time.
    pub fn is_retryable(&self) -> bool {
        // Exhaustive on purpose: a new variant must decide, not default to
        // permanent (which would park its notifications on the failed topic).
        match self {
            Error::Channel { retryable, .. } => *retryable,
            Error::Storage { .. }
            | Error::Publish { .. }
            | Error::InProgress
            | Error::Conflict(_) => true,
            Error::InvalidInput { .. }
            | Error::MalformedBody(_)
            | Error::BodyTooLarge { .. }
            | Error::MissingToken
            | Error::InvalidToken(_)
            | Error::TokenExpired
            | Error::TokenUsed
            | Error::NotOwner
            | Error::NotFound { .. }
            | Error::MethodNotAllowed { .. }
            | Error::SeatTaken(_)
            | Error::AlreadyPaid(_)
            | Error::HoldExpired { .. }
            | Error::ReservationExpired(_)
            | Error::InsufficientBalance { .. }
            | Error::IdempotencyKeyReused
            | Error::Config(_)
            | Error::CorruptItem(_)
            | Error::MalformedEvent(_) => false,
        }
    }

    /// How long the channel asked us to wait before trying again, if it did.
    pub fn retry_after(&self) -> Option<chrono::Duration> {
        match self {
            Error::Channel {
                retry_after: Some(after),
                ..
            } => chrono::Duration::from_std(*after).ok(),
            _ => None,
        }
    }

    /// The variant's path, for the dead-letter header `kafka_dlt-exception-fqcn`
    /// (operators and `ops failed` read it): spelled out, so renaming a variant
    /// or changing its fields never changes the header by accident.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Error::InvalidInput { .. } => "shared::Error::InvalidInput",
            Error::MalformedBody(_) => "shared::Error::MalformedBody",
            Error::BodyTooLarge { .. } => "shared::Error::BodyTooLarge",
            Error::MissingToken => "shared::Error::MissingToken",
            Error::InvalidToken(_) => "shared::Error::InvalidToken",
            Error::TokenExpired => "shared::Error::TokenExpired",
            Error::TokenUsed => "shared::Error::TokenUsed",
            Error::NotOwner => "shared::Error::NotOwner",
            Error::NotFound { .. } => "shared::Error::NotFound",
            Error::MethodNotAllowed { .. } => "shared::Error::MethodNotAllowed",
            Error::SeatTaken(_) => "shared::Error::SeatTaken",
            Error::AlreadyPaid(_) => "shared::Error::AlreadyPaid",
            Error::HoldExpired { .. } => "shared::Error::HoldExpired",
            Error::ReservationExpired(_) => "shared::Error::ReservationExpired",
            Error::InsufficientBalance { .. } => "shared::Error::InsufficientBalance",
            Error::InProgress => "shared::Error::InProgress",
            Error::IdempotencyKeyReused => "shared::Error::IdempotencyKeyReused",
            Error::Conflict(_) => "shared::Error::Conflict",
            Error::Config(_) => "shared::Error::Config",
            Error::Storage { .. } => "shared::Error::Storage",
            Error::CorruptItem(_) => "shared::Error::CorruptItem",
            Error::Publish { .. } => "shared::Error::Publish",
            Error::Channel { .. } => "shared::Error::Channel",
            Error::MalformedEvent(_) => "shared::Error::MalformedEvent",
        }
    }

    /// True for failures a client caused (4xx): logged at warn, not error.
    pub fn is_client_error(&self) -> bool {
        self.http_status() < 500
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_outages_and_storage_are_retryable_and_malformed_events_are_not() {
        let down = Error::Channel {
            channel: "telegram",
            retryable: true,
            retry_after: None,
            message: "HTTP 502".into(),
            source: None,
        };
        assert!(down.is_retryable());
        assert!(Error::storage("GetItem", "timeout").is_retryable());
        assert!(!Error::MalformedEvent("not json".into()).is_retryable());
        assert!(!Error::IdempotencyKeyReused.is_retryable());
    }

    #[test]
    fn the_kind_name_is_the_variant_path() {
        assert_eq!(
            Error::MalformedEvent("x".into()).kind_name(),
            "shared::Error::MalformedEvent"
        );
        assert_eq!(Error::InProgress.kind_name(), "shared::Error::InProgress");
        let channel = Error::Channel {
            channel: "discord",
            retryable: true,
            retry_after: None,
            message: "HTTP 502".into(),
            source: None,
        };
        assert_eq!(channel.kind_name(), "shared::Error::Channel");
        assert_eq!(
            Error::storage("GetItem", "timeout").kind_name(),
            "shared::Error::Storage"
        );
    }
}
