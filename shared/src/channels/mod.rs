//! The notification channels behind the `Destination` port: the Telegram
//! Bot API and Discord webhooks, over HTTPS with rustls. `Channel` is the one the
//! functions hold: which variant is built is configuration.

mod data_platform;
mod discord;
mod pacer;
mod telegram;

pub use data_platform::{
    DATA_PLATFORM, DATA_PLATFORM_SECRETS, DEFAULT_BATCH_SIZE as DEFAULT_DATA_PLATFORM_BATCH_SIZE,
    DataPlatformClient, DataPlatformSettings, PlatformDestination,
};
pub use discord::{DiscordChannel, MAX_CONTENT_CHARS as DISCORD_MAX_CONTENT_CHARS};
pub use pacer::SendPacer;
pub use telegram::{DEFAULT_API_BASE_URL as TELEGRAM_API_BASE_URL, TelegramChannel};

use crate::config::{self, ConfigError, Secret};
use crate::delivery::{Destination, Letter};
use crate::notification::{AmbiguousSendPolicy, ChannelKind, ChannelRoutes};
use crate::{Error, InfraError};
use std::time::Duration;

/// The variables that stand for the channels' secrets (see `config::secret`).
pub const CHANNEL_SECRETS: [&str; 2] = ["TELEGRAM_BOT_TOKEN", "DISCORD_WEBHOOK_URL"];

/// `<NAME>`, a send rate per second, when set.
fn send_rate(name: &str) -> Result<Option<f64>, ConfigError> {
    config::optional(name)
        .map(|v| {
            v.parse()
                .map_err(|_| ConfigError::invalid(name, format!("{v:?} is not a number")))
        })
        .transpose()
}

/// The Telegram Bot API's settings: `TELEGRAM_API_BASE_URL` (the real API by
/// default), `TELEGRAM_BOT_TOKEN` (a secret), `TELEGRAM_CHAT_ID`,
/// `TELEGRAM_TIMEOUT_MS` (5 s by default), `TELEGRAM_MAX_SENDS_PER_SECOND`
/// (no limit by default), `TELEGRAM_ON_AMBIGUOUS_SEND` (`retry` by default).
#[derive(Clone, Debug)]
pub struct TelegramSettings {
    pub api_base_url: String,
    pub bot_token: Secret,
    pub chat_id: String,
    pub timeout: Duration,
    pub max_sends_per_second: Option<f64>,
    pub on_ambiguous_send: AmbiguousSendPolicy,
}

impl TelegramSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(TelegramSettings {
            api_base_url: config::or_default("TELEGRAM_API_BASE_URL", TELEGRAM_API_BASE_URL),
            bot_token: config::secret("TELEGRAM_BOT_TOKEN")?,
            chat_id: config::required("TELEGRAM_CHAT_ID")?,
            timeout: Duration::from_millis(config::parsed("TELEGRAM_TIMEOUT_MS", 5_000u64)?),
            max_sends_per_second: send_rate("TELEGRAM_MAX_SENDS_PER_SECOND")?,
            on_ambiguous_send: AmbiguousSendPolicy::for_channel(
                &config::Vars::process(),
                ChannelKind::Telegram,
            )?,
        })
    }

    pub fn channel(&self) -> Result<TelegramChannel, ConfigError> {
        TelegramChannel::new(
            &self.api_base_url,
            self.bot_token.expose(),
            &self.chat_id,
            self.timeout,
        )
    }
}

/// A Discord webhook's settings: `DISCORD_WEBHOOK_URL` (a secret: the URL holds
/// the webhook's token), `DISCORD_TIMEOUT_MS` (5 s by default),
/// `DISCORD_MAX_SENDS_PER_SECOND` (no limit by default),
/// `DISCORD_ON_AMBIGUOUS_SEND` (`retry` by default).
#[derive(Clone, Debug)]
pub struct DiscordSettings {
    pub webhook_url: Secret,
    pub timeout: Duration,
    pub max_sends_per_second: Option<f64>,
    pub on_ambiguous_send: AmbiguousSendPolicy,
}

impl DiscordSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(DiscordSettings {
            webhook_url: config::secret("DISCORD_WEBHOOK_URL")?,
            timeout: Duration::from_millis(config::parsed("DISCORD_TIMEOUT_MS", 5_000u64)?),
            max_sends_per_second: send_rate("DISCORD_MAX_SENDS_PER_SECOND")?,
            on_ambiguous_send: AmbiguousSendPolicy::for_channel(
                &config::Vars::process(),
                ChannelKind::Discord,
            )?,
        })
    }

    pub fn channel(&self) -> Result<DiscordChannel, ConfigError> {
        DiscordChannel::new(self.webhook_url.expose(), self.timeout)
    }
}

