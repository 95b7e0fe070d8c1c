//! The Kafka adapter: an idempotent producer that pipelines sends and reports each
//! record's acknowledgement, client settings from the environment, and topic
//! provisioning.

use crate::Error;
use crate::config;
use crate::ports::{EventPublisher, OutboundRecord};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::time::Duration;

/// Where the brokers are and any extra librdkafka properties.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaSettings {
    pub bootstrap_servers: String,
    /// Extra librdkafka properties, from `KAFKA_PROPERTIES` (`k=v,k=v`).
    pub properties: Vec<(String, String)>,
}

impl KafkaSettings {
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        KafkaSettings {
            bootstrap_servers: bootstrap_servers.into(),
            properties: Vec::new(),
        }
    }

    pub fn from_env() -> Result<Self, Error> {
        let bootstrap_servers = config::or_default("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092");
        let properties = config::or_default("KAFKA_PROPERTIES", "")
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|pair| {
                pair.split_once('=')
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .ok_or_else(|| {
                        Error::Config(format!("KAFKA_PROPERTIES entry {pair:?} is not key=value"))
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(KafkaSettings {
            bootstrap_servers,
            properties,
        })
    }

    pub fn client_config(&self) -> ClientConfig {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.bootstrap_servers);
        for (k, v) in &self.properties {
            cfg.set(k, v);
        }
        cfg
    }
}

/// Producer tuning; the defaults suit a 128 MB function.
#[derive(Clone, Debug)]
pub struct ProducerSettings {
    /// How long librdkafka keeps trying one record before reporting it failed.
    pub message_timeout: Duration,
    /// Cap on the local queue (librdkafka's default is 1 GiB).
    pub queue_max_kbytes: u32,
    pub linger: Duration,
}

impl Default for ProducerSettings {
    fn default() -> Self {
        ProducerSettings {
            message_timeout: Duration::from_secs(10),
            queue_max_kbytes: 16 * 1024,
            linger: Duration::from_millis(5),
        }
    }
}

impl ProducerSettings {
    pub fn from_env() -> Result<Self, Error> {
        let d = ProducerSettings::default();
        Ok(ProducerSettings {
            message_timeout: Duration::from_millis(config::parsed(
                "KAFKA_MESSAGE_TIMEOUT_MS",
                d.message_timeout.as_millis() as u64,
            )?),
            queue_max_kbytes: config::parsed("KAFKA_QUEUE_MAX_KBYTES", d.queue_max_kbytes)?,
            linger: Duration::from_millis(config::parsed(
                "KAFKA_LINGER_MS",
                d.linger.as_millis() as u64,
            )?),
        })
    }
}

/// An idempotent producer (acks=all): a retry inside librdkafka never duplicates
/// or reorders a record within a partition.
#[derive(Clone)]
pub struct KafkaPublisher {
    producer: FutureProducer,
}

impl std::fmt::Debug for KafkaPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KafkaPublisher")
    }
}

impl KafkaPublisher {
    pub fn new(kafka: &KafkaSettings, settings: &ProducerSettings) -> Result<Self, Error> {
        let producer = kafka
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "message.timeout.ms",
                settings.message_timeout.as_millis().to_string(),
            )
            .set(
                "queue.buffering.max.kbytes",
                settings.queue_max_kbytes.to_string(),
            )
            .set("linger.ms", settings.linger.as_millis().to_string())
            .create()
            .map_err(|e| Error::Config(format!("cannot create the Kafka producer: {e}")))?;
        Ok(KafkaPublisher { producer })
    }

    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    fn publish_error(record: &OutboundRecord, e: KafkaError) -> Error {
        Error::Publish {
            event_id: record.event_id.clone(),
            topic: record.topic.clone(),
            source: Box::new(e),
        }
    }
}

impl EventPublisher for KafkaPublisher {
    async fn publish_all(&self, records: &[OutboundRecord]) -> Vec<Result<(), Error>> {
        // Enqueue everything first (librdkafka batches and pipelines), then wait
        // for each acknowledgement in order.
        let mut pending = Vec::with_capacity(records.len());
        for record in records {
            let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
            for (k, v) in &record.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v.as_slice()),
                });
            }
            let mut future_record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&record.topic).headers(headers);
            if let Some(key) = &record.key {
                future_record = future_record.key(key.as_slice());
            }
            if let Some(value) = &record.value {
                future_record = future_record.payload(value.as_slice());
            }
            let enqueued = loop {
                match self.producer.send_result(future_record) {
                    Ok(delivery) => break Ok(delivery),
                    // The bounded local queue is full: let it drain.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        future_record = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => break Err(Self::publish_error(record, e)),
                }
            };
            pending.push(enqueued);
        }
        let mut results = Vec::with_capacity(records.len());
        for (record, enqueued) in records.iter().zip(pending) {
            let result = match enqueued {
                Err(e) => Err(e),
                Ok(delivery) => match delivery.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((e, _))) => Err(Self::publish_error(record, e)),
                    Err(_canceled) => Err(Self::publish_error(record, KafkaError::Canceled)),
                },
            };
            results.push(result);
        }
        results
    }
}

/// A consumed message as bytes, with its coordinates.
pub fn decoded_message(
    message: &rdkafka::message::OwnedMessage,
) -> crate::kafka_event::DecodedRecord {
    use rdkafka::message::{Headers, Message};
    crate::kafka_event::DecodedRecord {
        topic: message.topic().to_owned(),
        partition: i64::from(message.partition()),
        offset: message.offset(),
        timestamp_ms: message.timestamp().to_millis().unwrap_or(0),
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        headers: message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Creates topics (safe to run twice).
pub async fn create_topics(
    kafka: &KafkaSettings,
    topics: &[&str],
    partitions: i32,
) -> Result<(), Error> {
    let admin: AdminClient<DefaultClientContext> = kafka
        .client_config()
        .create()
        .map_err(|e| Error::Config(format!("cannot create the Kafka admin client: {e}")))?;
    let new_topics: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(new_topics.iter(), &options)
        .await
        .map_err(|e| Error::Config(format!("cannot create topics: {e}")))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(Error::Config(format!(
                    "cannot create topic {topic}: {code}"
                )));
            }
        }
    }
    Ok(())
}

/// Waits until every queued record was delivered or failed.
pub fn flush(publisher: &KafkaPublisher, timeout: Duration) -> Result<(), Error> {
    publisher
        .producer
        .flush(timeout)
        .map_err(|e| Error::Config(format!("flushing the producer: {e}")))
}
