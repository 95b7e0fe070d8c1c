//! A sandbox for both notification channels: answers like the Telegram Bot API
//! and like a Discord webhook, records every message with its channel, and fails
//! on request.
//!
//! - `POST /bot<token>/sendMessage` `{"chat_id", "text"}` (Telegram)
//! - `POST /api/webhooks/<id>/<token>[?wait=true]` `{"content"}` (Discord: 200
//!   with the message when `wait=true`, else 204)
//! - `GET /sandbox/messages[?channel=telegram|discord]`: what was received, in order
//! - `DELETE /sandbox/messages`: forget them
//! - `POST /sandbox/failures` `{"count": 3, "status": 500, "retryAfter": 1,
//!   "delayMs": 2000, "chatId": "42", "channel": "discord"}`: the next `count`
//!   sends (on `channel` and to `chatId` only, if given; a Discord "chat" is the
//!   webhook id) wait `delayMs`, then fail with `status` (429 carries the
//!   channel's `retry_after`); `status` 200 makes them slow but successful;
//!   `"answerLost": true` delivers each (recorded with `answerLost`) and then
//!   waits `delayMs` and fails it with `status` (504 by default): a send that
//!   reached the customer whose answer the caller never gets
//! - `POST /sandbox/rate-limit` `{"perSecond": 100}` (or `null` for none): like
//!   the real APIs, each channel answers 429 (retry after 1 s) to a send beyond
//!   that many in the last second; `GET /sandbox/messages` counts them as
//!   `rateLimited`
//! - `POST /sandbox/chaos` `{"failureRate": 0.2, "timeoutMs": 6000, "seed": 7}`
//!   (or `null` for none): each send fails with that probability, as a timeout
//!   (the answer comes after `timeoutMs` and the message is dropped: an API that
//!   never got it), a 5xx or a 429, in equal shares; with `"answerLostRate":
//!   0.02` that share of the other sends is delivered and then answered after
//!   `timeoutMs` (the answer lost); `GET /sandbox/messages` counts them as
//!   `chaos`
//! - the data platform's API, `POST /v1/events`, and what it received:
//!   `data_platform` (its failures are planned with `"channel": "data-platform"`)

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::json;
use shared::channels::{ChannelSettings, DiscordSettings, TelegramSettings};
use shared::config::Secret;
use shared::notification::ChannelRoutes;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

mod data_platform;

pub use data_platform::{
    ReceivedEvent, SANDBOX_DATA_PLATFORM_KEY, SANDBOX_PSEUDONYM_KEY, data_platform_settings,
};

pub const TELEGRAM: &str = "telegram";
pub const DISCORD: &str = "discord";

