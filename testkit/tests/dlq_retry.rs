//! dlq-retry on the real stack: a notification that failed is delivered once the
//! channel is back (ledger PENDING -> PROCESSED); after the maximum number of
//! retries it is parked on the failed topic (ledger FAILED); a run never chases
//! the records it republished itself, puts letters not yet due back at the
//! topic's end without holding up the due ones behind them, and stops for its
//! deadline.

use chrono::{Duration, Utc};
use dlq_retry::LambdaDlqRetry;
use local_runner::notification_sandbox::FailurePlan;
use shared::clock::{Clock, ManualClock, SystemClock};
use shared::dead_letter;
use shared::delivery::{Disposition, Failure};
use shared::dynamodb::DynamoFailureLedger;
use shared::kafka::ProducerStart;
use shared::ledger::{LedgerEntry, LedgerStatus};
use shared::notification::ChannelKind;
use std::sync::Arc;
use std::time::Duration as StdDuration;
use testkit::{DirectNotifier, Options, TestPipeline, consume, eventually, header, kafka, seed};

fn fast_retries(max_retries: u32) -> Options {
    Options {
        // Dead letters are due at once and retried every second.
        retry_delay: Duration::zero(),
        dlq_retry_interval: StdDuration::from_secs(1),
        dlq_retry: dlq_retry::Settings {
            max_retries,
            backoff_base: Duration::zero(),
            backoff_max: Duration::zero(),
            ..Default::default()
        },
        ..Options::default()
    }
}

async fn wait_for_ledger(
    ledger: &DynamoFailureLedger,
    event_id: &str,
    status: LedgerStatus,
) -> LedgerEntry {
    let what = format!("{event_id} reaching {status:?} in the ledger");
    eventually(StdDuration::from_secs(60), &what, || async {
        let entry = ledger
            .get(event_id, Some(ChannelKind::Telegram))
            .await
            .unwrap();
        entry.filter(|e| e.status == status)
    })
    .await
}

