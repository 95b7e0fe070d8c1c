//! The notification channels over real HTTP: the Discord webhook against a
//! scripted webhook server (the exact request) and the sandbox (its failure modes), and
//! both channels behind one notifier on the real stack: one channel failing
//! never re-sends on the other, and its retry goes to that channel only.

use chrono::{Duration, Utc};
use dlq_retry::LambdaDlqRetry;
use local_runner::notification_sandbox::{Chaos, channel_settings};
use local_runner::notification_sandbox::{
    DISCORD, FailurePlan, NotificationSandbox, SANDBOX_WEBHOOK_ID, TELEGRAM,
};
use shared::channels::{Channel, ChannelClient, DiscordChannel};
use shared::clock::SystemClock;
use shared::dead_letter;
use shared::delivery::{Destination, Letter};
use shared::domain::ReservationId;
use shared::ledger::LedgerStatus;
use shared::notification::{ChannelKind, ChannelRoutes};
use std::sync::Arc;
use std::time::Duration as StdDuration;
use testkit::{DirectNotifier, consume, header, kafka};
use webhook::ScriptedWebhook;

const WEBHOOK_TOKEN: &str = "webhook-secret-token";

fn message(text: &str) -> Letter {
    let mut letter = shared::fixtures::letter_of(&shared::fixtures::payment_completed_envelope(
        ReservationId::random(),
        "d@example.com",
        1,
    ));
    letter.notification.text = text.into();
    letter
}

/// A webhook server that answers `script` in order (its last answer from then
/// on), and the Discord channel pointed at it.
async fn webhook_server(
    script: Vec<(u16, serde_json::Value)>,
) -> (ScriptedWebhook, DiscordChannel) {
    let server = ScriptedWebhook::start(script).await;
    let channel = DiscordChannel::new(
        &format!("{}/api/webhooks/77/{WEBHOOK_TOKEN}", server.uri),
        StdDuration::from_secs(2),
    )
    .unwrap();
    (server, channel)
}

/// A real HTTP server standing in for Discord: it records every request and
/// answers with the next scripted status and JSON body.
mod webhook {
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{Method, StatusCode, Uri};
    use axum::response::{IntoResponse, Response};
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    #[derive(Debug, Clone, PartialEq)]
    pub struct Received {
        pub method: Method,
        pub path: String,
        pub query: Option<String>,
        pub body: serde_json::Value,
    }

    #[derive(Default)]
    struct Script {
        answers: VecDeque<(u16, serde_json::Value)>,
        received: Vec<Received>,
    }

    pub struct ScriptedWebhook {
        pub uri: String,
        script: Arc<Mutex<Script>>,
    }

    impl ScriptedWebhook {
        pub async fn start(answers: Vec<(u16, serde_json::Value)>) -> Self {
            assert!(!answers.is_empty(), "a webhook needs at least one answer");
            let script = Arc::new(Mutex::new(Script {
                answers: answers.into(),
                received: Vec::new(),
            }));
            let app = axum::Router::new()
                .fallback(answer)
                .with_state(script.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let uri = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, app).await });
            Self { uri, script }
        }

        /// Every request so far, in the order they came.
        pub fn received(&self) -> Vec<Received> {
            self.script.lock().unwrap().received.clone()
        }
    }

    async fn answer(
        State(script): State<Arc<Mutex<Script>>>,
        method: Method,
        uri: Uri,
        body: Bytes,
    ) -> Response {
        let mut script = script.lock().unwrap();
        script.received.push(Received {
            method,
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        });
        let (status, body) = if script.answers.len() > 1 {
            script.answers.pop_front().unwrap()
        } else {
            script.answers[0].clone()
        };
        let status = StatusCode::from_u16(status).unwrap();
        (status, axum::Json(body)).into_response()
    }
}

/// The channel error's (retryable, retry after, message).
fn failure(error: shared::Error) -> (bool, Option<StdDuration>, String) {
    let text = shared::error_chain(&error);
    match error {
        shared::Error::Infra(shared::InfraError::Channel {
            retryable,
            retry_after,
            ..
        }) => (retryable, retry_after, text),
        other => panic!("not a channel error: {other:?}"),
    }
}

