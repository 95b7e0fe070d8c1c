//! Sending one record's notification on its channels, each at most once.

use super::letter::Letter;
use crate::clock::Clock;
use crate::config::ConfigError;
use crate::dead_letter::DeadLetter;
use crate::delivery::Destination;
use crate::error::AMBIGUOUS_SEND_KIND;
use crate::idempotency::{Claim, IdempotencyStore};
use crate::kafka_event::DecodedRecord;
use crate::metrics;
use crate::notification::{AmbiguousSendPolicy, ChannelKind, ChannelRoutes, Notification};
use crate::{Error, InfraError};
use chrono::{DateTime, Duration, Utc};
use std::sync::Arc;

/// How long a send holds its key when the invocation has no deadline (a local call).
pub const DEFAULT_LOCK: Duration = Duration::seconds(60);

/// What the key of a parked ambiguous send holds: the send may have reached
/// the customer, so nothing sends it again until an operator reopens the key
/// (`ops failed redrive` does, for this answer only).
pub const PARKED_AMBIGUOUS: &str = "PARKED: the send may have reached the customer";

/// The idempotency key of one event's send on one channel.
pub fn send_key(channel: ChannelKind, event_id: impl std::fmt::Display) -> String {
    format!("notify:{}:{event_id}", channel.name())
}

/// An operator's word that a send parked as ambiguous never reached the
/// customer: reopens its key, so the re-driven letter is sent. Answers whether
/// it did: not for a letter parked for another reason, nor for a key already
/// reopened or expired.
pub async fn reopen_parked_send(
    store: &impl IdempotencyStore,
    letter: &DeadLetter,
) -> Result<bool, Error> {
    match letter.channel {
        Some(channel) if letter.error_kind == AMBIGUOUS_SEND_KIND => {
            let key = send_key(channel, letter.event_id());
            store.release_completed_with(&key, PARKED_AMBIGUOUS).await
        }
        _ => Ok(false),
    }
}

/// Takes the key of a letter's send: locked until the invocation's deadline
/// (or [`DEFAULT_LOCK`] from now), remembered `ttl` once done.
pub(super) async fn take_key<S: IdempotencyStore>(
    store: &S,
    key: &str,
    letter: &Letter,
    deadline: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    ttl: Duration,
) -> Result<Claim, Error> {
    store
        .acquire(
            key,
            &letter.payload_hash,
            now,
            deadline.unwrap_or(now + DEFAULT_LOCK),
            now + ttl,
        )
        .await
}

/// What happened on one channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// Its key says an earlier delivery sent it: not sent again.
    AlreadySent,
}

/// The result of one record on one channel.
#[derive(Debug)]
pub struct Delivery {
    pub channel: ChannelKind,
    pub outcome: Result<Outcome, Error>,
}

/// What failed of one record: the record itself (`channel` is then the channel
/// it was retried for, if any), or one channel's send.
#[derive(Debug)]
pub struct Failure {
    pub channel: Option<ChannelKind>,
    pub error: Error,
}

/// Sends notifications through the idempotency check: before sending on a
/// channel it takes `notify:<channel>:<event id>` with one conditional write,
/// after sending it marks it COMPLETED, and when the send fails it releases it.
/// A redelivered record is so never sent twice on a channel, and a channel that
/// failed is retried without the one that succeeded being sent again.
pub struct Deliverer<C, S> {
    /// Every configured channel; `routes` says which an event type goes to.
    channels: Vec<C>,
    routes: ChannelRoutes,
    store: S,
    clock: Arc<dyn Clock>,
    /// How long a sent event is remembered, so a late redelivery is still skipped.
    idempotency_ttl: Duration,
}

impl<C: Destination, S: IdempotencyStore> Deliverer<C, S> {
    pub fn new(
        channels: Vec<C>,
        routes: ChannelRoutes,
        store: S,
        clock: Arc<dyn Clock>,
        idempotency_ttl: Duration,
    ) -> Self {
        Deliverer {
            channels,
            routes,
            store,
            clock,
            idempotency_ttl,
        }
    }

