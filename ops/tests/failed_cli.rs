//! `ops failed` as an operator runs it: the real binary against moto and tansu.

use aws_config::{BehaviorVersion, Region};
use chrono::Utc;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use shared::config::{TableNames, TopicNames};
use shared::dead_letter::{self, DeadLetter};
use shared::delivery::{DeadLetterSink, Disposition};
use shared::delivery::{PARKED_AMBIGUOUS, send_key};
use shared::domain::ReservationId;
use shared::dynamodb::{DynamoFailureLedger, DynamoIdempotencyStore, create_tables};
use shared::events::HEADER_EVENT_TYPE;
use shared::idempotency::IdempotencyStore;
use shared::kafka::{KafkaPublisher, KafkaSettings, ProducerSettings, create_topics};
use shared::ledger::{FailureLedger, LedgerStatus};
use shared::notification::ChannelKind;
use std::process::{Command, Output};
use std::time::Duration;

struct Env {
    tables: TableNames,
    topics: TopicNames,
    ledger: DynamoFailureLedger,
    keys: DynamoIdempotencyStore,
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
        ledger: DynamoFailureLedger::new(client.clone(), tables.failed_messages.clone()),
        keys: DynamoIdempotencyStore::new(client, tables.idempotency.clone()),
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
        .env("IDEMPOTENCY_TABLE", &env.tables.idempotency)
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

/// A notification of a new event that failed for good on Telegram: on the
/// failed topic and FAILED in the ledger.
async fn failed_event(env: &Env) -> String {
    let envelope = shared::fixtures::payment_completed_envelope(
        ReservationId::random(),
        "ops@example.com",
        5_000,
    );
    let event_id = envelope.event_id.to_string();
    failed_on(env, &envelope, ChannelKind::Telegram, LedgerStatus::Failed).await;
    event_id
}

/// Parks the event's notification on `channel` as the notifier does (through
/// the same sink): its dead letter on the failed topic (FAILED) or the
/// dead-letter topic (PENDING), and its ledger row.
async fn failed_on(
    env: &Env,
    envelope: &shared::events::EventEnvelope,
    channel: ChannelKind,
    status: LedgerStatus,
) {
    let error = shared::Error::from(shared::InfraError::Channel {
        channel: channel.name(),
        retryable: false,
        maybe_delivered: false,
        retry_after: None,
        message: "answered HTTP 403: bot was blocked".into(),
        source: None,
    });
    failed_with(env, envelope, channel, status, &error).await;
}

/// [`failed_on`], failed with `error`.
async fn failed_with(
    env: &Env,
    envelope: &shared::events::EventEnvelope,
    channel: ChannelKind,
    status: LedgerStatus,
    error: &shared::Error,
) {
    let mut original = shared::fixtures::record_of(envelope, &env.topics.payment_completed, 12);
    original.headers.push((
        HEADER_EVENT_TYPE.into(),
        envelope.event_type.as_str().as_bytes().to_vec(),
    ));
    let letter = DeadLetter::new(original, error, 3, Utc::now()).on_channel(channel);
    let disposition = if status == LedgerStatus::Failed {
        Disposition::Park
    } else {
        Disposition::Retry
    };
    let sink = DeadLetterSink::new(
        KafkaPublisher::new(&env.kafka, &ProducerSettings::default()).unwrap(),
        env.ledger.clone(),
        env.topics.clone(),
    );
    sink.dead_letter(&letter, disposition, Utc::now())
        .await
        .unwrap();
}

/// The first `n` records of the dead-letter topic.
async fn dlq_records(env: &Env, n: usize) -> Vec<rdkafka::message::OwnedMessage> {
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
    let mut records = Vec::new();
    while records.len() < n {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("a record on the dead-letter topic")
            .unwrap();
        records.push(message.detach());
    }
    records
}

fn header_of(message: &rdkafka::message::OwnedMessage, name: &str) -> Option<String> {
    shared::kafka::decoded_message(message)
        .header(name)
        .map(str::to_owned)
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
    assert_eq!(shown[0]["status"], "FAILED");
    assert_eq!(shown[0]["channel"], "telegram");
    assert_eq!(shown[0]["attempts"], 1);
    assert_eq!(shown[0]["original"]["offset"], 12);

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
    let entry = env
        .ledger
        .get(&event_id, Some(ChannelKind::Telegram))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.status, LedgerStatus::Pending);

    let message = dlq_records(&env, 1).await.remove(0);
    let header = |name: &str| header_of(&message, name);
    assert_eq!(header(dead_letter::RETRY_COUNT).as_deref(), Some("0"));
    assert_eq!(header("event-id"), Some(event_id.clone()));
    assert_eq!(header(dead_letter::ORIGINAL_OFFSET).as_deref(), Some("12"));
    assert_eq!(
        header(dead_letter::NOTIFICATION_CHANNEL).as_deref(),
        Some("telegram")
    );
    assert!(message.payload().is_some());

