//! A Lambda Runtime API (the interface a `bootstrap` talks to, version
//! 2018-06-01), to run a real function binary locally: `AWS_LAMBDA_RUNTIME_API`
//! points the binary here, [`RuntimeApi::invoke`] queues an event and waits for
//! what the binary posts back.
//!
//! - `GET /2018-06-01/runtime/invocation/next`: the next event, with the request
//!   id, deadline and function ARN headers;
//! - `POST .../invocation/{id}/response` and `.../invocation/{id}/error`;
//! - `POST /2018-06-01/runtime/init/error`: the binary could not start.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// What the function answered to one invocation.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Response(Value),
    /// `{"errorType", "errorMessage"}` as the runtime reports it.
    Error(Value),
}

struct Pending {
    id: String,
    event: Value,
    timeout: Duration,
    reply: oneshot::Sender<Outcome>,
}

#[derive(Default)]
struct Shared {
    waiting: HashMap<String, oneshot::Sender<Outcome>>,
    init_error: Option<Value>,
    first_next: Option<Instant>,
}

#[derive(Clone)]
struct ApiState {
    queue: Arc<tokio::sync::Mutex<mpsc::Receiver<Pending>>>,
    shared: Arc<Mutex<Shared>>,
    function_name: String,
}

/// A Runtime API for one function, served on 127.0.0.1.
pub struct RuntimeApi {
    pub addr: SocketAddr,
    sender: mpsc::Sender<Pending>,
    shared: Arc<Mutex<Shared>>,
    started: Instant,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl ApiState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl RuntimeApi {
    /// Serves on a free port of 127.0.0.1 for `function_name`.
    pub async fn start(function_name: &str) -> Result<RuntimeApi, crate::Error> {
        let listener =
            TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| crate::Error::Listen {
                    addr: "127.0.0.1:0".into(),
                    source: e,
                })?;
        let addr = listener.local_addr().map_err(|e| crate::Error::Listen {
            addr: "127.0.0.1:0".into(),
            source: e,
        })?;
        let (sender, receiver) = mpsc::channel(16);
        let shared = Arc::new(Mutex::new(Shared::default()));
        let state = ApiState {
            queue: Arc::new(tokio::sync::Mutex::new(receiver)),
            shared: shared.clone(),
            function_name: function_name.to_owned(),
        };
        let router = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(state);
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!(error = %e, "the runtime API stopped");
            }
        });
        Ok(RuntimeApi {
            addr,
            sender,
            shared,
            started: Instant::now(),
            server,
        })
    }

    /// The value for `AWS_LAMBDA_RUNTIME_API`.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// How long after [`RuntimeApi::start`] the binary first asked for an event
    /// (its init phase, when it was started right after).
    pub fn first_next_after_start(&self) -> Option<Duration> {
        let shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        shared.first_next.map(|t| t.duration_since(self.started))
    }

    /// When the binary first asked for an event: its init phase ends there.
    pub fn first_next_at(&self) -> Option<Instant> {
        let shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        shared.first_next
    }

    /// What the binary reported to `/init/error`, if it failed to start.
    pub fn init_error(&self) -> Option<Value> {
        let shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        shared.init_error.clone()
    }

    /// Hands `event` to the binary and waits up to `timeout` for its answer.
    pub async fn invoke(&self, event: Value, timeout: Duration) -> Result<Outcome, crate::Error> {
        let (reply, answer) = oneshot::channel();
        let id = shared::domain::EventId::random().to_string();
        let timed_out = || crate::Error::Timeout {
            function: "bootstrap".into(),
            seconds: timeout.as_secs(),
        };
        self.sender
            .send(Pending {
                id,
                event,
                timeout,
                reply,
            })
            .await
            .map_err(|_| timed_out())?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(outcome)) => Ok(outcome),
            _ => Err(match self.init_error() {
                Some(error) => crate::Error::Invocation {
                    function: "bootstrap".into(),
                    message: format!("init failed: {error}"),
                },
                None => timed_out(),
            }),
        }
    }
}

async fn next(State(state): State<ApiState>) -> Response {
    state.lock().first_next.get_or_insert_with(Instant::now);
    let Some(pending) = state.queue.lock().await.recv().await else {
        return StatusCode::GONE.into_response();
    };
    let deadline = chrono::Utc::now()
        + chrono::Duration::from_std(pending.timeout).unwrap_or(chrono::Duration::seconds(30));
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    set("lambda-runtime-aws-request-id", pending.id.clone());
    set(
        "lambda-runtime-deadline-ms",
        deadline.timestamp_millis().to_string(),
    );
    set(
        "lambda-runtime-invoked-function-arn",
        format!(
            "arn:aws:lambda:us-east-1:000000000000:function:{}",
            state.function_name
        ),
    );
    set(
        "lambda-runtime-trace-id",
        "Root=1-00000000-000000000000000000000000;Sampled=0".into(),
    );
    state.lock().waiting.insert(pending.id, pending.reply);
    (headers, Json(pending.event)).into_response()
}

fn answer(state: &ApiState, id: &str, outcome: Outcome) -> StatusCode {
    match state.lock().waiting.remove(id) {
        Some(reply) => {
            let _ = reply.send(outcome);
            StatusCode::ACCEPTED
        }
        None => StatusCode::NOT_FOUND,
    }
}

fn json_or_text(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

async fn response(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> StatusCode {
    answer(&state, &id, Outcome::Response(json_or_text(&body)))
}

async fn error(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> StatusCode {
    answer(&state, &id, Outcome::Error(json_or_text(&body)))
}

async fn init_error(State(state): State<ApiState>, body: axum::body::Bytes) -> StatusCode {
    state.lock().init_error = Some(json_or_text(&body));
    StatusCode::ACCEPTED
}