/// The sandbox's own credentials: any token is accepted.
pub const SANDBOX_BOT_TOKEN: &str = "sandbox-bot-token";
pub const SANDBOX_CHAT_ID: &str = "10001";
pub const SANDBOX_WEBHOOK_ID: &str = "20002";
const SANDBOX_WEBHOOK_TOKEN: &str = "sandbox-webhook-token";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedMessage {
    pub message_id: u64,
    /// `telegram` or `discord`.
    pub channel: String,
    /// The Telegram chat, or the Discord webhook id.
    pub chat_id: String,
    pub text: String,
    /// When the sandbox accepted it.
    pub received_at: chrono::DateTime<chrono::Utc>,
    /// Delivered, but the sender got a failure (or nothing) back: it cannot
    /// know, and may send it again.
    #[serde(default)]
    pub answer_lost: bool,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailurePlan {
    pub count: u32,
    #[serde(default = "default_status")]
    pub status: u16,
    pub retry_after: Option<u64>,
    /// Answer this late (a slow or timing-out channel).
    pub delay_ms: Option<u64>,
    /// Only sends to this chat (or webhook) are affected: a blocked bot.
    pub chat_id: Option<String>,
    /// Only sends on this channel are affected.
    pub channel: Option<String>,
    /// Deliver first, then wait `delay_ms` and fail: the answer is lost.
    #[serde(default)]
    pub answer_lost: bool,
}

impl FailurePlan {
    /// The next `count` sends fail with `status`.
    pub fn fail(count: u32, status: u16) -> Self {
        FailurePlan {
            count,
            status,
            ..FailurePlan::default()
        }
    }

    /// The next `count` sends are delivered, then answered with a 504 after
    /// `delay_ms` (longer than the client's timeout: it times out first).
    pub fn answer_lost(count: u32, delay_ms: u64) -> Self {
        FailurePlan {
            count,
            status: 504,
            delay_ms: Some(delay_ms),
            answer_lost: true,
            ..FailurePlan::default()
        }
    }

    /// The same plan, for sends on `channel` only.
    pub fn on(self, channel: &str) -> Self {
        FailurePlan {
            channel: Some(channel.to_owned()),
            ..self
        }
    }

    fn applies_to(&self, channel: &str, chat_id: &str) -> bool {
        self.count > 0
            && self.channel.as_deref().is_none_or(|c| c == channel)
            && self.chat_id.as_deref().is_none_or(|c| c == chat_id)
    }
}

fn default_status() -> u16 {
    500
}

#[derive(Default)]
struct SandboxState {
    messages: Vec<ReceivedMessage>,
    failures: Option<FailurePlan>,
    attempts: u64,
    rate_limit: Option<RateLimit>,
    /// 429s answered for going over the rate limit.
    rate_limited: u64,
    chaos: Option<(Chaos, StdRng)>,
    /// Failures the chaos caused, per kind.
    chaos_failures: ChaosFailures,
    /// What the data platform holds.
    platform: data_platform::PlatformState,
}

/// Random failures of every kind a channel meets.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Chaos {
    /// The share of sends that fail (0 to 1).
    pub failure_rate: f64,
    /// How late a timed-out send is answered: above the client's timeout.
    pub timeout_ms: u64,
    /// The random sequence's seed, so a run can be repeated.
    pub seed: Option<u64>,
    /// The share of the sends not failed that are delivered and then answered
    /// after `timeout_ms` (0 to 1): the answer lost.
    #[serde(default)]
    pub answer_lost_rate: f64,
}

/// How many sends the chaos failed, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChaosFailures {
    pub timeouts: u64,
    pub server_errors: u64,
    pub rate_limited: u64,
    /// Delivered, with the answer lost (not counted in `total`: no failure).
    pub answers_lost: u64,
}

impl ChaosFailures {
    pub fn total(&self) -> u64 {
        self.timeouts + self.server_errors + self.rate_limited
    }
}

/// At most `per_second` sends per channel in any one second.
struct RateLimit {
    per_second: usize,
    /// Per channel, when its sends in the last second were accepted.
    accepted: HashMap<String, VecDeque<Instant>>,
}

