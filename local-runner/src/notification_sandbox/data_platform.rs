//! The sandbox's data platform: answers `POST /v1/events` as the platform's
//! contract says (`shared::data_platform`), keeps each event once by its
//! `eventId` and counts the copies it was sent again, and fails on request
//! through the same plans as the channels (`"channel": "data-platform"`).
//!
//! - `POST /v1/events` (`Authorization: Bearer <SANDBOX_DATA_PLATFORM_KEY>`):
//!   200 with `accepted`, `duplicates` and `rejected`; 401 for another key;
//!   400 for a body that is not an array of events
//! - `GET /sandbox/data-platform/events`: `{"events": [...], "duplicates": n,
//!   "duplicateIds": [...], "requests": n}`, each event once, in arrival order
//! - `DELETE /sandbox/data-platform/events`: forget them
//! - `POST /sandbox/data-platform/rejections` `{"eventIds": [...], "reason": "..."}`:
//!   those events are refused (in the 200's `rejected`) whenever sent

use super::{NotificationSandbox, Verdict, status_code};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shared::channels::{DATA_PLATFORM, DataPlatformSettings};
use shared::config::Secret;
use shared::data_platform::{BatchAnswer, Rejection};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

/// The API key the sandbox accepts.
pub const SANDBOX_DATA_PLATFORM_KEY: &str = "sandbox-data-platform-key";
/// The pseudonym key the sandbox settings give the feed (any 16+ characters).
pub const SANDBOX_PSEUDONYM_KEY: &str = "sandbox-pseudonym-key-0123456789";

/// One event the platform took.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedEvent {
    pub event_id: String,
    pub event: Value,
    pub received_at: chrono::DateTime<chrono::Utc>,
    /// Taken, but the sender got a failure (or nothing) back.
    #[serde(default)]
    pub answer_lost: bool,
}

/// What the platform holds.
#[derive(Default)]
pub(super) struct PlatformState {
    events: Vec<ReceivedEvent>,
    ids: HashSet<String>,
    /// Events sent again after the platform had them.
    duplicate_ids: Vec<String>,
    requests: u64,
    rejections: HashMap<String, String>,
    /// Per event, the copies taken whose answer was lost (the sender sends
    /// those again).
    answers_lost: HashMap<String, usize>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RejectionPlan {
    event_ids: Vec<String>,
    reason: String,
}

/// The feed's settings for a sandbox served on `addr`.
pub fn data_platform_settings(addr: SocketAddr) -> DataPlatformSettings {
    DataPlatformSettings {
        url: format!("http://{addr}"),
        api_key: Secret::new(SANDBOX_DATA_PLATFORM_KEY),
        pseudonym_key: Secret::new(SANDBOX_PSEUDONYM_KEY),
        batch_size: shared::channels::DEFAULT_DATA_PLATFORM_BATCH_SIZE,
        timeout: std::time::Duration::from_secs(5),
        max_requests_per_second: None,
    }
}

impl NotificationSandbox {
    /// The events the platform took, each once, in arrival order.
    pub fn platform_events(&self) -> Vec<ReceivedEvent> {
        self.lock().platform.events.clone()
    }

    /// The ids of the events it was sent again after it had them.
    pub fn platform_duplicates(&self) -> Vec<String> {
        self.lock().platform.duplicate_ids.clone()
    }

    /// Per event, how many of the copies it took lost their answer.
    pub fn platform_answers_lost(&self) -> HashMap<String, usize> {
        self.lock().platform.answers_lost.clone()
    }

    /// The requests it answered, failed ones included.
    pub fn platform_requests(&self) -> u64 {
        self.lock().platform.requests
    }

    /// Refuses these events with `reason` whenever they are sent.
    pub fn reject_events(&self, event_ids: &[String], reason: &str) {
        let mut state = self.lock();
        for id in event_ids {
            state
                .platform
                .rejections
                .insert(id.clone(), reason.to_owned());
        }
    }

