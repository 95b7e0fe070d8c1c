//! The Telegram Bot API channel (`sendMessage`).

use super::{HttpClient, http_client, refused, unanswered};
use crate::Error;
use crate::config::ConfigError;
use crate::delivery::{Destination, Letter};
use crate::notification::ChannelKind;
use serde::Deserialize;
use std::time::Duration;

pub const DEFAULT_API_BASE_URL: &str = "https://api.telegram.org";

#[derive(Clone)]
pub struct TelegramChannel {
    client: HttpClient,
    /// `<base>/bot<token>/sendMessage`: holds the secret, so never logged.
    send_url: String,
    chat_id: String,
}

impl std::fmt::Debug for TelegramChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelegramChannel")
            .field("chat_id", &self.chat_id)
            .finish_non_exhaustive()
    }
}

/// What the Bot API answers on failure.
#[derive(Debug, Deserialize)]
struct ApiAnswer {
    ok: bool,
    description: Option<String>,
    parameters: Option<ApiParameters>,
}

#[derive(Debug, Deserialize)]
struct ApiParameters {
    retry_after: Option<u64>,
}

impl TelegramChannel {
    pub fn new(
        api_base_url: &str,
        bot_token: &str,
        chat_id: &str,
        timeout: Duration,
    ) -> Result<Self, ConfigError> {
        if bot_token.trim().is_empty() {
            return Err(ConfigError::invalid("TELEGRAM_BOT_TOKEN", "it is empty"));
        }
        Ok(TelegramChannel {
            client: http_client(timeout)?,
            send_url: format!(
                "{}/bot{}/sendMessage",
                api_base_url.trim_end_matches('/'),
                bot_token.trim()
            ),
            chat_id: chat_id.to_owned(),
        })
    }
}

impl Destination for TelegramChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Telegram
    }

    async fn send(&self, letter: &Letter) -> Result<(), Error> {
        let notification = &letter.notification;
        let kind = ChannelKind::Telegram;
        let response = self
            .client
            .post(&self.send_url)
            .json(&serde_json::json!({"chat_id": self.chat_id, "text": notification.text}))
            .send()
            .await
            .map_err(|e| unanswered(kind.name(), "sendMessage", e))?;
        let status = response.status();
        let answer: Option<ApiAnswer> = response.json().await.ok();
        if status.is_success() && answer.as_ref().is_none_or(|a| a.ok) {
            return Ok(());
        }
        let description = answer
            .as_ref()
            .and_then(|a| a.description.clone())
            .unwrap_or_else(|| "no description".into());
        let retry_after = answer
            .as_ref()
            .and_then(|a| a.parameters.as_ref())
            .and_then(|p| p.retry_after)
            .map(Duration::from_secs);
        Err(refused(
            kind.name(),
            "sendMessage",
            status,
            &description,
            retry_after,
        ))
    }
}
