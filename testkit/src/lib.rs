//! Helpers of the end-to-end tests. Each test makes its own tables, topics and
//! consumer groups (unique names), so tests never collide on the shared moto and
//! tansu, and starts its own pipeline in-process on free ports.

pub mod api;
pub mod calls;
pub mod functions;
pub mod samples;
pub mod secured_kafka;
mod settle;
mod wait;

pub use wait::eventually;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_lambda_events::kafka::{KafkaEvent, KafkaRecord};
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{Duration, Utc};
use local_runner::kafka_source::{DeliveryFaults, KafkaSourceSettings};
use local_runner::notification_sandbox::{self, NotificationSandbox};
use local_runner::pipeline::FunctionSettings;
use local_runner::stream_source::StreamSourceSettings;
use local_runner::template::KafkaMapping;
use local_runner::{Pipeline, PipelineConfig};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use serde_json::Value;
use shared::auth::JwtKey;
use shared::channels::ChannelSettings;
use shared::clock::Clock;
use shared::config::{Secret, TableNames, TopicNames};
use shared::delivery::DeliveryConfig;
use shared::domain::{Money, SeatId};
use shared::dynamodb::{TicketingRepository, create_tables};
use shared::kafka::{KafkaSettings, ProducerSettings, create_topics};
use shared::notification::{AmbiguousSendPolicy, ChannelRoutes};
use shared::seed::{SeedRequest, Seeded, generate};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration as StdDuration;

pub const JWT_SECRET: &str = "e2e-test-secret-e2e-test-secret-0123";
/// `scripts/local-env.sh`'s JWT key: it signs the queue token of `events/*.json`.
pub const LOCAL_JWT_SECRET: &str = "local-only-jwt-secret-change-me-0123456789";

/// The Telegram chat the sandbox settings send to.
pub const CHAT_ID: &str = notification_sandbox::SANDBOX_CHAT_ID;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The AWS configuration of the local stack (moto on 127.0.0.1:4566 unless
/// AWS_ENDPOINT_URL says otherwise).
pub async fn aws() -> SdkConfig {
    let endpoint = env_or("AWS_ENDPOINT_URL", "http://127.0.0.1:4566");
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        // A cushion for a busy CI machine: the SDK retries throttling and 5xx.
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(10))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "e2e",
        ))
        .load()
        .await
}

