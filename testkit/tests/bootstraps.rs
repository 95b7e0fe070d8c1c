//! Each function's real binary (its `bootstrap`) run under a Lambda Runtime API
//! with a sample event from `events/`: `main.rs`, configuration loading, secrets
//! from Secrets Manager at cold start and client setup are exercised, not only
//! the handlers.
//!
//! The binaries are `$BOOTSTRAP_DIR/<LogicalId>/bootstrap` when set (`make test`
//! points it at `sam build`'s output), else this workspace's debug binaries,
//! built on first use.

use local_runner::notification_sandbox::{self, NotificationSandbox};
use local_runner::runtime_api::{Outcome, RuntimeApi};
use serde_json::Value;
use shared::config::{Secret, TableNames, TopicNames};
use shared::dynamodb::TicketingRepository;
use shared::secrets::SecretStore;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;
use testkit::functions::{FEED, FUNCTIONS, lambda_env};
use testkit::samples::{payment_of, root, sample, seed_the_sample_world};
use testkit::secured_kafka::SecuredKafka;
use testkit::{KillOnDrop, LOCAL_JWT_SECRET, aws, consume, consume_from, kafka, provision, unique};

const TIMEOUT: Duration = Duration::from_secs(60);

/// The debug binaries, built once per test run.
fn debug_binaries() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut build = Command::new(cargo);
            build
                .current_dir(root())
                .args(["build", "--quiet", "--locked"]);
            for (_, binary) in FUNCTIONS.iter() {
                build.args(["-p", binary]);
            }
            let status = build.status().expect("cargo runs");
            assert!(status.success(), "building the function binaries failed");
            std::env::var("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| root().join("target"))
                .join("debug")
        })
        .clone()
}

fn bootstrap(logical_id: &str, binary: &str) -> PathBuf {
    match std::env::var("BOOTSTRAP_DIR") {
        Ok(dir) => {
            let path = PathBuf::from(dir).join(logical_id).join("bootstrap");
            assert!(path.exists(), "{path:?} is missing: run `sam build` first");
            path
        }
        Err(_) => debug_binaries().join(binary),
    }
}

/// A started binary and the lines it writes to stdout, read as they come so
/// it never blocks on a full pipe.
struct Running {
    process: KillOnDrop,
    stdout: std::thread::JoinHandle<Vec<String>>,
}

impl Running {
    /// Stops the binary: the lines it logged.
    fn stop(mut self) -> Vec<String> {
        let _ = self.process.0.kill();
        let _ = self.process.0.wait();
        self.stdout.join().unwrap_or_default()
    }
}

/// Starts `binary` with only `env` (nothing of this process's environment
/// leaks in), the way Lambda starts it.
fn run(path: &PathBuf, env: Vec<(String, String)>) -> Running {
    let mut child = Command::new(path)
        .env_clear()
        .envs(env)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{path:?} does not start: {e}"));
    let stdout = child.stdout.take().expect("a piped stdout");
    let stdout = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect()
    });
    Running {
        process: KillOnDrop(child),
        stdout,
    }
}

/// One function's run: its binary with `extra` variables, given `event`.
async fn invoke(
    function: (&str, &str),
    tables: &TableNames,
    topics: &TopicNames,
    extra: &[(&str, String)],
    event: Value,
) -> Value {
    invoke_logged(function, tables, topics, extra, event)
        .await
        .0
}

/// [`invoke`], and the log lines the binary wrote (Lambda's JSON format).
async fn invoke_logged(
    (logical_id, binary): (&str, &str),
    tables: &TableNames,
    topics: &TopicNames,
    extra: &[(&str, String)],
    event: Value,
) -> (Value, Vec<Value>) {
    let api = RuntimeApi::start(binary).await.unwrap();
    let mut env = lambda_env(&api.endpoint(), binary, tables, topics);
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let running = run(&bootstrap(logical_id, binary), env);
    let answer = match api.invoke(event, TIMEOUT).await {
        Ok(Outcome::Response(answer)) => answer,
        Ok(Outcome::Error(error)) => panic!("{binary} answered an error: {error}"),
        Err(e) => panic!("{binary}: {e}"),
    };
    let lines = running.stop();
    let logged = lines
        .iter()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{binary} wrote a line that is not JSON ({e}): {line}"))
        })
        .collect();
    (answer, logged)
}

