//! The whole pipeline wired as template.yaml wires it on AWS: the HTTP API to the
//! reservation and payment functions, the outbox stream to the relay, the payment
//! and hold-expired topics to the notifier, and the schedules of dlq-retry and
//! seat-expiration.

use crate::Error;
use crate::http_api::{self, Invoker, Route};
use crate::invoke::invoke;
use crate::kafka_source::{self, KafkaSourceSettings};
use crate::stream_source::{self, StreamSourceSettings};
use dlq_retry::DlqRetry;
use notifier::LambdaNotifier;
use outbox_relay::Relay;
use payment::PaymentApi;
use reservation::ReservationApi;
use seat_expiration::SeatExpiration;
use shared::channels::ChannelSettings;
use shared::clock::Clock;
use shared::config::{self, Secret, TableNames, TopicNames};
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
    pub hold_for: chrono::Duration,
    /// The notifier's channels per event type and their settings.
    pub channels: ChannelSettings,
    pub api_addr: SocketAddr,
    pub stream: StreamSourceSettings,
    pub kafka_source: KafkaSourceSettings,
    /// The functions' timeout, as template.yaml sets it.
    pub function_timeout: Duration,
    /// The notifier's first retry delay for a dead letter.
    pub retry_delay: chrono::Duration,
    /// Keys the notifier handles at once.
    pub notify_concurrency: usize,
    pub dlq_retry: DlqRetrySettings,
    /// How often seat-expiration runs (its EventBridge schedule).
    pub seat_expiration_interval: Duration,
}

/// How often dlq-retry runs (its EventBridge schedule) and how it backs off.
#[derive(Clone, Debug)]
pub struct DlqRetrySettings {
    pub interval: Duration,
    pub max_retries: u32,
    pub backoff_base: chrono::Duration,
    pub backoff_max: chrono::Duration,
}

impl Default for DlqRetrySettings {
    fn default() -> Self {
        DlqRetrySettings {
            interval: Duration::from_secs(300),
            max_retries: 3,
            backoff_base: chrono::Duration::seconds(60),
            backoff_max: chrono::Duration::hours(1),
        }
    }
}

/// How long before its deadline a scheduled job stops taking work: 5 s, or a
/// quarter of a shorter timeout (a margin as long as the timeout would leave
/// the job no time at all).
fn job_safety_margin(function_timeout: Duration) -> chrono::Duration {
    let quarter = function_timeout / 4;
    chrono::Duration::from_std(quarter.min(Duration::from_secs(5)))
        .unwrap_or(chrono::Duration::seconds(5))
}

