use super::items::HELD_SEATS_INDEX;
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

fn attribute(name: &str) -> Result<AttributeDefinition, Error> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
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

async fn create(
    client: &Client,
    name: &str,
    with_sort_key: bool,
    stream: bool,
    held_seats_index: bool,
) -> Result<(), Error> {
    let mut request = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute("pk")?)
        .key_schema(key("pk", KeyType::Hash)?);
    if with_sort_key {
        request = request
            .attribute_definitions(attribute("sk")?)
            .key_schema(key("sk", KeyType::Range)?);
    }
    if held_seats_index {
        request = request
            .attribute_definitions(attribute("heldShard")?)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("holdExpiresAt")
                    .attribute_type(ScalarAttributeType::N)
                    .build()
                    .map_err(|e| Error::storage("building a table definition", e))?,
            )
            .global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(HELD_SEATS_INDEX)
                    .key_schema(key("heldShard", KeyType::Hash)?)
                    .key_schema(key("holdExpiresAt", KeyType::Range)?)
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::Include)
                            .non_key_attributes("seatId")
                            .non_key_attributes("heldBy")
                            .build(),
                    )
                    .build()
                    .map_err(|e| Error::storage("building a table definition", e))?,
            );
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
    create(client, &tables.ticketing, true, false, true).await?;
    create(client, &tables.outbox, false, true, false).await?;
    create(client, &tables.idempotency, false, false, false).await?;
    create(client, &tables.failed_messages, true, false, false).await?;
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