#[tokio::test]
async fn discord_gets_the_text_as_content_with_mentions_off_and_waits_for_the_message() {
    let (server, channel) = webhook_server(vec![(200, serde_json::json!({"id": "1"}))]).await;
    channel.send(&message("결제 완료 @everyone")).await.unwrap();
    let received = server.received();
    assert_eq!(received.len(), 1, "one request: {received:?}");
    assert_eq!(received[0].method, axum::http::Method::POST);
    assert_eq!(
        received[0].path,
        format!("/api/webhooks/77/{WEBHOOK_TOKEN}")
    );
    assert_eq!(received[0].query.as_deref(), Some("wait=true"));
    assert_eq!(
        received[0].body,
        serde_json::json!({
            "content": "결제 완료 @everyone",
            "allowed_mentions": {"parse": []},
        })
    );
}

#[tokio::test]
async fn a_discord_429_is_retryable_after_its_fractional_retry_after() {
    let rate_limited = serde_json::json!({
        "message": "You are being rate limited.",
        "retry_after": 0.617,
        "global": false,
    });
    let (_server, channel) = webhook_server(vec![(429, rate_limited)]).await;
    let (retryable, retry_after, text) = failure(channel.send(&message("x")).await.unwrap_err());
    assert!(retryable, "{text}");
    assert_eq!(retry_after, Some(StdDuration::from_millis(617)));
    assert!(text.contains("HTTP 429"), "{text}");
}

#[tokio::test]
async fn a_deleted_discord_webhook_is_permanent_and_a_5xx_is_retryable() {
    let unknown = serde_json::json!({"message": "Unknown Webhook", "code": 10015});
    let (_server, channel) =
        webhook_server(vec![(404, unknown), (502, serde_json::Value::Null)]).await;
    let (retryable, _, text) = failure(channel.send(&message("x")).await.unwrap_err());
    assert!(!retryable, "{text}");
    assert!(text.contains("Unknown Webhook"), "{text}");
    let (retryable, _, text) = failure(channel.send(&message("x")).await.unwrap_err());
    assert!(retryable, "{text}");
    assert!(
        !text.contains(WEBHOOK_TOKEN),
        "the token never shows: {text}"
    );
}

#[tokio::test]
async fn an_unreachable_discord_is_retryable_and_the_error_never_shows_the_token() {
    // A port nobody listens on: bind one, then close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let channel = DiscordChannel::new(
        &format!("http://127.0.0.1:{port}/api/webhooks/77/{WEBHOOK_TOKEN}"),
        StdDuration::from_secs(2),
    )
    .unwrap();
    let (retryable, _, text) = failure(channel.send(&message("x")).await.unwrap_err());
    assert!(retryable, "{text}");
    assert!(text.contains("could not connect"), "{text}");
    assert!(!text.contains(WEBHOOK_TOKEN), "{text}");
    assert!(!format!("{channel:?}").contains(WEBHOOK_TOKEN));
}

#[tokio::test]
async fn the_sandbox_answers_like_discord_records_the_message_and_fails_on_request() {
    let sandbox = NotificationSandbox::default();
    let addr = sandbox.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let channel = DiscordChannel::new(
        &format!("http://{addr}/api/webhooks/{SANDBOX_WEBHOOK_ID}/any-token"),
        StdDuration::from_millis(500),
    )
    .unwrap();
    channel.send(&message("첫 메시지")).await.unwrap();

    sandbox.fail_next(FailurePlan {
        retry_after: Some(3),
        ..FailurePlan::fail(1, 429).on(DISCORD)
    });
    let (retryable, retry_after, _) = failure(channel.send(&message("x")).await.unwrap_err());
    assert!(retryable);
    assert_eq!(retry_after, Some(StdDuration::from_secs(3)));

    sandbox.fail_next(FailurePlan {
        delay_ms: Some(2_000),
        ..FailurePlan::fail(1, 200).on(DISCORD)
    });
    let (retryable, _, text) = failure(channel.send(&message("x")).await.unwrap_err());
    assert!(retryable && text.contains("timed out"), "{text}");

    let messages = sandbox.messages_on(DISCORD);
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0].text, "첫 메시지");
    assert_eq!(messages[0].chat_id, SANDBOX_WEBHOOK_ID);
    assert!(sandbox.messages_on(TELEGRAM).is_empty());
}