pub fn kafka() -> KafkaSettings {
    KafkaSettings::new(env_or("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
}

/// A short unique name: `e2e-<8 hex>`.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Seeds a concert with `seats` seats at `price` and `users` users with `balance`
/// (mail `fan<n>.<hex>@example.com`).
pub async fn seed(
    repo: &TicketingRepository,
    seats: u32,
    users: u32,
    balance: i64,
    price: i64,
) -> Seeded {
    let seeded = generate(
        &SeedRequest {
            seats,
            users,
            balance: Money::krw(balance).unwrap(),
            price: Money::krw(price).unwrap(),
            title: "아이유 콘서트".into(),
            starts_at: "2026-12-24T10:00:00Z".parse().unwrap(),
            token_ttl: Duration::hours(2),
            mail_prefix: "fan".into(),
        },
        &JwtKey::from_secret(JWT_SECRET.as_bytes()).unwrap(),
        Utc::now(),
    )
    .unwrap();
    repo.seed(&seeded.data()).await.unwrap();
    seeded
}

/// How often the test pipeline's runner polls the outbox stream.
pub const STREAM_POLL_INTERVAL: StdDuration = StdDuration::from_millis(50);
/// How long the test pipeline's runner gathers Kafka records into a batch.
pub const KAFKA_BATCHING_WINDOW: StdDuration = StdDuration::from_millis(50);

/// A pipeline of its own: tables, topics, a Telegram sandbox and the runner.
pub struct TestPipeline {
    pub tables: TableNames,
    pub topics: TopicNames,
    pub repo: TicketingRepository,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sandbox: NotificationSandbox,
    /// Where the sandbox serves its API (`GET /sandbox/messages`).
    pub sandbox_url: String,
    pub base_url: String,
    pub http: reqwest::Client,
    pipeline: Option<Pipeline>,
    /// The event ids of `settle`'s markers, so checks can leave them out.
    markers: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// Whether the data-platform feed runs (`settle` then waits for it too).
    data_platform: bool,
}

pub struct Options {
    pub clock: Arc<dyn Clock>,
    pub hold_for: Duration,
    pub partitions: i32,
    /// The notifier's first retry delay.
    pub retry_delay: Duration,
    /// dlq-retry's settings (its consumer group and safety margin are the
    /// pipeline's own) and how often it runs.
    pub dlq_retry: dlq_retry::Settings,
    pub dlq_retry_interval: StdDuration,
    /// How often seat-expiration runs (a minute by default).
    pub seat_expiration_interval: StdDuration,
    /// The channels of each event type (Telegram alone by default).
    pub routes: ChannelRoutes,
    /// The functions' timeout: an invocation's deadline, so also how long a
    /// killed notifier's idempotency keys stay locked.
    pub function_timeout: StdDuration,
    /// Faults the Kafka source injects (none by default).
    pub delivery_faults: DeliveryFaults,
    /// What both channels do with a send whose answer was lost (`retry`).
    pub on_ambiguous_send: AmbiguousSendPolicy,
    /// Also run the data-platform feed, on the sandbox's platform (off by
    /// default: a failure plan for every channel would fail it too).
    pub data_platform: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            clock: Arc::new(shared::clock::SystemClock),
            hold_for: reservation::DEFAULT_HOLD,
            partitions: 3,
            retry_delay: notifier::DEFAULT_RETRY_DELAY,
            dlq_retry: dlq_retry::Settings::default(),
            dlq_retry_interval: StdDuration::from_secs(300),
            seat_expiration_interval: StdDuration::from_secs(60),
            routes: ChannelRoutes::default(),
            function_timeout: StdDuration::from_secs(30),
            delivery_faults: DeliveryFaults::default(),
            on_ambiguous_send: AmbiguousSendPolicy::Retry,
            data_platform: false,
        }
    }
}

impl Options {
    /// Failed sends retried at once: the notifier's dead letters due now, and
    /// dlq-retry running every second with no back-off.
    pub fn retrying_at_once() -> Options {
        Options {
            retry_delay: Duration::zero(),
            dlq_retry_interval: StdDuration::from_secs(1),
            dlq_retry: dlq_retry::Settings {
                backoff_base: Duration::zero(),
                backoff_max: Duration::zero(),
                ..Default::default()
            },
            ..Options::default()
        }
    }
}

/// Both channels on the sandbox at `addr`, as `options` routes them and with
/// their policy for ambiguous sends.
fn sandbox_channels(addr: std::net::SocketAddr, options: &Options) -> ChannelSettings {
    let mut channels = notification_sandbox::channel_settings(addr, options.routes.clone());
    for telegram in channels.telegram.iter_mut() {
        telegram.on_ambiguous_send = options.on_ambiguous_send;
    }
    for discord in channels.discord.iter_mut() {
        discord.on_ambiguous_send = options.on_ambiguous_send;
    }
    if !options.data_platform {
        channels.data_platform = None;
    }
    channels
}

/// Creates tables and topics with unique names.
pub async fn provision(aws: &SdkConfig, partitions: i32) -> (TableNames, TopicNames) {
    let prefix = unique("e2e");
    let tables = TableNames::with_prefix(&prefix);
    let topics = TopicNames::with_prefix(&prefix);
    let dynamodb = aws_sdk_dynamodb::Client::new(aws);
    create_tables(&dynamodb, &tables).await.expect(
        "cannot create tables: is moto running on 127.0.0.1:4566? `make services` starts it",
    );
    create_topics(&kafka(), &topics.all(), partitions)
        .await
        .expect(
            "cannot create topics: is tansu running on 127.0.0.1:9092? `make services` starts it",
        );
    (tables, topics)
}

