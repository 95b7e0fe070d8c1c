//! Reading a time window through an index keyed by hour-and-shard buckets
//! (`outbox::buckets_between`): one Query per bucket of the window, every page,
//! never a scan. The outbox's `created-at` and the payments' `paid-at` indexes.

use super::items::{Item, n, s};
use super::sdk_error;
use crate::Error;
use crate::clock::to_millis;
use crate::outbox::buckets_between;
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};

/// An index of items by time: its name, its bucket and time attributes, and
/// the operation's name in errors.
pub struct WindowIndex<'a> {
    pub table: &'a str,
    pub index: &'a str,
    pub bucket: &'a str,
    pub time: &'a str,
    pub operation: &'static str,
}

/// The items whose time is in `from..=to`, bucket by bucket (oldest hour first).
pub async fn query_window(
    client: &Client,
    index: &WindowIndex<'_>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Item>, Error> {
    let mut items = Vec::new();
    let condition = format!(
        "{} = :bucket AND {} BETWEEN :from AND :to",
        index.bucket, index.time
    );
    for bucket in buckets_between(from, to) {
        let mut start = None;
        loop {
            let out = client
                .query()
                .table_name(index.table)
                .index_name(index.index)
                .key_condition_expression(&condition)
                .expression_attribute_values(":bucket", s(&bucket))
                .expression_attribute_values(":from", n(to_millis(from)))
                .expression_attribute_values(":to", n(to_millis(to)))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error(index.operation, e))?;
            items.extend(out.items().iter().cloned());
            start = out.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
    }
    Ok(items)
}
