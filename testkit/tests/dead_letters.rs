//! Where a failed notification ends up, on the real stack: the dead-letter topic
//! with Spring-style diagnostic headers and the ledger; the failed topic for
//! poison records; and a failed invocation when the dead letter cannot be written.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use local_runner::invoke::invoke;
use local_runner::notification_sandbox::FailurePlan;
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use serde_json::json;
use shared::dead_letter;
use shared::domain::ReservationId;
use shared::dynamodb::DynamoFailureLedger;
use shared::events::EventEnvelope;
use shared::kafka::{KafkaPublisher, KafkaSettings, ProducerSettings};
use shared::kafka_event::encode_headers;
use shared::ledger::LedgerStatus;
use shared::notification::ChannelKind;
use shared::ports::{EventPublisher, OutboundRecord};
use std::time::Duration;
use testkit::{DirectNotifier, Options, TestPipeline, consume, eventually, header, kafka, seed};

/// The status of the ledger row of `event_id` on `channel`, once it exists.
async fn ledger_status(
    p: &TestPipeline,
    event_id: &str,
    channel: Option<ChannelKind>,
    timeout: Duration,
) -> LedgerStatus {
    let ledger = DynamoFailureLedger::new(p.dynamodb.clone(), p.tables.failed_messages.clone());
    let what = format!("a ledger row for {event_id}");
    eventually(timeout, &what, || async {
        let entry = ledger.get(event_id, channel).await.unwrap();
        entry.map(|e| e.status)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_telegram_down_the_payment_succeeds_and_the_event_waits_in_the_dlq_and_the_ledger() {
    let p = TestPipeline::start(Options::default()).await;
    p.sandbox.fail_next(FailurePlan::fail(1_000, 502));
    let s = seed(&p.repo, 1, 1, 100_000, 50_000).await;
    let fan = &s.users[0];
    let (status, held) = p.hold(&fan.jwt, s.seats[0].id).await;
    assert_eq!(status, 201, "{held}");
    let reservation = held["reservationId"].as_str().unwrap().to_owned();
    let (status, paid) = p.pay(&fan.jwt, &reservation).await;
    assert_eq!(
        status, 200,
        "a Telegram outage never fails a payment: {paid}"
    );

    let dead = consume(
        &kafka().bootstrap_servers,
        &p.topics.payment_completed_dlq,
        1,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(dead.len(), 1);
    let record = &dead[0];
    assert_eq!(record.key(), Some(reservation.as_bytes()));
    let envelope = EventEnvelope::from_json(record.payload().unwrap()).unwrap();
    let event_id = envelope.event_id.to_string();
    assert_eq!(header(record, "event-id"), Some(event_id.clone()));
    assert_eq!(
        header(record, dead_letter::ORIGINAL_TOPIC).as_deref(),
        Some(p.topics.payment_completed.as_str())
    );
    assert!(header(record, dead_letter::ORIGINAL_PARTITION).is_some());
    assert!(header(record, dead_letter::ORIGINAL_OFFSET).is_some());
    assert_eq!(
        header(record, dead_letter::EXCEPTION_FQCN).as_deref(),
        Some("shared::Error::Channel")
    );
    assert!(
        header(record, dead_letter::EXCEPTION_MESSAGE)
            .unwrap()
            .contains("HTTP 502")
    );
    assert_eq!(
        header(record, dead_letter::RETRY_COUNT).as_deref(),
        Some("0")
    );
    let next: chrono::DateTime<chrono::Utc> = header(record, dead_letter::NEXT_ATTEMPT_AT)
        .unwrap()
        .parse()
        .unwrap();
    assert!(next > chrono::Utc::now());

    assert_eq!(
        ledger_status(
            &p,
            &event_id,
            Some(ChannelKind::Telegram),
            Duration::from_secs(10)
        )
        .await,
        LedgerStatus::Pending
    );
    let entry = DynamoFailureLedger::new(p.dynamodb.clone(), p.tables.failed_messages.clone())
        .get(&event_id, Some(ChannelKind::Telegram))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.attempts, 1);
    assert!(
        entry.last_error.contains("HTTP 502"),
        "{}",
        entry.last_error
    );
    assert!(p.sandbox.messages().is_empty());
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_record_goes_to_the_failed_topic_and_the_partition_keeps_flowing() {
    let p = TestPipeline::start(Options {
        partitions: 1,
        ..Options::default()
    })
    .await;
    let publisher = KafkaPublisher::new(&kafka(), &ProducerSettings::default()).unwrap();
    for result in publisher
        .publish_all(&[OutboundRecord {
            topic: p.topics.payment_completed.clone(),
            key: Some(b"poison".to_vec()),
            value: Some(b"{not json".to_vec()),
            headers: vec![],
            event_id: "poison".into(),
        }])
        .await
    {
        result.unwrap();
    }
    // A good payment behind it on the same partition still gets through.
    let s = seed(&p.repo, 1, 1, 100_000, 50_000).await;
    let fan = &s.users[0];
    let (_, held) = p.hold(&fan.jwt, s.seats[0].id).await;
    let (status, _) = p
        .pay(&fan.jwt, held["reservationId"].as_str().unwrap())
        .await;
    assert_eq!(status, 200);
    p.wait_for_messages(1, Duration::from_secs(30)).await;

    let failed = consume(
        &kafka().bootstrap_servers,
        &p.topics.payment_completed_failed,
        1,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(failed.len(), 1);
    let record = &failed[0];
    assert_eq!(record.payload(), Some(&b"{not json"[..]));
    assert_eq!(record.key(), Some(&b"poison"[..]));
    assert_eq!(
        header(record, dead_letter::EXCEPTION_FQCN).as_deref(),
        Some("shared::Error::MalformedEvent")
    );
    assert!(
        header(record, dead_letter::EXCEPTION_MESSAGE)
            .unwrap()
            .contains("not an event envelope")
    );
    let coordinates = format!("{}-0@0", p.topics.payment_completed);
    assert_eq!(
        ledger_status(&p, &coordinates, None, Duration::from_secs(10)).await,
        LedgerStatus::Failed
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_the_dead_letter_cannot_be_written_the_invocation_fails_and_nothing_is_recorded() {
    // The dead letters go to a broker that is down.
    let cluster = MockCluster::new(1).unwrap();
    cluster.broker_down(1).unwrap();
    let d = DirectNotifier::start_with(|config| {
        config.delivery.kafka = KafkaSettings::new(cluster.bootstrap_servers());
        config.delivery.producer = ProducerSettings {
            message_timeout: Duration::from_secs(2),
            ..ProducerSettings::default()
        };
    })
    .await;
    d.sandbox.fail_next(FailurePlan::fail(10, 503));
    let envelope = shared::fixtures::payment_completed_envelope(
        ReservationId::random(),
        "dlq-down@example.com",
        9_000,
    );
    let event = kafka_event(&d.topics.payment_completed, 7, &envelope);
    let result = invoke("notifier", Duration::from_secs(30), event, |e| {
        d.notifier.handle(e)
    })
    .await;
    let err = result.unwrap_err();
    assert!(err.to_string().contains("publishing event"), "{err}");
    let ledger = DynamoFailureLedger::new(d.dynamodb.clone(), d.tables.failed_messages.clone());
    assert!(
        ledger
            .get(&envelope.event_id.to_string(), Some(ChannelKind::Telegram))
            .await
            .unwrap()
            .is_none()
    );
    assert!(d.sandbox.messages().is_empty());
}

/// The event Lambda's Kafka source gives the notifier for `envelope` at
/// `offset` of partition 0 of `topic`.
fn kafka_event(topic: &str, offset: i64, envelope: &EventEnvelope) -> serde_json::Value {
    json!({
        "eventSource": "SelfManagedKafka",
        "records": {format!("{topic}-0"): [{
            "topic": topic, "partition": 0, "offset": offset,
            "timestamp": 1_800_000_000_000i64, "timestampType": "CREATE_TIME",
            "key": STANDARD.encode(envelope.aggregate_id.as_bytes()),
            "value": STANDARD.encode(envelope.to_json()),
            "headers": encode_headers([("event-id", envelope.event_id.to_string().as_bytes())]),
        }]}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_notifier_builds_its_dead_letter_producer_at_its_first_dead_letter_not_at_init() {
    let d = DirectNotifier::start_with(|_| {}).await;
    let (notifier, sandbox, topics) = (&d.notifier, &d.sandbox, &d.topics);
    let producer_built = || notifier.sink().publisher().is_built();
    assert!(!producer_built(), "no producer at init");

    // A payment's record at `offset`, handled by the notifier.
    let topic = &topics.payment_completed;
    let notify = |offset: i64| async move {
        let envelope = shared::fixtures::payment_completed_envelope(
            ReservationId::random(),
            "n@example.com",
            10,
        );
        let event = kafka_event(topic, offset, &envelope);
        invoke("notifier", Duration::from_secs(30), event, |e| {
            notifier.handle(e)
        })
        .await
        .unwrap();
        envelope
    };

    notify(1).await;
    assert_eq!(sandbox.messages().len(), 1);
    assert!(!producer_built(), "a delivered record builds no producer");

    sandbox.fail_next(FailurePlan::fail(10, 503));
    let failed = notify(2).await;
    assert!(producer_built(), "the first dead letter built it");
    let dead = consume(
        &kafka().bootstrap_servers,
        &topics.payment_completed_dlq,
        1,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        header(&dead[0], "event-id"),
        Some(failed.event_id.to_string())
    );
    let ledger = DynamoFailureLedger::new(d.dynamodb.clone(), d.tables.failed_messages.clone());
    let entry = ledger
        .get(&failed.event_id.to_string(), Some(ChannelKind::Telegram))
        .await
        .unwrap()
        .expect("a ledger row for the dead letter");
    assert_eq!(entry.status, LedgerStatus::Pending);
}
