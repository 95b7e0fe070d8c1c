//! The sample events in `events/` (what `sam local invoke -e` feeds the functions)
//! fed to the real handlers on the local stack, through the runtime's JSON, so
//! the files stay true: each one deserialises as its function's event type and
//! does what it says.

use chrono::Duration;
use local_runner::invoke::invoke;
use serde_json::Value;
use shared::clock::SystemClock;
use shared::config::Secret;
use shared::dynamodb::TicketingRepository;
use shared::kafka::ProducerSettings;
use shared::secrets::SecretStore;
use std::sync::Arc;
use std::time::Duration as StdDuration;
use testkit::samples::{local_env, root, sample, seed_the_sample_world};
use testkit::{DirectNotifier, LOCAL_JWT_SECRET, aws, consume, header, kafka, provision};

const TIMEOUT: StdDuration = StdDuration::from_secs(30);

/// The JWT key `function` reads at cold start with env.local.json's variables.
async fn jwt_secret_of(store: &SecretStore, function: &str) -> Secret {
    let env = local_env(function);
    store
        .fetch_in(&["JWT_SECRET"], |var| {
            env.get(var).and_then(Value::as_str).map(str::to_owned)
        })
        .await
        .unwrap()
        .remove("JWT_SECRET")
        .expect("env.local.json names the JWT key's secret")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_http_samples_hold_show_and_pay_with_the_local_jwt_key() {
    let aws = aws().await;
    let (tables, _) = provision(&aws, 1).await;
    let client = aws_sdk_dynamodb::Client::new(&aws);
    let hold = sample("reservation-hold.json");
    seed_the_sample_world(&TicketingRepository::new(client.clone(), tables.clone())).await;
    // As on a local stack after `ops provision`: the key in Secrets Manager under
    // the name env.local.json gives, read as the functions read it at cold start.
    let store = SecretStore::new(&aws);
    store
        .put_secret("ticketing/jwt-key", &Secret::new(LOCAL_JWT_SECRET))
        .await
        .unwrap();
    let jwt_secret = jwt_secret_of(&store, "ReservationFunction").await;
    assert_eq!(jwt_secret_of(&store, "PaymentFunction").await, jwt_secret);
    let reservations = reservation::ReservationApi::new(
        &reservation::Config {
            tables: tables.clone(),
            jwt_secret: jwt_secret.clone(),
            settings: reservation::Settings::default(),
        },
        client.clone(),
        Arc::new(SystemClock),
    )
    .unwrap();
    let payments = payment::PaymentApi::new(
        &payment::Config {
            tables: tables.clone(),
            jwt_secret,
            settings: payment::Settings::default(),
        },
        client,
        Arc::new(SystemClock),
    )
    .unwrap();

    let held = invoke("reservation", TIMEOUT, hold, |e| reservations.handle(e))
        .await
        .unwrap();
    assert_eq!(held["statusCode"], 201, "{held}");

    // The show and pay samples name the reservation the seed wrote: as they are.
    let shown = invoke(
        "reservation",
        TIMEOUT,
        sample("reservation-show.json"),
        |e| reservations.handle(e),
    )
    .await
    .unwrap();
    assert_eq!(shown["statusCode"], 200, "{shown}");
    assert!(
        shown["body"].as_str().unwrap().contains("PENDING"),
        "{shown}"
    );

    let paid = invoke("payment", TIMEOUT, sample("payment.json"), |e| {
        payments.handle(e)
    })
    .await
    .unwrap();
    assert_eq!(paid["statusCode"], 200, "{paid}");
    assert!(
        paid["body"].as_str().unwrap().contains("CONFIRMED"),
        "{paid}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_outbox_stream_sample_is_published_to_both_topics() {
    let aws = aws().await;
    let (_, topics) = provision(&aws, 1).await;
    let relay = outbox_relay::Relay::from_config(&outbox_relay::Config {
        kafka: kafka(),
        producer: ProducerSettings::default(),
        topics: topics.clone(),
    })
    .unwrap();
    let answer = invoke("outbox-relay", TIMEOUT, sample("outbox-stream.json"), |e| {
        relay.handle(e)
    })
    .await
    .unwrap();
    assert_eq!(
        answer["batchItemFailures"],
        serde_json::json!([]),
        "{answer}"
    );
    for (topic, event_type) in [
        (&topics.payment_completed, "PaymentCompleted"),
        (&topics.seat_hold_expired, "SeatHoldExpired"),
    ] {
        let records = consume(&kafka().bootstrap_servers, topic, 1, TIMEOUT).await;
        assert_eq!(records.len(), 1, "{topic}");
        assert_eq!(
            header(&records[0], "event-type").as_deref(),
            Some(event_type)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_kafka_samples_of_both_event_sources_notify_each_event_once() {
    let n = DirectNotifier::start(Duration::seconds(60), StdDuration::from_secs(5)).await;
    for file in ["kafka-self-managed.json", "kafka-msk.json"] {
        let answer = invoke("notifier", TIMEOUT, sample(file), |e| n.notifier.handle(e))
            .await
            .unwrap();
        assert_eq!(
            answer["batchItemFailures"],
            serde_json::json!([]),
            "{file}: {answer}"
        );
    }
    let texts: Vec<String> = n.sandbox.messages().into_iter().map(|m| m.text).collect();
    assert_eq!(
        texts.len(),
        2,
        "the MSK sample repeats the events: {texts:?}"
    );
    assert!(
        texts.iter().any(|t| t.starts_with("[결제 완료]")),
        "{texts:?}"
    );
    assert!(
        texts.iter().any(|t| t.starts_with("[좌석 선점 만료]")),
        "{texts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_kafka_samples_feed_each_event_to_the_data_platform_once() {
    let aws = aws().await;
    let (tables, topics) = provision(&aws, 1).await;
    let sandbox = local_runner::notification_sandbox::NotificationSandbox::default();
    let addr = sandbox.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let config = data_platform_feed::Config {
        tables,
        platform: local_runner::notification_sandbox::data_platform_settings(addr),
        idempotency_ttl: Duration::days(1),
        kafka: kafka(),
        producer: ProducerSettings::default(),
        topics,
        retry_delay: Duration::seconds(60),
    };
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    let feed =
        data_platform_feed::LambdaFeed::from_config(&config, dynamodb, Arc::new(SystemClock))
            .unwrap();
    for file in ["kafka-self-managed.json", "kafka-msk.json"] {
        let answer = invoke("data-platform-feed", TIMEOUT, sample(file), |e| {
            feed.handle(e)
        })
        .await
        .unwrap();
        assert_eq!(answer["deadLettered"], 0, "{file}: {answer}");
    }
    let events = sandbox.platform_events();
    let types: Vec<&str> = events
        .iter()
        .map(|e| e.event["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["PaymentCompleted", "SeatHoldExpired"],
        "each once: the MSK sample repeats the events"
    );
    assert!(sandbox.platform_duplicates().is_empty(), "the keys held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_schedule_sample_runs_seat_expiration_and_dlq_retry() {
    let n = DirectNotifier::start(Duration::seconds(60), StdDuration::from_secs(5)).await;
    let expiration = seat_expiration::SeatExpiration::new(
        seat_expiration::Config {
            tables: n.tables.clone(),
            settings: seat_expiration::Settings::default(),
        },
        n.dynamodb.clone(),
        Arc::new(SystemClock),
    );
    let report = invoke("seat-expiration", TIMEOUT, sample("schedule.json"), |e| {
        expiration.handle(e)
    })
    .await
    .unwrap();
    assert_eq!(report["released"], 0, "{report}");

    let retry = dlq_retry::LambdaDlqRetry::from_config(
        dlq_retry::Config {
            delivery: n.config.delivery.clone(),
            settings: dlq_retry::Settings {
                group_id: testkit::unique("dlq-retry"),
                max_retries: 3,
                backoff_base: Duration::seconds(1),
                backoff_max: Duration::seconds(1),
                safety_margin: Duration::seconds(5),
                ..Default::default()
            },
        },
        n.dynamodb.clone(),
        Arc::new(SystemClock),
    )
    .unwrap();
    let report = invoke("dlq-retry", TIMEOUT, sample("schedule.json"), |e| {
        retry.handle(e)
    })
    .await
    .unwrap();
    assert_eq!(report["processed"], 0, "{report}");
}

/// The (logical id, variables) of every function in template.yaml: `sam local
/// invoke --env-vars` only overrides variables the template declares.
fn template_functions() -> Vec<(String, Vec<String>)> {
    let template = std::fs::read_to_string(root().join("template.yaml")).unwrap();
    let mut functions: Vec<(String, Vec<String>)> = Vec::new();
    let mut globals = Vec::new();
    let (mut resource, mut in_variables, mut variables_indent) = (String::new(), false, 0);
    for line in template.lines() {
        let indent = line.len() - line.trim_start().len();
        let text = line.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        if indent == 2 && text.ends_with(':') {
            resource = text.trim_end_matches(':').to_owned();
            in_variables = false;
        } else if text == "Variables:" {
            in_variables = true;
            variables_indent = indent;
        } else if in_variables && indent <= variables_indent {
            in_variables = false;
        } else if in_variables && indent == variables_indent + 2 {
            let name = text.split(':').next().unwrap().to_owned();
            if resource == "Function" {
                globals.push(name);
            } else if let Some((_, vars)) = functions.iter_mut().find(|(r, _)| *r == resource) {
                vars.push(name);
            } else {
                functions.push((resource.clone(), vec![name]));
            }
        }
        if text == "Type: AWS::Serverless::Function"
            && !functions.iter().any(|(r, _)| *r == resource)
        {
            functions.push((resource.clone(), Vec::new()));
        }
    }
    for (_, vars) in functions.iter_mut() {
        vars.extend(globals.iter().cloned());
    }
    functions
}

#[test]
fn env_local_json_sets_only_variables_the_template_declares_for_every_function() {
    let functions = template_functions();
    assert_eq!(functions.len(), 7, "{functions:?}");
    let text = std::fs::read_to_string(root().join("env.local.json")).unwrap();
    let local: Value = serde_json::from_str(&text).unwrap();
    let local = local.as_object().unwrap();
    for (function, declared) in &functions {
        let vars = local
            .get(function)
            .and_then(Value::as_object)
            .unwrap_or_else(|| panic!("env.local.json has no {function}"));
        for name in vars.keys() {
            assert!(
                declared.contains(name),
                "{function}: {name} is not in the template, so sam local would ignore it"
            );
        }
    }
    assert_eq!(
        local.len(),
        functions.len(),
        "no entry for a function that is not there"
    );
}
