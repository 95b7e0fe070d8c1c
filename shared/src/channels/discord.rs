//! The Discord webhook channel: `POST <webhook URL>?wait=true` with a `content`
//! message. Mentions are switched off (`allowed_mentions.parse = []`) so text
//! from the event (a concert title with `@everyone`) can never ping a server.

use super::{HttpClient, http_client, refused, unanswered};
use crate::Error;
use crate::config::ConfigError;
use crate::delivery::{Destination, Letter};
use crate::notification::ChannelKind;
use reqwest::Url;
use serde::Deserialize;
use std::time::Duration;

/// The variable (a secret) that holds the webhook URL, named in errors.
const WEBHOOK_URL: &str = "DISCORD_WEBHOOK_URL";

/// Discord refuses a `content` longer than this many characters.
pub const MAX_CONTENT_CHARS: usize = 2000;

#[derive(Clone)]
pub struct DiscordChannel {
    client: HttpClient,
    /// `https://discord.com/api/webhooks/<id>/<token>?wait=true`: the token is a
    /// secret, so the URL is never logged.
    execute_url: Url,
}

impl std::fmt::Debug for DiscordChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscordChannel")
            .field("host", &self.execute_url.host_str())
            .finish_non_exhaustive()
    }
}

/// What Discord answers on failure; on 429 `retry_after` is in seconds, with a
/// fraction (`0.617`).
#[derive(Debug, Deserialize)]
struct ErrorAnswer {
    message: Option<String>,
    retry_after: Option<f64>,
    global: Option<bool>,
}

impl DiscordChannel {
    pub fn new(webhook_url: &str, timeout: Duration) -> Result<Self, ConfigError> {
        // The error never repeats the URL: it holds the webhook's token.
        let mut execute_url = Url::parse(webhook_url.trim())
            .map_err(|e| ConfigError::invalid(WEBHOOK_URL, format!("it is not a URL ({e})")))?;
        if !matches!(execute_url.scheme(), "https" | "http") {
            return Err(ConfigError::invalid(
                WEBHOOK_URL,
                "it must be https (http only for a local sandbox)",
            ));
        }
        // Without `wait=true` Discord answers 204 before the message exists;
        // with it, 200 means the message was created.
        execute_url.query_pairs_mut().append_pair("wait", "true");
        Ok(DiscordChannel {
            client: http_client(timeout)?,
            execute_url,
        })
    }
}

/// `text`, cut to Discord's limit on a character boundary.
fn content(text: &str) -> String {
    match text.char_indices().nth(MAX_CONTENT_CHARS) {
        None => text.to_owned(),
        Some(_) => {
            let kept: String = text.chars().take(MAX_CONTENT_CHARS - 1).collect();
            kept + "…"
        }
    }
}

/// How long a 429 asks to wait: the body's `retry_after`, else the
/// `Retry-After` header, rounded up to whole milliseconds.
fn retry_after(answer: Option<&ErrorAnswer>, header: Option<&str>) -> Option<Duration> {
    let seconds = answer
        .and_then(|a| a.retry_after)
        .or_else(|| header.and_then(|h| h.trim().parse::<f64>().ok()))?;
    (seconds.is_finite() && seconds >= 0.0)
        .then(|| Duration::from_millis((seconds * 1000.0).ceil() as u64))
}

impl Destination for DiscordChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Discord
    }

    async fn send(&self, letter: &Letter) -> Result<(), Error> {
        let notification = &letter.notification;
        let kind = ChannelKind::Discord;
        let response = self
            .client
            .post(self.execute_url.clone())
            .json(&serde_json::json!({
                "content": content(&notification.text),
                "allowed_mentions": {"parse": []},
            }))
            .send()
            .await
            .map_err(|e| unanswered(kind.name(), "execute webhook", e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let header = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let answer: Option<ErrorAnswer> = response.json().await.ok();
        let mut description = answer
            .as_ref()
            .and_then(|a| a.message.clone())
            .unwrap_or_else(|| "no message".into());
        if answer.as_ref().and_then(|a| a.global) == Some(true) {
            description.push_str(" (global rate limit)");
        }
        Err(refused(
            kind.name(),
            "execute webhook",
            status,
            &description,
            retry_after(answer.as_ref(), header.as_deref()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_longer_than_discord_allows_is_cut_on_a_character_boundary() {
        let long = "좌".repeat(MAX_CONTENT_CHARS + 5);
        let cut = content(&long);
        assert_eq!(cut.chars().count(), MAX_CONTENT_CHARS);
        assert!(cut.ends_with('…'));
        assert_eq!(content("짧은 메시지"), "짧은 메시지");
    }

    #[test]
    fn retry_after_prefers_the_body_and_rounds_up_to_milliseconds() {
        let body = ErrorAnswer {
            message: None,
            retry_after: Some(0.6175),
            global: None,
        };
        assert_eq!(
            retry_after(Some(&body), Some("3")),
            Some(Duration::from_millis(618))
        );
        assert_eq!(retry_after(None, Some("3")), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(None, Some("soon")), None);
    }

    #[test]
    fn a_webhook_url_that_is_not_http_is_refused_without_repeating_it() {
        let error = DiscordChannel::new(
            "ftp://x/api/webhooks/1/secret-token",
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(!error.to_string().contains("secret-token"), "{error}");
        assert!(DiscordChannel::new("not a url secret-token", Duration::from_secs(1)).is_err());
    }
}
