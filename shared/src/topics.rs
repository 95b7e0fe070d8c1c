//! The settings the four topics need in production, and how a topic that
//! exists compares with them. `ops topics apply` creates or checks topics with
//! these; `ops provision` uses the one-broker local form.

use crate::config::ConfigError;
use chrono::Duration;

/// Three copies, one per availability zone: an MSK cluster across three AZs.
pub const DEFAULT_REPLICATION_FACTOR: i32 = 3;
/// With `acks=all`, a write needs two copies: one broker (one AZ) may be down.
pub const DEFAULT_MIN_INSYNC_REPLICAS: i32 = 2;
pub const DEFAULT_PARTITIONS: i32 = 3;

/// What a topic is created with, or checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopicSpec {
    pub partitions: i32,
    pub replication_factor: i32,
    pub min_insync_replicas: i32,
    /// How long records are kept: at most the notifier's idempotency window.
    pub retention: Duration,
}

impl TopicSpec {
    /// The production topic: three copies, two in sync, kept as long as the
    /// idempotency window remembers what was sent.
    pub fn production(idempotency_window: Duration) -> Self {
        TopicSpec {
            partitions: DEFAULT_PARTITIONS,
            replication_factor: DEFAULT_REPLICATION_FACTOR,
            min_insync_replicas: DEFAULT_MIN_INSYNC_REPLICAS,
            retention: idempotency_window,
        }
    }

    /// One broker (tansu, a laptop): one copy.
    pub fn single_broker(partitions: i32, idempotency_window: Duration) -> Self {
        TopicSpec {
            partitions,
            replication_factor: 1,
            min_insync_replicas: 1,
            retention: idempotency_window,
        }
    }

    /// Refuses settings that cannot work or that would message customers twice.
    pub fn check(&self, idempotency_window: Duration) -> Result<(), ConfigError> {
        if self.partitions < 1 {
            return Err(ConfigError::invalid(
                "--partitions",
                "a topic needs at least one partition",
            ));
        }
        if self.replication_factor < 1 {
            return Err(ConfigError::invalid(
                "--replication-factor",
                "a topic needs at least one copy",
            ));
        }
        if !(1..=self.replication_factor).contains(&self.min_insync_replicas) {
            return Err(ConfigError::invalid(
                "--min-insync-replicas",
                format!(
                    "{} is not between 1 and the replication factor {}: with acks=all the broker would refuse every write",
                    self.min_insync_replicas, self.replication_factor
                ),
            ));
        }
        if self.retention > idempotency_window {
            return Err(ConfigError::invalid(
                "--retention-hours",
                format!(
                    "{} h is longer than the notifier's idempotency window ({} h, IDEMPOTENCY_TTL_SECONDS): a consumer replaying the topic's start would message customers twice. Keep it within the window, or raise IDEMPOTENCY_TTL_SECONDS for the functions first",
                    self.retention.num_hours(),
                    idempotency_window.num_hours()
                ),
            ));
        }
        Ok(())
    }

    /// The topic-level settings it is created with.
    pub fn configs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("min.insync.replicas", self.min_insync_replicas.to_string()),
            (
                "retention.ms",
                self.retention.num_milliseconds().to_string(),
            ),
        ]
    }

    /// How `existing` differs from this spec, each difference a sentence.
    pub fn differences(&self, existing: &ExistingTopic) -> Vec<String> {
        let mut found = Vec::new();
        let mut compare = |what: &str, wanted: String, actual: Option<String>| match actual {
            Some(actual) if actual == wanted => {}
            Some(actual) => found.push(format!("{what} is {actual}, not {wanted}")),
            None => found.push(format!(
                "{what} is unknown (the broker did not say), not {wanted}"
            )),
        };
        compare(
            "partitions",
            self.partitions.to_string(),
            Some(existing.partitions.to_string()),
        );
        compare(
            "replication factor",
            self.replication_factor.to_string(),
            Some(existing.replication_factor.to_string()),
        );
        for (name, wanted) in self.configs() {
            compare(name, wanted, existing.config(name).map(str::to_owned));
        }
        found
    }
}

/// A topic as the cluster describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExistingTopic {
    pub partitions: i32,
    /// The fewest copies any of its partitions has.
    pub replication_factor: i32,
    pub configs: Vec<(String, String)>,
}

impl ExistingTopic {
    pub fn config(&self, name: &str) -> Option<&str> {
        self.configs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What applying a spec did to one topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopicOutcome {
    Created,
    Matches,
    /// It exists with other settings: reported, never changed silently.
    Differs(Vec<String>),
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEEK: Duration = Duration::days(7);

    fn existing(partitions: i32, copies: i32, insync: &str, retention_ms: &str) -> ExistingTopic {
        ExistingTopic {
            partitions,
            replication_factor: copies,
            configs: vec![
                ("min.insync.replicas".into(), insync.into()),
                ("retention.ms".into(), retention_ms.into()),
            ],
        }
    }

    #[test]
    fn production_topics_have_three_copies_two_in_sync_and_the_windows_retention() {
        let spec = TopicSpec::production(WEEK);
        assert_eq!((spec.replication_factor, spec.min_insync_replicas), (3, 2));
        assert_eq!(spec.check(WEEK), Ok(()));
        assert!(
            spec.differences(&existing(3, 3, "2", "604800000"))
                .is_empty()
        );
    }

    #[test]
    fn a_retention_longer_than_the_idempotency_window_is_refused() {
        let spec = TopicSpec {
            retention: Duration::days(8),
            ..TopicSpec::production(WEEK)
        };
        let refused = spec.check(WEEK).unwrap_err().to_string();
        assert!(
            refused.contains("--retention-hours") && refused.contains("twice"),
            "{refused}"
        );
    }

    #[test]
    fn more_in_sync_replicas_than_copies_is_refused() {
        let spec = TopicSpec {
            replication_factor: 1,
            ..TopicSpec::production(WEEK)
        };
        let refused = spec.check(WEEK).unwrap_err().to_string();
        assert!(refused.contains("--min-insync-replicas"), "{refused}");
    }

    #[test]
    fn every_setting_that_differs_is_named() {
        let spec = TopicSpec::production(WEEK);
        let found = spec.differences(&existing(1, 1, "1", "604800000"));
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(
            found[1].contains("replication factor is 1, not 3"),
            "{found:?}"
        );
        let unknown = spec.differences(&ExistingTopic {
            partitions: 3,
            replication_factor: 3,
            configs: Vec::new(),
        });
        assert!(unknown.iter().all(|d| d.contains("unknown")), "{unknown:?}");
    }
}
