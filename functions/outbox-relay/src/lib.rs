//! The outbox relay: DynamoDB Streams batch of the outbox table in, Kafka records
//! out. Each outbox INSERT becomes one record (key = aggregate id, headers
//! `event-id` and `event-type`) sent by an idempotent producer; a record counts as
//! sent only once the broker acknowledged it. On the first failure worth retrying
//! (broker down, timeout) the relay answers `batchItemFailures` with that record's
//! sequence number, so the stream re-delivers from there and order per key holds;
//! the event source retries it until it leaves the stream. An outbox item that can
//! never be published (not an outbox item, or refused by the broker for good) is
//! skipped with an error log and counted in the answer's `skipped`: it never holds
//! up the records behind it, and the outbox table still has it.

use aws_lambda_events::dynamodb::{Event, EventRecord};
use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use lambda_runtime::LambdaEvent;
use serde::Serialize;
use shared::config::TopicNames;
use shared::kafka::{KafkaPublisher, KafkaSettings, ProducerSettings};
use shared::outbox::OutboxItem;
use shared::ports::{EventPublisher, OutboundRecord};
use shared::{metrics, spans};
use tracing::Instrument;

/// Why the function could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the outbox relay is misconfigured")]
    Config(#[source] shared::config::ConfigError),
}

#[derive(Clone, Debug)]
pub struct Config {
    pub kafka: KafkaSettings,
    pub producer: ProducerSettings,
    pub topics: TopicNames,
}

impl Config {
    pub fn from_env() -> Result<Self, Error> {
        Ok(Config {
            kafka: KafkaSettings::from_env().map_err(Error::Config)?,
            producer: ProducerSettings::from_env().map_err(Error::Config)?,
            topics: TopicNames::from_env(),
        })
    }
}

pub struct Relay<P> {
    publisher: P,
    topics: TopicNames,
}

impl Relay<KafkaPublisher> {
    /// The relay with its producer, built once per cold start.
    pub fn from_config(config: &Config) -> Result<Self, Error> {
        let publisher =
            KafkaPublisher::new(&config.kafka, &config.producer).map_err(Error::Config)?;
        Ok(Relay::new(publisher, config.topics.clone()))
    }
}

/// A stream record that must be published, with its sequence number.
struct Pending {
    sequence_number: String,
    record: Result<OutboundRecord, shared::Error>,
}

/// What the relay answers the event source: Lambda's partial-batch response
/// (`batchItemFailures`: where the stream resumes) and how many outbox records of
/// the batch were skipped because they can never be published.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RelayAnswer {
    #[serde(flatten)]
    pub response: DynamoDbEventResponse,
    pub skipped: usize,
}

impl RelayAnswer {
    /// The stream re-delivers from `sequence_number` on.
    fn resume_from(sequence_number: &str, skipped: usize) -> Self {
        let mut item = DynamoDbBatchItemFailure::default();
        item.item_identifier = Some(sequence_number.to_owned());
        let mut response = DynamoDbEventResponse::default();
        response.batch_item_failures = vec![item];
        RelayAnswer { response, skipped }
    }
}

impl<P: EventPublisher> Relay<P> {
    pub fn new(publisher: P, topics: TopicNames) -> Self {
        Relay { publisher, topics }
    }

    pub async fn handle(
        &self,
        event: LambdaEvent<Event>,
    ) -> Result<RelayAnswer, lambda_runtime::Error> {
        let span = spans::invocation("outbox-relay", &event.context.request_id);
        Ok(self.relay(event.payload).instrument(span).await)
    }

    fn pending(&self, record: EventRecord) -> Option<Pending> {
        // Only inserts are new events; MODIFY and REMOVE (TTL) are not.
        if record.event_name != "INSERT" {
            return None;
        }
        let change = record.change;
        let sequence_number = change.sequence_number.unwrap_or(record.event_id);
        let record = serde_dynamo::from_item::<_, OutboxItem>(change.new_image)
            .map_err(|e| {
                shared::Error::malformed(format!("the stream image is not an outbox item: {e}"))
            })
            .map(|item| item.to_record(&self.topics));
        Some(Pending {
            sequence_number,
            record,
        })
    }

