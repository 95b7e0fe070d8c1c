//! The producer against a broker that demands SASL/SCRAM-SHA-512 sign-in, over
//! TLS as on Amazon MSK: a record goes out only to a broker whose certificate is
//! trusted and only with the right credentials; otherwise the record fails (and
//! the relay's caller keeps it), nothing is written.

use rdkafka::message::Message;
use shared::config::Secret;
use shared::kafka::{KafkaPublisher, KafkaSettings, ProducerSettings, SaslCredentials};
use shared::ports::{EventPublisher, OutboundRecord};
use std::time::Duration;
use testkit::consume_from;
use testkit::secured_kafka::{SecuredKafka, USERNAME};

const TOPIC: &str = "payment.completed";
const READ_FOR: Duration = Duration::from_secs(20);

fn record(event_id: &str) -> OutboundRecord {
    OutboundRecord {
        topic: TOPIC.into(),
        key: Some(b"reservation-1".to_vec()),
        value: Some(format!(r#"{{"eventId":"{event_id}"}}"#).into_bytes()),
        headers: vec![("event-id".into(), event_id.as_bytes().to_vec())],
        event_id: event_id.into(),
    }
}

/// Publishes one record with `settings`, giving up after a few seconds.
async fn publish(settings: &KafkaSettings, event_id: &str) -> Result<(), shared::Error> {
    let publisher = KafkaPublisher::new(
        settings,
        &ProducerSettings {
            message_timeout: Duration::from_secs(5),
            ..ProducerSettings::default()
        },
    )
    .unwrap();
    publisher
        .publish_all(&[record(event_id)])
        .await
        .pop()
        .unwrap()
}

/// Read with the right credentials: nothing was written.
async fn assert_topic_is_empty(kafka: &SecuredKafka) {
    let read = consume_from(&kafka.settings(), TOPIC, 1, Duration::from_secs(5)).await;
    assert!(read.is_empty(), "{} records were written", read.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_producer_signed_in_over_tls_and_trusting_the_broker_ca_publishes() {
    let kafka = SecuredKafka::start(&[TOPIC], true).await;

    publish(&kafka.settings(), "evt-tls").await.unwrap();

    let read = consume_from(&kafka.settings(), TOPIC, 1, READ_FOR).await;
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].key(), Some(&b"reservation-1"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_producer_that_does_not_trust_the_broker_certificate_writes_nothing() {
    let kafka = SecuredKafka::start(&[TOPIC], true).await;
    let mut untrusting = kafka.settings();
    // The system's CA bundle, which does not hold the test CA.
    untrusting.ssl_ca_location = None;

    let refused = publish(&untrusting, "evt-untrusted").await;

    assert!(
        refused.is_err(),
        "an unverified broker must not get the record"
    );
    assert_topic_is_empty(&kafka).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_producer_with_a_wrong_password_writes_nothing() {
    let kafka = SecuredKafka::start(&[TOPIC], false).await;
    let wrong = SaslCredentials::from_secret_json(
        "SCRAM-SHA-512",
        &Secret::new(format!(
            r#"{{"username":"{USERNAME}","password":"not-it"}}"#
        )),
    )
    .unwrap();
    let settings = KafkaSettings::new(kafka.bootstrap.to_string())
        .secured(kafka.protocol(), Some(wrong))
        .unwrap();

    let refused = publish(&settings, "evt-wrong-password").await;

    assert!(
        refused.is_err(),
        "a client that failed to sign in must not write"
    );
    assert_topic_is_empty(&kafka).await;
}
