//! `ops trace <reservation-id | event-id>`: what happened to one customer's
//! payment or hold, as one timeline: the reservation and payment items, the
//! outbox items, the records on every topic that carry the reservation's key
//! or its events' ids (read from shortly before the hold, at most
//! `--scan-limit` records per partition), each channel's idempotency record,
//! the ledger's rows and, on a local stack, what the sandbox received. Then
//! the outcome per event and channel, with the command to run when one is
//! left to an operator. `--json` prints the same for machines.

pub(crate) mod deliveries;
pub(crate) mod facts;
mod gather;
pub(crate) mod story;

use crate::Error;
use clap::Args;
use gather::Sources;
use shared::config::{TableNames, TopicNames};
use shared::kafka::KafkaSettings;
use shared::notification::ChannelRoutes;

/// The most records read on one partition unless `--scan-limit` says otherwise.
pub const DEFAULT_SCAN_LIMIT: i64 = 100_000;

#[derive(Args)]
pub struct TraceArgs {
    /// A reservation id, or the id of one of its events.
    id: String,
    /// Print the timeline as one JSON object.
    #[arg(long)]
    json: bool,
    /// The notification sandbox (local stack only): also show what it received.
    #[arg(long, env = "SANDBOX_URL")]
    sandbox: Option<String>,
    /// The most records read on one partition of a topic.
    #[arg(long, default_value_t = DEFAULT_SCAN_LIMIT)]
    scan_limit: i64,
}

pub async fn run(args: TraceArgs, dynamodb: aws_sdk_dynamodb::Client) -> Result<(), Error> {
    let sources = Sources {
        dynamodb,
        tables: TableNames::from_env(),
        topics: TopicNames::from_env(),
        kafka: KafkaSettings::from_env()?,
        routes: ChannelRoutes::from_env()?,
        feeds_platform: shared::config::optional("DATA_PLATFORM_URL").is_some(),
        sandbox: args.sandbox,
        scan_limit: args.scan_limit,
    };
    let story = gather::gather(&sources, args.id.trim(), chrono::Utc::now()).await?;
    if args.json {
        println!("{:#}", story.to_json());
    } else {
        print!("{}", story.to_text());
    }
    Ok(())
}
