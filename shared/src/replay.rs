//! Re-publishing outbox items: what `ops outbox replay` does for events the
//! stream no longer holds (the relay gave up on them, or they were lost on
//! the way). Each item goes to the same topic with the same key, headers and
//! event id as the relay sends it, through the same producer settings; the
//! consumers deduplicate by event id, so a replayed event that was already
//! delivered sends nobody a second message.

use crate::Error;
use crate::config::TopicNames;
use crate::dynamodb::outbox_items_created_between;
use crate::outbox::OutboxItem;
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
