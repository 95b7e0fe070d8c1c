//! `ops reconcile` as an operator runs it: the real binary, on a pipeline
//! running on moto, tansu and the notification sandbox: a window whose sales
//! all reached their destinations (one parked in the ledger), a destination
//! that never received them, and payments whose events never reached the topic.

use chrono::{SecondsFormat, Utc};
use local_runner::notification_sandbox::FailurePlan;
use serde_json::Value;
use shared::config::TopicNames;
use std::process::{Command, Output};
use std::time::Duration as StdDuration;
use testkit::functions::stack_env;
use testkit::{Options, TestPipeline, eventually, seed};

const WAIT: StdDuration = StdDuration::from_secs(60);

/// `ops reconcile --from <from> --grace-seconds 0 [args]` on `p`'s tables and
/// `topics`, with the data-platform feed counted as a destination or not.
fn ops_reconcile(
    p: &TestPipeline,
    topics: &TopicNames,
    from: &str,
    platform: bool,
    args: &[&str],
) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ops"))
        .args(["reconcile", "--from", from, "--grace-seconds", "0"])
        .args(args)
        .envs(stack_env(&p.tables, topics))
        // The pipeline's routes: Telegram alone.
        .env("NOTIFY_PAYMENT_COMPLETED_CHANNELS", "telegram")
        .env("NOTIFY_SEAT_HOLD_EXPIRED_CHANNELS", "telegram")
        .env(
            "DATA_PLATFORM_URL",
            if platform {
                "https://platform.invalid"
            } else {
                ""
            },
        )
        .output()
        .unwrap()
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `n` customers pay for a seat each at once, so the relay publishes them in
/// few batches (several records to a partition): their reservations.
async fn payments(p: &TestPipeline, n: u32) -> Vec<String> {
    let s = seed(&p.repo, n, n, 100_000, 50_000).await;
    let paying = s
        .users
        .iter()
        .zip(&s.seats)
        .map(|(user, seat)| p.hold_and_pay(&user.jwt, seat.id));
    futures::future::join_all(paying).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_window_whose_sales_all_reached_their_destinations_balances_and_a_parked_send_is_left_to_an_operator()
 {
    let p = TestPipeline::start(Options::retrying_at_once()).await;
    let from = now();
    let s = seed(&p.repo, 2, 2, 100_000, 50_000).await;
    p.hold_and_pay(&s.users[0].jwt, s.seats[0].id).await;
    p.wait_for_messages(1, WAIT).await;
    // The second customer blocked the bot: refused for good, parked in the ledger.
    p.sandbox.fail_next(FailurePlan::fail(1, 403));
    p.hold_and_pay(&s.users[1].jwt, s.seats[1].id).await;

    let report = eventually(WAIT, "one sent, one failed", || async {
        let out = ops_reconcile(&p, &p.topics, &from, false, &["--json"]);
        let report = json_of(&out);
        let telegram = &report["destinations"]["telegram"];
        (out.status.success() && telegram["sent"] == 1 && telegram["failed"] == 1).then_some(report)
    })
    .await;
    assert_eq!(report["payments"], 2);
    assert_eq!(report["onTopic"], 2);
    assert_eq!(
        (report["missing"].as_u64(), report["twice"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(report["balanced"], true);
    let findings = report["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{report:#}");
    assert_eq!(findings[0]["kind"], "left_to_operator");
    assert_eq!(findings[0]["discrepancy"], false);
    let event = findings[0]["eventId"].as_str().unwrap();
    assert!(
        findings[0]["note"]
            .as_str()
            .unwrap()
            .contains(&format!("ops failed redrive {event} --channel telegram")),
        "{report:#}"
    );

    // For people: the open case, then the summary; exit 0.
    let out = ops_reconcile(&p, &p.topics, &from, false, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("OPEN "), "{text}");
    assert!(
        text.contains("reconcile: 2 payments, 2 on ")
            && text.contains(
                "0 missing, 0 twice, 1 left to an operator, 0 in flight; telegram 1 failed, 1 sent"
            ),
        "{text}"
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sales_a_destination_never_acknowledged_are_missing_and_the_command_fails() {
    // The feed is not running: the data platform never got these sales.
    let p = TestPipeline::start(Options::default()).await;
    let from = now();
    payments(&p, 6).await;
    p.wait_for_messages(6, WAIT).await;

    let out = eventually(WAIT, "all sent on telegram", || async {
        let out = ops_reconcile(&p, &p.topics, &from, true, &["--json"]);
        (json_of(&out)["destinations"]["telegram"]["sent"] == 6).then_some(out)
    })
    .await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "a discrepancy fails the command"
    );
    let report = json_of(&out);
    // Every record read, also those the relay sent in one batch to a partition.
    assert_eq!(report["onTopic"], 6, "{report:#}");
    assert_eq!(report["missing"], 6);
    assert_eq!(report["balanced"], false);
    assert_eq!(report["destinations"]["data-platform"]["not_sent"], 6);
    for finding in report["findings"].as_array().unwrap() {
        assert_eq!(finding["kind"], "not_delivered");
        assert_eq!(finding["destination"], "data-platform");
        assert_eq!(finding["discrepancy"], true);
    }
    let text = String::from_utf8_lossy(&ops_reconcile(&p, &p.topics, &from, true, &[]).stdout)
        .into_owned();
    assert_eq!(text.matches("MISSING  ").count(), 6, "{text}");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn payments_whose_events_never_reached_the_topic_are_missing_with_the_replay_that_publishes_them()
 {
    let p = TestPipeline::start(Options::default()).await;
    let from = now();
    let reservations = payments(&p, 2).await;
    // Read a payment.completed the relay never wrote to: an empty topic.
    let empty = testkit::unique("empty");
    shared::kafka::create_topics(&testkit::kafka(), &[empty.as_str()], 3)
        .await
        .unwrap();
    let topics = TopicNames {
        payment_completed: empty,
        ..p.topics.clone()
    };

    let out = ops_reconcile(&p, &topics, &from, false, &["--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report = json_of(&out);
    assert_eq!(
        (report["payments"].as_u64(), report["onTopic"].as_u64()),
        (Some(2), Some(0))
    );
    let mut missing: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert_eq!(f["kind"], "not_on_topic");
            assert!(
                f["note"]
                    .as_str()
                    .unwrap()
                    .contains("ops outbox replay --from"),
                "{f}"
            );
            f["reservationId"].as_str().unwrap()
        })
        .collect();
    missing.sort_unstable();
    let mut expected: Vec<&str> = reservations.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(missing, expected);

    // Outside the window: nothing to reconcile, balanced.
    let later = now();
    let out = ops_reconcile(&p, &topics, &later, false, &["--json"]);
    assert!(out.status.success());
    assert_eq!(json_of(&out)["payments"], 0);
    p.stop().await;
}
