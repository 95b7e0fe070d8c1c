//! The notifier: a Kafka event (self-managed Kafka / MSK format) of
//! `payment.completed` or `seat.hold-expired` in, the customer's Telegram message
//! out, once per event: the event id is taken in the
//! idempotency table before sending and marked COMPLETED after, so a redelivered
//! record is not sent twice.
//!
//! A record that fails does not stop the batch. A retryable failure (timeout,
//! connection error, HTTP 5xx, 429) goes to the dead-letter topic with diagnostic
//! headers, `retry-count` 0 and `next-attempt-at`, and to the ledger as PENDING; a
//! permanent one (HTTP 4xx, a poison record) goes to the failed topic and the
//! ledger as FAILED. Only when writing the dead letter itself fails does the
//! invocation fail, so the whole batch comes back (already-sent records are then
//! skipped by the idempotency check) and nothing is committed.

use aws_lambda_events::kafka::{KafkaEvent, KafkaRecord};
use chrono::{DateTime, Duration, Utc};
use lambda_runtime::LambdaEvent;
use shared::clock::Clock;
use shared::config::{self, Secret, TableNames, TopicNames};
use shared::dead_letter::DeadLetter;
use shared::dynamodb::{DynamoFailureLedger, DynamoIdempotencyStore};
use shared::events::{EventEnvelope, HEADER_EVENT_ID};
use shared::idempotency::{Claim, IdempotencyStore, payload_hash};
use shared::kafka::{KafkaPublisher, KafkaSettings, ProducerSettings};
use shared::kafka_event::{KafkaBatchResponse, decode_lossy, decode_record, records_in_order};
use shared::ledger::{FailureLedger, LedgerFailure, LedgerStatus};
use shared::notification;
use shared::ports::{EventPublisher, NotificationChannel};
use shared::telegram::{DEFAULT_API_BASE_URL, TelegramChannel};
use std::sync::Arc;

/// Why the function could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the notifier is misconfigured")]
    Config(#[source] shared::Error),
}

/// Used when the invocation has no deadline (a local call).
const DEFAULT_LOCK: Duration = Duration::seconds(60);

/// A record value above this is poison: an event envelope is a few hundred bytes.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

#[derive(Clone, Debug)]
pub struct Config {
    pub tables: TableNames,
    pub telegram_api_base_url: String,
    pub telegram_bot_token: Secret,
    pub telegram_chat_id: String,
    pub telegram_timeout: std::time::Duration,
    /// How long a sent event is remembered, so a late redelivery is still skipped.
    pub idempotency_ttl: Duration,
    /// Where dead letters are written.
    pub kafka: KafkaSettings,
    pub producer: ProducerSettings,
    pub topics: TopicNames,
    /// The first retry's delay (`next-attempt-at`), unless the channel asks for longer.
    pub retry_delay: Duration,
}

impl Config {
    pub fn from_env() -> Result<Self, Error> {
        let read = || -> Result<Config, shared::Error> {
            Ok(Config {
                tables: TableNames::from_env(),
                telegram_api_base_url: config::or_default(
                    "TELEGRAM_API_BASE_URL",
                    DEFAULT_API_BASE_URL,
                ),
                telegram_bot_token: config::secret("TELEGRAM_BOT_TOKEN")?,
                telegram_chat_id: config::required("TELEGRAM_CHAT_ID")?,
                telegram_timeout: std::time::Duration::from_millis(config::parsed(
                    "TELEGRAM_TIMEOUT_MS",
                    5_000u64,
                )?),
                idempotency_ttl: Duration::seconds(config::parsed(
                    "IDEMPOTENCY_TTL_SECONDS",
                    7 * 86_400i64,
                )?),
                kafka: KafkaSettings::from_env()?,
                producer: ProducerSettings::from_env()?,
                topics: TopicNames::from_env(),
                retry_delay: Duration::seconds(config::parsed("RETRY_DELAY_SECONDS", 60i64)?),
            })
        };
        read().map_err(Error::Config)
    }