impl RateLimit {
    /// True when a send on `channel` now is within the limit (and counts it).
    fn admit(&mut self, channel: &str, now: Instant) -> bool {
        let window = self.accepted.entry(channel.to_owned()).or_default();
        while window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            window.pop_front();
        }
        if window.len() >= self.per_second {
            return false;
        }
        window.push_back(now);
        true
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RateLimitPlan {
    per_second: Option<usize>,
}

/// The sandbox's state, shared between the server and whoever inspects it.
#[derive(Clone, Default)]
pub struct NotificationSandbox {
    state: Arc<Mutex<SandboxState>>,
}

#[derive(Deserialize)]
struct SendMessage {
    chat_id: serde_json::Value,
    text: String,
}

#[derive(Deserialize)]
struct ExecuteWebhook {
    content: Option<String>,
}

#[derive(Deserialize)]
struct WebhookQuery {
    wait: Option<bool>,
}

#[derive(Deserialize)]
struct MessagesQuery {
    channel: Option<String>,
}

/// What a planned failure, or a success, means for one send.
enum Verdict {
    Deliver,
    Fail {
        status: u16,
        retry_after: Option<u64>,
    },
    /// Delivered, then answered with `status` after `after`.
    AnswerLost {
        after: Duration,
        status: u16,
    },
}

/// A send's failed answer: the status and a 429's `retry_after`.
type FailedAnswer = (u16, Option<u64>);

/// Settings that point both channels at a sandbox served on `addr`.
pub fn channel_settings(addr: SocketAddr, routes: ChannelRoutes) -> ChannelSettings {
    let timeout = std::time::Duration::from_secs(5);
    ChannelSettings {
        routes,
        telegram: Some(TelegramSettings {
            api_base_url: format!("http://{addr}"),
            bot_token: Secret::new(SANDBOX_BOT_TOKEN),
            chat_id: SANDBOX_CHAT_ID.into(),
            timeout,
            max_sends_per_second: None,
            on_ambiguous_send: Default::default(),
        }),
        discord: Some(DiscordSettings {
            webhook_url: Secret::new(format!(
                "http://{addr}/api/webhooks/{SANDBOX_WEBHOOK_ID}/{SANDBOX_WEBHOOK_TOKEN}"
            )),
            timeout,
            max_sends_per_second: None,
            on_ambiguous_send: Default::default(),
        }),
        data_platform: Some(data_platform_settings(addr)),
    }
}

impl NotificationSandbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, SandboxState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every message received, on any channel.
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        self.lock().messages.clone()
    }

    /// The messages received on `channel`.
    pub fn messages_on(&self, channel: &str) -> Vec<ReceivedMessage> {
        self.lock()
            .messages
            .iter()
            .filter(|m| m.channel == channel)
            .cloned()
            .collect()
    }

    /// Every send, failed ones included.
    pub fn attempts(&self) -> u64 {
        self.lock().attempts
    }

    pub fn fail_next(&self, plan: FailurePlan) {
        self.lock().failures = Some(plan);
    }

    /// Answers 429 to a send beyond `per_second` in the last second on its
    /// channel; `None` lifts the limit.
    pub fn limit_rate(&self, per_second: Option<usize>) {
        self.lock().rate_limit = per_second.map(|per_second| RateLimit {
            per_second,
            accepted: HashMap::new(),
        });
    }

    /// The 429s answered for going over the rate limit.
    pub fn rate_limited(&self) -> u64 {
        self.lock().rate_limited
    }

    /// Fails a share of all sends at random from now on; `None` stops it.
    pub fn chaos(&self, chaos: Option<Chaos>) {
        self.lock().chaos = chaos.map(|c| {
            let rng = StdRng::seed_from_u64(c.seed.unwrap_or_else(rand::random));
            (c, rng)
        });
    }

    /// The failures the chaos caused so far.
    pub fn chaos_failures(&self) -> ChaosFailures {
        self.lock().chaos_failures
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/{bot}/sendMessage", post(send_message))
            .route("/api/webhooks/{id}/{token}", post(execute_webhook))
            .route(
                "/sandbox/messages",
                get(list_messages).delete(clear_messages),
            )
            .route("/sandbox/failures", post(plan_failures))
            .route("/sandbox/rate-limit", post(plan_rate_limit))
            .route("/sandbox/chaos", post(plan_chaos))
            .with_state(self.clone())
            .merge(self.data_platform_routes())
    }

    /// Serves on `addr` (port 0 picks a free one) until the task is dropped.
    pub async fn serve(&self, addr: SocketAddr) -> Result<SocketAddr, crate::Error> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| crate::Error::Listen {
                addr: addr.to_string(),
                source: e,
            })?;
        let bound = listener.local_addr().map_err(|e| crate::Error::Listen {
            addr: addr.to_string(),
            source: e,
        })?;
        let router = self.router();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "notification sandbox stopped");
            }
        });
        Ok(bound)
    }

    /// Counts the attempt and applies a planned failure, waiting its delay, then
    /// the rate limit.
    async fn judge(&self, channel: &str, chat_id: &str) -> Verdict {
        let verdict = self.planned(channel, chat_id).await;
        if !matches!(verdict, Verdict::Deliver) {
            return verdict;
        }
        if let Some(verdict) = self.chaotic().await {
            return verdict;
        }
        let mut state = self.lock();
        let admitted = match state.rate_limit.as_mut() {
            Some(limit) => limit.admit(channel, Instant::now()),
            None => true,
        };
        if admitted {
            Verdict::Deliver
        } else {
            state.rate_limited += 1;
            Verdict::Fail {
                status: 429,
                retry_after: Some(1),
            }
        }
    }

    /// A random failure, when the chaos draws one.
    async fn chaotic(&self) -> Option<Verdict> {
        let (kind, timeout_ms) = {
            let mut state = self.lock();
            let (chaos, rng) = state.chaos.as_mut()?;
            if !rng.random_bool(chaos.failure_rate.clamp(0.0, 1.0)) {
                // Drawn only when asked for, so a seed's other faults stay put.
                let lost = chaos.answer_lost_rate > 0.0
                    && rng.random_bool(chaos.answer_lost_rate.clamp(0.0, 1.0));
                if !lost {
                    return None;
                }
                let after = Duration::from_millis(chaos.timeout_ms);
                state.chaos_failures.answers_lost += 1;
                return Some(Verdict::AnswerLost { after, status: 504 });
            }
            let kind = rng.random_range(0..3u8);
            let timeout_ms = chaos.timeout_ms;
            let failures = &mut state.chaos_failures;
            match kind {
                0 => failures.timeouts += 1,
                1 => failures.server_errors += 1,
                _ => failures.rate_limited += 1,
            }
            (kind, timeout_ms)
        };
        Some(match kind {
            0 => {
                // The client gives up first; the message is never recorded.
                tokio::time::sleep(Duration::from_millis(timeout_ms)).await;
                Verdict::Fail {
                    status: 504,
                    retry_after: None,
                }
            }
            1 => Verdict::Fail {
                status: 503,
                retry_after: None,
            },
            _ => Verdict::Fail {
                status: 429,
                retry_after: Some(1),
            },
        })
    }

    async fn planned(&self, channel: &str, chat_id: &str) -> Verdict {
        let planned = {
            let mut state = self.lock();
            state.attempts += 1;
            state
                .failures
                .as_mut()
                .filter(|p| p.applies_to(channel, chat_id))
                .map(|plan| {
                    plan.count -= 1;
                    plan.clone()
                })
        };
        let Some(plan) = planned else {
            return Verdict::Deliver;
        };
        if plan.answer_lost {
            let after = Duration::from_millis(plan.delay_ms.unwrap_or(0));
            return Verdict::AnswerLost {
                after,
                status: plan.status,
            };
        }
        if let Some(ms) = plan.delay_ms {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        if plan.status == 200 {
            Verdict::Deliver
        } else {
            Verdict::Fail {
                status: plan.status,
                retry_after: plan.retry_after,
            }
        }
    }

    /// Judges one send and acts on it: the message's id when it is delivered
    /// and answered, else the failed answer (after recording the message when
    /// it was delivered all the same).
    async fn handle(&self, channel: &str, chat_id: &str, text: &str) -> Result<u64, FailedAnswer> {
        match self.judge(channel, chat_id).await {
            Verdict::Deliver => Ok(self.record(channel, chat_id, text, false)),
            Verdict::Fail {
                status,
                retry_after,
            } => Err((status, retry_after)),
            Verdict::AnswerLost { after, status } => {
                self.record(channel, chat_id, text, true);
                tokio::time::sleep(after).await;
                Err((status, None))
            }
        }
    }

    fn record(&self, channel: &str, chat_id: &str, text: &str, answer_lost: bool) -> u64 {
        let mut state = self.lock();
        let message_id = state.messages.len() as u64 + 1;
        state.messages.push(ReceivedMessage {
            message_id,
            channel: channel.to_owned(),
            chat_id: chat_id.to_owned(),
            text: text.to_owned(),
            received_at: chrono::Utc::now(),
            answer_lost,
        });
        tracing::info!(
            message_id,
            channel,
            chat_id,
            answer_lost,
            "sandbox received a message"
        );
        message_id
    }
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

async fn send_message(
    State(sandbox): State<NotificationSandbox>,
    Path(bot): Path<String>,
    body: Result<Json<SendMessage>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if !bot.starts_with("bot") || bot.len() <= 3 {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"ok": false, "error_code": 404, "description": "Not Found"})),
        )
            .into_response();
    }
    let Ok(Json(body)) = body else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"ok": false, "error_code": 400,
                "description": "Bad Request: message text is empty"})),
        )
            .into_response();
    };
    let chat_id = match body.chat_id {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    };
    let message_id = match sandbox.handle(TELEGRAM, &chat_id, &body.text).await {
        Ok(id) => id,
        Err((status, retry_after)) => {
            return telegram_error(status, retry_after);
        }
    };
    Json(json!({"ok": true, "result": {
        "message_id": message_id,
        "date": chrono::Utc::now().timestamp(),
        "chat": {"id": chat_id},
        "text": body.text,
    }}))
    .into_response()
}