/// Which channels each event type goes to, the settings of each channel used,
/// and the data platform's when `DATA_PLATFORM_URL` is set (dlq-retry then
/// retries its dead letters too).
#[derive(Clone, Debug)]
pub struct ChannelSettings {
    pub routes: ChannelRoutes,
    pub telegram: Option<TelegramSettings>,
    pub discord: Option<DiscordSettings>,
    pub data_platform: Option<DataPlatformSettings>,
}

impl ChannelSettings {
    /// The routes, and the settings of the channels they use (required then,
    /// not read otherwise: a Telegram-only deployment needs no Discord webhook).
    pub fn from_env() -> Result<Self, ConfigError> {
        let routes = ChannelRoutes::from_env()?;
        Ok(ChannelSettings {
            telegram: routes
                .uses(ChannelKind::Telegram)
                .then(TelegramSettings::from_env)
                .transpose()?,
            discord: routes
                .uses(ChannelKind::Discord)
                .then(DiscordSettings::from_env)
                .transpose()?,
            data_platform: config::optional("DATA_PLATFORM_URL")
                .map(|_| DataPlatformSettings::from_env())
                .transpose()?,
            routes,
        })
    }

    /// One client per configured channel; an error when a route names a
    /// channel without settings.
    pub fn channels(&self) -> Result<Vec<Channel>, ConfigError> {
        let mut channels = Vec::new();
        if let Some(telegram) = &self.telegram {
            channels.push(
                Channel::paced(
                    ChannelClient::Telegram(telegram.channel()?),
                    telegram.max_sends_per_second,
                )?
                .on_ambiguous_send(telegram.on_ambiguous_send),
            );
        }
        if let Some(discord) = &self.discord {
            channels.push(
                Channel::paced(
                    ChannelClient::Discord(discord.channel()?),
                    discord.max_sends_per_second,
                )?
                .on_ambiguous_send(discord.on_ambiguous_send),
            );
        }
        if let Some(platform) = &self.data_platform {
            channels.push(Channel::paced(
                ChannelClient::DataPlatform(PlatformDestination::new(platform)?),
                platform.max_requests_per_second,
            )?);
        }
        for kind in ChannelKind::ALL {
            if self.routes.uses(kind) && !channels.iter().any(|c| c.kind() == kind) {
                return Err(ConfigError::setup(
                    format!("route notifications to {}", kind.name()),
                    "the channel has no settings",
                ));
            }
        }
        Ok(channels)
    }
}

/// A configured channel: its client, its send-rate limit if it has one, and
/// what it does with a send whose answer was lost.
#[derive(Clone, Debug)]
pub struct Channel {
    client: ChannelClient,
    pacer: Option<SendPacer>,
    ambiguous: AmbiguousSendPolicy,
}

#[derive(Clone, Debug)]
pub enum ChannelClient {
    Telegram(TelegramChannel),
    Discord(DiscordChannel),
    DataPlatform(PlatformDestination),
}

impl Channel {
    /// `client`, sending at most `max_sends_per_second` when given.
    pub fn paced(
        client: ChannelClient,
        max_sends_per_second: Option<f64>,
    ) -> Result<Self, ConfigError> {
        let kind = client.kind();
        let pacer = max_sends_per_second
            .map(|rate| {
                let setting = match kind {
                    ChannelKind::Telegram => "TELEGRAM_MAX_SENDS_PER_SECOND",
                    ChannelKind::Discord => "DISCORD_MAX_SENDS_PER_SECOND",
                    ChannelKind::DataPlatform => "DATA_PLATFORM_MAX_REQUESTS_PER_SECOND",
                };
                SendPacer::new(setting, rate)
            })
            .transpose()?;
        Ok(Channel {
            client,
            pacer,
            ambiguous: AmbiguousSendPolicy::Retry,
        })
    }

    /// The same channel, doing `policy` with a send whose answer was lost.
    pub fn on_ambiguous_send(self, policy: AmbiguousSendPolicy) -> Self {
        Channel {
            ambiguous: policy,
            ..self
        }
    }
}

impl ChannelClient {
    pub fn kind(&self) -> ChannelKind {
        match self {
            ChannelClient::Telegram(_) => ChannelKind::Telegram,
            ChannelClient::Discord(_) => ChannelKind::Discord,
            ChannelClient::DataPlatform(_) => ChannelKind::DataPlatform,
        }
    }
}

impl Destination for Channel {
    fn kind(&self) -> ChannelKind {
        self.client.kind()
    }

    async fn send(&self, letter: &Letter) -> Result<(), Error> {
        if let Some(pacer) = &self.pacer {
            pacer.until_ready().await;
        }
        match &self.client {
            ChannelClient::Telegram(c) => c.send(letter).await,
            ChannelClient::Discord(c) => c.send(letter).await,
            ChannelClient::DataPlatform(c) => c.deliver(letter).await,
        }
    }

