//! Reading topics as an operator does: every partition from a point in time
//! (or from its oldest record) up to where it ended when the read began, at
//! most a bounded number of records per partition, keeping the records asked
//! for. Used by `ops trace` (a reservation's records near its time) and `ops
//! failed redrive` (the dead letters on the failed and dead-letter topics).

use super::{KafkaSettings, decoded_message};
use crate::kafka_event::DecodedRecord;
use crate::{Error, InfraError};
use chrono::{DateTime, Utc};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::time::Duration;

/// How long one metadata or offset request, or the wait for the next record,
/// may take before the read gives up on what is left.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a read starts and how far it may go.
#[derive(Clone, Copy, Debug)]
pub struct ScanBounds {
    /// The first record at or after this time; `None`: the oldest record kept.
    pub since: Option<DateTime<Utc>>,
    /// The most records read on one partition.
    pub per_partition: i64,
}

/// What a read found.
#[derive(Debug, Default)]
pub struct Scanned {
    /// The records kept, in the order read (offset order per partition).
    pub records: Vec<DecodedRecord>,
    /// Records read, kept or not.
    pub read: i64,
    /// The partitions (`topic[partition]`) whose read stopped at the bound,
    /// or when the broker stopped answering, before the end it had when the
    /// read began: what is past that point was not looked at.
    pub cut_short: Vec<String>,
}

fn kafka_error(operation: &'static str) -> impl Fn(rdkafka::error::KafkaError) -> Error {
    move |e| {
        InfraError::Kafka {
            operation,
            source: Box::new(e),
        }
        .into()
    }
}

/// One partition's stretch to read: `[start, stop)`; `short` when `stop` is
/// the bound, before the partition's end.
struct Stretch {
    topic: String,
    partition: i32,
    start: i64,
    stop: i64,
    short: bool,
}

impl Stretch {
    fn name(&self) -> String {
        format!("{}[{}]", self.topic, self.partition)
    }
}

/// Reads `topics` within `bounds` and keeps the records `keep` accepts.
pub async fn scan_topics(
    kafka: &KafkaSettings,
    topics: &[&str],
    bounds: ScanBounds,
    keep: impl Fn(&DecodedRecord) -> bool,
) -> Result<Scanned, Error> {
    let consumer: StreamConsumer = kafka
        .client_config()
        .set("group.id", format!("ops-scan-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()
        .map_err(kafka_error("create a consumer to read topics"))?;
    let stretches = stretches(&consumer, topics, bounds)?;
    let mut assignment = TopicPartitionList::new();
    for s in &stretches {
        assignment
            .add_partition_offset(&s.topic, s.partition, Offset::Offset(s.start))
            .map_err(kafka_error("assign partitions"))?;
    }
    consumer
        .assign(&assignment)
        .map_err(kafka_error("assign partitions"))?;
    read_stretches(&consumer, stretches, keep).await
}

/// Each partition's stretch: from the first offset at `bounds.since` (or the
/// oldest) to the end it has now, at most `bounds.per_partition` long.
/// Empty stretches are left out.
fn stretches(
    consumer: &StreamConsumer,
    topics: &[&str],
    bounds: ScanBounds,
) -> Result<Vec<Stretch>, Error> {
    let mut stretches = Vec::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .map_err(kafka_error("read topic metadata"))?;
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            let (low, high) = consumer
                .fetch_watermarks(topic, partition.id(), REQUEST_TIMEOUT)
                .map_err(kafka_error("read partition offsets"))?;
            let start = match bounds.since {
                Some(since) => offset_at(consumer, topic, partition.id(), since)?.unwrap_or(high),
                None => low,
            }
            .max(low);
            let stop = high.min(start.saturating_add(bounds.per_partition.max(1)));
            if start < stop {
                stretches.push(Stretch {
                    topic: (*topic).to_owned(),
                    partition: partition.id(),
                    start,
                    stop,
                    short: stop < high,
                });
            }
        }
    }
    Ok(stretches)
}

/// The first offset of `topic[partition]` whose record is at or after `at`;
/// `None` when no record is that recent.
fn offset_at(
    consumer: &StreamConsumer,
    topic: &str,
    partition: i32,
    at: DateTime<Utc>,
) -> Result<Option<i64>, Error> {
    let mut wanted = TopicPartitionList::new();
    wanted
        .add_partition_offset(topic, partition, Offset::Offset(at.timestamp_millis()))
        .map_err(kafka_error("find offsets by time"))?;
    let found = consumer
        .offsets_for_times(wanted, REQUEST_TIMEOUT)
        .map_err(kafka_error("find offsets by time"))?;
    Ok(found
        .find_partition(topic, partition)
        .and_then(|p| match p.offset() {
            Offset::Offset(offset) => Some(offset),
            _ => None,
        }))
}

/// Reads every stretch to its stop, keeping what `keep` accepts.
async fn read_stretches(
    consumer: &StreamConsumer,
    stretches: Vec<Stretch>,
    keep: impl Fn(&DecodedRecord) -> bool,
) -> Result<Scanned, Error> {
    let mut scanned = Scanned {
        cut_short: stretches
            .iter()
            .filter(|s| s.short)
            .map(Stretch::name)
            .collect(),
        ..Scanned::default()
    };
    let mut open: HashMap<(String, i32), Stretch> = stretches
        .into_iter()
        .map(|s| ((s.topic.clone(), s.partition), s))
        .collect();
    while !open.is_empty() {
        let Ok(received) = tokio::time::timeout(REQUEST_TIMEOUT, consumer.recv()).await else {
            // The broker stopped answering: say which partitions were left.
            scanned.cut_short.extend(open.values().map(Stretch::name));
            break;
        };
        let record = decoded_message(&received.map_err(kafka_error("read records"))?.detach());
        let at = (record.topic.clone(), record.partition as i32);
        let Some(stretch) = open.get(&at) else {
            continue;
        };
        let last = record.offset + 1 >= stretch.stop;
        if record.offset < stretch.stop {
            scanned.read += 1;
            if keep(&record) {
                scanned.records.push(record);
            }
        }
        if last {
            open.remove(&at);
        }
    }
    scanned.cut_short.sort();
    scanned.cut_short.dedup();
    Ok(scanned)
}
