//! `ops trace` as an operator runs it: the real binary, on a pipeline running
//! on moto, tansu and the notification sandbox, for a delivered payment, one
//! that failed once and was retried, one parked as failed, and an expired hold.

use chrono::Duration;
use local_runner::notification_sandbox::FailurePlan;
use serde_json::Value;
use std::process::Command;
use std::time::Duration as StdDuration;
use testkit::functions::stack_env;
use testkit::{Options, TestPipeline, eventually, seed};

const WAIT: StdDuration = StdDuration::from_secs(60);

/// `ops trace <id> [args]` on `p`'s tables, topics and sandbox: its output.
fn ops_trace(p: &TestPipeline, id: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ops"))
        .args(["trace", id, "--sandbox", &p.sandbox_url])
        .args(args)
        .envs(stack_env(&p.tables, &p.topics))
        // The pipeline's routes: Telegram alone.
        .env("NOTIFY_PAYMENT_COMPLETED_CHANNELS", "telegram")
        .env("NOTIFY_SEAT_HOLD_EXPIRED_CHANNELS", "telegram")
        // This pipeline runs without the data-platform feed.
        .env("DATA_PLATFORM_URL", "")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ops trace failed: {stdout}{stderr}");
    stdout
}

fn trace_json(p: &TestPipeline, id: &str) -> Value {
    serde_json::from_str(&ops_trace(p, id, &["--json"])).unwrap()
}

/// Polls `ops trace --json` until `done` holds for it.
async fn trace_when(
    p: &TestPipeline,
    id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    eventually(WAIT, what, || async {
        let trace = trace_json(p, id);
        done(&trace).then_some(trace)
    })
    .await
}

fn outcome_state(trace: &Value) -> &str {
    trace["outcomes"][0]["state"].as_str().unwrap_or("")
}

/// The timeline's entries from `source`.
fn from<'a>(trace: &'a Value, source: &str) -> Vec<&'a Value> {
    trace["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["source"] == source)
        .collect()
}

/// The topics of the timeline's Kafka records, in time order.
fn topics_of(trace: &Value) -> Vec<&str> {
    from(trace, "kafka")
        .iter()
        .map(|e| e["details"]["topic"].as_str().unwrap())
        .collect()
}