/// `n` sends at once on `channel`: how many were refused with a 429.
async fn sends_at_once(channel: &Channel, n: usize) -> usize {
    let sends = (0..n).map(|i| async move {
        match channel.send(&message(&format!("message {i}"))).await {
            Ok(()) => 0,
            Err(shared::Error::Infra(shared::InfraError::Channel {
                retry_after: Some(_),
                ..
            })) => 1,
            Err(other) => panic!("{}", shared::error_chain(&other)),
        }
    });
    futures::future::join_all(sends).await.into_iter().sum()
}

#[tokio::test]
async fn a_send_rate_limit_keeps_a_burst_under_the_apis_limit_where_an_unlimited_channel_gets_429s()
{
    // Each channel against a sandbox of its own that allows 10 sends a second.
    let limited_sandbox = || async {
        let sandbox = NotificationSandbox::default();
        let addr = sandbox.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        sandbox.limit_rate(Some(10));
        let settings = channel_settings(addr, ChannelRoutes::default())
            .telegram
            .unwrap();
        (sandbox, settings)
    };

    let (sandbox, settings) = limited_sandbox().await;
    let unlimited =
        Channel::paced(ChannelClient::Telegram(settings.channel().unwrap()), None).unwrap();
    // A burst of 30: how many land in one second depends on the machine's
    // load, so only "some" is asserted.
    let refused = sends_at_once(&unlimited, 30).await;
    assert!(refused > 0, "none of a burst of 30 refused");
    assert_eq!(sandbox.rate_limited(), refused as u64);

    // 8/s leaves room for the jitter between the client's spacing and the
    // sandbox's clock; a loaded machine only spreads the sends further.
    let (sandbox, settings) = limited_sandbox().await;
    let paced = Channel::paced(
        ChannelClient::Telegram(settings.channel().unwrap()),
        Some(8.0),
    )
    .unwrap();
    assert_eq!(sends_at_once(&paced, 12).await, 0);
    assert_eq!(sandbox.rate_limited(), 0, "no 429");
    assert_eq!(sandbox.messages_on(TELEGRAM).len(), 12);
}

#[tokio::test]
async fn the_sandboxs_chaos_fails_a_share_of_sends_with_every_kind_and_never_records_a_failed_one()
{
    let sandbox = NotificationSandbox::default();
    let addr = sandbox.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    sandbox.chaos(Some(Chaos {
        failure_rate: 0.5,
        timeout_ms: 2_000,
        seed: Some(7),
        answer_lost_rate: 0.0,
    }));
    let mut settings = channel_settings(addr, ChannelRoutes::default())
        .telegram
        .unwrap();
    // Far below the chaos's 2 s, far above an ordinary send on a loaded
    // machine: only the chaos's timeouts time out.
    settings.timeout = StdDuration::from_secs(1);
    let channel = settings.channel().unwrap();
    let sends = (0..200).map(|i| {
        let channel = &channel;
        async move { channel.send(&message(&format!("chaos {i}"))).await }
    });
    let results = futures::future::join_all(sends).await;

    let failed: Vec<String> = results
        .into_iter()
        .filter_map(|r| r.err().map(|e| failure(e).2))
        .collect();
    let caused = sandbox.chaos_failures();
    assert_eq!(caused.total(), failed.len() as u64);
    assert!(
        (60..=140).contains(&failed.len()),
        "{} failed",
        failed.len()
    );
    for (kind, count) in [
        ("timeouts", caused.timeouts),
        ("5xx", caused.server_errors),
        ("429s", caused.rate_limited),
    ] {
        assert!(count >= 10, "only {count} {kind}: {caused:?}");
    }
    assert!(failed.iter().any(|m| m.contains("timed out")));
    assert!(failed.iter().any(|m| m.contains("HTTP 503")));
    assert!(failed.iter().any(|m| m.contains("HTTP 429")));
    assert_eq!(
        sandbox.messages_on(TELEGRAM).len(),
        200 - failed.len(),
        "a failed send is never recorded"
    );
}

/// A notifier sending every event on both channels, and a dlq-retry beside it.
async fn both_channels() -> (DirectNotifier, LambdaDlqRetry) {
    let n = DirectNotifier::start_routed(
        ChannelRoutes::all_on(&[ChannelKind::Telegram, ChannelKind::Discord]),
        Duration::zero(),
        StdDuration::from_secs(5),
    )
    .await;
    let retry = LambdaDlqRetry::from_config(
        dlq_retry::Config {
            delivery: n.config.delivery.clone(),
            settings: dlq_retry::Settings {
                group_id: testkit::unique("dlq-retry"),
                max_retries: 5,
                backoff_base: Duration::zero(),
                backoff_max: Duration::zero(),
                safety_margin: Duration::seconds(1),
                ..Default::default()
            },
        },
        n.dynamodb.clone(),
        Arc::new(SystemClock),
    )
    .unwrap();
    (n, retry)
}