    pub(super) fn data_platform_routes(&self) -> Router {
        Router::new()
            .route("/v1/events", post(receive_events))
            .route(
                "/sandbox/data-platform/events",
                get(list_events).delete(clear_events),
            )
            .route("/sandbox/data-platform/rejections", post(plan_rejections))
            .with_state(self.clone())
    }

    /// Takes each event once; answers which were taken, had already, refused.
    fn take(&self, events: &[(String, Value)], answer_lost: bool) -> BatchAnswer {
        let mut state = self.lock();
        let platform = &mut state.platform;
        let mut answer = BatchAnswer::default();
        for (id, event) in events {
            if let Some(reason) = platform.rejections.get(id) {
                answer.rejected.push(Rejection {
                    event_id: id.clone(),
                    reason: reason.clone(),
                });
                continue;
            }
            if answer_lost {
                *platform.answers_lost.entry(id.clone()).or_default() += 1;
            }
            if platform.ids.insert(id.clone()) {
                platform.events.push(ReceivedEvent {
                    event_id: id.clone(),
                    event: event.clone(),
                    received_at: chrono::Utc::now(),
                    answer_lost,
                });
                answer.accepted.push(id.clone());
            } else {
                platform.duplicate_ids.push(id.clone());
                answer.duplicates.push(id.clone());
            }
        }
        tracing::info!(
            accepted = answer.accepted.len(),
            duplicates = answer.duplicates.len(),
            rejected = answer.rejected.len(),
            answer_lost,
            "sandbox data platform received a batch"
        );
        answer
    }
}

/// The batch's events with their ids, or why the body is not a batch.
fn events_of(body: &Value) -> Result<Vec<(String, Value)>, String> {
    let events = body.as_array().ok_or("the body is not a JSON array")?;
    events
        .iter()
        .map(|event| {
            let id = event["eventId"]
                .as_str()
                .filter(|id| !id.is_empty())
                .ok_or("an event has no eventId")?;
            Ok((id.to_owned(), event.clone()))
        })
        .collect()
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

async fn receive_events(
    State(sandbox): State<NotificationSandbox>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    sandbox.lock().platform.requests += 1;
    let expected = format!("Bearer {SANDBOX_DATA_PLATFORM_KEY}");
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(&expected)
    {
        return error(StatusCode::UNAUTHORIZED, "unknown API key");
    }
    let events = match serde_json::from_slice(&body)
        .map_err(|e| e.to_string())
        .and_then(|body: Value| events_of(&body))
    {
        Ok(events) => events,
        Err(why) => return error(StatusCode::BAD_REQUEST, &why),
    };
    match sandbox.judge(DATA_PLATFORM, "-").await {
        Verdict::Deliver => Json(sandbox.take(&events, false)).into_response(),
        Verdict::Fail {
            status,
            retry_after,
        } => {
            let mut response = error(status_code(status), "sandbox failure");
            if let Some(after) = retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(after));
            }
            response
        }
        Verdict::AnswerLost { after, status } => {
            sandbox.take(&events, true);
            tokio::time::sleep(after).await;
            error(
                status_code(status),
                "sandbox failure after taking the batch",
            )
        }
    }
}

async fn list_events(State(sandbox): State<NotificationSandbox>) -> Json<Value> {
    let state = sandbox.lock();
    let platform = &state.platform;
    Json(json!({
        "events": platform.events,
        "duplicates": platform.duplicate_ids.len(),
        "duplicateIds": platform.duplicate_ids,
        "requests": platform.requests,
    }))
}

async fn clear_events(State(sandbox): State<NotificationSandbox>) -> StatusCode {
    sandbox.lock().platform = PlatformState::default();
    StatusCode::NO_CONTENT
}

async fn plan_rejections(
    State(sandbox): State<NotificationSandbox>,
    Json(plan): Json<RejectionPlan>,
) -> StatusCode {
    sandbox.reject_events(&plan.event_ids, &plan.reason);
    StatusCode::NO_CONTENT
}
