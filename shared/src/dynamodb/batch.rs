//! Strongly consistent reads of a few items, from one or more tables, in one
//! BatchGetItem: how a hold and a payment read everything they need at once.

use super::items::{self, Item};
use super::{UnprocessedRetries, sdk_error};
use crate::Error;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::KeysAndAttributes;
use std::collections::HashMap;

/// The items a batch read found, by table and partition key (each key read
/// names one item, so its `pk` is enough to find it again).
#[derive(Debug, Default)]
pub(crate) struct Found {
    items: HashMap<(String, String), Item>,
}

impl Found {
    /// The item stored under `key` in `table`, if it exists.
    pub(crate) fn take(&mut self, table: &str, key: &Item) -> Option<Item> {
        let pk = items::pk_of(key)?;
        self.items.remove(&(table.to_owned(), pk.to_owned()))
    }
}

/// Reads `keys` (table, key) in one BatchGetItem, asking again only for what
/// DynamoDB left unprocessed (throttling), with growing pauses.
pub(crate) async fn get_items(client: &Client, keys: Vec<(&str, Item)>) -> Result<Found, Error> {
    let mut by_table: HashMap<String, Vec<Item>> = HashMap::new();
    for (table, key) in keys {
        by_table.entry(table.to_owned()).or_default().push(key);
    }
    let mut pending = by_table
        .into_iter()
        .map(|(table, keys)| {
            KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .build()
                .map(|request| (table, request))
                .map_err(|e| Error::storage("building a batch read", e))
        })
        .collect::<Result<HashMap<_, _>, _>>()?;
    let mut found = Found::default();
    let mut retries = UnprocessedRetries::new("BatchGetItem");
    while !pending.is_empty() {
        let out = client
            .batch_get_item()
            .set_request_items(Some(pending))
            .send()
            .await
            .map_err(|e| sdk_error("BatchGetItem", e))?;
        for (table, read) in out.responses.unwrap_or_default() {
            for item in read {
                if let Some(pk) = items::pk_of(&item) {
                    found.items.insert((table.clone(), pk.to_owned()), item);
                }
            }
        }
        pending = out.unprocessed_keys.unwrap_or_default();
        pending.retain(|_, request| !request.keys().is_empty());
        if !pending.is_empty() {
            retries.wait().await?;
        }
    }
    Ok(found)
}
