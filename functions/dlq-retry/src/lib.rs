//! dlq-retry: on a schedule, retries the dead letters whose `next-attempt-at` has
//! come. It reads `payment.completed.dlq` in its own consumer group, only up to
//! the end offsets it saw when it started (so it never chases the records it
//! republishes itself), and for each due record:
//!
//! - sends the notification again on the channel that failed (the
//!   `notification-channel` header; every routed channel for a letter without
//!   one) through `shared::delivery`, the notifier's idempotency check, so a
//!   channel that was in fact delivered is not sent twice, and marks the ledger
//!   row PROCESSED;
//! - on a retryable failure, republishes it with `retry-count` + 1 and
//!   `next-attempt-at` moved by exponential back-off with jitter, or, after
//!   `max_retries`, parks it on `payment.completed.failed` with the ledger FAILED;
//! - on a permanent failure, parks it at once.
//!
//! Due letters go in chunks, each chunk's letters concurrently (one
//! reservation's in order); a chunk's offsets are committed only after what was
//! written for all of it was acknowledged. A letter not yet due is put back at
//! the topic's end unchanged and committed past, so a long back-off (a 429's
//! `retry_after`, the one-hour cap) never holds up the due letters behind it;
//! it comes round again each run until it is due (the notifier's idempotency
//! makes a copy left by a crash between the two harmless). The run stops early
//! enough to finish before the invocation's deadline.

use chrono::{DateTime, Duration, Utc};
use futures::StreamExt;
use lambda_runtime::LambdaEvent;
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use shared::channels::Channel;
use shared::clock::Clock;
use shared::config::Vars;
use shared::dead_letter::{DeadLetter, backoff};
use shared::delivery::{
    DeadLetterSink, Deliverer, DeliveryConfig, Destination, Disposition, Failure, Written,
};
use shared::dynamodb::{DynamoFailureLedger, DynamoIdempotencyStore};
use shared::idempotency::IdempotencyStore;
use shared::kafka::decoded_message;
use shared::kafka::{KafkaPublisher, ProducerStart};
use shared::kafka_event::group_by_key;
use shared::ledger::FailureLedger;
use shared::spans;
use std::collections::HashMap;
use std::sync::Arc;
use tracing::Instrument;

/// Why the function could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("dlq-retry is misconfigured")]
    Config(#[source] shared::config::ConfigError),
    #[error("reading the dead-letter topic failed")]
    Kafka(#[source] rdkafka::error::KafkaError),
    #[error("writing the outcome of a dead letter failed; its offset was not committed")]
    Park(#[source] shared::Error),
}

/// Retries before a dead letter is parked unless `DLQ_MAX_RETRIES` says otherwise.
pub const DEFAULT_MAX_RETRIES: u32 = 3;
/// The back-off's base and cap unless `DLQ_BACKOFF_BASE_SECONDS` and
/// `DLQ_BACKOFF_MAX_SECONDS` say otherwise.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::minutes(1);
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::hours(1);
/// Stop this long before the deadline unless `DLQ_SAFETY_MARGIN_SECONDS` says otherwise.
pub const DEFAULT_SAFETY_MARGIN: Duration = Duration::seconds(10);
/// How long a run may take when the invocation has no deadline (a local call).
pub const DEFAULT_RUN_TIME: Duration = Duration::minutes(1);

/// What the function reads from its variables besides the delivery's.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `DLQ_RETRY_GROUP_ID`: its consumer group on the dead-letter topic.
    pub group_id: String,
    /// `NOTIFY_CONCURRENCY`: dead letters retried at once (a chunk).
    pub concurrency: usize,
    /// `DLQ_MAX_RETRIES`: retries before a dead letter is parked as failed
    /// (the notifier's first send is not counted).
    pub max_retries: u32,
    /// `DLQ_BACKOFF_BASE_SECONDS`, `DLQ_BACKOFF_MAX_SECONDS`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// `DLQ_SAFETY_MARGIN_SECONDS`: stop taking new records when less than
    /// this is left before the deadline.
    pub safety_margin: Duration,
    /// Used when the invocation has no deadline (a local call).
    pub default_run_time: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            group_id: "dlq-retry".into(),
            concurrency: shared::delivery::DEFAULT_CONCURRENCY,
            max_retries: DEFAULT_MAX_RETRIES,
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_max: DEFAULT_BACKOFF_MAX,
            safety_margin: DEFAULT_SAFETY_MARGIN,
            default_run_time: DEFAULT_RUN_TIME,
        }
    }
}

