//! The failed-message ledger: one row per event and channel that could not be
//! notified (or per record that failed before any channel), what an operator
//! queries. The dead-letter topic is what dlq-retry consumes.

use crate::Error;
use crate::notification::ChannelKind;
use chrono::{DateTime, Utc};
use std::future::Future;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LedgerStatus {
    /// In the dead-letter topic, waiting for a retry.
    Pending,
    /// Delivered by a retry.
    Processed,
    /// Failed for good: on the failed topic.
    Failed,
}

impl LedgerStatus {
    pub fn name(self) -> &'static str {
        match self {
            LedgerStatus::Pending => "PENDING",
            LedgerStatus::Processed => "PROCESSED",
            LedgerStatus::Failed => "FAILED",
        }
    }

    pub fn parse(text: &str) -> Result<Self, Error> {
        match text {
            "PENDING" => Ok(LedgerStatus::Pending),
            "PROCESSED" => Ok(LedgerStatus::Processed),
            "FAILED" => Ok(LedgerStatus::Failed),
            other => Err(Error::corrupt(format!("unknown ledger status {other:?}"))),
        }
    }
}

/// One failure of one event, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerFailure {
    pub event_id: String,
    /// The channel that failed; `None` for a record that failed before any.
    pub channel: Option<ChannelKind>,
    pub event_type: Option<String>,
    pub status: LedgerStatus,
    pub error_kind: String,
    pub error_message: String,
    pub topic: String,
    pub partition: i64,
    pub offset: i64,
    pub at: DateTime<Utc>,
}

/// A ledger row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    pub event_id: String,
    pub channel: Option<ChannelKind>,
    pub event_type: Option<String>,
    pub status: LedgerStatus,
    pub attempts: u32,
    pub first_failed_at: DateTime<Utc>,
    pub last_failed_at: DateTime<Utc>,
    pub error_kind: String,
    pub last_error: String,
    pub topic: String,
    pub partition: i64,
    pub offset: i64,
}

pub trait FailureLedger: Send + Sync {
    /// Records a failure: creates the row or counts one more attempt on it.
    fn record_failure(
        &self,
        failure: &LedgerFailure,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Marks the event delivered on `channel` (or the record handled) by a retry.
    fn mark_processed(
        &self,
        event_id: &str,
        channel: Option<ChannelKind>,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Puts a row back to PENDING after an operator re-drove its dead letter.
    fn mark_redriven(
        &self,
        event_id: &str,
        channel: Option<ChannelKind>,
        at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), Error>> + Send;
}
