//! `local-runner`: runs the pipeline against the local stack until interrupted.

use local_runner::{Pipeline, PipelineConfig};
use shared::clock::SystemClock;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,aws_config=warn,aws_smithy_runtime=warn".into()),
        )
        .init();
    // Each invocation's metrics go to stdout as EMF lines, as on AWS.
    shared::metrics::install(&shared::config::Vars::process(), "local-runner")?;
    let config = PipelineConfig::from_env()?;
    let aws = shared::aws::config().await;
    let pipeline = Pipeline::start(config, &aws, Arc::new(SystemClock)).await?;
    println!("local-runner: HTTP API on http://{}", pipeline.api_addr);
    shutdown_signal().await;
    pipeline.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
