//! `ops topics apply`: the four topics with production settings; `ops topics
//! read`: a topic's records, by hand; and the check that keeps `ops provision`
//! (one-broker topics, local tables and secrets) off anything that is not a
//! local stack.

use crate::Error;
use clap::Subcommand;
use shared::config::{TopicNames, Vars};
use shared::kafka::{KafkaSettings, ScanBounds, apply_topics, scan_topics};
use shared::kafka_event::DecodedRecord;
use shared::topics::{
    DEFAULT_MIN_INSYNC_REPLICAS, DEFAULT_PARTITIONS, DEFAULT_REPLICATION_FACTOR, TopicOutcome,
    TopicSpec,
};

#[derive(Subcommand)]
pub enum TopicsCommand {
    /// Create the four topics (names from the *_TOPIC variables), or check the
    /// ones that exist: exits 1 naming every setting that differs.
    Apply {
        /// Copies of each partition: 3 for a three-AZ MSK cluster, 1 for one local broker.
        #[arg(long, default_value_t = DEFAULT_REPLICATION_FACTOR)]
        replication_factor: i32,
        /// Copies an acks=all write needs: at most the replication factor.
        #[arg(long, default_value_t = DEFAULT_MIN_INSYNC_REPLICAS)]
        min_insync_replicas: i32,
        #[arg(long, default_value_t = DEFAULT_PARTITIONS)]
        partitions: i32,
        /// How long records are kept; default and maximum: the notifier's
        /// idempotency window (IDEMPOTENCY_TTL_SECONDS, 7 days).
        #[arg(long)]
        retention_hours: Option<i64>,
    },
    /// Print a topic's records as JSON lines (partition, offset, key, headers,
    /// the value), from the oldest kept up to the end when the read began.
    Read {
        /// A topic's name, e.g. payment.completed.
        topic: String,
        /// Only the records with this key (a reservation id).
        #[arg(long)]
        key: Option<String>,
        /// The most records read on each partition.
        #[arg(long, default_value_t = 1_000)]
        limit: i64,
    },
}

pub async fn run(command: TopicsCommand) -> Result<(), Error> {
    match command {
        TopicsCommand::Apply {
            replication_factor,
            min_insync_replicas,
            partitions,
            retention_hours,
        } => {
            let spec = TopicSpec {
                partitions,
                replication_factor,
                min_insync_replicas,
                retention: chrono::Duration::zero(),
            };
            apply(spec, retention_hours).await
        }
        TopicsCommand::Read { topic, key, limit } => read(&topic, key.as_deref(), limit).await,
    }
}

/// Prints the records of `topic` (with `key`, if given) as JSON lines.
async fn read(topic: &str, key: Option<&str>, limit: i64) -> Result<(), Error> {
    let bounds = ScanBounds {
        since: None,
        per_partition: limit,
    };
    let keep =
        |record: &DecodedRecord| key.is_none_or(|k| record.key.as_deref() == Some(k.as_bytes()));
    let scanned = scan_topics(&KafkaSettings::from_env()?, &[topic], bounds, keep).await?;
    for record in &scanned.records {
        println!("{}", record_json(record));
    }
    for partition in &scanned.cut_short {
        eprintln!("{partition}: stopped at --limit {limit} before its end");
    }
    Ok(())
}

/// A record as a JSON object; its value as JSON when it is, else as text.
fn record_json(record: &DecodedRecord) -> serde_json::Value {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let headers: serde_json::Map<String, serde_json::Value> = record
        .headers
        .iter()
        .map(|(name, value)| (name.clone(), text(value).into()))
        .collect();
    let value = record
        .value
        .as_deref()
        .map(|v| serde_json::from_slice::<serde_json::Value>(v).unwrap_or_else(|_| text(v).into()));
    serde_json::json!({
        "partition": record.partition,
        "offset": record.offset,
        "key": record.key.as_deref().map(text),
        "headers": headers,
        "value": value,
    })
}

/// Creates the topics with `spec`'s settings, or checks the ones that exist.
async fn apply(mut spec: TopicSpec, retention_hours: Option<i64>) -> Result<(), Error> {
    let window = shared::delivery::idempotency_ttl(&Vars::process())?;
    spec.retention = retention_hours.map_or(window, chrono::Duration::hours);
    spec.check(window)?;
    let topics = TopicNames::from_env();
    let outcomes = apply_topics(&KafkaSettings::from_env()?, &topics.all(), &spec).await?;
    let mut differing = Vec::new();
    for (topic, outcome) in outcomes {
        match outcome {
            TopicOutcome::Created => println!("{topic}: created"),
            TopicOutcome::Matches => println!("{topic}: exists with these settings"),
            TopicOutcome::Differs(found) => {
                println!("{topic}: DIFFERS: {}", found.join("; "));
                differing.push(topic);
            }
        }
    }
    if differing.is_empty() {
        return Ok(());
    }
    Err(Error::Message(format!(
        "{} differ from the settings asked and were left as they are: {} (change them with the cluster's tools, or re-create them while they are empty)",
        differing.len(),
        differing.join(", ")
    )))
}