/// A customer holds a seat and pays: the reservation id.
async fn paid_reservation(p: &TestPipeline) -> String {
    let s = seed(&p.repo, 1, 1, 100_000, 50_000).await;
    p.hold_and_pay(&s.users[0].jwt, s.seats[0].id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delivered_payment_is_told_from_the_hold_to_the_message_it_became() {
    let p = TestPipeline::start(Options::default()).await;
    let reservation = paid_reservation(&p).await;
    p.wait_for_messages(1, WAIT).await;

    let trace = trace_when(&p, &reservation, "the send recorded", |t| {
        outcome_state(t) == "sent"
    })
    .await;
    assert_eq!(trace["reservationId"], reservation.as_str());
    assert_eq!(trace["reservationStatus"], "CONFIRMED");
    assert_eq!(trace["events"][0]["eventType"], "PaymentCompleted");
    let sources: Vec<&str> = trace["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["source"].as_str().unwrap())
        .collect();
    for source in [
        "reservation",
        "payment",
        "outbox",
        "kafka",
        "sandbox",
        "idempotency",
    ] {
        assert!(sources.contains(&source), "no {source} in {sources:?}");
    }
    assert_eq!(sources[0], "reservation", "the hold comes first");
    assert_eq!(topics_of(&trace), [p.topics.payment_completed.as_str()]);
    let record = &from(&trace, "kafka")[0]["details"];
    assert_eq!(record["key"], reservation.as_str());
    assert!(record["headers"]["traceparent"].is_string(), "{record}");
    assert!(from(&trace, "ledger").is_empty());
    assert!(trace["scan"]["recordsRead"].as_i64().unwrap() >= 1);

    // For people: one line per fact, then the outcome; by its event id too.
    let event_id = trace["events"][0]["eventId"].as_str().unwrap();
    let text = ops_trace(&p, event_id, &[]);
    assert!(
        text.starts_with(&format!("trace of reservation {reservation} (CONFIRMED)")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "outcome: PaymentCompleted {event_id} on telegram: sent at"
        )),
        "{text}"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payment_that_failed_once_shows_its_dead_letter_its_ledger_row_and_the_retry_that_sent_it()
 {
    let p = TestPipeline::start(Options::retrying_at_once()).await;
    p.sandbox.fail_next(FailurePlan::fail(1, 503));
    let reservation = paid_reservation(&p).await;
    p.wait_for_messages(1, WAIT).await;

    let trace = trace_when(&p, &reservation, "the retry recorded", |t| {
        outcome_state(t) == "sent"
            && from(t, "ledger")
                .first()
                .is_some_and(|row| row["details"]["status"] == "PROCESSED")
    })
    .await;
    assert_eq!(
        topics_of(&trace),
        [
            p.topics.payment_completed.as_str(),
            p.topics.payment_completed_dlq.as_str()
        ]
    );
    let letter = &from(&trace, "kafka")[1];
    assert_eq!(
        letter["details"]["headers"]["notification-channel"],
        "telegram"
    );
    assert!(
        letter["what"].as_str().unwrap().contains("retry 0"),
        "{letter}"
    );
    let row = &from(&trace, "ledger")[0]["details"];
    assert_eq!(row["attempts"], 1);
    assert_eq!(row["channel"], "telegram");
    assert_eq!(from(&trace, "sandbox").len(), 1, "sent once, by the retry");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payment_parked_as_failed_names_the_failed_topic_and_the_command_that_redrives_it() {
    let p = TestPipeline::start(Options::retrying_at_once()).await;
    // The bot was blocked: refused for good on the first send.
    p.sandbox.fail_next(FailurePlan::fail(1, 403));
    let reservation = paid_reservation(&p).await;

    let trace = trace_when(&p, &reservation, "the failure recorded", |t| {
        outcome_state(t) == "failed" && topics_of(t).len() == 2
    })
    .await;
    assert_eq!(
        topics_of(&trace),
        [
            p.topics.payment_completed.as_str(),
            p.topics.payment_completed_failed.as_str()
        ]
    );
    let event_id = trace["events"][0]["eventId"].as_str().unwrap();
    let note = trace["outcomes"][0]["note"].as_str().unwrap();
    assert!(
        note.contains(&format!("ops failed redrive {event_id} --channel telegram")),
        "{note}"
    );
    let row = &from(&trace, "ledger")[0]["details"];
    assert_eq!(row["status"], "FAILED");
    assert!(
        from(&trace, "sandbox").is_empty(),
        "nothing reached the chat"
    );
    assert!(from(&trace, "idempotency").is_empty(), "no key was kept");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_hold_shows_the_release_and_the_customers_notice() {
    let p = TestPipeline::start(Options {
        hold_for: Duration::seconds(1),
        seat_expiration_interval: StdDuration::from_secs(1),
        ..Options::default()
    })
    .await;
    let s = seed(&p.repo, 1, 1, 100_000, 50_000).await;
    let (status, held) = p.hold(&s.users[0].jwt, s.seats[0].id).await;
    assert_eq!(status, 201, "{held}");
    let reservation = held["reservationId"].as_str().unwrap().to_owned();
    p.wait_for_messages(1, WAIT).await;

    let trace = trace_when(&p, &reservation, "the notice recorded", |t| {
        outcome_state(t) == "sent"
    })
    .await;
    assert_eq!(trace["reservationStatus"], "EXPIRED");
    assert_eq!(trace["events"][0]["eventType"], "SeatHoldExpired");
    assert_eq!(
        trace["outcomes"].as_array().unwrap().len(),
        1,
        "one channel"
    );
    assert_eq!(topics_of(&trace), [p.topics.seat_hold_expired.as_str()]);
    assert!(from(&trace, "payment").is_empty());
    let released = from(&trace, "reservation");
    assert!(
        released[1]["what"].as_str().unwrap().contains("ran out"),
        "{released:?}"
    );
    assert_eq!(from(&trace, "sandbox").len(), 1);
    p.stop().await;
}