/// The Bot API's error body: `{"ok": false, "error_code", "description"}`,
/// with a 429's `parameters.retry_after`.
fn telegram_error(status: u16, retry_after: Option<u64>) -> Response {
    let mut answer = json!({"ok": false, "error_code": status,
        "description": format!("sandbox failure {status}")});
    if let Some(secs) = retry_after {
        answer["parameters"] = json!({"retry_after": secs});
    }
    (status_code(status), Json(answer)).into_response()
}

/// Discord's error body: `{"message", "code"}`.
fn discord_error(status: StatusCode, message: &str, code: u32) -> Response {
    (status, Json(json!({"message": message, "code": code}))).into_response()
}

async fn execute_webhook(
    State(sandbox): State<NotificationSandbox>,
    Path((id, _token)): Path<(String, String)>,
    Query(query): Query<WebhookQuery>,
    body: Result<Json<ExecuteWebhook>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let content = match body {
        Ok(Json(ExecuteWebhook {
            content: Some(content),
        })) if !content.trim().is_empty() => content,
        _ => {
            return discord_error(
                StatusCode::BAD_REQUEST,
                "Cannot send an empty message",
                50006,
            );
        }
    };
    if content.chars().count() > shared::channels::DISCORD_MAX_CONTENT_CHARS {
        return discord_error(StatusCode::BAD_REQUEST, "Invalid Form Body", 50035);
    }
    let message_id = match sandbox.handle(DISCORD, &id, &content).await {
        Ok(id) => id,
        Err((status, retry_after)) => return webhook_error(status, retry_after),
    };
    if query.wait == Some(true) {
        Json(json!({
            "id": message_id.to_string(),
            "type": 0,
            "content": content,
            "webhook_id": id,
            "timestamp": chrono::Utc::now().to_rfc3339(),
        }))
        .into_response()
    } else {
        StatusCode::NO_CONTENT.into_response()
    }
}