    let out = ops(&env, &["failed", "redrive"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--all-failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_failed_on_one_channel_is_redriven_on_that_channel_only() {
    let env = env().await;
    let envelope = shared::fixtures::payment_completed_envelope(
        ReservationId::random(),
        "two-channels@example.com",
        7_000,
    );
    let event_id = envelope.event_id.to_string();
    // Telegram failed once and a retry delivered it; Discord failed for good.
    failed_on(
        &env,
        &envelope,
        ChannelKind::Telegram,
        LedgerStatus::Pending,
    )
    .await;
    env.ledger
        .mark_processed(&event_id, Some(ChannelKind::Telegram), Utc::now())
        .await
        .unwrap();
    failed_on(&env, &envelope, ChannelKind::Discord, LedgerStatus::Failed).await;

    let out = ops(&env, &["failed", "show", &event_id]);
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows: Vec<(String, String)> = shown
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["channel"].as_str().unwrap().to_owned(),
                r["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("discord".to_owned(), "FAILED".to_owned()),
            ("telegram".to_owned(), "PROCESSED".to_owned())
        ]
    );

    let out = ops(&env, &["failed", "redrive", &event_id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains(&format!("re-drove {event_id} on discord")),
        "{said}"
    );
    assert!(!said.contains("on telegram"), "{said}");
    // The dead-letter topic holds Telegram's first letter and Discord's re-drive.
    let records = dlq_records(&env, 2).await;
    let redriven = &records[1];
    assert_eq!(
        header_of(redriven, dead_letter::NOTIFICATION_CHANNEL).as_deref(),
        Some("discord")
    );
    assert_eq!(
        header_of(redriven, dead_letter::RETRY_COUNT).as_deref(),
        Some("0")
    );
    let telegram = env
        .ledger
        .get(&event_id, Some(ChannelKind::Telegram))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(telegram.status, LedgerStatus::Processed, "left alone");

    let out = ops(
        &env,
        &["failed", "redrive", &event_id, "--channel", "slack"],
    );
    // A usage error (clap's exit code 2), before anything is read or written.
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr)
            .contains("\"slack\" is not a channel: use telegram, discord or data-platform"),
        "{}",
        text(&out.stderr)
    );
}

/// A send parked because it may have reached the customer, as the notifier
/// parks it: its key COMPLETED with the parked answer, its letter on the
/// failed topic, its row FAILED. Answers its event id and key.
async fn parked_ambiguous_send(env: &Env) -> (String, String) {
    let envelope = shared::fixtures::payment_completed_envelope(
        ReservationId::random(),
        "maybe@example.com",
        9_000,
    );
    let event_id = envelope.event_id.to_string();
    let key = send_key(ChannelKind::Telegram, &event_id);
    let now = Utc::now();
    let day = chrono::Duration::days(1);
    env.keys
        .acquire(&key, "hash", now, now + day, now + day)
        .await
        .unwrap();
    env.keys
        .complete(&key, Some(PARKED_AMBIGUOUS.into()), now, now + day)
        .await
        .unwrap();
    let error = shared::Error::from(shared::InfraError::AmbiguousSend {
        channel: "telegram",
        message: "sendMessage timed out waiting for the answer".into(),
        source: None,
    });
    failed_with(
        env,
        &envelope,
        ChannelKind::Telegram,
        LedgerStatus::Failed,
        &error,
    )
    .await;
    (event_id, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_that_may_have_arrived_is_left_by_all_failed_and_reopened_when_redriven_by_its_id() {
    let env = env().await;
    let (event_id, key) = parked_ambiguous_send(&env).await;
    let row = |env: &Env| {
        let ledger = env.ledger.clone();
        let id = event_id.clone();
        async move {
            ledger
                .get(&id, Some(ChannelKind::Telegram))
                .await
                .unwrap()
                .unwrap()
        }
    };
    let listed = text(&ops(&env, &["failed", "list"]).stdout);
    assert!(listed.contains("may have reached the customer"), "{listed}");

    let out = ops(&env, &["failed", "redrive", "--all-failed"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains(&format!("left {event_id} on telegram")),
        "{said}"
    );
    assert!(said.contains("nothing to re-drive"), "{said}");
    assert_eq!(row(&env).await.status, LedgerStatus::Failed);
    assert!(env.keys.get(&key).await.unwrap().is_some(), "key kept");

    let out = ops(&env, &["failed", "redrive", &event_id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(said.contains("re-driven on your word"), "{said}");
    assert!(env.keys.get(&key).await.unwrap().is_none(), "key reopened");
    assert_eq!(row(&env).await.status, LedgerStatus::Pending);
    let letter = dlq_records(&env, 1).await.remove(0);
    assert_eq!(header_of(&letter, "event-id"), Some(event_id));
}
