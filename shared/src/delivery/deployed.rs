//! Delivery as deployed: Telegram and/or Discord over HTTPS, the idempotency
//! keys and the ledger in DynamoDB, dead letters on Kafka.

use super::{DeadLetterSink, Deliverer, LambdaSink, idempotency_ttl};
use crate::channels::{Channel, ChannelSettings};
use crate::clock::Clock;
use crate::config::ConfigError;
use crate::config::{TableNames, TopicNames, Vars};
use crate::dynamodb::{DynamoFailureLedger, DynamoIdempotencyStore};
use crate::kafka::{KafkaPublisher, KafkaSettings, ProducerSettings, ProducerStart};
use chrono::Duration;
use std::sync::Arc;

/// Records (the notifier) or dead letters (dlq-retry) of different
/// reservations handled at once unless `NOTIFY_CONCURRENCY` says otherwise.
pub const DEFAULT_CONCURRENCY: usize = 10;

pub type LambdaDeliverer = Deliverer<Channel, DynamoIdempotencyStore>;

/// What delivering a notification needs: the channels and their routes, the
/// idempotency table, and where failures go (topics, ledger).
#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    pub tables: TableNames,
    /// The channels per event type and their settings.
    pub channels: ChannelSettings,
    /// How long a sent event is remembered, so a late redelivery is still skipped.
    pub idempotency_ttl: Duration,
    /// Where dead letters are written.
    pub kafka: KafkaSettings,
    pub producer: ProducerSettings,
    pub topics: TopicNames,
}

impl DeliveryConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(DeliveryConfig {
            tables: TableNames::from_env(),
            channels: ChannelSettings::from_env()?,
            idempotency_ttl: idempotency_ttl(&Vars::process())?,
            kafka: KafkaSettings::from_env()?,
            producer: ProducerSettings::from_env()?,
            topics: TopicNames::from_env(),
        })
    }

    /// The channels' clients and the idempotency table.
    pub fn deliverer(
        &self,
        client: aws_sdk_dynamodb::Client,
        clock: Arc<dyn Clock>,
    ) -> Result<LambdaDeliverer, ConfigError> {
        Ok(Deliverer::new(
            self.channels.channels()?,
            self.channels.routes.clone(),
            DynamoIdempotencyStore::new(client, self.tables.idempotency.clone()),
            clock,
            self.idempotency_ttl,
        ))
    }

    /// A producer for the dead letters, built `start`, and the ledger.
    pub fn sink(
        &self,
        client: aws_sdk_dynamodb::Client,
        start: ProducerStart,
    ) -> Result<LambdaSink, ConfigError> {
        Ok(DeadLetterSink::new(
            KafkaPublisher::starting(&self.kafka, &self.producer, start)?,
            DynamoFailureLedger::new(client, self.tables.failed_messages.clone()),
            self.topics.clone(),
        ))
    }
}

/// `NOTIFY_CONCURRENCY`: reservations handled at once, at least 1.
pub fn concurrency(vars: &Vars) -> Result<usize, ConfigError> {
    match vars.parsed("NOTIFY_CONCURRENCY", DEFAULT_CONCURRENCY)? {
        0 => Err(ConfigError::invalid(
            "NOTIFY_CONCURRENCY",
            "it must be at least 1",
        )),
        n => Ok(n),
    }
}
