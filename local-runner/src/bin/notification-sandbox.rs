//! `notification-sandbox`: a local Telegram Bot API and Discord webhook that
//! record every message (see `local_runner::notification_sandbox`).

use clap::Parser;
use local_runner::notification_sandbox::NotificationSandbox;
use std::net::SocketAddr;

#[derive(Parser)]
#[command(about = "A local Telegram Bot API and Discord webhook that record every message")]
struct Args {
    #[arg(long, env = "SANDBOX_ADDR", default_value = "127.0.0.1:8081")]
    addr: SocketAddr,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().init();
    let args = Args::parse();
    let sandbox = NotificationSandbox::default();
    let bound = sandbox.serve(args.addr).await?;
    println!("notification-sandbox: listening on http://{bound}");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