impl Settings {
    pub fn from_vars(vars: &Vars) -> Result<Self, shared::config::ConfigError> {
        let default = Settings::default();
        Ok(Settings {
            group_id: vars.or_default("DLQ_RETRY_GROUP_ID", &default.group_id),
            concurrency: shared::delivery::concurrency(vars)?,
            max_retries: vars.parsed("DLQ_MAX_RETRIES", default.max_retries)?,
            backoff_base: vars.seconds("DLQ_BACKOFF_BASE_SECONDS", default.backoff_base)?,
            backoff_max: vars.seconds("DLQ_BACKOFF_MAX_SECONDS", default.backoff_max)?,
            safety_margin: vars.seconds("DLQ_SAFETY_MARGIN_SECONDS", default.safety_margin)?,
            default_run_time: default.default_run_time,
        })
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    /// The channels, the idempotency table, and where failures go: the
    /// notifier's, so a retry skips what the notifier sent.
    pub delivery: DeliveryConfig,
    pub settings: Settings,
}

impl Config {
    pub fn from_env() -> Result<Self, Error> {
        let read = || -> Result<Config, shared::config::ConfigError> {
            Ok(Config {
                delivery: DeliveryConfig::from_env()?,
                settings: Settings::from_vars(&Vars::process())?,
            })
        };
        read().map_err(Error::Config)
    }
}

/// What one run did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryReport {
    /// Delivered by this run (or found already delivered).
    pub processed: u32,
    /// Failed again and republished for a later attempt.
    pub retried: u32,
    /// Parked on the failed topic.
    pub failed: u32,
    /// Letters not yet due, put back at the topic's end for a later run.
    pub not_due: u32,
    /// Letters that could never be written again (refused for good even cut):
    /// logged with their coordinates and skipped.
    pub skipped: u32,
    /// True when the run stopped for the deadline with records left.
    pub stopped_for_deadline: bool,
}

impl RetryReport {
    /// The run's `Letters` by outcome.
    fn count(&self) {
        shared::metrics::count_outcomes(
            "Letters",
            &[
                ("processed", self.processed.into()),
                ("retried", self.retried.into()),
                ("parked", self.failed.into()),
                ("not_due", self.not_due.into()),
                ("skipped", self.skipped.into()),
            ],
        );
    }
}

/// A record of the chunk and what the run does with it before committing past it.
struct Pending {
    partition: i32,
    offset: i64,
    action: Action,
}

enum Action {
    /// A due letter: sent again.
    Retry(DeadLetter),
    /// A letter not yet due: put back at the topic's end, unchanged.
    Defer(DeadLetter),
    /// Not a letter: parked already; only its offset is left to commit.
    Commit,
}

/// One run's worker: the deployed one sends on the channels with its keys on
/// DynamoDB ([`LambdaDlqRetry`]); the benchmarks put the keys and the ledger
/// on stores of their own.
pub struct DlqRetry<C, S, L> {
    deliverer: Deliverer<C, S>,
    sink: DeadLetterSink<KafkaPublisher, L>,
    config: Config,
    clock: Arc<dyn Clock>,
}

/// dlq-retry as deployed: the channels, DynamoDB, Kafka.
pub type LambdaDlqRetry = DlqRetry<Channel, DynamoIdempotencyStore, DynamoFailureLedger>;

