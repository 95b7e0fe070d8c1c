//! The idempotency store and the failure ledger as DynamoDB serves them
//! in-region, for the benchmarks
//! that would otherwise measure moto: every call answered after a fixed
//! latency (5 ms), any number at once, behind the same port the handlers use.
//! moto serves one request at a time, so on moto a handler's concurrency shows
//! as moto's queue, not as the handler's throughput.

use chrono::{DateTime, Utc};
use shared::Error;
use shared::channels::Channel;
use shared::clock::Clock;
use shared::config::ConfigError;
use shared::delivery::{Deliverer, DeliveryConfig};
use shared::fakes::FakeLedger;
use shared::idempotency::{Claim, IdempotencyStore, InMemoryIdempotencyStore};
use shared::ledger::{FailureLedger, LedgerFailure};
use shared::notification::ChannelKind;
use std::sync::Arc;
use std::time::Duration;

/// What DynamoDB answers a conditional write with in-region, about.
pub const IN_REGION_LATENCY: Duration = Duration::from_millis(5);

/// `delivery`'s channels and routes, with the keys on an in-region store.
pub fn deliverer(
    delivery: &DeliveryConfig,
    clock: Arc<dyn Clock>,
) -> Result<Deliverer<Channel, InRegionStore>, ConfigError> {
    Ok(Deliverer::new(
        delivery.channels.channels()?,
        delivery.channels.routes.clone(),
        InRegionStore::new(IN_REGION_LATENCY),
        clock,
        delivery.idempotency_ttl,
    ))
}

#[derive(Debug)]
pub struct InRegionStore {
    records: InMemoryIdempotencyStore,
    latency: Duration,
}

impl InRegionStore {
    pub fn new(latency: Duration) -> Self {
        InRegionStore {
            records: InMemoryIdempotencyStore::default(),
            latency,
        }
    }
}

impl IdempotencyStore for InRegionStore {
    async fn acquire(
        &self,
        key: &str,
        payload_hash: &str,
        now: DateTime<Utc>,
        in_progress_until: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<Claim, Error> {
        tokio::time::sleep(self.latency).await;
        self.records
            .acquire(key, payload_hash, now, in_progress_until, expires_at)
            .await
    }

    async fn complete(
        &self,
        key: &str,
        response: Option<String>,
        completed_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), Error> {
        tokio::time::sleep(self.latency).await;
        self.records
            .complete(key, response, completed_at, expires_at)
            .await
    }

    async fn release(&self, key: &str) -> Result<(), Error> {
        tokio::time::sleep(self.latency).await;
        self.records.release(key).await
    }

    async fn release_completed_with(&self, key: &str, response: &str) -> Result<bool, Error> {
        tokio::time::sleep(self.latency).await;
        self.records.release_completed_with(key, response).await
    }
}

/// The failure ledger as DynamoDB serves it in-region: every write answered
/// after the same fixed latency, any number at once.
#[derive(Debug)]
pub struct InRegionLedger {
    rows: FakeLedger,
    latency: Duration,
}

impl InRegionLedger {
    pub fn new(latency: Duration) -> Self {
        InRegionLedger {
            rows: FakeLedger::default(),
            latency,
        }
    }
}

impl FailureLedger for InRegionLedger {
    async fn record_failure(&self, failure: &LedgerFailure) -> Result<(), Error> {
        tokio::time::sleep(self.latency).await;
        self.rows.record_failure(failure).await
    }

    async fn mark_processed(
        &self,
        event_id: &str,
        channel: Option<ChannelKind>,
        at: DateTime<Utc>,
    ) -> Result<(), Error> {
        tokio::time::sleep(self.latency).await;
        self.rows.mark_processed(event_id, channel, at).await
    }

    async fn mark_redriven(
        &self,
        event_id: &str,
        channel: Option<ChannelKind>,
        at: DateTime<Utc>,
    ) -> Result<(), Error> {
        tokio::time::sleep(self.latency).await;
        self.rows.mark_redriven(event_id, channel, at).await
    }
}
