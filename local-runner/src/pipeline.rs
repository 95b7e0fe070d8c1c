//! The whole pipeline wired as template.yaml wires it on AWS: the HTTP API to the
//! reservation and payment functions, the outbox stream to the relay, the payment
//! and hold-expired topics to the notifier and (when the data platform is
//! configured) to the data-platform feed in its own consumer group, and the
//! schedules of dlq-retry and seat-expiration.

use crate::Error;
use crate::http_api::{self, Invoker, Route};
use crate::invoke::invoke;
use crate::kafka_source::{self, KafkaSourceSettings};
use crate::stream_source::{self, FailureQueue, StreamSourceSettings};
use crate::template::KafkaMapping;
use data_platform_feed::LambdaFeed;
use dlq_retry::LambdaDlqRetry;
use notifier::LambdaNotifier;
use outbox_relay::Relay;
use payment::PaymentApi;
use reservation::ReservationApi;
use seat_expiration::SeatExpiration;
use shared::channels::ChannelSettings;
use shared::clock::Clock;
use shared::config::{self, ConfigError, Secret, TableNames, TopicNames, Vars};
use shared::delivery::DeliveryConfig;
use shared::kafka::{KafkaSettings, ProducerSettings, TANSU_ONE_RECORD_PER_BATCH};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub tables: TableNames,
    pub topics: TopicNames,
    pub kafka: KafkaSettings,
    pub producer: ProducerSettings,
    pub jwt_secret: Secret,
    /// The notifier's channels per event type and their settings.
    pub channels: ChannelSettings,
    /// Each function's settings, read from its variables as it reads them.
    pub functions: FunctionSettings,
    pub api_addr: SocketAddr,
    pub stream: StreamSourceSettings,
    pub kafka_source: KafkaSourceSettings,
    /// The functions' timeout, as template.yaml sets it.
    pub function_timeout: Duration,
    /// How often dlq-retry runs (its EventBridge schedule).
    pub dlq_retry_interval: Duration,
    /// How often seat-expiration runs (its EventBridge schedule).
    pub seat_expiration_interval: Duration,
}

/// The settings of each function, as each function's own `Settings` reads
/// them: the runner reads none of their variables itself.
#[derive(Clone, Debug)]
pub struct FunctionSettings {
    pub reservation: reservation::Settings,
    pub payment: payment::Settings,
    pub notifier: notifier::Settings,
    /// The feed's first retry delay (`RETRY_DELAY_SECONDS`, as the notifier's).
    pub feed_retry_delay: chrono::Duration,
    pub dlq_retry: dlq_retry::Settings,
    pub seat_expiration: seat_expiration::Settings,
    /// How long the notifier and dlq-retry remember a sent event.
    pub delivery_idempotency_ttl: chrono::Duration,
}

impl Default for FunctionSettings {
    fn default() -> Self {
        FunctionSettings {
            reservation: Default::default(),
            payment: Default::default(),
            notifier: Default::default(),
            feed_retry_delay: data_platform_feed::DEFAULT_RETRY_DELAY,
            dlq_retry: Default::default(),
            seat_expiration: Default::default(),
            delivery_idempotency_ttl: shared::delivery::DEFAULT_IDEMPOTENCY_TTL,
        }
    }
}

impl FunctionSettings {
    pub fn from_vars(vars: &Vars) -> Result<Self, Error> {
        Ok(FunctionSettings {
            reservation: reservation::Settings::from_vars(vars)?,
            payment: payment::Settings::from_vars(vars)?,
            notifier: notifier::Settings::from_vars(vars)?,
            feed_retry_delay: vars.seconds(
                "RETRY_DELAY_SECONDS",
                data_platform_feed::DEFAULT_RETRY_DELAY,
            )?,
            dlq_retry: dlq_retry::Settings::from_vars(vars)?,
            seat_expiration: seat_expiration::Settings::from_vars(vars)?,
            delivery_idempotency_ttl: shared::delivery::idempotency_ttl(vars)?,
        })
    }
}

