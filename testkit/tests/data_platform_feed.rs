//! The data-platform feed on the real stack (moto, tansu, the sandbox's
//! platform over HTTP): every sale reaches the platform once, in batches, under
//! duplicate delivery; an outage leaves the events on the dead-letter topic with
//! PENDING rows until dlq-retry delivers each once; an event the platform
//! refuses is parked alone.

use aws_lambda_events::kafka::{KafkaEvent, KafkaRecord};
use chrono::{Duration, Utc};
use data_platform_feed::{Config, LambdaFeed};
use local_runner::notification_sandbox::{
    FailurePlan, NotificationSandbox, channel_settings, data_platform_settings,
};
use serde_json::Value;
use shared::channels::DATA_PLATFORM;
use shared::dead_letter;
use shared::dynamodb::DynamoFailureLedger;
use shared::kafka::ProducerSettings;
use shared::ledger::LedgerStatus;
use shared::notification::{ChannelKind, ChannelRoutes};
use std::sync::Arc;
use std::time::Duration as StdDuration;
use testkit::{aws, consume, header, kafka, notifier_config, provision};

struct Stack {
    feed: LambdaFeed,
    sandbox: NotificationSandbox,
    config: Config,
    dynamodb: aws_sdk_dynamodb::Client,
    sandbox_addr: std::net::SocketAddr,
}

/// A feed of its own (unique tables and topics) sending `batch_size` events a request.
async fn stack(batch_size: usize) -> Stack {
    testkit::init_logs();
    let aws = aws().await;
    let (tables, topics) = provision(&aws, 1).await;
    let sandbox = NotificationSandbox::default();
    let sandbox_addr = sandbox.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut platform = data_platform_settings(sandbox_addr);
    platform.batch_size = batch_size;
    platform.timeout = StdDuration::from_millis(500);
    let config = Config {
        tables,
        platform,
        idempotency_ttl: Duration::days(7),
        kafka: kafka().with_property(shared::kafka::TANSU_ONE_RECORD_PER_BATCH),
        producer: ProducerSettings::default(),
        topics,
        retry_delay: Duration::zero(),
    };
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    let feed = LambdaFeed::from_config(
        &config,
        dynamodb.clone(),
        Arc::new(shared::clock::SystemClock),
    )
    .unwrap();
    Stack {
        feed,
        sandbox,
        config,
        dynamodb,
        sandbox_addr,
    }
}

impl Stack {
    /// `n` sales of partition 0, as Lambda delivers them: (records, event ids).
    fn sales(&self, n: i64) -> (Vec<KafkaRecord>, Vec<String>) {
        (0..n)
            .map(|offset| {
                let envelope = shared::fixtures::payment_completed_envelope(
                    shared::domain::ReservationId::random(),
                    "feed@example.com",
                    150_000,
                );
                let record = shared::fixtures::record_of(
                    &envelope,
                    &self.config.topics.payment_completed,
                    offset,
                );
                (
                    shared::kafka_event::encode_record(&record),
                    envelope.event_id.to_string(),
                )
            })
            .unzip()
    }

    async fn feed(&self, records: Vec<KafkaRecord>) -> Value {
        let mut event = KafkaEvent::default();
        event.records.insert(
            format!("{}-0", self.config.topics.payment_completed),
            records,
        );
        local_runner::invoke::invoke(
            "data-platform-feed",
            StdDuration::from_secs(30),
            serde_json::to_value(event).unwrap(),
            |e| self.feed.handle(e),
        )
        .await
        .unwrap()
    }

    fn ledger(&self) -> DynamoFailureLedger {
        DynamoFailureLedger::new(
            self.dynamodb.clone(),
            self.config.tables.failed_messages.clone(),
        )
    }

    async fn row(&self, event_id: &str) -> shared::ledger::LedgerEntry {
        self.ledger()
            .get(event_id, Some(ChannelKind::DataPlatform))
            .await
            .unwrap()
            .expect("a ledger row")
    }