    /// Publishes the batch and answers which record the stream must resume from.
    /// It takes the event: each stream record is freed once its Kafka record is
    /// built, so the batch is not held twice while the producer queues it.
    pub async fn relay(&self, event: Event) -> RelayAnswer {
        let mut skipped = 0;
        let mut sequence_numbers = Vec::new();
        let mut records = Vec::new();
        for pending in event.records.into_iter().filter_map(|r| self.pending(r)) {
            match pending.record {
                Ok(record) => {
                    sequence_numbers.push(pending.sequence_number);
                    records.push(record);
                }
                Err(e) => {
                    skipped += 1;
                    tracing::error!(
                        sequence_number = %pending.sequence_number,
                        error = %shared::error_chain(&e),
                        "outbox record can never be published; skipped (the outbox table keeps the item)"
                    );
                }
            }
        }
        let results = self.publisher.publish_all(&records).await;
        let mut published = 0;
        for (index, ((sequence_number, record), result)) in sequence_numbers
            .iter()
            .zip(&records)
            .zip(results)
            .enumerate()
        {
            let Err(e) = result else {
                published += 1;
                continue;
            };
            let key = record.key.as_deref().map(String::from_utf8_lossy);
            let span = spans::outbox_item(
                sequence_number,
                &record.event_id,
                key.as_deref().unwrap_or("-"),
            );
            let _entered = span.enter();
            let traceparent = record
                .headers
                .iter()
                .find(|(name, _)| name == shared::trace::HEADER)
                .and_then(|(_, value)| std::str::from_utf8(value).ok());
            spans::record_trace(traceparent);
            if e.is_retryable() {
                tracing::error!(
                    error = %shared::error_chain(&e),
                    "publish failed; the stream re-delivers from this record"
                );
                count_batch(published, skipped, records.len() - index);
                return RelayAnswer::resume_from(sequence_number, skipped);
            }
            skipped += 1;
            tracing::error!(
                error = %shared::error_chain(&e),
                "the broker refuses this record for good; skipped (the outbox table keeps the item)"
            );
        }
        tracing::info!(published, skipped, "outbox batch published");
        count_batch(published, skipped, 0);
        RelayAnswer {
            skipped,
            ..RelayAnswer::default()
        }
    }
}

