//! `ops outbox replay` on the real stack (moto's outbox table and its
//! creation-time index, tansu, the notifier's idempotency on moto): items that
//! never reached Kafka are published once each by a replay of their window, as
//! the relay would publish them; replaying a window of events already
//! delivered sends no customer a second message.

use chrono::{Duration, Utc};
use shared::domain::ReservationId;
use shared::events::EventEnvelope;
use shared::kafka::{KafkaPublisher, ProducerSettings, decoded_message};
use shared::kafka_event::encode_record;
use shared::outbox::OutboxItem;
use shared::replay::{self, ReplayWindow};
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
