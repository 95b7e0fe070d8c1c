//! The outbox item: written in the payment's transaction, carried by the table's
//! stream to the relay, published as one Kafka record. This struct is the contract
//! between the writer and the relay.

use crate::config::TopicNames;
use crate::events::{EventEnvelope, EventType, HEADER_EVENT_ID, HEADER_EVENT_TYPE};
use crate::ports::OutboundRecord;
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
    /// Epoch seconds: the table's TTL attribute.
    pub expires_at: i64,
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
            expires_at: (now + RETENTION).timestamp(),
        }
    }

    /// The Kafka record: key = aggregate id, headers `event-id` and `event-type`.
    pub fn to_record(&self, topics: &TopicNames) -> OutboundRecord {
        let topic = match self.event_type {
            EventType::PaymentCompleted => topics.payment_completed.clone(),
            EventType::SeatHoldExpired => topics.seat_hold_expired.clone(),
        };
        OutboundRecord {
            topic,
            key: Some(self.aggregate_id.clone().into_bytes()),
            value: Some(self.envelope.clone().into_bytes()),
            headers: vec![
                (
                    HEADER_EVENT_ID.to_owned(),
                    self.event_id.clone().into_bytes(),
                ),
                (
                    HEADER_EVENT_TYPE.to_owned(),
                    self.event_type.as_str().as_bytes().to_vec(),
                ),
            ],
            event_id: self.event_id.clone(),
        }
    }
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
