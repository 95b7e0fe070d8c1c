//! The data platform's HTTP API: `POST {DATA_PLATFORM_URL}/v1/events` with a
//! batch of events (the contract: `crate::data_platform`).

use super::{HttpClient, http_client, refused, send_rate, unanswered};
use crate::Error;
use crate::InfraError;
use crate::config::{self, ConfigError, Secret};
use crate::data_platform::{BatchAnswer, PlatformEvent, PseudonymKey};
use crate::delivery::Letter;
use std::time::Duration;

/// The destination's name in idempotency keys, dead-letter headers, ledger
/// rows, metrics and logs.
pub const DATA_PLATFORM: &str = "data-platform";

const CALL: &str = "POST /v1/events";

/// The variables that stand for the feed's secrets (see `config::secret`).
pub const DATA_PLATFORM_SECRETS: [&str; 2] =
    ["DATA_PLATFORM_API_KEY", "DATA_PLATFORM_PSEUDONYM_KEY"];

/// The largest batch the platform takes in one request.
pub const MAX_BATCH_SIZE: usize = 500;
pub const DEFAULT_BATCH_SIZE: usize = 50;

/// The feed's settings: `DATA_PLATFORM_URL`, `DATA_PLATFORM_API_KEY` and
/// `DATA_PLATFORM_PSEUDONYM_KEY` (secrets), `DATA_PLATFORM_BATCH_SIZE` (events
/// per request, 50 by default), `DATA_PLATFORM_TIMEOUT_MS` (10 s by default),
/// `DATA_PLATFORM_MAX_REQUESTS_PER_SECOND` (no limit by default).
#[derive(Clone, Debug)]
pub struct DataPlatformSettings {
    pub url: String,
    pub api_key: Secret,
    pub pseudonym_key: Secret,
    pub batch_size: usize,
    pub timeout: Duration,
    pub max_requests_per_second: Option<f64>,
}

impl DataPlatformSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        let batch_size = config::parsed("DATA_PLATFORM_BATCH_SIZE", DEFAULT_BATCH_SIZE)?;
        if !(1..=MAX_BATCH_SIZE).contains(&batch_size) {
            return Err(ConfigError::invalid(
                "DATA_PLATFORM_BATCH_SIZE",
                format!("{batch_size} is not between 1 and {MAX_BATCH_SIZE}"),
            ));
        }
        Ok(DataPlatformSettings {
            url: config::required("DATA_PLATFORM_URL")?,
            api_key: config::secret("DATA_PLATFORM_API_KEY")?,
            pseudonym_key: config::secret("DATA_PLATFORM_PSEUDONYM_KEY")?,
            batch_size,
            timeout: Duration::from_millis(config::parsed("DATA_PLATFORM_TIMEOUT_MS", 10_000u64)?),
            max_requests_per_second: send_rate("DATA_PLATFORM_MAX_REQUESTS_PER_SECOND")?,
        })
    }

    pub fn client(&self) -> Result<DataPlatformClient, ConfigError> {
        DataPlatformClient::new(&self.url, &self.api_key, self.timeout)
    }

    pub fn pseudonyms(&self) -> Result<PseudonymKey, ConfigError> {
        let key = self.pseudonym_key.expose();
        if key.trim().len() < 16 {
            return Err(ConfigError::invalid(
                "DATA_PLATFORM_PSEUDONYM_KEY",
                "it must be at least 16 characters: a short key makes pseudonyms guessable",
            ));
        }
        Ok(PseudonymKey::new(key.as_bytes()))
    }
}

#[derive(Clone)]
pub struct DataPlatformClient {
    client: HttpClient,
    events_url: String,
    api_key: Secret,
}

impl std::fmt::Debug for DataPlatformClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPlatformClient")
            .field("events_url", &self.events_url)
            .finish_non_exhaustive()
    }
}

impl DataPlatformClient {
    pub fn new(url: &str, api_key: &Secret, timeout: Duration) -> Result<Self, ConfigError> {
        if api_key.expose().trim().is_empty() {
            return Err(ConfigError::invalid("DATA_PLATFORM_API_KEY", "it is empty"));
        }
        let base = url.trim().trim_end_matches('/');
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(ConfigError::invalid(
                "DATA_PLATFORM_URL",
                format!("{base:?} is not an http(s) URL"),
            ));
        }
        Ok(DataPlatformClient {
            client: http_client(timeout)?,
            events_url: format!("{base}/v1/events"),
            api_key: Secret::new(api_key.expose().trim()),
        })
    }

    /// Sends `events` in one request: what the platform answered for each, or
    /// why the request as a whole failed (retryable or not, and whether the
    /// platform may have taken it: it deduplicates, so a retry is harmless).
    pub async fn send(&self, events: &[PlatformEvent]) -> Result<BatchAnswer, Error> {
        let response = self
            .client
            .post(&self.events_url)
            .bearer_auth(self.api_key.expose())
            .json(events)
            .send()
            .await
            .map_err(|e| unanswered(DATA_PLATFORM, CALL, e))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        if status.is_success() {
            return response.json::<BatchAnswer>().await.map_err(unreadable);
        }
        let body = response.text().await.unwrap_or_default();
        let mut description: String = body.chars().take(300).collect();
        if matches!(status.as_u16(), 401 | 403) {
            description = format!(
                "the API key was refused (check DATA_PLATFORM_API_KEY's secret): {description}"
            );
        }
        Err(refused(
            DATA_PLATFORM,
            CALL,
            status,
            &description,
            retry_after,
        ))
    }
}

/// The data platform as one destination of the delivery path: a letter is
/// sent as a batch of one (how dlq-retry and a re-drive deliver it).
#[derive(Clone, Debug)]
pub struct PlatformDestination {
    client: DataPlatformClient,
    pseudonyms: PseudonymKey,
}

impl PlatformDestination {
    pub fn new(settings: &DataPlatformSettings) -> Result<Self, ConfigError> {
        Ok(PlatformDestination {
            client: settings.client()?,
            pseudonyms: settings.pseudonyms()?,
        })
    }

    /// Sends the letter's event; an event the platform refuses is refused for
    /// good (the others of its batch are not concerned).
    pub async fn deliver(&self, letter: &Letter) -> Result<(), Error> {
        let event = PlatformEvent::of(&letter.envelope, &self.pseudonyms)?;
        let answer = self.client.send(std::slice::from_ref(&event)).await?;
        answer.result_for(&event.event_id)
    }
}

/// A success whose answer cannot be read: the platform may have taken the
/// batch; sending it again is harmless (it deduplicates), so it is retried.
fn unreadable(error: reqwest::Error) -> Error {
    Error::from(InfraError::Channel {
        channel: DATA_PLATFORM,
        retryable: true,
        maybe_delivered: true,
        retry_after: None,
        message: format!("{CALL} answered success with an unreadable answer"),
        source: Some(Box::new(error.without_url())),
    })
}
