//! The notifier: a Kafka event (self-managed Kafka / MSK format) of
//! `payment.completed` or `seat.hold-expired` in, the customer's message out on
//! each channel configured for the event type (Telegram, Discord or both), once
//! per event and channel: the key `notify:<channel>:<event id>` is taken in the
//! idempotency table before sending and marked COMPLETED after, so a redelivered
//! record is not sent twice, and a channel that failed is retried without the
//! one that succeeded being sent again.
//!
//! Records of different keys (reservations) or partitions are handled
//! concurrently, up to `NOTIFY_CONCURRENCY` at a time; the records of one key
//! one after the other in offset order, so a customer's messages keep their order.
//!
//! A record that fails does not stop the batch. A retryable failure on a channel
//! (timeout, connection error, HTTP 5xx, 429) goes to the dead-letter topic with
//! diagnostic headers, the `notification-channel` that failed, `retry-count` 0
//! and `next-attempt-at`, and to the ledger as PENDING; a permanent one (HTTP 4xx,
//! a poison record) goes to the failed topic and the ledger as FAILED. Only when
//! writing the dead letter itself fails does the invocation fail, so the whole
//! batch comes back (already-sent records are then skipped by the idempotency
//! check) and nothing is committed.

use aws_lambda_events::kafka::{KafkaEvent, KafkaRecord};
use chrono::{DateTime, Duration, Utc};
use futures::StreamExt;
use lambda_runtime::LambdaEvent;
use shared::channels::{Channel, ChannelSettings};
use shared::clock::Clock;
use shared::config::{self, TableNames, TopicNames};
use shared::dead_letter::DeadLetter;
use shared::dynamodb::{DynamoFailureLedger, DynamoIdempotencyStore};
use shared::events::{EventEnvelope, HEADER_EVENT_ID};
use shared::idempotency::{Claim, IdempotencyStore, payload_hash};
use shared::kafka::{KafkaPublisher, KafkaSettings, ProducerSettings};
use shared::kafka_event::{KafkaBatchResponse, decode_lossy, decode_record, records_by_key};
use shared::ledger::{FailureLedger, LedgerFailure, LedgerStatus};
use shared::notification::{self, ChannelRoutes, Notification};
use shared::ports::{EventPublisher, NotificationChannel};
use std::sync::Arc;

/// Why the function could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the notifier is misconfigured")]
    Config(#[source] shared::Error),
}

/// Used when the invocation has no deadline (a local call).
const DEFAULT_LOCK: Duration = Duration::seconds(60);

/// Keys (reservations) handled at once unless `NOTIFY_CONCURRENCY` says otherwise.
pub const DEFAULT_CONCURRENCY: usize = 10;

/// A record value above this is poison: an event envelope is a few hundred bytes.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

#[derive(Clone, Debug)]
pub struct Config {
    pub tables: TableNames,
    /// The channels per event type and their settings.
    pub channels: ChannelSettings,
    /// How long a sent event is remembered, so a late redelivery is still skipped.
    pub idempotency_ttl: Duration,
    /// Where dead letters are written.
    pub kafka: KafkaSettings,
    pub producer: ProducerSettings,
    pub topics: TopicNames,
    /// The first retry's delay (`next-attempt-at`), unless the channel asks for longer.
    pub retry_delay: Duration,
    /// Keys handled at once (`NOTIFY_CONCURRENCY`, at least 1).
    pub concurrency: usize,
}

impl Config {
    pub fn from_env() -> Result<Self, Error> {
        let read = || -> Result<Config, shared::Error> {
            Ok(Config {
                tables: TableNames::from_env(),
                channels: ChannelSettings::from_env()?,
                idempotency_ttl: Duration::seconds(config::parsed(
                    "IDEMPOTENCY_TTL_SECONDS",
                    7 * 86_400i64,
                )?),
                kafka: KafkaSettings::from_env()?,
                producer: ProducerSettings::from_env()?,
                topics: TopicNames::from_env(),
                retry_delay: Duration::seconds(config::parsed("RETRY_DELAY_SECONDS", 60i64)?),
                concurrency: concurrency_from_env()?,
            })
        };
        read().map_err(Error::Config)
    }
}

