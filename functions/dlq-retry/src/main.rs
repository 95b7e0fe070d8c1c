use dlq_retry::{Config, DlqRetry};
use lambda_runtime::{run, service_fn};
use shared::clock::SystemClock;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = Config::from_env()?;
    let aws = aws_config::load_from_env().await;
    let retry = DlqRetry::from_config(
        config,
        aws_sdk_dynamodb::Client::new(&aws),
        Arc::new(SystemClock),
    )?;
    run(service_fn(|event| retry.handle(event))).await
}
