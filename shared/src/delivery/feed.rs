//! Letters to the data platform in batches: one request for many events, each
//! through its own idempotency key (`notify:data-platform:<event id>`), so an
//! event the platform already has from this pipeline is not sent again, and a
//! batch that failed is retried event by event through the dead-letter path.
//! The platform deduplicates by event id too, so a batch whose answer was lost
//! is simply sent again: the platform gets every event exactly once.

use super::deliverer::{Outcome, count_send, send_key, take_key};
use super::letter::Letter;
use crate::clock::Clock;
use crate::data_platform::{BatchAnswer, PlatformEvent, PseudonymKey};
use crate::idempotency::{Claim, IdempotencyStore};
use crate::notification::ChannelKind;
use crate::{Error, InfraError};
use chrono::{DateTime, Duration, Utc};
use futures::{StreamExt, stream};
use std::future::Future;
use std::sync::Arc;

const PLATFORM: ChannelKind = ChannelKind::DataPlatform;
/// Idempotency keys taken (and settled) at once for one chunk.
const KEYS_AT_ONCE: usize = 16;

/// The platform's API, as the feed uses it.
pub trait PlatformApi: Send + Sync {
    /// Sends `events` in one request: the platform's answer for each, or why
    /// the request as a whole failed.
    fn send(
        &self,
        events: &[PlatformEvent],
    ) -> impl Future<Output = Result<BatchAnswer, Error>> + Send;
}

#[cfg(feature = "channels")]
impl PlatformApi for crate::channels::DataPlatformClient {
    async fn send(&self, events: &[PlatformEvent]) -> Result<BatchAnswer, Error> {
        crate::channels::DataPlatformClient::send(self, events).await
    }
}

/// Sends batches of letters to the platform through their idempotency keys.
pub struct PlatformFeed<P, S> {
    platform: P,
    pseudonyms: PseudonymKey,
    store: S,
    clock: Arc<dyn Clock>,
    idempotency_ttl: Duration,
}

/// A letter claimed for this request: its key and the platform's event.
struct Claimed {
    index: usize,
    key: String,
    event: PlatformEvent,
}

impl<P: PlatformApi, S: IdempotencyStore> PlatformFeed<P, S> {
    pub fn new(
        platform: P,
        pseudonyms: PseudonymKey,
        store: S,
        clock: Arc<dyn Clock>,
        idempotency_ttl: Duration,
    ) -> Self {
        PlatformFeed {
            platform,
            pseudonyms,
            store,
            clock,
            idempotency_ttl,
        }
    }

    /// Delivers `letters` in one request (those not delivered before): what
    /// happened to each, in the order given. A failed request fails each
    /// letter it carried with the same cause; an event the platform refuses
    /// fails alone, for good.
    pub async fn deliver(
        &self,
        letters: &[Letter],
        deadline: Option<DateTime<Utc>>,
    ) -> Vec<Result<Outcome, Error>> {
        let mut outcomes: Vec<Option<Result<Outcome, Error>>> =
            letters.iter().map(|_| None).collect();
        // The keys are taken and settled a few at a time: one round trip each,
        // and the chunk's request waits for all of them.
        let claiming: Vec<_> = letters
            .iter()
            .enumerate()
            .map(|(index, letter)| self.claim(index, letter, deadline))
            .collect();
        let claims: Vec<_> = stream::iter(claiming)
            .buffered(KEYS_AT_ONCE)
            .collect()
            .await;
        let mut claimed = Vec::new();
        for (index, claim) in claims.into_iter().enumerate() {
            match claim {
                Ok(Some(c)) => claimed.push(c),
                Ok(None) => outcomes[index] = Some(Ok(Outcome::AlreadySent)),
                Err(e) => outcomes[index] = Some(Err(e)),
            }
        }
        if !claimed.is_empty() {
            let events: Vec<PlatformEvent> = claimed.iter().map(|c| c.event.clone()).collect();
            let answer = self.platform.send(&events).await;
            let settling: Vec<_> = claimed.iter().map(|c| self.settle(c, &answer)).collect();
            let settled: Vec<_> = stream::iter(settling)
                .buffered(KEYS_AT_ONCE)
                .collect()
                .await;
            for (c, outcome) in claimed.iter().zip(settled) {
                outcomes[c.index] = Some(outcome);
            }
        }
        outcomes
            .into_iter()
            .map(|outcome| {
                let outcome = outcome.unwrap_or_else(|| Err(Error::corrupt("a letter was left")));
                count_send(PLATFORM, &outcome);
                outcome
            })
            .collect()
    }

