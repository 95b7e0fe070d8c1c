//! The DynamoDB Streams event source: polls the table's stream and invokes a
//! function with Lambda's event JSON (with `eventSourceARN`, which moto's records
//! lack), playing the template's mapping as Lambda does: batch size and batching
//! window, the event filter, `batchItemFailures` (re-delivered from the lowest
//! failed sequence number), an error splitting the batch in two when bisecting,
//! and the retry and record-age limits, past which a batch is discarded and
//! described on the on-failure queue.

use crate::Error;
use crate::http_api::Invoker;
use crate::template::{StartingPosition, StreamMapping};
use aws_lambda_events::dynamodb::{Event, EventRecord, StreamRecord, StreamViewType};
use aws_sdk_dynamodbstreams::Client as StreamsClient;
use aws_sdk_dynamodbstreams::error::DisplayErrorContext;
use aws_sdk_dynamodbstreams::types::{Record, ShardIteratorType};
use serde_json::Value;
use shared::outbox::{DiscardCondition, FailureContext, StreamBatchInfo, StreamFailureRecord};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How the source runs: the mapping as the template declares it, and the
/// runner's own polling (Lambda polls a shard about four times a second).
#[derive(Clone, Debug)]
pub struct StreamSourceSettings {
    /// What Lambda is told to do with the stream: template.yaml's mapping.
    pub mapping: StreamMapping,
    /// How long to wait before reading an empty shard again.
    pub poll_interval: Duration,
    /// Wait before re-delivering a failed batch.
    pub retry_backoff: Duration,
    pub region: String,
    /// The queue standing in for the mapping's on-failure destination.
    pub on_failure: Option<FailureQueue>,
}

impl StreamSourceSettings {
    /// The relay's mapping from template.yaml, polled as Lambda polls, with
    /// discarded batches described on `on_failure`.
    pub fn relay(on_failure: Option<FailureQueue>) -> Result<Self, Error> {
        Ok(StreamSourceSettings {
            mapping: StreamMapping::relay()?,
            poll_interval: Duration::from_millis(250),
            retry_backoff: Duration::from_millis(500),
            region: "us-east-1".into(),
            on_failure,
        })
    }
}

/// An SQS queue (on moto locally) that receives what Lambda sends the
/// on-failure destination: a [`StreamFailureRecord`] per discarded batch.
#[derive(Clone, Debug)]
pub struct FailureQueue {
    pub sqs: aws_sdk_sqs::Client,
    pub url: String,
}

impl FailureQueue {
    /// Creates (or finds) the queue `name`.
    pub async fn create(sqs: aws_sdk_sqs::Client, name: &str) -> Result<Self, Error> {
        let url = sqs
            .create_queue()
            .queue_name(name)
            .send()
            .await
            .map_err(queue_error("CreateQueue"))?
            .queue_url()
            .unwrap_or_default()
            .to_owned();
        Ok(FailureQueue { sqs, url })
    }

    async fn send(&self, record: &StreamFailureRecord) -> Result<(), Error> {
        self.sqs
            .send_message()
            .queue_url(&self.url)
            .message_body(serde_json::to_string(record)?)
            .send()
            .await
            .map_err(queue_error("SendMessage"))?;
        Ok(())
    }
}

fn streams_error<E: std::error::Error + 'static>(
    operation: &'static str,
) -> impl FnOnce(E) -> Error {
    move |e| Error::Streams {
        operation,
        message: DisplayErrorContext(e).to_string(),
    }
}

fn queue_error<E: std::error::Error + 'static>(operation: &'static str) -> impl FnOnce(E) -> Error {
    move |e| Error::FailureQueue {
        operation,
        message: DisplayErrorContext(e).to_string(),
    }
}

/// One stream record in Lambda's DynamoDB event format.
pub fn lambda_record(record: &Record, stream_arn: &str, region: &str) -> Option<EventRecord> {
    let change = record.dynamodb()?;
    let mut stream = StreamRecord::default();
    stream.approximate_creation_date_time = change
        .approximate_creation_date_time()
        .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
        .unwrap_or_default();
    stream.keys = change.keys().cloned().unwrap_or_default().into();
    stream.new_image = change.new_image().cloned().unwrap_or_default().into();
    stream.old_image = change.old_image().cloned().unwrap_or_default().into();
    stream.sequence_number = change.sequence_number().map(str::to_owned);
    stream.size_bytes = change.size_bytes().unwrap_or(0);
    stream.stream_view_type = Some(StreamViewType::NewAndOldImages);
    let mut event = EventRecord::default();
    event.aws_region = region.to_owned();
    event.change = stream;
    event.event_id = record.event_id().unwrap_or_default().to_owned();
    event.event_name = record
        .event_name()
        .map(|n| n.as_str().to_owned())
        .unwrap_or_default();
    event.event_source = Some("aws:dynamodb".into());
    event.event_version = Some("1.1".into());
    event.event_source_arn = Some(stream_arn.to_owned());
    Some(event)
}

