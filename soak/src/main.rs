//! `make soak` (see the library): prints what it injected, any violation, and
//! last `soak: <n> payments, <n> delivered once, <n> duplicates, <n> sent again
//! after a lost answer or a crash, <n> lost; data platform: <n> received once,
//! <n> duplicates, <n> sent again after a lost answer or a crash, <n> lost`;
//! exits 1 on a violation, 2 if the soak itself could not run.

use clap::Parser;
use soak::SoakConfig;

#[derive(Parser, Debug)]
#[command(about = "Payments under faults; checks nothing is lost and nothing is sent twice")]
struct Cli {
    #[command(flatten)]
    config: SoakConfig,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    match soak::run(&cli.config).await {
        Ok(report) => {
            eprintln!("soak: faults: {}", report.faults);
            for violation in &report.violations {
                eprintln!("soak: VIOLATION: {violation}");
            }
            println!("{report}");
            if !report.passed() {
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("soak: {}", shared::error_chain(&e));
            std::process::exit(2);
        }
    }
}
