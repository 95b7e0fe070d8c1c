//! Reading configuration from the environment with errors that name the variable.

use std::str::FromStr;

/// A setting that cannot be used: each names the variable (or the thing to set
/// up) a person has to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A variable the function cannot run without is unset or blank.
    #[error("{var} must be set{alternatives}")]
    Missing {
        var: String,
        /// Other ways to give the value, as `", or X (...)"`; empty when none.
        alternatives: String,
    },
    /// A variable (or the value a secret holds) is set but cannot be used.
    #[error("{var} is not valid: {reason}")]
    Invalid { var: String, reason: String },
    /// A client or resource cannot be set up from the settings.
    #[error("cannot {action}: {reason}")]
    Setup { action: String, reason: String },
}

impl ConfigError {
    pub fn missing(var: impl Into<String>) -> Self {
        ConfigError::Missing {
            var: var.into(),
            alternatives: String::new(),
        }
    }

    pub fn invalid(var: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            var: var.into(),
            reason: reason.into(),
        }
    }

    pub fn setup(action: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        ConfigError::Setup {
            action: action.into(),
            reason: reason.to_string(),
        }
    }
}

/// A secret value: its `Debug` never shows it, so configs can derive `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Secrets read from Secrets Manager or SSM at cold start (`shared::secrets`),
/// by the name of the variable they stand for.
static PRELOADED: std::sync::OnceLock<std::collections::HashMap<String, Secret>> =
    std::sync::OnceLock::new();

/// Makes `secret(name)` answer these values: called once, at cold start, before
/// the configuration is read. A second call is refused.
pub fn preload_secrets(
    secrets: std::collections::HashMap<String, Secret>,
) -> Result<(), ConfigError> {
    PRELOADED
        .set(secrets)
        .map_err(|_| ConfigError::setup("preload the secrets", "they were already loaded"))
}

/// A required secret: the value preloaded from Secrets Manager or SSM at cold
/// start (AWS), else the variable `name` itself (local runs).
pub fn secret(name: &str) -> Result<Secret, ConfigError> {
    if let Some(secret) = PRELOADED.get().and_then(|all| all.get(name)) {
        return Ok(secret.clone());
    }
    required(name)
        .map(Secret)
        .map_err(|_| ConfigError::Missing {
            var: name.to_owned(),
            alternatives: format!(
                ", or {name}_SECRET_ID (a Secrets Manager secret) or \
                 {name}_PARAMETER (an SSM SecureString)"
            ),
        })
}

/// Where the secret that variable `name` stands for comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// `NAME` holds the value (local runs).
    Value,
    /// `NAME_SECRET_ID` names a Secrets Manager secret (name or ARN).
    SecretsManager(String),
    /// `NAME_PARAMETER` names an SSM Parameter Store SecureString.
    Parameter(String),
}

/// The source of secret `name`, from the variables set for it; `None` when none
/// is. Two sources at once are refused: which one wins would be a guess.
pub fn secret_source(name: &str) -> Result<Option<SecretSource>, ConfigError> {
    secret_source_in(name, |var| std::env::var(var).ok())
}

