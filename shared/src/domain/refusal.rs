//! The domain's refusals: a request that breaks a rule of the domain. Each reads as
//! a sentence the caller can act on; the API answers them with a 4xx
//! (`shared::api` holds that mapping) and a consumer never retries one, except the
//! two that say "not yet".

use super::{ConcertId, Money, ReservationId, SeatId};
use chrono::{DateTime, Utc};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{field} is invalid: {reason}")]
    InvalidInput { field: &'static str, reason: String },
    #[error("the queue token is invalid: {0}")]
    InvalidToken(String),
    #[error("the queue token has expired; enter the queue again for a new one")]
    TokenExpired,
    #[error("the queue token has already been used")]
    TokenUsed,
    #[error("this reservation belongs to another user")]
    NotOwner,
    #[error(
        "the queue token admits to concert {admits}, not to concert {asked}; enter that concert's queue"
    )]
    TokenForAnotherConcert { admits: ConcertId, asked: ConcertId },
    #[error(
        "the queue token already holds reservation {reservation} until {until}; pay for it or let the hold end before holding another seat"
    )]
    HoldLimit {
        reservation: ReservationId,
        until: DateTime<Utc>,
    },
    #[error("{kind} {id} does not exist")]
    NotFound { kind: &'static str, id: String },
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
}

impl Refusal {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Refusal::InvalidInput {
            field,
            reason: reason.into(),
        }
    }

    /// A stable, machine-readable code for API clients, logs and dashboards.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::InvalidInput { .. } => "INVALID_INPUT",
            Refusal::InvalidToken(_) => "INVALID_TOKEN",
            Refusal::TokenExpired => "TOKEN_EXPIRED",
            Refusal::TokenUsed => "TOKEN_USED",
            Refusal::NotOwner => "FORBIDDEN",
            Refusal::TokenForAnotherConcert { .. } => "TOKEN_FOR_ANOTHER_CONCERT",
            Refusal::HoldLimit { .. } => "HOLD_LIMIT",
            Refusal::NotFound { .. } => "NOT_FOUND",
            Refusal::SeatTaken(_) => "SEAT_TAKEN",
            Refusal::AlreadyPaid(_) => "ALREADY_PAID",
            Refusal::HoldExpired { .. } => "HOLD_EXPIRED",
            Refusal::ReservationExpired(_) => "RESERVATION_EXPIRED",
            Refusal::InsufficientBalance { .. } => "INSUFFICIENT_BALANCE",
            Refusal::InProgress => "IN_PROGRESS",
            Refusal::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Refusal::Conflict(_) => "CONFLICT",
        }
    }

    /// Whether the same request may be accepted later: only while another
    /// request holds the key or changed the item at the same moment.
    pub fn is_retryable(&self) -> bool {
        match self {
            Refusal::InProgress | Refusal::Conflict(_) => true,
            Refusal::InvalidInput { .. }
            | Refusal::InvalidToken(_)
            | Refusal::TokenExpired
            | Refusal::TokenUsed
            | Refusal::NotOwner
            | Refusal::TokenForAnotherConcert { .. }
            | Refusal::HoldLimit { .. }
            | Refusal::NotFound { .. }
            | Refusal::SeatTaken(_)
            | Refusal::AlreadyPaid(_)
            | Refusal::HoldExpired { .. }
            | Refusal::ReservationExpired(_)
            | Refusal::InsufficientBalance { .. }
            | Refusal::IdempotencyKeyReused => false,
        }
    }

    /// The stable name of the refusal in the dead-letter header
    /// `kafka_dlt-exception-fqcn`. These names predate the split of the errors
    /// by layer and are kept as they were: dead letters already parked carry them.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Refusal::InvalidInput { .. } => "shared::Error::InvalidInput",
            Refusal::InvalidToken(_) => "shared::Error::InvalidToken",
            Refusal::TokenExpired => "shared::Error::TokenExpired",
            Refusal::TokenUsed => "shared::Error::TokenUsed",
            Refusal::NotOwner => "shared::Error::NotOwner",
            Refusal::TokenForAnotherConcert { .. } => "shared::Error::TokenForAnotherConcert",
            Refusal::HoldLimit { .. } => "shared::Error::HoldLimit",
            Refusal::NotFound { .. } => "shared::Error::NotFound",
            Refusal::SeatTaken(_) => "shared::Error::SeatTaken",
            Refusal::AlreadyPaid(_) => "shared::Error::AlreadyPaid",
            Refusal::HoldExpired { .. } => "shared::Error::HoldExpired",
            Refusal::ReservationExpired(_) => "shared::Error::ReservationExpired",
            Refusal::InsufficientBalance { .. } => "shared::Error::InsufficientBalance",
            Refusal::InProgress => "shared::Error::InProgress",
            Refusal::IdempotencyKeyReused => "shared::Error::IdempotencyKeyReused",
            Refusal::Conflict(_) => "shared::Error::Conflict",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_key_in_progress_or_a_concurrent_change_is_worth_retrying() {
        assert!(Refusal::InProgress.is_retryable());
        assert!(Refusal::Conflict("seat 1".into()).is_retryable());
        assert!(!Refusal::IdempotencyKeyReused.is_retryable());
        assert!(!Refusal::TokenUsed.is_retryable());
    }

    #[test]
    fn codes_and_kind_names_are_stable() {
        assert_eq!(Refusal::NotOwner.code(), "FORBIDDEN");
        assert_eq!(Refusal::InProgress.kind_name(), "shared::Error::InProgress");
    }
}
