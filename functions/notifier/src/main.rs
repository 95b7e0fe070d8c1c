use lambda_runtime::{LambdaEvent, run, service_fn};
use notifier::{Config, LambdaNotifier};
use shared::channels::CHANNEL_SECRETS;
use shared::clock::SystemClock;
use shared::kafka::KAFKA_SECRETS;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::logging::init();
    shared::metrics::install(&shared::config::Vars::process(), "notifier")?;
    let aws = shared::aws::config().await;
    // Once per cold start: the channels' and Kafka's secrets from Secrets Manager
    // or SSM (or the environment, locally).
    shared::secrets::preload(&aws, &[CHANNEL_SECRETS.as_slice(), &KAFKA_SECRETS].concat()).await?;
    let config = Config::from_env()?;
    let notifier = LambdaNotifier::from_config(
        &config,
        aws_sdk_dynamodb::Client::new(&aws),
        Arc::new(SystemClock),
    )?;
    run(service_fn(|event: LambdaEvent<_>| {
        let request_id = event.context.request_id.clone();
        shared::metrics::invoked("notifier", request_id, notifier.handle(event))
    }))
    .await
}
