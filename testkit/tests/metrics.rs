//! Every function's business metrics, as the EMF documents its invocations
//! flush, on the real stack through the local runner's invocations (the same
//! `shared::metrics::invoked` the deployed mains call). A test binary of its
//! own: a process has one metrics recorder, and each test holds it
//! (`Capture`) so no other test's counts mix in.

use chrono::Duration;
use local_runner::notification_sandbox::FailurePlan;
use serde_json::{Value, json};
use shared::metrics::{Capture, FUNCTION, value_of};
use std::time::Duration as StdDuration;
use testkit::{Options, TestPipeline, eventually, seed};

/// A send the data platform took.
const PLATFORM_SENT: [(&str, &str); 2] = [("channel", "data-platform"), ("outcome", "sent")];

/// The value of `metric` counted in `function` with `dimensions` besides it.
fn counted(docs: &[Value], function: &str, metric: &str, dimensions: &[(&str, &str)]) -> Value {
    let mut all = vec![(FUNCTION, function)];
    all.extend_from_slice(dimensions);
    value_of(docs, metric, &all).unwrap_or_else(|| panic!("no {metric} {all:?} in {docs:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_function_counts_what_it_did_in_emf_documents_per_function_and_outcome() {
    let capture = Capture::start().await;
    let p = TestPipeline::start(Options {
        hold_for: Duration::seconds(2),
        seat_expiration_interval: StdDuration::from_secs(1),
        data_platform: true,
        ..Options::retrying_at_once()
    })
    .await;
    // The payment's first send is throttled: dead-lettered, then sent by dlq-retry.
    p.sandbox.fail_next(
        FailurePlan {
            retry_after: Some(1),
            ..FailurePlan::fail(1, 429)
        }
        .on("telegram"),
    );
    let s = seed(&p.repo, 2, 2, 100_000, 10_000).await;
    let (payer, holder) = (&s.users[0], &s.users[1]);
    let reservation = p.hold_and_pay(&payer.jwt, s.seats[0].id).await;
    let (status, _) = p.pay(&payer.jwt, &reservation).await;
    assert_eq!(status, 200, "a second click answers the first receipt");
    let (status, _) = p.post("/payments", None, "{}").await;
    assert_eq!(status, 401);
    // A hold left to expire: released, and its customer told.
    let (status, _) = p.hold(&holder.jwt, s.seats[1].id).await;
    assert_eq!(status, 201);
    p.wait_for_messages(2, StdDuration::from_secs(60)).await;
    eventually(StdDuration::from_secs(30), "dlq-retry's run", || async {
        (p.sandbox.attempts() >= 3).then_some(())
    })
    .await;
    let docs = eventually(StdDuration::from_secs(30), "every count", || async {
        let docs = capture.documents();
        let has = |metric: &str| docs.iter().any(|d| d.get(metric).is_some());
        // The payment and the released hold, each at the data platform.
        let fed = value_of(
            &docs,
            "Sends",
            &[
                (FUNCTION, "data-platform-feed"),
                PLATFORM_SENT[0],
                PLATFORM_SENT[1],
            ],
        );
        (has("Letters") && has("Holds") && fed == Some(json!(2))).then_some(docs)
    })
    .await;

    let one = json!(1);
    assert_eq!(
        counted(&docs, "reservation", "Requests", &[("outcome", "held")]),
        json!(2)
    );
    for outcome in ["confirmed", "replayed", "MISSING_TOKEN"] {
        assert_eq!(
            counted(&docs, "payment", "Requests", &[("outcome", outcome)]),
            one
        );
    }
    let latency = counted(&docs, "payment", "Latency", &[]);
    assert_eq!(latency.as_array().map(Vec::len), Some(3), "{latency}");
    assert_eq!(counted(&docs, "payment", "ColdStart", &[]), one);
    assert!(
        counted(
            &docs,
            "outbox-relay",
            "Records",
            &[("outcome", "published")]
        )
        .is_u64()
    );
    let telegram = ("channel", "telegram");
    assert_eq!(counted(&docs, "notifier", "RateLimited", &[telegram]), one);
    let sends =
        |function, outcome| counted(&docs, function, "Sends", &[telegram, ("outcome", outcome)]);
    assert_eq!(sends("notifier", "dead_lettered_retryable"), one);
    assert_eq!(sends("notifier", "sent"), one, "the expired hold's message");
    assert_eq!(sends("dlq-retry", "sent"), one, "the payment's, retried");
    assert_eq!(
        counted(&docs, "dlq-retry", "Letters", &[("outcome", "processed")]),
        one
    );
    assert_eq!(
        counted(
            &docs,
            "seat-expiration",
            "Holds",
            &[("outcome", "released")]
        ),
        one
    );
    assert_eq!(
        counted(&docs, "data-platform-feed", "Sends", &PLATFORM_SENT),
        json!(2)
    );
    assert_eq!(counted(&docs, "data-platform-feed", "ColdStart", &[]), one);
    p.stop().await;
}
