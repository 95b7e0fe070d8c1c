//! Sending one record's notification on its channels, each at most once.

use super::letter::Letter;
use crate::Error;
use crate::clock::Clock;
use crate::config::ConfigError;
use crate::idempotency::{Claim, IdempotencyStore};
use crate::kafka_event::DecodedRecord;
use crate::notification::{ChannelKind, ChannelRoutes, Notification};
use crate::ports::NotificationChannel;
use chrono::{DateTime, Duration, Utc};
use std::sync::Arc;

/// How long a send holds its key when the invocation has no deadline (a local call).
pub const DEFAULT_LOCK: Duration = Duration::seconds(60);

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

impl<C: NotificationChannel, S: IdempotencyStore> Deliverer<C, S> {
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
        let mut deliveries = Vec::with_capacity(wanted.len());
        for kind in wanted {
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
            deliveries.push(Delivery {
                channel: kind,
                outcome,
            });
        }
        deliveries
    }

    /// Sends the letter's message on `channel` unless the key of this event and
    /// channel says it was sent; releases the key when the send fails, so a
    /// retry sends.
    async fn send_once(
        &self,
        channel: &C,
        letter: &Letter,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<Outcome, Error> {
        let now = self.clock.now();
        let message: &Notification = &letter.notification;
        let key = format!("notify:{}:{}", channel.kind().name(), message.event_id);
        let claim = self
            .store
            .acquire(
                &key,
                &letter.payload_hash,
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
                tracing::error!(error = %crate::error_chain(&release), "could not release the idempotency key; it frees itself at the lock deadline");
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
}
