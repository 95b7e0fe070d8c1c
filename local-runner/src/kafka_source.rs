//! The Kafka event source, as Lambda's self-managed Kafka / MSK mapping runs it:
//! a consumer group, batches of up to `batch_size` records or `batching_window`,
//! an event with records keyed `"<topic>-<partition>"`, base64 key and value and
//! headers as signed bytes. Offsets are committed only after the function
//! succeeded; on failure the batch is delivered again, and a partial-batch answer
//! (`batchItemFailures`) re-delivers each listed partition from its failed offset.

use crate::Error;
use crate::http_api::Invoker;
use crate::stream_source::sleep_or_stop;
use crate::template::{KafkaMapping, StartingPosition};
use aws_lambda_events::kafka::{KafkaEvent, KafkaRecord};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage, Timestamp};
use rdkafka::{Offset, TopicPartitionList};
use shared::kafka::{KafkaSettings, decoded_message};
use shared::kafka_event::{KafkaBatchResponse, encode_record};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct KafkaSourceSettings {
    pub group_id: String,
    /// Where a new consumer group starts: the mapping's `StartingPosition`.
    pub starting_position: StartingPosition,
    pub batch_size: usize,
    pub batching_window: Duration,
    pub retry_backoff: Duration,
    /// Faults to inject (`make soak`); none by default.
    pub faults: DeliveryFaults,
}

/// What the source can do wrong on purpose, to show the notifier survives it.
#[derive(Clone, Debug, Default)]
pub struct DeliveryFaults {
    /// Every batch is delivered a second time once the first succeeded, as a
    /// retried poll or a rebalance does.
    pub duplicate: bool,
    /// The first invocation still running after this long is killed there
    /// (its future dropped mid-batch, as a crash or a timeout would), so its
    /// batch is delivered again.
    pub kill_once_after: Option<Duration>,
    /// What was injected so far (shared by the clones, read by the soak).
    pub injected: Arc<InjectedFaults>,
}

/// Counts of the faults the source injected.
#[derive(Debug, Default)]
pub struct InjectedFaults {
    killed: AtomicUsize,
    duplicated: AtomicUsize,
    killed_event_ids: Mutex<Vec<String>>,
}

impl InjectedFaults {
    /// Invocations killed mid-batch.
    pub fn killed(&self) -> usize {
        self.killed.load(Ordering::Relaxed)
    }

