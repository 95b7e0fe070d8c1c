//! The data-platform feed: a Kafka event (self-managed Kafka / MSK format) of
//! `payment.completed` or `seat.hold-expired`, read by its own consumer group
//! (so it and the notifier never hold each other back), delivered to the data
//! platform's API in requests of up to `DATA_PLATFORM_BATCH_SIZE` events, in
//! offset order, each event once (`shared::delivery::PlatformFeed`: the key
//! `notify:data-platform:<event id>`; the platform deduplicates by event id too).
//!
//! An event that fails does not stop the batch: it goes the notifications' way
//! (`shared::delivery::DeadLetterSink`), to the dead-letter topic with
//! `notification-channel: data-platform` and a PENDING ledger row when it may
//! pass later (an outage, a throttle, a lost answer), for dlq-retry to send
//! again, or to the failed topic with a FAILED row when it never will (the
//! platform refused that event, a poison record). Only when a dead letter
//! cannot be written does the invocation fail, so the batch comes back (the
//! events the platform has are then skipped by their keys).

use aws_lambda_events::kafka::{KafkaEvent, KafkaRecord};
use chrono::{DateTime, Duration, Utc};
use lambda_runtime::LambdaEvent;
use shared::channels::{DataPlatformClient, DataPlatformSettings};
use shared::clock::Clock;
use shared::config::{TableNames, TopicNames, Vars};
use shared::dead_letter::DeadLetter;
use shared::delivery::{
    DeadLetterSink, Disposition, Letter, PlatformApi, PlatformFeed, Written, idempotency_ttl,
};
use shared::dynamodb::{DynamoFailureLedger, DynamoIdempotencyStore};
use shared::idempotency::IdempotencyStore;
use shared::kafka::{KafkaPublisher, KafkaSettings, ProducerSettings, ProducerStart};
use shared::kafka_event::{
    DecodedRecord, KafkaBatchResponse, coordinates, decode_lossy, decode_record, key_text,
    records_in_order,
};
use shared::ledger::FailureLedger;
use shared::notification::ChannelKind;
use shared::ports::EventPublisher;
use shared::spans;
use std::sync::Arc;
use tracing::Instrument;

/// Why the function could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the data-platform feed is misconfigured")]
    Config(#[source] shared::config::ConfigError),
}

/// The first retry's delay unless `RETRY_DELAY_SECONDS` says otherwise.
pub const DEFAULT_RETRY_DELAY: Duration = Duration::seconds(60);

#[derive(Clone, Debug)]
pub struct Config {
    pub tables: TableNames,
    /// The platform: its URL, keys, batch size, timeout and request rate.
    pub platform: DataPlatformSettings,
    /// How long a delivered event is remembered (`IDEMPOTENCY_TTL_SECONDS`).
    pub idempotency_ttl: Duration,
    /// Where dead letters are written.
    pub kafka: KafkaSettings,
    pub producer: ProducerSettings,
    pub topics: TopicNames,
    /// `RETRY_DELAY_SECONDS`: a dead letter's first retry, unless the
    /// platform asks for longer.
    pub retry_delay: Duration,
}

impl Config {
    pub fn from_env() -> Result<Self, Error> {
        let read = || -> Result<Config, shared::config::ConfigError> {
            let vars = Vars::process();
            Ok(Config {
                tables: TableNames::from_env(),
                platform: DataPlatformSettings::from_env()?,
                idempotency_ttl: idempotency_ttl(&vars)?,
                kafka: KafkaSettings::from_env()?,
                producer: ProducerSettings::from_env()?,
                topics: TopicNames::from_env(),
                retry_delay: vars.seconds("RETRY_DELAY_SECONDS", DEFAULT_RETRY_DELAY)?,
            })
        };
        read().map_err(Error::Config)
    }
}

pub struct Feed<A, S, P, L> {
    feed: PlatformFeed<A, S>,
    sink: DeadLetterSink<P, L>,
    clock: Arc<dyn Clock>,
    retry_delay: Duration,
    batch_size: usize,
}

/// The feed as deployed: the platform over HTTPS, DynamoDB, Kafka.
pub type LambdaFeed =
    Feed<DataPlatformClient, DynamoIdempotencyStore, KafkaPublisher, DynamoFailureLedger>;

impl LambdaFeed {
    pub fn from_config(
        config: &Config,
        client: aws_sdk_dynamodb::Client,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, Error> {
        let build = || -> Result<LambdaFeed, shared::config::ConfigError> {
            let feed = PlatformFeed::new(
                config.platform.client()?,
                config.platform.pseudonyms()?,
                DynamoIdempotencyStore::new(client.clone(), config.tables.idempotency.clone()),
                clock.clone(),
                config.idempotency_ttl,
            );
            let sink = DeadLetterSink::new(
                // Only what fails is published: no producer until a dead letter.
                KafkaPublisher::starting(
                    &config.kafka,
                    &config.producer,
                    ProducerStart::AtFirstPublish,
                )?,
                DynamoFailureLedger::new(client, config.tables.failed_messages.clone()),
                config.topics.clone(),
            );
            Ok(Feed::new(feed, sink, clock, config.retry_delay)
                .with_batch_size(config.platform.batch_size))
        };
        build().map_err(Error::Config)
    }
}

/// What the feed answers the event source: the partial-batch response (always
/// empty: a batch fails as a whole or is done) and how many dead letters could
/// never be written and were skipped (logged with the record's coordinates).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedAnswer {
    #[serde(flatten)]
    pub response: KafkaBatchResponse,
    pub delivered: usize,
    pub dead_lettered: usize,
    pub skipped_dead_letters: usize,
}

