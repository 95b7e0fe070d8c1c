//! Idempotency, as strong as Powertools for AWS Lambda: one record per key, taken
//! INPROGRESS with one conditional write, COMPLETED with the stored response. A
//! record expires at `expires_at` (checked here, not left to DynamoDB TTL, which
//! lags); the INPROGRESS lock expires at the invocation's deadline, so a crashed or
//! timed-out invocation does not hold the key forever; a replay with the same key
//! and another payload is refused.

use crate::Error;
use crate::domain::Refusal;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdempotencyStatus {
    InProgress,
    Completed,
}

impl IdempotencyStatus {
    pub fn name(self) -> &'static str {
        match self {
            IdempotencyStatus::InProgress => "INPROGRESS",
            IdempotencyStatus::Completed => "COMPLETED",
        }
    }

    pub fn parse(text: &str) -> Result<Self, Error> {
        match text {
            "INPROGRESS" => Ok(IdempotencyStatus::InProgress),
            "COMPLETED" => Ok(IdempotencyStatus::Completed),
            other => Err(Error::corrupt(format!(
                "unknown idempotency status {other:?}"
            ))),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub key: String,
    pub status: IdempotencyStatus,
    pub payload_hash: String,
    pub expires_at: DateTime<Utc>,
    pub in_progress_until: Option<DateTime<Utc>>,
    pub response: Option<String>,
    /// When the work was done; absent while in progress and on records
    /// completed before it was kept.
    pub completed_at: Option<DateTime<Utc>>,
}

/// What taking a key found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The key is ours: do the work, then `complete` (or `release` on failure).
    Acquired,
    /// The key is ours, taken over from an attempt that held it and never
    /// finished (its lock outlived its invocation): that attempt may have done
    /// the work, or part of it.
    Reclaimed,
    /// The work was done before: here is its stored response.
    Completed { response: Option<String> },
}

/// The SHA-256 of a payload, hex: what a replay is compared by.
pub fn payload_hash(payload: &[u8]) -> String {
    hex::encode(Sha256::digest(payload))
}

impl IdempotencyRecord {
    /// True when a new request may take this key over: the record expired, or its
    /// INPROGRESS lock outlived the invocation that took it.
    pub fn is_stale(&self, now: DateTime<Utc>) -> bool {
        self.expires_at <= now || self.is_abandoned(now)
    }

    /// True when an attempt took the key and never finished: its INPROGRESS
    /// lock outlived the invocation, and the record has not expired.
    pub fn is_abandoned(&self, now: DateTime<Utc>) -> bool {
        self.expires_at > now
            && self.status == IdempotencyStatus::InProgress
            && self.in_progress_until.is_some_and(|until| until <= now)
    }

    /// What a live record means to a request with `payload_hash`.
    pub fn judge(&self, payload_hash: &str) -> Result<Claim, Error> {
        if self.payload_hash != payload_hash {
            return Err(Refusal::IdempotencyKeyReused.into());
        }
        match self.status {
            IdempotencyStatus::InProgress => Err(Refusal::InProgress.into()),
            IdempotencyStatus::Completed => Ok(Claim::Completed {
                response: self.response.clone(),
            }),
        }
    }
}

