//! The Kafka adapter: an idempotent producer that pipelines sends and reports each
//! record's acknowledgement, client settings from the environment, and topic
//! provisioning.

mod scan;

pub use scan::{ScanBounds, Scanned, scan_topics};

use crate::config::{self, ConfigError, Secret};
use crate::ports::{EventPublisher, OutboundRecord};
use crate::topics::{ExistingTopic, TopicOutcome, TopicSpec};
use crate::{Error, InfraError};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::sync::Arc;
use std::time::Duration;

/// The variable (or `<NAME>_SECRET_ID` / `<NAME>_PARAMETER`) that holds the SASL
/// credentials as `{"username": ..., "password": ...}`, the format Amazon MSK
/// and Lambda's Kafka event sources use for SCRAM secrets.
pub const KAFKA_SASL_CREDENTIALS: &str = "KAFKA_SASL_CREDENTIALS";

/// The secrets a Kafka client may need, for `shared::secrets::preload`.
pub const KAFKA_SECRETS: [&str; 1] = [KAFKA_SASL_CREDENTIALS];

/// How the clients reach the brokers (`KAFKA_SECURITY_PROTOCOL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecurityProtocol {
    /// No encryption, no authentication: local stacks, or a private listener.
    Plaintext,
    /// TLS, no authentication.
    Ssl,
    /// SASL authentication without TLS (never over an untrusted network).
    SaslPlaintext,
    /// SASL authentication over TLS: Amazon MSK with SCRAM.
    SaslSsl,
}

impl SecurityProtocol {
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        match value.trim().to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Ok(SecurityProtocol::Plaintext),
            "SSL" => Ok(SecurityProtocol::Ssl),
            "SASL_PLAINTEXT" => Ok(SecurityProtocol::SaslPlaintext),
            "SASL_SSL" => Ok(SecurityProtocol::SaslSsl),
            other => Err(ConfigError::invalid(
                "KAFKA_SECURITY_PROTOCOL",
                format!("{other:?} is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
            )),
        }
    }

    /// librdkafka's `security.protocol`.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// A SASL identity: the mechanism and the credentials (the password is a
/// [`Secret`], so it never shows in `Debug` or a log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaslCredentials {
    /// `SCRAM-SHA-512` (MSK's), `SCRAM-SHA-256` or `PLAIN`.
    pub mechanism: String,
    pub username: String,
    pub password: Secret,
}

impl SaslCredentials {
    pub const MECHANISMS: [&str; 3] = ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"];

    /// Credentials from the JSON of an MSK SCRAM secret. The error never quotes
    /// the secret.
    pub fn from_secret_json(mechanism: &str, secret: &Secret) -> Result<Self, ConfigError> {
        #[derive(serde::Deserialize)]
        struct Stored {
            username: String,
            password: String,
        }
        let mechanism = mechanism.trim().to_ascii_uppercase();
        if !Self::MECHANISMS.contains(&mechanism.as_str()) {
            return Err(ConfigError::invalid(
                "KAFKA_SASL_MECHANISM",
                format!(
                    "{mechanism:?} is not one of {}",
                    Self::MECHANISMS.join(", ")
                ),
            ));
        }
        let stored: Stored = serde_json::from_str(secret.expose()).map_err(|e| {
            ConfigError::invalid(
                KAFKA_SASL_CREDENTIALS,
                format!(
                    "it must be JSON {{\"username\": ..., \"password\": ...}} \
                     (error at line {} column {})",
                    e.line(),
                    e.column()
                ),
            )
        })?;
        if stored.username.is_empty() || stored.password.is_empty() {
            return Err(ConfigError::invalid(
                KAFKA_SASL_CREDENTIALS,
                "it has an empty username or password",
            ));
        }
        Ok(SaslCredentials {
            mechanism,
            username: stored.username,
            password: Secret::new(stored.password),
        })
    }
}

