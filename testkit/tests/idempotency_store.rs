//! The DynamoDB idempotency store on moto: one conditional write takes a key;
//! expiry is judged from the stored timestamps, not TTL deletion.

use chrono::{DateTime, Utc};
use futures::future::join_all;
use shared::Error;
use shared::domain::Refusal;
use shared::dynamodb::DynamoIdempotencyStore;
use shared::idempotency::{Claim, IdempotencyStore, payload_hash};
use testkit::{aws, provision};

async fn store() -> DynamoIdempotencyStore {
    let aws = aws().await;
    let (tables, _) = provision(&aws, 1).await;
    DynamoIdempotencyStore::new(aws_sdk_dynamodb::Client::new(&aws), tables.idempotency)
}

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_900_000_000 + secs, 0).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_completed_key_replays_its_response_until_it_expires() {
    let s = store().await;
    let h = payload_hash(b"body");
    assert_eq!(
        s.acquire("k", &h, t(0), t(30), t(100)).await.unwrap(),
        Claim::Acquired
    );
    s.complete("k", Some("first answer".into()), t(5), t(100))
        .await
        .unwrap();
    let stored = s.get("k").await.unwrap().expect("the completed record");
    assert_eq!(stored.completed_at, Some(t(5)), "when the work was done");
    assert_eq!(
        s.acquire("k", &h, t(99), t(129), t(199)).await.unwrap(),
        Claim::Completed {
            response: Some("first answer".into())
        }
    );
    // Expired by its own timestamp, though moto (like DynamoDB's lagging TTL) kept it.
    assert_eq!(
        s.acquire("k", &h, t(100), t(130), t(200)).await.unwrap(),
        Claim::Acquired
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_in_progress_lock_is_refused_until_its_deadline_then_taken_over_and_said_so() {
    let s = store().await;
    let h = payload_hash(b"body");
    s.acquire("k", &h, t(0), t(30), t(3_600)).await.unwrap();
    assert!(matches!(
        s.acquire("k", &h, t(29), t(59), t(3_629)).await,
        Err(Error::Refused(Refusal::InProgress))
    ));
    assert_eq!(
        s.acquire("k", &h, t(30), t(60), t(3_630)).await.unwrap(),
        Claim::Reclaimed
    );
    // A record that expired is not an abandoned attempt: a fresh take.
    assert_eq!(
        s.acquire("k", &h, t(3_700), t(3_730), t(7_300))
            .await
            .unwrap(),
        Claim::Acquired
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_a_key_completed_with_the_given_answer_is_reopened() {
    let s = store().await;
    let h = payload_hash(b"body");
    for (key, answer) in [("parked", "PARKED"), ("sent", "SENT"), ("held", "")] {
        s.acquire(key, &h, t(0), t(30), t(3_600)).await.unwrap();
        if !answer.is_empty() {
            s.complete(key, Some(answer.into()), t(0), t(3_600))
                .await
                .unwrap();
        }
    }
    assert!(s.release_completed_with("parked", "PARKED").await.unwrap());
    assert!(s.get("parked").await.unwrap().is_none());
    for kept in ["sent", "held"] {
        assert!(!s.release_completed_with(kept, "PARKED").await.unwrap());
        assert!(s.get(kept).await.unwrap().is_some(), "{kept} kept");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_key_with_another_payload_is_refused() {
    let s = store().await;
    s.acquire("k", &payload_hash(b"a"), t(0), t(30), t(3_600))
        .await
        .unwrap();
    s.complete("k", None, t(0), t(3_600)).await.unwrap();
    assert!(matches!(
        s.acquire("k", &payload_hash(b"b"), t(1), t(31), t(3_601))
            .await,
        Err(Error::Refused(Refusal::IdempotencyKeyReused))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_concurrent_duplicates_exactly_one_acquires() {
    let s = store().await;
    let h = payload_hash(b"body");
    let results = join_all((0..20).map(|_| s.acquire("race", &h, t(0), t(30), t(3_600)))).await;
    let acquired = results
        .iter()
        .filter(|r| matches!(r, Ok(Claim::Acquired)))
        .count();
    assert_eq!(acquired, 1, "{results:?}");
    assert!(
        results.iter().all(|r| matches!(
            r,
            Ok(Claim::Acquired) | Err(Error::Refused(Refusal::InProgress))
        )),
        "{results:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_released_key_can_be_taken_again_at_once() {
    let s = store().await;
    let h = payload_hash(b"body");
    s.acquire("k", &h, t(0), t(30), t(3_600)).await.unwrap();
    s.release("k").await.unwrap();
    assert!(s.get("k").await.unwrap().is_none());
    assert_eq!(
        s.acquire("k", &h, t(1), t(31), t(3_601)).await.unwrap(),
        Claim::Acquired
    );
}
