use lambda_runtime::{LambdaEvent, run, service_fn};
use reservation::{Config, JWT_SECRET, ReservationApi};
use shared::clock::SystemClock;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::logging::init();
    shared::metrics::install(&shared::config::Vars::process(), "reservation")?;
    let aws = shared::aws::config().await;
    // Once per cold start: the JWT key from Secrets Manager or SSM (or the
    // environment, locally).
    shared::secrets::preload(&aws, &[JWT_SECRET]).await?;
    let config = Config::from_env()?;
    let api = ReservationApi::new(
        &config,
        aws_sdk_dynamodb::Client::new(&aws),
        Arc::new(SystemClock),
    )?;
    run(service_fn(|event: LambdaEvent<_>| {
        let request_id = event.context.request_id.clone();
        shared::metrics::invoked("reservation", request_id, api.handle(event))
    }))
    .await
}