/// One record of a chunk: decoded (or as much as could be), and its letter or
/// why it has none.
struct Item {
    record: DecodedRecord,
    letter: Result<Letter, shared::Error>,
    span: tracing::Span,
}

impl<A, S, P, L> Feed<A, S, P, L>
where
    A: PlatformApi,
    S: IdempotencyStore,
    P: EventPublisher,
    L: FailureLedger,
{
    pub fn new(
        feed: PlatformFeed<A, S>,
        sink: DeadLetterSink<P, L>,
        clock: Arc<dyn Clock>,
        retry_delay: Duration,
    ) -> Self {
        Feed {
            feed,
            sink,
            clock,
            retry_delay,
            batch_size: shared::channels::DEFAULT_DATA_PLATFORM_BATCH_SIZE,
        }
    }

    /// Sends at most `events` events per request.
    pub fn with_batch_size(self, events: usize) -> Self {
        Feed {
            batch_size: events.max(1),
            ..self
        }
    }

    /// Where its failures go.
    pub fn sink(&self) -> &DeadLetterSink<P, L> {
        &self.sink
    }

    /// Delivers the batch chunk by chunk, in offset order; what failed is
    /// dead-lettered and the batch goes on. Fails only when a dead letter
    /// cannot be written (the batch then comes back whole).
    pub async fn handle(
        &self,
        event: LambdaEvent<KafkaEvent>,
    ) -> Result<FeedAnswer, lambda_runtime::Error> {
        let deadline = shared::clock::deadline_from_millis(event.context.deadline);
        let span = spans::invocation("data-platform-feed", &event.context.request_id);
        let records = records_in_order(&event.payload);
        let mut answer = FeedAnswer::default();
        for chunk in records.chunks(self.batch_size) {
            self.handle_chunk(chunk, deadline, &mut answer)
                .instrument(span.clone())
                .await
                .map_err(Box::new)?;
        }
        span.in_scope(|| {
            tracing::info!(
                delivered = answer.delivered,
                dead_lettered = answer.dead_lettered,
                "batch fed to the data platform"
            );
        });
        Ok(answer)
    }

    async fn handle_chunk(
        &self,
        chunk: &[&KafkaRecord],
        deadline: Option<DateTime<Utc>>,
        answer: &mut FeedAnswer,
    ) -> Result<(), shared::Error> {
        let items: Vec<Item> = chunk.iter().map(|record| item(record)).collect();
        let letters: Vec<Letter> = items
            .iter()
            .filter_map(|i| i.letter.as_ref().ok().cloned())
            .collect();
        let mut outcomes = self.feed.deliver(&letters, deadline).await.into_iter();
        for item in items {
            let failure = match item.letter {
                Ok(_) => match outcomes.next() {
                    Some(Ok(_)) => {
                        answer.delivered += 1;
                        continue;
                    }
                    Some(Err(e)) => e,
                    None => shared::Error::corrupt("the feed answered fewer outcomes than letters"),
                },
                Err(poison) => poison,
            };
            let written = self
                .dead_letter(&item.record, failure)
                .instrument(item.span)
                .await?;
            answer.dead_lettered += 1;
            if written == Written::Skipped {
                answer.skipped_dead_letters += 1;
            }
        }
        Ok(())
    }

    /// A first failure on the platform: retried after `retry_delay` (or the
    /// platform's `Retry-After`, if longer) when it may pass, else parked.
    async fn dead_letter(
        &self,
        record: &DecodedRecord,
        error: shared::Error,
    ) -> Result<Written, shared::Error> {
        let now = self.clock.now();
        let letter = DeadLetter::first(record.clone(), &error, self.retry_delay, now)
            .on_channel(ChannelKind::DataPlatform);
        tracing::warn!(error = %shared::error_chain(&error), "event not fed; dead-lettered");
        self.sink
            .dead_letter_or_skip(&letter, Disposition::of(&error), now)
            .await
    }
}

/// A record of the batch, decoded and parsed, in its span.
fn item(record: &KafkaRecord) -> Item {
    let span = spans::kafka_record(&coordinates(record), key_text(record).as_deref());
    let (record, letter) = match decode_record(record) {
        Ok(decoded) => {
            let letter = Letter::parse(&decoded);
            (decoded, letter)
        }
        Err(e) => (decode_lossy(record), Err(e)),
    };
    if let Ok(letter) = &letter {
        span.record(
            "event_id",
            tracing::field::display(letter.envelope.event_id),
        );
    }
    span.record(
        "trace_id",
        record
            .header(shared::trace::HEADER)
            .and_then(shared::trace::TraceContext::parse)
            .map(|t| t.trace_id().to_owned()),
    );
    Item {
        record,
        letter,
        span,
    }
}
