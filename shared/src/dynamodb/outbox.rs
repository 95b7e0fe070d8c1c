//! Reading the outbox table by creation time, through its `created-at` index
//! (one Query per hour and shard of the window: never a scan).

use super::items::{OUTBOX_CREATED_INDEX, s};
use super::sdk_error;
use super::window::{WindowIndex, query_window};
use crate::Error;
use crate::outbox::OutboxItem;
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};

/// The outbox items created in `from..=to`, oldest first (ties by event id).
pub async fn outbox_items_created_between(
    client: &Client,
    table: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<OutboxItem>, Error> {
    let index = WindowIndex {
        table,
        index: OUTBOX_CREATED_INDEX,
        bucket: "createdBucket",
        time: "createdAt",
        operation: "Query (outbox by creation time)",
    };
    let mut items = query_window(client, &index, from, to)
        .await?
        .into_iter()
        .map(|item| {
            serde_dynamo::from_item::<_, OutboxItem>(item)
                .map_err(|e| Error::corrupt(format!("outbox item: {e}")))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    items.sort_by(|a, b| (a.created_at, &a.event_id).cmp(&(b.created_at, &b.event_id)));
    Ok(items)
}

/// The outbox item of `event_id`, while the outbox keeps it (7 days).
pub async fn outbox_item(
    client: &Client,
    table: &str,
    event_id: &str,
) -> Result<Option<OutboxItem>, Error> {
    let out = client
        .get_item()
        .table_name(table)
        .key("pk", s(event_id))
        .send()
        .await
        .map_err(|e| sdk_error("GetItem (outbox item)", e))?;
    out.item
        .map(serde_dynamo::from_item::<_, OutboxItem>)
        .transpose()
        .map_err(|e| Error::corrupt(format!("outbox item {event_id}: {e}")))
}
