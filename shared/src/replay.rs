//! Re-publishing outbox items: what `ops outbox replay` does for events the
//! stream no longer holds (the relay gave up on them, or they were lost on
//! the way). Each item goes to the same topic with the same key, headers and
//! event id as the relay sends it, through the same producer settings; the
//! consumers deduplicate by event id, so a replayed event that was already
//! delivered sends nobody a second message.
//!
//! Two ways to name what to replay: a window of creation times, or the
//! relay's on-failure queue, whose messages name discarded batches by stream
//! position (read again from the stream while it holds them, else found by
//! their arrival times in the table).

use crate::Error;
use crate::config::TopicNames;
use crate::dynamodb::outbox_items_created_between;
use crate::outbox::{OutboxItem, StreamBatchInfo, StreamFailureRecord};
use crate::ports::EventPublisher;
use chrono::{DateTime, Utc};

/// Which outbox items to replay.
#[derive(Clone, Debug)]
pub struct ReplayWindow {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Only this event, when given.
    pub event_id: Option<String>,
}

/// Records published per batch: each batch is acknowledged before the next.
const CHUNK: usize = 100;

/// The items of `window`, oldest first.
pub async fn items_in(
    dynamodb: &aws_sdk_dynamodb::Client,
    outbox_table: &str,
    window: &ReplayWindow,
) -> Result<Vec<OutboxItem>, Error> {
    if window.from > window.to {
        return Err(crate::config::ConfigError::invalid(
            "--from",
            format!("{} is after --to {}", window.from, window.to),
        )
        .into());
    }
    let mut items =
        outbox_items_created_between(dynamodb, outbox_table, window.from, window.to).await?;
    if let Some(event_id) = &window.event_id {
        items.retain(|item| &item.event_id == event_id);
    }
    Ok(items)
}

/// Publishes `items` in order, a chunk at a time; answers how many the broker
/// acknowledged, or the first failure (what came before it is published).
pub async fn publish(
    items: &[OutboxItem],
    publisher: &impl EventPublisher,
    topics: &TopicNames,
) -> Result<usize, (usize, Error)> {
    let mut published = 0;
    for chunk in items.chunks(CHUNK) {
        let records: Vec<_> = chunk.iter().map(|item| item.to_record(topics)).collect();
        for result in publisher.publish_all(&records).await {
            result.map_err(|e| (published, e))?;
            published += 1;
        }
    }
    Ok(published)
}

/// Where a failure-queue replay found a discarded batch's items.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FoundIn {
    /// Read again from the stream, by the batch's sequence numbers.
    Stream,
    /// The stream no longer holds them: the items created around the batch's
    /// arrival times, from the table's creation-time index.
    TableByTime,
}

/// One message of the relay's on-failure queue: a discarded batch.
#[derive(Clone, Debug)]
pub struct DiscardedBatch {
    pub receipt_handle: String,
    pub record: StreamFailureRecord,
}

/// How long a received message stays hidden while its batch is replayed.
const VISIBILITY_SECONDS: i32 = 300;
/// The margin around a batch's arrival times when its items are found by time:
/// an item's `createdAt` is its payment's clock, a little before its arrival.
const ARRIVAL_MARGIN: chrono::Duration = chrono::Duration::minutes(1);

/// Every message on the on-failure queue at `url` (each hidden for five
/// minutes; deleted only by [`forget`] once its batch is published).
pub async fn discarded_batches(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
) -> Result<Vec<DiscardedBatch>, Error> {
    let mut batches = Vec::new();
    loop {
        let out = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .visibility_timeout(VISIBILITY_SECONDS)
            .send()
            .await
            .map_err(|e| service_error("ReceiveMessage", e))?;
        if out.messages().is_empty() {
            return Ok(batches);
        }
        for message in out.messages() {
            let body = message.body().unwrap_or_default();
            let record: StreamFailureRecord = serde_json::from_str(body).map_err(|e| {
                Error::malformed(format!(
                    "a message on {url} is not a stream batch's on-failure record ({e}): {body}"
                ))
            })?;
            batches.push(DiscardedBatch {
                receipt_handle: message.receipt_handle().unwrap_or_default().to_owned(),
                record,
            });
        }
    }
}

