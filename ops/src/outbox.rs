//! `ops outbox replay`: re-publishes the outbox items created in a window, for
//! the events the stream no longer holds (see `shared::replay`).

use crate::Error;
use chrono::{DateTime, Utc};
use clap::Subcommand;
use shared::config::{TableNames, TopicNames};
use shared::kafka::{KafkaPublisher, KafkaSettings, ProducerSettings};
use shared::replay::{self, ReplayWindow};

#[derive(Subcommand)]
pub enum OutboxCommand {
    /// Re-publish the outbox items created between --from and --to (RFC 3339),
    /// or those of the batches named on the relay's on-failure queue, to their
    /// topics as the relay does; consumers skip events they already delivered.
    /// The outbox keeps items 7 days.
    Replay {
        #[arg(long, required_unless_present = "failure_queue", requires = "to")]
        from: Option<DateTime<Utc>>,
        #[arg(long, requires = "from")]
        to: Option<DateTime<Utc>>,
        /// Only this event (with --from and --to).
        #[arg(long, requires = "from")]
        event_id: Option<String>,
        /// The relay's on-failure SQS queue URL: replay each batch it names
        /// (from the stream while it holds them, else by their arrival times),
        /// and delete the message once its batch is published.
        #[arg(long, conflicts_with_all = ["from", "to", "event_id"])]
        failure_queue: Option<String>,
        /// List what would be published, publish nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub async fn run(command: OutboxCommand, aws: &aws_config::SdkConfig) -> Result<(), Error> {
    let OutboxCommand::Replay {
        from,
        to,
        event_id,
        failure_queue,
        dry_run,
    } = command;
    let dynamodb = aws_sdk_dynamodb::Client::new(aws);
    let outbox = TableNames::from_env().outbox;
    let replayer = Replayer::new(dry_run)?;
    if let Some(url) = failure_queue {
        return replay_failure_queue(aws, &dynamodb, &outbox, &url, &replayer).await;
    }
    let (Some(from), Some(to)) = (from, to) else {
        return Err(Error::Message("--from and --to are both needed".into()));
    };
    let window = ReplayWindow { from, to, event_id };
    let items = replay::items_in(&dynamodb, &outbox, &window).await?;
    replayer.replay(&items).await
}

/// Replays the batch of each message on the relay's on-failure queue; a
/// message is deleted once its batch is published (kept on a dry run).
async fn replay_failure_queue(
    aws: &aws_config::SdkConfig,
    dynamodb: &aws_sdk_dynamodb::Client,
    outbox: &str,
    url: &str,
    replayer: &Replayer,
) -> Result<(), Error> {
    let sqs = aws_sdk_sqs::Client::new(aws);
    let streams = aws_sdk_dynamodbstreams::Client::new(aws);
    let batches = replay::discarded_batches(&sqs, url).await?;
    println!("{} discarded batches on {url}", batches.len());
    for batch in &batches {
        let info = &batch.record.batch;
        let (items, found_in) = replay::batch_items(&streams, dynamodb, outbox, info).await?;
        println!(
            "batch {}..{} ({} records, {:?}): {} outbox items, read from {found_in:?}",
            info.start_sequence_number,
            info.end_sequence_number,
            info.batch_size,
            batch.record.request_context.condition,
            items.len()
        );
        replayer.replay(&items).await?;
        if replayer.publisher.is_none() {
            replay::release(&sqs, url, batch).await?;
        } else {
            replay::forget(&sqs, url, batch).await?;
        }
    }
    Ok(())
}

/// Lists outbox items and publishes them through the relay's producer (none
/// on a dry run), made once for the whole replay.
struct Replayer {
    topics: TopicNames,
    publisher: Option<KafkaPublisher>,
}

impl Replayer {
    fn new(dry_run: bool) -> Result<Self, Error> {
        // The relay's producer: the same settings, so the same guarantees.
        let publisher = if dry_run {
            None
        } else {
            Some(KafkaPublisher::new(
                &KafkaSettings::from_env()?,
                &ProducerSettings::from_env()?,
            )?)
        };
        Ok(Replayer {
            topics: TopicNames::from_env(),
            publisher,
        })
    }

    async fn replay(&self, items: &[shared::outbox::OutboxItem]) -> Result<(), Error> {
        for item in items {
            let record = item.to_record(&self.topics);
            let created = DateTime::from_timestamp_millis(item.created_at).unwrap_or_default();
            println!(
                "{} {} {} -> {} (created {created})",
                if self.publisher.is_some() {
                    "publishing"
                } else {
                    "would publish"
                },
                item.event_type.as_str(),
                item.event_id,
                record.topic
            );
        }
        let Some(publisher) = &self.publisher else {
            println!(
                "{} outbox items in the window; nothing published (--dry-run)",
                items.len()
            );
            return Ok(());
        };
        match replay::publish(items, publisher, &self.topics).await {
            Ok(published) => {
                println!("{published} outbox items re-published");
                Ok(())
            }
            Err((published, e)) => Err(Error::Message(format!(
                "{published} of {} outbox items re-published, then: {} (run the same command again: consumers skip what they already delivered)",
                items.len(),
                shared::error_chain(&e)
            ))),
        }
    }
}
