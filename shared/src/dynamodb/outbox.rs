//! Reading the outbox table by creation time, through its `created-at` index
//! (one Query per hour and shard of the window: never a scan).

use super::items::OUTBOX_CREATED_INDEX;
use super::items::{n, s};
use super::sdk_error;
use crate::Error;
use crate::clock::to_millis;
use crate::outbox::{OutboxItem, buckets_between};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};

/// The outbox items created in `from..=to`, oldest first (ties by event id).
pub async fn outbox_items_created_between(
    client: &Client,
    table: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<OutboxItem>, Error> {
    let mut items = Vec::new();
    for bucket in buckets_between(from, to) {
        let mut start = None;
        loop {
            let out = client
                .query()
                .table_name(table)
                .index_name(OUTBOX_CREATED_INDEX)
                .key_condition_expression(
                    "createdBucket = :bucket AND createdAt BETWEEN :from AND :to",
                )
                .expression_attribute_values(":bucket", s(&bucket))
                .expression_attribute_values(":from", n(to_millis(from)))
                .expression_attribute_values(":to", n(to_millis(to)))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error("Query (outbox by creation time)", e))?;
            for item in out.items() {
                items.push(
                    serde_dynamo::from_item::<_, OutboxItem>(item.clone())
                        .map_err(|e| Error::corrupt(format!("outbox item in {bucket}: {e}")))?,
                );
            }
            start = out.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
    }
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