/// Polls the stream of `table` and invokes `function` with each batch, as
/// Lambda runs `settings.mapping`, until `shutdown` turns true.
pub async fn run(
    dynamodb: aws_sdk_dynamodb::Client,
    streams: StreamsClient,
    table: String,
    settings: StreamSourceSettings,
    function: Invoker,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    if settings.mapping.on_failure && settings.on_failure.is_none() {
        return Err(Error::Template {
            place: "the stream mapping's DestinationConfig".into(),
            reason:
                "it names an on-failure destination and the local source was given no queue for it"
                    .into(),
        });
    }
    let shard = Shard::of_table(&dynamodb, streams, &table).await?;
    tracing::info!(table = %table, stream = %shard.stream_arn, mapping = ?settings.mapping, "polling the outbox stream");
    let position = match settings.mapping.starting_position {
        StartingPosition::TrimHorizon => ShardIteratorType::TrimHorizon,
        StartingPosition::Latest => ShardIteratorType::Latest,
    };
    let mut reader = Reader {
        iterator: shard.iterator(position).await?,
        shard,
        settings,
    };
    while !*shutdown.borrow() {
        let Some(batch) = reader.gather(&mut shutdown).await? else {
            tracing::warn!("the shard is closed; stopping the stream source");
            return Ok(());
        };
        if !batch.is_empty() {
            Delivery {
                function: &function,
                settings: &reader.settings,
                shard: &reader.shard,
            }
            .deliver(batch, &mut shutdown)
            .await?;
        }
    }
    Ok(())
}

/// Reads the shard in order, as Lambda's poller does.
struct Reader {
    shard: Shard,
    iterator: Option<String>,
    settings: StreamSourceSettings,
}

impl Reader {
    /// The next batch: up to `batch_size` records that pass the mapping's
    /// filter, gathered for at most the batching window after the first one.
    /// Empty when stopped; `None` when the shard is closed.
    async fn gather(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<Vec<EventRecord>>, Error> {
        let (batch_size, window) = (
            self.settings.mapping.batch_size as usize,
            self.settings.mapping.batching_window,
        );
        let mut batch = Vec::new();
        let mut window_ends = None;
        while !*shutdown.borrow() {
            let Some(iterator) = self.iterator.clone() else {
                return Ok((!batch.is_empty()).then_some(batch));
            };
            let wanted = batch_size - batch.len();
            let read = match self.read(&iterator, wanted).await {
                Ok(read) => read,
                Err(e) => {
                    tracing::warn!(error = %e, "GetRecords failed; retrying");
                    sleep_or_stop(shutdown, self.settings.retry_backoff).await;
                    continue;
                }
            };
            let was_empty = read.is_empty();
            batch.extend(read.into_iter().filter(|r| self.passes_filter(r)));
            if batch.len() >= batch_size {
                break;
            }
            if !batch.is_empty() {
                let ends = *window_ends.get_or_insert(Instant::now() + window);
                if Instant::now() >= ends {
                    break;
                }
            }
            if was_empty {
                let pause = window_ends.map_or(self.settings.poll_interval, |ends: Instant| {
                    self.settings
                        .poll_interval
                        .min(ends.saturating_duration_since(Instant::now()))
                });
                sleep_or_stop(shutdown, pause).await;
            }
        }
        Ok(Some(batch))
    }

    /// One GetRecords call: moves the iterator past what it read.
    async fn read(&mut self, iterator: &str, limit: usize) -> Result<Vec<EventRecord>, Error> {
        let out = self
            .shard
            .streams
            .get_records()
            .shard_iterator(iterator)
            .limit(limit as i32)
            .send()
            .await
            .map_err(streams_error("GetRecords"))?;
        self.iterator = out.next_shard_iterator().map(str::to_owned);
        Ok(out
            .records()
            .iter()
            .filter_map(|r| lambda_record(r, &self.shard.stream_arn, &self.settings.region))
            .collect())
    }

    /// Lambda drops a record no filter matches before any invocation.
    fn passes_filter(&self, record: &EventRecord) -> bool {
        let filters = &self.settings.mapping.filters;
        if filters.is_empty() {
            return true;
        }
        let json = serde_json::to_value(record).unwrap_or_default();
        filters.iter().any(|f| f.matches(&json))
    }
}

/// What one invocation made of a batch.
enum Outcome {
    Done,
    /// `batchItemFailures` named these records: retry from the first of them.
    FailedFrom(usize),
    /// The invocation failed (an error or a timeout): the whole batch failed.
    Failed,
}

/// Delivers one batch as Lambda does with the mapping's settings: retries,
/// splits on a function error, discards at the retry and age limits.
struct Delivery<'a> {
    function: &'a Invoker,
    settings: &'a StreamSourceSettings,
    shard: &'a Shard,
}