/// Where the brokers are, how to reach them, and any extra librdkafka properties.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaSettings {
    pub bootstrap_servers: String,
    pub protocol: SecurityProtocol,
    /// Set exactly when `protocol` uses SASL.
    pub sasl: Option<SaslCredentials>,
    /// A PEM file of the CA certificates to trust (`KAFKA_SSL_CA_LOCATION`);
    /// unset, librdkafka probes the system's bundle (MSK's certificates are
    /// publicly trusted).
    pub ssl_ca_location: Option<String>,
    /// Extra librdkafka properties, from `KAFKA_PROPERTIES` (`k=v,k=v`).
    pub properties: Vec<(String, String)>,
}

/// tansu 0.6 answers a partition's end (its high watermark) as the base offset
/// of the last batch + 1, so a reader that stops at the end it saw (dlq-retry,
/// `ops trace`, `ops reconcile`, `ops failed redrive`) leaves the rest of a
/// batch of several records for later, possibly for good. Against tansu, every
/// producer of the pipeline (the relay and the dead-letter producers) sends one
/// record per batch (the local runner, env.local.json, the tests); Kafka and
/// MSK need nothing.
pub const TANSU_ONE_RECORD_PER_BATCH: (&str, &str) = ("batch.num.messages", "1");

impl KafkaSettings {
    /// Plaintext brokers (local stacks and tests).
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        KafkaSettings {
            bootstrap_servers: bootstrap_servers.into(),
            protocol: SecurityProtocol::Plaintext,
            sasl: None,
            ssl_ca_location: None,
            properties: Vec::new(),
        }
    }

    /// The same brokers over `protocol`, authenticated with `sasl` when it uses SASL.
    pub fn secured(
        mut self,
        protocol: SecurityProtocol,
        sasl: Option<SaslCredentials>,
    ) -> Result<Self, ConfigError> {
        match (protocol.uses_sasl(), &sasl) {
            (true, None) => {
                return Err(ConfigError::Missing {
                    var: KAFKA_SASL_CREDENTIALS.to_owned(),
                    alternatives: format!(
                        " for KAFKA_SECURITY_PROTOCOL {} (or {KAFKA_SASL_CREDENTIALS}_SECRET_ID, \
                         {KAFKA_SASL_CREDENTIALS}_PARAMETER)",
                        protocol.as_str()
                    ),
                });
            }
            (false, Some(_)) => {
                return Err(ConfigError::invalid(
                    "KAFKA_SECURITY_PROTOCOL",
                    format!(
                        "SASL credentials are set but the protocol is {}: \
                         use SASL_SSL (or SASL_PLAINTEXT)",
                        protocol.as_str()
                    ),
                ));
            }
            _ => {}
        }
        self.protocol = protocol;
        self.sasl = sasl;
        Ok(self)
    }

    /// The same settings with one more librdkafka property.
    pub fn with_property(mut self, (key, value): (&str, &str)) -> Self {
        self.properties.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Trusts the CA certificates in PEM file `path`.
    pub fn trusting(mut self, path: impl Into<String>) -> Self {
        self.ssl_ca_location = Some(path.into());
        self
    }

    /// From `KAFKA_BOOTSTRAP_SERVERS`, `KAFKA_SECURITY_PROTOCOL` (PLAINTEXT),
    /// `KAFKA_SASL_MECHANISM` (SCRAM-SHA-512), the secret `KAFKA_SASL_CREDENTIALS`
    /// (read only when the protocol uses SASL), `KAFKA_SSL_CA_LOCATION` and
    /// `KAFKA_PROPERTIES`.
    pub fn from_env() -> Result<Self, ConfigError> {
        let bootstrap_servers = config::or_default("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092");
        let protocol =
            SecurityProtocol::parse(&config::or_default("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"))?;
        let sasl = if protocol.uses_sasl() {
            let mechanism = config::or_default("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512");
            Some(SaslCredentials::from_secret_json(
                &mechanism,
                &config::secret(KAFKA_SASL_CREDENTIALS)?,
            )?)
        } else {
            None
        };
        let properties = config::or_default("KAFKA_PROPERTIES", "")
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|pair| {
                pair.split_once('=')
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .ok_or_else(|| {
                        ConfigError::invalid(
                            "KAFKA_PROPERTIES",
                            format!("the entry {pair:?} is not key=value"),
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
        let mut settings = KafkaSettings::new(bootstrap_servers).secured(protocol, sasl)?;
        if let Some(path) = config::optional("KAFKA_SSL_CA_LOCATION") {
            settings = settings.trusting(path);
        }
        settings.properties = properties;
        Ok(settings)
    }

    pub fn client_config(&self) -> ClientConfig {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.bootstrap_servers);
        cfg.set("security.protocol", self.protocol.as_str());
        if let Some(sasl) = &self.sasl {
            cfg.set("sasl.mechanism", &sasl.mechanism);
            cfg.set("sasl.username", &sasl.username);
            cfg.set("sasl.password", sasl.password.expose());
        }
        if let Some(path) = &self.ssl_ca_location {
            cfg.set("ssl.ca.location", path);
        }
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
    pub fn from_env() -> Result<Self, ConfigError> {
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

/// When a producer is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProducerStart {
    /// With the publisher: a function that publishes on its normal path (the
    /// relay, dlq-retry, whose every run builds a consumer anyway).
    AtInit,
    /// At the first publish: a function that publishes only what failed (the
    /// notifier's and the feed's dead letters). Its cold starts then build no
    /// producer (librdkafka's global set-up, three threads and a broker
    /// connection, about 0.7 ms of init and a TLS handshake's CPU in AWS), and
    /// its first dead letter pays that once. The settings are still checked
    /// at init, property by property, so a typo still fails the cold start.
    AtFirstPublish,
}

/// An idempotent producer (acks=all): a retry inside librdkafka never duplicates
/// or reorders a record within a partition.
#[derive(Clone)]
pub struct KafkaPublisher {
    producing: Arc<Producing>,
}

/// A producer's settings, and the producer once built from them.
struct Producing {
    config: ClientConfig,
    producer: tokio::sync::OnceCell<FutureProducer>,
}

impl std::fmt::Debug for KafkaPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaPublisher")
            .field("built", &self.is_built())
            .finish_non_exhaustive()
    }
}

impl KafkaPublisher {
    /// A publisher whose producer is built now.
    pub fn new(kafka: &KafkaSettings, settings: &ProducerSettings) -> Result<Self, ConfigError> {
        Self::starting(kafka, settings, ProducerStart::AtInit)
    }

    /// A publisher whose producer is built `start`; its settings are checked
    /// now either way.
    pub fn starting(
        kafka: &KafkaSettings,
        settings: &ProducerSettings,
        start: ProducerStart,
    ) -> Result<Self, ConfigError> {
        let config = Self::producer_config(kafka, settings);
        let producer = tokio::sync::OnceCell::new();
        match start {
            ProducerStart::AtInit => {
                let built = Self::build(&config)?;
                producer.set(built).ok();
            }
            ProducerStart::AtFirstPublish => {
                config
                    .create_native_config()
                    .map_err(|e| ConfigError::setup("check the Kafka producer's settings", e))?;
            }
        }
        Ok(KafkaPublisher {
            producing: Arc::new(Producing { config, producer }),
        })
    }

    fn producer_config(kafka: &KafkaSettings, settings: &ProducerSettings) -> ClientConfig {
        let mut config = kafka.client_config();
        config
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
            .set("linger.ms", settings.linger.as_millis().to_string());
        config
    }

    fn build(config: &ClientConfig) -> Result<FutureProducer, ConfigError> {
        config
            .create()
            .map_err(|e| ConfigError::setup("create the Kafka producer", e))
    }

    /// Whether its producer exists yet.
    pub fn is_built(&self) -> bool {
        self.producing.producer.initialized()
    }

    /// The producer, built now if it was not yet (once, however many records
    /// ask at the same time).
    async fn producer(&self) -> Result<&FutureProducer, ConfigError> {
        let producing = &*self.producing;
        producing
            .producer
            .get_or_try_init(|| async {
                let built = Self::build(&producing.config);
                if let Err(e) = &built {
                    tracing::error!(error = %e, "the Kafka producer could not be built: its records are not sent, and their sources stay uncommitted");
                }
                built
            })
            .await
    }

    /// A record not sent because its producer could not be built: worth
    /// retrying (its record stays uncommitted and comes again) while someone
    /// fixes the settings the error names.
    fn unbuilt(record: &OutboundRecord, e: &ConfigError) -> Error {
        InfraError::Publish {
            event_id: record.event_id.clone(),
            topic: record.topic.clone(),
            source: Box::new(e.clone()),
        }
        .into()
    }

    /// A failed send: for good when the broker refuses the record itself (too
    /// large, invalid), else worth retrying (broker down, timeout, leader moved).
    fn publish_error(record: &OutboundRecord, e: KafkaError) -> Error {
        let code = e.rdkafka_error_code();
        let source: Box<dyn std::error::Error + Send + Sync> = match code.and_then(producer_hint) {
            Some(hint) => Box::new(Hinted { hint, source: e }),
            None => Box::new(e),
        };
        let (event_id, topic) = (record.event_id.clone(), record.topic.clone());
        if refuses_the_record(code) {
            InfraError::Unpublishable {
                event_id,
                topic,
                source,
            }
            .into()
        } else {
            InfraError::Publish {
                event_id,
                topic,
                source,
            }
            .into()
        }
    }
}

/// A Kafka error with what a person can do about it.
#[derive(Debug, thiserror::Error)]
#[error("{hint}")]
struct Hinted {
    hint: &'static str,
    #[source]
    source: KafkaError,
}

/// What to fix when the broker refuses writes for its settings or ACLs: the
/// write is retried meanwhile, but it will not pass until someone acts.
fn producer_hint(code: RDKafkaErrorCode) -> Option<&'static str> {
    match code {
        RDKafkaErrorCode::NotEnoughReplicas | RDKafkaErrorCode::NotEnoughReplicasAfterAppend => {
            Some(
                "the topic has fewer in-sync replicas than its min.insync.replicas, so acks=all writes are refused: \
             a topic with replication factor 1 on a cluster whose min.insync.replicas is 2 never accepts one. \
             Re-create the topics with `ops topics apply` (replication factor 3, min.insync.replicas 2), or bring the replicas back",
            )
        }
        RDKafkaErrorCode::TopicAuthorizationFailed
        | RDKafkaErrorCode::ClusterAuthorizationFailed
        | RDKafkaErrorCode::TransactionalIdAuthorizationFailed => Some(
            "the function's principal may not write to this topic: grant its SASL user (or IAM role) Write and Describe on the topic, \
             and IdempotentWrite on the cluster (the producer is idempotent)",
        ),
        RDKafkaErrorCode::SaslAuthenticationFailed => Some(
            "the broker refused the SASL credentials: check the username and password in KAFKA_SASL_CREDENTIALS (or the secret KAFKA_SASL_CREDENTIALS_SECRET_ID names)",
        ),
        _ => None,
    }
}

/// The codes with which a broker (or librdkafka, before sending) refuses a record
/// for what it is: sending it again can never succeed.
fn refuses_the_record(code: Option<RDKafkaErrorCode>) -> bool {
    matches!(
        code,
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::MessageBatchTooLarge
                | RDKafkaErrorCode::InvalidRecord
        )
    )
}

/// `record` as librdkafka sends it: topic, key, payload and headers.
pub fn future_record(record: &OutboundRecord) -> FutureRecord<'_, [u8], [u8]> {
    let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
    for (k, v) in &record.headers {
        headers = headers.insert(Header {
            key: k,
            value: Some(v.as_slice()),
        });
    }
    let mut future_record = FutureRecord::to(&record.topic).headers(headers);
    if let Some(key) = &record.key {
        future_record = future_record.key(key.as_slice());
    }
    if let Some(value) = &record.value {
        future_record = future_record.payload(value.as_slice());
    }
    future_record
}