    pub fn telegram(&self) -> Result<TelegramChannel, Error> {
        TelegramChannel::new(
            &self.telegram_api_base_url,
            self.telegram_bot_token.expose(),
            &self.telegram_chat_id,
            self.telegram_timeout,
        )
        .map_err(Error::Config)
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
    /// the ledger (PENDING or FAILED).
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
    channel: C,
    store: S,
    failures: FailureSink<P, L>,
    clock: Arc<dyn Clock>,
    idempotency_ttl: Duration,
}

/// The notifier as deployed: Telegram, DynamoDB, Kafka.
pub type LambdaNotifier =
    Notifier<TelegramChannel, DynamoIdempotencyStore, KafkaPublisher, DynamoFailureLedger>;

impl LambdaNotifier {
    pub fn from_config(
        config: &Config,
        client: aws_sdk_dynamodb::Client,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, Error> {
        let publisher =
            KafkaPublisher::new(&config.kafka, &config.producer).map_err(Error::Config)?;
        Ok(Notifier::new(
            config.telegram()?,
            DynamoIdempotencyStore::new(client.clone(), config.tables.idempotency.clone()),
            FailureSink {
                publisher,
                ledger: DynamoFailureLedger::new(client, config.tables.failed_messages.clone()),
                topics: config.topics.clone(),
                retry_delay: config.retry_delay,
            },
            clock,
            config.idempotency_ttl,
        ))
    }
}

/// What happened to one record.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    AlreadySent,
}

impl<C, S, P, L> Notifier<C, S, P, L>
where
    C: NotificationChannel,
    S: IdempotencyStore,
    P: EventPublisher,
    L: FailureLedger,
{
    pub fn new(
        channel: C,
        store: S,
        failures: FailureSink<P, L>,
        clock: Arc<dyn Clock>,
        idempotency_ttl: Duration,
    ) -> Self {
        Notifier {
            channel,
            store,
            failures,
            clock,
            idempotency_ttl,
        }
    }

    /// Handles every record; a failed one is dead-lettered and the batch goes on.
    /// Fails only when a dead letter cannot be written.
    pub async fn handle(
        &self,
        event: LambdaEvent<KafkaEvent>,
    ) -> Result<KafkaBatchResponse, lambda_runtime::Error> {
        let deadline = shared::clock::deadline_from_millis(event.context.deadline);
        for record in records_in_order(&event.payload) {
            if let Err(error) = self.notify(record, deadline).await
                && let Err(e) = self.dead_letter(record, &error).await
            {
                tracing::error!(
                    partition = record.partition,
                    offset = record.offset,
                    error = %shared::error_chain(&e),
                    "cannot write the dead letter; failing the invocation so the batch comes back"
                );
                return Err(Box::new(e));
            }
        }
        Ok(KafkaBatchResponse::default())
    }

    /// Writes a failed record to the dead-letter topic (retryable) or the failed
    /// topic (permanent), then to the ledger.
    async fn dead_letter(
        &self,
        record: &KafkaRecord,
        error: &shared::Error,
    ) -> Result<(), shared::Error> {
        let now = self.clock.now();
        let delay = error
            .retry_after()
            .map_or(self.failures.retry_delay, |after| {
                after.max(self.failures.retry_delay)
            });
        let letter = DeadLetter::new(decode_lossy(record), error, 0, now + delay);
        self.failures
            .park(&letter, !error.is_retryable(), now)
            .await
    }

    pub fn failures(&self) -> &FailureSink<P, L> {
        &self.failures
    }

    /// Sends the notification of one record, unless it was sent before.
    pub async fn notify(
        &self,
        record: &KafkaRecord,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<Outcome, shared::Error> {
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

        let now = self.clock.now();
        // Per event and channel, so a second channel never re-sends the first's.
        let key = format!("notify:{}:{}", self.channel.name(), envelope.event_id);
        let claim = self
            .store
            .acquire(
                &key,
                &payload_hash(value),
                now,
                deadline.unwrap_or(now + DEFAULT_LOCK),
                now + self.idempotency_ttl,
            )
            .await?;
        if claim != Claim::Acquired {
            tracing::info!(event = %envelope.event_id, at = %decoded.coordinates(), "already sent; skipping the redelivered record");
            return Ok(Outcome::AlreadySent);
        }
        if let Err(e) = self.channel.send(&message).await {
            if let Err(release) = self.store.release(&key).await {
                tracing::error!(error = %shared::error_chain(&release), "could not release the idempotency key; it frees itself at the lock deadline");
            }
            return Err(e);
        }
        self.store
            .complete(&key, None, now + self.idempotency_ttl)
            .await?;
        tracing::info!(
            event = %envelope.event_id,
            at = %decoded.coordinates(),
            channel = self.channel.name(),
            "notification sent"
        );
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
    use shared::notification::Notification;
    use shared::ports::OutboundRecord;
    use std::sync::Mutex;

    /// Fails the sends whose text contains one of `fail_for`, with `error`.
    #[derive(Default)]
    struct FakeChannel {
        failure: Option<(bool, Option<u64>, &'static str)>,
        sent: Mutex<Vec<Notification>>,
    }

    impl NotificationChannel for FakeChannel {
        fn name(&self) -> &'static str {
            "fake"
        }
        async fn send(&self, n: &Notification) -> Result<(), shared::Error> {
            if let Some((retryable, retry_after, message)) = self.failure {
                return Err(shared::Error::Channel {
                    channel: "fake",
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

        async fn mark_processed(&self, _: &str, _: DateTime<Utc>) -> Result<(), shared::Error> {
            Ok(())
        }
    }

    type TestNotifier = Notifier<FakeChannel, InMemoryIdempotencyStore, FakePublisher, FakeLedger>;

    fn record(offset: i64) -> KafkaRecord {
        let envelope = shared::fixtures::payment_completed_envelope(
            ReservationId::random(),
            "park@example.com",
            1000,
        );
        let mut r = KafkaRecord::default();
        r.topic = Some("payment.completed".into());
        r.offset = offset;
        r.value = Some(STANDARD.encode(envelope.to_json()));
        r.key = Some(STANDARD.encode(envelope.aggregate_id.as_bytes()));
        r.headers = encode_headers([(HEADER_EVENT_ID, envelope.event_id.to_string().as_bytes())]);
        r
    }

    fn notifier(channel: FakeChannel, broken_publisher: bool) -> TestNotifier {
        Notifier::new(
            channel,
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

    fn batch(records: Vec<KafkaRecord>) -> LambdaEvent<KafkaEvent> {
        let mut event = KafkaEvent::default();
        event.records.insert("payment.completed-0".into(), records);
        LambdaEvent::new(event, lambda_runtime::Context::default())
    }

    #[tokio::test]
    async fn a_record_is_sent_once_and_its_redelivery_is_skipped() {
        let n = notifier(FakeChannel::default(), false);
        let r = record(0);
        assert_eq!(n.notify(&r, None).await.unwrap(), Outcome::Sent);
        assert_eq!(n.notify(&r, None).await.unwrap(), Outcome::AlreadySent);
        let sent = n.channel.sent.lock().unwrap();
        assert_eq!(sent.len(), 1);
        assert!(sent[0].text.contains("1,000원"));
    }

    #[tokio::test]
    async fn a_failed_send_releases_the_key_so_a_retry_sends() {
        let n = notifier(failing(true, None), false);
        let r = record(0);
        assert!(n.notify(&r, None).await.is_err());
        let event_id = {
            let value = STANDARD.decode(r.value.as_ref().unwrap()).unwrap();
            EventEnvelope::from_json(&value).unwrap().event_id
        };
        assert!(n.store.get(&format!("notify:fake:{event_id}")).is_none());
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
            n.channel.sent.lock().unwrap().len(),
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
}