/// Idempotency records, keyed by a caller-chosen key.
pub trait IdempotencyStore: Send + Sync {
    /// Takes `key` as INPROGRESS until `in_progress_until`, with one conditional
    /// write. Answers `Completed` for finished work with the same payload; fails
    /// with `InProgress` while another invocation holds the key and with
    /// `IdempotencyKeyReused` for another payload.
    fn acquire(
        &self,
        key: &str,
        payload_hash: &str,
        now: DateTime<Utc>,
        in_progress_until: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<Claim, Error>> + Send;

    /// Marks the key COMPLETED at `completed_at` with the response a replay gets.
    fn complete(
        &self,
        key: &str,
        response: Option<String>,
        completed_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Gives the key up after a failure, so a retry can do the work.
    fn release(&self, key: &str) -> impl Future<Output = Result<(), Error>> + Send;

    /// Gives the key up only when it is COMPLETED with `response` (an
    /// operator reopening work that was set aside); answers whether it did.
    fn release_completed_with(
        &self,
        key: &str,
        response: &str,
    ) -> impl Future<Output = Result<bool, Error>> + Send;
}

/// An in-memory store for unit tests of the handlers' logic.
#[derive(Debug, Default)]
pub struct InMemoryIdempotencyStore {
    records: Mutex<HashMap<String, IdempotencyRecord>>,
}

impl InMemoryIdempotencyStore {
    pub fn get(&self, key: &str) -> Option<IdempotencyRecord> {
        self.lock().get(key).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, IdempotencyRecord>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl IdempotencyStore for InMemoryIdempotencyStore {
    async fn acquire(
        &self,
        key: &str,
        payload_hash: &str,
        now: DateTime<Utc>,
        in_progress_until: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<Claim, Error> {
        let mut records = self.lock();
        if let Some(existing) = records.get(key).filter(|r| !r.is_stale(now)) {
            return existing.judge(payload_hash);
        }
        let abandoned = records.get(key).is_some_and(|r| r.is_abandoned(now));
        records.insert(
            key.to_owned(),
            IdempotencyRecord {
                key: key.to_owned(),
                status: IdempotencyStatus::InProgress,
                payload_hash: payload_hash.to_owned(),
                expires_at,
                in_progress_until: Some(in_progress_until),
                response: None,
                completed_at: None,
            },
        );
        Ok(if abandoned {
            Claim::Reclaimed
        } else {
            Claim::Acquired
        })
    }

    async fn complete(
        &self,
        key: &str,
        response: Option<String>,
        completed_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), Error> {
        let mut records = self.lock();
        let record = records
            .get_mut(key)
            .ok_or_else(|| Error::corrupt(format!("idempotency key {key} vanished")))?;
        record.status = IdempotencyStatus::Completed;
        record.response = response;
        record.completed_at = Some(completed_at);
        record.expires_at = expires_at;
        record.in_progress_until = None;
        Ok(())
    }

    async fn release(&self, key: &str) -> Result<(), Error> {
        self.lock().remove(key);
        Ok(())
    }

    async fn release_completed_with(&self, key: &str, response: &str) -> Result<bool, Error> {
        let mut records = self.lock();
        let matches = records.get(key).is_some_and(|r| {
            r.status == IdempotencyStatus::Completed && r.response.as_deref() == Some(response)
        });
        if matches {
            records.remove(key);
        }
        Ok(matches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[tokio::test]
    async fn the_first_request_acquires_and_a_replay_gets_the_stored_response() {
        let store = InMemoryIdempotencyStore::default();
        let h = payload_hash(b"{}");
        assert_eq!(
            store.acquire("k", &h, t(0), t(30), t(3600)).await.unwrap(),
            Claim::Acquired
        );
        store
            .complete("k", Some("answer".into()), t(0), t(3600))
            .await
            .unwrap();
        assert_eq!(
            store.acquire("k", &h, t(1), t(31), t(3601)).await.unwrap(),
            Claim::Completed {
                response: Some("answer".into())
            }
        );
    }

    #[tokio::test]
    async fn a_concurrent_duplicate_is_told_in_progress() {
        let store = InMemoryIdempotencyStore::default();
        let h = payload_hash(b"{}");
        store.acquire("k", &h, t(0), t(30), t(3600)).await.unwrap();
        assert!(matches!(
            store.acquire("k", &h, t(1), t(31), t(3601)).await,
            Err(Error::Refused(Refusal::InProgress))
        ));
    }

    #[tokio::test]
    async fn a_lock_past_the_invocation_deadline_is_taken_over_and_says_so() {
        let store = InMemoryIdempotencyStore::default();
        let h = payload_hash(b"{}");
        store.acquire("k", &h, t(0), t(30), t(3600)).await.unwrap();
        assert_eq!(
            store.acquire("k", &h, t(30), t(60), t(3630)).await.unwrap(),
            Claim::Reclaimed
        );
    }

    #[tokio::test]
    async fn only_a_key_completed_with_the_given_answer_is_reopened() {
        let store = InMemoryIdempotencyStore::default();
        let h = payload_hash(b"{}");
        for (key, answer) in [("parked", "PARKED"), ("sent", "SENT")] {
            store.acquire(key, &h, t(0), t(30), t(3600)).await.unwrap();
            store
                .complete(key, Some(answer.into()), t(0), t(3600))
                .await
                .unwrap();
        }
        assert!(
            store
                .release_completed_with("parked", "PARKED")
                .await
                .unwrap()
        );
        assert!(store.get("parked").is_none());
        assert!(
            !store
                .release_completed_with("sent", "PARKED")
                .await
                .unwrap()
        );
        assert!(store.get("sent").is_some());
    }

    #[tokio::test]
    async fn an_expired_completed_record_no_longer_deduplicates() {
        let store = InMemoryIdempotencyStore::default();
        let h = payload_hash(b"{}");
        store.acquire("k", &h, t(0), t(30), t(100)).await.unwrap();
        store.complete("k", None, t(0), t(100)).await.unwrap();
        assert_eq!(
            store
                .acquire("k", &h, t(100), t(130), t(200))
                .await
                .unwrap(),
            Claim::Acquired
        );
    }

    #[tokio::test]
    async fn the_same_key_with_another_payload_is_refused() {
        let store = InMemoryIdempotencyStore::default();
        store
            .acquire("k", &payload_hash(b"a"), t(0), t(30), t(3600))
            .await
            .unwrap();
        store.complete("k", None, t(0), t(3600)).await.unwrap();
        let err = store
            .acquire("k", &payload_hash(b"b"), t(1), t(31), t(3601))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Refused(Refusal::IdempotencyKeyReused)));
    }

    #[tokio::test]
    async fn a_released_key_can_be_acquired_again() {
        let store = InMemoryIdempotencyStore::default();
        let h = payload_hash(b"x");
        store.acquire("k", &h, t(0), t(30), t(3600)).await.unwrap();
        store.release("k").await.unwrap();
        assert_eq!(
            store.acquire("k", &h, t(1), t(31), t(3601)).await.unwrap(),
            Claim::Acquired
        );
    }

    #[test]
    fn payload_hashes_differ_for_different_payloads() {
        assert_ne!(payload_hash(b"a"), payload_hash(b"b"));
        assert_eq!(payload_hash(b"a").len(), 64);
    }
}
