//! Secrets read once per cold start from Secrets Manager or SSM Parameter Store
//! (feature `secrets`): each variable a function needs a secret for (`JWT_SECRET`,
//! `TELEGRAM_BOT_TOKEN`, `DISCORD_WEBHOOK_URL`) may be set as itself (local
//! runs), as `<NAME>_SECRET_ID` (a secret's name or ARN) or as `<NAME>_PARAMETER`
//! (a SecureString's name). The values never pass through the environment or
//! the template, and never reach a log.

use crate::config::{self, ConfigError, Secret, SecretSource};
use std::collections::HashMap;
use std::sync::OnceLock;

/// Reads secrets from Secrets Manager and SSM. Each service's client is built
/// when a secret is first read from it: a function's secrets come from one of
/// the two (Secrets Manager, in the template), and building a client it never
/// calls costs a cold start about 0.1 ms (the SDK's endpoint rules).
#[derive(Clone, Debug)]
pub struct SecretStore {
    aws: aws_config::SdkConfig,
    secrets_manager: OnceLock<aws_sdk_secretsmanager::Client>,
    parameters: OnceLock<aws_sdk_ssm::Client>,
}

impl SecretStore {
    pub fn new(aws: &aws_config::SdkConfig) -> Self {
        SecretStore {
            aws: aws.clone(),
            secrets_manager: OnceLock::new(),
            parameters: OnceLock::new(),
        }
    }

    fn secrets_manager(&self) -> &aws_sdk_secretsmanager::Client {
        self.secrets_manager
            .get_or_init(|| aws_sdk_secretsmanager::Client::new(&self.aws))
    }

    fn parameters(&self) -> &aws_sdk_ssm::Client {
        self.parameters
            .get_or_init(|| aws_sdk_ssm::Client::new(&self.aws))
    }

    /// The string of Secrets Manager secret `id` (a name or an ARN).
    pub async fn secret(&self, id: &str) -> Result<Secret, ConfigError> {
        let out = self
            .secrets_manager()
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .map_err(|e| {
                ConfigError::setup(
                    format!("read secret {id} from Secrets Manager"),
                    crate::error_chain(&e),
                )
            })?;
        out.secret_string()
            .filter(|s| !s.is_empty())
            .map(Secret::new)
            .ok_or_else(|| {
                ConfigError::setup(format!("read secret {id}"), "it has no string value")
            })
    }

    /// The decrypted value of SSM parameter `name`.
    pub async fn parameter(&self, name: &str) -> Result<Secret, ConfigError> {
        let out = self
            .parameters()
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send()
            .await
            .map_err(|e| {
                ConfigError::setup(
                    format!("read parameter {name} from SSM"),
                    crate::error_chain(&e),
                )
            })?;
        out.parameter()
            .and_then(|p| p.value())
            .filter(|v| !v.is_empty())
            .map(Secret::new)
            .ok_or_else(|| ConfigError::setup(format!("read parameter {name}"), "it has no value"))
    }

    /// The secrets of `names` that come from Secrets Manager or SSM, fetched
    /// now; those set as values, or not set at all, are left to `config::secret`.
    pub async fn fetch(&self, names: &[&str]) -> Result<HashMap<String, Secret>, ConfigError> {
        self.fetch_in(names, |var| std::env::var(var).ok()).await
    }

    /// `fetch` with the variables read through `lookup`. The secrets are
    /// fetched at the same time, so a cold start waits for the slowest read,
    /// not for the sum of them; the first that fails fails the whole fetch.
    pub async fn fetch_in(
        &self,
        names: &[&str],
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<HashMap<String, Secret>, ConfigError> {
        let mut reads = Vec::new();
        for name in names {
            if let Some(read) = self.read(config::secret_source_in(name, &lookup)?) {
                reads.push(async move { read.await.map(|value| ((*name).to_owned(), value)) });
            }
        }
        let fetched = futures::future::try_join_all(reads).await?;
        for (name, _) in &fetched {
            tracing::info!(secret = %name, "secret loaded");
        }
        Ok(fetched.into_iter().collect())
    }

    /// The read of the secret `source` names, when Secrets Manager or SSM holds
    /// it. Boxed: the SDK's futures are deep types, and joining several of them
    /// inside every function's `main` future went over rustc's query depth when
    /// the binaries are built together.
    fn read(&self, source: Option<SecretSource>) -> Option<SecretRead<'_>> {
        match source {
            Some(SecretSource::SecretsManager(id)) => {
                Some(Box::pin(async move { self.secret(&id).await }))
            }
            Some(SecretSource::Parameter(name)) => {
                Some(Box::pin(async move { self.parameter(&name).await }))
            }
            Some(SecretSource::Value) | None => None,
        }
    }
}

