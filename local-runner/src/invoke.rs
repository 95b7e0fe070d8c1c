//! Invoking a handler as the Lambda runtime does: JSON in, JSON out, with a
//! context that carries a request id and the deadline.

use crate::Error;
use lambda_runtime::{Context, LambdaEvent};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use std::future::Future;
use std::time::Duration;

/// Invokes `handler` with `payload` as the runtime would: the payload is
/// deserialised into the handler's event type, the answer serialised back;
/// what the invocation counted is flushed after it as the deployed function
/// flushes it (`shared::metrics::invoked`), when the process has metrics.
pub async fn invoke<T, R, F, Fut>(
    function: &'static str,
    timeout: Duration,
    payload: Value,
    handler: F,
) -> Result<Value, Error>
where
    T: DeserializeOwned,
    R: Serialize,
    F: FnOnce(LambdaEvent<T>) -> Fut,
    Fut: Future<Output = Result<R, lambda_runtime::Error>>,
{
    // Lambda continues the caller's X-Ray trace: an HTTP API request's
    // `X-Amzn-Trace-Id` becomes the invocation's trace header.
    let xray_trace_id = payload
        .pointer("/headers/x-amzn-trace-id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let event: T = serde_json::from_value(payload).map_err(|e| Error::Invocation {
        function: function.to_owned(),
        message: format!("the event does not deserialise: {e}"),
    })?;
    let mut context = Context::default();
    context.request_id = uuid_like();
    context.deadline = (chrono::Utc::now() + timeout).timestamp_millis() as u64;
    context.xray_trace_id = xray_trace_id;
    context.invoked_function_arn =
        format!("arn:aws:lambda:us-east-1:000000000000:function:{function}");
    let request_id = context.request_id.clone();
    let invocation = handler(LambdaEvent::new(event, context));
    let counted = shared::metrics::invoked(function, request_id, invocation);
    let answer = tokio::time::timeout(timeout, counted)
        .await
        .map_err(|_| Error::Timeout {
            function: function.to_owned(),
            seconds: timeout.as_secs(),
        })?
        .map_err(|e| Error::Invocation {
            function: function.to_owned(),
            message: shared::error_chain(e.as_ref()),
        })?;
    serde_json::to_value(answer).map_err(|e| Error::Invocation {
        function: function.to_owned(),
        message: format!("the answer does not serialise: {e}"),
    })
}

fn uuid_like() -> String {
    shared::domain::EventId::random().to_string()
}
