use lambda_runtime::{LambdaEvent, run, service_fn};
use outbox_relay::{Config, Relay};
use shared::kafka::KAFKA_SECRETS;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::logging::init();
    shared::metrics::install(&shared::config::Vars::process(), "outbox-relay")?;
    // Once per cold start: the Kafka SASL credentials, when Secrets Manager or
    // SSM holds them (the AWS SDK is loaded only then).
    shared::secrets::preload_if_remote(&KAFKA_SECRETS).await?;
    let config = Config::from_env()?;
    // The producer is built once per cold start and reused by every invocation.
    let relay = Relay::from_config(&config)?;
    run(service_fn(|event: LambdaEvent<_>| {
        let request_id = event.context.request_id.clone();
        shared::metrics::invoked("outbox-relay", request_id, relay.handle(event))
    }))
    .await
}
