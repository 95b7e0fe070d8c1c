//! Reading configuration from the environment with errors that name the variable.

use crate::Error;
use std::str::FromStr;

/// A secret value: its `Debug` never shows it, so configs can derive `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A required secret: from the environment locally; in AWS the deployment puts it
/// there from Secrets Manager.
pub fn secret(name: &str) -> Result<Secret, Error> {
    required(name).map(Secret)
}

/// A required variable.
pub fn required(name: &str) -> Result<String, Error> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(Error::Config(format!("{name} must be set"))),
    }
}

/// An optional variable with a default.
pub fn or_default(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// An optional variable parsed as a number (or anything `FromStr`), with a default.
pub fn parsed<T: FromStr>(name: &str, default: T) -> Result<T, Error> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| Error::Config(format!("{name}={v:?} is not a valid value"))),
        _ => Ok(default),
    }
}

/// The names of the tables, shared by every function that touches them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableNames {
    /// Users, concerts, seats, reservations, payments, history, queue tokens.
    pub ticketing: String,
    /// Outbox items; its stream feeds the relay.
    pub outbox: String,
    /// Idempotency records of the payment API and the notifier.
    pub idempotency: String,
    /// The failed-message ledger: one row per event that failed to notify.
    pub failed_messages: String,
}

impl TableNames {
    pub fn from_env() -> Self {
        TableNames {
            ticketing: or_default("TICKETING_TABLE", "ticketing"),
            outbox: or_default("OUTBOX_TABLE", "ticketing-outbox"),
            idempotency: or_default("IDEMPOTENCY_TABLE", "ticketing-idempotency"),
            failed_messages: or_default("FAILED_MESSAGES_TABLE", "ticketing-failed-messages"),
        }
    }

    /// Unique names for one test or one demo run, so runs never collide.
    pub fn with_prefix(prefix: &str) -> Self {
        TableNames {
            ticketing: format!("{prefix}-ticketing"),
            outbox: format!("{prefix}-outbox"),
            idempotency: format!("{prefix}-idempotency"),
            failed_messages: format!("{prefix}-failed-messages"),
        }
    }
}

/// The topic names, configurable; these are the defaults of ARCHITECTURE.md.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicNames {
    pub payment_completed: String,
    /// Dead letters waiting to be retried by dlq-retry.
    pub payment_completed_dlq: String,
    /// Dead letters that failed for good: kept for operators.
    pub payment_completed_failed: String,
    /// Released seat holds.
    pub seat_hold_expired: String,
}

impl TopicNames {
    pub fn from_env() -> Self {
        TopicNames {
            payment_completed: or_default("TOPIC_PAYMENT_COMPLETED", "payment.completed"),
            payment_completed_dlq: or_default(
                "TOPIC_PAYMENT_COMPLETED_DLQ",
                "payment.completed.dlq",
            ),
            payment_completed_failed: or_default(
                "TOPIC_PAYMENT_COMPLETED_FAILED",
                "payment.completed.failed",
            ),
            seat_hold_expired: or_default("TOPIC_SEAT_HOLD_EXPIRED", "seat.hold-expired"),
        }
    }

    pub fn with_prefix(prefix: &str) -> Self {
        TopicNames {
            payment_completed: format!("{prefix}.payment.completed"),
            payment_completed_dlq: format!("{prefix}.payment.completed.dlq"),
            payment_completed_failed: format!("{prefix}.payment.completed.failed"),
            seat_hold_expired: format!("{prefix}.seat.hold-expired"),
        }
    }

    pub fn all(&self) -> Vec<&str> {
        vec![
            self.payment_completed.as_str(),
            self.payment_completed_dlq.as_str(),
            self.payment_completed_failed.as_str(),
            self.seat_hold_expired.as_str(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_shows_in_debug_output() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(s.expose(), "hunter2");
    }
}