/// The line whose message is `message`.
fn line<'a>(lines: &'a [Value], message: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["fields"]["message"] == message)
        .unwrap_or_else(|| panic!("no {message:?} line in {lines:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_bootstrap_starts_reads_its_secrets_and_handles_its_sample_event() {
    testkit::init_logs();
    let aws = aws().await;
    let (tables, topics) = provision(&aws, 1).await;
    let repo = TicketingRepository::new(aws_sdk_dynamodb::Client::new(&aws), tables.clone());
    let hold = sample("reservation-hold.json");
    seed_the_sample_world(&repo).await;

    // The secrets, in Secrets Manager under this test's own names.
    let store = SecretStore::new(&aws);
    let jwt_id = unique("smoke/jwt-key");
    store
        .put_secret(&jwt_id, &Secret::new(LOCAL_JWT_SECRET))
        .await
        .unwrap();
    let bot_id = unique("smoke/telegram-bot-token");
    store
        .put_secret(&bot_id, &Secret::new("smoke-bot-token"))
        .await
        .unwrap();
    let sandbox = NotificationSandbox::default();
    let sandbox_addr = sandbox.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let jwt = [("JWT_SECRET_SECRET_ID", jwt_id)];
    let channels = [
        ("TELEGRAM_API_BASE_URL", format!("http://{sandbox_addr}")),
        ("TELEGRAM_BOT_TOKEN_SECRET_ID", bot_id),
        (
            "TELEGRAM_CHAT_ID",
            notification_sandbox::SANDBOX_CHAT_ID.to_owned(),
        ),
    ];

    let held = invoke(FUNCTIONS[0], &tables, &topics, &jwt, hold).await;
    assert_eq!(held["statusCode"], 201, "{held}");
    let body: Value = serde_json::from_str(held["body"].as_str().unwrap()).unwrap();
    let reservation = body["reservationId"].as_str().unwrap();

    let (paid, logged) = invoke_logged(
        FUNCTIONS[1],
        &tables,
        &topics,
        &jwt,
        payment_of(reservation),
    )
    .await;
    assert_eq!(paid["statusCode"], 200, "{paid}");
    // Its lines carry the ids of its work as top-level members.
    let confirmed = line(&logged, "payment confirmed");
    assert_eq!(confirmed["function"], "payment", "{confirmed}");
    assert_eq!(confirmed["reservation_id"], reservation, "{confirmed}");
    assert!(confirmed["request_id"].is_string(), "{confirmed}");
    assert_eq!(confirmed["trace_id"].as_str().map(str::len), Some(32));

    let relayed = invoke(
        FUNCTIONS[2],
        &tables,
        &topics,
        &[],
        sample("outbox-stream.json"),
    )
    .await;
    assert_eq!(relayed["batchItemFailures"], serde_json::json!([]));
    let published = consume(
        &kafka().bootstrap_servers,
        &topics.payment_completed,
        1,
        TIMEOUT,
    )
    .await;
    assert_eq!(published.len(), 1);

    let (notified, logged) = invoke_logged(
        FUNCTIONS[3],
        &tables,
        &topics,
        &channels,
        sample("kafka-self-managed.json"),
    )
    .await;
    assert_eq!(notified["batchItemFailures"], serde_json::json!([]));
    let handled = line(&logged, "notification handled");
    for id in ["request_id", "at", "reservation_id", "event_id"] {
        assert!(handled[id].is_string(), "no top-level {id}: {handled}");
    }
    assert_eq!(handled["fields"]["channel"], "telegram", "{handled}");
    assert_eq!(sandbox.messages().len(), 2, "{:?}", sandbox.messages());

    let retried = invoke(
        FUNCTIONS[4],
        &tables,
        &topics,
        &channels,
        sample("schedule.json"),
    )
    .await;
    assert_eq!(retried["processed"], 0, "{retried}");

    let expired = invoke(FUNCTIONS[5], &tables, &topics, &[], sample("schedule.json")).await;
    assert_eq!(expired["released"], 0, "{expired}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_relay_bootstrap_signs_in_to_kafka_over_tls_with_credentials_from_secrets_manager() {
    testkit::init_logs();
    let aws = aws().await;
    let (tables, topics) = provision(&aws, 1).await;
    // As on MSK's port 9096: SASL/SCRAM-SHA-512 over TLS.
    let kafka = SecuredKafka::start(
        &[&topics.payment_completed, &topics.seat_hold_expired],
        true,
    )
    .await;
    let secret_id = unique("smoke/kafka-sasl");
    SecretStore::new(&aws)
        .put_secret(&secret_id, &kafka.secret_json())
        .await
        .unwrap();
    let ca_file = kafka.ca_file.clone().unwrap();

    let relayed = invoke(
        FUNCTIONS[2],
        &tables,
        &topics,
        &[
            ("KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap.to_string()),
            ("KAFKA_SECURITY_PROTOCOL", "SASL_SSL".into()),
            ("KAFKA_SASL_CREDENTIALS_SECRET_ID", secret_id),
            (
                "KAFKA_SSL_CA_LOCATION",
                ca_file.to_string_lossy().into_owned(),
            ),
        ],
        sample("outbox-stream.json"),
    )
    .await;

    assert_eq!(relayed["batchItemFailures"], serde_json::json!([]));
    let published = consume_from(&kafka.settings(), &topics.payment_completed, 1, TIMEOUT).await;
    assert_eq!(published.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_feed_bootstrap_sends_its_sample_event_to_the_platform_with_keys_from_secrets_manager()
{
    let aws = aws().await;
    let (tables, topics) = provision(&aws, 1).await;
    let sandbox = NotificationSandbox::default();
    let addr = sandbox.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let store = SecretStore::new(&aws);
    let api_key = unique("smoke/data-platform-api-key");
    let pseudonym_key = unique("smoke/data-platform-pseudonym-key");
    let keys = [
        (&api_key, notification_sandbox::SANDBOX_DATA_PLATFORM_KEY),
        (&pseudonym_key, notification_sandbox::SANDBOX_PSEUDONYM_KEY),
    ];
    for (id, value) in keys {
        store.put_secret(id, &Secret::new(value)).await.unwrap();
    }
    let platform = [
        ("DATA_PLATFORM_URL", format!("http://{addr}")),
        ("DATA_PLATFORM_API_KEY_SECRET_ID", api_key),
        ("DATA_PLATFORM_PSEUDONYM_KEY_SECRET_ID", pseudonym_key),
    ];

    let (fed, logged) = invoke_logged(
        FEED,
        &tables,
        &topics,
        &platform,
        sample("kafka-self-managed.json"),
    )
    .await;
    assert_eq!(fed["batchItemFailures"], serde_json::json!([]));
    assert_eq!(fed["delivered"], 2, "{fed}");
    assert_eq!(sandbox.platform_events().len(), 2);
    let done = line(&logged, "batch fed to the data platform");
    assert_eq!(done["function"], "data-platform-feed", "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bootstrap_whose_secret_is_missing_exits_at_cold_start_naming_it() {
    let aws = aws().await;
    let (tables, topics) = provision(&aws, 1).await;
    let missing = unique("smoke/no-such-secret");
    let api = RuntimeApi::start("reservation").await.unwrap();
    let mut env = lambda_env(&api.endpoint(), "reservation", &tables, &topics);
    env.push(("JWT_SECRET_SECRET_ID".into(), missing.clone()));
    let child = Command::new(bootstrap(FUNCTIONS[0].0, FUNCTIONS[0].1))
        .env_clear()
        .envs(env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = tokio::time::timeout(
        TIMEOUT,
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await
    .expect("the function exits instead of waiting")
    .unwrap()
    .unwrap();
    assert!(!output.status.success(), "the function must not start");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(said.contains(&missing), "{said}");
    assert!(
        api.first_next_after_start().is_none(),
        "it never asked for an event"
    );
}

/// The compose file's `init` service: the local secrets it stores, by variable.
fn compose_init_environment() -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(root().join("docker-compose.localstack.yml")).unwrap();
    let compose: Value = serde_norway::from_str(&text).unwrap();
    compose["services"]["init"]["environment"]
        .as_object()
        .cloned()
        .expect("init has an environment")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_function_starts_with_env_local_json_and_the_secrets_compose_init_stores() {
    // What `sam local invoke --env-vars env.local.json` gives each function on
    // the compose network, with the services' names resolved to this
    // machine's stack (moto for localstack:4566, tansu for the brokers).
    let aws = aws().await;
    let store = SecretStore::new(&aws);
    let init = compose_init_environment();
    for (variable, id) in shared::secrets::LOCAL_SECRET_NAMES {
        if let Some(value) = init.get(variable).and_then(Value::as_str) {
            store.put_secret(id, &Secret::new(value)).await.unwrap();
        }
    }
    let moto = aws.endpoint_url().unwrap().to_owned();
    for (logical_id, binary) in FUNCTIONS {
        let api = RuntimeApi::start(binary).await.unwrap();
        // Lambda's own variables and the credentials; the rest from env.local.json.
        let unused = (TableNames::with_prefix("unused"), TopicNames::default());
        let mut env = lambda_env(&api.endpoint(), binary, &unused.0, &unused.1);
        env.retain(|(name, _)| name.starts_with("AWS_"));
        for (name, value) in testkit::samples::local_env(logical_id) {
            let value = value.as_str().unwrap().to_owned();
            let value = match name.as_str() {
                "AWS_ENDPOINT_URL" => moto.clone(),
                "KAFKA_BOOTSTRAP_SERVERS" => kafka().bootstrap_servers,
                _ => value,
            };
            env.retain(|(n, _)| *n != name);
            env.push((name, value));
        }
        let running = run(&bootstrap(logical_id, binary), env);
        testkit::eventually(
            TIMEOUT,
            &format!("{binary} asks for its first event"),
            || {
                let (asked, failed) = (api.first_next_at(), api.init_error());
                async move {
                    assert_eq!(failed, None, "{binary} failed its init");
                    asked
                }
            },
        )
        .await;
        running.stop();
    }
}
