//! The notifier: a Kafka event (self-managed Kafka / MSK format) of
//! `payment.completed` or `seat.hold-expired` in, the customer's message out on
//! each channel configured for the event type (Telegram, Discord or both), once
//! per event and channel (`shared::delivery`: the idempotency key
//! `notify:<channel>:<event id>`), so a redelivered record is not sent twice, and
//! a channel that failed is retried without the one that succeeded being sent again.
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
use shared::channels::Channel;
use shared::clock::Clock;
use shared::config::Vars;
use shared::dead_letter::DeadLetter;
use shared::delivery::Destination;
use shared::delivery::{DeadLetterSink, Deliverer, DeliveryConfig, Disposition, Failure, Written};
use shared::dynamodb::{DynamoFailureLedger, DynamoIdempotencyStore};
use shared::idempotency::IdempotencyStore;
use shared::kafka::{KafkaPublisher, ProducerStart};
use shared::kafka_event::{
    DecodedRecord, KafkaBatchResponse, coordinates, decode_lossy, decode_record, key_text,
    records_by_key,
};
use shared::ledger::FailureLedger;
use shared::ports::EventPublisher;
use shared::spans;
use std::sync::Arc;
use tracing::Instrument;

pub use shared::delivery::DEFAULT_CONCURRENCY;

/// Why the function could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the notifier is misconfigured")]
    Config(#[source] shared::config::ConfigError),
}

/// The first retry's delay unless `RETRY_DELAY_SECONDS` says otherwise.
pub const DEFAULT_RETRY_DELAY: Duration = Duration::seconds(60);

/// What the function reads from its variables besides the delivery's.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `RETRY_DELAY_SECONDS`: the first retry's delay (`next-attempt-at`),
    /// unless the channel asks for longer.
    pub retry_delay: Duration,
    /// `NOTIFY_CONCURRENCY`: keys handled at once, at least 1.
    pub concurrency: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            retry_delay: DEFAULT_RETRY_DELAY,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }
}