/// `secret_source` with the variables read through `lookup`.
pub fn secret_source_in(
    name: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<SecretSource>, ConfigError> {
    let set = |var: String| {
        lookup(&var)
            .filter(|v| !v.trim().is_empty())
            .map(|v| (var, v.trim().to_owned()))
    };
    let found: Vec<(String, SecretSource)> = [
        set(name.to_owned()).map(|(var, _)| (var, SecretSource::Value)),
        set(format!("{name}_SECRET_ID")).map(|(var, id)| (var, SecretSource::SecretsManager(id))),
        set(format!("{name}_PARAMETER")).map(|(var, id)| (var, SecretSource::Parameter(id))),
    ]
    .into_iter()
    .flatten()
    .collect();
    match found.as_slice() {
        [] => Ok(None),
        [(_, source)] => Ok(Some(source.clone())),
        _ => Err(ConfigError::invalid(
            name,
            format!(
                "set one of {} for it, not several",
                found
                    .iter()
                    .map(|(var, _)| var.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// Where a function's variables come from: the process environment (deployed,
/// and the local runner), or pairs given by a test. Each function's `Settings`
/// read their variables through one of these, so a test or the local runner
/// builds a function's settings exactly as the deployed function does.
#[derive(Clone, Debug)]
pub struct Vars {
    /// `None`: the process environment.
    given: Option<std::collections::HashMap<String, String>>,
}

impl Vars {
    pub fn process() -> Self {
        Vars { given: None }
    }

    /// Only these variables; every other one is unset.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Vars {
            given: Some(
                pairs
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            ),
        }
    }

    /// No variable set: every setting at its default.
    pub fn none() -> Self {
        Self::from_pairs([])
    }

    /// The variable, trimmed; `None` when unset or blank.
    pub fn optional(&self, name: &str) -> Option<String> {
        let raw = match &self.given {
            None => std::env::var(name).ok(),
            Some(given) => given.get(name).cloned(),
        };
        raw.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    pub fn or_default(&self, name: &str, default: &str) -> String {
        self.optional(name).unwrap_or_else(|| default.to_owned())
    }

    /// The variable parsed as a number (or anything `FromStr`), or `default`.
    pub fn parsed<T: FromStr>(&self, name: &str, default: T) -> Result<T, ConfigError> {
        match self.optional(name) {
            Some(v) => v
                .parse()
                .map_err(|_| ConfigError::invalid(name, format!("{v:?} is not a valid value"))),
            None => Ok(default),
        }
    }

    /// The variable as whole seconds, or `default`.
    pub fn seconds(
        &self,
        name: &str,
        default: chrono::Duration,
    ) -> Result<chrono::Duration, ConfigError> {
        Ok(chrono::Duration::seconds(
            self.parsed(name, default.num_seconds())?,
        ))
    }

    /// The variable as whole seconds above zero, or `default`.
    pub fn positive_seconds(
        &self,
        name: &str,
        default: chrono::Duration,
    ) -> Result<chrono::Duration, ConfigError> {
        let seconds = self.seconds(name, default)?;
        if seconds <= chrono::Duration::zero() {
            return Err(ConfigError::invalid(
                name,
                format!("{} s; it must be at least 1 s", seconds.num_seconds()),
            ));
        }
        Ok(seconds)
    }
}

/// A required variable.
pub fn required(name: &str) -> Result<String, ConfigError> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(ConfigError::missing(name)),
    }
}

/// An optional variable of the process: `None` when unset or blank.
pub fn optional(name: &str) -> Option<String> {
    Vars::process().optional(name)
}

/// An optional variable of the process, with a default.
pub fn or_default(name: &str, default: &str) -> String {
    Vars::process().or_default(name, default)
}

/// An optional variable of the process parsed as a number (or anything
/// `FromStr`), with a default.
pub fn parsed<T: FromStr>(name: &str, default: T) -> Result<T, ConfigError> {
    Vars::process().parsed(name, default)
}

/// The names of the tables, shared by every function that touches them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableNames {
    /// Users, concerts, seats, reservations, payments, history, queue tokens.
    pub ticketing: String,
    /// Outbox items; its stream feeds the relay.
    pub outbox: String,
    /// Idempotency records of the payment API and the notifier.
    pub idempotency: String,
    /// The failed-message ledger: one row per event that failed to notify.
    pub failed_messages: String,
}

impl TableNames {
    pub fn from_env() -> Self {
        TableNames {
            ticketing: or_default("TICKETING_TABLE", "ticketing"),
            outbox: or_default("OUTBOX_TABLE", "ticketing-outbox"),
            idempotency: or_default("IDEMPOTENCY_TABLE", "ticketing-idempotency"),
            failed_messages: or_default("FAILED_MESSAGES_TABLE", "ticketing-failed-messages"),
        }
    }

    /// Unique names for one test or one demo run, so runs never collide.
    pub fn with_prefix(prefix: &str) -> Self {
        TableNames {
            ticketing: format!("{prefix}-ticketing"),
            outbox: format!("{prefix}-outbox"),
            idempotency: format!("{prefix}-idempotency"),
            failed_messages: format!("{prefix}-failed-messages"),
        }
    }
}

/// The topic names, configurable; these are the defaults of ARCHITECTURE.md.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicNames {
    pub payment_completed: String,
    /// Dead letters waiting to be retried by dlq-retry.
    pub payment_completed_dlq: String,
    /// Dead letters that failed for good: kept for operators.
    pub payment_completed_failed: String,
    /// Released seat holds.
    pub seat_hold_expired: String,
}

/// The default names, which a deployment may change.
impl Default for TopicNames {
    fn default() -> Self {
        TopicNames {
            payment_completed: "payment.completed".into(),
            payment_completed_dlq: "payment.completed.dlq".into(),
            payment_completed_failed: "payment.completed.failed".into(),
            seat_hold_expired: "seat.hold-expired".into(),
        }
    }
}

impl TopicNames {
    pub fn from_env() -> Self {
        let default = TopicNames::default();
        TopicNames {
            payment_completed: or_default("TOPIC_PAYMENT_COMPLETED", &default.payment_completed),
            payment_completed_dlq: or_default(
                "TOPIC_PAYMENT_COMPLETED_DLQ",
                &default.payment_completed_dlq,
            ),
            payment_completed_failed: or_default(
                "TOPIC_PAYMENT_COMPLETED_FAILED",
                &default.payment_completed_failed,
            ),
            seat_hold_expired: or_default("TOPIC_SEAT_HOLD_EXPIRED", &default.seat_hold_expired),
        }
    }

    pub fn with_prefix(prefix: &str) -> Self {
        TopicNames {
            payment_completed: format!("{prefix}.payment.completed"),
            payment_completed_dlq: format!("{prefix}.payment.completed.dlq"),
            payment_completed_failed: format!("{prefix}.payment.completed.failed"),
            seat_hold_expired: format!("{prefix}.seat.hold-expired"),
        }
    }

    pub fn all(&self) -> Vec<&str> {
        vec![
            self.payment_completed.as_str(),
            self.payment_completed_dlq.as_str(),
            self.payment_completed_failed.as_str(),
            self.seat_hold_expired.as_str(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_shows_in_debug_output() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(s.expose(), "hunter2");
    }

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn a_secret_comes_from_its_value_its_secret_id_or_its_parameter() {
        assert_eq!(
            secret_source_in("JWT_SECRET", env(&[("JWT_SECRET", "local")])).unwrap(),
            Some(SecretSource::Value)
        );
        assert_eq!(
            secret_source_in(
                "JWT_SECRET",
                env(&[("JWT_SECRET_SECRET_ID", " ticketing/jwt ")])
            )
            .unwrap(),
            Some(SecretSource::SecretsManager("ticketing/jwt".into()))
        );
        assert_eq!(
            secret_source_in("JWT_SECRET", env(&[("JWT_SECRET_PARAMETER", "/t/jwt")])).unwrap(),
            Some(SecretSource::Parameter("/t/jwt".into()))
        );
        assert_eq!(
            secret_source_in("JWT_SECRET", env(&[("JWT_SECRET", " ")])).unwrap(),
            None
        );
    }

    #[test]
    fn a_duration_that_must_be_positive_refuses_zero_naming_the_variable() {
        let vars = Vars::from_pairs([("HOLD_SECONDS", "0")]);
        let error = vars
            .positive_seconds("HOLD_SECONDS", chrono::Duration::minutes(5))
            .unwrap_err();
        assert!(matches!(&error, ConfigError::Invalid { var, .. } if var == "HOLD_SECONDS"));
        assert_eq!(
            Vars::none()
                .positive_seconds("HOLD_SECONDS", chrono::Duration::minutes(5))
                .unwrap(),
            chrono::Duration::minutes(5)
        );
    }

    #[test]
    fn two_sources_for_one_secret_are_refused_naming_both() {
        let error = secret_source_in(
            "TELEGRAM_BOT_TOKEN",
            env(&[
                ("TELEGRAM_BOT_TOKEN", "x"),
                ("TELEGRAM_BOT_TOKEN_PARAMETER", "/t/bot"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("TELEGRAM_BOT_TOKEN, TELEGRAM_BOT_TOKEN_PARAMETER"),
            "{error}"
        );
    }
}