    fn on_ambiguous_send(&self) -> AmbiguousSendPolicy {
        self.ambiguous
    }
}

/// A channel's handle on the process's one HTTP client: every request it
/// makes gives up after the channel's timeout, so a hanging channel fails the
/// send instead of the invocation.
#[derive(Clone, Debug)]
struct HttpClient {
    shared: reqwest::Client,
    timeout: Duration,
}

impl HttpClient {
    fn post(&self, url: impl reqwest::IntoUrl) -> reqwest::RequestBuilder {
        self.shared.post(url).timeout(self.timeout)
    }
}

/// The HTTP client for a channel whose requests give up after `timeout`. The
/// channels share one client, built at the first call (at cold start), so its
/// TLS set-up (the trusted roots: `crate::tls`, read once per process) is paid
/// once for Telegram, Discord and the data platform, and their connections
/// share one pool. Connecting gives up after 3 s at most.
fn http_client(timeout: Duration) -> Result<HttpClient, ConfigError> {
    static SHARED: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    let shared = match SHARED.get() {
        Some(client) => client.clone(),
        None => {
            let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(3));
            // The roots decoded once for the process (no bundle: reqwest loads
            // the system's store itself).
            if let Some(roots) = crate::tls::roots() {
                let certs = roots
                    .der()
                    .iter()
                    .map(|der| reqwest::Certificate::from_der(der));
                let certs = certs
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| ConfigError::setup("read the trusted roots", e))?;
                builder = builder.tls_certs_only(certs);
            }
            let built = builder
                .build()
                .map_err(|e| ConfigError::setup("build the HTTP client", e))?;
            SHARED.get_or_init(|| built).clone()
        }
    };
    Ok(HttpClient { shared, timeout })
}

/// What failed of one send.
struct SendFailure {
    retryable: bool,
    /// The request may have reached the channel (see `InfraError::Channel`).
    maybe_delivered: bool,
    retry_after: Option<Duration>,
}

fn failure(
    destination: &'static str,
    what: SendFailure,
    message: String,
    source: Option<reqwest::Error>,
) -> Error {
    Error::from(InfraError::Channel {
        channel: destination,
        retryable: what.retryable,
        maybe_delivered: what.maybe_delivered,
        retry_after: what.retry_after,
        message,
        // The URL holds the secret (bot token, webhook token): never kept.
        source: source.map(|e| Box::new(e.without_url()) as _),
    })
}

/// A request that got no answer: always worth retrying. Unless it never
/// connected, it may have reached the channel and only the answer was lost.
fn unanswered(destination: &'static str, call: &str, error: reqwest::Error) -> Error {
    let connected = !error.is_connect() && !error.is_builder();
    let what = if error.is_connect() {
        "could not connect"
    } else if error.is_timeout() {
        "timed out waiting for the answer"
    } else {
        "lost its connection before the answer"
    };
    let what_failed = SendFailure {
        retryable: true,
        maybe_delivered: connected,
        retry_after: None,
    };
    failure(
        destination,
        what_failed,
        format!("{call} {what}"),
        Some(error),
    )
}

/// An answer other than success: 429 and 5xx are worth retrying, the other 4xx
/// (a blocked bot, a deleted webhook, a bad request) are not.
fn refused(
    destination: &'static str,
    call: &str,
    status: reqwest::StatusCode,
    description: &str,
    retry_after: Option<Duration>,
) -> Error {
    let retryable = status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
    // A gateway answered for an API it lost the answer of: it may have sent.
    let maybe_delivered = matches!(
        status,
        reqwest::StatusCode::BAD_GATEWAY | reqwest::StatusCode::GATEWAY_TIMEOUT
    );
    let mut message = format!("{call} answered HTTP {}: {description}", status.as_u16());
    if let Some(after) = retry_after {
        if after.subsec_millis() == 0 {
            message.push_str(&format!(" (retry after {} s)", after.as_secs()));
        } else {
            message.push_str(&format!(" (retry after {:.3} s)", after.as_secs_f64()));
        }
    }
    let what_failed = SendFailure {
        retryable,
        maybe_delivered,
        retry_after,
    };
    failure(destination, what_failed, message, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_channel_keeps_its_timeout_on_the_shared_client_trusting_the_machines_bundle() {
        let telegram = http_client(Duration::from_secs(5)).unwrap();
        let platform = http_client(Duration::from_secs(10)).unwrap();
        assert_eq!(
            (telegram.timeout, platform.timeout),
            (Duration::from_secs(5), Duration::from_secs(10))
        );
    }
}
