use super::items::{HELD_SEATS_INDEX, OUTBOX_CREATED_INDEX, PAID_AT_INDEX};
use super::sdk_error;
use crate::Error;
use crate::config::TableNames;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType, TableStatus,
};
use std::time::Duration;

fn attribute(name: &str, kind: ScalarAttributeType) -> Result<AttributeDefinition, Error> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(kind)
        .build()
        .map_err(|e| Error::storage("building a table definition", e))
}

fn key(name: &str, kind: KeyType) -> Result<KeySchemaElement, Error> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .map_err(|e| Error::storage("building a table definition", e))
}

/// A global secondary index: a string hash key, a number range key.
struct Index {
    name: &'static str,
    hash: &'static str,
    range: &'static str,
    /// `None`: every attribute is projected.
    projected: Option<&'static [&'static str]>,
}

/// The seats held per shard, by hold expiry: what seat-expiration queries.
const HELD_SEATS: Index = Index {
    name: HELD_SEATS_INDEX,
    hash: "heldShard",
    range: "holdExpiresAt",
    projected: Some(&["seatId", "heldBy"]),
};

/// The payments per hour bucket, by payment time: what `ops reconcile` queries.
const PAID_AT: Index = Index {
    name: PAID_AT_INDEX,
    hash: "paidBucket",
    range: "paidAt",
    projected: Some(&["paymentId", "reservationId"]),
};

/// The outbox items per creation bucket, by creation time: what `ops outbox
/// replay` queries (see `items::outbox_bucket`).
const OUTBOX_CREATED: Index = Index {
    name: OUTBOX_CREATED_INDEX,
    hash: "createdBucket",
    range: "createdAt",
    projected: None,
};

impl Index {
    fn definition(&self) -> Result<GlobalSecondaryIndex, Error> {
        let projection = match self.projected {
            Some(attributes) => attributes.iter().fold(
                Projection::builder().projection_type(ProjectionType::Include),
                |p, a| p.non_key_attributes(*a),
            ),
            None => Projection::builder().projection_type(ProjectionType::All),
        };
        GlobalSecondaryIndex::builder()
            .index_name(self.name)
            .key_schema(key(self.hash, KeyType::Hash)?)
            .key_schema(key(self.range, KeyType::Range)?)
            .projection(projection.build())
            .build()
            .map_err(|e| Error::storage("building a table definition", e))
    }
}

async fn create(
    client: &Client,
    name: &str,
    with_sort_key: bool,
    stream: bool,
    indexes: &[&Index],
) -> Result<(), Error> {
    let mut request = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute("pk", ScalarAttributeType::S)?)
        .key_schema(key("pk", KeyType::Hash)?);
    if with_sort_key {
        request = request
            .attribute_definitions(attribute("sk", ScalarAttributeType::S)?)
            .key_schema(key("sk", KeyType::Range)?);
    }
    for index in indexes {
        request = request
            .attribute_definitions(attribute(index.hash, ScalarAttributeType::S)?)
            .attribute_definitions(attribute(index.range, ScalarAttributeType::N)?)
            .global_secondary_indexes(index.definition()?);
    }
    if stream {
        request = request.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build()
                .map_err(|e| Error::storage("building a table definition", e))?,
        );
    }
    match request.send().await {
        Ok(_) => {}
        Err(err)
            if matches!(
                err.as_service_error(),
                Some(CreateTableError::ResourceInUseException(_))
            ) => {}
        Err(err) => return Err(sdk_error("CreateTable", err)),
    }
    wait_active(client, name).await
}

async fn wait_active(client: &Client, name: &str) -> Result<(), Error> {
    for _ in 0..120 {
        let out = client
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(|e| sdk_error("DescribeTable", e))?;
        if out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(Error::storage(
        "DescribeTable",
        format!("table {name} did not become ACTIVE"),
    ))
}

/// Creates the tables (safe to run twice): the ticketing table, the outbox table
/// with a NEW_AND_OLD_IMAGES stream, the idempotency table and the failed-message
/// ledger.
pub async fn create_tables(client: &Client, tables: &TableNames) -> Result<(), Error> {
    let ticketing: &[&Index] = &[&HELD_SEATS, &PAID_AT];
    create(client, &tables.ticketing, true, false, ticketing).await?;
    create(client, &tables.outbox, false, true, &[&OUTBOX_CREATED]).await?;
    create(client, &tables.idempotency, false, false, &[]).await?;
    create(client, &tables.failed_messages, true, false, &[]).await?;
    Ok(())
}

/// Deletes the tables, ignoring ones that do not exist.
pub async fn delete_tables(client: &Client, tables: &TableNames) -> Result<(), Error> {
    for name in [
        &tables.ticketing,
        &tables.outbox,
        &tables.idempotency,
        &tables.failed_messages,
    ] {
        let _ = client.delete_table().table_name(name).send().await;
    }
    Ok(())
}