/// The functions' settings at their defaults but for what `options` sets;
/// dlq-retry in a consumer group beside the notifier's, and both scheduled
/// functions stopping a quarter of a short timeout before their deadline
/// (their deployed margins would leave a test's short timeout no time at all).
fn function_settings(options: &Options, notifier_group: &str) -> FunctionSettings {
    let quarter = Duration::from_std(options.function_timeout / 4).unwrap_or(Duration::seconds(5));
    let mut settings = FunctionSettings::default();
    settings.reservation.hold_for = options.hold_for;
    settings.notifier.retry_delay = options.retry_delay;
    settings.feed_retry_delay = options.retry_delay;
    settings.dlq_retry = dlq_retry::Settings {
        group_id: format!("{notifier_group}-dlq-retry"),
        safety_margin: options.dlq_retry.safety_margin.min(quarter),
        ..options.dlq_retry.clone()
    };
    let expiration = &mut settings.seat_expiration;
    expiration.safety_margin = expiration.safety_margin.min(quarter);
    settings
}

/// Logs of the pipeline, shown with a failing test's output (`RUST_LOG` filters).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,aws_config=warn,aws_smithy_runtime=warn".into()),
        )
        .with_test_writer()
        .try_init();
}

impl TestPipeline {
    pub async fn start(options: Options) -> TestPipeline {
        init_logs();
        let aws = aws().await;
        let (tables, topics) = provision(&aws, options.partitions).await;
        let sandbox = NotificationSandbox::default();
        let sandbox_addr = sandbox.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let notifier_group = unique("notifier");
        let functions = function_settings(&options, &notifier_group);
        let data_platform = options.data_platform;
        let config = PipelineConfig {
            tables: tables.clone(),
            topics: topics.clone(),
            kafka: kafka(),
            producer: ProducerSettings::default(),
            jwt_secret: Secret::new(JWT_SECRET),
            channels: sandbox_channels(sandbox_addr, &options),
            functions,
            api_addr: "127.0.0.1:0".parse().unwrap(),
            stream: StreamSourceSettings {
                poll_interval: STREAM_POLL_INTERVAL,
                retry_backoff: StdDuration::from_millis(200),
                ..StreamSourceSettings::relay(None).unwrap()
            },
            // The template's mappings, with a shorter window so tests run fast.
            kafka_source: KafkaSourceSettings {
                batching_window: KAFKA_BATCHING_WINDOW,
                faults: options.delivery_faults,
                retry_backoff: StdDuration::from_millis(200),
                ..KafkaSourceSettings::played(&KafkaMapping::notifier().unwrap(), notifier_group)
            },
            function_timeout: options.function_timeout,
            dlq_retry_interval: options.dlq_retry_interval,
            seat_expiration_interval: options.seat_expiration_interval,
        };
        let pipeline = Pipeline::start(config, &aws, options.clock).await.unwrap();
        let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
        TestPipeline {
            repo: TicketingRepository::new(dynamodb.clone(), tables.clone()),
            dynamodb,
            tables,
            topics,
            sandbox,
            sandbox_url: format!("http://{sandbox_addr}"),
            base_url: format!("http://{}", pipeline.api_addr),
            http: reqwest::Client::new(),
            pipeline: Some(pipeline),
            markers: Default::default(),
            data_platform,
        }
    }

    /// Stops the pipeline and drops its tables, so moto does not grow with every test.
    pub async fn stop(mut self) {
        if let Some(p) = self.pipeline.take() {
            p.stop().await;
        }
        shared::dynamodb::delete_tables(&self.dynamodb, &self.tables)
            .await
            .unwrap();
    }

    /// `POST path` with a bearer token and a JSON body: status and JSON answer.
    pub async fn post(&self, path: &str, jwt: Option<&str>, body: &str) -> (u16, Value) {
        self.post_with(path, jwt, body, &[]).await
    }

