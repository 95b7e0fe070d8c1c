//! `ops failed` as an operator runs it: the real binary against moto and tansu.

use aws_config::{BehaviorVersion, Region};
use chrono::Utc;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use shared::config::{TableNames, TopicNames};
use shared::dead_letter::{self, DeadLetter};
use shared::domain::ReservationId;
use shared::dynamodb::{DynamoFailureLedger, create_tables};
use shared::kafka::{KafkaPublisher, KafkaSettings, ProducerSettings, create_topics};
use shared::kafka_event::DecodedRecord;
use shared::ledger::{FailureLedger, LedgerFailure, LedgerStatus};
use shared::ports::EventPublisher;
use std::process::{Command, Output};
use std::time::Duration;

struct Env {
    tables: TableNames,
    topics: TopicNames,
    ledger: DynamoFailureLedger,
    kafka: KafkaSettings,
}

fn endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:4566".into())
}

async fn env() -> Env {
    let prefix = format!("ops-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let tables = TableNames::with_prefix(&prefix);
    let topics = TopicNames::with_prefix(&prefix);
    let aws = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint())
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "ops",
        ))
        .load()
        .await;
    let client = aws_sdk_dynamodb::Client::new(&aws);
    create_tables(&client, &tables).await.unwrap();
    let kafka = KafkaSettings::new(
        std::env::var("KAFKA_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".into()),
    );
    create_topics(&kafka, &topics.all(), 1).await.unwrap();
    Env {
        ledger: DynamoFailureLedger::new(client, tables.failed_messages.clone()),
        tables,
        topics,
        kafka,
    }
}

fn ops(env: &Env, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ops"))
        .args(args)
        .env("AWS_ENDPOINT_URL", endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("KAFKA_BOOTSTRAP_SERVERS", &env.kafka.bootstrap_servers)
        .env("FAILED_MESSAGES_TABLE", &env.tables.failed_messages)
        .env(
            "TOPIC_PAYMENT_COMPLETED_DLQ",
            &env.topics.payment_completed_dlq,
        )
        .env(
            "TOPIC_PAYMENT_COMPLETED_FAILED",
            &env.topics.payment_completed_failed,
        )
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A notification that failed for good: on the failed topic and FAILED in the ledger.
async fn failed_event(env: &Env) -> String {
    let envelope = shared::fixtures::payment_completed_envelope(
        ReservationId::random(),
        "ops@example.com",
        5_000,
    );
    let original = DecodedRecord {
        topic: env.topics.payment_completed.clone(),
        partition: 0,
        offset: 12,
        timestamp_ms: Utc::now().timestamp_millis(),
        key: Some(envelope.aggregate_id.clone().into_bytes()),
        value: Some(envelope.to_json().into_bytes()),
        headers: vec![(
            "event-id".into(),
            envelope.event_id.to_string().into_bytes(),
        )],
    };
    let error = shared::Error::Channel {
        channel: "telegram",
        retryable: false,
        retry_after: None,
        message: "sendMessage answered HTTP 403: bot was blocked".into(),
        source: None,
    };
    let letter = DeadLetter::new(original, &error, 3, Utc::now());
    let publisher = KafkaPublisher::new(&env.kafka, &ProducerSettings::default()).unwrap();
    for r in publisher
        .publish_all(&[letter.to_record(&env.topics.payment_completed_failed)])
        .await
    {
        r.unwrap();
    }
    env.ledger
        .record_failure(&LedgerFailure {
            event_id: letter.event_id(),
            event_type: Some("PaymentCompleted".into()),
            status: LedgerStatus::Failed,
            error_kind: letter.error_kind.clone(),
            error_message: letter.error_message.clone(),
            topic: env.topics.payment_completed.clone(),
            partition: 0,
            offset: 12,
            at: Utc::now(),
        })
        .await
        .unwrap();
    letter.event_id()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_show_print_the_ledger_and_an_unknown_event_exits_1() {
    let env = env().await;
    let event_id = failed_event(&env).await;

    let out = ops(&env, &["failed", "list", "--status", "FAILED"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    assert!(listed.contains(&event_id), "{listed}");
    assert!(listed.contains("HTTP 403"), "{listed}");
    assert!(listed.contains("1 rows"), "{listed}");

    let out = ops(&env, &["failed", "list", "--status", "PENDING"]);
    assert!(text(&out.stdout).contains("0 rows"));

    let out = ops(&env, &["failed", "show", &event_id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["status"], "FAILED");
    assert_eq!(shown["attempts"], 1);
    assert_eq!(shown["original"]["offset"], 12);

    let out = ops(&env, &["failed", "show", "no-such-event"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no ledger row for event no-such-event"));

    let out = ops(&env, &["failed", "list", "--status", "LOST"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("unknown ledger status"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_puts_the_dead_letter_back_on_the_dlq_with_retry_count_0_and_the_ledger_pending() {
    let env = env().await;
    let event_id = failed_event(&env).await;

    let out = ops(&env, &["failed", "redrive", &event_id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("re-drove"));
    let entry = env.ledger.get(&event_id).await.unwrap().unwrap();
    assert_eq!(entry.status, LedgerStatus::Pending);

    let consumer: StreamConsumer = env
        .kafka
        .client_config()
        .set("group.id", format!("ops-test-{}", uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer
        .subscribe(&[&env.topics.payment_completed_dlq])
        .unwrap();
    let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .unwrap()
        .unwrap();
    let header = |name: &str| {
        message
            .headers()
            .unwrap()
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(header(dead_letter::RETRY_COUNT).as_deref(), Some("0"));
    assert_eq!(header("event-id"), Some(event_id.clone()));
    assert_eq!(header(dead_letter::ORIGINAL_OFFSET).as_deref(), Some("12"));
    assert!(message.payload().is_some());

    let out = ops(&env, &["failed", "redrive"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--all-failed"));
}