/// `NOTIFY_CONCURRENCY`: keys handled at once, at least 1.
pub fn concurrency_from_env() -> Result<usize, shared::Error> {
    match config::parsed("NOTIFY_CONCURRENCY", DEFAULT_CONCURRENCY)? {
        0 => Err(shared::Error::Config(
            "NOTIFY_CONCURRENCY must be at least 1".into(),
        )),
        n => Ok(n),
    }
}

/// Where failed records go: the dead-letter and failed topics, and the ledger.
pub struct FailureSink<P, L> {
    pub publisher: P,
    pub ledger: L,
    pub topics: TopicNames,
    pub retry_delay: Duration,
}

impl<P: EventPublisher, L: FailureLedger> FailureSink<P, L> {
    /// Publishes the dead letter to the dead-letter topic, or to the failed topic
    /// when `permanent`, waits for the broker's acknowledgement, then records it in
    /// the ledger (PENDING or FAILED) under its event and channel.
    pub async fn park(
        &self,
        letter: &DeadLetter,
        permanent: bool,
        now: DateTime<Utc>,
    ) -> Result<(), shared::Error> {
        let (topic, status) = if permanent {
            (&self.topics.payment_completed_failed, LedgerStatus::Failed)
        } else {
            (&self.topics.payment_completed_dlq, LedgerStatus::Pending)
        };
        let dead = letter.to_record(topic);
        for result in self
            .publisher
            .publish_all(std::slice::from_ref(&dead))
            .await
        {
            result?;
        }
        self.ledger
            .record_failure(&LedgerFailure {
                event_id: dead.event_id.clone(),
                channel: letter.channel.clone(),
                event_type: letter.event_type(),
                status,
                error_kind: letter.error_kind.clone(),
                error_message: letter.error_message.clone(),
                topic: letter.original.topic.clone(),
                partition: letter.original.partition,
                offset: letter.original.offset,
                at: now,
            })
            .await?;
        tracing::warn!(
            event = %dead.event_id,
            channel = letter.channel.as_deref().unwrap_or("-"),
            at = %letter.original.coordinates(),
            to = %topic,
            status = status.name(),
            retry_count = letter.retry_count,
            error = %letter.error_message,
            "notification failed; dead-lettered"
        );
        Ok(())
    }
}

pub struct Notifier<C, S, P, L> {
    /// Every configured channel; `routes` says which an event type goes to.
    channels: Vec<C>,
    routes: ChannelRoutes,
    store: S,
    failures: FailureSink<P, L>,
    clock: Arc<dyn Clock>,
    idempotency_ttl: Duration,
    concurrency: usize,
}

/// The notifier as deployed: Telegram and/or Discord, DynamoDB, Kafka.
pub type LambdaNotifier =
    Notifier<Channel, DynamoIdempotencyStore, KafkaPublisher, DynamoFailureLedger>;

impl LambdaNotifier {
    pub fn from_config(
        config: &Config,
        client: aws_sdk_dynamodb::Client,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, Error> {
        let channels = config.channels.channels().map_err(Error::Config)?;
        let publisher =
            KafkaPublisher::new(&config.kafka, &config.producer).map_err(Error::Config)?;
        Ok(Notifier::new(
            channels,
            config.channels.routes.clone(),
            DynamoIdempotencyStore::new(client.clone(), config.tables.idempotency.clone()),
            FailureSink {
                publisher,
                ledger: DynamoFailureLedger::new(client, config.tables.failed_messages.clone()),
                topics: config.topics.clone(),
                retry_delay: config.retry_delay,
            },
            clock,
            config.idempotency_ttl,
        )
        .with_concurrency(config.concurrency))
    }
}

/// What happened on one channel.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    AlreadySent,
}

/// The result of one record on one channel.
#[derive(Debug)]
pub struct Delivery {
    pub channel: &'static str,
    pub outcome: Result<Outcome, shared::Error>,
}

