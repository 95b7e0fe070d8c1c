//! dlq-retry on the real stack: a notification that failed is delivered once the
//! channel is back (ledger PENDING -> PROCESSED); after the maximum number of
//! retries it is parked on the failed topic (ledger FAILED); a run never chases
//! the records it republished itself, leaves records not yet due, and stops for
//! its deadline.

use chrono::{Duration, Utc};
use dlq_retry::DlqRetry;
use e2e_tests::{BOT_TOKEN, CHAT_ID, Options, TestPipeline, aws, consume, kafka, provision, seed};
use local_runner::invoke::invoke;
use local_runner::pipeline::DlqRetrySettings;
use local_runner::telegram_sandbox::{FailurePlan, TelegramSandbox};
use rdkafka::message::{Headers, Message};
use shared::clock::SystemClock;
use shared::config::{Secret, TableNames, TopicNames};
use shared::dead_letter;
use shared::domain::ReservationId;
use shared::dynamodb::DynamoFailureLedger;
use shared::kafka::ProducerSettings;
use shared::ledger::{LedgerEntry, LedgerStatus};
use std::sync::Arc;
use std::time::Duration as StdDuration;

fn fast_retries(max_retries: u32) -> Options {
    Options {
        // Dead letters are due at once and retried every second.
        retry_delay: Duration::zero(),
        dlq_retry: DlqRetrySettings {
            interval: StdDuration::from_secs(1),
            max_retries,
            backoff_base: Duration::zero(),
            backoff_max: Duration::zero(),
        },
        ..Options::default()
    }
}

async fn wait_for_ledger(
    ledger: &DynamoFailureLedger,
    event_id: &str,
    status: LedgerStatus,
) -> LedgerEntry {
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(60);
    loop {
        if let Some(entry) = ledger.get(event_id).await.unwrap()
            && entry.status == status
        {
            return entry;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{event_id} never reached {status:?}: {:?}",
            ledger.get(event_id).await.unwrap()
        );
        tokio::time::sleep(StdDuration::from_millis(200)).await;
    }
}