impl EventPublisher for KafkaPublisher {
    async fn publish_all(&self, records: &[OutboundRecord]) -> Vec<Result<(), Error>> {
        let producer = match self.producer().await {
            Ok(producer) => producer,
            Err(e) => return records.iter().map(|r| Err(Self::unbuilt(r, &e))).collect(),
        };
        // Enqueue everything first (librdkafka batches and pipelines), then wait
        // for each acknowledgement in order.
        let mut pending = Vec::with_capacity(records.len());
        for record in records {
            let mut future_record = future_record(record);
            let enqueued = loop {
                match producer.send_result(future_record) {
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

type Admin = AdminClient<DefaultClientContext>;

fn admin_client(kafka: &KafkaSettings) -> Result<Admin, Error> {
    kafka
        .client_config()
        .create()
        .map_err(|e| ConfigError::setup("create the Kafka admin client", e).into())
}

/// One CreateTopics call: each topic's result (its name, or its name and code).
async fn create(
    admin: &Admin,
    topics: &[NewTopic<'_>],
) -> Result<Vec<rdkafka::admin::TopicResult>, Error> {
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    admin
        .create_topics(topics.iter(), &options)
        .await
        .map_err(|e| kafka_failure("CreateTopics", e))
}

/// Creates topics (safe to run twice).
pub async fn create_topics(
    kafka: &KafkaSettings,
    topics: &[&str],
    partitions: i32,
) -> Result<(), Error> {
    let admin = admin_client(kafka)?;
    let new_topics: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let results = create(&admin, &new_topics).await?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(kafka_failure(
                    "CreateTopics",
                    format!("cannot create topic {topic}: {code}"),
                ));
            }
        }
    }
    Ok(())
}

/// Creates each of `topics` with `spec`, or, when it exists, compares it with
/// `spec` and reports what differs (never changing it).
pub async fn apply_topics(
    kafka: &KafkaSettings,
    topics: &[&str],
    spec: &TopicSpec,
) -> Result<Vec<(String, TopicOutcome)>, Error> {
    let admin = admin_client(kafka)?;
    let configs = spec.configs();
    let new_topics: Vec<NewTopic> = topics
        .iter()
        .map(|t| {
            configs.iter().fold(
                NewTopic::new(
                    t,
                    spec.partitions,
                    TopicReplication::Fixed(spec.replication_factor),
                ),
                |topic, (key, value)| topic.set(key, value),
            )
        })
        .collect();
    let results = create(&admin, &new_topics).await?;
    let mut outcomes = Vec::with_capacity(results.len());
    for result in results {
        let outcome = match result {
            Ok(topic) => (topic, TopicOutcome::Created),
            Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                let existing = describe_topic(&admin, &topic).await?;
                match spec.differences(&existing) {
                    found if found.is_empty() => (topic, TopicOutcome::Matches),
                    found => (topic, TopicOutcome::Differs(found)),
                }
            }
            Err((topic, code)) => {
                return Err(kafka_failure(
                    "CreateTopics",
                    format!("cannot create topic {topic}: {code}{}", admin_hint(code)),
                ));
            }
        };
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// A topic's partitions, fewest copies, and settings, as the cluster says.
async fn describe_topic(admin: &Admin, topic: &str) -> Result<ExistingTopic, Error> {
    let metadata = admin
        .inner()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| kafka_failure("Metadata", e))?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| {
            t.partitions()
                .iter()
                .map(|p| p.replicas().len())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &options)
        .await
        .map_err(|e| kafka_failure("DescribeConfigs", e))?;
    let configs = described
        .into_iter()
        .filter_map(Result::ok)
        .flat_map(|resource| resource.entries)
        .filter_map(|entry| Some((entry.name, entry.value?)))
        .collect();
    Ok(ExistingTopic {
        partitions: partitions.len() as i32,
        replication_factor: partitions.iter().copied().min().unwrap_or(0) as i32,
        configs,
    })
}

/// What to do about an admin or producer refusal a person can fix.
fn admin_hint(code: RDKafkaErrorCode) -> &'static str {
    match code {
        RDKafkaErrorCode::InvalidReplicationFactor => {
            " (the cluster has fewer brokers than the replication factor: pass --replication-factor 1 for one local broker)"
        }
        RDKafkaErrorCode::TopicAuthorizationFailed
        | RDKafkaErrorCode::ClusterAuthorizationFailed => {
            " (the principal may not create or describe topics: grant it the ACLs, or have an administrator run this)"
        }
        _ => "",
    }
}

/// Waits until every queued record was delivered or failed (none were when
/// its producer was never built).
pub fn flush(publisher: &KafkaPublisher, timeout: Duration) -> Result<(), InfraError> {
    let Some(producer) = publisher.producing.producer.get() else {
        return Ok(());
    };
    producer.flush(timeout).map_err(|e| InfraError::Kafka {
        operation: "flush",
        source: e.into(),
    })
}

fn kafka_failure(
    operation: &'static str,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> Error {
    InfraError::Kafka {
        operation,
        source: source.into(),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> OutboundRecord {
        OutboundRecord {
            topic: "payment.completed.dlq".into(),
            key: None,
            value: Some(b"{}".to_vec()),
            headers: Vec::new(),
            event_id: "e-1".into(),
        }
    }

    #[test]
    fn a_producer_left_for_the_first_publish_still_has_its_settings_checked_at_once() {
        let typo = KafkaSettings::new("127.0.0.1:1").with_property(("linger.msec", "5"));
        let refused = KafkaPublisher::starting(
            &typo,
            &ProducerSettings::default(),
            ProducerStart::AtFirstPublish,
        )
        .unwrap_err();
        assert!(refused.to_string().contains("linger.msec"), "{refused}");

        let fine = KafkaSettings::new("127.0.0.1:1");
        let publisher = KafkaPublisher::starting(
            &fine,
            &ProducerSettings::default(),
            ProducerStart::AtFirstPublish,
        )
        .unwrap();
        assert!(!publisher.is_built());
        flush(&publisher, Duration::from_millis(10)).unwrap();
        let built = KafkaPublisher::new(&fine, &ProducerSettings::default()).unwrap();
        assert!(built.is_built());
    }

    #[tokio::test]
    async fn a_producer_that_cannot_be_built_at_its_first_publish_fails_each_record_retryably() {
        // A CA file librdkafka cannot load: only building the producer finds out.
        let kafka = KafkaSettings::new("127.0.0.1:1")
            .secured(SecurityProtocol::Ssl, None)
            .unwrap()
            .trusting("/nonexistent/ca.pem");
        let publisher = KafkaPublisher::starting(
            &kafka,
            &ProducerSettings::default(),
            ProducerStart::AtFirstPublish,
        )
        .unwrap();
        let results = publisher.publish_all(&[record(), record()]).await;
        assert_eq!(results.len(), 2);
        for result in results {
            let error = result.unwrap_err();
            assert!(error.is_retryable(), "{error}");
            let chain = crate::error_chain(&error);
            assert!(chain.contains("create the Kafka producer"), "{chain}");
            assert!(chain.contains("ssl.ca.location"), "{chain}");
        }
        assert!(!publisher.is_built(), "tried again at the next publish");
    }

    #[test]
    fn a_write_refused_for_replicas_or_acls_says_what_to_fix() {
        let record = OutboundRecord {
            topic: "payment.completed".into(),
            key: None,
            value: None,
            headers: Vec::new(),
            event_id: "e-1".into(),
        };
        let refused = |code| {
            let error = KafkaPublisher::publish_error(&record, KafkaError::MessageProduction(code));
            (error.is_retryable(), crate::error_chain(&error))
        };
        let (retryable, chain) = refused(RDKafkaErrorCode::NotEnoughReplicas);
        assert!(retryable, "{chain}");
        assert!(
            chain.contains("ops topics apply") && chain.contains("min.insync.replicas"),
            "{chain}"
        );
        let (retryable, chain) = refused(RDKafkaErrorCode::TopicAuthorizationFailed);
        assert!(retryable, "{chain}");
        assert!(chain.contains("Write and Describe"), "{chain}");
        let (_, chain) = refused(RDKafkaErrorCode::MessageSizeTooLarge);
        assert!(!chain.contains("ops topics apply"), "{chain}");
    }

    const CREDENTIALS: &str = r#"{"username": "relay", "password": "s3cret-pa55"}"#;

    fn scram() -> SaslCredentials {
        SaslCredentials::from_secret_json("scram-sha-512", &Secret::new(CREDENTIALS)).unwrap()
    }

    #[test]
    fn security_protocols_parse_case_insensitively_and_unknown_ones_are_named() {
        assert_eq!(
            SecurityProtocol::parse("sasl_ssl").unwrap(),
            SecurityProtocol::SaslSsl
        );
        assert_eq!(
            SecurityProtocol::parse("PLAINTEXT").unwrap(),
            SecurityProtocol::Plaintext
        );
        let err = SecurityProtocol::parse("TLS").unwrap_err().to_string();
        assert!(err.contains("\"TLS\"") && err.contains("SASL_SSL"), "{err}");
    }

    #[test]
    fn msk_scram_secret_json_gives_credentials_whose_debug_hides_the_password() {
        let sasl = scram();
        assert_eq!(sasl.mechanism, "SCRAM-SHA-512");
        assert_eq!(sasl.username, "relay");
        assert_eq!(sasl.password.expose(), "s3cret-pa55");
        assert!(!format!("{sasl:?}").contains("s3cret"));
    }

    #[test]
    fn malformed_credentials_are_refused_without_quoting_the_secret() {
        let err = SaslCredentials::from_secret_json(
            "SCRAM-SHA-512",
            &Secret::new(r#"{"user": "relay", "pass": "s3cret-pa55"}"#),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(KAFKA_SASL_CREDENTIALS), "{err}");
        assert!(!err.contains("s3cret"), "{err}");

        let err = SaslCredentials::from_secret_json("GSSAPI", &Secret::new(CREDENTIALS))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("GSSAPI") && err.contains("SCRAM-SHA-512"),
            "{err}"
        );
    }

    #[test]
    fn a_sasl_protocol_without_credentials_or_credentials_without_sasl_is_refused() {
        let err = KafkaSettings::new("b:9096")
            .secured(SecurityProtocol::SaslSsl, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("KAFKA_SASL_CREDENTIALS_SECRET_ID"), "{err}");
        let err = KafkaSettings::new("b:9094")
            .secured(SecurityProtocol::Ssl, Some(scram()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("SASL_SSL"), "{err}");
    }

    #[test]
    fn client_config_carries_protocol_credentials_and_ca_and_extra_properties_last() {
        let mut settings = KafkaSettings::new("b-1:9096,b-2:9096")
            .secured(SecurityProtocol::SaslSsl, Some(scram()))
            .unwrap()
            .trusting("/etc/ca.pem");
        settings.properties.push((
            "ssl.endpoint.identification.algorithm".into(),
            "none".into(),
        ));
        let cfg = settings.client_config();
        assert_eq!(cfg.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(cfg.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(cfg.get("sasl.username"), Some("relay"));
        assert_eq!(cfg.get("sasl.password"), Some("s3cret-pa55"));
        assert_eq!(cfg.get("ssl.ca.location"), Some("/etc/ca.pem"));
        assert_eq!(
            cfg.get("ssl.endpoint.identification.algorithm"),
            Some("none")
        );
        assert!(!format!("{settings:?}").contains("s3cret"));
    }

    #[test]
    fn plaintext_settings_set_no_credentials() {
        let cfg = KafkaSettings::new("127.0.0.1:9092").client_config();
        assert_eq!(cfg.get("security.protocol"), Some("PLAINTEXT"));
        assert_eq!(cfg.get("sasl.username"), None);
    }
}
