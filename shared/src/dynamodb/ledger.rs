use super::items::{Item, Reader, n, s};
use super::sdk_error;
use crate::Error;
use crate::clock::to_millis;
use crate::ledger::{FailureLedger, LedgerEntry, LedgerFailure, LedgerStatus};
use crate::notification::ChannelKind;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;

/// How long a PROCESSED row is kept (the table's TTL, `expiresAt` in epoch
/// seconds); FAILED and PENDING rows stay until handled.
pub const PROCESSED_RETENTION: chrono::Duration = chrono::Duration::days(30);

/// The sort key of a row for a record that failed before any channel.
pub const RECORD_SK: &str = "record";

/// The failed-message ledger table: `pk` is the event id, `sk` the channel that
/// failed (`telegram`, `discord`), or `record` when the record itself failed.
#[derive(Clone, Debug)]
pub struct DynamoFailureLedger {
    client: Client,
    table: String,
}

fn sort_key(channel: Option<ChannelKind>) -> &'static str {
    channel.map_or(RECORD_SK, ChannelKind::name)
}

fn row_key(event_id: &str, channel: Option<ChannelKind>) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pk".to_owned(), s(event_id)),
        ("sk".to_owned(), s(sort_key(channel))),
    ])
}

impl DynamoFailureLedger {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoFailureLedger {
            client,
            table: table.into(),
        }
    }

    /// Every row, or those with `status`, oldest failure first.
    pub async fn list(&self, status: Option<LedgerStatus>) -> Result<Vec<LedgerEntry>, Error> {
        let mut entries = Vec::new();
        let mut start = None;
        loop {
            let mut scan = self
                .client
                .scan()
                .table_name(&self.table)
                .set_exclusive_start_key(start);
            if let Some(status) = status {
                scan = scan
                    .filter_expression("#status = :status")
                    .expression_attribute_names("#status", "status")
                    .expression_attribute_values(":status", s(status.name()));
            }
            let out = scan
                .send()
                .await
                .map_err(|e| sdk_error("Scan (ledger)", e))?;
            for item in out.items() {
                entries.push(entry_from(item)?);
            }
            start = out.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
        entries.sort_by_key(|e| e.first_failed_at);
        Ok(entries)
    }

    /// The row of `event_id` on `channel` (`None`: the record's own row).
    pub async fn get(
        &self,
        event_id: &str,
        channel: Option<ChannelKind>,
    ) -> Result<Option<LedgerEntry>, Error> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(row_key(event_id, channel)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem (ledger)", e))?;
        out.item.as_ref().map(entry_from).transpose()
    }

    /// Every row of `event_id`, one per channel that failed.
    pub async fn for_event(&self, event_id: &str) -> Result<Vec<LedgerEntry>, Error> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(event_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("Query (ledger)", e))?;
        out.items().iter().map(entry_from).collect()
    }
}

fn entry_from(item: &Item) -> Result<LedgerEntry, Error> {
    let r = Reader::new(item, "ledger");
    let sk = r.str("sk")?;
    Ok(LedgerEntry {
        event_id: r.str("pk")?.to_owned(),
        channel: match sk {
            RECORD_SK => None,
            name => Some(ChannelKind::parse(name).ok_or_else(|| {
                Error::corrupt(format!("ledger row of unknown channel {name:?}"))
            })?),
        },
        event_type: r.opt_str("eventType").map(str::to_owned),
        status: LedgerStatus::parse(r.str("status")?)?,
        attempts: u32::try_from(r.i64("attempts")?)
            .map_err(|_| Error::corrupt("ledger attempts out of range"))?,
        first_failed_at: r.time("firstFailedAt")?,
        last_failed_at: r.time("lastFailedAt")?,
        error_kind: r.str("errorKind")?.to_owned(),
        last_error: r.str("lastError")?.to_owned(),
        topic: r.str("topic")?.to_owned(),
        partition: r.i64("partition")?,
        offset: r.i64("offset")?,
    })
}

impl FailureLedger for DynamoFailureLedger {
    async fn record_failure(&self, failure: &LedgerFailure) -> Result<(), Error> {
        let mut expression = String::from(
            "SET #status = :status, errorKind = :kind, lastError = :error, \
             lastFailedAt = :at, firstFailedAt = if_not_exists(firstFailedAt, :at), \
             attempts = if_not_exists(attempts, :zero) + :one, \
             topic = :topic, #partition = :partition, #offset = :offset",
        );
        if failure.event_type.is_some() {
            expression.push_str(", eventType = :type");
        }
        // A row that fails again is not PROCESSED any more: it must not expire.
        expression.push_str(" REMOVE expiresAt");
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(row_key(&failure.event_id, failure.channel)))
            .update_expression(expression)
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#partition", "partition")
            .expression_attribute_names("#offset", "offset")
            .expression_attribute_values(":status", s(failure.status.name()))
            .expression_attribute_values(":kind", s(&failure.error_kind))
            .expression_attribute_values(":error", s(&failure.error_message))
            .expression_attribute_values(":at", n(to_millis(failure.at)))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":topic", s(&failure.topic))
            .expression_attribute_values(":partition", n(failure.partition))
            .expression_attribute_values(":offset", n(failure.offset));
        if let Some(event_type) = &failure.event_type {
            update = update.expression_attribute_values(":type", s(event_type));
        }
        update
            .send()
            .await
            .map_err(|e| sdk_error("UpdateItem (ledger)", e))?;
        Ok(())
    }

    async fn mark_processed(
        &self,
        event_id: &str,
        channel: Option<ChannelKind>,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), Error> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(row_key(event_id, channel)))
            .update_expression("SET #status = :processed, processedAt = :at, expiresAt = :expires")
            // A dead letter whose row was never written (the ledger was down
            // when it was parked) gets no half row: there is nothing to close.
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":processed", s(LedgerStatus::Processed.name()))
            .expression_attribute_values(":at", n(to_millis(at)))
            .expression_attribute_values(":expires", n((at + PROCESSED_RETENTION).timestamp()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(UpdateItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(sdk_error("UpdateItem (ledger processed)", e)),
        }
    }

    async fn mark_redriven(
        &self,
        event_id: &str,
        channel: Option<ChannelKind>,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), Error> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(row_key(event_id, channel)))
            .update_expression("SET #status = :pending, redrivenAt = :at")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":pending", s(LedgerStatus::Pending.name()))
            .expression_attribute_values(":at", n(to_millis(at)))
            .send()
            .await
            .map_err(|e| sdk_error("UpdateItem (ledger redrive)", e))?;
        Ok(())
    }
}
