//! `ops`: the operator's CLI.
//!
//! - `ops provision`: the local set-up: creates the tables, one-broker topics and
//!   the local secrets that are missing (safe to run twice; existing secrets keep
//!   their values); refuses an endpoint that is not local;
//! - `ops topics apply`: creates the four topics with production settings, or
//!   reports how existing ones differ; `ops topics read <topic>`: its records;
//! - `ops tables scan <table>`: a table's items;
//! - `ops outbox replay`: re-publishes the outbox items created in a window;
//! - `ops seed`: creates a concert with seats and users with a balance and an
//!   ACTIVE queue token, and prints them as one JSON object; `ops seed
//!   --sample-events [DIR]`: the items the sample events of `events/` name;
//! - `ops failed list|show|redrive`: the failed-message ledger;
//! - `ops demo`: runs the demo scenario through a running pipeline;
//! - `ops metrics <log>`: the business metrics in a log, summed;
//! - `ops trace <reservation-id | event-id>`: what happened to one payment or hold;
//! - `ops reconcile --from --to`: the payments of a window against the topic,
//!   every destination and the ledger; exits 1 on a discrepancy.

mod demo;
mod failed;
mod metrics;
mod outbox;
mod reconcile;
mod sandbox;
mod seed;
mod tables;
mod topics;
mod trace;

use chrono::{DateTime, Duration, Utc};
use clap::{Parser, Subcommand};
use serde_json::json;
use shared::auth::{JWT_SECRET, JwtKey};
use shared::config::{TableNames, TopicNames};
use shared::dynamodb::{TicketingRepository, create_tables};
use shared::kafka::{KAFKA_SECRETS, KafkaSettings, create_topics};
use shared::notification::ChannelKind;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Domain(#[from] shared::Error),
    #[error(transparent)]
    Refused(#[from] shared::domain::Refusal),
    #[error("ops is misconfigured")]
    Config(#[from] shared::config::ConfigError),
    #[error("calling {url} failed")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// A refusal or a failed step, said in full.
    #[error("{0}")]
    Message(String),
    /// `ops reconcile` found a sale missing somewhere or published twice.
    #[error("discrepancies found ({0})")]
    Unbalanced(String),
}

/// Doors at 19:00 KST (10:00 UTC), a month from now.
pub fn concert_start(now: DateTime<Utc>) -> DateTime<Utc> {
    (now + Duration::days(30))
        .date_naive()
        .and_hms_opt(10, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or(now)
}

/// The key that signs queue tokens: the one the functions verify with, from the
/// same variable (or its Secrets Manager secret or SSM parameter, preloaded).
pub fn jwt_key() -> Result<JwtKey, Error> {
    let secret = shared::config::secret(JWT_SECRET)?;
    Ok(JwtKey::from_secret(secret.expose().as_bytes())?)
}

#[derive(Parser)]
#[command(about = "Operate the ticketing pipeline")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The local set-up: the tables, one-broker topics and the local secrets.
    /// Refuses an AWS endpoint or Kafka broker that is not local: deployed
    /// topics come from `ops topics apply`, tables and secrets from the template.
    Provision {
        #[arg(long, default_value_t = 3)]
        partitions: i32,
        /// Leave the topics to `ops topics apply` (a multi-broker local cluster).
        #[arg(long)]
        without_topics: bool,
    },
    /// The outbox table: re-publish what the stream no longer holds.
    Outbox {
        #[command(subcommand)]
        command: outbox::OutboxCommand,
    },
    /// The four topics: create them with production settings, check them, or
    /// read one.
    Topics {
        #[command(subcommand)]
        command: topics::TopicsCommand,
    },
    /// The tables: print their items.
    Tables {
        #[command(subcommand)]
        command: tables::TablesCommand,
    },
    /// Create a concert with seats, and users with a balance and an ACTIVE queue
    /// token; or, with --sample-events, the world the sample events of events/ name.
    Seed(seed::SeedArgs),
    /// The failed-message ledger: list, show, re-drive.
    Failed {
        #[command(subcommand)]
        command: FailedCommand,
    },
    /// Run the demo scenario through a running pipeline and report what happened.
    Demo {
        #[arg(long, env = "DEMO_API_URL", default_value = "http://127.0.0.1:3000")]
        api: String,
        #[arg(
            long,
            env = "DEMO_SANDBOX_URL",
            default_value = "http://127.0.0.1:8081"
        )]
        sandbox: String,
    },
    /// Sum the business metrics (EMF lines) in a log per metric and dimensions.
    Metrics {
        /// The local runner's log, or a function's exported log.
        log: std::path::PathBuf,
    },
    /// What happened to one reservation's payment or hold, as a timeline.
    Trace(trace::TraceArgs),
    /// The payments confirmed in a window against payment.completed, every
    /// destination's acknowledgements and the ledger; exits 1 when a sale is
    /// missing somewhere or was published twice.
    Reconcile(reconcile::ReconcileArgs),
}

