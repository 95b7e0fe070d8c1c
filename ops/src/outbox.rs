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
    /// Re-publish the outbox items created between --from and --to (RFC 3339)
    /// to their topics, as the relay does; consumers skip events they already
    /// delivered. The outbox keeps items 7 days.
    Replay {
        #[arg(long)]
        from: DateTime<Utc>,
        #[arg(long)]
        to: DateTime<Utc>,
        /// Only this event.
        #[arg(long)]
        event_id: Option<String>,
        /// List what would be published, publish nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub async fn run(command: OutboxCommand, dynamodb: &aws_sdk_dynamodb::Client) -> Result<(), Error> {
    let OutboxCommand::Replay {
        from,
        to,
        event_id,
        dry_run,
    } = command;
    let window = ReplayWindow { from, to, event_id };
    let items = replay::items_in(dynamodb, &TableNames::from_env().outbox, &window).await?;
    let topics = TopicNames::from_env();
    for item in &items {
        let record = item.to_record(&topics);
        let created = DateTime::from_timestamp_millis(item.created_at).unwrap_or_default();
        println!(
            "{} {} {} -> {} (created {created})",
            if dry_run {
                "would publish"
            } else {
                "publishing"
            },
            item.event_type.as_str(),
            item.event_id,
            record.topic
        );
    }
    if dry_run {
        println!(
            "{} outbox items in the window; nothing published (--dry-run)",
            items.len()
        );
        return Ok(());
    }
    // The relay's producer: the same settings, so the same guarantees.
    let publisher =
        KafkaPublisher::new(&KafkaSettings::from_env()?, &ProducerSettings::from_env()?)?;
    match replay::publish(&items, &publisher, &topics).await {
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
