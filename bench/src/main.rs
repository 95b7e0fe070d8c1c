//! `make bench`: the pipeline's hot paths measured against the local stack
//! (moto, tansu), each figure the median of repeated runs beside a baseline
//! measured in the same run. JSON lines on stdout and in
//! `target/bench/results.jsonl`; a table on stderr. See BENCHMARKS.md.

mod chart;
mod dlq_retry;
mod end_to_end;
mod feed;
mod in_region;
mod init;
mod notifier;
mod payment;
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
    #[error("the domain refused a benchmark's request")]
    Refused(#[from] shared::domain::Refusal),
    #[error("the benchmark is misconfigured")]
    Config(#[from] shared::config::ConfigError),
    #[error("cannot write the results")]
    Results(#[source] std::io::Error),
}

/// What failed while setting a benchmark up, with its causes, as a
/// measurement's error.
pub(crate) fn measure(e: impl std::error::Error + 'static) -> Error {
    Error::Measure(shared::error_chain(&e))
}

#[derive(Parser, Debug)]
#[command(about = "Benchmarks of the payment pipeline against the local stack")]
struct Cli {
    /// Which benchmarks to run (comma-separated), in this order: init, payment,
    /// end-to-end, relay, notifier, data-platform-feed, dlq-retry. The two that pay go first, on a
    /// moto that holds little: moto keeps every table in one Python process, and
    /// the notifier's and dlq-retry's thousands of items would slow them.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "init,payment,end-to-end,relay,notifier,data-platform-feed,dlq-retry"
    )]
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
    /// Records of the notifier's timed batch.
    #[arg(long, default_value_t = 1000)]
    notifier_records: usize,
    /// How long the sandbox takes to answer each send, in ms.
    #[arg(long, default_value_t = 20)]
    notifier_latency_ms: u64,
    /// The send-rate limit (sends a second) of the sandbox and the notifier.
    #[arg(long, default_value_t = 100)]
    notifier_rate_limit: usize,
    /// Records of the data-platform feed's timed batch.
    #[arg(long, default_value_t = 1000)]
    feed_records: usize,
    /// How long the sandbox's platform takes to answer each request, in ms.
    #[arg(long, default_value_t = 20)]
    feed_latency_ms: u64,
    /// Payments timed through the handler (and as many bare transactions).
    #[arg(long, default_value_t = 200)]
    payment_requests: usize,
    /// Payments sent through the local runner, end to end.
    #[arg(long, default_value_t = 500)]
    e2e_payments: usize,
    /// Payments started a second, end to end. 20 is what moto (one Python
    /// process serving every request) keeps up with here; from 30 on it queues.
    #[arg(long, default_value_t = 20.0)]
    e2e_rate: f64,
    /// Due dead letters drained by one dlq-retry run.
    #[arg(long, default_value_t = 10_000)]
    dlq_records: usize,
    /// Where the JSON lines go as well.
    #[arg(long, default_value = "target/bench/results.jsonl")]
    out: PathBuf,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    // Quiet by default: the notifier logs every send and dead letter, which would
    // bury the figures (RUST_LOG shows them).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    if let Err(e) = run(cli).await {
        eprintln!("bench: {}", shared::error_chain(&e));
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<(), Error> {
    let mut report = Report::create(cli.out.clone()).map_err(Error::Results)?;
    let aws = testkit::aws().await;
    let (tables, topics) = testkit::provision(&aws, 3).await;
    let repo = TicketingRepository::new(aws_sdk_dynamodb::Client::new(&aws), tables.clone());
    for bench in &cli.only {
        match bench.as_str() {
            "init" => {
                init::InitBench {
                    bootstrap_dir: cli.bootstrap_dir.clone(),
                    hello: cli.hello.clone(),
                    runs: cli.runs,
                }
                .run(&mut report, &aws, &repo, &tables, &topics)
                .await?
            }
            "relay" => {
                relay::RelayBench {
                    runs: cli.runs,
                    records: cli.relay_records,
                    rss_records: cli.relay_rss_records,
                    bootstrap: cli.bootstrap_dir.join("OutboxRelayFunction/bootstrap"),
                }
                .run(&mut report, &testkit::kafka(), &tables, &topics)
                .await?
            }
            "notifier" => {
                notifier::NotifierBench {
                    runs: cli.runs,
                    records: cli.notifier_records,
                    latency: std::time::Duration::from_millis(cli.notifier_latency_ms),
                    rate_limit: cli.notifier_rate_limit,
                }
                .run(&mut report)
                .await?
            }
            "data-platform-feed" => {
                feed::FeedBench {
                    runs: cli.runs,
                    records: cli.feed_records,
                    latency: std::time::Duration::from_millis(cli.feed_latency_ms),
                }
                .run(&mut report)
                .await?
            }
            "payment" => {
                payment::PaymentBench {
                    requests: cli.payment_requests,
                }
                .run(&mut report, repo.client().clone(), &tables)
                .await?
            }
            "end-to-end" => {
                end_to_end::EndToEndBench {
                    payments: cli.e2e_payments,
                    per_second: cli.e2e_rate,
                }
                .run(&mut report)
                .await?
            }
            "dlq-retry" => {
                dlq_retry::DlqRetryBench {
                    runs: cli.runs,
                    records: cli.dlq_records,
                    send_latency: std::time::Duration::from_millis(cli.notifier_latency_ms),
                }
                .run(&mut report)
                .await?
            }
            other => return Err(Error::Measure(format!("no benchmark called {other:?}"))),
        }
    }
    report.print_table();
    chart::write_beside(&report);
    Ok(())
}