    pub fn channels(&self) -> &[C] {
        &self.channels
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Delivers one record: on each channel routed for its event type, or on
    /// `only` that channel (a dead letter's retry). Answers what failed: nothing
    /// when every channel has the message.
    pub async fn deliver(
        &self,
        record: &DecodedRecord,
        only: Option<ChannelKind>,
        deadline: Option<DateTime<Utc>>,
    ) -> Vec<Failure> {
        let letter = match Letter::parse(record) {
            Ok(letter) => {
                crate::spans::record_event(letter.envelope.event_id);
                letter
            }
            Err(error) => {
                return vec![Failure {
                    channel: only,
                    error,
                }];
            }
        };
        self.deliveries(&letter, only, deadline)
            .await
            .into_iter()
            .filter_map(|d| {
                d.outcome.err().map(|error| Failure {
                    channel: Some(d.channel),
                    error,
                })
            })
            .collect()
    }

    /// What happened to `letter` on each channel it is for, in route order.
    /// The channels are sent at the same time: each has its own key and its
    /// own failure, so one slow or failing channel never delays another.
    pub async fn deliveries(
        &self,
        letter: &Letter,
        only: Option<ChannelKind>,
        deadline: Option<DateTime<Utc>>,
    ) -> Vec<Delivery> {
        let wanted = match only {
            Some(channel) => vec![channel],
            None => self
                .routes
                .for_type(letter.notification.event_type)
                .to_vec(),
        };
        let sends: Vec<_> = wanted
            .into_iter()
            .map(|kind| self.deliver_on(kind, letter, deadline))
            .collect();
        futures::future::join_all(sends).await
    }

    /// What happened to `letter` on the channel of `kind`.
    async fn deliver_on(
        &self,
        kind: ChannelKind,
        letter: &Letter,
        deadline: Option<DateTime<Utc>>,
    ) -> Delivery {
        let outcome = match self.channels.iter().find(|c| c.kind() == kind) {
            Some(channel) => self.send_once(channel, letter, deadline).await,
            None => Err(ConfigError::setup(
                format!("send on {}", kind.name()),
                "the channel is not configured in this function",
            )
            .into()),
        };
        if let Ok(outcome) = &outcome {
            tracing::info!(channel = kind.name(), ?outcome, "notification handled");
        }
        count_send(kind, &outcome);
        Delivery {
            channel: kind,
            outcome,
        }
    }

    /// Sends the letter's message on `channel` unless the key of this event and
    /// channel says it was sent; releases the key when the send fails, so a
    /// retry sends. A send that may have reached the customer (its answer lost,
    /// or an earlier attempt that died holding the key) on a channel that parks
    /// such sends is set aside instead: see [`Self::park`].
    async fn send_once(
        &self,
        channel: &C,
        letter: &Letter,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<Outcome, Error> {
        let now = self.clock.now();
        let message: &Notification = &letter.notification;
        let kind = channel.kind();
        let key = send_key(kind, message.event_id);
        let claim = take_key(
            &self.store,
            &key,
            letter,
            deadline,
            now,
            self.idempotency_ttl,
        )
        .await?;
        let parks = channel.on_ambiguous_send() == AmbiguousSendPolicy::Park;
        match claim {
            Claim::Completed { response } if response.as_deref() == Some(PARKED_AMBIGUOUS) => {
                return Err(ambiguous(kind, "it was parked earlier", None));
            }
            Claim::Completed { .. } => return Ok(Outcome::AlreadySent),
            Claim::Reclaimed if parks => {
                let why = "an earlier attempt took this send and never finished";
                return Err(self.park(&key, kind, ambiguous(kind, why, None)).await);
            }
            Claim::Acquired | Claim::Reclaimed => {}
        }
        match channel.send(letter).await {
            Ok(()) => {
                // When the channel answered: the send's time, not the claim's.
                let sent_at = self.clock.now();
                self.store
                    .complete(&key, None, sent_at, sent_at + self.idempotency_ttl)
                    .await?;
                Ok(Outcome::Sent)
            }
            Err(e) if parks && e.maybe_delivered() => {
                Err(self.park(&key, kind, answer_lost(kind, e)).await)
            }
            Err(e) => {
                if let Err(release) = self.store.release(&key).await {
                    tracing::error!(error = %crate::error_chain(&release), "could not release the idempotency key; it frees itself at the lock deadline");
                }
                Err(e)
            }
        }
    }

    /// Sets aside a send that may have reached the customer (at most once): its
    /// key COMPLETED with [`PARKED_AMBIGUOUS`], so no redelivery or retry sends
    /// it, and `error` (non-retryable) parks its dead letter. When the key
    /// cannot be marked, the storage error is answered instead (retryable): the
    /// key stays held until its lock ends, and the retry that reclaims it parks.
    async fn park(&self, key: &str, kind: ChannelKind, error: Error) -> Error {
        let now = self.clock.now();
        let marked = self
            .store
            .complete(
                key,
                Some(PARKED_AMBIGUOUS.to_owned()),
                now,
                now + self.idempotency_ttl,
            )
            .await;
        match marked {
            Ok(()) => {
                tracing::warn!(channel = kind.name(), error = %error, "send may have reached the customer; parked, not sent again");
                error
            }
            Err(storage) => storage,
        }
    }
}

/// `Sends` of `channel` that went out (`sent`) or were not repeated
/// (`duplicate_skipped`), and `RateLimited` for a channel that asked us to
/// wait. A failed send is counted where its dead letter goes (the sink).
pub(super) fn count_send(channel: ChannelKind, outcome: &Result<Outcome, Error>) {
    let sends = |outcome| {
        metrics::count(
            "Sends",
            &[("channel", channel.name()), ("outcome", outcome)],
            1,
        )
    };
    match outcome {
        Ok(Outcome::Sent) => sends("sent"),
        Ok(Outcome::AlreadySent) => sends("duplicate_skipped"),
        Err(e) if e.retry_after().is_some() => {
            metrics::count("RateLimited", &[("channel", channel.name())], 1);
        }
        Err(_) => {}
    }
}

/// The error of a parked send that may have reached the customer.
fn ambiguous(kind: ChannelKind, why: &str, cause: Option<Error>) -> Error {
    Error::from(InfraError::AmbiguousSend {
        channel: kind.name(),
        message: why.to_owned(),
        source: cause.map(|e| Box::new(e) as _),
    })
}

/// The channel's failure `error`, whose answer was lost, as a parked send: its
/// message and cause kept.
fn answer_lost(kind: ChannelKind, error: Error) -> Error {
    match error {
        Error::Infra(InfraError::Channel {
            message, source, ..
        }) => Error::from(InfraError::AmbiguousSend {
            channel: kind.name(),
            message,
            source,
        }),
        other => ambiguous(kind, "its answer was lost", Some(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::domain::ReservationId;
    use crate::fakes::FakeChannel;
    use crate::idempotency::InMemoryIdempotencyStore;

    type TestDeliverer = Deliverer<FakeChannel, InMemoryIdempotencyStore>;

    fn deliverer(channels: Vec<FakeChannel>, routes: ChannelRoutes) -> TestDeliverer {
        Deliverer::new(
            channels,
            routes,
            InMemoryIdempotencyStore::default(),
            Arc::new(SystemClock),
            Duration::days(1),
        )
    }

    fn record() -> DecodedRecord {
        let envelope = crate::fixtures::payment_completed_envelope(
            ReservationId::random(),
            "deliver@example.com",
            1_000,
        );
        crate::fixtures::record_of(&envelope, "payment.completed", 0)
    }

    #[tokio::test]
    async fn an_events_channels_are_sent_at_the_same_time_and_answered_in_route_order() {
        let telegram = FakeChannel::telegram().with_latency(std::time::Duration::from_millis(50));
        let discord = FakeChannel::discord()
            .with_latency(std::time::Duration::from_millis(50))
            .counted_with(&telegram);
        let d = deliverer(vec![telegram, discord], both_channels());
        let letter = Letter::parse(&record()).unwrap();
        let deliveries = d.deliveries(&letter, None, None).await;
        let channels: Vec<ChannelKind> = deliveries.iter().map(|d| d.channel).collect();
        assert_eq!(channels, [ChannelKind::Telegram, ChannelKind::Discord]);
        assert!(deliveries.iter().all(|d| d.outcome.is_ok()));
        assert_eq!(d.channels()[0].most_in_flight(), 2, "both sends at once");
    }

    fn both_channels() -> ChannelRoutes {
        ChannelRoutes::all_on(&[ChannelKind::Telegram, ChannelKind::Discord])
    }

    /// Each channel's outcome, in order, with errors as their code.
    async fn outcomes(
        d: &TestDeliverer,
        record: &DecodedRecord,
        only: Option<ChannelKind>,
    ) -> Vec<(ChannelKind, Result<Outcome, &'static str>)> {
        let letter = Letter::parse(record).unwrap();
        d.deliveries(&letter, only, None)
            .await
            .into_iter()
            .map(|d| (d.channel, d.outcome.map_err(|e| e.code())))
            .collect()
    }

    #[tokio::test]
    async fn a_record_is_sent_once_and_its_redelivery_is_skipped() {
        let d = deliverer(vec![FakeChannel::telegram()], ChannelRoutes::default());
        let r = record();
        let telegram = ChannelKind::Telegram;
        assert_eq!(
            outcomes(&d, &r, None).await,
            [(telegram, Ok(Outcome::Sent))]
        );
        assert_eq!(
            outcomes(&d, &r, None).await,
            [(telegram, Ok(Outcome::AlreadySent))]
        );
        let sent = d.channels()[0].sent();
        assert_eq!(sent.len(), 1);
        assert!(sent[0].text.contains("1,000원"));
    }

    #[tokio::test]
    async fn a_failed_send_releases_the_key_and_the_retry_sends() {
        let d = deliverer(
            vec![FakeChannel::telegram().failing_for(1, true, None)],
            ChannelRoutes::default(),
        );
        let r = record();
        let failures = d.deliver(&r, None, None).await;
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].channel, Some(ChannelKind::Telegram));
        let event_id = Letter::parse(&r).unwrap().notification.event_id;
        assert!(
            d.store()
                .get(&format!("notify:telegram:{event_id}"))
                .is_none()
        );
        assert!(
            d.deliver(&r, None, None).await.is_empty(),
            "the retry sends"
        );
        assert_eq!(d.channels()[0].sent().len(), 1);
    }

    #[tokio::test]
    async fn an_event_routed_to_both_channels_is_sent_on_each_once() {
        let d = deliverer(
            vec![FakeChannel::telegram(), FakeChannel::discord()],
            both_channels(),
        );
        let r = record();
        assert!(d.deliver(&r, None, None).await.is_empty());
        assert!(d.deliver(&r, None, None).await.is_empty());
        assert_eq!(d.channels()[0].sent().len(), 1);
        assert_eq!(d.channels()[1].sent().len(), 1);
    }

    #[tokio::test]
    async fn routes_choose_the_channels_per_event_type() {
        let routes = ChannelRoutes {
            payment_completed: vec![ChannelKind::Discord],
            seat_hold_expired: vec![ChannelKind::Telegram],
        };
        let d = deliverer(
            vec![FakeChannel::telegram(), FakeChannel::discord()],
            routes,
        );
        assert!(d.deliver(&record(), None, None).await.is_empty());
        assert!(d.channels()[0].sent().is_empty());
        assert_eq!(d.channels()[1].sent().len(), 1);
    }

    #[tokio::test]
    async fn one_channel_failing_fails_that_channel_only_and_its_retry_does_not_resend_the_other() {
        let d = deliverer(
            vec![
                FakeChannel::telegram(),
                FakeChannel::discord().failing_for(usize::MAX, true, None),
            ],
            both_channels(),
        );
        let r = record();
        let failures = d.deliver(&r, None, None).await;
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].channel, Some(ChannelKind::Discord));
        // The redelivered record: Telegram is skipped, Discord is tried again.
        assert_eq!(
            outcomes(&d, &r, None).await,
            [
                (ChannelKind::Telegram, Ok(Outcome::AlreadySent)),
                (ChannelKind::Discord, Err("CHANNEL_FAILED"))
            ]
        );
        // A retry of the dead letter goes to Discord only.
        let retry = outcomes(&d, &r, Some(ChannelKind::Discord)).await;
        assert_eq!(retry, [(ChannelKind::Discord, Err("CHANNEL_FAILED"))]);
        assert_eq!(d.channels()[0].sent().len(), 1, "telegram sent once");
    }

    #[tokio::test]
    async fn a_retry_for_a_channel_not_configured_here_fails_for_good_and_says_so() {
        let d = deliverer(vec![FakeChannel::telegram()], ChannelRoutes::default());
        let failures = d.deliver(&record(), Some(ChannelKind::Discord), None).await;
        assert_eq!(failures[0].channel, Some(ChannelKind::Discord));
        let error = &failures[0].error;
        assert!(!error.is_retryable());
        assert!(error.to_string().contains("not configured"), "{error}");
        assert!(d.channels()[0].sent().is_empty());
    }

    #[tokio::test]
    async fn a_poison_record_fails_as_the_record_charged_to_the_channel_it_was_retried_for() {
        let d = deliverer(vec![FakeChannel::telegram()], ChannelRoutes::default());
        let mut poison = record();
        poison.value = Some(b"not json".to_vec());
        let first = d.deliver(&poison, None, None).await;
        assert_eq!(first[0].channel, None);
        assert_eq!(first[0].error.code(), "MALFORMED_EVENT");
        let retried = d.deliver(&poison, Some(ChannelKind::Telegram), None).await;
        assert_eq!(retried[0].channel, Some(ChannelKind::Telegram));
        assert!(d.channels()[0].sent().is_empty());
    }

    #[tokio::test]
    async fn a_send_whose_answer_was_lost_is_sent_again_under_the_retry_policy() {
        let d = deliverer(
            vec![FakeChannel::telegram().losing_answers(1)],
            ChannelRoutes::default(),
        );
        let r = record();
        let failures = d.deliver(&r, None, None).await;
        assert!(failures[0].error.is_retryable());
        assert!(failures[0].error.maybe_delivered());
        assert!(d.deliver(&r, None, None).await.is_empty());
        assert_eq!(d.channels()[0].sent().len(), 2, "at least once: twice");
    }

    #[tokio::test]
    async fn a_send_whose_answer_was_lost_is_parked_and_never_sent_again_under_the_park_policy() {
        let d = deliverer(
            vec![
                FakeChannel::telegram()
                    .losing_answers(1)
                    .on_ambiguous(AmbiguousSendPolicy::Park),
            ],
            ChannelRoutes::default(),
        );
        let r = record();
        let first = d.deliver(&r, None, None).await;
        assert_eq!(first[0].error.code(), "CHANNEL_AMBIGUOUS");
        assert!(!first[0].error.is_retryable(), "parked, not retried");
        let message = first[0].error.to_string();
        assert!(message.contains("ops failed redrive"), "{message}");
        // A redelivery and a retry of its letter are parked again, not sent.
        let again = d.deliver(&r, Some(ChannelKind::Telegram), None).await;
        assert_eq!(again[0].error.code(), "CHANNEL_AMBIGUOUS");
        assert_eq!(d.channels()[0].sent().len(), 1, "at most once");
        // An operator who checked reopens the key: the next delivery sends.
        let event_id = Letter::parse(&r).unwrap().notification.event_id;
        let key = send_key(ChannelKind::Telegram, event_id);
        assert!(
            d.store()
                .release_completed_with(&key, PARKED_AMBIGUOUS)
                .await
                .unwrap()
        );
        assert!(d.deliver(&r, None, None).await.is_empty());
        assert_eq!(d.channels()[0].sent().len(), 2);
    }

    #[tokio::test]
    async fn a_send_an_earlier_attempt_died_holding_is_parked_under_park_and_sent_under_retry() {
        for (policy, sends) in [
            (AmbiguousSendPolicy::Park, 0),
            (AmbiguousSendPolicy::Retry, 1),
        ] {
            let d = deliverer(
                vec![FakeChannel::telegram().on_ambiguous(policy)],
                ChannelRoutes::default(),
            );
            let r = record();
            let letter = Letter::parse(&r).unwrap();
            // An invocation took the key and died before it could finish.
            let key = send_key(ChannelKind::Telegram, letter.notification.event_id);
            let long_ago = Utc::now() - Duration::minutes(5);
            let claim = d
                .store()
                .acquire(
                    &key,
                    &letter.payload_hash,
                    long_ago,
                    long_ago + Duration::seconds(10),
                    long_ago + Duration::days(1),
                )
                .await
                .unwrap();
            assert_eq!(claim, Claim::Acquired);
            let failures = d.deliver(&r, None, None).await;
            assert_eq!(d.channels()[0].sent().len(), sends, "{policy:?}");
            assert_eq!(failures.len(), 1 - sends, "{policy:?}");
        }
    }
}