impl PipelineConfig {
    /// The functions' variables through their own settings, plus the runner's.
    pub fn from_env() -> Result<Self, Error> {
        let api_addr = config::or_default("API_ADDR", "127.0.0.1:3000");
        Ok(PipelineConfig {
            tables: TableNames::from_env(),
            topics: TopicNames::from_env(),
            kafka: KafkaSettings::from_env()?,
            producer: ProducerSettings::from_env()?,
            jwt_secret: config::secret(shared::auth::JWT_SECRET)?,
            channels: ChannelSettings::from_env()?,
            functions: FunctionSettings::from_vars(&Vars::process())?,
            api_addr: api_addr.parse().map_err(|_| {
                ConfigError::invalid("API_ADDR", format!("{api_addr:?} is not host:port"))
            })?,
            stream: StreamSourceSettings {
                poll_interval: Duration::from_millis(config::parsed(
                    "STREAM_POLL_INTERVAL_MS",
                    250u64,
                )?),
                region: config::or_default("AWS_REGION", "us-east-1"),
                ..StreamSourceSettings::relay(None)?
            },
            // The notifier's mappings in template.yaml: batch size, window,
            // starting position.
            kafka_source: KafkaSourceSettings::played(
                &KafkaMapping::notifier()?,
                config::or_default("NOTIFIER_GROUP_ID", "notifier"),
            ),
            function_timeout: Duration::from_secs(config::parsed("FUNCTION_TIMEOUT_SECONDS", 30)?),
            dlq_retry_interval: Duration::from_secs(config::parsed(
                "DLQ_RETRY_INTERVAL_SECONDS",
                300u64,
            )?),
            seat_expiration_interval: Duration::from_secs(config::parsed(
                "SEAT_EXPIRATION_INTERVAL_SECONDS",
                60u64,
            )?),
        })
    }
}

/// The HTTP API's routes as template.yaml declares them: method, path, function.
/// A test checks the two agree.
pub const HTTP_ROUTES: [(&str, &str, &str); 3] = [
    ("POST", "/reservations", "reservation"),
    ("GET", "/reservations/{id}", "reservation"),
    ("POST", "/payments", "payment"),
];

/// An invoker calling `$handler.handle(event)` through the runtime's JSON.
macro_rules! invoker {
    ($name:literal, $timeout:expr, $handler:expr) => {{
        let handler = $handler;
        let timeout = $timeout;
        let invoker: Invoker = Arc::new(move |payload| {
            let handler = handler.clone();
            Box::pin(async move { invoke($name, timeout, payload, |e| handler.handle(e)).await })
        });
        invoker
    }};
}

/// The event EventBridge Scheduler sends to a scheduled function.
pub fn scheduled_event(schedule: &str) -> serde_json::Value {
    serde_json::json!({
        "version": "0",
        "id": shared::domain::EventId::random().to_string(),
        "detail-type": "Scheduled Event",
        "source": "aws.scheduler",
        "account": "000000000000",
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "region": "us-east-1",
        "resources": [format!("arn:aws:scheduler:us-east-1:000000000000:schedule/default/{schedule}")],
        "detail": {},
    })
}

/// The HTTP API's routes, each to the function that serves it.
fn http_routes(reservation: &Invoker, payment: &Invoker) -> Vec<Route> {
    HTTP_ROUTES
        .iter()
        .map(|(method, path, function)| Route {
            method,
            path,
            invoker: match *function {
                "payment" => payment.clone(),
                _ => reservation.clone(),
            },
        })
        .collect()
}

/// Runs the outbox stream's source for the relay until `stop`.
async fn stream_source_task(
    dynamodb: aws_sdk_dynamodb::Client,
    streams: aws_sdk_dynamodbstreams::Client,
    outbox_table: String,
    settings: StreamSourceSettings,
    relay: Invoker,
    stop: watch::Receiver<bool>,
) {
    if let Err(e) = stream_source::run(dynamodb, streams, outbox_table, settings, relay, stop).await
    {
        tracing::error!(error = %shared::error_chain(&e), "the stream source stopped");
    }
}

/// The Kafka event sources of a function, as the template maps it: one per
/// topic, each in its own consumer group (`<group>-payment-completed`,
/// `<group>-seat-hold-expired`), so a batch holds one topic's records.
fn kafka_sources(
    kafka: &KafkaSettings,
    topics: &TopicNames,
    settings: &KafkaSourceSettings,
    function: &Invoker,
    stop: &watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    [
        ("payment-completed", &topics.payment_completed),
        ("seat-hold-expired", &topics.seat_hold_expired),
    ]
    .into_iter()
    .map(|(suffix, topic)| {
        let settings = KafkaSourceSettings {
            group_id: format!("{}-{suffix}", settings.group_id),
            ..settings.clone()
        };
        kafka_source_task(
            kafka.clone(),
            vec![topic.clone()],
            settings,
            function.clone(),
            stop.clone(),
        )
    })
    .collect()
}

