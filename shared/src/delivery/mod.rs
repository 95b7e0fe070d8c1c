//! One delivery path for every consumer of the events: the notifier (a Kafka
//! batch), dlq-retry (due dead letters) and an operator's re-drive.
//!
//! - `Letter::parse` turns a decoded record into a typed letter, or says why
//!   it is poison;
//! - `Deliverer::deliver` sends its message on each channel it is for, through
//!   the idempotency check, and answers what failed;
//! - `DeadLetterSink::dead_letter` writes a failure's dead letter (the
//!   dead-letter topic to be retried, or the failed topic to be parked) and
//!   then its ledger row; `Disposition::of` says which an error gets.
//!
//! Each consumer turns its own input into records, decides the dead letter's
//! retry count and next attempt by its own policy, and calls these.

mod deliverer;
#[cfg(all(feature = "channels", feature = "dynamodb", feature = "kafka"))]
mod deployed;
mod feed;
mod letter;
mod sink;

pub use deliverer::{
    DEFAULT_LOCK, Deliverer, Delivery, Failure, Outcome, PARKED_AMBIGUOUS, reopen_parked_send,
    send_key,
};
#[cfg(all(feature = "channels", feature = "dynamodb", feature = "kafka"))]
pub use deployed::{DEFAULT_CONCURRENCY, DeliveryConfig, LambdaDeliverer, concurrency};
pub use feed::{PlatformApi, PlatformFeed};
pub use letter::{Letter, MAX_RECORD_BYTES};
pub use sink::{DeadLetterSink, Disposition, Written};

use crate::Error;
use crate::config::{ConfigError, Vars};
use crate::notification::{AmbiguousSendPolicy, ChannelKind};
use std::future::Future;

/// Where a letter is delivered: a channel a customer is told on (Telegram,
/// Discord), or the data platform.
pub trait Destination: Send + Sync {
    /// Which destination this is: it routes events and names idempotency
    /// keys, dead-letter headers, ledger rows and logs.
    fn kind(&self) -> ChannelKind;

    /// Delivers what this destination takes of `letter` (the customer's
    /// message, or the platform's event).
    fn send(&self, letter: &Letter) -> impl Future<Output = Result<(), Error>> + Send;

    /// What to do with a send that may have arrived but whose answer was
    /// lost: sent again unless the destination is configured to park it.
    fn on_ambiguous_send(&self) -> AmbiguousSendPolicy {
        AmbiguousSendPolicy::Retry
    }
}

/// How long a sent event is remembered unless `IDEMPOTENCY_TTL_SECONDS` says
/// otherwise: a week, far beyond any redelivery or retry. No topic may keep
/// records longer (`shared::topics`).
pub const DEFAULT_IDEMPOTENCY_TTL: chrono::Duration = chrono::Duration::days(7);

/// `IDEMPOTENCY_TTL_SECONDS`: how long a sent event is remembered.
pub fn idempotency_ttl(vars: &Vars) -> Result<chrono::Duration, ConfigError> {
    vars.seconds("IDEMPOTENCY_TTL_SECONDS", DEFAULT_IDEMPOTENCY_TTL)
}

/// The sink as deployed: dead letters on Kafka, the ledger in DynamoDB (also
/// what `ops failed redrive` uses, which has no channels).
#[cfg(all(feature = "dynamodb", feature = "kafka"))]
pub type LambdaSink =
    DeadLetterSink<crate::kafka::KafkaPublisher, crate::dynamodb::DynamoFailureLedger>;
