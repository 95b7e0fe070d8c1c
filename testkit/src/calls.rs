//! A DynamoDB client that counts the requests it puts on the wire, by
//! operation: how a test or the bench tells how many round trips a handler
//! made, on the real client against the real server.

use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use std::sync::{Arc, Mutex};

/// The operations sent so far, in order (`GetItem`, `TransactWriteItems`, ...);
/// a retried request counts once per attempt.
#[derive(Clone, Debug, Default)]
pub struct CallLog {
    sent: Arc<Mutex<Vec<String>>>,
}

impl CallLog {
    /// The operations sent since the last `take`, emptying the log.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug)]
struct Counter(CallLog);

impl Intercept for Counter {
    fn name(&self) -> &'static str {
        "CallCounter"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // DynamoDB names the operation in its target header: `DynamoDB_20120810.GetItem`.
        let target = context.request().headers().get("x-amz-target");
        let operation = target.and_then(|t| t.rsplit('.').next()).unwrap_or("?");
        self.0.lock().push(operation.to_owned());
        Ok(())
    }
}

/// `client`, with its requests logged in the answer's log.
pub fn counted_dynamodb(client: &aws_sdk_dynamodb::Client) -> (aws_sdk_dynamodb::Client, CallLog) {
    let log = CallLog::default();
    let conf = client
        .config()
        .to_builder()
        .interceptor(Counter(log.clone()))
        .build();
    (aws_sdk_dynamodb::Client::from_conf(conf), log)
}