    fn taken(&self) -> Vec<String> {
        self.sandbox
            .platform_events()
            .into_iter()
            .map(|e| e.event_id)
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_sale_reaches_the_platform_once_in_batches_even_when_the_batch_comes_twice() {
    let s = stack(4).await;
    let (records, ids) = s.sales(10);

    let answer = s.feed(records.clone()).await;
    assert_eq!(answer["delivered"], 10, "{answer}");
    assert_eq!(answer["batchItemFailures"], serde_json::json!([]));
    assert_eq!(s.taken(), ids, "each once, in offset order");
    assert!(
        !s.feed.sink().publisher().is_built(),
        "delivered events build no dead-letter producer"
    );
    assert_eq!(
        s.sandbox.platform_requests(),
        3,
        "10 events in requests of 4"
    );

    // The event source delivers the batch again: nothing is sent twice.
    s.feed(records).await;
    assert_eq!(s.sandbox.platform_requests(), 3);
    assert!(s.sandbox.platform_duplicates().is_empty());
    assert!(
        !serde_json::to_string(&s.sandbox.platform_events())
            .unwrap()
            .contains("feed@example.com"),
        "the platform never gets the mail"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_outage_leaves_the_events_on_the_dead_letter_topic_until_dlq_retry_delivers_each_once() {
    let s = stack(50).await;
    let (records, ids) = s.sales(3);
    s.sandbox
        .fail_next(FailurePlan::fail(1, 503).on(DATA_PLATFORM));

    assert!(!s.feed.sink().publisher().is_built(), "none at init");
    let answer = s.feed(records).await;
    assert_eq!(answer["deadLettered"], 3, "{answer}");
    assert!(
        s.feed.sink().publisher().is_built(),
        "the first dead letter built it"
    );
    let letters = consume(
        &kafka().bootstrap_servers,
        &s.config.topics.payment_completed_dlq,
        3,
        StdDuration::from_secs(30),
    )
    .await;
    for letter in &letters {
        assert_eq!(
            header(letter, dead_letter::NOTIFICATION_CHANNEL).as_deref(),
            Some(DATA_PLATFORM)
        );
    }
    for id in &ids {
        assert_eq!(s.row(id).await.status, LedgerStatus::Pending);
    }

    // The platform is back: dlq-retry sends each, once.
    let delivery = notifier_config(
        &s.config.tables,
        &s.config.topics,
        channel_settings(s.sandbox_addr, ChannelRoutes::default()),
    )
    .delivery;
    let retry = dlq_retry::LambdaDlqRetry::from_config(
        dlq_retry::Config {
            delivery,
            settings: dlq_retry::Settings {
                group_id: testkit::unique("dlq-retry"),
                backoff_base: Duration::zero(),
                backoff_max: Duration::zero(),
                ..Default::default()
            },
        },
        s.dynamodb.clone(),
        Arc::new(shared::clock::SystemClock),
    )
    .unwrap();
    let report = retry.run(Utc::now() + Duration::seconds(60)).await.unwrap();
    assert_eq!(report.processed, 3, "{report:?}");
    let mut taken = s.taken();
    taken.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(taken, expected);
    for id in &ids {
        assert_eq!(s.row(id).await.status, LedgerStatus::Processed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_the_platform_refuses_is_parked_alone_and_the_others_go_through() {
    let s = stack(50).await;
    let (records, ids) = s.sales(3);
    s.sandbox.reject_events(&ids[1..2], "unknown concert");

    let answer = s.feed(records).await;
    assert_eq!(answer["delivered"], 2, "{answer}");
    assert_eq!(s.taken(), [ids[0].clone(), ids[2].clone()]);
    let row = s.row(&ids[1]).await;
    assert_eq!(row.status, LedgerStatus::Failed);
    assert!(row.last_error.contains("unknown concert"), "{row:?}");
    let parked = consume(
        &kafka().bootstrap_servers,
        &s.config.topics.payment_completed_failed,
        1,
        StdDuration::from_secs(30),
    )
    .await;
    assert_eq!(
        header(&parked[0], shared::events::HEADER_EVENT_ID).as_deref(),
        Some(ids[1].as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_whose_answer_was_lost_is_sent_again_and_the_platform_keeps_each_event_once() {
    let s = stack(50).await;
    let (records, ids) = s.sales(2);
    s.sandbox
        .fail_next(FailurePlan::answer_lost(1, 2_000).on(DATA_PLATFORM));

    let answer = s.feed(records.clone()).await;
    assert_eq!(answer["deadLettered"], 2, "{answer}");
    // The batch comes again (or dlq-retry sends it): taken once, the copy counted.
    s.feed(records).await;
    assert_eq!(s.taken(), ids);
    assert_eq!(s.sandbox.platform_duplicates(), ids);
}

/// Holds and pays for `n` seats through the pipeline: the reservations.
async fn pay(p: &testkit::TestPipeline, n: u32) -> Vec<String> {
    let s = testkit::seed(&p.repo, n, n, 100_000, 50_000).await;
    let mut paid = Vec::new();
    for (fan, seat) in s.users.iter().zip(&s.seats) {
        paid.push(p.hold_and_pay(&fan.jwt, seat.id).await);
    }
    paid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_notifier_failing_does_not_delay_the_feed_nor_the_feed_failing_the_notifier() {
    let p = testkit::TestPipeline::start(testkit::Options {
        data_platform: true,
        ..testkit::Options::default()
    })
    .await;
    // Telegram down: the sales still reach the platform at once.
    p.sandbox
        .fail_next(FailurePlan::fail(1_000, 503).on(local_runner::notification_sandbox::TELEGRAM));
    pay(&p, 2).await;
    testkit::eventually(
        StdDuration::from_secs(60),
        "the platform has both sales",
        || async { (p.sandbox.platform_events().len() == 2).then_some(()) },
    )
    .await;
    assert!(p.messages().is_empty(), "Telegram is still down");

    // The platform down: the customers are still told at once.
    p.sandbox
        .fail_next(FailurePlan::fail(1_000, 503).on(DATA_PLATFORM));
    pay(&p, 1).await;
    p.wait_for_messages(1, StdDuration::from_secs(60)).await;
    assert_eq!(p.sandbox.platform_events().len(), 2, "the platform is down");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_sale_reaches_the_platform_once_through_a_killed_invocation_and_duplicate_batches() {
    let faults = local_runner::kafka_source::DeliveryFaults {
        duplicate: true,
        kill_once_after: Some(StdDuration::from_millis(100)),
        ..Default::default()
    };
    let p = testkit::TestPipeline::start(testkit::Options {
        data_platform: true,
        // A killed invocation's keys stay locked until its deadline.
        function_timeout: StdDuration::from_secs(3),
        delivery_faults: faults.clone(),
        ..testkit::Options::retrying_at_once()
    })
    .await;
    // The platform answers slowly at first: the first feed invocation is
    // killed while it waits.
    p.sandbox.fail_next(FailurePlan {
        delay_ms: Some(400),
        ..FailurePlan::fail(1, 200).on(DATA_PLATFORM)
    });
    let reservations = pay(&p, 3).await;
    let taken = testkit::eventually(
        StdDuration::from_secs(90),
        "the platform has every sale",
        || async {
            let events = p.sandbox.platform_events();
            (events.len() >= 3).then_some(events)
        },
    )
    .await;
    let mut sales: Vec<String> = taken
        .iter()
        .map(|e| e.event["aggregateId"].as_str().unwrap().to_owned())
        .collect();
    sales.sort();
    let mut expected = reservations.clone();
    expected.sort();
    assert_eq!(sales, expected, "each sale once");
    // The feed's first invocation, waiting 400 ms on the platform, is always
    // killed (the notifier's too, when it runs past 100 ms); batches came twice.
    assert!(faults.injected.killed() >= 1);
    assert!(faults.injected.duplicated_batches() >= 2);
    p.stop().await;
}
