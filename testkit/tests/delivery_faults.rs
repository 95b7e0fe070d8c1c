//! The Kafka source misbehaving on purpose, on the real stack: every batch
//! delivered twice, and one notifier invocation killed mid-batch while sends are
//! on their way. Each customer still gets exactly one message.

use chrono::Duration;
use local_runner::kafka_source::DeliveryFaults;
use local_runner::notification_sandbox::FailurePlan;
use std::collections::HashMap;
use std::time::Duration as StdDuration;
use testkit::{Options, TestPipeline, seed};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_delivered_twice_and_an_invocation_killed_mid_batch_still_send_each_message_once() {
    let faults = DeliveryFaults {
        duplicate: true,
        kill_once_after: Some(StdDuration::from_millis(300)),
        ..DeliveryFaults::default()
    };
    let p = TestPipeline::start(Options {
        retry_delay: Duration::zero(),
        // Records caught by the kill wait in the DLQ until their keys' locks
        // (the killed invocation's deadline) expire, then go out once.
        function_timeout: StdDuration::from_secs(5),
        dlq_retry_interval: StdDuration::from_secs(1),
        dlq_retry: dlq_retry::Settings {
            max_retries: 100,
            backoff_base: Duration::zero(),
            backoff_max: Duration::zero(),
            ..Default::default()
        },
        delivery_faults: faults.clone(),
        ..Options::default()
    })
    .await;
    // Slow answers, so the kill lands while sends are on their way (the
    // sandbox has them, and has not accepted them yet).
    p.sandbox.fail_next(FailurePlan {
        delay_ms: Some(500),
        ..FailurePlan::fail(u32::MAX, 200)
    });
    let seeded = seed(&p.repo, 12, 12, 100_000, 10_000).await;
    let mut reservations = Vec::new();
    for (user, seat) in seeded.users.iter().zip(&seeded.seats) {
        let (status, hold) = p.hold(&user.jwt, seat.id).await;
        assert_eq!(status, 201, "{hold}");
        let reservation = hold["reservationId"].as_str().unwrap().to_owned();
        let (status, paid) = p.pay(&user.jwt, &reservation).await;
        assert_eq!(status, 200, "{paid}");
        reservations.push(reservation);
    }
    p.wait_for_messages(12, StdDuration::from_secs(60)).await;
    // A second copy would have shown up before markers sent behind every
    // reservation's records and dead letters (the killed invocation's records
    // wait in the DLQ until its locks expire).
    let reservations: Vec<&str> = reservations.iter().map(String::as_str).collect();
    p.settle_retries(&reservations).await;

    let mut per_customer: HashMap<String, usize> = HashMap::new();
    for message in p.messages() {
        let customer = seeded
            .users
            .iter()
            .find(|u| message.text.contains(u.user.mail.as_str()))
            .map(|u| u.user.mail.as_str().to_owned())
            .unwrap_or_else(|| panic!("a message for nobody: {}", message.text));
        *per_customer.entry(customer).or_default() += 1;
    }
    assert_eq!(
        per_customer.len(),
        12,
        "every customer told: {per_customer:?}"
    );
    assert_eq!(faults.injected.killed(), 1, "one invocation killed");
    assert!(
        faults.injected.duplicated_batches() > 0,
        "batches delivered twice"
    );
    assert!(
        p.sandbox.attempts() > 12,
        "the kill dropped sends on their way ({} attempts)",
        p.sandbox.attempts()
    );
    assert!(
        per_customer.values().all(|n| *n == 1),
        "each once: {per_customer:?}"
    );
    p.stop().await;
}
