use data_platform_feed::{Config, LambdaFeed};
use lambda_runtime::{LambdaEvent, run, service_fn};
use shared::channels::DATA_PLATFORM_SECRETS;
use shared::clock::SystemClock;
use shared::kafka::KAFKA_SECRETS;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::logging::init();
    shared::metrics::install(&shared::config::Vars::process(), "data-platform-feed")?;
    let aws = shared::aws::config().await;
    // Once per cold start: the platform's API key, the pseudonym key and Kafka's
    // credentials from Secrets Manager or SSM (or the environment, locally).
    let secrets = [DATA_PLATFORM_SECRETS.as_slice(), &KAFKA_SECRETS].concat();
    shared::secrets::preload(&aws, &secrets).await?;
    let config = Config::from_env()?;
    let feed = LambdaFeed::from_config(
        &config,
        aws_sdk_dynamodb::Client::new(&aws),
        Arc::new(SystemClock),
    )?;
    // Boxed: the handler's future is deep (the SDK's and Kafka's), and inside
    // main's own it goes over rustc's query depth when the binaries are built
    // with the workspace's features.
    Box::pin(run(service_fn(|event: LambdaEvent<_>| {
        let request_id = event.context.request_id.clone();
        shared::metrics::invoked("data-platform-feed", request_id, feed.handle(event))
    })))
    .await
}
