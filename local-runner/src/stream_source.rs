//! The DynamoDB Streams event source: polls the table's stream and invokes a
//! function with Lambda's event JSON (with `eventSourceARN`, which moto's records
//! lack). Like Lambda, it honours the answer: `batchItemFailures` re-delivers from
//! the lowest failed sequence number; an error re-delivers the whole batch.

use crate::Error;
use crate::http_api::Invoker;
use aws_lambda_events::dynamodb::{Event, EventRecord, StreamRecord, StreamViewType};
use aws_sdk_dynamodbstreams::Client as StreamsClient;
use aws_sdk_dynamodbstreams::error::DisplayErrorContext;
use aws_sdk_dynamodbstreams::types::{Record, ShardIteratorType};
use serde_json::Value;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct StreamSourceSettings {
    pub batch_size: i32,
    pub poll_interval: Duration,
    /// Wait before re-delivering a failed batch.
    pub retry_backoff: Duration,
    pub region: String,
}

impl Default for StreamSourceSettings {
    fn default() -> Self {
        StreamSourceSettings {
            batch_size: 100,
            poll_interval: Duration::from_millis(200),
            retry_backoff: Duration::from_millis(500),
            region: "us-east-1".into(),
        }
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

/// Polls the stream of `table` and invokes `function` with each batch until
/// `shutdown` turns true.
pub async fn run(
    dynamodb: aws_sdk_dynamodb::Client,
    streams: StreamsClient,
    table: String,
    settings: StreamSourceSettings,
    function: Invoker,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    let shard = Shard::of_table(&dynamodb, streams, &table).await?;
    tracing::info!(table = %table, stream = %shard.stream_arn, "polling the outbox stream");
    let mut iterator = shard.iterator(ShardIteratorType::TrimHorizon, None).await?;
    while !*shutdown.borrow() {
        let Some(current) = iterator.clone() else {
            tracing::warn!("the shard is closed; stopping the stream source");
            return Ok(());
        };
        let out = match shard
            .streams
            .get_records()
            .shard_iterator(&current)
            .limit(settings.batch_size)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                tracing::warn!(error = %DisplayErrorContext(e), "GetRecords failed; retrying");
                sleep_or_stop(&mut shutdown, settings.retry_backoff).await;
                continue;
            }
        };
        let records: Vec<EventRecord> = out
            .records()
            .iter()
            .filter_map(|r| lambda_record(r, &shard.stream_arn, &settings.region))
            .collect();
        let next = out.next_shard_iterator().map(str::to_owned);
        if records.is_empty() {
            iterator = next;
            sleep_or_stop(&mut shutdown, settings.poll_interval).await;
            continue;
        }
        iterator = match invoke(&function, records).await? {
            None => next,
            Some(sequence) => {
                sleep_or_stop(&mut shutdown, settings.retry_backoff).await;
                shard
                    .iterator(ShardIteratorType::AtSequenceNumber, Some(sequence))
                    .await?
            }
        };
    }
    Ok(())
}

/// Invokes `function` with one batch; answers the sequence number to deliver
/// again from (the lowest failed one, or the batch's first when the invocation
/// failed), or `None` when the whole batch is done.
async fn invoke(function: &Invoker, records: Vec<EventRecord>) -> Result<Option<String>, Error> {
    let first = records[0].change.sequence_number.clone();
    let mut event = Event::default();
    event.records = records;
    match function(serde_json::to_value(&event)?).await {
        Ok(answer) => Ok(lowest_failure(&answer)),
        Err(e) => {
            tracing::warn!(error = %shared::error_chain(&e), "relay invocation failed; the whole batch is re-delivered");
            Ok(first)
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
            .map_err(|e| Error::Streams {
                operation: "DescribeTable",
                message: DisplayErrorContext(e).to_string(),
            })?
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

    /// An iterator of the shard at `kind` (and `sequence`, for AT_SEQUENCE_NUMBER).
    async fn iterator(
        &self,
        kind: ShardIteratorType,
        sequence: Option<String>,
    ) -> Result<Option<String>, Error> {
        self.streams
            .get_shard_iterator()
            .stream_arn(&self.stream_arn)
            .shard_id(&self.shard_id)
            .shard_iterator_type(kind)
            .set_sequence_number(sequence)
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

    /// The `Key: value` settings of the relay's stream mapping in template.yaml
    /// (the `Outbox:` event of `OutboxRelayFunction`).
    fn template_relay_mapping() -> std::collections::HashMap<String, String> {
        let template =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml"))
                .expect("template.yaml next to the workspace");
        let mut in_relay = false;
        let mut in_mapping = false;
        let mut settings = std::collections::HashMap::new();
        for line in template.lines() {
            let indent = line.len() - line.trim_start().len();
            let text = line.trim();
            if indent == 2 && text.ends_with(':') {
                in_relay = text == "OutboxRelayFunction:";
                in_mapping = false;
            } else if in_relay && indent == 8 && text.ends_with(':') {
                in_mapping = text == "Outbox:";
            } else if in_mapping
                && indent == 12
                && let Some((key, value)) = text.split_once(": ")
            {
                settings.insert(key.to_owned(), value.to_owned());
            }
        }
        settings
    }

    #[test]
    fn the_stream_source_retries_as_the_templates_relay_mapping_says() {
        let mapping = template_relay_mapping();
        // The source re-delivers a failed batch without an attempt or age limit:
        // the deployed mapping must say the same, or a broker outage would make
        // AWS give up a batch the local tests saw delivered.
        assert_eq!(mapping["MaximumRetryAttempts"], "-1", "{mapping:?}");
        assert_eq!(mapping["MaximumRecordAgeInSeconds"], "-1", "{mapping:?}");
        assert_eq!(
            mapping["FunctionResponseTypes"],
            "[ReportBatchItemFailures]"
        );
        assert_eq!(mapping["ParallelizationFactor"], "1");
        assert_eq!(
            mapping["BatchSize"],
            StreamSourceSettings::default().batch_size.to_string()
        );
    }

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