    /// Takes the letter's key: `None` when it was delivered before.
    async fn claim(
        &self,
        index: usize,
        letter: &Letter,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<Option<Claimed>, Error> {
        let event = PlatformEvent::of(&letter.envelope, &self.pseudonyms)?;
        let key = send_key(PLATFORM, &event.event_id);
        let now = self.clock.now();
        let claim = take_key(
            &self.store,
            &key,
            letter,
            deadline,
            now,
            self.idempotency_ttl,
        )
        .await?;
        Ok(match claim {
            Claim::Completed { .. } => None,
            // The platform deduplicates: an attempt that died mid-send is
            // simply sent again.
            Claim::Acquired | Claim::Reclaimed => Some(Claimed { index, key, event }),
        })
    }

    /// What the platform's answer means for one claimed letter; its key is
    /// completed when the platform has the event, else given back.
    async fn settle(
        &self,
        c: &Claimed,
        answer: &Result<BatchAnswer, Error>,
    ) -> Result<Outcome, Error> {
        let result = match answer {
            Ok(answer) => answer.result_for(&c.event.event_id),
            Err(e) => Err(copy_of(e)),
        };
        let failed = match result {
            Ok(()) => {
                let at = self.clock.now();
                self.store
                    .complete(&c.key, None, at, at + self.idempotency_ttl)
                    .await?;
                return Ok(Outcome::Sent);
            }
            Err(e) => e,
        };
        if let Err(release) = self.store.release(&c.key).await {
            tracing::error!(error = %crate::error_chain(&release), "could not release the idempotency key; it frees itself at the lock deadline");
        }
        Err(failed)
    }
}

/// The request's failure, for one of the letters it carried: the same
/// retryability, wait and message.
fn copy_of(error: &Error) -> Error {
    Error::from(InfraError::Channel {
        channel: PLATFORM.name(),
        retryable: error.is_retryable(),
        maybe_delivered: error.maybe_delivered(),
        retry_after: error.retry_after().and_then(|d| d.to_std().ok()),
        message: crate::error_chain(error),
        source: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::data_platform::Rejection;
    use crate::domain::ReservationId;
    use crate::idempotency::InMemoryIdempotencyStore;
    use std::sync::Mutex;

    /// A platform that answers as told and keeps what it was sent.
    #[derive(Default)]
    struct FakePlatform {
        requests: Mutex<Vec<Vec<String>>>,
        fail: Option<(bool, u16)>,
        reject: Vec<String>,
    }

    impl PlatformApi for FakePlatform {
        async fn send(&self, events: &[PlatformEvent]) -> Result<BatchAnswer, Error> {
            let ids: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
            self.requests.lock().unwrap().push(ids.clone());
            if let Some((retryable, status)) = self.fail {
                return Err(Error::from(InfraError::Channel {
                    channel: PLATFORM.name(),
                    retryable,
                    maybe_delivered: false,
                    retry_after: None,
                    message: format!("answered HTTP {status}"),
                    source: None,
                }));
            }
            let (rejected, accepted): (Vec<_>, Vec<_>) =
                ids.into_iter().partition(|id| self.reject.contains(id));
            Ok(BatchAnswer {
                accepted,
                duplicates: vec![],
                rejected: rejected
                    .into_iter()
                    .map(|event_id| Rejection {
                        event_id,
                        reason: "unknown concert".into(),
                    })
                    .collect(),
            })
        }
    }

    fn letters(n: usize) -> Vec<Letter> {
        (0..n)
            .map(|i| {
                crate::fixtures::letter_of(&crate::fixtures::payment_completed_envelope(
                    ReservationId::random(),
                    &format!("f{i}@example.com"),
                    1_000,
                ))
            })
            .collect()
    }

    fn feed(platform: FakePlatform) -> PlatformFeed<FakePlatform, InMemoryIdempotencyStore> {
        PlatformFeed::new(
            platform,
            PseudonymKey::new(b"feed-test-pseudonym-key"),
            InMemoryIdempotencyStore::default(),
            Arc::new(SystemClock),
            Duration::days(7),
        )
    }

    fn id(letter: &Letter) -> String {
        letter.envelope.event_id.to_string()
    }

    #[tokio::test]
    async fn a_chunk_goes_in_one_request_and_a_redelivery_sends_nothing_again() {
        let feed = feed(FakePlatform::default());
        let batch = letters(3);
        let first = feed.deliver(&batch, None).await;
        assert!(
            first.iter().all(|o| matches!(o, Ok(Outcome::Sent))),
            "{first:?}"
        );
        let again = feed.deliver(&batch, None).await;
        assert!(
            again.iter().all(|o| matches!(o, Ok(Outcome::AlreadySent))),
            "{again:?}"
        );
        let requests = feed.platform.requests.lock().unwrap().clone();
        assert_eq!(requests, [batch.iter().map(id).collect::<Vec<_>>()]);
    }

    #[tokio::test]
    async fn a_refused_event_fails_alone_for_good_and_the_others_are_delivered() {
        let batch = letters(3);
        let feed = feed(FakePlatform {
            reject: vec![id(&batch[1])],
            ..FakePlatform::default()
        });
        let outcomes = feed.deliver(&batch, None).await;
        assert!(matches!(outcomes[0], Ok(Outcome::Sent)));
        assert!(matches!(outcomes[2], Ok(Outcome::Sent)));
        let refused = outcomes[1].as_ref().unwrap_err();
        assert!(!refused.is_retryable());
        assert!(crate::error_chain(refused).contains("unknown concert"));
        // Its key was given back: a re-drive once the platform is fixed sends it.
        assert!(feed.store.get(&send_key(PLATFORM, id(&batch[1]))).is_none());
    }

    #[tokio::test]
    async fn a_failed_request_fails_each_event_with_its_cause_and_keeps_no_key() {
        let batch = letters(2);
        let feed = feed(FakePlatform {
            fail: Some((true, 503)),
            ..FakePlatform::default()
        });
        let outcomes = feed.deliver(&batch, None).await;
        for (outcome, letter) in outcomes.iter().zip(&batch) {
            let error = outcome.as_ref().unwrap_err();
            assert!(error.is_retryable(), "{error}");
            assert!(crate::error_chain(error).contains("503"));
            assert!(feed.store.get(&send_key(PLATFORM, id(letter))).is_none());
        }
    }

    #[tokio::test]
    async fn an_event_without_a_customer_fails_for_good_and_the_rest_go() {
        let mut batch = letters(2);
        batch[0]
            .envelope
            .payload
            .as_object_mut()
            .unwrap()
            .remove("customer");
        let feed = feed(FakePlatform::default());
        let outcomes = feed.deliver(&batch, None).await;
        assert!(!outcomes[0].as_ref().unwrap_err().is_retryable());
        assert!(matches!(outcomes[1], Ok(Outcome::Sent)));
        let requests = feed.platform.requests.lock().unwrap().clone();
        assert_eq!(requests, [vec![id(&batch[1])]]);
    }
}
