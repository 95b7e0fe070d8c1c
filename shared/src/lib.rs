//! The ticketing domain shared by every Lambda function.
//!
//! The modules at the top are pure domain: entities and their state transitions,
//! events, the notification text and the ports the functions depend on. Adapters
//! to real services sit behind cargo features (`dynamodb`, `kafka`, `channels`) so a
//! function links only the clients it uses.

pub mod api;
pub mod auth;
#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "channels")]
pub mod channels;
pub mod clock;
pub mod config;
pub mod data_platform;
pub mod dead_letter;
pub mod delivery;
pub mod domain;
pub mod error;
#[cfg(any(test, feature = "fixtures"))]
pub mod fakes;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod idempotency;
pub mod kafka_event;
pub mod ledger;
#[cfg(any(test, feature = "logging"))]
pub mod logging;
pub mod metrics;
pub mod notification;
pub mod outbox;
pub mod ports;
pub mod seed;
pub mod spans;
#[cfg(any(feature = "aws", feature = "channels"))]
pub mod tls;
pub mod topics;
pub mod trace;

#[cfg(feature = "dynamodb")]
pub mod dynamodb;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "replay")]
pub mod replay;
#[cfg(feature = "secrets")]
pub mod secrets;

pub use domain::events;
pub use error::{Error, InfraError, MalformedEvent};

/// An error and all its causes on one line, for logs: `a: b: c`.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