impl Delivery<'_> {
    async fn deliver(
        &self,
        batch: Vec<EventRecord>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), Error> {
        let mapping = &self.settings.mapping;
        let mut pending = VecDeque::from([batch]);
        // Retries of the batch at the head; splitting one counts none.
        let mut retries = 0u32;
        while let Some(mut head) = pending.pop_front() {
            if *shutdown.borrow() {
                return Ok(());
            }
            let expired = self.expired(&mut head);
            if !expired.is_empty() {
                self.discard(
                    expired,
                    DiscardCondition::RecordAgeExceeded,
                    retries + 1,
                    shutdown,
                )
                .await?;
            }
            if head.is_empty() {
                continue;
            }
            let failed = match self.invoke(&head).await? {
                Outcome::Done => {
                    retries = 0;
                    continue;
                }
                Outcome::FailedFrom(index) => head.split_off(index),
                Outcome::Failed if mapping.bisect_on_error && head.len() > 1 => {
                    let second = head.split_off(head.len() / 2);
                    pending.push_front(second);
                    pending.push_front(head);
                    continue;
                }
                Outcome::Failed => head,
            };
            retries += 1;
            if mapping.retry_attempts.is_some_and(|limit| retries > limit) {
                self.discard(
                    failed,
                    DiscardCondition::RetryAttemptsExhausted,
                    retries,
                    shutdown,
                )
                .await?;
                retries = 0;
            } else {
                sleep_or_stop(shutdown, self.settings.retry_backoff).await;
                pending.push_front(failed);
            }
        }
        Ok(())
    }

    /// Takes the records older than the mapping's record age out of `batch`.
    fn expired(&self, batch: &mut Vec<EventRecord>) -> Vec<EventRecord> {
        let Some(age) = self.settings.mapping.record_age else {
            return Vec::new();
        };
        let oldest_kept = chrono::Utc::now() - chrono::Duration::from_std(age).unwrap_or_default();
        let (expired, kept) = std::mem::take(batch)
            .into_iter()
            .partition(|r| r.change.approximate_creation_date_time < oldest_kept);
        *batch = kept;
        expired
    }

    /// Invokes the function with `records`; what it made of them.
    async fn invoke(&self, records: &[EventRecord]) -> Result<Outcome, Error> {
        let mut event = Event::default();
        event.records = records.to_vec();
        match (self.function)(serde_json::to_value(&event)?).await {
            Ok(answer) if self.settings.mapping.report_item_failures => {
                Ok(match lowest_failure(&answer) {
                    None => Outcome::Done,
                    Some(sequence) => Outcome::FailedFrom(
                        records
                            .iter()
                            .position(|r| r.change.sequence_number.as_deref() == Some(&sequence))
                            .unwrap_or(0),
                    ),
                })
            }
            Ok(_) => Ok(Outcome::Done),
            Err(e) => {
                tracing::warn!(error = %shared::error_chain(&e), records = records.len(), "relay invocation failed; the batch is delivered again");
                Ok(Outcome::Failed)
            }
        }
    }

    /// Gives up `records`: describes them on the on-failure destination (sent
    /// until the queue takes it, or the source stops), as Lambda does.
    async fn discard(
        &self,
        records: Vec<EventRecord>,
        condition: DiscardCondition,
        invocations: u32,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), Error> {
        let record = self.failure_record(&records, condition, invocations);
        tracing::error!(?condition, batch = ?record.batch, "the stream source discarded records");
        let Some(queue) = &self.settings.on_failure else {
            return Ok(());
        };
        while let Err(e) = queue.send(&record).await {
            tracing::warn!(error = %e, "cannot describe a discarded batch on the on-failure queue; retrying");
            sleep_or_stop(shutdown, self.settings.retry_backoff).await;
            if *shutdown.borrow() {
                return Err(e);
            }
        }
        Ok(())
    }

    fn failure_record(
        &self,
        records: &[EventRecord],
        condition: DiscardCondition,
        invocations: u32,
    ) -> StreamFailureRecord {
        let (first, last) = (&records[0].change, &records[records.len() - 1].change);
        StreamFailureRecord {
            request_context: FailureContext {
                request_id: shared::domain::EventId::random().to_string(),
                function_arn: "arn:aws:lambda:us-east-1:000000000000:function:outbox-relay".into(),
                condition,
                approximate_invoke_count: invocations,
            },
            version: "1.0".into(),
            timestamp: chrono::Utc::now(),
            batch: StreamBatchInfo {
                shard_id: self.shard.shard_id.clone(),
                start_sequence_number: first.sequence_number.clone().unwrap_or_default(),
                end_sequence_number: last.sequence_number.clone().unwrap_or_default(),
                approximate_arrival_of_first_record: first.approximate_creation_date_time,
                approximate_arrival_of_last_record: last.approximate_creation_date_time,
                batch_size: records.len(),
                stream_arn: self.shard.stream_arn.clone(),
            },
        }
    }
}