impl Settings {
    pub fn from_vars(vars: &Vars) -> Result<Self, shared::config::ConfigError> {
        Ok(Settings {
            retry_delay: vars.seconds("RETRY_DELAY_SECONDS", DEFAULT_RETRY_DELAY)?,
            concurrency: shared::delivery::concurrency(vars)?,
        })
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    /// The channels, the idempotency table, and where failures go.
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

pub struct Notifier<C, S, P, L> {
    deliverer: Deliverer<C, S>,
    sink: DeadLetterSink<P, L>,
    clock: Arc<dyn Clock>,
    retry_delay: Duration,
    concurrency: usize,
}

/// The notifier as deployed: Telegram and/or Discord, DynamoDB, Kafka.
pub type LambdaNotifier =
    Notifier<Channel, DynamoIdempotencyStore, KafkaPublisher, DynamoFailureLedger>;

impl LambdaNotifier {
    /// The notifier as deployed. Only what fails is published, so its
    /// dead-letter producer is built at the first dead letter, not at init.
    pub fn from_config(
        config: &Config,
        client: aws_sdk_dynamodb::Client,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, Error> {
        let deliverer = config
            .delivery
            .deliverer(client.clone(), clock.clone())
            .map_err(Error::Config)?;
        Notifier::with_deliverer(
            config,
            deliverer,
            client,
            clock,
            ProducerStart::AtFirstPublish,
        )
    }
}

impl<C: Destination, S: IdempotencyStore> Notifier<C, S, KafkaPublisher, DynamoFailureLedger> {
    /// `config`'s notifier sending through `deliverer`, its dead letters on
    /// Kafka (the producer built `start`) and DynamoDB: the one assembly of
    /// the deployed notifier and of those the bench compares with it.
    pub fn with_deliverer(
        config: &Config,
        deliverer: Deliverer<C, S>,
        client: aws_sdk_dynamodb::Client,
        clock: Arc<dyn Clock>,
        start: ProducerStart,
    ) -> Result<Self, Error> {
        let sink = config.delivery.sink(client, start).map_err(Error::Config)?;
        let settings = &config.settings;
        Ok(Notifier::new(deliverer, sink, clock, settings.retry_delay)
            .with_concurrency(settings.concurrency))
    }
}

/// What the notifier answers the event source: Lambda's partial-batch response
/// (always empty: a batch either fails as a whole or is done) and how many dead
/// letters could never be written and were skipped (logged with the record's
/// coordinates).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NotifierAnswer {
    #[serde(flatten)]
    pub response: KafkaBatchResponse,
    pub skipped_dead_letters: usize,
}

impl<C, S, P, L> Notifier<C, S, P, L>
where
    C: Destination,
    S: IdempotencyStore,
    P: EventPublisher,
    L: FailureLedger,
{
    pub fn new(
        deliverer: Deliverer<C, S>,
        sink: DeadLetterSink<P, L>,
        clock: Arc<dyn Clock>,
        retry_delay: Duration,
    ) -> Self {
        Notifier {
            deliverer,
            sink,
            clock,
            retry_delay,
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

    pub fn deliverer(&self) -> &Deliverer<C, S> {
        &self.deliverer
    }

    pub fn sink(&self) -> &DeadLetterSink<P, L> {
        &self.sink
    }

    /// Handles every record, keys concurrently and each key's records in order;
    /// a failed one is dead-lettered (once per failed channel) and the batch goes
    /// on. Fails only when a dead letter cannot be written: after every other key
    /// has finished, so the redelivered batch finds their keys COMPLETED rather
    /// than held by an abandoned send.
    pub async fn handle(
        &self,
        event: LambdaEvent<KafkaEvent>,
    ) -> Result<NotifierAnswer, lambda_runtime::Error> {
        let deadline = shared::clock::deadline_from_millis(event.context.deadline);
        let span = spans::invocation("notifier", &event.context.request_id);
        // The futures are made before the stream, not by a `map` closure in it:
        // a closure over borrowed records makes the handler's future not `Send`.
        let keys: Vec<_> = records_by_key(&event.payload)
            .into_iter()
            .map(|group| self.handle_in_order(group, deadline))
            .collect();
        let outcomes: Vec<Result<usize, shared::Error>> = futures::stream::iter(keys)
            .buffer_unordered(self.concurrency)
            .collect()
            .instrument(span)
            .await;
        let mut answer = NotifierAnswer::default();
        for outcome in outcomes {
            answer.skipped_dead_letters += outcome.map_err(Box::new)?;
        }
        Ok(answer)
    }

    /// The records of one key, one after the other; stops at the first whose
    /// dead letter cannot be written yet, so no later event of the key
    /// overtakes it. Answers how many dead letters were skipped for good.
    async fn handle_in_order(
        &self,
        records: Vec<&KafkaRecord>,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<usize, shared::Error> {
        let mut skipped = 0;
        for record in records {
            let span = spans::kafka_record(&coordinates(record), key_text(record).as_deref());
            let handled = self
                .handle_record(record, deadline)
                .instrument(span.clone())
                .await;
            match handled {
                Ok(n) => skipped += n,
                Err(e) => {
                    span.in_scope(|| {
                        tracing::error!(
                            error = %shared::error_chain(&e),
                            "cannot write the dead letter; failing the invocation so the batch comes back"
                        );
                    });
                    return Err(e);
                }
            }
        }
        Ok(skipped)
    }

    /// Delivers one record and dead-letters what failed of it: the record
    /// itself when it cannot be decoded, else each channel whose send failed.
    async fn handle_record(
        &self,
        record: &KafkaRecord,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<usize, shared::Error> {
        let mut skipped = 0;
        let (decoded, failures) = match decode_record(record) {
            Ok(decoded) => {
                spans::record_trace(decoded.header(shared::trace::HEADER));
                let failures = self.deliverer.deliver(&decoded, None, deadline).await;
                (decoded, failures)
            }
            Err(error) => (
                decode_lossy(record),
                vec![Failure {
                    channel: None,
                    error,
                }],
            ),
        };
        for failure in failures {
            if self.dead_letter(&decoded, failure).await? == Written::Skipped {
                skipped += 1;
            }
        }
        Ok(skipped)
    }

    /// A first failure: retried after `retry_delay` (or the channel's
    /// `retry_after`, if longer) when it may succeed later, else parked.
    async fn dead_letter(
        &self,
        record: &DecodedRecord,
        failure: Failure,
    ) -> Result<Written, shared::Error> {
        let now = self.clock.now();
        let mut letter = DeadLetter::first(record.clone(), &failure.error, self.retry_delay, now);
        if let Some(channel) = failure.channel {
            letter = letter.on_channel(channel);
        }
        self.sink
            .dead_letter_or_skip(&letter, Disposition::of(&failure.error), now)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use shared::clock::SystemClock;
    use shared::config::TopicNames;
    use shared::dead_letter;
    use shared::delivery::MAX_RECORD_BYTES;
    use shared::domain::ReservationId;
    use shared::events::{EventEnvelope, HEADER_EVENT_ID};
    use shared::fakes::{CapturedLogs, FakeChannel, FakeLedger, FakePublisher};
    use shared::idempotency::InMemoryIdempotencyStore;
    use shared::kafka_event::encode_headers;
    use shared::ledger::LedgerStatus;
    use shared::notification::{ChannelKind, ChannelRoutes};

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
        let clock = Arc::new(SystemClock);
        Notifier::new(
            Deliverer::new(
                channels,
                routes,
                InMemoryIdempotencyStore::default(),
                clock.clone(),
                Duration::days(1),
            ),
            DeadLetterSink::new(
                FakePublisher::broken_if(broken_publisher),
                FakeLedger::default(),
                TopicNames::default(),
            ),
            clock,
            Duration::seconds(60),
        )
    }

    fn failing(retryable: bool, retry_after: Option<u64>) -> FakeChannel {
        FakeChannel::telegram().failing_for(
            usize::MAX,
            retryable,
            retry_after.map(std::time::Duration::from_secs),
        )
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

    fn sent_event_ids(n: &TestNotifier, channel: usize) -> Vec<shared::domain::EventId> {
        n.deliverer().channels()[channel]
            .sent()
            .iter()
            .map(|m| m.event_id)
            .collect()
    }

    fn batch(records: Vec<KafkaRecord>) -> LambdaEvent<KafkaEvent> {
        let mut event = KafkaEvent::default();
        event.records.insert("payment.completed-0".into(), records);
        LambdaEvent::new(event, lambda_runtime::Context::default())
    }

    #[tokio::test]
    async fn a_redelivered_batch_sends_each_record_once() {
        let n = notifier(FakeChannel::telegram(), false);
        let records = vec![record(0), record(1)];
        n.handle(batch(records.clone())).await.unwrap();
        n.handle(batch(records.clone())).await.unwrap();
        assert_eq!(
            sent_event_ids(&n, 0),
            records.iter().map(event_id).collect::<Vec<_>>()
        );
        assert!(n.sink().publisher().published().is_empty());
    }

    #[tokio::test]
    async fn keys_are_sent_concurrently_up_to_the_bound_and_each_key_in_offset_order() {
        let channel = FakeChannel::telegram().with_latency(std::time::Duration::from_millis(20));
        let n = notifier(channel, false).with_concurrency(3);
        let keys: Vec<ReservationId> = (0..5).map(|_| ReservationId::random()).collect();
        // Offsets interleave the keys: 0 → key 0, 1 → key 1, …
        let records: Vec<KafkaRecord> = (0..20)
            .map(|offset| record_of(keys[offset as usize % 5], offset))
            .collect();
        n.handle(batch(records.clone())).await.unwrap();

        let sent = sent_event_ids(&n, 0);
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
        assert_eq!(n.deliverer().channels()[0].most_in_flight(), 3);
    }

    #[tokio::test]
    async fn with_a_concurrency_of_one_records_are_sent_one_at_a_time_in_order() {
        let n = notifier(FakeChannel::telegram(), false).with_concurrency(1);
        let records: Vec<KafkaRecord> = (0..6).map(record).collect();
        n.handle(batch(records.clone())).await.unwrap();
        assert_eq!(
            sent_event_ids(&n, 0),
            records.iter().map(event_id).collect::<Vec<_>>()
        );
        assert_eq!(n.deliverer().channels()[0].most_in_flight(), 1);
    }

    #[tokio::test]
    async fn a_retryable_failure_goes_to_the_dlq_and_the_ledger_as_pending_and_the_batch_goes_on() {
        let n = notifier(failing(true, None), false);
        let answer = n.handle(batch(vec![record(5), record(6)])).await.unwrap();
        assert!(answer.response.batch_item_failures.is_empty());
        let published = n.sink().publisher().published();
        assert_eq!(published.len(), 2, "both records were handled");
        assert!(published.iter().all(|r| r.topic == "payment.completed.dlq"));
        assert_eq!(published[0].header(dead_letter::ORIGINAL_OFFSET), Some("5"));
        assert_eq!(published[0].header(dead_letter::RETRY_COUNT), Some("0"));
        assert_eq!(
            published[0].header(dead_letter::EXCEPTION_FQCN),
            Some("shared::Error::Channel")
        );
        let rows = n.sink().ledger().failures();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].status, LedgerStatus::Pending);
        assert_eq!(rows[0].event_id, published[0].event_id);
    }

    #[tokio::test]
    async fn a_permanent_failure_goes_to_the_failed_topic_and_the_ledger_as_failed() {
        let n = notifier(failing(false, None), false);
        n.handle(batch(vec![record(0)])).await.unwrap();
        let published = n.sink().publisher().published();
        assert_eq!(published[0].topic, "payment.completed.failed");
        assert_eq!(n.sink().ledger().failures()[0].status, LedgerStatus::Failed);
    }

    /// The next attempt of the first dead letter the notifier published.
    fn first_letters_next_attempt(n: &TestNotifier) -> DateTime<Utc> {
        n.sink().publisher().published()[0]
            .header(dead_letter::NEXT_ATTEMPT_AT)
            .unwrap()
            .parse()
            .unwrap()
    }

    #[tokio::test]
    async fn a_429_retry_after_longer_than_the_delay_sets_next_attempt_at() {
        let n = notifier(failing(true, Some(600)), false);
        let before = Utc::now();
        n.handle(batch(vec![record(0)])).await.unwrap();
        let next = first_letters_next_attempt(&n);
        assert!(next >= before + Duration::seconds(599), "{next}");
    }

    #[tokio::test]
    async fn a_429_asking_for_years_is_retried_within_the_hour_instead_of_overflowing() {
        let n = notifier(failing(true, Some(1_000_000_000_000)), false);
        let before = Utc::now();
        n.handle(batch(vec![record(0)])).await.unwrap();
        let next = first_letters_next_attempt(&n);
        assert!(next <= Utc::now() + Duration::hours(1), "{next}");
        assert!(next >= before + Duration::minutes(59), "{next}");
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

        let n = notifier(FakeChannel::telegram(), false);
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
        let published = n.sink().publisher().published();
        assert_eq!(published.len(), 6);
        for dead in published.iter() {
            assert_eq!(dead.topic, "payment.completed.failed");
            assert_eq!(
                dead.header(dead_letter::EXCEPTION_FQCN),
                Some("shared::Error::MalformedEvent")
            );
            assert_eq!(dead.header(dead_letter::NOTIFICATION_CHANNEL), None);
        }
        let reason = |i: usize| published[i].header(dead_letter::EXCEPTION_MESSAGE).unwrap();
        assert!(reason(0).contains("base64"));
        assert_eq!(published[0].value.as_deref(), Some(&b"%%% not base64"[..]));
        assert!(reason(2).contains("Refunded"));
        assert!(reason(3).contains("amountKrw"), "{}", reason(3));
        assert!(reason(5).contains("the limit is 65536"), "{}", reason(5));
        assert_eq!(sent_event_ids(&n, 0).len(), 1, "the good record was sent");
    }

    #[tokio::test]
    async fn when_the_dead_letter_cannot_be_written_the_invocation_fails() {
        let n = notifier(failing(true, None), true);
        assert!(n.handle(batch(vec![record(0)])).await.is_err());
        assert!(n.sink().ledger().failures().is_empty());
    }

    #[tokio::test]
    async fn one_channel_failing_dead_letters_that_channel_only() {
        let broken_discord = FakeChannel::discord().failing_for(usize::MAX, true, None);
        let n = notifier_on(
            vec![FakeChannel::telegram(), broken_discord],
            ChannelRoutes::all_on(&[ChannelKind::Telegram, ChannelKind::Discord]),
            false,
        );
        n.handle(batch(vec![record(9)])).await.unwrap();
        let published = n.sink().publisher().published();
        assert_eq!(published.len(), 1, "one dead letter, for discord");
        assert_eq!(
            published[0].header(dead_letter::NOTIFICATION_CHANNEL),
            Some("discord")
        );
        let rows = n.sink().ledger().failures();
        assert_eq!(rows[0].channel, Some(ChannelKind::Discord));
        assert_eq!(sent_event_ids(&n, 0).len(), 1, "telegram sent");
    }

    #[tokio::test]
    async fn every_log_line_of_a_record_carries_the_request_and_the_records_ids() {
        let (logs, _capturing) = CapturedLogs::start();
        let n = notifier(failing(true, None), false);
        let reservation = ReservationId::random();
        let r = record_of(reservation, 5);
        let mut event = batch(vec![r.clone()]);
        event.context.request_id = "request-7".into();
        n.handle(event).await.unwrap();
        let line = logs.line_with("notification failed; dead-lettered");
        for id in [
            "request-7".to_owned(),
            "payment.completed-0@5".to_owned(),
            reservation.to_string(),
            format!("event_id={}", event_id(&r)),
        ] {
            assert!(line.contains(&id), "{id} is not in {line}");
        }
    }
}
