//! `ops outbox replay` on the real stack (moto's outbox table and its
//! creation-time index, tansu, the notifier's idempotency on moto): items that
//! never reached Kafka are published once each by a replay of their window, as
//! the relay would publish them; replaying a window of events already
//! delivered sends no customer a second message.

use chrono::{Duration, Utc};
use local_runner::http_api::Invoker;
use local_runner::stream_source::{self, FailureQueue, StreamSourceSettings};
use local_runner::template::StreamMapping;
use shared::domain::ReservationId;
use shared::events::EventEnvelope;
use shared::kafka::{KafkaPublisher, ProducerSettings, decoded_message};
use shared::kafka_event::encode_record;
use shared::outbox::OutboxItem;
use shared::outbox::StreamBatchInfo;
use shared::replay::{self, FoundIn, ReplayWindow};
use std::sync::Arc;
use std::time::Duration as StdDuration;
use testkit::{DirectNotifier, consume, kafka};

const WAIT: StdDuration = StdDuration::from_secs(30);

/// Writes an outbox item of a new payment, created `at`, as the payment's
/// transaction does; nothing relays it (no stream source runs here).
async fn outbox_item(d: &DirectNotifier, at: chrono::DateTime<Utc>) -> OutboxItem {
    let envelope: EventEnvelope = shared::fixtures::payment_completed_envelope(
        ReservationId::random(),
        "replay@example.com",
        1_000,
    );
    let item = OutboxItem::new(&envelope, at);
    d.dynamodb
        .put_item()
        .table_name(&d.tables.outbox)
        .set_item(Some(serde_dynamo::to_item(&item).unwrap()))
        .send()
        .await
        .unwrap();
    item
}

/// Replays `window` to the topics of `d`, as `ops outbox replay` does.
async fn replay(d: &DirectNotifier, window: &ReplayWindow) -> Vec<OutboxItem> {
    let items = replay::items_in(&d.dynamodb, &d.tables.outbox, window)
        .await
        .unwrap();
    let publisher = KafkaPublisher::new(&kafka(), &ProducerSettings::default()).unwrap();
    let published = replay::publish(&items, &publisher, &d.topics)
        .await
        .unwrap();
    assert_eq!(published, items.len());
    items
}