/// The one shard of a table's stream (moto's streams have one).
struct Shard {
    streams: StreamsClient,
    stream_arn: String,
    shard_id: String,
}

impl Shard {
    async fn of_table(
        dynamodb: &aws_sdk_dynamodb::Client,
        streams: StreamsClient,
        table: &str,
    ) -> Result<Self, Error> {
        let stream_arn = dynamodb
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(streams_error("DescribeTable"))?
            .table()
            .and_then(|t| t.latest_stream_arn())
            .map(str::to_owned)
            .ok_or_else(|| Error::Streams {
                operation: "DescribeTable",
                message: format!("table {table} has no stream"),
            })?;
        let shard_id = streams
            .describe_stream()
            .stream_arn(&stream_arn)
            .send()
            .await
            .map_err(streams_error("DescribeStream"))?
            .stream_description()
            .and_then(|d| d.shards().first())
            .and_then(|s| s.shard_id())
            .map(str::to_owned)
            .ok_or_else(|| Error::Streams {
                operation: "DescribeStream",
                message: format!("the stream of {table} has no shard"),
            })?;
        Ok(Shard {
            streams,
            stream_arn,
            shard_id,
        })
    }

    /// An iterator of the shard at `kind`.
    async fn iterator(&self, kind: ShardIteratorType) -> Result<Option<String>, Error> {
        self.streams
            .get_shard_iterator()
            .stream_arn(&self.stream_arn)
            .shard_id(&self.shard_id)
            .shard_iterator_type(kind)
            .send()
            .await
            .map_err(streams_error("GetShardIterator"))
            .map(|o| o.shard_iterator().map(str::to_owned))
    }
}

/// The lowest sequence number in a `batchItemFailures` answer.
pub fn lowest_failure(answer: &Value) -> Option<String> {
    answer
        .get("batchItemFailures")?
        .as_array()?
        .iter()
        .filter_map(|f| f.get("itemIdentifier")?.as_str())
        .min_by(|a, b| {
            // Sequence numbers are decimal strings of varying length.
            a.len().cmp(&b.len()).then_with(|| a.cmp(b))
        })
        .map(str::to_owned)
}

pub(crate) async fn sleep_or_stop(shutdown: &mut watch::Receiver<bool>, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shutdown.changed() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_lowest_failed_sequence_number_is_chosen_numerically() {
        let answer = json!({"batchItemFailures": [
            {"itemIdentifier": "200"}, {"itemIdentifier": "1000"}, {"itemIdentifier": "30"}
        ]});
        assert_eq!(lowest_failure(&answer).as_deref(), Some("30"));
        assert_eq!(lowest_failure(&json!({"batchItemFailures": []})), None);
        assert_eq!(lowest_failure(&Value::Null), None);
    }
}
