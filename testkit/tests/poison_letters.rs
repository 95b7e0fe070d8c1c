//! A dead letter that cannot be written as it is never stalls its partition, on
//! the real stack (tansu, moto): a garbled `event-id` header falls back to the
//! envelope's id for the ledger key; a letter over the topic's size limit is
//! written with its value cut and the reason; one refused even cut is logged,
//! counted in the notifier's answer and skipped while the batch goes on.

use chrono::Duration;
use local_runner::invoke::invoke;
use local_runner::notification_sandbox::FailurePlan;
use notifier::LambdaNotifier;
use serde_json::Value;
use shared::dead_letter;
use shared::domain::ReservationId;
use shared::kafka::decoded_message;
use shared::kafka_event::{DecodedRecord, encode_record};
use shared::ledger::LedgerStatus;
use std::sync::Arc;
use std::time::Duration as StdDuration;
use testkit::{DirectNotifier, consume, kafka};

const WAIT: StdDuration = StdDuration::from_secs(30);

async fn direct() -> DirectNotifier {
    DirectNotifier::start(Duration::zero(), StdDuration::from_secs(5)).await
}

/// A PaymentCompleted record of the payment topic at `offset`, decoded.
fn payment(d: &DirectNotifier, offset: i64) -> (DecodedRecord, String) {
    let envelope = shared::fixtures::payment_completed_envelope(
        ReservationId::random(),
        "poison@example.com",
        1_000,
    );
    let record = shared::fixtures::record_of(&envelope, &d.topics.payment_completed, offset);
    (record, envelope.event_id.to_string())
}

/// A record whose value is `bytes` bytes of something that is not an event.
fn garbage(d: &DirectNotifier, offset: i64, bytes: usize) -> DecodedRecord {
    let (mut record, _) = payment(d, offset);
    record.value = Some(vec![b'#'; bytes]);
    record
}

/// The first letter on the failed topic.
async fn first_parked(d: &DirectNotifier) -> DecodedRecord {
    let failed = consume(
        &kafka().bootstrap_servers,
        &d.topics.payment_completed_failed,
        1,
        WAIT,
    )
    .await;
    decoded_message(&failed[0])
}

/// The notifier of `d` whose producer refuses records over `max_bytes`.
fn limited_notifier(d: &DirectNotifier, max_bytes: usize) -> LambdaNotifier {
    let mut config = d.config.clone();
    config.delivery.kafka = config
        .delivery
        .kafka
        .with_property(("message.max.bytes", &max_bytes.to_string()));
    LambdaNotifier::from_config(
        &config,
        d.dynamodb.clone(),
        Arc::new(shared::clock::SystemClock),
    )
    .unwrap()
}

/// Invokes `notifier` with `records` of partition 0; its answer.
async fn deliver(
    d: &DirectNotifier,
    notifier: &LambdaNotifier,
    records: &[DecodedRecord],
) -> Value {
    let mut event = aws_lambda_events::kafka::KafkaEvent::default();
    event.records.insert(
        format!("{}-0", d.topics.payment_completed),
        records.iter().map(encode_record).collect(),
    );
    invoke(
        "notifier",
        StdDuration::from_secs(30),
        serde_json::to_value(event).unwrap(),
        |e| notifier.handle(e),
    )
    .await
    .expect("the invocation succeeds: nothing in the batch may stall it")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_record_with_an_over_long_event_id_header_is_parked_under_the_envelopes_id() {
    let d = direct().await;
    let (mut record, event_id) = payment(&d, 0);
    for (name, value) in record.headers.iter_mut() {
        if name == "event-id" {
            *value = vec![b'x'; 3_000]; // over DynamoDB's 2,048-byte key limit
        }
    }
    // A header that disagrees with its envelope makes the record poison: it is
    // parked, its ledger row keyed by the envelope's id, not the header.
    deliver(&d, &d.notifier, &[record]).await;

    let row = d.ledger().get(&event_id, None).await.unwrap();
    assert_eq!(row.map(|r| r.status), Some(LedgerStatus::Failed));
    let letter = first_parked(&d).await;
    let message = letter.header(dead_letter::EXCEPTION_MESSAGE).unwrap();
    assert!(
        message.len() <= dead_letter::MAX_ERROR_MESSAGE_BYTES,
        "{}",
        message.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_empty_event_id_header_is_recorded_under_the_envelopes_id() {
    let d = direct().await;
    d.sandbox.fail_next(FailurePlan::fail(1, 502));
    let (mut record, event_id) = payment(&d, 0);
    record.headers.retain(|(name, _)| name != "event-id");
    record.headers.push(("event-id".into(), Vec::new()));
    deliver(&d, &d.notifier, &[record]).await;

    let ledger = d.ledger();
    let rows = ledger.list(None).await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].event_id, event_id, "{rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_letter_over_the_topics_limit_is_written_with_its_value_cut_and_the_reason() {
    let d = direct().await;
    let notifier = limited_notifier(&d, 20_000);
    deliver(&d, &notifier, &[garbage(&d, 5, 50_000)]).await;

    let letter = first_parked(&d).await;
    assert_eq!(
        letter.value.as_ref().map(Vec::len),
        Some(dead_letter::TRUNCATED_VALUE_BYTES)
    );
    let reason = letter.header(dead_letter::TRUNCATED).unwrap();
    assert!(reason.contains("50000 bytes"), "{reason}");
    // The diagnostic headers are all there: it reads back as a dead letter.
    let read = dead_letter::DeadLetter::from_dlq_record(&letter).unwrap();
    assert_eq!(read.original.offset, 5);
    let row = d.ledger().get(&read.event_id(), None).await.unwrap();
    assert_eq!(row.map(|r| r.status), Some(LedgerStatus::Failed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_letter_refused_even_cut_is_skipped_and_counted_and_the_batch_goes_on() {
    let d = direct().await;
    // librdkafka's smallest limit: a cut letter's headers and 4 KiB do not fit.
    let notifier = limited_notifier(&d, 1_000);
    let (good, _) = payment(&d, 1);
    let answer = deliver(&d, &notifier, &[garbage(&d, 0, 50_000), good]).await;

    assert_eq!(answer["skippedDeadLetters"], 1, "{answer}");
    assert_eq!(
        answer["batchItemFailures"],
        serde_json::json!([]),
        "{answer}"
    );
    assert_eq!(
        d.sandbox.messages().len(),
        1,
        "the record behind it was sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_dynamodb_refuses_is_a_failure_for_good_not_one_to_retry() {
    use shared::ledger::{FailureLedger, LedgerFailure};
    let d = direct().await;
    let refused = d
        .ledger()
        .record_failure(&LedgerFailure {
            event_id: "x".repeat(3_000),
            channel: None,
            event_type: None,
            status: LedgerStatus::Failed,
            error_kind: "test".into(),
            error_message: "test".into(),
            topic: d.topics.payment_completed.clone(),
            partition: 0,
            offset: 0,
            at: chrono::Utc::now(),
        })
        .await
        .unwrap_err();
    assert!(!refused.is_retryable(), "{refused}");
    assert_eq!(refused.code(), "STORAGE_REFUSED");
}
