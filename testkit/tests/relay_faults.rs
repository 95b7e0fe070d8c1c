//! The relay when the broker is unreachable: it reports the first record as failed,
//! the stream re-delivers from there, and once the broker is back every record
//! arrives once, in order per key. DynamoDB Streams is real (moto); the broker is
//! librdkafka's mock cluster, which can be taken down and brought back.

use local_runner::http_api::Invoker;
use local_runner::invoke::invoke;
use local_runner::stream_source::{self, StreamSourceSettings};
use outbox_relay::Relay;
use rdkafka::message::Message;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_broker_down_the_first_record_fails_and_after_it_returns_all_arrive_once_in_order()
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
            message_timeout: Duration::from_secs(2),
            ..ProducerSettings::default()
        },
    )
    .unwrap();
    let relay = Arc::new(Relay::new(publisher, topics.clone()));
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

    cluster.broker_down(1).unwrap();

    // Two reservations, three events each, interleaved.
    let keys = [ReservationId::random(), ReservationId::random()];
    let mut written = Vec::new();
    for i in 0..6 {
        let event = envelope(keys[i % 2]);
        let item = serde_dynamo::to_item(OutboxItem::new(&event, chrono::Utc::now())).unwrap();
        dynamodb
            .put_item()
            .table_name(&tables.outbox)
            .set_item(Some(item))
            .send()
            .await
            .unwrap();
        written.push(event);
    }

    let (stop, watcher) = tokio::sync::watch::channel(false);
    let source = tokio::spawn(stream_source::run(
        dynamodb.clone(),
        aws_sdk_dynamodbstreams::Client::new(&aws),
        tables.outbox.clone(),
        StreamSourceSettings {
            poll_interval: Duration::from_millis(50),
            retry_backoff: Duration::from_millis(200),
            ..Default::default()
        },
        invoker,
        watcher,
    ));

    // While the broker is down the relay answers the first record as failed.
    let first_answer = eventually(Duration::from_secs(30), "the relay invoked", || async {
        answers.lock().unwrap().first().cloned()
    })
    .await;
    let failures = first_answer["batchItemFailures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{first_answer}");

    cluster.broker_up(1).unwrap();
    let records = consume(
        &bootstrap,
        &topics.payment_completed,
        6,
        Duration::from_secs(60),
    )
    .await;
    stop.send(true).unwrap();
    let _ = source.await;

    let received: Vec<EventEnvelope> = records
        .iter()
        .map(|m| EventEnvelope::from_json(m.payload().unwrap()).unwrap())
        .collect();
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
            .filter(|m| m.key() == Some(key.to_string().as_bytes()))
            .map(|m| {
                EventEnvelope::from_json(m.payload().unwrap())
                    .unwrap()
                    .event_id
            })
            .collect();
        assert_eq!(got, sent, "order of key {key}");
    }
    // The last answer, once the broker was back, reported no failure.
    let last = answers.lock().unwrap().last().cloned().unwrap();
    assert!(
        last["batchItemFailures"]
            .as_array()
            .is_none_or(|f| f.is_empty()),
        "{last}"
    );
}
