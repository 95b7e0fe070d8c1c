use dlq_retry::{Config, LambdaDlqRetry};
use lambda_runtime::{LambdaEvent, run, service_fn};
use shared::channels::{CHANNEL_SECRETS, DATA_PLATFORM_SECRETS};
use shared::clock::SystemClock;
use shared::kafka::KAFKA_SECRETS;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::logging::init();
    shared::metrics::install(&shared::config::Vars::process(), "dlq-retry")?;
    let aws = shared::aws::config().await;
    // Once per cold start: the channels' and Kafka's secrets from Secrets Manager
    // or SSM (or the environment, locally).
    let secrets = [
        CHANNEL_SECRETS.as_slice(),
        &DATA_PLATFORM_SECRETS,
        &KAFKA_SECRETS,
    ]
    .concat();
    shared::secrets::preload(&aws, &secrets).await?;
    let config = Config::from_env()?;
    let retry = LambdaDlqRetry::from_config(
        config,
        aws_sdk_dynamodb::Client::new(&aws),
        Arc::new(SystemClock),
    )?;
    run(service_fn(|event: LambdaEvent<_>| {
        let request_id = event.context.request_id.clone();
        shared::metrics::invoked("dlq-retry", request_id, retry.handle(event))
    }))
    .await
}