/// Holds and pays; answers the event id of the PaymentCompleted, read from the outbox.
async fn pay_one(p: &TestPipeline) -> String {
    let s = seed(&p.repo, 1, 1, 100_000, 50_000).await;
    let fan = &s.users[0];
    let (_, held) = p.hold(&fan.jwt, s.seats[0].id).await;
    let (status, paid) = p
        .pay(&fan.jwt, held["reservationId"].as_str().unwrap())
        .await;
    assert_eq!(status, 200, "{paid}");
    let outbox = e2e_tests::scan(&p.dynamodb, &p.tables.outbox).await;
    assert_eq!(outbox.len(), 1);
    let item = &outbox[0];
    let start = item.find("\"eventId\": S(\"").unwrap() + "\"eventId\": S(\"".len();
    item[start..start + 36].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn telegram_down_then_back_the_retry_delivers_once_and_the_ledger_goes_to_processed() {
    let p = TestPipeline::start(fast_retries(5)).await;
    p.sandbox.fail_next(FailurePlan {
        count: 1,
        status: 503,
        retry_after: None,
    });
    let event_id = pay_one(&p).await;
    let ledger = DynamoFailureLedger::new(p.dynamodb.clone(), p.tables.failed_messages.clone());
    let entry = wait_for_ledger(&ledger, &event_id, LedgerStatus::Processed).await;
    assert_eq!(entry.attempts, 1);
    p.wait_for_messages(1, StdDuration::from_secs(30)).await;
    // Further runs find nothing more to do.
    tokio::time::sleep(StdDuration::from_secs(3)).await;
    assert_eq!(p.sandbox.messages().len(), 1);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_the_maximum_retries_the_record_is_on_the_failed_topic_and_the_ledger_says_failed() {
    let p = TestPipeline::start(fast_retries(2)).await;
    p.sandbox.fail_next(FailurePlan {
        count: 1_000,
        status: 500,
        retry_after: None,
    });
    let event_id = pay_one(&p).await;
    let ledger = DynamoFailureLedger::new(p.dynamodb.clone(), p.tables.failed_messages.clone());
    let entry = wait_for_ledger(&ledger, &event_id, LedgerStatus::Failed).await;
    // The notifier's send and two retries.
    assert_eq!(entry.attempts, 3);
    assert!(
        entry.last_error.contains("HTTP 500"),
        "{}",
        entry.last_error
    );
    let failed = consume(
        &kafka().bootstrap_servers,
        &p.topics.payment_completed_failed,
        1,
        StdDuration::from_secs(30),
    )
    .await;
    assert_eq!(failed.len(), 1);
    let retry_count = failed[0]
        .headers()
        .unwrap()
        .iter()
        .find(|h| h.key == dead_letter::RETRY_COUNT)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned());
    assert_eq!(retry_count.as_deref(), Some("2"));
    assert!(p.sandbox.messages().is_empty());
    p.stop().await;
}

struct Direct {
    tables: TableNames,
    topics: TopicNames,
    sandbox: TelegramSandbox,
    notifier: notifier::LambdaNotifier,
    retry: DlqRetry,
}

/// A notifier and a dlq-retry of their own (no runner), for runs under the test's control.
async fn direct(retry_delay: Duration, safety_margin: Duration) -> Direct {
    let aws = aws().await;
    let (tables, topics) = provision(&aws, 1).await;
    let sandbox = TelegramSandbox::default();
    let addr = sandbox.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let notifier_config = notifier::Config {
        tables: tables.clone(),
        telegram_api_base_url: format!("http://{addr}"),
        telegram_bot_token: Secret::new(BOT_TOKEN),
        telegram_chat_id: CHAT_ID.into(),
        telegram_timeout: StdDuration::from_secs(5),
        idempotency_ttl: Duration::days(7),
        kafka: kafka(),
        producer: ProducerSettings::default(),
        topics: topics.clone(),
        retry_delay,
    };
    let client = aws_sdk_dynamodb::Client::new(&aws);
    let notifier = notifier::LambdaNotifier::from_config(
        &notifier_config,
        client.clone(),
        Arc::new(SystemClock),
    )
    .unwrap();
    let retry = DlqRetry::from_config(
        dlq_retry::Config {
            notifier: notifier_config,
            group_id: e2e_tests::unique("dlq-retry"),
            max_retries: 10,
            backoff_base: Duration::zero(),
            backoff_max: Duration::zero(),
            safety_margin,
            default_run_time: Duration::seconds(60),
        },
        client,
        Arc::new(SystemClock),
    )
    .unwrap();
    Direct {
        tables,
        topics,
        sandbox,
        notifier,
        retry,
    }
}

/// Sends `n` events through the notifier while the channel fails: `n` dead letters.
async fn dead_letters(d: &Direct, n: usize) {
    d.sandbox.fail_next(FailurePlan {
        count: 10_000,
        status: 502,
        retry_after: None,
    });
    let records: Vec<_> = (0..n)
        .map(|i| {
            let envelope = shared::fixtures::payment_completed_envelope(
                ReservationId::random(),
                "retry@example.com",
                1_000,
            );
            let mut r = aws_lambda_events::kafka::KafkaRecord::default();
            r.topic = Some(d.topics.payment_completed.clone());
            r.offset = i as i64;
            r.value = Some(base64_encode(envelope.to_json().as_bytes()));
            r.headers = shared::kafka_event::encode_headers([(
                "event-id",
                envelope.event_id.to_string().as_bytes(),
            )]);
            r
        })
        .collect();
    let mut event = aws_lambda_events::kafka::KafkaEvent::default();
    event
        .records
        .insert(format!("{}-0", d.topics.payment_completed), records);
    let notifier = &d.notifier;
    invoke(
        "notifier",
        StdDuration::from_secs(30),
        serde_json::to_value(event).unwrap(),
        |e| notifier.handle(e),
    )
    .await
    .unwrap();
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_does_not_chase_the_records_it_republished() {
    let d = direct(Duration::zero(), Duration::seconds(1)).await;
    dead_letters(&d, 3).await;
    let report = d
        .retry
        .run(Utc::now() + Duration::seconds(60))
        .await
        .unwrap();
    assert_eq!(report.retried, 3, "{report:?}");
    assert_eq!(report.processed + report.failed, 0);
    // The next run takes the three republished ones, once each.
    let report = d
        .retry
        .run(Utc::now() + Duration::seconds(60))
        .await
        .unwrap();
    assert_eq!(report.retried, 3, "{report:?}");
    let records = consume(
        &kafka().bootstrap_servers,
        &d.topics.payment_completed_dlq,
        9,
        StdDuration::from_secs(30),
    )
    .await;
    assert_eq!(records.len(), 9, "3 from the notifier and 3 from each run");
    let _ = &d.tables;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_record_not_yet_due_stays_for_a_later_run() {
    let d = direct(Duration::hours(1), Duration::seconds(1)).await;
    dead_letters(&d, 1).await;
    let report = d
        .retry
        .run(Utc::now() + Duration::seconds(60))
        .await
        .unwrap();
    assert_eq!(report.not_due, 1, "{report:?}");
    assert_eq!(report.processed + report.retried + report.failed, 0);
    assert_eq!(d.sandbox.attempts(), 1, "only the notifier's own attempt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_stops_for_its_deadline_and_the_next_run_does_the_rest() {
    let d = direct(Duration::zero(), Duration::seconds(30)).await;
    dead_letters(&d, 2).await;
    d.sandbox.fail_next(FailurePlan {
        count: 0,
        status: 500,
        retry_after: None,
    });
    // Less than the safety margin is left: the run takes nothing.
    let report = d
        .retry
        .run(Utc::now() + Duration::seconds(10))
        .await
        .unwrap();
    assert!(report.stopped_for_deadline, "{report:?}");
    assert_eq!(report.processed, 0);
    let report = d
        .retry
        .run(Utc::now() + Duration::seconds(120))
        .await
        .unwrap();
    assert_eq!(report.processed, 2, "{report:?}");
    assert_eq!(d.sandbox.messages().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_delivered_before_its_retry_is_not_sent_again() {
    let d = direct(Duration::zero(), Duration::seconds(1)).await;
    dead_letters(&d, 1).await;
    // The notifier succeeds on a redelivery of the same record before dlq-retry runs.
    d.sandbox.fail_next(FailurePlan {
        count: 0,
        status: 500,
        retry_after: None,
    });
    let dlq = consume(
        &kafka().bootstrap_servers,
        &d.topics.payment_completed_dlq,
        1,
        StdDuration::from_secs(30),
    )
    .await;
    let letter =
        dead_letter::DeadLetter::from_dlq_record(&shared::kafka::decoded_message(&dlq[0])).unwrap();
    let original = shared::kafka_event::encode_record(&letter.original);
    d.notifier.notify(&original, None).await.unwrap();
    let report = d
        .retry
        .run(Utc::now() + Duration::seconds(60))
        .await
        .unwrap();
    assert_eq!(report.processed, 1, "{report:?}");
    assert_eq!(d.sandbox.messages().len(), 1, "sent once, by the notifier");
    let ledger = DynamoFailureLedger::new(
        aws_sdk_dynamodb::Client::new(&aws().await),
        d.tables.failed_messages.clone(),
    );
    assert_eq!(
        ledger
            .get(&letter.event_id())
            .await
            .unwrap()
            .unwrap()
            .status,
        LedgerStatus::Processed
    );
    let _ = dlq[0].payload();
}