/// Hands the payment topic's records from `offset` on to the notifier.
async fn notify_from(d: &DirectNotifier, offset: usize, total: usize) -> Vec<String> {
    let consumed = consume(
        &kafka().bootstrap_servers,
        &d.topics.payment_completed,
        total,
        WAIT,
    )
    .await;
    assert_eq!(consumed.len(), total);
    let records: Vec<_> = consumed[offset..].iter().map(decoded_message).collect();
    d.deliver(records.iter().map(encode_record).collect())
        .await
        .unwrap();
    records
        .iter()
        .map(|r| r.header("event-id").unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replayed_window_is_published_once_as_the_relay_would_and_sends_nobody_twice() {
    let d = DirectNotifier::start(Duration::zero(), StdDuration::from_secs(5)).await;
    let now = Utc::now();
    let first = outbox_item(&d, now).await;
    let second = outbox_item(&d, now + Duration::milliseconds(5)).await;
    let outside = outbox_item(&d, now - Duration::hours(2)).await;
    let window = ReplayWindow {
        from: now - Duration::minutes(1),
        to: now + Duration::minutes(1),
        event_id: None,
    };

    // Never reached Kafka: the replay publishes the window's two, in order.
    let replayed = replay(&d, &window).await;
    assert_eq!(replayed, [first.clone(), second.clone()]);
    let consumed = consume(
        &kafka().bootstrap_servers,
        &d.topics.payment_completed,
        2,
        WAIT,
    )
    .await;
    for (message, item) in consumed.iter().zip([&first, &second]) {
        let record = decoded_message(message);
        let expected = item.to_record(&d.topics);
        assert_eq!(
            (&record.key, &record.value),
            (&expected.key, &expected.value)
        );
        assert_eq!(record.header("event-id"), Some(item.event_id.as_str()));
        assert_eq!(record.header("event-type"), Some(item.event_type.as_str()));
    }
    let delivered = notify_from(&d, 0, 2).await;
    assert_eq!(delivered, [first.event_id.clone(), second.event_id.clone()]);
    assert_eq!(d.sandbox.messages().len(), 2, "each delivered once");

    // Replayed again, already delivered: the consumer skips them.
    replay(&d, &window).await;
    notify_from(&d, 2, 4).await;
    assert_eq!(d.sandbox.messages().len(), 2, "no customer told twice");
    assert!(!replayed.iter().any(|i| i.event_id == outside.event_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_event_of_a_window_can_be_replayed_alone() {
    let d = DirectNotifier::start(Duration::zero(), StdDuration::from_secs(5)).await;
    let now = Utc::now();
    outbox_item(&d, now).await;
    let wanted = outbox_item(&d, now).await;
    let window = ReplayWindow {
        from: now - Duration::minutes(1),
        to: now + Duration::minutes(1),
        event_id: Some(wanted.event_id.clone()),
    };
    let items = replay::items_in(&d.dynamodb, &d.tables.outbox, &window)
        .await
        .unwrap();
    assert_eq!(items, [wanted]);
}

/// The relay's stream source on `d`'s outbox, giving up on every batch at once
/// (a relay that cannot publish, a mapping of `MaximumRetryAttempts: 0`), its
/// discarded batches described on `queue`; stops it once the queue holds `n`.
async fn discard_batches(d: &DirectNotifier, queue: &FailureQueue, n: usize) {
    let aws = testkit::aws().await;
    let failing: Invoker = Arc::new(|_| {
        Box::pin(async {
            Err(local_runner::Error::Invocation {
                function: "outbox-relay".into(),
                message: "the broker is unreachable".into(),
            })
        })
    });
    let settings = StreamSourceSettings {
        mapping: StreamMapping {
            retry_attempts: Some(0),
            ..StreamMapping::relay().unwrap()
        },
        poll_interval: StdDuration::from_millis(50),
        retry_backoff: StdDuration::from_millis(50),
        ..StreamSourceSettings::relay(Some(queue.clone())).unwrap()
    };
    let (stop, watcher) = tokio::sync::watch::channel(false);
    let source = tokio::spawn(stream_source::run(
        aws_sdk_dynamodb::Client::new(&aws),
        aws_sdk_dynamodbstreams::Client::new(&aws),
        d.tables.outbox.clone(),
        settings,
        failing,
        watcher,
    ));
    testkit::eventually(
        WAIT,
        "the discarded batches on the failure queue",
        || async {
            let attributes = queue
                .sqs
                .get_queue_attributes()
                .queue_url(&queue.url)
                .attribute_names(
                    aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages,
                )
                .send()
                .await
                .unwrap();
            let count = attributes
                .attributes()
                .and_then(|a| {
                    a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
                })
                .and_then(|c| c.parse::<usize>().ok())
                .unwrap_or(0);
            (count >= n).then_some(())
        },
    )
    .await;
    stop.send(true).unwrap();
    source.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_batches_on_the_relays_failure_queue_are_replayed_from_the_stream_once_each() {
    let d = DirectNotifier::start(Duration::zero(), StdDuration::from_secs(5)).await;
    let aws = testkit::aws().await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let queue = FailureQueue::create(sqs.clone(), &format!("{}-failures", d.tables.outbox))
        .await
        .unwrap();
    let now = Utc::now();
    let first = outbox_item(&d, now).await;
    let second = outbox_item(&d, now).await;
    discard_batches(&d, &queue, 2).await; // bisected: one record each

    let streams = aws_sdk_dynamodbstreams::Client::new(&aws);
    let publisher = KafkaPublisher::new(&kafka(), &ProducerSettings::default()).unwrap();
    let batches = replay::discarded_batches(&sqs, &queue.url).await.unwrap();
    assert_eq!(batches.len(), 2);
    let mut replayed = Vec::new();
    for batch in &batches {
        let (items, found_in) =
            replay::batch_items(&streams, &d.dynamodb, &d.tables.outbox, &batch.record.batch)
                .await
                .unwrap();
        assert_eq!(found_in, FoundIn::Stream);
        replay::publish(&items, &publisher, &d.topics)
            .await
            .unwrap();
        replay::forget(&sqs, &queue.url, batch).await.unwrap();
        replayed.extend(items);
    }
    assert_eq!(replayed, [first.clone(), second.clone()]);
    notify_from(&d, 0, 2).await;
    assert_eq!(d.sandbox.messages().len(), 2, "each delivered once");
    assert!(
        replay::discarded_batches(&sqs, &queue.url)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_the_stream_no_longer_holds_is_found_by_its_arrival_times() {
    let d = DirectNotifier::start(Duration::zero(), StdDuration::from_secs(5)).await;
    let aws = testkit::aws().await;
    let now = Utc::now();
    let item = outbox_item(&d, now).await;
    // A stream that is gone (a re-created table's old stream): moto answers
    // ResourceNotFoundException, as AWS does after 24 hours.
    let stream_arn = format!(
        "arn:aws:dynamodb:us-east-1:123456789012:table/{}-gone/stream/2026-01-01T00:00:00.000",
        d.tables.outbox
    );
    let gone = StreamBatchInfo {
        shard_id: "shardId-00000001700000000000-00000000".into(),
        start_sequence_number: "100".into(),
        end_sequence_number: "100".into(),
        approximate_arrival_of_first_record: now,
        approximate_arrival_of_last_record: now,
        batch_size: 1,
        stream_arn,
    };
    let streams = aws_sdk_dynamodbstreams::Client::new(&aws);
    let (items, found_in) = replay::batch_items(&streams, &d.dynamodb, &d.tables.outbox, &gone)
        .await
        .unwrap();
    assert_eq!(found_in, FoundIn::TableByTime);
    assert_eq!(items, [item]);
}