    pub async fn post_with(
        &self,
        path: &str,
        jwt: Option<&str>,
        body: &str,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base_url))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(jwt) = jwt {
            request = request.bearer_auth(jwt);
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        answer(request.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str, jwt: Option<&str>) -> (u16, Value) {
        let mut request = self.http.get(format!("{}{path}", self.base_url));
        if let Some(jwt) = jwt {
            request = request.bearer_auth(jwt);
        }
        answer(request.send().await.unwrap()).await
    }

    pub async fn hold(&self, jwt: &str, seat: SeatId) -> (u16, Value) {
        self.post(
            "/reservations",
            Some(jwt),
            &serde_json::json!({"seatId": seat}).to_string(),
        )
        .await
    }

    pub async fn pay(&self, jwt: &str, reservation: &str) -> (u16, Value) {
        self.post(
            "/payments",
            Some(jwt),
            &serde_json::json!({"reservationId": reservation}).to_string(),
        )
        .await
    }

    /// Holds `seat` and pays for it, both of which must succeed; answers the
    /// reservation id.
    pub async fn hold_and_pay(&self, jwt: &str, seat: SeatId) -> String {
        let (status, held) = self.hold(jwt, seat).await;
        assert_eq!(status, 201, "{held}");
        let reservation = held["reservationId"].as_str().unwrap().to_owned();
        let (status, paid) = self.pay(jwt, &reservation).await;
        assert_eq!(status, 200, "{paid}");
        reservation
    }

    /// Every item of the three tables, for "nothing changed" checks.
    pub async fn snapshot(&self) -> BTreeMap<String, Vec<String>> {
        let mut all = BTreeMap::new();
        for table in [
            &self.tables.ticketing,
            &self.tables.outbox,
            &self.tables.idempotency,
        ] {
            all.insert(table.clone(), scan(&self.dynamodb, table).await);
        }
        all
    }

    pub async fn outbox_count(&self) -> usize {
        scan(&self.dynamodb, &self.tables.outbox).await.len()
    }

    /// Waits until the sandbox has received `n` messages (or panics after `timeout`).
    pub async fn wait_for_messages(&self, n: usize, timeout: StdDuration) {
        let what = format!("the sandbox receiving {n} messages");
        eventually(timeout, &what, || async {
            (self.sandbox.messages().len() >= n).then_some(())
        })
        .await;
    }
}

async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, json)
}

/// Every item of a table, each rendered in a stable order.
pub async fn scan(client: &aws_sdk_dynamodb::Client, table: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let out = client
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        for item in out.items() {
            let sorted: BTreeMap<&String, &AttributeValue> = item.iter().collect();
            items.push(format!("{sorted:?}"));
        }
        start = out.last_evaluated_key().cloned();
        if start.is_none() {
            break;
        }
    }
    items.sort();
    items
}

/// A child process (a function's binary, a broker), killed when dropped.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads `topic` from the beginning with a fresh consumer group until `n`
/// records arrived (or `timeout`), then a little longer to catch extras.
pub async fn consume(
    bootstrap: &str,
    topic: &str,
    n: usize,
    timeout: StdDuration,
) -> Vec<OwnedMessage> {
    consume_from(&KafkaSettings::new(bootstrap), topic, n, timeout).await
}

