//! The ports the functions depend on: small `Send + Sync` traits, with the real
//! adapters behind cargo features and in-memory ones for unit tests.

use crate::{Error, InfraError};
use std::future::Future;

pub use crate::clock::Clock;
pub use crate::idempotency::IdempotencyStore;

/// One record to publish to Kafka. Key, value and headers are bytes: a dead
/// letter carries the original record exactly, whatever it held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundRecord {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// For error messages and logs.
    pub event_id: String,
}

impl OutboundRecord {
    /// The first header called `name`, as UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// Publishes records to Kafka.
pub trait EventPublisher: Send + Sync {
    /// Sends every record without waiting between them and answers one result per
    /// record, in the same order, each only once the broker acknowledged or refused
    /// it. `Ok` means the broker has the record.
    fn publish_all(
        &self,
        records: &[OutboundRecord],
    ) -> impl Future<Output = Vec<Result<(), Error>>> + Send;

    /// Sends one record and waits for the broker's acknowledgement.
    fn publish_one(
        &self,
        record: OutboundRecord,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        async move {
            let results = self.publish_all(std::slice::from_ref(&record)).await;
            results.into_iter().next().unwrap_or_else(|| {
                Err(Error::from(InfraError::Publish {
                    event_id: record.event_id.clone(),
                    topic: record.topic.clone(),
                    source: "the publisher answered no result for the record".into(),
                }))
            })
        }
    }
}