    /// The event ids of the records in the batches that were killed: a send of
    /// one of them may have gone out before the kill, and the redelivery that
    /// reclaims its key sends it again (a `retry` channel's promise).
    pub fn killed_event_ids(&self) -> Vec<String> {
        self.killed_event_ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn record_kill(&self, batch: &[OwnedMessage]) {
        self.killed.fetch_add(1, Ordering::Relaxed);
        let ids = batch
            .iter()
            .filter_map(|m| decoded_message(m).header("event-id").map(str::to_owned));
        self.killed_event_ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(ids);
    }

    /// Batches delivered a second time.
    pub fn duplicated_batches(&self) -> usize {
        self.duplicated.load(Ordering::Relaxed)
    }
}

impl Default for KafkaSourceSettings {
    fn default() -> Self {
        KafkaSourceSettings {
            group_id: "notifier".into(),
            starting_position: StartingPosition::TrimHorizon,
            batch_size: 100,
            batching_window: Duration::from_millis(200),
            retry_backoff: Duration::from_millis(500),
            faults: DeliveryFaults::default(),
        }
    }
}

impl KafkaSourceSettings {
    /// The source `mapping` describes, in consumer group `group_id`.
    pub fn played(mapping: &KafkaMapping, group_id: impl Into<String>) -> Self {
        KafkaSourceSettings {
            group_id: group_id.into(),
            starting_position: mapping.starting_position,
            batch_size: mapping.batch_size,
            batching_window: mapping.batching_window,
            ..KafkaSourceSettings::default()
        }
    }
}

/// A consumed record in Lambda's format.
pub fn lambda_record(message: &OwnedMessage) -> KafkaRecord {
    let mut record = encode_record(&decoded_message(message));
    record.timestamp_type = Some(
        match message.timestamp() {
            Timestamp::CreateTime(_) => "CREATE_TIME",
            Timestamp::LogAppendTime(_) => "LOG_APPEND_TIME",
            Timestamp::NotAvailable => "NO_TIMESTAMP_TYPE",
        }
        .to_owned(),
    );
    record
}

/// The Lambda event for a batch of messages.
pub fn lambda_event(messages: &[OwnedMessage], bootstrap_servers: &str) -> KafkaEvent {
    let mut records: HashMap<String, Vec<KafkaRecord>> = HashMap::new();
    for m in messages {
        records
            .entry(format!("{}-{}", m.topic(), m.partition()))
            .or_default()
            .push(lambda_record(m));
    }
    let mut event = KafkaEvent::default();
    event.event_source = Some("SelfManagedKafka".into());
    event.bootstrap_servers = Some(bootstrap_servers.to_owned());
    event.records = records;
    event
}

async fn next_batch(
    consumer: &StreamConsumer,
    settings: &KafkaSourceSettings,
    shutdown: &mut watch::Receiver<bool>,
) -> Vec<OwnedMessage> {
    let mut batch = Vec::new();
    let first = tokio::select! {
        m = consumer.recv() => m,
        _ = shutdown.changed() => return batch,
    };
    match first {
        Ok(m) => batch.push(m.detach()),
        Err(e) => {
            tracing::warn!(error = %e, "Kafka receive failed");
            return batch;
        }
    }
    let window_end = Instant::now() + settings.batching_window;
    while batch.len() < settings.batch_size {
        let left = window_end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, consumer.recv()).await {
            Ok(Ok(m)) => batch.push(m.detach()),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Kafka receive failed");
                break;
            }
            Err(_) => break,
        }
    }
    batch
}

/// First and last offset of each partition in the batch.
fn ranges(batch: &[OwnedMessage]) -> BTreeMap<(String, i32), (i64, i64)> {
    let mut ranges: BTreeMap<(String, i32), (i64, i64)> = BTreeMap::new();
    for m in batch {
        let entry = ranges
            .entry((m.topic().to_owned(), m.partition()))
            .or_insert((m.offset(), m.offset()));
        entry.0 = entry.0.min(m.offset());
        entry.1 = entry.1.max(m.offset());
    }
    ranges
}

fn seek(consumer: &StreamConsumer, topic: &str, partition: i32, offset: i64) {
    if let Err(e) = consumer.seek(
        topic,
        partition,
        Offset::Offset(offset),
        Duration::from_secs(5),
    ) {
        tracing::error!(error = %e, topic = %topic, partition, "seek back failed");
    }
}

/// Consumes `topics` and invokes `function` until `shutdown` turns true.
pub async fn run(
    kafka: KafkaSettings,
    topics: Vec<String>,
    settings: KafkaSourceSettings,
    function: Invoker,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    let consumer = subscribe(&kafka, &topics, &settings)?;
    tracing::info!(topics = ?topics, group = %settings.group_id, "consuming");
    let mut faulty = FaultyInvoker::new(function, &settings);
    while !*shutdown.borrow() {
        let batch = next_batch(&consumer, &settings, &mut shutdown).await;
        if batch.is_empty() {
            continue;
        }
        let payload = serde_json::to_value(lambda_event(&batch, &kafka.bootstrap_servers))?;
        let ranges = ranges(&batch);
        let retry_soon = match faulty.invoke(payload, &batch).await {
            Ok(answer) => commit(&consumer, &ranges, answer)?,
            Err(e) => {
                tracing::warn!(error = %shared::error_chain(&e), group = %settings.group_id, records = batch.len(), "invocation failed; the batch is delivered again");
                for ((topic, partition), (first, _)) in &ranges {
                    seek(&consumer, topic, *partition, *first);
                }
                true
            }
        };
        if retry_soon {
            sleep_or_stop(&mut shutdown, settings.retry_backoff).await;
        }
    }
    Ok(())
}

