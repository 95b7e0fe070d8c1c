use lambda_runtime::{LambdaEvent, run, service_fn};
use seat_expiration::{Config, SeatExpiration};
use shared::clock::SystemClock;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::logging::init();
    shared::metrics::install(&shared::config::Vars::process(), "seat-expiration")?;
    let config = Config::from_env()?;
    let aws = shared::aws::config().await;
    let expiration = SeatExpiration::new(
        config,
        aws_sdk_dynamodb::Client::new(&aws),
        Arc::new(SystemClock),
    );
    run(service_fn(|event: LambdaEvent<_>| {
        let request_id = event.context.request_id.clone();
        shared::metrics::invoked("seat-expiration", request_id, expiration.handle(event))
    }))
    .await
}