/// One secret being read from Secrets Manager or SSM.
type SecretRead<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Secret, ConfigError>> + Send + 'a>>;

/// The secrets of a local stack (LocalStack or moto) under the names the
/// template's parameters default to, so `env.local.json` and a local deploy find
/// them: (variable, secret name).
pub const LOCAL_SECRET_NAMES: [(&str, &str); 5] = [
    ("JWT_SECRET", "ticketing/jwt-key"),
    ("TELEGRAM_BOT_TOKEN", "ticketing/telegram-bot-token"),
    ("DISCORD_WEBHOOK_URL", "ticketing/discord-webhook"),
    ("DATA_PLATFORM_API_KEY", "ticketing/data-platform-api-key"),
    (
        "DATA_PLATFORM_PSEUDONYM_KEY",
        "ticketing/data-platform-pseudonym-key",
    ),
];

impl SecretStore {
    /// Creates secret `id` with `value`, or gives an existing one that value:
    /// for local stacks only (safe to run twice).
    pub async fn put_secret(&self, id: &str, value: &Secret) -> Result<(), ConfigError> {
        if self.create_secret(id, value).await? {
            return Ok(());
        }
        self.secrets_manager()
            .put_secret_value()
            .secret_id(id)
            .secret_string(value.expose())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| ConfigError::setup(format!("update secret {id}"), crate::error_chain(&e)))
    }

    /// Creates secret `id` with `value` unless it exists: whether it was
    /// created (an existing one keeps its value). For local stacks only.
    pub async fn create_secret(&self, id: &str, value: &Secret) -> Result<bool, ConfigError> {
        let created = self
            .secrets_manager()
            .create_secret()
            .name(id)
            .secret_string(value.expose())
            .send()
            .await;
        match created {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_exists_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(ConfigError::setup(
                format!("create secret {id}"),
                crate::error_chain(&e),
            )),
        }
    }
}

/// Fetches the secrets of `names` and makes `config::secret` answer them: call
/// once in `main`, after loading the AWS configuration and before reading the
/// function's configuration. Boxed, so the SDK's deep future types stay out
/// of every main's future (whose layout otherwise goes over rustc's query
/// depth when the binaries are built together).
pub fn preload<'a>(
    aws: &'a aws_config::SdkConfig,
    names: &'a [&'a str],
) -> futures::future::BoxFuture<'a, Result<(), ConfigError>> {
    Box::pin(async move {
        let fetched = SecretStore::new(aws).fetch(names).await?;
        config::preload_secrets(fetched)
    })
}

/// `preload` for a function that talks to AWS only for its secrets: loads the
/// AWS configuration (and its clients) only when one of `names` comes from
/// Secrets Manager or SSM, so a local or secret-less start stays lean.
pub async fn preload_if_remote(names: &[&str]) -> Result<(), ConfigError> {
    let mut remote = false;
    for name in names {
        remote |= matches!(
            config::secret_source(name)?,
            Some(SecretSource::SecretsManager(_) | SecretSource::Parameter(_))
        );
    }
    if !remote {
        return Ok(());
    }
    let aws = crate::aws::config().await;
    preload(&aws, names).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An SDK configuration whose endpoint refuses connections: a read fails
    /// fast, which is all these tests need.
    fn unreachable_aws() -> aws_config::SdkConfig {
        aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:1")
            .build()
    }

    #[tokio::test]
    async fn a_service_client_is_built_only_when_a_secret_is_read_from_that_service() {
        let store = SecretStore::new(&unreachable_aws());
        let values = |var: &str| (var == "JWT_SECRET").then(|| "a value".to_owned());
        let fetched = store.fetch_in(&["JWT_SECRET"], values).await.unwrap();
        assert!(fetched.is_empty(), "a value is left to config::secret");
        assert!(store.secrets_manager.get().is_none());
        assert!(store.parameters.get().is_none());

        let from_ssm = |var: &str| (var == "JWT_SECRET_PARAMETER").then(|| "/jwt".to_owned());
        let read = store.fetch_in(&["JWT_SECRET"], from_ssm).await;
        assert!(read.is_err(), "nothing listens at the endpoint");
        assert!(store.parameters.get().is_some());
        assert!(store.secrets_manager.get().is_none());
    }
}