/// Holds and pays; answers the reservation and the event id of its
/// PaymentCompleted, read from the outbox.
async fn pay_one(p: &TestPipeline) -> (String, String) {
    let s = seed(&p.repo, 1, 1, 100_000, 50_000).await;
    let fan = &s.users[0];
    let (_, held) = p.hold(&fan.jwt, s.seats[0].id).await;
    let (status, paid) = p
        .pay(&fan.jwt, held["reservationId"].as_str().unwrap())
        .await;
    assert_eq!(status, 200, "{paid}");
    let outbox = testkit::scan(&p.dynamodb, &p.tables.outbox).await;
    assert_eq!(outbox.len(), 1);
    let item = &outbox[0];
    let start = item.find("\"eventId\": S(\"").unwrap() + "\"eventId\": S(\"".len();
    let reservation = held["reservationId"].as_str().unwrap().to_owned();
    (reservation, item[start..start + 36].to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn telegram_down_then_back_the_retry_delivers_once_and_the_ledger_goes_to_processed() {
    let p = TestPipeline::start(fast_retries(5)).await;
    p.sandbox.fail_next(FailurePlan::fail(1, 503));
    let (reservation, event_id) = pay_one(&p).await;
    let ledger = DynamoFailureLedger::new(p.dynamodb.clone(), p.tables.failed_messages.clone());
    let entry = wait_for_ledger(&ledger, &event_id, LedgerStatus::Processed).await;
    assert_eq!(entry.attempts, 1);
    p.wait_for_messages(1, StdDuration::from_secs(30)).await;
    // Further runs find nothing more to do: dlq-retry passes a marker dead
    // letter sent behind it without sending the event again.
    p.settle_retries(&[&reservation]).await;
    assert_eq!(p.messages().len(), 1);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_the_maximum_retries_the_record_is_on_the_failed_topic_and_the_ledger_says_failed() {
    let p = TestPipeline::start(fast_retries(2)).await;
    p.sandbox.fail_next(FailurePlan::fail(1_000, 500));
    let (_, event_id) = pay_one(&p).await;
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
    assert_eq!(
        header(&failed[0], dead_letter::RETRY_COUNT).as_deref(),
        Some("2")
    );
    assert!(p.sandbox.messages().is_empty());
    p.stop().await;
}

struct Direct {
    n: DirectNotifier,
    retry: LambdaDlqRetry,
}

/// A notifier and a dlq-retry of their own (no runner), for runs under the test's control.
async fn direct(retry_delay: Duration, safety_margin: Duration) -> Direct {
    direct_on(Arc::new(SystemClock), retry_delay, safety_margin).await
}

/// The same, with dlq-retry on `clock`.
async fn direct_on(
    clock: Arc<dyn Clock>,
    retry_delay: Duration,
    safety_margin: Duration,
) -> Direct {
    let n = DirectNotifier::start(retry_delay, StdDuration::from_secs(5)).await;
    let retry = LambdaDlqRetry::from_config(
        dlq_retry::Config {
            delivery: n.config.delivery.clone(),
            settings: dlq_retry::Settings {
                group_id: testkit::unique("dlq-retry"),
                max_retries: 10,
                backoff_base: Duration::zero(),
                backoff_max: Duration::zero(),
                safety_margin,
                ..Default::default()
            },
        },
        n.dynamodb.clone(),
        clock,
    )
    .unwrap();
    Direct { n, retry }
}

/// Sends `n` events through the notifier while the channel fails: `n` dead letters.
async fn dead_letters(d: &Direct, n: i64) {
    d.n.sandbox.fail_next(FailurePlan::fail(10_000, 502));
    let records = (0..n).map(|i| d.n.payment_record(i)).collect();
    d.n.deliver(records).await.unwrap();
}

/// The first dead letter on the DLQ, read back.
async fn first_dead_letter(d: &Direct) -> dead_letter::DeadLetter {
    dead_letter_at(d, 0).await
}

/// A dlq-retry run with a minute before its deadline.
async fn run_a_minute(d: &Direct) -> dlq_retry::RetryReport {
    d.retry
        .run(Utc::now() + Duration::seconds(60))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_does_not_chase_the_records_it_republished() {
    let d = direct(Duration::zero(), Duration::seconds(1)).await;
    dead_letters(&d, 3).await;
    let report = run_a_minute(&d).await;
    assert_eq!(report.retried, 3, "{report:?}");
    assert_eq!(report.processed + report.failed, 0);
    // The next run takes the three republished ones, once each.
    let report = run_a_minute(&d).await;
    assert_eq!(report.retried, 3, "{report:?}");
    let records = consume(
        &kafka().bootstrap_servers,
        &d.n.topics.payment_completed_dlq,
        9,
        StdDuration::from_secs(30),
    )
    .await;
    assert_eq!(records.len(), 9, "3 from the notifier and 3 from each run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_record_not_yet_due_stays_for_a_later_run() {
    let d = direct(Duration::hours(1), Duration::seconds(1)).await;
    dead_letters(&d, 1).await;
    let report = run_a_minute(&d).await;
    assert_eq!(report.not_due, 1, "{report:?}");
    assert_eq!(report.processed + report.retried + report.failed, 0);
    assert_eq!(d.n.sandbox.attempts(), 1, "only the notifier's own attempt");
    // Put back at the topic's end as it was: the next run finds it again.
    let report = run_a_minute(&d).await;
    assert_eq!(report.not_due, 1, "{report:?}");
    let again = dead_letter_at(&d, 1).await;
    assert_eq!(
        again,
        first_dead_letter(&d).await,
        "the letter is unchanged"
    );
}

/// The dead letter at `offset` of the DLQ, read back.
async fn dead_letter_at(d: &Direct, offset: usize) -> dead_letter::DeadLetter {
    let dlq = consume(
        &kafka().bootstrap_servers,
        &d.n.topics.payment_completed_dlq,
        offset + 1,
        StdDuration::from_secs(30),
    )
    .await;
    dead_letter::DeadLetter::from_dlq_record(&shared::kafka::decoded_message(&dlq[offset])).unwrap()
}

/// Puts a letter of a new event on the DLQ, due `at`, as the notifier would.
async fn letter_due(d: &Direct, at: chrono::DateTime<Utc>) -> String {
    let envelope = shared::fixtures::payment_completed_envelope(
        shared::domain::ReservationId::random(),
        "due@example.com",
        1_000,
    );
    let record = shared::fixtures::record_of(&envelope, &d.n.topics.payment_completed, 9);
    let failure = shared::Error::from(shared::InfraError::Channel {
        channel: "telegram",
        retryable: true,
        maybe_delivered: false,
        retry_after: None,
        message: "HTTP 502".into(),
        source: None,
    });
    let letter =
        dead_letter::DeadLetter::new(record, &failure, 0, at).on_channel(ChannelKind::Telegram);
    // As the notifier writes it: its producer built at this first dead letter.
    let sink =
        d.n.config
            .delivery
            .sink(d.n.dynamodb.clone(), ProducerStart::AtFirstPublish)
            .unwrap();
    sink.dead_letter(&letter, Disposition::Retry, Utc::now())
        .await
        .unwrap();
    envelope.event_id.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_letter_due_in_an_hour_does_not_hold_up_one_due_now_behind_it_and_each_is_sent_once() {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let d = direct_on(clock.clone(), Duration::hours(1), Duration::seconds(1)).await;
    dead_letters(&d, 1).await; // due in an hour (the notifier's retry delay)
    let due_now = letter_due(&d, clock.now()).await;
    d.n.sandbox.fail_next(FailurePlan::fail(0, 500)); // Telegram is back
    let run = || d.retry.run(clock.now() + Duration::seconds(60));

    let due_later = first_dead_letter(&d).await.event_id();
    let ledger = d.n.ledger();
    let status = |event: String| {
        let ledger = ledger.clone();
        async move {
            let row = ledger
                .get(&event, Some(ChannelKind::Telegram))
                .await
                .unwrap();
            row.map(|r| r.status)
        }
    };

    // The next run: the letter due now is sent, the other put back.
    let report = run().await.unwrap();
    assert_eq!((report.processed, report.not_due), (1, 1), "{report:?}");
    assert_eq!(d.n.sandbox.messages().len(), 1);
    assert_eq!(status(due_now.clone()).await, Some(LedgerStatus::Processed));
    assert_eq!(status(due_later.clone()).await, Some(LedgerStatus::Pending));
    let report = run().await.unwrap();
    assert_eq!((report.processed, report.not_due), (0, 1), "{report:?}");

    // On time: the first run after its hour sends it.
    clock.set(clock.now() + Duration::minutes(61));
    let report = run().await.unwrap();
    assert_eq!((report.processed, report.not_due), (1, 0), "{report:?}");
    assert_eq!(status(due_later).await, Some(LedgerStatus::Processed));
    let report = run().await.unwrap();
    assert_eq!(report, dlq_retry::RetryReport::default(), "nothing left");
    assert_eq!(d.n.sandbox.messages().len(), 2, "each sent once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_stops_for_its_deadline_and_the_next_run_does_the_rest() {
    let d = direct(Duration::zero(), Duration::seconds(30)).await;
    dead_letters(&d, 2).await;
    d.n.sandbox.fail_next(FailurePlan::fail(0, 500));
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
    assert_eq!(d.n.sandbox.messages().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_delivered_before_its_retry_is_not_sent_again() {
    let d = direct(Duration::zero(), Duration::seconds(1)).await;
    dead_letters(&d, 1).await;
    // The notifier succeeds on a redelivery of the same record before dlq-retry runs.
    d.n.sandbox.fail_next(FailurePlan::fail(0, 500));
    let letter = first_dead_letter(&d).await;
    let redelivered =
        d.n.notifier
            .deliverer()
            .deliver(&letter.original, None, None)
            .await;
    assert!(redelivered.is_empty(), "{redelivered:?}");
    let report = run_a_minute(&d).await;
    assert_eq!(report.processed, 1, "{report:?}");
    assert_eq!(
        d.n.sandbox.messages().len(),
        1,
        "sent once, by the notifier"
    );
    let ledger = d.n.ledger();
    assert_eq!(
        ledger
            .get(&letter.event_id(), Some(ChannelKind::Telegram))
            .await
            .unwrap()
            .unwrap()
            .status,
        LedgerStatus::Processed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_notifier_and_dlq_retry_racing_on_one_event_send_it_once() {
    let d = direct(Duration::zero(), Duration::seconds(1)).await;
    dead_letters(&d, 1).await;
    d.n.sandbox.fail_next(FailurePlan::fail(0, 500));
    let letter = first_dead_letter(&d).await;
    // Ten redeliveries to the notifier and a dlq-retry run, all at once.
    let deliverer = d.n.notifier.deliverer();
    let redeliveries =
        futures::future::join_all((0..10).map(|_| deliverer.deliver(&letter.original, None, None)));
    let (results, report) = tokio::join!(
        redeliveries,
        d.retry.run(Utc::now() + Duration::seconds(60))
    );
    let report = report.unwrap();
    // Whoever lost the race saw the key in progress or completed; nobody sent twice.
    assert!(
        results.iter().flatten().all(|failure| matches!(
            failure,
            Failure {
                error: shared::Error::Refused(shared::domain::Refusal::InProgress),
                ..
            }
        )),
        "{results:?}"
    );
    assert_eq!(d.n.sandbox.messages().len(), 1, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reservations_dead_letters_are_retried_in_offset_order_among_other_reservations() {
    let d = direct(Duration::zero(), Duration::seconds(1)).await;
    let ours = shared::domain::ReservationId::random();
    let record = |reservation, amount, offset| {
        let envelope =
            shared::fixtures::payment_completed_envelope(reservation, "order@example.com", amount);
        shared::kafka_event::encode_record(&shared::fixtures::record_of(
            &envelope,
            &d.n.topics.payment_completed,
            offset,
        ))
    };
    // Ours interleaved with others' on one partition, all failing first.
    let mut records = Vec::new();
    for i in 0..12 {
        records.push(if i % 4 == 0 {
            record(ours, 1_001 + i / 4, i)
        } else {
            record(shared::domain::ReservationId::random(), 50_000, i)
        });
    }
    d.n.sandbox.fail_next(FailurePlan::fail(10_000, 502));
    d.n.deliver(records).await.unwrap();
    d.n.sandbox.fail_next(FailurePlan::fail(0, 500));

    let report = run_a_minute(&d).await;
    assert_eq!(report.processed, 12, "{report:?}");
    let texts: Vec<String> = d.n.sandbox.messages().into_iter().map(|m| m.text).collect();
    assert_eq!(texts.len(), 12, "each once");
    let order: Vec<usize> = ["1,001원", "1,002원", "1,003원"]
        .iter()
        .map(|amount| texts.iter().position(|t| t.contains(amount)).unwrap())
        .collect();
    assert!(
        order.is_sorted(),
        "our letters in offset order: {order:?} of {texts:?}"
    );
}

/// A sale the data platform did not take (it was down): its dead letter, as
/// the feed writes it, on the DLQ with a PENDING ledger row.
async fn platform_dead_letter(d: &Direct) -> String {
    let envelope = shared::fixtures::payment_completed_envelope(
        shared::domain::ReservationId::random(),
        "platform@example.com",
        150_000,
    );
    let original = shared::fixtures::record_of(&envelope, &d.n.topics.payment_completed, 7);
    let error = shared::Error::from(shared::InfraError::Channel {
        channel: shared::channels::DATA_PLATFORM,
        retryable: true,
        maybe_delivered: false,
        retry_after: None,
        message: "POST /v1/events answered HTTP 503".into(),
        source: None,
    });
    let letter = dead_letter::DeadLetter::new(original, &error, 0, Utc::now())
        .on_channel(ChannelKind::DataPlatform);
    // As the notifier writes it: its producer built at this first dead letter.
    let sink =
        d.n.config
            .delivery
            .sink(d.n.dynamodb.clone(), ProducerStart::AtFirstPublish)
            .unwrap();
    sink.dead_letter(&letter, Disposition::Retry, Utc::now())
        .await
        .unwrap();
    envelope.event_id.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_data_platform_dead_letter_is_retried_on_the_platform_alone_and_taken_once() {
    let d = direct(Duration::zero(), Duration::seconds(1)).await;
    let event_id = platform_dead_letter(&d).await;

    let report = run_a_minute(&d).await;
    assert_eq!(report.processed, 1, "{report:?}");
    let taken = d.n.sandbox.platform_events();
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert_eq!(taken[0].event_id, event_id);
    assert!(
        !serde_json::to_string(&taken[0].event)
            .unwrap()
            .contains("platform@example.com"),
        "the platform gets a pseudonym, never the mail"
    );
    assert!(
        d.n.sandbox.messages().is_empty(),
        "no customer is told again"
    );
    let row =
        d.n.ledger()
            .get(&event_id, Some(ChannelKind::DataPlatform))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(row.status, LedgerStatus::Processed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sale_the_platform_refuses_is_parked_with_its_reason() {
    let d = direct(Duration::zero(), Duration::seconds(1)).await;
    let event_id = platform_dead_letter(&d).await;
    d.n.sandbox
        .reject_events(std::slice::from_ref(&event_id), "unknown concert");

    run_a_minute(&d).await;
    let row =
        d.n.ledger()
            .get(&event_id, Some(ChannelKind::DataPlatform))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(row.status, LedgerStatus::Failed, "{row:?}");
    assert!(row.last_error.contains("unknown concert"), "{row:?}");
    assert!(d.n.sandbox.platform_events().is_empty());
}