/// Refuses to provision against an AWS endpoint or Kafka broker that is not
/// local: `ops provision` writes local secrets and one-copy topics.
pub fn ensure_local(aws: &aws_config::SdkConfig, kafka: &KafkaSettings) -> Result<(), Error> {
    let endpoint = aws
        .endpoint_url()
        .unwrap_or("the AWS default (no AWS_ENDPOINT_URL)");
    let endpoint_host = reqwest::Url::parse(endpoint)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned));
    if !endpoint_host.as_deref().is_some_and(is_local_host) {
        return Err(not_local("AWS endpoint", endpoint));
    }
    for server in kafka.bootstrap_servers.split(',') {
        let host = server
            .trim()
            .rsplit_once(':')
            .map_or(server.trim(), |(h, _)| h);
        if !is_local_host(host.trim_matches(['[', ']'])) {
            return Err(not_local("Kafka broker", server));
        }
    }
    Ok(())
}

fn not_local(what: &str, value: &str) -> Error {
    Error::Message(format!(
        "ops provision is the local set-up and the {what} {value} is not local: for a deployed stack the template creates the tables and secrets, and `ops topics apply` the topics"
    ))
}

/// Loopback, `localhost`, or a one-label name (a Compose service such as
/// `localstack` or `kafka-1`): never an AWS or MSK endpoint.
fn is_local_host(host: &str) -> bool {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return ip.is_loopback();
    }
    host == "localhost" || (!host.is_empty() && !host.contains('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_localhost_and_service_names_are_local() {
        for local in ["127.0.0.1", "::1", "localhost", "localstack", "kafka-1"] {
            assert!(is_local_host(local), "{local}");
        }
        for remote in [
            "dynamodb.us-east-1.amazonaws.com",
            "b-1.msk.abc.kafka.us-east-1.amazonaws.com",
            "10.0.0.5",
            "",
        ] {
            assert!(!is_local_host(remote), "{remote}");
        }
    }

    /// docker-compose.localstack.yml, with its anchors merged.
    fn compose() -> serde_norway::Value {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docker-compose.localstack.yml"
        ))
        .unwrap();
        let mut compose: serde_norway::Value = serde_norway::from_str(&text).unwrap();
        compose.apply_merge().unwrap();
        for service in compose["services"].as_mapping_mut().unwrap().values_mut() {
            service.apply_merge().unwrap();
            if let Some(environment) = service.get_mut("environment") {
                environment.apply_merge().unwrap();
            }
        }
        compose
    }

    fn text(value: &serde_norway::Value) -> String {
        match value {
            serde_norway::Value::String(s) => s.clone(),
            serde_norway::Value::Number(n) => n.to_string(),
            other => panic!("not a scalar: {other:?}"),
        }
    }

    #[test]
    fn the_compose_cluster_is_what_topics_apply_assumes_by_default() {
        let compose = compose();
        let brokers: Vec<&serde_norway::Value> = compose["services"]
            .as_mapping()
            .unwrap()
            .values()
            .filter(|s| {
                s.get("environment")
                    .and_then(|e| e.get("KAFKA_PROCESS_ROLES"))
                    .is_some_and(|roles| text(roles).contains("broker"))
            })
            .collect();
        assert_eq!(brokers.len() as i32, DEFAULT_REPLICATION_FACTOR);
        for broker in &brokers {
            let env = &broker["environment"];
            assert_eq!(
                text(&env["KAFKA_DEFAULT_REPLICATION_FACTOR"]),
                DEFAULT_REPLICATION_FACTOR.to_string()
            );
            assert_eq!(
                text(&env["KAFKA_MIN_INSYNC_REPLICAS"]),
                DEFAULT_MIN_INSYNC_REPLICAS.to_string()
            );
            let voters = text(&env["KAFKA_CONTROLLER_QUORUM_VOTERS"]);
            assert_eq!(
                voters.split(',').count() as i32,
                DEFAULT_REPLICATION_FACTOR,
                "{voters}"
            );
        }
        let init = &compose["services"]["init"];
        let command: Vec<String> = init["command"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(text)
            .collect();
        let command = command.join(" ");
        assert!(
            command.contains("ops provision --without-topics"),
            "{command}"
        );
        // `topics apply` with its defaults: the cluster above is what they assume.
        assert!(command.ends_with("ops topics apply"), "{command}");
        let bootstrap = text(&init["environment"]["KAFKA_BOOTSTRAP_SERVERS"]);
        assert_eq!(bootstrap.split(',').count(), brokers.len(), "{bootstrap}");
    }

    #[tokio::test]
    async fn provision_refuses_a_remote_endpoint_or_broker() {
        let aws = |endpoint: Option<&str>| {
            let mut config = aws_config::SdkConfig::builder();
            config.set_endpoint_url(endpoint.map(str::to_owned));
            config.build()
        };
        let local = KafkaSettings::new("127.0.0.1:9092");
        assert!(ensure_local(&aws(Some("http://127.0.0.1:4566")), &local).is_ok());
        let error = ensure_local(&aws(None), &local).unwrap_err().to_string();
        assert!(
            error.contains("AWS endpoint") && error.contains("ops topics apply"),
            "{error}"
        );
        let msk = KafkaSettings::new("b-1.msk.example.amazonaws.com:9096,127.0.0.1:9092");
        let error = ensure_local(&aws(Some("http://localhost:4566")), &msk)
            .unwrap_err()
            .to_string();
        assert!(error.contains("Kafka broker"), "{error}");
    }
}
