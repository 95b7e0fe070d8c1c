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
mod letter;
mod sink;

pub use deliverer::{DEFAULT_LOCK, Deliverer, Delivery, Failure, Outcome};
#[cfg(all(feature = "channels", feature = "dynamodb", feature = "kafka"))]
pub use deployed::{
    DEFAULT_CONCURRENCY, DEFAULT_IDEMPOTENCY_TTL, DeliveryConfig, LambdaDeliverer, concurrency,
    idempotency_ttl,
};
pub use letter::{Letter, MAX_RECORD_BYTES};
pub use sink::{DeadLetterSink, Disposition, Written};

/// The sink as deployed: dead letters on Kafka, the ledger in DynamoDB (also
/// what `ops failed redrive` uses, which has no channels).
#[cfg(all(feature = "dynamodb", feature = "kafka"))]
pub type LambdaSink =
    DeadLetterSink<crate::kafka::KafkaPublisher, crate::dynamodb::DynamoFailureLedger>;