/// A webhook's failed answer: a 429 with `retry_after` (body and header), or
/// Discord's error body.
fn webhook_error(status: u16, retry_after: Option<u64>) -> Response {
    if status != 429 {
        return discord_error(status_code(status), &format!("sandbox failure {status}"), 0);
    }
    let secs = retry_after.unwrap_or(1);
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        Json(json!({"message": "You are being rate limited.",
            "retry_after": secs as f64, "global": false})),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

async fn list_messages(
    State(sandbox): State<NotificationSandbox>,
    Query(query): Query<MessagesQuery>,
) -> Json<serde_json::Value> {
    let messages = match query.channel {
        Some(channel) => sandbox.messages_on(&channel),
        None => sandbox.messages(),
    };
    Json(json!({"messages": messages, "attempts": sandbox.attempts(),
        "rateLimited": sandbox.rate_limited(), "chaos": sandbox.chaos_failures()}))
}

async fn clear_messages(State(sandbox): State<NotificationSandbox>) -> StatusCode {
    let mut state = sandbox.lock();
    state.messages.clear();
    state.attempts = 0;
    state.rate_limited = 0;
    state.chaos_failures = ChaosFailures::default();
    StatusCode::NO_CONTENT
}

async fn plan_failures(
    State(sandbox): State<NotificationSandbox>,
    Json(plan): Json<FailurePlan>,
) -> StatusCode {
    sandbox.fail_next(plan);
    StatusCode::NO_CONTENT
}

async fn plan_rate_limit(
    State(sandbox): State<NotificationSandbox>,
    Json(plan): Json<RateLimitPlan>,
) -> StatusCode {
    sandbox.limit_rate(plan.per_second);
    StatusCode::NO_CONTENT
}

async fn plan_chaos(
    State(sandbox): State<NotificationSandbox>,
    Json(chaos): Json<Option<Chaos>>,
) -> StatusCode {
    sandbox.chaos(chaos);
    StatusCode::NO_CONTENT
}