/// What failed of one record's `notify`: the record itself (charged to
/// `record_channel`, the channel it was retried for, if any), or each channel
/// whose send failed.
pub fn failures(
    notified: Result<Vec<Delivery>, shared::Error>,
    record_channel: Option<&str>,
) -> Vec<(Option<&str>, shared::Error)> {
    match notified {
        Err(error) => vec![(record_channel, error)],
        Ok(deliveries) => deliveries
            .into_iter()
            .filter_map(|d| d.outcome.err().map(|e| (Some(d.channel), e)))
            .collect(),
    }
}

impl<C, S, P, L> Notifier<C, S, P, L>
where
    C: NotificationChannel,
    S: IdempotencyStore,
    P: EventPublisher,
    L: FailureLedger,
{
    pub fn new(
        channels: Vec<C>,
        routes: ChannelRoutes,
        store: S,
        failures: FailureSink<P, L>,
        clock: Arc<dyn Clock>,
        idempotency_ttl: Duration,
    ) -> Self {
        Notifier {
            channels,
            routes,
            store,
            failures,
            clock,
            idempotency_ttl,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }

    /// Handles up to `keys` keys at once (1: record by record).
    pub fn with_concurrency(self, keys: usize) -> Self {
        Notifier {
            concurrency: keys.max(1),
            ..self
        }
    }

    /// Handles every record, keys concurrently and each key's records in order;
    /// a failed one is dead-lettered (once per failed channel) and the batch goes
    /// on. Fails only when a dead letter cannot be written: after every other key
    /// has finished, so the redelivered batch finds their keys COMPLETED rather
    /// than held by an abandoned send.
    pub async fn handle(
        &self,
        event: LambdaEvent<KafkaEvent>,
    ) -> Result<KafkaBatchResponse, lambda_runtime::Error> {
        let deadline = shared::clock::deadline_from_millis(event.context.deadline);
        // The futures are made before the stream, not by a `map` closure in it:
        // a closure over borrowed records makes the handler's future not `Send`.
        let keys: Vec<_> = records_by_key(&event.payload)
            .into_iter()
            .map(|group| self.handle_in_order(group, deadline))
            .collect();
        let outcomes: Vec<Result<(), shared::Error>> = futures::stream::iter(keys)
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        match outcomes.into_iter().find_map(Result::err) {
            Some(e) => Err(Box::new(e)),
            None => Ok(KafkaBatchResponse::default()),
        }
    }

    /// The records of one key, one after the other; stops at the first whose
    /// dead letter cannot be written, so no later event of the key overtakes it.
    async fn handle_in_order(
        &self,
        records: Vec<&KafkaRecord>,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<(), shared::Error> {
        for record in records {
            let failures = failures(self.notify(record, deadline, None).await, None);
            for (channel, error) in failures {
                if let Err(e) = self.dead_letter(record, channel, &error).await {
                    tracing::error!(
                        partition = record.partition,
                        offset = record.offset,
                        error = %shared::error_chain(&e),
                        "cannot write the dead letter; failing the invocation so the batch comes back"
                    );
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Writes a record that failed (on `channel`, or before any) to the
    /// dead-letter topic (retryable) or the failed topic (permanent), then to the
    /// ledger.
    async fn dead_letter(
        &self,
        record: &KafkaRecord,
        channel: Option<&str>,
        error: &shared::Error,
    ) -> Result<(), shared::Error> {
        let now = self.clock.now();
        let delay = error
            .retry_after()
            .map_or(self.failures.retry_delay, |after| {
                after.max(self.failures.retry_delay)
            });
        let mut letter = DeadLetter::new(decode_lossy(record), error, 0, now + delay);
        if let Some(channel) = channel {
            letter = letter.on_channel(channel);
        }
        self.failures
            .park(&letter, !error.is_retryable(), now)
            .await
    }

    pub fn failures(&self) -> &FailureSink<P, L> {
        &self.failures
    }

    /// Sends the notification of one record on each channel routed for its event
    /// type, or on `only` that channel (a dead letter's retry), skipping the
    /// channels it was sent on before. `Err` when the record itself is bad; a
    /// channel's failure is in its `Delivery`.
    pub async fn notify(
        &self,
        record: &KafkaRecord,
        deadline: Option<DateTime<Utc>>,
        only: Option<&str>,
    ) -> Result<Vec<Delivery>, shared::Error> {
        let decoded = decode_record(record)?;
        let value = decoded
            .value
            .as_deref()
            .ok_or_else(|| shared::Error::MalformedEvent("the record has no value".into()))?;
        if value.len() > MAX_RECORD_BYTES {
            return Err(shared::Error::MalformedEvent(format!(
                "the record is {} bytes; the limit is {MAX_RECORD_BYTES}",
                value.len()
            )));
        }
        let envelope = EventEnvelope::from_json(value)?;
        if let Some(header) = decoded.header(HEADER_EVENT_ID)
            && header != envelope.event_id.to_string()
        {
            return Err(shared::Error::MalformedEvent(format!(
                "the event-id header {header} does not match the envelope's {}",
                envelope.event_id
            )));
        }
        let message = notification::for_event(&envelope)?;
        let wanted: Vec<&str> = match only {
            Some(channel) => vec![channel],
            None => self
                .routes
                .for_type(message.event_type)
                .iter()
                .map(|k| k.name())
                .collect(),
        };
        let hash = payload_hash(value);
        let mut deliveries = Vec::with_capacity(wanted.len());
        for name in wanted {
            let delivery = match self.channels.iter().find(|c| c.name() == name) {
                Some(channel) => Delivery {
                    channel: channel.name(),
                    outcome: self
                        .send_once(channel, &message, &hash, deadline)
                        .await
                        .inspect(|outcome| {
                            tracing::info!(
                                event = %envelope.event_id,
                                at = %decoded.coordinates(),
                                channel = channel.name(),
                                ?outcome,
                                "notification handled"
                            );
                        }),
                },
                None => Delivery {
                    channel: shared::notification::ChannelKind::parse(name)
                        .map_or("unknown", |k| k.name()),
                    outcome: Err(shared::Error::Config(format!(
                        "the notification channel {name:?} is not configured here"
                    ))),
                },
            };
            deliveries.push(delivery);
        }
        Ok(deliveries)
    }

    /// Sends `message` on `channel` unless the key of this event and channel
    /// says it was sent; releases the key when the send fails, so a retry sends.
    async fn send_once(
        &self,
        channel: &C,
        message: &Notification,
        hash: &str,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<Outcome, shared::Error> {
        let now = self.clock.now();
        let key = format!("notify:{}:{}", channel.name(), message.event_id);
        let claim = self
            .store
            .acquire(
                &key,
                hash,
                now,
                deadline.unwrap_or(now + DEFAULT_LOCK),
                now + self.idempotency_ttl,
            )
            .await?;
        if claim != Claim::Acquired {
            return Ok(Outcome::AlreadySent);
        }
        if let Err(e) = channel.send(message).await {
            if let Err(release) = self.store.release(&key).await {
                tracing::error!(error = %shared::error_chain(&release), "could not release the idempotency key; it frees itself at the lock deadline");
            }
            return Err(e);
        }
        self.store
            .complete(&key, None, now + self.idempotency_ttl)
            .await?;
        Ok(Outcome::Sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use shared::clock::SystemClock;
    use shared::dead_letter;
    use shared::domain::ReservationId;
    use shared::idempotency::InMemoryIdempotencyStore;
    use shared::kafka_event::encode_headers;
    use shared::notification::{ChannelKind, Notification};
    use shared::ports::OutboundRecord;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A channel named `name` that records what it sends, or fails every send
    /// with `failure` (retryable, retry after seconds, message).
    struct FakeChannel {
        name: &'static str,
        failure: Option<(bool, Option<u64>, &'static str)>,
        sent: Mutex<Vec<Notification>>,
        /// How long a send takes.
        latency: std::time::Duration,
        in_flight: AtomicUsize,
        most_in_flight: AtomicUsize,
    }

    impl Default for FakeChannel {
        fn default() -> Self {
            FakeChannel {
                name: "telegram",
                failure: None,
                sent: Mutex::default(),
                latency: std::time::Duration::ZERO,
                in_flight: AtomicUsize::new(0),
                most_in_flight: AtomicUsize::new(0),
            }
        }
    }

    impl FakeChannel {
        /// The events sent, in the order they were.
        fn sent_event_ids(&self) -> Vec<shared::domain::EventId> {
            self.sent
                .lock()
                .unwrap()
                .iter()
                .map(|m| m.event_id)
                .collect()
        }
    }

    impl NotificationChannel for FakeChannel {
        fn name(&self) -> &'static str {
            self.name
        }
        async fn send(&self, n: &Notification) -> Result<(), shared::Error> {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_in_flight.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(self.latency).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            if let Some((retryable, retry_after, message)) = self.failure {
                return Err(shared::Error::Channel {
                    channel: self.name,
                    retryable,
                    retry_after: retry_after.map(std::time::Duration::from_secs),
                    message: message.into(),
                    source: None,
                });
            }
            self.sent.lock().unwrap().push(n.clone());
            Ok(())
        }
    }

    #[derive(Default)]
    struct FakePublisher {
        broken: bool,
        published: Mutex<Vec<OutboundRecord>>,
    }

    impl EventPublisher for FakePublisher {
        async fn publish_all(&self, records: &[OutboundRecord]) -> Vec<Result<(), shared::Error>> {
            records
                .iter()
                .map(|r| {
                    if self.broken {
                        return Err(shared::Error::Publish {
                            event_id: r.event_id.clone(),
                            topic: r.topic.clone(),
                            source: "broker unreachable".into(),
                        });
                    }
                    self.published.lock().unwrap().push(r.clone());
                    Ok(())
                })
                .collect()
        }
    }

    #[derive(Default)]
    struct FakeLedger {
        rows: Mutex<Vec<LedgerFailure>>,
    }

    impl FailureLedger for FakeLedger {
        async fn record_failure(&self, failure: &LedgerFailure) -> Result<(), shared::Error> {
            self.rows.lock().unwrap().push(failure.clone());
            Ok(())
        }

        async fn mark_processed(
            &self,
            _: &str,
            _: Option<&str>,
            _: DateTime<Utc>,
        ) -> Result<(), shared::Error> {
            Ok(())
        }
    }

    type TestNotifier = Notifier<FakeChannel, InMemoryIdempotencyStore, FakePublisher, FakeLedger>;

    fn record(offset: i64) -> KafkaRecord {
        record_of(ReservationId::random(), offset)
    }

    /// A payment.completed record of `reservation` (its key) at `offset`.
    fn record_of(reservation: ReservationId, offset: i64) -> KafkaRecord {
        let envelope =
            shared::fixtures::payment_completed_envelope(reservation, "park@example.com", 1000);
        let mut r = KafkaRecord::default();
        r.topic = Some("payment.completed".into());
        r.offset = offset;
        r.value = Some(STANDARD.encode(envelope.to_json()));
        r.key = Some(STANDARD.encode(envelope.aggregate_id.as_bytes()));
        r.headers = encode_headers([(HEADER_EVENT_ID, envelope.event_id.to_string().as_bytes())]);
        r
    }

    fn notifier(channel: FakeChannel, broken_publisher: bool) -> TestNotifier {
        notifier_on(vec![channel], ChannelRoutes::default(), broken_publisher)
    }

    fn notifier_on(
        channels: Vec<FakeChannel>,
        routes: ChannelRoutes,
        broken_publisher: bool,
    ) -> TestNotifier {
        Notifier::new(
            channels,
            routes,
            InMemoryIdempotencyStore::default(),
            FailureSink {
                publisher: FakePublisher {
                    broken: broken_publisher,
                    ..Default::default()
                },
                ledger: FakeLedger::default(),
                topics: TopicNames::from_env(),
                retry_delay: Duration::seconds(60),
            },
            Arc::new(SystemClock),
            Duration::days(1),
        )
    }

    fn failing(retryable: bool, retry_after: Option<u64>) -> FakeChannel {
        FakeChannel {
            failure: Some((retryable, retry_after, "sandbox failure")),
            ..Default::default()
        }
    }

    /// The record with its envelope changed by `edit`.
    fn edited(mut r: KafkaRecord, edit: impl FnOnce(&mut serde_json::Value)) -> KafkaRecord {
        let bytes = STANDARD.decode(r.value.as_ref().unwrap()).unwrap();
        let mut envelope: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        edit(&mut envelope);
        r.value = Some(STANDARD.encode(envelope.to_string()));
        r
    }

    fn event_id(r: &KafkaRecord) -> shared::domain::EventId {
        let value = STANDARD.decode(r.value.as_ref().unwrap()).unwrap();
        EventEnvelope::from_json(&value).unwrap().event_id
    }

    /// Each channel's outcome, in order, with errors as their kind.
    fn outcomes(
        deliveries: Result<Vec<Delivery>, shared::Error>,
    ) -> Vec<Result<Outcome, &'static str>> {
        deliveries
            .unwrap()
            .into_iter()
            .map(|d| d.outcome.map_err(|e| e.code()))
            .collect()
    }

    fn batch(records: Vec<KafkaRecord>) -> LambdaEvent<KafkaEvent> {
        let mut event = KafkaEvent::default();
        event.records.insert("payment.completed-0".into(), records);
        LambdaEvent::new(event, lambda_runtime::Context::default())
    }

    #[tokio::test]
    async fn a_record_is_sent_once_and_its_redelivery_is_skipped() {
        let n = notifier(FakeChannel::default(), false);
        let r = record(0);
        assert_eq!(
            outcomes(n.notify(&r, None, None).await),
            [Ok(Outcome::Sent)]
        );
        assert_eq!(
            outcomes(n.notify(&r, None, None).await),
            [Ok(Outcome::AlreadySent)]
        );
        let sent = n.channels[0].sent.lock().unwrap();
        assert_eq!(sent.len(), 1);
        assert!(sent[0].text.contains("1,000원"));
    }

    #[tokio::test]
    async fn keys_are_sent_concurrently_up_to_the_bound_and_each_key_in_offset_order() {
        let n = notifier(
            FakeChannel {
                latency: std::time::Duration::from_millis(20),
                ..Default::default()
            },
            false,
        )
        .with_concurrency(3);
        let keys: Vec<ReservationId> = (0..5).map(|_| ReservationId::random()).collect();
        // Offsets interleave the keys: 0 → key 0, 1 → key 1, …
        let records: Vec<KafkaRecord> = (0..20)
            .map(|offset| record_of(keys[offset as usize % 5], offset))
            .collect();
        n.handle(batch(records.clone())).await.unwrap();

        let sent = n.channels[0].sent_event_ids();
        assert_eq!(sent.len(), 20, "each record once");
        for key in 0..5 {
            let expected: Vec<_> = records.iter().skip(key).step_by(5).map(event_id).collect();
            let got: Vec<_> = sent
                .iter()
                .filter(|e| expected.contains(e))
                .cloned()
                .collect();
            assert_eq!(got, expected, "key {key} in offset order");
        }
        assert_eq!(n.channels[0].most_in_flight.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn with_a_concurrency_of_one_records_are_sent_one_at_a_time_in_order() {
        let n = notifier(FakeChannel::default(), false).with_concurrency(1);
        let records: Vec<KafkaRecord> = (0..6).map(record).collect();
        n.handle(batch(records.clone())).await.unwrap();
        let sent = n.channels[0].sent_event_ids();
        assert_eq!(sent, records.iter().map(event_id).collect::<Vec<_>>());
        assert_eq!(n.channels[0].most_in_flight.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failed_send_releases_the_key_so_a_retry_sends() {
        let n = notifier(failing(true, None), false);
        let r = record(0);
        assert!(n.notify(&r, None, None).await.unwrap()[0].outcome.is_err());
        assert!(
            n.store
                .get(&format!("notify:telegram:{}", event_id(&r)))
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_retryable_failure_goes_to_the_dlq_and_the_ledger_as_pending_and_the_batch_goes_on() {
        let n = notifier(failing(true, None), false);
        let answer = n.handle(batch(vec![record(5), record(6)])).await.unwrap();
        assert!(answer.batch_item_failures.is_empty());
        let published = n.failures.publisher.published.lock().unwrap();
        assert_eq!(published.len(), 2, "both records were handled");
        assert!(published.iter().all(|r| r.topic == "payment.completed.dlq"));
        assert_eq!(published[0].header(dead_letter::ORIGINAL_OFFSET), Some("5"));
        assert_eq!(published[0].header(dead_letter::RETRY_COUNT), Some("0"));
        assert_eq!(
            published[0].header(dead_letter::EXCEPTION_FQCN),
            Some("shared::Error::Channel")
        );
        let rows = n.failures.ledger.rows.lock().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].status, LedgerStatus::Pending);
        assert_eq!(rows[0].event_id, published[0].event_id);
    }

    #[tokio::test]
    async fn a_permanent_failure_goes_to_the_failed_topic_and_the_ledger_as_failed() {
        let n = notifier(failing(false, None), false);
        n.handle(batch(vec![record(0)])).await.unwrap();
        let published = n.failures.publisher.published.lock().unwrap();
        assert_eq!(published[0].topic, "payment.completed.failed");
        assert_eq!(
            n.failures.ledger.rows.lock().unwrap()[0].status,
            LedgerStatus::Failed
        );
    }

    #[tokio::test]
    async fn a_429_retry_after_longer_than_the_delay_sets_next_attempt_at() {
        let n = notifier(failing(true, Some(600)), false);
        let before = Utc::now();
        n.handle(batch(vec![record(0)])).await.unwrap();
        let published = n.failures.publisher.published.lock().unwrap();
        let next: DateTime<Utc> = published[0]
            .header(dead_letter::NEXT_ATTEMPT_AT)
            .unwrap()
            .parse()
            .unwrap();
        assert!(next >= before + Duration::seconds(599), "{next}");
    }

    #[tokio::test]
    async fn poison_records_go_to_the_failed_topic_with_the_reason_and_the_next_record_is_sent() {
        let mut not_base64 = record(0);
        not_base64.value = Some("%%% not base64".into());
        let mut not_json = record(1);
        not_json.value = Some(STANDARD.encode(b"not json"));
        let wrong_type = edited(record(2), |e| e["eventType"] = "Refunded".into());
        let missing_field = edited(record(3), |e| {
            e["payload"].as_object_mut().unwrap().remove("amountKrw");
        });
        let mut no_value = record(4);
        no_value.value = None;
        let mut oversized = record(5);
        oversized.value = Some(STANDARD.encode(vec![b' '; MAX_RECORD_BYTES + 1]));

        let n = notifier(FakeChannel::default(), false);
        n.handle(batch(vec![
            not_base64,
            not_json,
            wrong_type,
            missing_field,
            no_value,
            oversized,
            record(6),
        ]))
        .await
        .unwrap();
        let published = n.failures.publisher.published.lock().unwrap();
        assert_eq!(published.len(), 6);
        for dead in published.iter() {
            assert_eq!(dead.topic, "payment.completed.failed");
            assert_eq!(
                dead.header(dead_letter::EXCEPTION_FQCN),
                Some("shared::Error::MalformedEvent")
            );
        }
        assert!(
            published[0]
                .header(dead_letter::EXCEPTION_MESSAGE)
                .unwrap()
                .contains("base64")
        );
        assert_eq!(published[0].value.as_deref(), Some(&b"%%% not base64"[..]));
        assert!(
            published[2]
                .header(dead_letter::EXCEPTION_MESSAGE)
                .unwrap()
                .contains("Refunded")
        );
        let missing = published[3].header(dead_letter::EXCEPTION_MESSAGE).unwrap();
        assert!(missing.contains("amountKrw"), "{missing}");
        let too_big = published[5].header(dead_letter::EXCEPTION_MESSAGE).unwrap();
        assert!(too_big.contains("the limit is 65536"), "{too_big}");
        assert_eq!(
            n.channels[0].sent.lock().unwrap().len(),
            1,
            "the good record was sent"
        );
    }

    #[tokio::test]
    async fn when_the_dead_letter_cannot_be_written_the_invocation_fails() {
        let n = notifier(failing(true, None), true);
        assert!(n.handle(batch(vec![record(0)])).await.is_err());
        assert!(n.failures.ledger.rows.lock().unwrap().is_empty());
    }

    fn both_channels() -> ChannelRoutes {
        ChannelRoutes::all_on(&[ChannelKind::Telegram, ChannelKind::Discord])
    }

    fn discord() -> FakeChannel {
        FakeChannel {
            name: "discord",
            ..FakeChannel::default()
        }
    }

    #[tokio::test]
    async fn an_event_routed_to_both_channels_is_sent_on_each_once() {
        let n = notifier_on(
            vec![FakeChannel::default(), discord()],
            both_channels(),
            false,
        );
        let r = record(0);
        assert_eq!(
            outcomes(n.notify(&r, None, None).await),
            [Ok(Outcome::Sent), Ok(Outcome::Sent)]
        );
        assert_eq!(
            outcomes(n.notify(&r, None, None).await),
            [Ok(Outcome::AlreadySent), Ok(Outcome::AlreadySent)]
        );
        assert_eq!(n.channels[0].sent.lock().unwrap().len(), 1);
        assert_eq!(n.channels[1].sent.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn routes_choose_the_channels_per_event_type() {
        let routes = ChannelRoutes {
            payment_completed: vec![ChannelKind::Discord],
            seat_hold_expired: vec![ChannelKind::Telegram],
        };
        let n = notifier_on(vec![FakeChannel::default(), discord()], routes, false);
        n.notify(&record(0), None, None).await.unwrap();
        assert!(n.channels[0].sent.lock().unwrap().is_empty());
        assert_eq!(n.channels[1].sent.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn one_channel_failing_dead_letters_that_channel_only_and_its_retry_does_not_resend_the_other()
     {
        let broken_discord = FakeChannel {
            failure: Some((true, None, "discord down")),
            ..discord()
        };
        let n = notifier_on(
            vec![FakeChannel::default(), broken_discord],
            both_channels(),
            false,
        );
        let r = record(9);
        n.handle(batch(vec![r.clone()])).await.unwrap();
        {
            let published = n.failures.publisher.published.lock().unwrap();
            assert_eq!(published.len(), 1, "one dead letter, for discord");
            assert_eq!(
                published[0].header(dead_letter::NOTIFICATION_CHANNEL),
                Some("discord")
            );
            let rows = n.failures.ledger.rows.lock().unwrap();
            assert_eq!(rows[0].channel.as_deref(), Some("discord"));
        }
        // The redelivered record: Telegram is skipped, Discord is tried again.
        assert_eq!(
            outcomes(n.notify(&r, None, None).await),
            [Ok(Outcome::AlreadySent), Err("CHANNEL_FAILED")]
        );
        // A retry of the dead letter goes to Discord only.
        let retry = n.notify(&r, None, Some("discord")).await.unwrap();
        assert_eq!(retry.len(), 1);
        assert_eq!(retry[0].channel, "discord");
        assert_eq!(
            n.channels[0].sent.lock().unwrap().len(),
            1,
            "telegram sent once"
        );
    }

    #[tokio::test]
    async fn a_retry_for_a_channel_not_configured_here_fails_for_good_and_says_so() {
        let n = notifier(FakeChannel::default(), false);
        let retry = n.notify(&record(0), None, Some("discord")).await.unwrap();
        let error = retry[0].outcome.as_ref().unwrap_err();
        assert!(!error.is_retryable());
        assert!(error.to_string().contains("not configured"), "{error}");
        assert!(n.channels[0].sent.lock().unwrap().is_empty());
    }
}
