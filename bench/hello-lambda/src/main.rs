//! The init baseline: the smallest `lambda_runtime` function (it echoes its
//! event), built with the same profile as the functions' bootstraps.

use lambda_runtime::{LambdaEvent, run, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    run(service_fn(|event: LambdaEvent<Value>| async move {
        Ok::<Value, lambda_runtime::Error>(event.payload)
    }))
    .await
}
