//! The notifier against real Kafka records, the real idempotency table and the
//! Telegram sandbox over HTTP: a redelivered record is not sent twice, and a
//! failed send is sent once when the record comes back.

use local_runner::invoke::invoke;
use local_runner::kafka_source::lambda_event;
use local_runner::notification_sandbox::{FailurePlan, NotificationSandbox};
use notifier::LambdaNotifier;
use rdkafka::message::OwnedMessage;
use shared::domain::ReservationId;
use shared::kafka::{KafkaPublisher, ProducerSettings};
use shared::outbox::OutboxItem;
use shared::ports::EventPublisher;
use std::sync::Arc;
use std::time::Duration;
use testkit::{DirectNotifier, consume, kafka};

struct Setup {
    notifier: Arc<LambdaNotifier>,
    sandbox: NotificationSandbox,
    record: OwnedMessage,
}

async fn setup() -> Setup {
    let DirectNotifier {
        notifier,
        sandbox,
        topics,
        ..
    } = DirectNotifier::start_with(|_| {}).await;

    let event = shared::fixtures::payment_completed_envelope(
        ReservationId::random(),
        "twice@example.com",
        12_000,
    );
    let publisher = KafkaPublisher::new(&kafka(), &ProducerSettings::default()).unwrap();
    let record = OutboxItem::new(&event, chrono::Utc::now()).to_record(&topics);
    for result in publisher.publish_all(&[record]).await {
        result.unwrap();
    }
    let mut consumed = consume(
        &kafka().bootstrap_servers,
        &topics.payment_completed,
        1,
        Duration::from_secs(30),
    )
    .await;
    Setup {
        notifier: Arc::new(notifier),
        sandbox,
        record: consumed.remove(0),
    }
}

async fn deliver(s: &Setup, records: &[OwnedMessage]) -> Result<(), local_runner::Error> {
    let event = serde_json::to_value(lambda_event(records, &kafka().bootstrap_servers)).unwrap();
    let notifier = s.notifier.clone();
    invoke("notifier", Duration::from_secs(30), event, |e| {
        notifier.handle(e)
    })
    .await
    .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_kafka_record_delivered_twice_sends_one_message() {
    let s = setup().await;
    deliver(&s, std::slice::from_ref(&s.record)).await.unwrap();
    deliver(&s, std::slice::from_ref(&s.record)).await.unwrap();
    let messages = s.sandbox.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(messages[0].text.contains("12,000원"));
    assert_eq!(
        s.sandbox.attempts(),
        1,
        "the redelivery did not even try to send"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_send_is_dead_lettered_and_a_later_redelivery_sends_it_once() {
    let s = setup().await;
    s.sandbox.fail_next(FailurePlan::fail(1, 502));
    // The invocation succeeds: the failure went to the dead-letter topic.
    deliver(&s, std::slice::from_ref(&s.record)).await.unwrap();
    assert!(s.sandbox.messages().is_empty());
    deliver(&s, std::slice::from_ref(&s.record)).await.unwrap();
    deliver(&s, std::slice::from_ref(&s.record)).await.unwrap();
    assert_eq!(s.sandbox.messages().len(), 1);
    assert_eq!(s.sandbox.attempts(), 2);
}