/// Runs a Kafka event source for `function` until `stop`.
fn kafka_source_task(
    kafka: KafkaSettings,
    topics: Vec<String>,
    settings: KafkaSourceSettings,
    function: Invoker,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let group = settings.group_id.clone();
        if let Err(e) = kafka_source::run(kafka, topics, settings, function, stop).await {
            tracing::error!(group, error = %shared::error_chain(&e), "the Kafka source stopped");
        }
    })
}

/// Invokes `function` every `interval` with a scheduled event, as an EventBridge
/// Scheduler `rate(...)` schedule does, until `stop`.
fn schedule(
    name: &'static str,
    interval: Duration,
    function: Invoker,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            crate::stream_source::sleep_or_stop(&mut stop, interval).await;
            if *stop.borrow() {
                break;
            }
            match function(scheduled_event(name)).await {
                Ok(report) => tracing::debug!(function = name, %report, "scheduled run done"),
                Err(e) => {
                    tracing::error!(function = name, error = %shared::error_chain(&e), "scheduled run failed")
                }
            }
        }
    })
}

/// The functions, built from their configs as their `main.rs` builds them.
struct Functions {
    reservation: Arc<ReservationApi>,
    payment: Arc<PaymentApi>,
    relay: Arc<Relay<shared::kafka::KafkaPublisher>>,
    notifier: Arc<LambdaNotifier>,
    /// The data-platform feed, when the platform is configured.
    feed: Option<Arc<LambdaFeed>>,
    dlq_retry: Arc<LambdaDlqRetry>,
    seat_expiration: Arc<SeatExpiration>,
}

/// The Kafka settings every producer of the pipeline writes with: one record
/// per batch, so a reader that stops at the partition's end as tansu reports
/// it (dlq-retry, ops trace, ops reconcile) sees every record.
fn producing(config: &PipelineConfig) -> KafkaSettings {
    config
        .kafka
        .clone()
        .with_property(TANSU_ONE_RECORD_PER_BATCH)
}

/// What the notifier and dlq-retry deliver with.
fn delivery_config(config: &PipelineConfig) -> DeliveryConfig {
    DeliveryConfig {
        tables: config.tables.clone(),
        channels: config.channels.clone(),
        idempotency_ttl: config.functions.delivery_idempotency_ttl,
        kafka: producing(config),
        producer: config.producer.clone(),
        topics: config.topics.clone(),
    }
}

/// The data-platform feed's config, when the platform is configured.
fn feed_config(config: &PipelineConfig) -> Option<data_platform_feed::Config> {
    let platform = config.channels.data_platform.clone()?;
    Some(data_platform_feed::Config {
        tables: config.tables.clone(),
        platform,
        idempotency_ttl: config.functions.delivery_idempotency_ttl,
        kafka: producing(config),
        producer: config.producer.clone(),
        topics: config.topics.clone(),
        retry_delay: config.functions.feed_retry_delay,
    })
}

fn startup_error(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Startup(Box::new(e))
}

impl Functions {
    fn build(
        config: &PipelineConfig,
        dynamodb: &aws_sdk_dynamodb::Client,
        clock: &Arc<dyn Clock>,
    ) -> Result<Functions, Error> {
        let settings = &config.functions;
        let reservation = reservation::Config {
            tables: config.tables.clone(),
            jwt_secret: config.jwt_secret.clone(),
            settings: settings.reservation.clone(),
        };
        let payment = payment::Config {
            tables: config.tables.clone(),
            jwt_secret: config.jwt_secret.clone(),
            settings: settings.payment.clone(),
        };
        let relay = outbox_relay::Config {
            kafka: producing(config),
            producer: config.producer.clone(),
            topics: config.topics.clone(),
        };
        let delivery = delivery_config(config);
        let notifier = notifier::Config {
            delivery: delivery.clone(),
            settings: settings.notifier.clone(),
        };
        let feed = feed_config(config);
        let dlq_retry = dlq_retry::Config {
            delivery,
            settings: settings.dlq_retry.clone(),
        };
        let seat_expiration = seat_expiration::Config {
            tables: config.tables.clone(),
            settings: settings.seat_expiration.clone(),
        };
        Ok(Functions {
            reservation: Arc::new(
                ReservationApi::new(&reservation, dynamodb.clone(), clock.clone())
                    .map_err(startup_error)?,
            ),
            payment: Arc::new(
                PaymentApi::new(&payment, dynamodb.clone(), clock.clone())
                    .map_err(startup_error)?,
            ),
            relay: Arc::new(Relay::from_config(&relay).map_err(startup_error)?),
            notifier: Arc::new(
                LambdaNotifier::from_config(&notifier, dynamodb.clone(), clock.clone())
                    .map_err(startup_error)?,
            ),
            feed: feed
                .map(|feed| LambdaFeed::from_config(&feed, dynamodb.clone(), clock.clone()))
                .transpose()
                .map_err(startup_error)?
                .map(Arc::new),
            dlq_retry: Arc::new(
                LambdaDlqRetry::from_config(dlq_retry, dynamodb.clone(), clock.clone())
                    .map_err(startup_error)?,
            ),
            seat_expiration: Arc::new(SeatExpiration::new(
                seat_expiration,
                dynamodb.clone(),
                clock.clone(),
            )),
        })
    }
}

