//! One trace from the payment to its message, on the real stack: the payment
//! request's X-Ray trace (or a new one) is written into the outbox item, the
//! relay puts it on the Kafka record as `traceparent`, and a dead letter carries
//! it with the other headers to dlq-retry.

use local_runner::notification_sandbox::FailurePlan;
use shared::trace::{HEADER, TraceContext};
use std::time::Duration;
use testkit::{Options, TestPipeline, consume, header, kafka, seed};

const XRAY: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";

/// One customer pays, with `headers` on the payment request.
async fn pay_with(p: &TestPipeline, headers: &[(&str, &str)]) {
    let s = seed(&p.repo, 1, 1, 100_000, 50_000).await;
    let fan = &s.users[0];
    let (status, held) = p.hold(&fan.jwt, s.seats[0].id).await;
    assert_eq!(status, 201, "{held}");
    let body = serde_json::json!({"reservationId": held["reservationId"]}).to_string();
    let (status, paid) = p
        .post_with("/payments", Some(&fan.jwt), &body, headers)
        .await;
    assert_eq!(status, 200, "{paid}");
}

/// The trace of the first record on `topic`.
async fn trace_on(topic: &str) -> TraceContext {
    let records = consume(
        &kafka().bootstrap_servers,
        topic,
        1,
        Duration::from_secs(30),
    )
    .await;
    let traceparent = header(&records[0], HEADER).expect("a traceparent header");
    TraceContext::parse(&traceparent).expect("a W3C traceparent")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_payment_requests_trace_reaches_its_kafka_record_and_its_dead_letter() {
    let p = TestPipeline::start(Options::default()).await;
    p.sandbox.fail_next(FailurePlan::fail(1, 503));
    pay_with(&p, &[("X-Amzn-Trace-Id", XRAY)]).await;

    let published = trace_on(&p.topics.payment_completed).await;
    assert_eq!(published.trace_id(), "5759e988bd862e3fe1be46a994272793");
    let dead_letter = trace_on(&p.topics.payment_completed_dlq).await;
    assert_eq!(dead_letter, published, "the dead letter keeps the header");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payment_nobody_traced_starts_its_own_trace() {
    let p = TestPipeline::start(Options::default()).await;
    pay_with(&p, &[]).await;
    let trace = trace_on(&p.topics.payment_completed).await;
    assert_eq!(trace.trace_id().len(), 32);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_holds_notice_carries_the_trace_of_the_run_that_released_it() {
    let p = TestPipeline::start(Options {
        hold_for: chrono::Duration::seconds(1),
        seat_expiration_interval: Duration::from_secs(1),
        ..Options::default()
    })
    .await;
    let s = seed(&p.repo, 1, 1, 100_000, 50_000).await;
    let (status, held) = p.hold(&s.users[0].jwt, s.seats[0].id).await;
    assert_eq!(status, 201, "{held}");
    let trace = trace_on(&p.topics.seat_hold_expired).await;
    assert_eq!(trace.trace_id().len(), 32);
    p.stop().await;
}
