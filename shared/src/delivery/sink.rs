//! Where a failed delivery goes: its dead letter on a topic, then its ledger
//! row. The one place that writes both, for the notifier, dlq-retry and an
//! operator's re-drive.

use crate::config::TopicNames;
use crate::dead_letter::DeadLetter;
use crate::ledger::{FailureLedger, LedgerFailure, LedgerStatus};
use crate::metrics;
use crate::notification::ChannelKind;
use crate::ports::EventPublisher;
use crate::{Error, InfraError};
use chrono::{DateTime, Utc};

/// What becomes of a failed delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// On the dead-letter topic, ledger PENDING: dlq-retry tries it again.
    Retry,
    /// On the failed topic, ledger FAILED: kept for an operator.
    Park,
}

impl Disposition {
    /// Retry what may succeed later, park what will fail the same way again.
    pub fn of(error: &Error) -> Self {
        if error.is_retryable() {
            Disposition::Retry
        } else {
            Disposition::Park
        }
    }

    /// Its outcome in the `Sends` metric.
    pub fn outcome(self) -> &'static str {
        match self {
            Disposition::Retry => "dead_lettered_retryable",
            Disposition::Park => "failed_permanent",
        }
    }
}

/// The `channel` dimension of a letter: its channel, or `record` for a record
/// that failed before any channel (as the ledger names it).
fn channel_dimension(letter: &DeadLetter) -> &'static str {
    letter.channel.map_or("record", ChannelKind::name)
}

/// What became of a dead letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    Written,
    /// It can never be written: logged and skipped.
    Skipped,
}

/// The dead-letter and failed topics, and the ledger.
pub struct DeadLetterSink<P, L> {
    publisher: P,
    ledger: L,
    topics: TopicNames,
}

impl<P: EventPublisher, L: FailureLedger> DeadLetterSink<P, L> {
    pub fn new(publisher: P, ledger: L, topics: TopicNames) -> Self {
        DeadLetterSink {
            publisher,
            ledger,
            topics,
        }
    }

    pub fn publisher(&self) -> &P {
        &self.publisher
    }

    pub fn ledger(&self) -> &L {
        &self.ledger
    }