/// Gives the stream source the queue the template's on-failure destination
/// stands for, when the mapping names one and none was given: SQS on the same
/// endpoint, named for the outbox table (`<table>-relay-failures`).
async fn with_failure_queue(
    mut settings: StreamSourceSettings,
    aws: &aws_config::SdkConfig,
    outbox_table: &str,
) -> Result<StreamSourceSettings, Error> {
    if settings.mapping.on_failure && settings.on_failure.is_none() {
        let name = format!("{outbox_table}-relay-failures");
        let queue = FailureQueue::create(aws_sdk_sqs::Client::new(aws), &name).await?;
        tracing::info!(queue = %queue.url, "the relay's discarded batches are described on this queue");
        settings.on_failure = Some(queue);
    }
    Ok(settings)
}

/// A running pipeline; `stop` ends every task it started.
pub struct Pipeline {
    pub api_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Pipeline {
    pub async fn start(
        config: PipelineConfig,
        aws: &aws_config::SdkConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Pipeline, Error> {
        let dynamodb = aws_sdk_dynamodb::Client::new(aws);
        let streams = aws_sdk_dynamodbstreams::Client::new(aws);
        let timeout = config.function_timeout;
        let functions = Functions::build(&config, &dynamodb, &clock)?;

        let reservation_invoker = invoker!("reservation", timeout, functions.reservation);
        let payment_invoker = invoker!("payment", timeout, functions.payment);
        let routes = http_routes(&reservation_invoker, &payment_invoker);
        let api_addr = http_api::serve(config.api_addr, routes).await?;

        let (shutdown, watcher) = watch::channel(false);
        let relay_invoker = invoker!("outbox-relay", timeout, functions.relay);
        let outbox_table = config.tables.outbox.clone();
        let stream_settings = with_failure_queue(config.stream.clone(), aws, &outbox_table).await?;
        let mut tasks = vec![tokio::spawn(stream_source_task(
            dynamodb,
            streams,
            outbox_table,
            stream_settings,
            relay_invoker,
            watcher.clone(),
        ))];
        let notifier_invoker = invoker!("notifier", timeout, functions.notifier);
        let source_settings = config.kafka_source.clone();
        if let Some(feed) = functions.feed {
            // Its own consumer groups: the feed and the notifier never hold
            // each other back; its batch size is its mappings' in the template.
            let feed_settings = KafkaSourceSettings {
                group_id: format!("{}-data-platform", source_settings.group_id),
                batch_size: KafkaMapping::feed()?.batch_size,
                ..source_settings.clone()
            };
            let feed_invoker = invoker!("data-platform-feed", timeout, feed);
            tasks.extend(kafka_sources(
                &config.kafka,
                &config.topics,
                &feed_settings,
                &feed_invoker,
                &watcher,
            ));
        }
        tasks.extend(kafka_sources(
            &config.kafka,
            &config.topics,
            &source_settings,
            &notifier_invoker,
            &watcher,
        ));
        tasks.push(schedule(
            "dlq-retry",
            config.dlq_retry_interval,
            invoker!("dlq-retry", timeout, functions.dlq_retry),
            shutdown.subscribe(),
        ));
        tasks.push(schedule(
            "seat-expiration",
            config.seat_expiration_interval,
            invoker!("seat-expiration", timeout, functions.seat_expiration),
            shutdown.subscribe(),
        ));
        tracing::info!(api = %api_addr, "local pipeline running");
        Ok(Pipeline {
            api_addr,
            shutdown,
            tasks,
        })
    }

    /// Stops the event sources and waits for them to finish their current batch.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{FunctionSettings, HTTP_ROUTES};
    use shared::config::Vars;

    #[test]
    fn the_runner_honours_the_variables_each_function_reads() {
        let vars = Vars::from_pairs([
            ("HOLD_SECONDS", "90"),
            ("MAX_BODY_BYTES", "2048"),
            ("IDEMPOTENCY_TTL_SECONDS", "600"),
            ("RETRY_DELAY_SECONDS", "7"),
            ("NOTIFY_CONCURRENCY", "4"),
            ("DLQ_MAX_RETRIES", "9"),
            ("DLQ_SAFETY_MARGIN_SECONDS", "3"),
            ("EXPIRATION_PAGE_SIZE", "11"),
        ]);
        let settings = FunctionSettings::from_vars(&vars).unwrap();
        let seconds = chrono::Duration::seconds;
        assert_eq!(settings.reservation.hold_for, seconds(90));
        assert_eq!(settings.reservation.max_body_bytes, 2048);
        assert_eq!(settings.payment.max_body_bytes, 2048);
        assert_eq!(settings.payment.idempotency_ttl, seconds(600));
        assert_eq!(settings.delivery_idempotency_ttl, seconds(600));
        assert_eq!(settings.notifier.retry_delay, seconds(7));
        assert_eq!(settings.notifier.concurrency, 4);
        assert_eq!(settings.dlq_retry.concurrency, 4);
        assert_eq!(settings.dlq_retry.max_retries, 9);
        assert_eq!(settings.dlq_retry.safety_margin, seconds(3));
        assert_eq!(settings.seat_expiration.page_size, 11);
    }

    #[test]
    fn without_variables_every_function_takes_its_own_defaults() {
        let settings = FunctionSettings::from_vars(&Vars::none()).unwrap();
        assert_eq!(settings.reservation.hold_for, reservation::DEFAULT_HOLD);
        assert_eq!(
            settings.payment.idempotency_ttl,
            payment::DEFAULT_IDEMPOTENCY_TTL
        );
        assert_eq!(
            settings.dlq_retry.max_retries,
            dlq_retry::DEFAULT_MAX_RETRIES
        );
        assert_eq!(
            settings.seat_expiration.page_size,
            seat_expiration::DEFAULT_PAGE_SIZE
        );
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let vars = Vars::from_pairs([("NOTIFY_CONCURRENCY", "0")]);
        let error = shared::error_chain(&FunctionSettings::from_vars(&vars).unwrap_err());
        assert!(error.contains("NOTIFY_CONCURRENCY"), "{error}");
        let vars = Vars::from_pairs([("DLQ_MAX_RETRIES", "many")]);
        let error = shared::error_chain(&FunctionSettings::from_vars(&vars).unwrap_err());
        assert!(error.contains("DLQ_MAX_RETRIES"), "{error}");
    }

    /// The (method, path, function) of every HttpApi event in template.yaml.
    fn template_routes() -> Vec<(String, String, String)> {
        let template =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml"))
                .expect("template.yaml next to the workspace");
        let mut routes = Vec::new();
        let (mut resource, mut method) = (String::new(), String::new());
        for line in template.lines() {
            let indent = line.len() - line.trim_start().len();
            let text = line.trim();
            if indent == 2 && text.ends_with(':') {
                resource = text.trim_end_matches(':').to_owned();
            } else if let Some(m) = text.strip_prefix("Method: ") {
                method = m.to_owned();
            } else if let Some(path) = text.strip_prefix("Path: ") {
                let function = resource.trim_end_matches("Function").to_ascii_lowercase();
                routes.push((method.clone(), path.to_owned(), function));
            }
        }
        routes
    }

    #[test]
    fn the_runner_serves_exactly_the_routes_of_the_template() {
        let mut ours: Vec<(String, String, String)> = HTTP_ROUTES
            .iter()
            .map(|(m, p, f)| (m.to_string(), p.to_string(), f.to_string()))
            .collect();
        let mut theirs = template_routes();
        ours.sort();
        theirs.sort();
        assert_eq!(ours, theirs);
    }
}
