use lambda_runtime::{run, service_fn};
use outbox_relay::{Config, Relay};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = Config::from_env()?;
    // The producer is built once per cold start and reused by every invocation.
    let relay = Relay::from_config(&config)?;
    run(service_fn(|event| relay.handle(event))).await
}
