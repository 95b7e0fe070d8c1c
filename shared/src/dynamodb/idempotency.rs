use super::items::{Item, Reader, n, s};
use super::sdk_error;
use crate::Error;
use crate::clock::to_millis;
use crate::domain::Refusal;
use crate::idempotency::{Claim, IdempotencyRecord, IdempotencyStatus, IdempotencyStore};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// Idempotency records in their own table: `pk` is the key; `expiresAt` (epoch
/// seconds) doubles as the TTL attribute, but expiry is judged from it here.
#[derive(Clone, Debug)]
pub struct DynamoIdempotencyStore {
    client: Client,
    table: String,
}

impl DynamoIdempotencyStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoIdempotencyStore {
            client,
            table: table.into(),
        }
    }

    /// The record of `key`, as stored.
    pub async fn get(&self, key: &str) -> Result<Option<IdempotencyRecord>, Error> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem (idempotency)", e))?;
        out.item.as_ref().map(record_from).transpose()
    }
}

/// Where a write may take a key: it is free, expired, or held by an
/// invocation whose deadline has passed. Its values: [`take_values`].
pub(crate) const TAKE_CONDITION: &str = "attribute_not_exists(pk) OR expiresAt <= :now_s \
     OR (#status = :inprogress AND inProgressUntil <= :now_ms)";

/// The values of [`TAKE_CONDITION`] at `now` (`#status` names the status).
pub(crate) fn take_values(now: DateTime<Utc>) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (":now_s".to_owned(), n(now.timestamp())),
        (":now_ms".to_owned(), n(to_millis(now))),
        (
            ":inprogress".to_owned(),
            s(IdempotencyStatus::InProgress.name()),
        ),
    ])
}

/// The item of `record`, as [`record_from`] reads it back.
pub(crate) fn record_item(record: &IdempotencyRecord) -> Item {
    let mut item: Item = HashMap::from([
        ("pk".to_owned(), s(&record.key)),
        ("status".to_owned(), s(record.status.name())),
        ("payloadHash".to_owned(), s(&record.payload_hash)),
        ("expiresAt".to_owned(), n(record.expires_at.timestamp())),
    ]);
    let times = [
        ("inProgressUntil", record.in_progress_until),
        ("completedAt", record.completed_at),
    ];
    for (name, at) in times {
        if let Some(at) = at {
            item.insert(name.to_owned(), n(to_millis(at)));
        }
    }
    if let Some(response) = &record.response {
        item.insert("response".to_owned(), s(response));
    }
    item
}

pub(crate) fn record_from(item: &Item) -> Result<IdempotencyRecord, Error> {
    let r = Reader::new(item, "idempotency");
    Ok(IdempotencyRecord {
        key: r.str("pk")?.to_owned(),
        status: IdempotencyStatus::parse(r.str("status")?)?,
        payload_hash: r.str("payloadHash")?.to_owned(),
        expires_at: DateTime::from_timestamp(r.i64("expiresAt")?, 0)
            .ok_or_else(|| Error::corrupt("idempotency expiresAt out of range"))?,
        in_progress_until: r.opt_time("inProgressUntil")?,
        response: r.opt_str("response").map(str::to_owned),
        completed_at: r.opt_time("completedAt")?,
    })
}

impl IdempotencyStore for DynamoIdempotencyStore {
    async fn acquire(
        &self,
        key: &str,
        payload_hash: &str,
        now: DateTime<Utc>,
        in_progress_until: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<Claim, Error> {
        let item = record_item(&IdempotencyRecord {
            key: key.to_owned(),
            status: IdempotencyStatus::InProgress,
            payload_hash: payload_hash.to_owned(),
            expires_at,
            in_progress_until: Some(in_progress_until),
            response: None,
            completed_at: None,
        });
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(TAKE_CONDITION)
            .expression_attribute_names("#status", "status")
            .set_expression_attribute_values(Some(take_values(now)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        match result {
            Ok(out) => {
                // What the write replaced says whether an attempt died holding it.
                let replaced = out.attributes.as_ref().map(record_from).transpose()?;
                Ok(match replaced {
                    Some(old) if old.is_abandoned(now) => Claim::Reclaimed,
                    _ => Claim::Acquired,
                })
            }
            Err(err) => match err.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(e)) => {
                    let existing = match e.item() {
                        Some(item) => record_from(item)?,
                        // Old servers do not return the item: read it.
                        None => self.get(key).await?.ok_or(Refusal::InProgress)?,
                    };
                    existing.judge(payload_hash)
                }
                _ => Err(sdk_error("PutItem (idempotency)", err)),
            },
        }
    }

    async fn complete(
        &self,
        key: &str,
        response: Option<String>,
        completed_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), Error> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(key))
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":completed", s(IdempotencyStatus::Completed.name()))
            .expression_attribute_values(":exp", n(expires_at.timestamp()))
            .expression_attribute_values(":at", n(to_millis(completed_at)));
        update = match response {
            Some(text) => update
                .update_expression(
                    "SET #status = :completed, expiresAt = :exp, completedAt = :at, \
                     #response = :response REMOVE inProgressUntil",
                )
                .expression_attribute_names("#response", "response")
                .expression_attribute_values(":response", s(text)),
            None => update.update_expression(
                "SET #status = :completed, expiresAt = :exp, completedAt = :at \
                 REMOVE inProgressUntil",
            ),
        };
        update
            .send()
            .await
            .map_err(|e| sdk_error("UpdateItem (idempotency complete)", e))?;
        Ok(())
    }

    async fn release(&self, key: &str) -> Result<(), Error> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(key))
            .send()
            .await
            .map_err(|e| sdk_error("DeleteItem (idempotency release)", e))?;
        Ok(())
    }

    async fn release_completed_with(&self, key: &str, response: &str) -> Result<bool, Error> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(key))
            .condition_expression("#status = :completed AND #response = :response")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#response", "response")
            .expression_attribute_values(":completed", s(IdempotencyStatus::Completed.name()))
            .expression_attribute_values(":response", s(response))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err) => match err.as_service_error() {
                Some(DeleteItemError::ConditionalCheckFailedException(_)) => Ok(false),
                _ => Err(sdk_error("DeleteItem (idempotency reopen)", err)),
            },
        }
    }
}