/// One channel fails the first send of an event: the other sends at once, the
/// dead letter names the failed channel, a redelivery of the record and the
/// dlq-retry run send on the failed channel once, and nothing is sent twice.
async fn one_channel_fails(failing: &str, healthy: &str) {
    let (n, retry) = both_channels().await;
    n.sandbox.fail_next(FailurePlan::fail(1, 503).on(failing));
    let record = n.payment_record(0);
    n.deliver(vec![record.clone()]).await.unwrap();
    assert_eq!(n.sandbox.messages_on(healthy).len(), 1);
    assert!(n.sandbox.messages_on(failing).is_empty());

    let dlq = consume(
        &kafka().bootstrap_servers,
        &n.topics.payment_completed_dlq,
        1,
        StdDuration::from_secs(30),
    )
    .await;
    assert_eq!(dlq.len(), 1, "one dead letter: the failed channel's");
    assert_eq!(
        header(&dlq[0], dead_letter::NOTIFICATION_CHANNEL).as_deref(),
        Some(failing)
    );
    let event_id = header(&dlq[0], "event-id").unwrap();
    let ledger = n.ledger();
    let row = ledger
        .get(&event_id, ChannelKind::parse(failing))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, LedgerStatus::Pending);
    assert!(
        ledger
            .get(&event_id, ChannelKind::parse(healthy))
            .await
            .unwrap()
            .is_none(),
        "the channel that succeeded has no failure row"
    );

    // The retry sends on the failed channel only.
    let report = retry.run(Utc::now() + Duration::seconds(60)).await.unwrap();
    assert_eq!(report.processed, 1, "{report:?}");
    assert_eq!(n.sandbox.messages_on(failing).len(), 1);
    assert_eq!(n.sandbox.messages_on(healthy).len(), 1, "not sent again");
    let row = ledger
        .get(&event_id, ChannelKind::parse(failing))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, LedgerStatus::Processed);

    // A late redelivery of the record sends nothing on either channel.
    n.deliver(vec![record]).await.unwrap();
    assert_eq!(n.sandbox.messages().len(), 2, "{:?}", n.sandbox.messages());
    assert_eq!(
        n.sandbox.attempts(),
        3,
        "the failed send and one per channel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn discord_failing_never_resends_telegram_and_the_retry_sends_discord_only() {
    one_channel_fails(DISCORD, TELEGRAM).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn telegram_failing_never_resends_discord_and_the_retry_sends_telegram_only() {
    one_channel_fails(TELEGRAM, DISCORD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_channels_failing_leave_one_dead_letter_and_one_ledger_row_each() {
    let (n, retry) = both_channels().await;
    n.sandbox.fail_next(FailurePlan::fail(2, 500));
    n.deliver(vec![n.payment_record(0)]).await.unwrap();
    let dlq = consume(
        &kafka().bootstrap_servers,
        &n.topics.payment_completed_dlq,
        2,
        StdDuration::from_secs(30),
    )
    .await;
    let mut channels: Vec<String> = dlq
        .iter()
        .map(|m| header(m, dead_letter::NOTIFICATION_CHANNEL).unwrap())
        .collect();
    channels.sort();
    assert_eq!(channels, [DISCORD, TELEGRAM]);
    let event_id = header(&dlq[0], "event-id").unwrap();
    assert_eq!(n.ledger().for_event(&event_id).await.unwrap().len(), 2);

    let report = retry.run(Utc::now() + Duration::seconds(60)).await.unwrap();
    assert_eq!(report.processed, 2, "{report:?}");
    assert_eq!(n.sandbox.messages_on(TELEGRAM).len(), 1);
    assert_eq!(n.sandbox.messages_on(DISCORD).len(), 1);
    assert!(
        n.ledger()
            .for_event(&event_id)
            .await
            .unwrap()
            .iter()
            .all(|row| row.status == LedgerStatus::Processed)
    );
}
