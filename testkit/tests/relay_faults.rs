//! The relay when the broker is unreachable: it reports the first record as failed,
//! the stream re-delivers from there for as long as it takes (more than the 20
//! attempts the deployed mapping once allowed), and once the broker is back every
//! record arrives once, in order per key. DynamoDB Streams is real (moto); the broker is
//! librdkafka's mock cluster, which can be taken down and brought back.

use local_runner::http_api::Invoker;
use local_runner::invoke::invoke;
use local_runner::stream_source::{self, FailureQueue, StreamSourceSettings};
use outbox_relay::Relay;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::mocking::MockCluster;
use serde_json::Value;
use shared::config::TopicNames;
use shared::domain::ReservationId;
use shared::events::EventEnvelope;
use shared::kafka::{KafkaPublisher, KafkaSettings, ProducerSettings};
use shared::outbox::OutboxItem;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use testkit::{aws, consume, eventually, provision, unique};

fn envelope(reservation: ReservationId) -> EventEnvelope {
    shared::fixtures::payment_completed_envelope(reservation, "relay@example.com", 1_000)
}

/// The relay on the outbox table's real stream (the local stream source), with
/// every answer it gave kept.
struct RelayOnStream {
    answers: Arc<Mutex<Vec<Value>>>,
    stop: tokio::sync::watch::Sender<bool>,
    source: tokio::task::JoinHandle<Result<(), local_runner::Error>>,
}

impl RelayOnStream {
    async fn start(
        aws: &aws_config::SdkConfig,
        outbox: &str,
        relay: Relay<KafkaPublisher>,
    ) -> Self {
        let relay = Arc::new(relay);
        let answers: Arc<Mutex<Vec<Value>>> = Arc::default();
        let invoker: Invoker = {
            let answers = answers.clone();
            Arc::new(move |payload| {
                let relay = relay.clone();
                let answers = answers.clone();
                Box::pin(async move {
                    let answer = invoke("outbox-relay", Duration::from_secs(30), payload, |e| {
                        relay.handle(e)
                    })
                    .await?;
                    answers.lock().unwrap().push(answer.clone());
                    Ok(answer)
                })
            })
        };
        let (stop, watcher) = tokio::sync::watch::channel(false);
        let source = tokio::spawn(stream_source::run(
            aws_sdk_dynamodb::Client::new(aws),
            aws_sdk_dynamodbstreams::Client::new(aws),
            outbox.to_owned(),
            StreamSourceSettings {
                poll_interval: Duration::from_millis(50),
                retry_backoff: Duration::from_millis(200),
                ..StreamSourceSettings::relay(Some(failure_queue(aws, outbox).await)).unwrap()
            },
            invoker,
            watcher,
        ));
        RelayOnStream {
            answers,
            stop,
            source,
        }
    }

    fn answers(&self) -> Vec<Value> {
        self.answers.lock().unwrap().clone()
    }

    /// Stops the source; answers every answer the relay gave.
    async fn stop(self) -> Vec<Value> {
        self.stop.send(true).unwrap();
        let _ = self.source.await;
        self.answers.lock().unwrap().clone()
    }
}

/// The queue of the relay mapping's on-failure destination, for `outbox`.
async fn failure_queue(aws: &aws_config::SdkConfig, outbox: &str) -> FailureQueue {
    FailureQueue::create(aws_sdk_sqs::Client::new(aws), &format!("{outbox}-failures"))
        .await
        .unwrap()
}

/// The envelopes of consumed records, in the order consumed.
fn envelopes(records: &[OwnedMessage]) -> Vec<EventEnvelope> {
    records
        .iter()
        .map(|m| EventEnvelope::from_json(m.payload().unwrap()).unwrap())
        .collect()
}