/// Deletes a replayed batch's message from the queue.
pub async fn forget(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    batch: &DiscardedBatch,
) -> Result<(), Error> {
    sqs.delete_message()
        .queue_url(url)
        .receipt_handle(&batch.receipt_handle)
        .send()
        .await
        .map_err(|e| service_error("DeleteMessage", e))?;
    Ok(())
}

/// Makes a message visible again at once (a dry run leaves the queue as it was).
pub async fn release(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    batch: &DiscardedBatch,
) -> Result<(), Error> {
    sqs.change_message_visibility()
        .queue_url(url)
        .receipt_handle(&batch.receipt_handle)
        .visibility_timeout(0)
        .send()
        .await
        .map_err(|e| service_error("ChangeMessageVisibility", e))?;
    Ok(())
}

fn service_error(
    operation: &'static str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    Error::storage(
        operation,
        aws_sdk_sqs::error::DisplayErrorContext(e).to_string(),
    )
}

/// The outbox items of a discarded batch: read again from the stream while it
/// holds them, else found by time in the table.
pub async fn batch_items(
    streams: &aws_sdk_dynamodbstreams::Client,
    dynamodb: &aws_sdk_dynamodb::Client,
    outbox_table: &str,
    batch: &StreamBatchInfo,
) -> Result<(Vec<OutboxItem>, FoundIn), Error> {
    if let Some(items) = stream_items(streams, batch).await? {
        return Ok((items, FoundIn::Stream));
    }
    let window = ReplayWindow {
        from: batch.approximate_arrival_of_first_record - ARRIVAL_MARGIN,
        to: batch.approximate_arrival_of_last_record + ARRIVAL_MARGIN,
        event_id: None,
    };
    Ok((
        items_in(dynamodb, outbox_table, &window).await?,
        FoundIn::TableByTime,
    ))
}

/// The outbox INSERTs between the batch's first and last sequence numbers, or
/// `None` when the stream no longer holds them (trimmed, or the stream gone).
async fn stream_items(
    streams: &aws_sdk_dynamodbstreams::Client,
    batch: &StreamBatchInfo,
) -> Result<Option<Vec<OutboxItem>>, Error> {
    use aws_sdk_dynamodbstreams::error::ProvideErrorMetadata;
    let iterator = streams
        .get_shard_iterator()
        .stream_arn(&batch.stream_arn)
        .shard_id(&batch.shard_id)
        .shard_iterator_type(aws_sdk_dynamodbstreams::types::ShardIteratorType::AtSequenceNumber)
        .sequence_number(&batch.start_sequence_number)
        .send()
        .await;
    let mut iterator = match iterator {
        Ok(out) => out.shard_iterator().map(str::to_owned),
        Err(e)
            if matches!(
                e.code(),
                Some("TrimmedDataAccessException" | "ResourceNotFoundException")
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(service_error("GetShardIterator", e)),
    };
    let mut items = Vec::new();
    while let Some(current) = iterator.take() {
        let out = streams
            .get_records()
            .shard_iterator(&current)
            .send()
            .await
            .map_err(|e| service_error("GetRecords", e))?;
        if out.records().is_empty() {
            break;
        }
        for record in out.records() {
            let Some(change) = record.dynamodb() else {
                continue;
            };
            let sequence = change.sequence_number().unwrap_or_default();
            if later(sequence, &batch.end_sequence_number) {
                return Ok(Some(items));
            }
            let inserted = record.event_name().map(|n| n.as_str()) == Some("INSERT");
            if let (true, Some(image)) = (inserted, change.new_image()) {
                match serde_dynamo::from_item::<_, OutboxItem>(image.clone()) {
                    Ok(item) => items.push(item),
                    Err(e) => {
                        tracing::warn!(%sequence, error = %e, "not an outbox item; not replayed")
                    }
                }
            }
        }
        iterator = out.next_shard_iterator().map(str::to_owned);
    }
    Ok(Some(items))
}

/// Whether sequence number `a` comes after `b` (decimal strings of varying length).
fn later(a: &str, b: &str) -> bool {
    (a.len(), a) > (b.len(), b)
}
