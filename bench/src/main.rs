//! `make bench`: the pipeline's hot paths measured against the local stack
//! (moto, tansu), each figure the median of repeated runs beside a baseline
//! measured in the same run. JSON lines on stdout and in
//! `target/bench/results.jsonl`; a table on stderr. See BENCHMARKS.md.

mod init;
mod relay;
mod report;

use clap::Parser;
use report::Report;
use shared::dynamodb::TicketingRepository;
use std::path::PathBuf;

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Measure(String),
    #[error(transparent)]
    Runner(#[from] local_runner::Error),
    #[error(transparent)]
    Pipeline(#[from] shared::Error),
    #[error("cannot write the results")]
    Results(#[source] std::io::Error),
}

#[derive(Parser, Debug)]
#[command(about = "Benchmarks of the payment pipeline against the local stack")]
struct Cli {
    /// Which benchmarks to run (comma-separated): init, relay.
    #[arg(long, value_delimiter = ',', default_value = "init,relay")]
    only: Vec<String>,
    /// Repetitions of each measurement (the figures are their medians).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// `sam build`'s output for this machine's architecture.
    #[arg(long, default_value = ".aws-sam/build-x86_64")]
    bootstrap_dir: PathBuf,
    /// The hello-world baseline's bootstrap, built with the same profile.
    #[arg(long)]
    hello: PathBuf,
    /// Records of the relay's timed batch.
    #[arg(long, default_value_t = 1000)]
    relay_records: usize,
    /// Records of the relay batch whose peak RSS is measured.
    #[arg(long, default_value_t = 10_000)]
    relay_rss_records: usize,
    /// Where the JSON lines go as well.
    #[arg(long, default_value = "target/bench/results.jsonl")]
    out: PathBuf,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("bench: {}", shared::error_chain(&e));
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<(), Error> {
    let mut report = Report::create(cli.out.clone()).map_err(Error::Results)?;
    let aws = e2e_tests::aws().await;
    let (tables, topics) = e2e_tests::provision(&aws, 3).await;
    let repo = TicketingRepository::new(aws_sdk_dynamodb::Client::new(&aws), tables.clone());
    for bench in &cli.only {
        match bench.as_str() {
            "init" => {
                init::InitBench {
                    bootstrap_dir: cli.bootstrap_dir.clone(),
                    hello: cli.hello.clone(),
                    runs: cli.runs,
                }
                .run(&mut report, &repo, &tables, &topics)
                .await?
            }
            "relay" => {
                relay::RelayBench {
                    runs: cli.runs,
                    records: cli.relay_records,
                    rss_records: cli.relay_rss_records,
                    bootstrap: cli.bootstrap_dir.join("OutboxRelayFunction/bootstrap"),
                }
                .run(&mut report, &e2e_tests::kafka(), &tables, &topics)
                .await?
            }
            other => return Err(Error::Measure(format!("no benchmark called {other:?}"))),
        }
    }
    report.print_table();
    Ok(())
}
