//! The local notification sandbox's own API, as `ops demo` and `ops trace` read it.

use crate::Error;
use serde_json::Value;

/// What the sandbox at `base` received, on every channel or on `channel`.
pub async fn messages(
    http: &reqwest::Client,
    base: &str,
    channel: Option<&str>,
) -> Result<Vec<Value>, Error> {
    let base = base.trim_end_matches('/');
    let url = match channel {
        Some(channel) => format!("{base}/sandbox/messages?channel={channel}"),
        None => format!("{base}/sandbox/messages"),
    };
    let body = get_json(http, url).await?;
    Ok(body["messages"].as_array().cloned().unwrap_or_default())
}

/// What the sandbox's data platform holds: `events` (each once),
/// `duplicates`, `requests`.
pub async fn platform(http: &reqwest::Client, base: &str) -> Result<Value, Error> {
    let url = format!(
        "{}/sandbox/data-platform/events",
        base.trim_end_matches('/')
    );
    get_json(http, url).await
}

async fn get_json(http: &reqwest::Client, url: String) -> Result<Value, Error> {
    let http_error = |source| Error::Http {
        url: url.clone(),
        source,
    };
    http.get(&url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(http_error)?
        .json()
        .await
        .map_err(http_error)
}
