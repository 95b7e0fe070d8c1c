//! A TransactWriteItems whose items are named by the slot they were added in,
//! so a cancellation reason is looked up by its item, never by a position that
//! silently moves when an item is added or reordered.

use super::items::Item;
use super::sdk_error;
use crate::Error;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{CancellationReason, Put, TransactWriteItem, Update};

/// The item added in one slot of a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot(usize);

#[derive(Debug, Default)]
pub(crate) struct Transaction {
    items: Vec<TransactWriteItem>,
}

/// Why a transaction did not commit.
#[derive(Debug)]
pub(crate) enum Refused {
    /// DynamoDB cancelled it: a condition failed, or another transaction
    /// touched one of its items at the same time.
    Cancelled(Cancelled),
    Failed(Error),
}

/// The reasons of a cancelled transaction, by slot.
#[derive(Debug)]
pub(crate) struct Cancelled {
    reasons: Vec<CancellationReason>,
}

impl Transaction {
    pub(crate) fn update(&mut self, update: Update) -> Slot {
        self.add(TransactWriteItem::builder().update(update).build())
    }

    pub(crate) fn put(&mut self, put: Put) -> Slot {
        self.add(TransactWriteItem::builder().put(put).build())
    }

    fn add(&mut self, item: TransactWriteItem) -> Slot {
        self.items.push(item);
        Slot(self.items.len() - 1)
    }

    /// Commits every item or none; `operation` names it in errors.
    pub(crate) async fn commit(
        self,
        client: &Client,
        operation: &'static str,
    ) -> Result<(), Refused> {
        let result = client
            .transact_write_items()
            .set_transact_items(Some(self.items))
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(()),
            Err(err) => err,
        };
        match err.as_service_error() {
            Some(TransactWriteItemsError::TransactionCanceledException(e)) => {
                Err(Refused::Cancelled(Cancelled {
                    reasons: e.cancellation_reasons().to_vec(),
                }))
            }
            _ => Err(Refused::Failed(sdk_error(operation, err))),
        }
    }
}

impl Cancelled {
    /// True when another transaction touched one of the items at the same time.
    pub(crate) fn conflict(&self) -> bool {
        self.reasons
            .iter()
            .any(|r| r.code() == Some("TransactionConflict"))
    }

    /// When the item of `slot` failed its condition: `Some` with the item as it
    /// was (if its write asked for it and it existed), else `None`.
    pub(crate) fn failed(&self, slot: Slot) -> Option<Option<&Item>> {
        let reason = self.reasons.get(slot.0)?;
        (reason.code() == Some("ConditionalCheckFailed")).then(|| reason.item())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::types::AttributeValue;

    fn reason(code: &str) -> CancellationReason {
        CancellationReason::builder().code(code).build()
    }

    fn put(table: &str) -> Put {
        Put::builder()
            .table_name(table)
            .condition_expression("attribute_not_exists(pk)")
            .set_item(Some(Item::new()))
            .build()
            .unwrap()
    }

    #[test]
    fn a_reason_is_found_by_the_slot_its_item_was_added_in() {
        let mut tx = Transaction::default();
        let first = tx.put(put("a"));
        let second = tx.put(put("b"));
        let third = tx.put(put("c"));
        let old = Item::from([("pk".to_owned(), AttributeValue::S("x".into()))]);
        let mut failed = reason("ConditionalCheckFailed");
        failed.item = Some(old.clone());
        let cancelled = Cancelled {
            reasons: vec![reason("None"), failed, reason("ConditionalCheckFailed")],
        };
        assert_eq!(cancelled.failed(first), None, "its condition held");
        assert_eq!(cancelled.failed(second), Some(Some(&old)));
        assert_eq!(cancelled.failed(third), Some(None), "failed, no old item");
        assert!(!cancelled.conflict());
    }

    #[test]
    fn a_transaction_conflict_is_told_apart_from_a_failed_condition() {
        let cancelled = Cancelled {
            reasons: vec![reason("None"), reason("TransactionConflict")],
        };
        assert!(cancelled.conflict());
        assert_eq!(cancelled.failed(Slot(1)), None);
    }
}