impl PipelineConfig {
    /// Reads the same variables the functions read, plus the runner's own.
    pub fn from_env() -> Result<Self, Error> {
        let api_addr = config::or_default("API_ADDR", "127.0.0.1:3000");
        Ok(PipelineConfig {
            tables: TableNames::from_env(),
            topics: TopicNames::from_env(),
            kafka: KafkaSettings::from_env()?,
            producer: ProducerSettings::from_env()?,
            jwt_secret: config::secret("JWT_SECRET")?,
            hold_for: chrono::Duration::seconds(config::parsed("HOLD_SECONDS", 300i64)?),
            channels: ChannelSettings::from_env()?,
            api_addr: api_addr
                .parse()
                .map_err(|_| Error::Config(format!("API_ADDR={api_addr:?} is not host:port")))?,
            stream: StreamSourceSettings {
                batch_size: config::parsed("STREAM_BATCH_SIZE", 100)?,
                poll_interval: Duration::from_millis(config::parsed(
                    "STREAM_POLL_INTERVAL_MS",
                    200u64,
                )?),
                region: config::or_default("AWS_REGION", "us-east-1"),
                ..StreamSourceSettings::default()
            },
            kafka_source: KafkaSourceSettings {
                group_id: config::or_default("NOTIFIER_GROUP_ID", "notifier"),
                batch_size: config::parsed("KAFKA_BATCH_SIZE", 100)?,
                batching_window: Duration::from_millis(config::parsed(
                    "KAFKA_BATCHING_WINDOW_MS",
                    200u64,
                )?),
                ..KafkaSourceSettings::default()
            },
            function_timeout: Duration::from_secs(config::parsed("FUNCTION_TIMEOUT_SECONDS", 30)?),
            retry_delay: chrono::Duration::seconds(config::parsed("RETRY_DELAY_SECONDS", 60i64)?),
            notify_concurrency: shared::delivery::concurrency_from_env()?,
            seat_expiration_interval: Duration::from_secs(config::parsed(
                "SEAT_EXPIRATION_INTERVAL_SECONDS",
                60u64,
            )?),
            dlq_retry: DlqRetrySettings {
                interval: Duration::from_secs(config::parsed(
                    "DLQ_RETRY_INTERVAL_SECONDS",
                    300u64,
                )?),
                max_retries: config::parsed("DLQ_MAX_RETRIES", 3u32)?,
                backoff_base: chrono::Duration::seconds(config::parsed(
                    "DLQ_BACKOFF_BASE_SECONDS",
                    60i64,
                )?),
                backoff_max: chrono::Duration::seconds(config::parsed(
                    "DLQ_BACKOFF_MAX_SECONDS",
                    3_600i64,
                )?),
            },
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

        let reservation = Arc::new(
            ReservationApi::new(
                &reservation::Config {
                    tables: config.tables.clone(),
                    jwt_secret: config.jwt_secret.clone(),
                    hold_for: config.hold_for,
                    max_body_bytes: shared::api::DEFAULT_MAX_BODY_BYTES,
                },
                dynamodb.clone(),
                clock.clone(),
            )
            .map_err(|e| Error::Config(shared::error_chain(&e)))?,
        );
        let payment = Arc::new(
            PaymentApi::new(
                &payment::Config {
                    tables: config.tables.clone(),
                    jwt_secret: config.jwt_secret.clone(),
                    idempotency_ttl: chrono::Duration::days(1),
                    max_body_bytes: shared::api::DEFAULT_MAX_BODY_BYTES,
                },
                dynamodb.clone(),
                clock.clone(),
            )
            .map_err(|e| Error::Config(shared::error_chain(&e)))?,
        );
        let relay = Arc::new(
            Relay::from_config(&outbox_relay::Config {
                kafka: config.kafka.clone(),
                producer: config.producer.clone(),
                topics: config.topics.clone(),
            })
            .map_err(|e| Error::Config(shared::error_chain(&e)))?,
        );
        let delivery = DeliveryConfig {
            tables: config.tables.clone(),
            channels: config.channels.clone(),
            idempotency_ttl: shared::delivery::DEFAULT_IDEMPOTENCY_TTL,
            // The notifier and dlq-retry write the dead letters that dlq-retry
            // reads up to the partition's end as tansu reports it.
            kafka: config
                .kafka
                .clone()
                .with_property(TANSU_ONE_RECORD_PER_BATCH),
            producer: config.producer.clone(),
            topics: config.topics.clone(),
        };
        let notifier_config = notifier::Config {
            delivery: delivery.clone(),
            retry_delay: config.retry_delay,
            concurrency: config.notify_concurrency,
        };
        let notifier = Arc::new(
            LambdaNotifier::from_config(&notifier_config, dynamodb.clone(), clock.clone())
                .map_err(|e| Error::Config(shared::error_chain(&e)))?,
        );
        let dlq_retry = Arc::new(
            DlqRetry::from_config(
                dlq_retry::Config {
                    delivery,
                    concurrency: config.notify_concurrency,
                    group_id: format!("{}-dlq-retry", config.kafka_source.group_id),
                    max_retries: config.dlq_retry.max_retries,
                    backoff_base: config.dlq_retry.backoff_base,
                    backoff_max: config.dlq_retry.backoff_max,
                    safety_margin: job_safety_margin(config.function_timeout),
                    default_run_time: chrono::Duration::seconds(60),
                },
                dynamodb.clone(),
                clock.clone(),
            )
            .map_err(|e| Error::Config(shared::error_chain(&e)))?,
        );
        let (dynamodb_for_jobs, job_clock) = (dynamodb.clone(), clock);

        let reservation_invoker = invoker!("reservation", timeout, reservation);
        let payment_invoker = invoker!("payment", timeout, payment);
        let routes = HTTP_ROUTES
            .iter()
            .map(|(method, path, function)| Route {
                method,
                path,
                invoker: match *function {
                    "payment" => payment_invoker.clone(),
                    _ => reservation_invoker.clone(),
                },
            })
            .collect();
        let api_addr = http_api::serve(config.api_addr, routes).await?;

        let (shutdown, watcher) = watch::channel(false);
        let mut tasks = Vec::new();
        let relay_invoker = invoker!("outbox-relay", timeout, relay);
        let outbox_table = config.tables.outbox.clone();
        let stream_settings = config.stream.clone();
        let stop = watcher.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = stream_source::run(
                dynamodb,
                streams,
                outbox_table,
                stream_settings,
                relay_invoker,
                stop,
            )
            .await
            {
                tracing::error!(error = %shared::error_chain(&e), "the stream source stopped");
            }
        }));
        let notifier_invoker = invoker!("notifier", timeout, notifier);
        let kafka = config.kafka.clone();
        let topics = vec![
            config.topics.payment_completed.clone(),
            config.topics.seat_hold_expired.clone(),
        ];
        let source_settings = config.kafka_source.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) =
                kafka_source::run(kafka, topics, source_settings, notifier_invoker, watcher).await
            {
                tracing::error!(error = %shared::error_chain(&e), "the Kafka source stopped");
            }
        }));
        let seat_expiration = Arc::new(SeatExpiration::new(
            seat_expiration::Config {
                tables: config.tables.clone(),
                page_size: 25,
                safety_margin: job_safety_margin(config.function_timeout),
                default_run_time: chrono::Duration::seconds(60),
            },
            dynamodb_for_jobs,
            job_clock,
        ));
        tasks.push(schedule(
            "dlq-retry",
            config.dlq_retry.interval,
            invoker!("dlq-retry", timeout, dlq_retry),
            shutdown.subscribe(),
        ));
        tasks.push(schedule(
            "seat-expiration",
            config.seat_expiration_interval,
            invoker!("seat-expiration", timeout, seat_expiration),
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
    use super::HTTP_ROUTES;

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
