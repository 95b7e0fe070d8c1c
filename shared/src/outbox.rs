//! The outbox item: written in the payment's transaction, carried by the table's
//! stream to the relay, published as one Kafka record. This struct is the contract
//! between the writer and the relay.

use crate::config::TopicNames;
use crate::events::{EventEnvelope, EventType, HEADER_EVENT_ID, HEADER_EVENT_TYPE};
use crate::ports::OutboundRecord;
use crate::trace::TraceContext;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// How long a published outbox item is kept before DynamoDB TTL may delete it.
pub const RETENTION: Duration = Duration::days(7);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxItem {
    /// The partition key: the event id.
    pub pk: String,
    pub event_id: String,
    pub event_type: EventType,
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// The Kafka record's value, exactly as it will be published.
    pub envelope: String,
    /// Epoch milliseconds.
    pub created_at: i64,
    /// The creation-time index's partition: [`created_bucket`]. Absent on
    /// items written before the index existed (they are not found by time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_bucket: Option<String>,
    /// Epoch seconds: the table's TTL attribute.
    pub expires_at: i64,
    /// The W3C trace context of the work that wrote it (`shared::trace`);
    /// absent on items written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl OutboxItem {
    pub fn new(event: &EventEnvelope, now: DateTime<Utc>) -> Self {
        OutboxItem {
            pk: event.event_id.to_string(),
            event_id: event.event_id.to_string(),
            event_type: event.event_type,
            aggregate_type: event.aggregate_type.clone(),
            aggregate_id: event.aggregate_id.clone(),
            envelope: event.to_json(),
            created_at: now.timestamp_millis(),
            created_bucket: Some(created_bucket(now, &event.event_id.to_string())),
            expires_at: (now + RETENTION).timestamp(),
            traceparent: None,
        }
    }

    /// The same item, carrying `trace` (when there is one).
    pub fn traced(self, trace: Option<&TraceContext>) -> Self {
        OutboxItem {
            traceparent: trace.map(TraceContext::traceparent),
            ..self
        }
    }

    /// The Kafka record: key = aggregate id, headers `event-id`, `event-type`
    /// and, when the item has one, `traceparent`.
    pub fn to_record(&self, topics: &TopicNames) -> OutboundRecord {
        let topic = match self.event_type {
            EventType::PaymentCompleted => topics.payment_completed.clone(),
            EventType::SeatHoldExpired => topics.seat_hold_expired.clone(),
        };
        OutboundRecord {
            topic,
            key: Some(self.aggregate_id.clone().into_bytes()),
            value: Some(self.envelope.clone().into_bytes()),
            headers: [
                (
                    HEADER_EVENT_ID.to_owned(),
                    self.event_id.clone().into_bytes(),
                ),
                (
                    HEADER_EVENT_TYPE.to_owned(),
                    self.event_type.as_str().as_bytes().to_vec(),
                ),
            ]
            .into_iter()
            .chain(
                self.traceparent
                    .as_ref()
                    .map(|t| (crate::trace::HEADER.to_owned(), t.clone().into_bytes())),
            )
            .collect(),
            event_id: self.event_id.clone(),
        }
    }
}

/// Shards of each hour in the creation-time index. One index key takes about
/// 1,000 writes a second; a ticket sale's first minutes write far more outbox
/// items than that in one hour, so each hour is spread over these shards.
pub const CREATED_SHARDS: u32 = 8;

/// The creation-time index key of an item created `at`: its hour (UTC) and a
/// shard stable per event, `2026-11-29T20#5`. A window is read with one Query
/// per hour and shard (8 for an hour, 1,344 for the whole 7-day retention),
/// never a scan of the table.
pub fn created_bucket(at: DateTime<Utc>, event_id: &str) -> String {
    let shard = event_id
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
        % CREATED_SHARDS;
    bucket_name(at, shard)
}

/// The index key of `shard` of the hour holding `at`.
pub fn bucket_name(at: DateTime<Utc>, shard: u32) -> String {
    format!("{}#{shard}", at.format("%Y-%m-%dT%H"))
}

/// Every index key whose hour meets `from..=to`, oldest hour first.
pub fn buckets_between(from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<String> {
    use chrono::DurationRound;
    let mut hour = from.duration_trunc(Duration::hours(1)).unwrap_or(from);
    let mut buckets = Vec::new();
    while hour <= to {
        buckets.extend((0..CREATED_SHARDS).map(|shard| bucket_name(hour, shard)));
        hour += Duration::hours(1);
    }
    buckets
}

/// What Lambda puts on the relay mapping's on-failure destination when it
/// discards a batch of the outbox stream: where the batch was, not its items
/// (an operator re-publishes them from the outbox table). The local runner
/// writes the same record to its local queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamFailureRecord {
    #[serde(rename = "requestContext")]
    pub request_context: FailureContext,
    pub version: String,
    pub timestamp: DateTime<Utc>,
    #[serde(rename = "DDBStreamBatchInfo")]
    pub batch: StreamBatchInfo,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureContext {
    pub request_id: String,
    pub function_arn: String,
    /// Why the batch was discarded.
    pub condition: DiscardCondition,
    pub approximate_invoke_count: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiscardCondition {
    /// `MaximumRetryAttempts` retries failed.
    RetryAttemptsExhausted,
    /// The records were older than `MaximumRecordAgeInSeconds`.
    RecordAgeExceeded,
}

/// The discarded records' place in the stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamBatchInfo {
    pub shard_id: String,
    pub start_sequence_number: String,
    pub end_sequence_number: String,
    pub approximate_arrival_of_first_record: DateTime<Utc>,
    pub approximate_arrival_of_last_record: DateTime<Utc>,
    pub batch_size: usize,
    pub stream_arn: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn an_items_bucket_is_its_hour_and_a_shard_stable_per_event() {
        let bucket = created_bucket(at("2026-11-29T20:59:59Z"), "e-1");
        assert!(bucket.starts_with("2026-11-29T20#"), "{bucket}");
        assert_eq!(bucket, created_bucket(at("2026-11-29T20:00:00Z"), "e-1"));
        let shards: std::collections::HashSet<String> = (0..100)
            .map(|i| created_bucket(at("2026-11-29T20:00:00Z"), &format!("event-{i}")))
            .collect();
        assert_eq!(
            shards.len() as u32,
            CREATED_SHARDS,
            "events spread over every shard"
        );
    }

    #[test]
    fn a_window_reads_every_shard_of_every_hour_it_meets() {
        let buckets = buckets_between(at("2026-11-29T20:30:00Z"), at("2026-11-29T22:10:00Z"));
        assert_eq!(buckets.len() as u32, 3 * CREATED_SHARDS);
        assert_eq!(buckets[0], "2026-11-29T20#0");
        assert_eq!(
            buckets.last().unwrap(),
            &format!("2026-11-29T22#{}", CREATED_SHARDS - 1)
        );
        assert!(buckets_between(at("2026-11-29T22:00:00Z"), at("2026-11-29T21:00:00Z")).is_empty());
    }
}
