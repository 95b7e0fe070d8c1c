//! The DynamoDB adapter: the ticketing repository (one table for the entities, one
//! for the outbox, whose stream feeds the relay), the idempotency store, and table
//! provisioning.

mod batch;
mod checkout;
mod idempotency;
pub mod items;
mod ledger;
mod outbox;
mod payments;
mod provision;
mod repository;
mod transaction;
mod window;
mod writes;

pub use checkout::{Paid, PaymentKey, PaymentStart};
pub use idempotency::DynamoIdempotencyStore;
pub use ledger::DynamoFailureLedger;
pub use outbox::{outbox_item, outbox_items_created_between};
pub use payments::{PaymentMade, payments_between};
pub use provision::{create_tables, delete_tables};
pub use repository::{ExpiredHold, Release, TicketingRepository};

use crate::{Error, InfraError};
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// Wraps an SDK error, keeping the service's own message in the chain. A
/// request DynamoDB refuses for what it is (a `ValidationException`: a key too
/// long or empty, an item too large) is refused for good; anything else
/// (throttling, a network or service failure, a missing table or permission
/// while a deployment is fixed) may pass later.
pub(crate) fn sdk_error<E, R>(operation: &'static str, err: SdkError<E, R>) -> Error
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let refused = err.code() == Some("ValidationException");
    let source = DisplayErrorContext(err).to_string().into();
    if refused {
        InfraError::StorageRefused { operation, source }.into()
    } else {
        InfraError::Storage { operation, source }.into()
    }
}

/// Retries of what a batch call (BatchGetItem, BatchWriteItem) left
/// unprocessed. DynamoDB leaves keys when a partition is throttled, so asking
/// again at once only adds load: each retry waits twice as long as the last
/// (25 ms, then up to 3.2 s, with jitter), and after [`UNPROCESSED_RETRIES`]
/// the call fails with a retryable storage error instead of spinning.
pub(crate) struct UnprocessedRetries {
    operation: &'static str,
    done: u32,
}

/// How many times a batch call's leftovers are asked for again.
pub const UNPROCESSED_RETRIES: u32 = 8;

impl UnprocessedRetries {
    pub(crate) fn new(operation: &'static str) -> Self {
        UnprocessedRetries { operation, done: 0 }
    }

    /// Waits before the next retry, or fails when the retries are used up.
    pub(crate) async fn wait(&mut self) -> Result<(), Error> {
        tokio::time::sleep(self.next_pause()?).await;
        Ok(())
    }

    /// The pause before the next retry, or the error when none is left.
    fn next_pause(&mut self) -> Result<std::time::Duration, Error> {
        let pause = unprocessed_pause(self.done, rand::random::<f64>()).ok_or_else(|| {
            Error::storage(
                self.operation,
                format!(
                    "DynamoDB still left items unprocessed after {UNPROCESSED_RETRIES} retries \
                     (the table is throttled: retry later or raise its capacity)"
                ),
            )
        })?;
        self.done += 1;
        Ok(pause)
    }
}

/// The pause before retry `done + 1` (`None` when there is none left): 25 ms
/// doubled per retry, scaled by `jitter` in [0, 1) to between half and all of it.
fn unprocessed_pause(done: u32, jitter: f64) -> Option<std::time::Duration> {
    (done < UNPROCESSED_RETRIES).then(|| {
        let full = std::time::Duration::from_millis(25 * 2u64.pow(done));
        full.mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn unprocessed_keys_are_retried_with_growing_pauses_and_a_bound() {
        let pauses: Vec<Duration> = (0..UNPROCESSED_RETRIES)
            .map(|done| unprocessed_pause(done, 0.999).unwrap())
            .collect();
        assert!(pauses.windows(2).all(|p| p[1] > p[0]), "{pauses:?}");
        assert!(pauses[0] >= Duration::from_millis(24));
        assert!(*pauses.last().unwrap() <= Duration::from_millis(3200));
        assert_eq!(unprocessed_pause(UNPROCESSED_RETRIES, 0.5), None);
        // Jitter never takes a pause below half of it.
        assert_eq!(unprocessed_pause(2, 0.0), Some(Duration::from_millis(50)));
    }

    #[test]
    fn leftovers_that_never_clear_fail_as_a_retryable_storage_error() {
        let mut retries = UnprocessedRetries::new("BatchGetItem");
        for _ in 0..UNPROCESSED_RETRIES {
            retries.next_pause().unwrap();
        }
        let error = retries.next_pause().unwrap_err();
        assert!(error.is_retryable(), "{error}");
        assert!(
            crate::error_chain(&error).contains("unprocessed after 8 retries"),
            "{}",
            crate::error_chain(&error)
        );
    }
}
