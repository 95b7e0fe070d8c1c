//! `ops tables scan`: a table's items as JSON lines, to look at by hand.

use crate::Error;
use aws_sdk_dynamodb::types::AttributeValue;
use clap::Subcommand;
use shared::config::TableNames;
use std::collections::HashMap;

#[derive(Subcommand)]
pub enum TablesCommand {
    /// Print a table's items as JSON lines: every item (a Scan), or those of
    /// one partition key (a Query).
    Scan {
        /// ticketing, outbox, idempotency or failed-messages (named by the
        /// *_TABLE variables), or a table's own name.
        table: String,
        /// Only the items of this partition key, e.g. RESERVATION#<id>.
        #[arg(long)]
        pk: Option<String>,
        /// The most items printed.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

type Item = HashMap<String, AttributeValue>;

pub async fn run(
    command: TablesCommand,
    client: &aws_sdk_dynamodb::Client,
    tables: &TableNames,
) -> Result<(), Error> {
    let TablesCommand::Scan { table, pk, limit } = command;
    let table = table_name(&table, tables);
    let mut start: Option<Item> = None;
    let mut printed = 0;
    loop {
        let (items, next) = page(client, &table, pk.as_deref(), start).await?;
        for item in items.into_iter().take(limit - printed) {
            println!("{}", item_json(item)?);
            printed += 1;
        }
        match next {
            Some(key) if printed < limit => start = Some(key),
            _ => return Ok(()),
        }
    }
}

/// The table a logical name stands for (the functions' variables), or `name` itself.
fn table_name(name: &str, tables: &TableNames) -> String {
    match name {
        "ticketing" => tables.ticketing.clone(),
        "outbox" => tables.outbox.clone(),
        "idempotency" => tables.idempotency.clone(),
        "failed-messages" => tables.failed_messages.clone(),
        other => other.to_owned(),
    }
}

/// One page of items and where the next one starts.
async fn page(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    pk: Option<&str>,
    start: Option<Item>,
) -> Result<(Vec<Item>, Option<Item>), Error> {
    let failed = |operation: &str, e: String| Error::Message(format!("{operation} {table}: {e}"));
    match pk {
        Some(pk) => {
            let out = client
                .query()
                .table_name(table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", AttributeValue::S(pk.to_owned()))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| failed("Query", shared::error_chain(&e)))?;
            Ok((out.items.unwrap_or_default(), out.last_evaluated_key))
        }
        None => {
            let out = client
                .scan()
                .table_name(table)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| failed("Scan", shared::error_chain(&e)))?;
            Ok((out.items.unwrap_or_default(), out.last_evaluated_key))
        }
    }
}

/// An item as plain JSON (numbers as numbers, sets as arrays).
fn item_json(item: Item) -> Result<serde_json::Value, Error> {
    serde_dynamo::from_item(item).map_err(|e| Error::Message(format!("an item as JSON: {e}")))
}
