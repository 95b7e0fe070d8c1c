//! The DynamoDB adapter: the ticketing repository (one table for the entities, one
//! for the outbox, whose stream feeds the relay), the idempotency store, and table
//! provisioning.

mod idempotency;
pub mod items;
mod ledger;
mod provision;
mod repository;
mod transaction;
mod writes;

pub use idempotency::DynamoIdempotencyStore;
pub use ledger::DynamoFailureLedger;
pub use provision::{create_tables, delete_tables};
pub use repository::{ExpiredHold, Release, TicketingRepository};

use crate::Error;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};

/// Wraps an SDK error, keeping the service's own message in the chain.
pub(crate) fn sdk_error<E, R>(operation: &'static str, err: SdkError<E, R>) -> Error
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    Error::storage(operation, DisplayErrorContext(err).to_string())
}
