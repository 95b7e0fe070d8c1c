//! The notifier: a Kafka event (self-managed Kafka / MSK format) in, the
//! customer's Telegram message out, once per event: the event id is taken in the
//! idempotency table before sending and marked COMPLETED after, so a redelivered
//! record is not sent twice.
//!
//! Failure handling in this version: any failure fails the invocation, so the
//! event source re-delivers the batch; records already sent are skipped by the
//! idempotency check. (The dead-letter path comes next.)

use aws_lambda_events::kafka::{KafkaEvent, KafkaRecord};
use chrono::{DateTime, Duration, Utc};
use lambda_runtime::LambdaEvent;
use shared::clock::Clock;
use shared::config::{self, Secret, TableNames};
use shared::dynamodb::DynamoIdempotencyStore;
use shared::events::{EventEnvelope, EventType, HEADER_EVENT_ID, PaymentCompleted};
use shared::idempotency::{Claim, IdempotencyStore, payload_hash};
use shared::kafka_event::{decode_record, records_in_order};
use shared::notification;
use shared::ports::NotificationChannel;
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

#[derive(Clone, Debug)]
pub struct Config {
    pub tables: TableNames,
    pub telegram_api_base_url: String,
    pub telegram_bot_token: Secret,
    pub telegram_chat_id: String,
    pub telegram_timeout: std::time::Duration,
    /// How long a sent event is remembered, so a late redelivery is still skipped.
    pub idempotency_ttl: Duration,
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

pub struct Notifier<C, S> {
    channel: C,
    store: S,
    clock: Arc<dyn Clock>,
    idempotency_ttl: Duration,
}

impl Notifier<TelegramChannel, DynamoIdempotencyStore> {
    pub fn from_config(
        config: &Config,
        client: aws_sdk_dynamodb::Client,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, Error> {
        Ok(Notifier::new(
            config.telegram()?,
            DynamoIdempotencyStore::new(client, config.tables.idempotency.clone()),
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

impl<C: NotificationChannel, S: IdempotencyStore> Notifier<C, S> {
    pub fn new(channel: C, store: S, clock: Arc<dyn Clock>, idempotency_ttl: Duration) -> Self {
        Notifier {
            channel,
            store,
            clock,
            idempotency_ttl,
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub async fn handle(
        &self,
        event: LambdaEvent<KafkaEvent>,
    ) -> Result<(), lambda_runtime::Error> {
        let deadline = DateTime::from_timestamp_millis(event.context.deadline as i64)
            .filter(|d| d.timestamp_millis() > 0);
        for record in records_in_order(&event.payload) {
            if let Err(e) = self.notify(record, deadline).await {
                tracing::error!(
                    partition = record.partition,
                    offset = record.offset,
                    error = %shared::error_chain(&e),
                    "notification failed; failing the invocation so the batch is re-delivered"
                );
                return Err(Box::new(e));
            }
        }
        Ok(())
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
        let envelope = EventEnvelope::from_json(value)?;
        if let Some(header) = decoded.header(HEADER_EVENT_ID)
            && header != envelope.event_id.to_string()
        {
            return Err(shared::Error::MalformedEvent(format!(
                "the event-id header {header} does not match the envelope's {}",
                envelope.event_id
            )));
        }
        let payment: PaymentCompleted = envelope.decode(EventType::PaymentCompleted)?;
        let message = notification::payment_completed(envelope.event_id, &payment);

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
            customer = %payment.customer.mail,
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
    use shared::domain::ReservationId;
    use shared::idempotency::InMemoryIdempotencyStore;
    use shared::kafka_event::encode_headers;
    use shared::notification::Notification;
    use std::sync::Mutex;

    #[derive(Default)]
    struct FakeChannel {
        fail: bool,
        sent: Mutex<Vec<Notification>>,
    }

    impl NotificationChannel for FakeChannel {
        fn name(&self) -> &'static str {
            "fake"
        }
        async fn send(&self, n: &Notification) -> Result<(), shared::Error> {
            if self.fail {
                return Err(shared::Error::Channel {
                    channel: "fake",
                    retryable: true,
                    message: "down".into(),
                    source: None,
                });
            }
            self.sent.lock().unwrap().push(n.clone());
            Ok(())
        }
    }

    fn record() -> KafkaRecord {
        let envelope = shared::fixtures::payment_completed_envelope(
            ReservationId::random(),
            "park@example.com",
            1000,
        );
        let mut r = KafkaRecord::default();
        r.topic = Some("payment.completed".into());
        r.value = Some(STANDARD.encode(envelope.to_json()));
        r.key = Some(STANDARD.encode(envelope.aggregate_id.as_bytes()));
        r.headers = encode_headers([(HEADER_EVENT_ID, envelope.event_id.to_string().as_bytes())]);
        r
    }

    fn notifier(fail: bool) -> Notifier<FakeChannel, InMemoryIdempotencyStore> {
        Notifier::new(
            FakeChannel {
                fail,
                ..Default::default()
            },
            InMemoryIdempotencyStore::default(),
            Arc::new(SystemClock),
            Duration::days(1),
        )
    }

    #[tokio::test]
    async fn a_record_is_sent_once_and_its_redelivery_is_skipped() {
        let n = notifier(false);
        let r = record();
        assert_eq!(n.notify(&r, None).await.unwrap(), Outcome::Sent);
        assert_eq!(n.notify(&r, None).await.unwrap(), Outcome::AlreadySent);
        let sent = n.channel.sent.lock().unwrap();
        assert_eq!(sent.len(), 1);
        assert!(sent[0].text.contains("1,000원"));
    }

    #[tokio::test]
    async fn a_failed_send_releases_the_key_so_the_redelivery_sends() {
        let n = notifier(true);
        let r = record();
        assert!(n.notify(&r, None).await.is_err());
        let event_id = {
            let value = STANDARD.decode(r.value.as_ref().unwrap()).unwrap();
            EventEnvelope::from_json(&value).unwrap().event_id
        };
        assert!(n.store.get(&format!("notify:fake:{event_id}")).is_none());
    }

    #[tokio::test]
    async fn a_record_that_is_not_an_envelope_fails() {
        let n = notifier(false);
        let mut r = record();
        r.value = Some(STANDARD.encode(b"not json"));
        assert!(matches!(
            n.notify(&r, None).await,
            Err(shared::Error::MalformedEvent(_))
        ));
    }

    #[tokio::test]
    async fn a_header_that_disagrees_with_the_envelope_fails() {
        let n = notifier(false);
        let mut r = record();
        r.headers = encode_headers([(HEADER_EVENT_ID, &b"other"[..])]);
        assert!(n.notify(&r, None).await.is_err());
    }
}
