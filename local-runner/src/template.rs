//! The settings the runner plays, read from template.yaml (embedded when the
//! runner is built, so a changed template rebuilds it): what the local sources
//! do cannot drift from what AWS is told to do.

use crate::Error;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

/// The deployed template, as built into the runner.
pub const TEMPLATE: &str = include_str!("../../template.yaml");

/// The relay's function and the name of its stream event in the template.
pub const RELAY_FUNCTION: &str = "OutboxRelayFunction";
pub const RELAY_STREAM_EVENT: &str = "Outbox";

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Template {
    resources: HashMap<String, Resource>,
    #[serde(default)]
    parameters: HashMap<String, Parameter>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Parameter {
    default: Option<serde_norway::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Resource {
    #[serde(default)]
    properties: serde_norway::Value,
}

impl Template {
    /// `text` parsed; a template that does not parse is `invalid`.
    fn parse(text: &str, invalid: &impl Fn(String) -> Error) -> Result<Template, Error> {
        serde_norway::from_str(text).map_err(|e| invalid(e.to_string()))
    }
}

/// The error for a part of the template at `place`, given its reason.
fn invalid_at(place: String) -> impl Fn(String) -> Error {
    move |reason| Error::Template {
        place: place.clone(),
        reason,
    }
}

/// A DynamoDB stream event of a function, with Lambda's defaults for what the
/// template leaves out.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawStreamMapping {
    starting_position: String,
    #[serde(default = "default_batch_size")]
    batch_size: u32,
    #[serde(default)]
    maximum_batching_window_in_seconds: u64,
    #[serde(default = "unbounded")]
    maximum_retry_attempts: i64,
    #[serde(default = "unbounded")]
    maximum_record_age_in_seconds: i64,
    #[serde(default)]
    bisect_batch_on_function_error: bool,
    #[serde(default = "one")]
    parallelization_factor: u32,
    #[serde(default)]
    function_response_types: Vec<String>,
    #[serde(default)]
    destination_config: Option<serde_norway::Value>,
    #[serde(default)]
    filter_criteria: Option<FilterCriteria>,
}

fn default_batch_size() -> u32 {
    100
}
fn unbounded() -> i64 {
    -1
}
fn one() -> u32 {
    1
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct FilterCriteria {
    filters: Vec<Filter>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Filter {
    pattern: String,
}

/// Where a stream source starts reading a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartingPosition {
    TrimHorizon,
    Latest,
}

/// A stream event source mapping as Lambda runs it.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamMapping {
    pub starting_position: StartingPosition,
    pub batch_size: u32,
    /// How long records are gathered before the function is invoked with
    /// fewer than `batch_size`.
    pub batching_window: Duration,
    /// Retries of a failed batch before it is discarded; `None`: until the
    /// record leaves the stream.
    pub retry_attempts: Option<u32>,
    /// How old a record may be when it is (re)delivered; `None`: any age.
    pub record_age: Option<Duration>,
    /// A function error splits the batch in two (not counted as a retry).
    pub bisect_on_error: bool,
    /// The function's `batchItemFailures` answer is honoured.
    pub report_item_failures: bool,
    /// Discarded batches are described on the on-failure destination.
    pub on_failure: bool,
    /// The event filter: a record matching none of the patterns is dropped
    /// before any invocation. Empty: every record is delivered.
    pub filters: Vec<EventPattern>,
}

impl StreamMapping {
    /// The relay's outbox stream mapping, as the template declares it.
    pub fn relay() -> Result<Self, Error> {
        Self::of(TEMPLATE, RELAY_FUNCTION, RELAY_STREAM_EVENT)
    }

    /// The stream event `event` of `function` in `template`.
    pub fn of(template: &str, function: &str, event: &str) -> Result<Self, Error> {
        let invalid = invalid_at(format!("{function}.Events.{event}"));
        let template = Template::parse(template, &invalid)?;
        let properties = template
            .resources
            .get(function)
            .and_then(|r| r.properties.get("Events")?.get(event)?.get("Properties"))
            .ok_or_else(|| invalid("no such event".into()))?;
        let raw: RawStreamMapping = serde_norway::from_value(properties.clone())
            .map_err(|e| invalid(format!("not a stream mapping: {e}")))?;
        raw.played().map_err(&invalid)
    }
}

/// The names of the environment variables `template` gives `function`
/// itself (its `Environment.Variables`, not the Globals'), whatever their
/// values: conditional ones (`!If`) are named too.
pub fn variables_of(template: &str, function: &str) -> Result<Vec<String>, Error> {
    let invalid = invalid_at(format!("{function}.Environment.Variables"));
    let template = Template::parse(template, &invalid)?;
    let variables = template
        .resources
        .get(function)
        .ok_or_else(|| invalid("no such resource".into()))?
        .properties
        .get("Environment")
        .and_then(|e| e.get("Variables"))
        .and_then(|v| v.as_mapping());
    Ok(variables
        .into_iter()
        .flat_map(|m| m.keys())
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect())
}

impl RawStreamMapping {
    /// The mapping the local source plays, or why it cannot play it.
    fn played(self) -> Result<StreamMapping, String> {
        if self.parallelization_factor != 1 {
            return Err(format!(
                "ParallelizationFactor {} is not played locally (only 1: one batch per shard at a time)",
                self.parallelization_factor
            ));
        }
        let starting_position = match self.starting_position.as_str() {
            "TRIM_HORIZON" => StartingPosition::TrimHorizon,
            "LATEST" => StartingPosition::Latest,
            other => return Err(format!("StartingPosition {other} is not a stream position")),
        };
        let filters = self
            .filter_criteria
            .map(|c| c.filters)
            .unwrap_or_default()
            .iter()
            .map(|f| EventPattern::parse(&f.pattern))
            .collect::<Result<_, _>>()?;
        Ok(StreamMapping {
            starting_position,
            batch_size: self.batch_size,
            batching_window: Duration::from_secs(self.maximum_batching_window_in_seconds),
            retry_attempts: u32::try_from(self.maximum_retry_attempts).ok(),
            record_age: u64::try_from(self.maximum_record_age_in_seconds)
                .ok()
                .map(Duration::from_secs),
            bisect_on_error: self.bisect_batch_on_function_error,
            report_item_failures: self
                .function_response_types
                .iter()
                .any(|t| t == "ReportBatchItemFailures"),
            on_failure: self
                .destination_config
                .as_ref()
                .is_some_and(|d| d.get("OnFailure").is_some()),
            filters,
        })
    }
}

/// The notifier's Kafka event source mappings (self-managed: the local broker
/// is one), one per topic.
pub const NOTIFIER_KAFKA_MAPPINGS: [&str; 2] = [
    "NotifierSelfManagedPaymentCompleted",
    "NotifierSelfManagedSeatHoldExpired",
];
/// The data-platform feed's, one per topic.
pub const FEED_KAFKA_MAPPINGS: [&str; 2] = [
    "FeedSelfManagedPaymentCompleted",
    "FeedSelfManagedSeatHoldExpired",
];

/// A Kafka event source mapping as Lambda runs it, with the template's
/// parameters at their defaults (what `sam deploy` gives when none is set).
#[derive(Clone, Debug, PartialEq)]
pub struct KafkaMapping {
    pub starting_position: StartingPosition,
    pub batch_size: usize,
    /// How long records are gathered before the function is invoked with
    /// fewer than `batch_size`.
    pub batching_window: Duration,
}

impl KafkaMapping {
    /// The notifier's mappings, as the template declares them.
    pub fn notifier() -> Result<Self, Error> {
        Self::of_all(TEMPLATE, &NOTIFIER_KAFKA_MAPPINGS)
    }

    /// The data-platform feed's mappings, as the template declares them.
    pub fn feed() -> Result<Self, Error> {
        Self::of_all(TEMPLATE, &FEED_KAFKA_MAPPINGS)
    }

    /// The settings every one of `resources` shares: the local source plays
    /// one consumer for a function's topics, so they must agree.
    pub fn of_all(template: &str, resources: &[&str]) -> Result<Self, Error> {
        let mut mappings = resources.iter().map(|r| Self::of(template, r));
        let first = mappings.next().unwrap_or_else(|| {
            Err(Error::Template {
                place: "Resources".into(),
                reason: "no Kafka mapping named".into(),
            })
        })?;
        for (resource, mapping) in resources.iter().skip(1).zip(mappings) {
            if mapping? != first {
                return Err(Error::Template {
                    place: (*resource).to_owned(),
                    reason: format!(
                        "differs from {}: the local source plays one mapping for both topics",
                        resources[0]
                    ),
                });
            }
        }
        Ok(first)
    }

    /// The Kafka event source mapping resource `resource` of `template`.
    pub fn of(template: &str, resource: &str) -> Result<Self, Error> {
        let invalid = invalid_at(resource.to_owned());
        let template = Template::parse(template, &invalid)?;
        let properties = &template
            .resources
            .get(resource)
            .ok_or_else(|| invalid("no such resource".into()))?
            .properties;
        let setting = |name: &str| -> Result<Option<serde_norway::Value>, String> {
            properties
                .get(name)
                .map(|v| template.resolved(v))
                .transpose()
        };
        let starting_position = match setting("StartingPosition").map_err(&invalid)? {
            Some(v) if v.as_str() == Some("LATEST") => StartingPosition::Latest,
            Some(v) if v.as_str() == Some("TRIM_HORIZON") => StartingPosition::TrimHorizon,
            other => return Err(invalid(format!("StartingPosition {other:?} is not played"))),
        };
        let number = |name: &str, default: u64| -> Result<u64, Error> {
            match setting(name).map_err(&invalid)? {
                None => Ok(default),
                Some(v) => v
                    .as_u64()
                    .ok_or_else(|| invalid(format!("{name} {v:?} is not a whole number"))),
            }
        };
        Ok(KafkaMapping {
            starting_position,
            // Lambda's defaults for a Kafka source: 100 records, no window.
            batch_size: number("BatchSize", 100)? as usize,
            batching_window: Duration::from_secs(number("MaximumBatchingWindowInSeconds", 0)?),
        })
    }
}

impl Template {
    /// `value` with a `!Ref` to a parameter replaced by its default.
    fn resolved(&self, value: &serde_norway::Value) -> Result<serde_norway::Value, String> {
        let serde_norway::Value::Tagged(tagged) = value else {
            return Ok(value.clone());
        };
        if tagged.tag != "Ref" {
            return Err(format!("{} is not played locally", tagged.tag));
        }
        let name = tagged.value.as_str().unwrap_or_default();
        self.parameters
            .get(name)
            .and_then(|p| p.default.clone())
            .ok_or_else(|| format!("!Ref {name} names no parameter with a default"))
    }
}

/// A Lambda event filter pattern of exact values: `{"eventName": ["INSERT"]}`,
/// nested objects for nested fields. Other rules (prefix, numeric, exists) are
/// refused when the template is read rather than played wrongly.
#[derive(Clone, Debug, PartialEq)]
pub struct EventPattern(Value);

impl EventPattern {
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let value: Value = serde_json::from_str(pattern)
            .map_err(|e| format!("filter pattern {pattern} is not JSON: {e}"))?;
        Self::check(&value).map_err(|reason| format!("filter pattern {pattern}: {reason}"))?;
        Ok(EventPattern(value))
    }

    fn check(pattern: &Value) -> Result<(), String> {
        let Value::Object(fields) = pattern else {
            return Err("a pattern is an object of fields".into());
        };
        fields.values().try_for_each(|rule| match rule {
            Value::Object(_) => Self::check(rule),
            Value::Array(values) if values.iter().all(|v| !v.is_object() && !v.is_array()) => {
                Ok(())
            }
            _ => Err("only lists of exact values are played locally".into()),
        })
    }

    /// Whether `record` (the record's event JSON) matches the pattern.
    pub fn matches(&self, record: &Value) -> bool {
        fn matches(pattern: &Value, record: &Value) -> bool {
            match pattern {
                Value::Object(fields) => fields
                    .iter()
                    .all(|(name, rule)| record.get(name).is_some_and(|v| matches(rule, v))),
                Value::Array(values) => values.contains(record),
                _ => false,
            }
        }
        matches(&self.0, record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_functions_own_variables_are_read_conditional_ones_included() {
        let feed = variables_of(TEMPLATE, "DataPlatformFeedFunction").unwrap();
        for name in [
            "DATA_PLATFORM_URL",
            "DATA_PLATFORM_API_KEY_SECRET_ID",
            "KAFKA_SASL_CREDENTIALS_SECRET_ID",
        ] {
            assert!(feed.iter().any(|v| v == name), "{name} in {feed:?}");
        }
        let notifier = variables_of(TEMPLATE, "NotifierFunction").unwrap();
        assert!(notifier.iter().any(|v| v == "TELEGRAM_BOT_TOKEN_SECRET_ID"));
        assert!(
            !notifier.iter().any(|v| v == "DATA_PLATFORM_URL"),
            "{notifier:?}"
        );
        // The Globals' are not the function's own.
        assert!(!feed.iter().any(|v| v == "TICKETING_TABLE"));
        let e = variables_of(TEMPLATE, "NoSuchFunction").unwrap_err();
        assert!(e.to_string().contains("no such resource"), "{e}");
    }

    #[test]
    fn the_kafka_mappings_are_read_from_the_template_with_its_parameters_defaults() {
        let notifier = KafkaMapping::notifier().unwrap();
        assert_eq!(notifier.starting_position, StartingPosition::TrimHorizon);
        assert_eq!(notifier.batch_size, 20, "NotifierBatchSize");
        assert_eq!(notifier.batching_window, Duration::from_secs(1));
        let feed = KafkaMapping::feed().unwrap();
        assert_eq!(feed.batch_size, 100, "FeedBatchSize");
        assert_eq!(feed.batching_window, Duration::from_secs(1));
    }

    const KAFKA_TEMPLATE: &str = r#"
Parameters:
  Size:
    Type: Number
    Default: 7
Resources:
  A:
    Type: AWS::Lambda::EventSourceMapping
    Properties:
      StartingPosition: LATEST
      BatchSize: !Ref Size
  B:
    Type: AWS::Lambda::EventSourceMapping
    Properties:
      StartingPosition: LATEST
      BatchSize: 8
"#;

    #[test]
    fn a_kafka_mapping_resolves_refs_and_mappings_that_differ_are_refused() {
        let a = KafkaMapping::of(KAFKA_TEMPLATE, "A").unwrap();
        assert_eq!(a.starting_position, StartingPosition::Latest);
        assert_eq!(a.batch_size, 7);
        assert_eq!(a.batching_window, Duration::ZERO, "Lambda's default");
        let error = KafkaMapping::of_all(KAFKA_TEMPLATE, &["A", "B"])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("B") && error.contains("differs from A"),
            "{error}"
        );
    }

    #[test]
    fn the_relay_mapping_is_read_from_the_template_as_lambda_plays_it() {
        let mapping = StreamMapping::relay().unwrap();
        assert_eq!(mapping.starting_position, StartingPosition::TrimHorizon);
        assert_eq!(mapping.batch_size, 100);
        assert_eq!(mapping.batching_window, Duration::from_secs(1));
        // Unbounded: a broker outage is retried until the record leaves the stream.
        assert_eq!(mapping.retry_attempts, None);
        assert_eq!(mapping.record_age, None);
        assert!(mapping.bisect_on_error);
        assert!(mapping.report_item_failures);
        assert!(mapping.on_failure);
        assert_eq!(mapping.filters.len(), 1);
        assert!(mapping.filters[0].matches(&json!({"eventName": "INSERT"})));
        assert!(!mapping.filters[0].matches(&json!({"eventName": "REMOVE"})));
    }

    const TEMPLATE_WITH_LIMITS: &str = r#"
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Events:
        S:
          Type: DynamoDB
          Properties:
            Stream: !GetAtt T.StreamArn
            StartingPosition: LATEST
            MaximumRetryAttempts: 3
            MaximumRecordAgeInSeconds: 60
"#;

    #[test]
    fn limits_and_lambdas_defaults_are_read_as_lambda_reads_them() {
        let mapping = StreamMapping::of(TEMPLATE_WITH_LIMITS, "Fn", "S").unwrap();
        assert_eq!(mapping.starting_position, StartingPosition::Latest);
        assert_eq!(mapping.retry_attempts, Some(3));
        assert_eq!(mapping.record_age, Some(Duration::from_secs(60)));
        // Lambda's defaults for what the template leaves out.
        assert_eq!(mapping.batch_size, 100);
        assert_eq!(mapping.batching_window, Duration::ZERO);
        assert!(!mapping.bisect_on_error && !mapping.report_item_failures && !mapping.on_failure);
        assert!(mapping.filters.is_empty());
    }

    #[test]
    fn a_setting_the_runner_cannot_play_is_refused_with_its_place() {
        let parallel = TEMPLATE_WITH_LIMITS.replace(
            "StartingPosition: LATEST",
            "StartingPosition: LATEST\n            ParallelizationFactor: 4",
        );
        let error = StreamMapping::of(&parallel, "Fn", "S")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("Fn.Events.S") && error.contains("ParallelizationFactor 4"),
            "{error}"
        );
        let missing = StreamMapping::of(TEMPLATE_WITH_LIMITS, "Fn", "Other").unwrap_err();
        assert!(missing.to_string().contains("no such event"), "{missing}");
    }

    #[test]
    fn filter_patterns_match_exact_values_and_nested_fields_only() {
        let nested =
            EventPattern::parse(r#"{"dynamodb": {"Keys": {"pk": {"S": ["a"]}}}}"#).unwrap();
        assert!(nested.matches(&json!({"dynamodb": {"Keys": {"pk": {"S": "a"}}}})));
        assert!(!nested.matches(&json!({"dynamodb": {"Keys": {"pk": {"S": "b"}}}})));
        assert!(!nested.matches(&json!({"eventName": "INSERT"})));
        let prefix = EventPattern::parse(r#"{"eventName": [{"prefix": "IN"}]}"#).unwrap_err();
        assert!(prefix.contains("exact values"), "{prefix}");
    }
}