/// Writes `item` to the outbox table, as a payment's transaction does.
async fn write(dynamodb: &aws_sdk_dynamodb::Client, outbox: &str, item: OutboxItem) {
    dynamodb
        .put_item()
        .table_name(outbox)
        .set_item(Some(serde_dynamo::to_item(item).unwrap()))
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_broker_down_for_more_than_20_attempts_every_record_arrives_once_in_order_when_it_returns()
 {
    let aws = aws().await;
    let (tables, _) = provision(&aws, 1).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);

    let cluster = MockCluster::new(1).unwrap();
    let topics = TopicNames::with_prefix(&unique("relay"));
    cluster
        .create_topic(&topics.payment_completed, 3, 1)
        .unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let publisher = KafkaPublisher::new(
        &KafkaSettings::new(&bootstrap),
        &ProducerSettings {
            // Each attempt while the broker is down fails after this long.
            message_timeout: Duration::from_millis(500),
            ..ProducerSettings::default()
        },
    )
    .unwrap();
    let relay = Relay::new(publisher, topics.clone());
    cluster.broker_down(1).unwrap();

    // Two reservations, three events each, interleaved.
    let keys = [ReservationId::random(), ReservationId::random()];
    let mut written = Vec::new();
    for i in 0..6 {
        let event = envelope(keys[i % 2]);
        write(
            &dynamodb,
            &tables.outbox,
            OutboxItem::new(&event, chrono::Utc::now()),
        )
        .await;
        written.push(event);
    }
    let on_stream = RelayOnStream::start(&aws, &tables.outbox, relay).await;

    // While the broker is down the relay answers the first record as failed.
    let first_answer = eventually(Duration::from_secs(30), "the relay invoked", || async {
        on_stream.answers().first().cloned()
    })
    .await;
    let failures = first_answer["batchItemFailures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{first_answer}");
    // Longer than the 20 attempts after which the deployed mapping used to give
    // the batch up: the stream keeps re-delivering, as the template now says.
    eventually(
        Duration::from_secs(120),
        "more than 20 failed attempts",
        || async { (on_stream.answers().len() > 20).then_some(()) },
    )
    .await;

    cluster.broker_up(1).unwrap();
    let records = consume(
        &bootstrap,
        &topics.payment_completed,
        6,
        Duration::from_secs(60),
    )
    .await;
    let answers = on_stream.stop().await;

    let received = envelopes(&records);
    let mut ids: Vec<_> = received.iter().map(|e| e.event_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6, "every event once: {received:?}");
    assert_eq!(received.len(), 6, "no duplicates");
    for key in keys {
        let sent: Vec<_> = written
            .iter()
            .filter(|e| e.aggregate_id == key.to_string())
            .map(|e| e.event_id)
            .collect();
        let got: Vec<_> = records
            .iter()
            .zip(&received)
            .filter(|(m, _)| m.key() == Some(key.to_string().as_bytes()))
            .map(|(_, e)| e.event_id)
            .collect();
        assert_eq!(got, sent, "order of key {key}");
    }
    // The last answer, once the broker was back, reported no failure.
    let last = answers.last().cloned().unwrap();
    assert!(
        last["batchItemFailures"]
            .as_array()
            .is_none_or(|f| f.is_empty()),
        "{last}"
    );
}

/// A record the producer refuses for good (larger than `message.max.bytes`) is
/// skipped and counted; the records written after it are published, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_record_too_large_for_the_topic_is_skipped_and_the_ones_behind_it_are_published() {
    let aws = aws().await;
    let (tables, _) = provision(&aws, 1).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    let cluster = MockCluster::new(1).unwrap();
    let topics = TopicNames::with_prefix(&unique("relay-size"));
    cluster
        .create_topic(&topics.payment_completed, 1, 1)
        .unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let kafka = KafkaSettings::new(&bootstrap).with_property(("message.max.bytes", "10000"));
    let publisher = KafkaPublisher::new(&kafka, &ProducerSettings::default()).unwrap();
    let relay = Relay::new(publisher, topics.clone());

    let key = ReservationId::random();
    let mut written = Vec::new();
    for i in 0..3 {
        let event = envelope(key);
        let mut item = OutboxItem::new(&event, chrono::Utc::now());
        if i == 1 {
            // Still an outbox item, but its value is over the producer's limit.
            item.envelope = format!("{{\"padding\":\"{}\"}}", "x".repeat(20_000));
        } else {
            written.push(event.event_id);
        }
        write(&dynamodb, &tables.outbox, item).await;
    }
    let on_stream = RelayOnStream::start(&aws, &tables.outbox, relay).await;
    let consumed = consume(
        &bootstrap,
        &topics.payment_completed,
        2,
        Duration::from_secs(60),
    )
    .await;
    let answers = on_stream.stop().await;

    let got: Vec<_> = envelopes(&consumed).iter().map(|e| e.event_id).collect();
    assert_eq!(got, written, "the two that fit, in order");
    let skipped: u64 = answers.iter().filter_map(|a| a["skipped"].as_u64()).sum();
    assert_eq!(skipped, 1, "{answers:?}");
    assert!(
        answers.iter().all(|a| a["batchItemFailures"]
            .as_array()
            .is_none_or(|f| f.is_empty())),
        "never retried: {answers:?}"
    );
}