/// A consumer of `topics` in the settings' group that commits only what the
/// function answered for.
fn subscribe(
    kafka: &KafkaSettings,
    topics: &[String],
    settings: &KafkaSourceSettings,
) -> Result<StreamConsumer, Error> {
    let consumer: StreamConsumer = kafka
        .client_config()
        .set("group.id", &settings.group_id)
        .set("enable.auto.commit", "false")
        .set(
            "auto.offset.reset",
            match settings.starting_position {
                StartingPosition::TrimHorizon => "earliest",
                StartingPosition::Latest => "latest",
            },
        )
        // librdkafka's 500 ms default would let a record that lands during an
        // empty fetch wait up to that long (tansu answers a fetch when its wait
        // is over); no longer than the batching window, as Lambda's poller.
        .set(
            "fetch.wait.max.ms",
            settings
                .batching_window
                .as_millis()
                .clamp(10, 500)
                .to_string(),
        )
        .create()
        .map_err(Error::Kafka)?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names).map_err(Error::Kafka)?;
    Ok(consumer)
}

/// Commits what a successful invocation answered for: each partition listed in
/// a partial-batch answer resumes at its lowest failed offset, the others after
/// the batch. Answers whether a partition is retried (so the source backs off).
fn commit(
    consumer: &StreamConsumer,
    ranges: &BTreeMap<(String, i32), (i64, i64)>,
    answer: serde_json::Value,
) -> Result<bool, Error> {
    let resume = serde_json::from_value::<KafkaBatchResponse>(answer)
        .unwrap_or_default()
        .resume_points();
    let mut offsets = TopicPartitionList::new();
    for ((topic, partition), (_, last)) in ranges {
        let next = match resume.get(&format!("{topic}-{partition}")) {
            Some(failed) => {
                seek(consumer, topic, *partition, *failed);
                *failed
            }
            None => last + 1,
        };
        offsets
            .add_partition_offset(topic, *partition, Offset::Offset(next))
            .map_err(Error::Kafka)?;
    }
    if let Err(e) = consumer.commit(&offsets, CommitMode::Sync) {
        // Not committed means delivered again: at least once.
        tracing::warn!(error = %e, "offset commit failed; the batch may be delivered again");
    }
    Ok(!resume.is_empty())
}

/// The function behind the faults the settings ask for (`make soak`): the first
/// invocation still running after `kill_once_after` is dropped mid-batch, and
/// with `duplicate` each batch that succeeded is delivered a second time.
struct FaultyInvoker<'a> {
    function: Invoker,
    /// Whose function this is, for the errors.
    group: &'a str,
    faults: &'a DeliveryFaults,
    kill: Option<Duration>,
}

impl<'a> FaultyInvoker<'a> {
    fn new(function: Invoker, settings: &'a KafkaSourceSettings) -> Self {
        FaultyInvoker {
            function,
            group: &settings.group_id,
            faults: &settings.faults,
            kill: settings.faults.kill_once_after,
        }
    }

    async fn invoke(
        &mut self,
        payload: serde_json::Value,
        batch: &[OwnedMessage],
    ) -> Result<serde_json::Value, Error> {
        let records = batch.len();
        let answer = match self.kill {
            Some(after) => {
                match tokio::time::timeout(after, (self.function)(payload.clone())).await {
                    Ok(answer) => answer,
                    Err(_) => {
                        self.kill = None;
                        self.faults.injected.record_kill(batch);
                        tracing::warn!(
                            records,
                            group = self.group,
                            "fault: the invocation is killed mid-batch"
                        );
                        Err(Error::Invocation {
                            function: format!("the {} group's function", self.group),
                            message: "killed mid-batch (an injected fault)".into(),
                        })
                    }
                }
            }
            None => (self.function)(payload.clone()).await,
        };
        if self.faults.duplicate && answer.is_ok() {
            tracing::info!(records, "fault: the batch is delivered twice");
            self.faults
                .injected
                .duplicated
                .fetch_add(1, Ordering::Relaxed);
            return (self.function)(payload).await;
        }
        answer
    }
}