impl LambdaDlqRetry {
    pub fn from_config(
        config: Config,
        client: aws_sdk_dynamodb::Client,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, Error> {
        let delivery = &config.delivery;
        let deliverer = delivery
            .deliverer(client.clone(), clock.clone())
            .map_err(Error::Config)?;
        // Every run builds a consumer (librdkafka's global set-up is paid at
        // init either way): the producer is built with it.
        let sink = delivery
            .sink(client, ProducerStart::AtInit)
            .map_err(Error::Config)?;
        Ok(DlqRetry::new(config, deliverer, sink, clock))
    }
}

impl<C, S, L> DlqRetry<C, S, L>
where
    C: Destination,
    S: IdempotencyStore,
    L: FailureLedger,
{
    /// A worker of `config`'s settings and topics, sending through `deliverer`
    /// and writing failures through `sink`.
    pub fn new(
        config: Config,
        deliverer: Deliverer<C, S>,
        sink: DeadLetterSink<KafkaPublisher, L>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        DlqRetry {
            deliverer,
            sink,
            config,
            clock,
        }
    }

    /// The scheduled event's content does not matter: each run drains what is due.
    pub async fn handle(
        &self,
        event: LambdaEvent<serde_json::Value>,
    ) -> Result<RetryReport, lambda_runtime::Error> {
        let deadline = shared::clock::deadline_from_millis(event.context.deadline)
            .unwrap_or_else(|| self.clock.now() + self.config.settings.default_run_time);
        let span = spans::invocation("dlq-retry", &event.context.request_id);
        let report = self
            .run(deadline)
            .instrument(span.clone())
            .await
            .map_err(Box::new)?;
        span.in_scope(|| tracing::info!(?report, "dlq-retry run finished"));
        report.count();
        Ok(report)
    }

    fn consumer(&self) -> Result<(StreamConsumer, HashMap<i32, i64>), Error> {
        let topic = &self.config.delivery.topics.payment_completed_dlq;
        let consumer: StreamConsumer = self
            .config
            .delivery
            .kafka
            .client_config()
            .set("group.id", &self.config.settings.group_id)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .map_err(Error::Kafka)?;
        let timeout = std::time::Duration::from_secs(10);
        let metadata = consumer
            .fetch_metadata(Some(topic), timeout)
            .map_err(Error::Kafka)?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        let mut wanted = TopicPartitionList::new();
        for p in &partitions {
            wanted.add_partition(topic, *p);
        }
        let committed = consumer
            .committed_offsets(wanted, timeout)
            .map_err(Error::Kafka)?;
        let mut assignment = TopicPartitionList::new();
        // Where each partition ends now: records republished by this run land
        // beyond it and wait for the next run.
        let mut ends = HashMap::new();
        for p in partitions {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, timeout)
                .map_err(Error::Kafka)?;
            let start = match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o.max(low),
                _ => low,
            };
            if start < high {
                assignment
                    .add_partition_offset(topic, p, Offset::Offset(start))
                    .map_err(Error::Kafka)?;
                ends.insert(p, high);
            }
        }
        consumer.assign(&assignment).map_err(Error::Kafka)?;
        Ok((consumer, ends))
    }

    /// Drains the due dead letters until every partition is done or not yet due,
    /// or the deadline is near: in chunks of as many letters as the notifier
    /// handles at once (`NOTIFY_CONCURRENCY`), each chunk's letters concurrently
    /// (those of one reservation in offset order), then one commit of the chunk's
    /// offsets once all of it was written. A chunk is one round of sends, so the
    /// deadline check between chunks keeps the overrun to one send per letter.
    pub async fn run(&self, deadline: DateTime<Utc>) -> Result<RetryReport, Error> {
        let mut report = RetryReport::default();
        let (consumer, mut ends) = self.consumer()?;
        tracing::debug!(?ends, "dlq-retry run: partitions and their ends");
        let topic = self.config.delivery.topics.payment_completed_dlq.clone();
        let mut chunk: Vec<Pending> = Vec::new();
        while !ends.is_empty() {
            if self.clock.now() + self.config.settings.safety_margin >= deadline {
                report.stopped_for_deadline = true;
                break;
            }
            // Wait for more only while the chunk is empty: what was fetched is
            // in librdkafka's queue already, so a short pause means the end.
            let wait = if chunk.is_empty() { 5_000 } else { 200 };
            let message =
                match tokio::time::timeout(std::time::Duration::from_millis(wait), consumer.recv())
                    .await
                {
                    Ok(Ok(m)) => m.detach(),
                    Ok(Err(e)) => return Err(Error::Kafka(e)),
                    Err(_) if chunk.is_empty() => break, // nothing arrives although the watermarks said so
                    Err(_) => {
                        self.retry_chunk(&consumer, &topic, &mut chunk, deadline, &mut report)
                            .await?;
                        continue;
                    }
                };
            let record = decoded_message(&message);
            let partition = message.partition();
            let Some(end) = ends.get(&partition).copied() else {
                continue; // a partition that is done or stopped this run
            };
            if record.offset >= end {
                ends.remove(&partition);
                continue;
            }
            if record.offset + 1 >= end {
                ends.remove(&partition);
            }
            let action = match DeadLetter::from_dlq_record(&record) {
                Ok(letter) if letter.next_attempt_at > self.clock.now() => {
                    report.not_due += 1;
                    Action::Defer(letter)
                }
                Ok(letter) => Action::Retry(letter),
                Err(e) => {
                    // Not a dead letter we wrote: keep it for an operator.
                    let now = self.clock.now();
                    let letter = DeadLetter::new(record.clone(), &e, 0, now);
                    match self
                        .sink
                        .dead_letter_or_skip(&letter, Disposition::Park, now)
                        .await
                        .map_err(Error::Park)?
                    {
                        Written::Written => report.failed += 1,
                        Written::Skipped => report.skipped += 1,
                    }
                    Action::Commit
                }
            };
            chunk.push(Pending {
                partition,
                offset: record.offset,
                action,
            });
            if chunk.len() >= self.config.settings.concurrency || ends.is_empty() {
                self.retry_chunk(&consumer, &topic, &mut chunk, deadline, &mut report)
                    .await?;
            }
        }
        self.retry_chunk(&consumer, &topic, &mut chunk, deadline, &mut report)
            .await?;
        Ok(report)
    }

    /// Retries the letters of `chunk` (emptied), those of different
    /// reservations concurrently, then commits past each partition's last one.
    async fn retry_chunk(
        &self,
        consumer: &StreamConsumer,
        topic: &str,
        chunk: &mut Vec<Pending>,
        deadline: DateTime<Utc>,
        report: &mut RetryReport,
    ) -> Result<(), Error> {
        if chunk.is_empty() {
            return Ok(());
        }
        let taken = std::mem::take(chunk);
        let started = std::time::Instant::now();
        let due = taken.iter().filter_map(|p| match &p.action {
            Action::Retry(letter) => Some(letter),
            _ => None,
        });
        // One reservation's letters in offset order; different ones at once.
        let groups: Vec<_> = group_by_key(due, |letter| letter.original.key.as_deref())
            .into_iter()
            .map(|letters| self.retry_in_order(letters, deadline))
            .collect();
        let tallies: Vec<Result<RetryReport, Error>> = futures::stream::iter(groups)
            .buffer_unordered(self.config.settings.concurrency)
            .collect()
            .await;
        for tally in tallies {
            let tally = tally?;
            report.processed += tally.processed;
            report.retried += tally.retried;
            report.failed += tally.failed;
            report.skipped += tally.skipped;
        }
        self.defer(&taken).await?;
        let mut next: HashMap<i32, i64> = HashMap::new();
        for pending in &taken {
            let at = next.entry(pending.partition).or_default();
            *at = (*at).max(pending.offset + 1);
        }
        let mut offsets = TopicPartitionList::new();
        for (partition, offset) in next {
            offsets
                .add_partition_offset(topic, partition, Offset::Offset(offset))
                .map_err(Error::Kafka)?;
        }
        let retried = started.elapsed();
        consumer
            .commit(&offsets, CommitMode::Sync)
            .map_err(Error::Kafka)?;
        tracing::debug!(letters = taken.len(), ?retried, committed = ?started.elapsed() - retried, "dlq-retry chunk done");
        Ok(())
    }

    /// Puts the chunk's letters that are not yet due back at the topic's end,
    /// acknowledged before the chunk is committed past them.
    async fn defer(&self, chunk: &[Pending]) -> Result<(), Error> {
        let deferred = chunk.iter().filter_map(|p| match &p.action {
            Action::Defer(letter) => Some(self.sink.defer(letter)),
            _ => None,
        });
        futures::future::try_join_all(deferred)
            .await
            .map_err(Error::Park)?;
        Ok(())
    }

    /// The due letters of one reservation, one after the other.
    async fn retry_in_order(
        &self,
        letters: Vec<&DeadLetter>,
        deadline: DateTime<Utc>,
    ) -> Result<RetryReport, Error> {
        let mut tally = RetryReport::default();
        for letter in letters {
            let key = letter.original.key.as_deref().map(String::from_utf8_lossy);
            let span = spans::dead_letter(
                &letter.original.coordinates(),
                &letter.event_id(),
                key.as_deref(),
                letter.channel.map_or("-", |c| c.name()),
                letter.retry_count,
            );
            span.in_scope(|| spans::record_trace(letter.original.header(shared::trace::HEADER)));
            self.retry(letter, deadline, &mut tally)
                .instrument(span)
                .await?;
        }
        Ok(tally)
    }

    /// Sends one due dead letter again; on failure republishes or parks it.
    async fn retry(
        &self,
        letter: &DeadLetter,
        deadline: DateTime<Utc>,
        report: &mut RetryReport,
    ) -> Result<(), Error> {
        let now = self.clock.now();
        let failures = self
            .deliverer
            .deliver(&letter.original, letter.channel, Some(deadline))
            .await;
        if failures.is_empty() {
            report.processed += 1;
            tracing::info!("dead letter delivered");
        }
        // A letter of a channel closes its row when that channel is done. A
        // letter without one (a re-driven record) closes the record's row once
        // it reached its channels: any that failed carry on as letters of their own.
        let reached_channels =
            letter.channel.is_none() && failures.iter().all(|f| f.channel.is_some());
        if failures.is_empty() || reached_channels {
            self.sink
                .delivered(letter, now)
                .await
                .map_err(Error::Park)?;
        }
        for failure in failures {
            match self.fail_again(letter, failure, now).await? {
                (_, Written::Skipped) => report.skipped += 1,
                (Disposition::Retry, Written::Written) => report.retried += 1,
                (Disposition::Park, Written::Written) => report.failed += 1,
            }
        }
        Ok(())
    }

    /// Another failed attempt: republished with `retry-count` + 1 and the next
    /// attempt moved by back-off (or the channel's `retry_after`, if longer),
    /// or parked when it cannot succeed or has had its retries.
    async fn fail_again(
        &self,
        letter: &DeadLetter,
        failure: Failure,
        now: DateTime<Utc>,
    ) -> Result<(Disposition, Written), Error> {
        let retries = letter.retry_count + 1;
        let disposition = match Disposition::of(&failure.error) {
            Disposition::Retry if retries < self.config.settings.max_retries => Disposition::Retry,
            _ => Disposition::Park,
        };
        let delay = backoff(
            self.config.settings.backoff_base,
            retries,
            self.config.settings.backoff_max,
            rand::random::<f64>(),
        )
        .max(failure.error.retry_after().unwrap_or_else(Duration::zero));
        let mut next = letter.retried(&failure.error, now + delay);
        if let Some(channel) = failure.channel {
            next = next.on_channel(channel);
        }
        let written = self
            .sink
            .dead_letter_or_skip(&next, disposition, now)
            .await
            .map_err(Error::Park)?;
        Ok((disposition, written))
    }
}