    /// Publishes the dead letter to the dead-letter topic (`Retry`) or the
    /// failed topic (`Park`), waits for the broker's acknowledgement, then
    /// records it in the ledger (PENDING or FAILED) under its event and channel.
    /// An error means it may not be written: the caller must not let the
    /// record it came from be committed.
    pub async fn dead_letter(
        &self,
        letter: &DeadLetter,
        disposition: Disposition,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        let (topic, status) = match disposition {
            Disposition::Retry => (&self.topics.payment_completed_dlq, LedgerStatus::Pending),
            Disposition::Park => (&self.topics.payment_completed_failed, LedgerStatus::Failed),
        };
        let event_id = letter.event_id();
        self.publish(letter, topic).await?;
        self.ledger
            .record_failure(&LedgerFailure {
                event_id: event_id.clone(),
                channel: letter.channel,
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
        metrics::count(
            "Sends",
            &[
                ("channel", channel_dimension(letter)),
                ("outcome", disposition.outcome()),
            ],
            1,
        );
        tracing::warn!(
            event = %event_id,
            channel = letter.channel.map_or("-", ChannelKind::name),
            at = %letter.original.coordinates(),
            to = %topic,
            status = status.name(),
            retry_count = letter.retry_count,
            error = %letter.error_message,
            "notification failed; dead-lettered"
        );
        Ok(())
    }

    /// Publishes `letter` to `topic`; when the broker refuses it for its size,
    /// publishes it again with its value cut (headers kept, the reason added).
    async fn publish(&self, letter: &DeadLetter, topic: &str) -> Result<(), Error> {
        match self.publisher.publish_one(letter.to_record(topic)).await {
            Err(Error::Infra(InfraError::Unpublishable { .. })) => {
                tracing::warn!(event = %letter.event_id(), at = %letter.original.coordinates(), "dead letter too large for {topic}; publishing it with its value cut");
                self.publisher
                    .publish_one(letter.to_truncated_record(topic))
                    .await
            }
            other => other,
        }
    }

    /// [`Self::dead_letter`], except that a letter that can never be written
    /// (refused for good by the broker or DynamoDB, even cut) is logged with
    /// where it came from and skipped, so it cannot stall its partition: the
    /// caller counts it. A failure that may pass (throttling, a broker or
    /// table that is down) is still an error: the caller must not commit.
    pub async fn dead_letter_or_skip(
        &self,
        letter: &DeadLetter,
        disposition: Disposition,
        now: DateTime<Utc>,
    ) -> Result<Written, Error> {
        match self.dead_letter(letter, disposition, now).await {
            Ok(()) => Ok(Written::Written),
            Err(e) if !e.is_retryable() => {
                tracing::error!(
                    event = %letter.event_id(),
                    at = %letter.original.coordinates(),
                    channel = letter.channel.map_or("-", ChannelKind::name),
                    error = %crate::error_chain(&e),
                    code = e.code(),
                    "dead letter cannot be written for good; skipped (the original record is at these coordinates)"
                );
                let channel = channel_dimension(letter);
                metrics::count("DeadLettersSkipped", &[("channel", channel)], 1);
                Ok(Written::Skipped)
            }
            Err(e) => Err(e),
        }
    }

    /// A letter not yet due, back on the dead-letter topic exactly as it was
    /// (its ledger row stays PENDING): it waits at the topic's end instead of
    /// holding up the letters behind it.
    pub async fn defer(&self, letter: &DeadLetter) -> Result<(), Error> {
        tracing::debug!(event = %letter.event_id(), next_attempt_at = %letter.next_attempt_at, "dead letter not yet due; put back at the topic's end");
        self.publish(letter, &self.topics.payment_completed_dlq)
            .await
    }

    /// Closes the ledger row of a letter that a retry delivered.
    pub async fn delivered(&self, letter: &DeadLetter, now: DateTime<Utc>) -> Result<(), Error> {
        self.ledger
            .mark_processed(&letter.event_id(), letter.channel, now)
            .await
    }

    /// An operator's re-drive: the letter back on the dead-letter topic, due
    /// now with `retry-count` 0, and its ledger row PENDING again.
    pub async fn redrive(&self, letter: &DeadLetter, now: DateTime<Utc>) -> Result<(), Error> {
        let fresh = DeadLetter {
            retry_count: 0,
            next_attempt_at: now,
            ..letter.clone()
        };
        self.publish(&fresh, &self.topics.payment_completed_dlq)
            .await?;
        self.ledger
            .mark_redriven(&fresh.event_id(), letter.channel, now)
            .await
    }

    /// Where `redrive` puts letters.
    pub fn retry_topic(&self) -> &str {
        &self.topics.payment_completed_dlq
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InfraError;
    use crate::dead_letter::{NOTIFICATION_CHANNEL, RETRY_COUNT};
    use crate::domain::ReservationId;
    use crate::fakes::{FakeLedger, FakePublisher};

    fn sink(broken: bool) -> DeadLetterSink<FakePublisher, FakeLedger> {
        DeadLetterSink::new(
            FakePublisher::broken_if(broken),
            FakeLedger::default(),
            TopicNames::default(),
        )
    }

    fn letter(error: &Error) -> DeadLetter {
        let envelope =
            crate::fixtures::payment_completed_envelope(ReservationId::random(), "s@ink.io", 10);
        let original = crate::fixtures::record_of(&envelope, "payment.completed", 7);
        DeadLetter::new(original, error, 2, Utc::now()).on_channel(ChannelKind::Discord)
    }

    fn channel_down() -> Error {
        Error::from(InfraError::Channel {
            channel: "discord",
            retryable: true,
            maybe_delivered: false,
            retry_after: None,
            message: "HTTP 502".into(),
            source: None,
        })
    }

    #[test]
    fn what_may_succeed_later_is_retried_and_the_rest_parked() {
        assert_eq!(Disposition::of(&channel_down()), Disposition::Retry);
        let refused = Error::malformed("not json");
        assert_eq!(Disposition::of(&refused), Disposition::Park);
    }

    #[tokio::test]
    async fn a_retryable_letter_goes_to_the_dead_letter_topic_and_the_ledger_as_pending() {
        let s = sink(false);
        let l = letter(&channel_down());
        s.dead_letter(&l, Disposition::Retry, Utc::now())
            .await
            .unwrap();
        let published = s.publisher().published();
        assert_eq!(published[0].topic, "payment.completed.dlq");
        assert_eq!(published[0].header(NOTIFICATION_CHANNEL), Some("discord"));
        let rows = s.ledger().failures();
        assert_eq!(rows[0].status, LedgerStatus::Pending);
        assert_eq!(rows[0].channel, Some(ChannelKind::Discord));
        assert_eq!(rows[0].event_id, l.event_id());
        assert_eq!(rows[0].offset, 7);
    }

    #[tokio::test]
    async fn a_parked_letter_goes_to_the_failed_topic_and_the_ledger_as_failed() {
        let s = sink(false);
        s.dead_letter(&letter(&channel_down()), Disposition::Park, Utc::now())
            .await
            .unwrap();
        assert_eq!(
            s.publisher().published()[0].topic,
            "payment.completed.failed"
        );
        assert_eq!(s.ledger().failures()[0].status, LedgerStatus::Failed);
    }

    #[tokio::test]
    async fn when_the_topic_refuses_the_letter_no_ledger_row_is_written() {
        let s = sink(true);
        let result = s
            .dead_letter(&letter(&channel_down()), Disposition::Retry, Utc::now())
            .await;
        assert!(result.is_err());
        assert!(s.ledger().failures().is_empty());
    }

    #[tokio::test]
    async fn a_redrive_puts_the_letter_back_due_now_with_no_retries_and_the_row_pending() {
        let s = sink(false);
        let now = Utc::now();
        s.redrive(&letter(&channel_down()), now).await.unwrap();
        let published = s.publisher().published();
        assert_eq!(published[0].topic, "payment.completed.dlq");
        assert_eq!(published[0].header(RETRY_COUNT), Some("0"));
        let redriven = s.ledger().redriven();
        assert_eq!(redriven[0].1, Some(ChannelKind::Discord));
    }
}
