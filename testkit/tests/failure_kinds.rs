//! Every kind of failure against the real Telegram sandbox over HTTP: where the
//! record ends up, with which headers, and that the next record of the same
//! reservation (handled after it, in offset order) is still sent.

use chrono::{DateTime, Duration, Utc};
use local_runner::notification_sandbox::FailurePlan;
use rdkafka::message::Message;
use shared::dead_letter;
use shared::ledger::LedgerStatus;
use shared::notification::ChannelKind;
use std::time::Duration as StdDuration;
use testkit::{CHAT_ID, DirectNotifier, consume, header, kafka};

struct Expected {
    permanent: bool,
    error_contains: &'static str,
}

/// Two records of one reservation: the second is sent after the first.
fn two_records_of_one_reservation(
    n: &DirectNotifier,
) -> Vec<aws_lambda_events::kafka::KafkaRecord> {
    let reservation = shared::domain::ReservationId::random();
    vec![
        n.payment_record_of(reservation, 0),
        n.payment_record_of(reservation, 1),
    ]
}

/// Sends two records of one reservation; the first meets `plan`.
async fn first_of_two_fails(plan: FailurePlan, expected: Expected, telegram_timeout: StdDuration) {
    let n = DirectNotifier::start(Duration::seconds(60), telegram_timeout).await;
    n.sandbox.fail_next(plan);
    let before = Utc::now();
    let answer = n.deliver(two_records_of_one_reservation(&n)).await.unwrap();
    assert_eq!(answer["batchItemFailures"], serde_json::json!([]));

    let (topic, status) = if expected.permanent {
        (&n.topics.payment_completed_failed, LedgerStatus::Failed)
    } else {
        (&n.topics.payment_completed_dlq, LedgerStatus::Pending)
    };
    let dead = consume(
        &kafka().bootstrap_servers,
        topic,
        1,
        StdDuration::from_secs(30),
    )
    .await;
    assert_eq!(dead.len(), 1, "exactly the failed record");
    let record = &dead[0];
    assert_eq!(
        header(record, dead_letter::ORIGINAL_TOPIC).as_deref(),
        Some(n.topics.payment_completed.as_str())
    );
    assert_eq!(
        header(record, dead_letter::ORIGINAL_PARTITION).as_deref(),
        Some("0")
    );
    assert_eq!(
        header(record, dead_letter::ORIGINAL_OFFSET).as_deref(),
        Some("0")
    );
    assert_eq!(
        header(record, dead_letter::EXCEPTION_FQCN).as_deref(),
        Some("shared::Error::Channel")
    );
    let message = header(record, dead_letter::EXCEPTION_MESSAGE).unwrap();
    assert!(message.contains(expected.error_contains), "{message}");
    assert_eq!(
        header(record, dead_letter::RETRY_COUNT).as_deref(),
        Some("0")
    );
    assert!(record.payload().is_some());
    let event_id = header(record, "event-id").unwrap();
    assert_eq!(
        header(record, dead_letter::NOTIFICATION_CHANNEL).as_deref(),
        Some("telegram")
    );
    let entry = n
        .ledger()
        .get(&event_id, Some(ChannelKind::Telegram))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.status, status);
    assert_eq!((entry.partition, entry.offset), (0, 0));

    let next: DateTime<Utc> = header(record, dead_letter::NEXT_ATTEMPT_AT)
        .unwrap()
        .parse()
        .unwrap();
    assert!(next >= before + Duration::seconds(59), "{next}");

    let messages = n.sandbox.messages();
    assert_eq!(
        messages.len(),
        1,
        "the second record was sent: {messages:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_telegram_timeout_is_retryable() {
    first_of_two_fails(
        FailurePlan {
            delay_ms: Some(3_000),
            ..FailurePlan::fail(1, 504)
        },
        Expected {
            permanent: false,
            error_contains: "timed out",
        },
        // Well below the 3 s delay, well above an ordinary send on a loaded
        // machine (the second record's send must not time out).
        StdDuration::from_millis(1_500),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_telegram_5xx_is_retryable() {
    first_of_two_fails(
        FailurePlan::fail(1, 500),
        Expected {
            permanent: false,
            error_contains: "HTTP 500",
        },
        StdDuration::from_secs(5),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_429_is_retryable_and_its_retry_after_sets_the_next_attempt() {
    let n = DirectNotifier::start(Duration::seconds(60), StdDuration::from_secs(5)).await;
    n.sandbox.fail_next(FailurePlan {
        retry_after: Some(600),
        ..FailurePlan::fail(1, 429)
    });
    let before = Utc::now();
    n.deliver(two_records_of_one_reservation(&n)).await.unwrap();
    let dead = consume(
        &kafka().bootstrap_servers,
        &n.topics.payment_completed_dlq,
        1,
        StdDuration::from_secs(30),
    )
    .await;
    let message = header(&dead[0], dead_letter::EXCEPTION_MESSAGE).unwrap();
    assert!(
        message.contains("HTTP 429") && message.contains("retry after 600 s"),
        "{message}"
    );
    let next: DateTime<Utc> = header(&dead[0], dead_letter::NEXT_ATTEMPT_AT)
        .unwrap()
        .parse()
        .unwrap();
    assert!(next >= before + Duration::seconds(600), "{next}");
    assert_eq!(n.sandbox.messages().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_400_chat_not_found_is_permanent() {
    first_of_two_fails(
        FailurePlan::fail(1, 400),
        Expected {
            permanent: true,
            error_contains: "HTTP 400",
        },
        StdDuration::from_secs(5),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_403_blocked_bot_for_the_chat_is_permanent() {
    first_of_two_fails(
        FailurePlan {
            chat_id: Some(CHAT_ID.into()),
            ..FailurePlan::fail(1, 403)
        },
        Expected {
            permanent: true,
            error_contains: "HTTP 403",
        },
        StdDuration::from_secs(5),
    )
    .await;
}
