//! `telegram-sandbox`: a local Telegram-Bot-API-compatible server (see
//! `local_runner::telegram_sandbox`).

use clap::Parser;
use local_runner::telegram_sandbox::TelegramSandbox;
use std::net::SocketAddr;

#[derive(Parser)]
#[command(about = "A local Telegram Bot API that records every sendMessage")]
struct Args {
    #[arg(long, env = "SANDBOX_ADDR", default_value = "127.0.0.1:8081")]
    addr: SocketAddr,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().init();
    let args = Args::parse();
    let sandbox = TelegramSandbox::default();
    let bound = sandbox.serve(args.addr).await?;
    println!("telegram-sandbox: listening on http://{bound}");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