/// The batch's `Records` by outcome: `published`, `skipped` (never
/// publishable), `failed` (the stream delivers them again), and its size.
fn count_batch(published: usize, skipped: usize, failed: usize) {
    let size = published + skipped + failed;
    metrics::observe("BatchSize", &[], size as f64);
    let n = |count: usize| count as u64;
    metrics::count_outcomes(
        "Records",
        &[
            ("published", n(published)),
            ("skipped", n(skipped)),
            ("failed", n(failed)),
        ],
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::domain::ReservationId;
    use shared::events::EventEnvelope;
    use std::sync::Mutex;

    /// Records what it was asked to publish; fails the records whose index is
    /// listed in `fail_at` (broker down) or `refuse_at` (refused for good).
    #[derive(Default)]
    struct FakePublisher {
        fail_at: Vec<usize>,
        refuse_at: Vec<usize>,
        published: Mutex<Vec<OutboundRecord>>,
    }

    impl EventPublisher for FakePublisher {
        async fn publish_all(&self, records: &[OutboundRecord]) -> Vec<Result<(), shared::Error>> {
            let mut published = self.published.lock().unwrap();
            records
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    if self.fail_at.contains(&i) {
                        Err(shared::Error::from(shared::InfraError::Publish {
                            event_id: r.event_id.clone(),
                            topic: r.topic.clone(),
                            source: "broker down".into(),
                        }))
                    } else if self.refuse_at.contains(&i) {
                        Err(shared::Error::from(shared::InfraError::Unpublishable {
                            event_id: r.event_id.clone(),
                            topic: r.topic.clone(),
                            source: "message size too large".into(),
                        }))
                    } else {
                        published.push(r.clone());
                        Ok(())
                    }
                })
                .collect()
        }
    }

    fn outbox_insert(seq: u32) -> EventRecord {
        let envelope = shared::fixtures::payment_completed_envelope(
            ReservationId::random(),
            "a@example.com",
            1,
        );
        shared::fixtures::outbox_insert(&envelope, u64::from(seq))
    }

    fn batch(records: Vec<EventRecord>) -> Event {
        let mut event = Event::default();
        event.records = records;
        event
    }

    fn relay(fail_at: Vec<usize>) -> Relay<FakePublisher> {
        Relay::new(
            FakePublisher {
                fail_at,
                ..Default::default()
            },
            TopicNames::from_env(),
        )
    }

    #[tokio::test]
    async fn every_outbox_insert_is_published_with_key_and_headers() {
        let relay = relay(vec![]);
        let records: Vec<EventRecord> = (1..=3).map(outbox_insert).collect();
        let answer = relay.relay(batch(records)).await;
        assert!(answer.response.batch_item_failures.is_empty());
        assert_eq!(answer.skipped, 0);
        let published = relay.publisher.published.lock().unwrap();
        assert_eq!(published.len(), 3);
        let envelope = EventEnvelope::from_json(published[0].value.as_deref().unwrap()).unwrap();
        assert_eq!(
            published[0].key.as_deref(),
            Some(envelope.aggregate_id.as_bytes())
        );
        assert_eq!(published[0].topic, "payment.completed");
        assert_eq!(published[0].headers[0].0, "event-id");
        assert_eq!(
            published[0].header("event-id"),
            Some(envelope.event_id.to_string().as_str())
        );
        assert_eq!(published[0].header("event-type"), Some("PaymentCompleted"));
    }

    #[tokio::test]
    async fn the_first_failed_record_is_reported_so_the_stream_resumes_there() {
        let relay = relay(vec![1, 2]);
        let records: Vec<EventRecord> = (1..=4).map(outbox_insert).collect();
        let answer = relay.relay(batch(records)).await;
        assert_eq!(answer.response.batch_item_failures.len(), 1);
        assert_eq!(
            answer.response.batch_item_failures[0]
                .item_identifier
                .as_deref(),
            Some("000000000000000000002")
        );
    }

    #[tokio::test]
    async fn modify_and_remove_records_are_ignored() {
        let relay = relay(vec![]);
        let mut modify = outbox_insert(1);
        modify.event_name = "MODIFY".into();
        let mut remove = outbox_insert(2);
        remove.event_name = "REMOVE".into();
        let answer = relay.relay(batch(vec![modify, remove])).await;
        assert!(answer.response.batch_item_failures.is_empty());
        assert!(relay.publisher.published.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_insert_that_is_not_an_outbox_item_is_skipped_and_the_records_behind_it_published() {
        let relay = relay(vec![]);
        let mut bad = outbox_insert(2);
        bad.change.new_image = serde_dynamo::Item::from(std::collections::HashMap::<
            String,
            serde_dynamo::AttributeValue,
        >::new());
        let answer = relay
            .relay(batch(vec![outbox_insert(1), bad, outbox_insert(3)]))
            .await;
        assert!(answer.response.batch_item_failures.is_empty());
        assert_eq!(answer.skipped, 1);
        assert_eq!(relay.publisher.published.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_record_the_broker_refuses_for_good_is_skipped_and_a_broker_outage_is_retried() {
        let relay = Relay::new(
            FakePublisher {
                refuse_at: vec![0],
                fail_at: vec![2],
                ..Default::default()
            },
            TopicNames::from_env(),
        );
        let records: Vec<EventRecord> = (1..=4).map(outbox_insert).collect();
        let answer = relay.relay(batch(records)).await;
        assert_eq!(answer.skipped, 1);
        // The outage at the third record: the stream resumes there, in order.
        assert_eq!(
            answer.response.batch_item_failures[0]
                .item_identifier
                .as_deref(),
            Some("000000000000000000003")
        );
        let json = serde_json::to_value(&answer).unwrap();
        assert_eq!(json["skipped"], 1);
        assert_eq!(
            json["batchItemFailures"][0]["itemIdentifier"],
            "000000000000000000003"
        );
    }

    #[tokio::test]
    async fn a_failed_publish_is_logged_with_the_request_the_event_the_reservation_and_the_trace() {
        let (logs, _capturing) = shared::fakes::CapturedLogs::start();
        let relay = relay(vec![0]);
        let envelope = shared::fixtures::payment_completed_envelope(
            ReservationId::random(),
            "a@example.com",
            1,
        );
        let mut context = lambda_runtime::Context::default();
        context.request_id = "request-9".into();
        let trace = "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01";
        let item = shared::outbox::OutboxItem::new(&envelope, chrono::Utc::now())
            .traced(shared::trace::TraceContext::parse(trace).as_ref());
        let records = vec![shared::fixtures::outbox_insert_of(item, 1)];
        relay
            .handle(LambdaEvent::new(batch(records), context))
            .await
            .unwrap();
        let line = logs.line_with("publish failed");
        for id in [
            "request-9".to_owned(),
            envelope.event_id.to_string(),
            envelope.aggregate_id.clone(),
            "5759e988bd862e3fe1be46a994272793".to_owned(),
        ] {
            assert!(line.contains(&id), "{id} is not in {line}");
        }
    }
}