#[derive(Subcommand)]
enum FailedCommand {
    /// The ledger's rows, oldest first.
    List {
        /// PENDING, PROCESSED or FAILED.
        #[arg(long)]
        status: Option<String>,
    },
    /// The event's rows (one per channel that failed), as JSON.
    Show { event_id: String },
    /// Republish to the dead-letter topic with retry-count 0 and the ledger back to PENDING.
    /// A send parked because it may have reached the customer is re-driven only by its
    /// event id (after checking the chat): `--all-failed` leaves it and says so.
    Redrive {
        event_id: Option<String>,
        /// Only the row of this channel (telegram, discord, data-platform) of the event.
        #[arg(long, requires = "event_id", value_parser = channel_kind)]
        channel: Option<ChannelKind>,
        /// Every FAILED row.
        #[arg(long)]
        all_failed: bool,
    },
}

/// A channel's name on the command line.
fn channel_kind(name: &str) -> Result<ChannelKind, String> {
    ChannelKind::parse(name)
        .ok_or_else(|| format!("{name:?} is not a channel: use telegram, discord or data-platform"))
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    if let Err(e) = run(Cli::parse()).await {
        eprintln!("ops: {}", shared::error_chain(&e));
        std::process::exit(1);
    }
}

/// Creates the tables and topics, and stores the local secrets where the
/// template's defaults and env.local.json look for them.
async fn provision(
    aws: &aws_config::SdkConfig,
    client: &aws_sdk_dynamodb::Client,
    tables: &TableNames,
    partitions: Option<i32>,
) -> Result<(), Error> {
    create_tables(client, tables).await?;
    let topics = TopicNames::from_env();
    if let Some(partitions) = partitions {
        create_topics(&KafkaSettings::from_env()?, &topics.all(), partitions).await?;
    }
    // Secrets that exist keep their values: a stack set up by someone else
    // (docker-compose's init stores values for containers) is not overwritten
    // with this shell's.
    let store = shared::secrets::SecretStore::new(aws);
    let (mut created, mut kept) = (Vec::new(), Vec::new());
    for (variable, id) in shared::secrets::LOCAL_SECRET_NAMES {
        if let Ok(value) = shared::config::required(variable) {
            let secret = shared::config::Secret::new(value);
            if store.create_secret(id, &secret).await? {
                created.push(id);
            } else {
                kept.push(id);
            }
        }
    }
    println!(
        "{}",
        json!({"tables": [tables.ticketing, tables.outbox, tables.idempotency],
               "topics": topics.all(), "secrets": created, "secretsKept": kept})
    );
    Ok(())
}

async fn run(cli: Cli) -> Result<(), Error> {
    let aws = shared::aws::config().await;
    // The queue tokens' key and Kafka's SASL credentials, when Secrets Manager
    // or SSM holds them.
    let secrets: Vec<&str> = KAFKA_SECRETS.into_iter().chain([JWT_SECRET]).collect();
    shared::secrets::preload(&aws, &secrets).await?;
    let client = aws_sdk_dynamodb::Client::new(&aws);
    let tables = TableNames::from_env();
    match cli.command {
        Command::Provision {
            partitions,
            without_topics,
        } => {
            topics::ensure_local(&aws, &KafkaSettings::from_env()?)?;
            let partitions = (!without_topics).then_some(partitions);
            provision(&aws, &client, &tables, partitions).await?
        }
        Command::Topics { command } => topics::run(command).await?,
        Command::Tables { command } => tables::run(command, &client, &tables).await?,
        Command::Outbox { command } => outbox::run(command, &aws).await?,
        Command::Seed(args) => seed::run(args, client, tables).await?,
        Command::Failed { command } => {
            let ledger =
                shared::dynamodb::DynamoFailureLedger::new(client.clone(), tables.failed_messages);
            let keys = shared::dynamodb::DynamoIdempotencyStore::new(client, tables.idempotency);
            match command {
                FailedCommand::List { status } => failed::list(&ledger, status.as_deref()).await?,
                FailedCommand::Show { event_id } => failed::show(&ledger, &event_id).await?,
                FailedCommand::Redrive {
                    event_id,
                    channel,
                    all_failed,
                } => {
                    let rows = failed::Rows {
                        event_id: event_id.as_deref(),
                        channel,
                        all_failed,
                    };
                    failed::redrive(&ledger, &keys, rows).await?
                }
            }
        }
        Command::Demo { api, sandbox } => {
            let repo = TicketingRepository::new(client, tables);
            let ok = demo::run(&repo, &jwt_key()?, &api, &sandbox).await?;
            if !ok {
                std::process::exit(1);
            }
        }
        Command::Metrics { log } => metrics::print(&log)?,
        Command::Trace(args) => trace::run(args, client).await?,
        Command::Reconcile(args) => reconcile::run(args, client).await?,
    }
    Ok(())
}