/// `consume` from brokers reached with `kafka` (TLS, SASL).
pub async fn consume_from(
    kafka: &KafkaSettings,
    topic: &str,
    n: usize,
    timeout: StdDuration,
) -> Vec<OwnedMessage> {
    let consumer: StreamConsumer = kafka
        .client_config()
        .set("group.id", unique("e2e-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut messages = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut extra_until: Option<tokio::time::Instant> = None;
    loop {
        let now = tokio::time::Instant::now();
        let until = extra_until.unwrap_or(deadline);
        if now >= until {
            break;
        }
        match tokio::time::timeout(until - now, consumer.recv()).await {
            Ok(Ok(m)) => {
                messages.push(m.detach());
                if messages.len() >= n && extra_until.is_none() {
                    extra_until = Some(tokio::time::Instant::now() + StdDuration::from_secs(1));
                }
            }
            Ok(Err(e)) => panic!("consuming {topic}: {e}"),
            Err(_) => break,
        }
    }
    messages
}

/// A notifier of its own, without a runner: unique tables and topics, a Telegram
/// sandbox, real DynamoDB and Kafka.
pub struct DirectNotifier {
    pub tables: TableNames,
    pub topics: TopicNames,
    pub sandbox: NotificationSandbox,
    pub config: notifier::Config,
    pub notifier: notifier::LambdaNotifier,
    pub dynamodb: aws_sdk_dynamodb::Client,
}

/// The notifier's configuration for these tables and topics and `channels`:
/// the local Kafka, a week of idempotency, a first retry after a minute.
pub fn notifier_config(
    tables: &TableNames,
    topics: &TopicNames,
    channels: ChannelSettings,
) -> notifier::Config {
    notifier::Config {
        delivery: DeliveryConfig {
            tables: tables.clone(),
            channels,
            idempotency_ttl: Duration::days(7),
            kafka: kafka().with_property(shared::kafka::TANSU_ONE_RECORD_PER_BATCH),
            producer: ProducerSettings::default(),
            topics: topics.clone(),
        },
        settings: notifier::Settings::default(),
    }
}

impl DirectNotifier {
    /// Telegram alone, answering within `timeout`.
    pub async fn start(retry_delay: Duration, timeout: StdDuration) -> DirectNotifier {
        Self::start_routed(ChannelRoutes::default(), retry_delay, timeout).await
    }

    /// The channels of `routes`, both on the sandbox, answering within `timeout`.
    pub async fn start_routed(
        routes: ChannelRoutes,
        retry_delay: Duration,
        timeout: StdDuration,
    ) -> DirectNotifier {
        Self::start_configured(routes, |config| {
            let channels = &mut config.delivery.channels;
            for settings in channels.telegram.iter_mut() {
                settings.timeout = timeout;
            }
            for settings in channels.discord.iter_mut() {
                settings.timeout = timeout;
            }
            config.settings.retry_delay = retry_delay;
        })
        .await
    }

    /// Telegram alone, on the defaults as `edit` leaves them.
    pub async fn start_with(edit: impl FnOnce(&mut notifier::Config)) -> DirectNotifier {
        Self::start_configured(ChannelRoutes::default(), edit).await
    }

    /// The channels of `routes` on the sandbox, the configuration as `edit`
    /// leaves it.
    async fn start_configured(
        routes: ChannelRoutes,
        edit: impl FnOnce(&mut notifier::Config),
    ) -> DirectNotifier {
        init_logs();
        let aws = aws().await;
        let (tables, topics) = provision(&aws, 1).await;
        let sandbox = NotificationSandbox::default();
        let addr = sandbox.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let channels = notification_sandbox::channel_settings(addr, routes);
        let mut config = notifier_config(&tables, &topics, channels);
        edit(&mut config);
        let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
        let notifier = notifier::LambdaNotifier::from_config(
            &config,
            dynamodb.clone(),
            Arc::new(shared::clock::SystemClock),
        )
        .unwrap();
        DirectNotifier {
            tables,
            topics,
            sandbox,
            config,
            notifier,
            dynamodb,
        }
    }

    /// A PaymentCompleted record of the payment topic, as Lambda delivers it.
    pub fn payment_record(&self, offset: i64) -> KafkaRecord {
        self.payment_record_of(shared::domain::ReservationId::random(), offset)
    }

    /// A PaymentCompleted record of `reservation` (its key): the records of
    /// one reservation are handled in offset order, those of others concurrently.
    pub fn payment_record_of(
        &self,
        reservation: shared::domain::ReservationId,
        offset: i64,
    ) -> KafkaRecord {
        let envelope =
            shared::fixtures::payment_completed_envelope(reservation, "direct@example.com", 1_000);
        shared::kafka_event::encode_record(&shared::fixtures::record_of(
            &envelope,
            &self.topics.payment_completed,
            offset,
        ))
    }

    /// Invokes the notifier with these records of partition 0, through the runtime's JSON.
    pub async fn deliver(&self, records: Vec<KafkaRecord>) -> Result<Value, local_runner::Error> {
        let mut event = KafkaEvent::default();
        event
            .records
            .insert(format!("{}-0", self.topics.payment_completed), records);
        local_runner::invoke::invoke(
            "notifier",
            StdDuration::from_secs(30),
            serde_json::to_value(event).unwrap(),
            |e| self.notifier.handle(e),
        )
        .await
    }

    pub fn ledger(&self) -> shared::dynamodb::DynamoFailureLedger {
        shared::dynamodb::DynamoFailureLedger::new(
            self.dynamodb.clone(),
            self.tables.failed_messages.clone(),
        )
    }
}

/// The first header called `name` of a consumed message, as text.
pub fn header(message: &OwnedMessage, name: &str) -> Option<String> {
    shared::kafka::decoded_message(message)
        .header(name)
        .map(str::to_owned)
}
