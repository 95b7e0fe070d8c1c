//! A Telegram-Bot-API-compatible sandbox: answers `sendMessage` like the Bot API,
//! records every message, and fails on request.
//!
//! - `POST /bot<token>/sendMessage` `{"chat_id", "text"}`
//! - `GET /sandbox/messages`: what was received, in order
//! - `DELETE /sandbox/messages`: forget them
//! - `POST /sandbox/failures` `{"count": 3, "status": 500, "retryAfter": 1,
//!   "delayMs": 2000, "chatId": "42"}`: the next `count` sends (to `chatId` only,
//!   if given) wait `delayMs`, then fail with `status` (429 carries
//!   `retry_after`); `status` 200 makes them slow but successful

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedMessage {
    pub message_id: u64,
    pub chat_id: String,
    pub text: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailurePlan {
    pub count: u32,
    #[serde(default = "default_status")]
    pub status: u16,
    pub retry_after: Option<u64>,
    /// Answer this late (a slow or timing-out Telegram).
    pub delay_ms: Option<u64>,
    /// Only sends to this chat are affected (a blocked bot, a chat not found).
    pub chat_id: Option<String>,
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
}

fn default_status() -> u16 {
    500
}

#[derive(Default)]
struct SandboxState {
    messages: Vec<ReceivedMessage>,
    failures: Option<FailurePlan>,
    attempts: u64,
}

/// The sandbox's state, shared between the server and whoever inspects it.
#[derive(Clone, Default)]
pub struct TelegramSandbox {
    state: Arc<Mutex<SandboxState>>,
}

#[derive(Deserialize)]
struct SendMessage {
    chat_id: serde_json::Value,
    text: String,
}

impl TelegramSandbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, SandboxState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn messages(&self) -> Vec<ReceivedMessage> {
        self.lock().messages.clone()
    }

    /// Every `sendMessage` call, failed ones included.
    pub fn attempts(&self) -> u64 {
        self.lock().attempts
    }

    pub fn fail_next(&self, plan: FailurePlan) {
        self.lock().failures = Some(plan);
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/{bot}/sendMessage", post(send_message))
            .route(
                "/sandbox/messages",
                get(list_messages).delete(clear_messages),
            )
            .route("/sandbox/failures", post(plan_failures))
            .with_state(self.clone())
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
                tracing::error!(error = %e, "telegram sandbox stopped");
            }
        });
        Ok(bound)
    }
}

async fn send_message(
    State(sandbox): State<TelegramSandbox>,
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
    let planned = {
        let mut state = sandbox.lock();
        state.attempts += 1;
        state
            .failures
            .as_mut()
            .filter(|p| p.count > 0 && p.chat_id.as_ref().is_none_or(|c| *c == chat_id))
            .map(|plan| {
                plan.count -= 1;
                plan.clone()
            })
    };
    if let Some(plan) = planned {
        if let Some(ms) = plan.delay_ms {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        if plan.status != 200 {
            let status = plan.status;
            let mut answer = json!({"ok": false, "error_code": status,
                "description": format!("sandbox failure {status}")});
            if let Some(secs) = plan.retry_after {
                answer["parameters"] = json!({"retry_after": secs});
            }
            return (
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                Json(answer),
            )
                .into_response();
        }
    }
    let mut state = sandbox.lock();
    let message_id = state.messages.len() as u64 + 1;
    state.messages.push(ReceivedMessage {
        message_id,
        chat_id: chat_id.clone(),
        text: body.text.clone(),
    });
    tracing::info!(message_id, chat_id = %chat_id, "sandbox received a message");
    Json(json!({"ok": true, "result": {
        "message_id": message_id,
        "date": chrono::Utc::now().timestamp(),
        "chat": {"id": chat_id},
        "text": body.text,
    }}))
    .into_response()
}

async fn list_messages(State(sandbox): State<TelegramSandbox>) -> Json<serde_json::Value> {
    Json(json!({"messages": sandbox.messages(), "attempts": sandbox.attempts()}))
}

async fn clear_messages(State(sandbox): State<TelegramSandbox>) -> StatusCode {
    let mut state = sandbox.lock();
    state.messages.clear();
    state.attempts = 0;
    StatusCode::NO_CONTENT
}

async fn plan_failures(
    State(sandbox): State<TelegramSandbox>,
    Json(plan): Json<FailurePlan>,
) -> StatusCode {
    sandbox.fail_next(plan);
    StatusCode::NO_CONTENT
}
