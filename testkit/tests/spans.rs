//! One id finds every log line of a payment's work: the hold, the payment, the
//! notifier's record and the retry of its dead letter each run in a span with
//! the reservation id (and the event id once it exists), on the real pipeline.

use chrono::Duration;
use local_runner::notification_sandbox::FailurePlan;
use shared::fakes::CapturedLogs;
use std::time::Duration as StdDuration;
use testkit::{Options, TestPipeline, eventually, seed};

/// The id after `event_id=` in `line`.
fn event_id_in(line: &str) -> &str {
    let start = line.find("event_id=").expect("an event id") + "event_id=".len();
    let id = &line[start..];
    &id[..id.find([' ', '}', ':']).unwrap_or(id.len())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payments_log_lines_carry_its_reservation_from_the_request_to_the_retried_message() {
    let logs = CapturedLogs::global();
    let p = TestPipeline::start(Options {
        retry_delay: Duration::zero(),
        dlq_retry_interval: StdDuration::from_secs(1),
        dlq_retry: dlq_retry::Settings {
            max_retries: 3,
            backoff_base: Duration::zero(),
            backoff_max: Duration::zero(),
            ..Default::default()
        },
        ..Options::default()
    })
    .await;
    let s = seed(&p.repo, 1, 1, 100_000, 50_000).await;
    let fan = &s.users[0];
    // Telegram fails the first send: the notifier dead-letters it, dlq-retry sends it.
    p.sandbox.fail_next(FailurePlan::fail(1, 503));
    let (status, held) = p.hold(&fan.jwt, s.seats[0].id).await;
    assert_eq!(status, 201, "{held}");
    let reservation = held["reservationId"].as_str().unwrap().to_owned();
    let (status, paid) = p.pay(&fan.jwt, &reservation).await;
    assert_eq!(status, 200, "{paid}");
    p.wait_for_messages(1, StdDuration::from_secs(60)).await;

    let held = logs.line_with("seat held");
    assert!(held.contains("function=\"reservation\""), "{held}");
    assert!(held.contains("request_id="), "{held}");
    assert!(held.contains(&reservation), "{held}");
    let paid = logs.line_with("payment confirmed");
    assert!(paid.contains("function=\"payment\""), "{paid}");
    assert!(paid.contains(&reservation), "{paid}");
    let event_id = event_id_in(&paid);
    for message in [
        "notification failed; dead-lettered",
        "notification handled",
        "dead letter delivered",
    ] {
        // The sandbox has the message before its sender logs that it went out.
        let line = eventually(StdDuration::from_secs(30), message, || async {
            logs.lines().into_iter().find(|l| l.contains(message))
        })
        .await;
        assert!(line.contains(&reservation), "{line}");
        assert!(line.contains(event_id), "{event_id} is not in {line}");
    }
    p.stop().await;
}
