//! dlq-retry: one run draining a dead-letter topic of due letters (Telegram
//! failed once; the sandbox now answers at once), each sent through the
//! notifier's idempotency check, its ledger row closed and its offset
//! committed. Baseline: a bare consumer reading the same records from the same
//! broker (the ceiling: reading alone), and one letter at a time. Then the same
//! with the keys and the ledger on stores answering in 5 ms concurrently, as
//! DynamoDB does in-region, and every send taking 20 ms (moto serves one
//! request at a time, which bounds the first figures), at the default
//! `NOTIFY_CONCURRENCY` and at twice it: the ratio follows the concurrency.

use crate::in_region::{self, IN_REGION_LATENCY, InRegionLedger, InRegionStore};
use crate::report::{Figure, Report, Samples};
use crate::{Error, measure};
use chrono::{Duration, Utc};
use dlq_retry::{DlqRetry, LambdaDlqRetry};
use local_runner::notification_sandbox::FailurePlan;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use shared::channels::Channel;
use shared::clock::{Clock, SystemClock};
use shared::dead_letter::DeadLetter;
use shared::delivery::{DeadLetterSink, Destination};
use shared::domain::ReservationId;
use shared::dynamodb::{DynamoFailureLedger, DynamoIdempotencyStore};
use shared::idempotency::IdempotencyStore;
use shared::kafka::{KafkaPublisher, ProducerSettings, TANSU_ONE_RECORD_PER_BATCH};
use shared::ledger::FailureLedger;
use shared::notification::{ChannelKind, ChannelRoutes};
use shared::ports::EventPublisher;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};
use testkit::DirectNotifier;

pub struct DlqRetryBench {
    pub runs: usize,
    /// Due dead letters per run (10,000).
    pub records: usize,
    /// The sandbox's answer time in the in-region part (20 ms).
    pub send_latency: StdDuration,
}

/// Publishes `n` dead letters of Telegram, all due now; answers where the
/// topic's partition 0 ended before them.
async fn due_letters(direct: &DirectNotifier, n: usize) -> Result<i64, Error> {
    let topic = &direct.topics.payment_completed_dlq;
    let kafka = testkit::kafka();
    let probe: StreamConsumer = kafka
        .client_config()
        .set("group.id", testkit::unique("bench-probe"))
        .create()
        .map_err(|e| Error::Measure(format!("a consumer: {e}")))?;
    let (_, start) = probe
        .fetch_watermarks(topic, 0, StdDuration::from_secs(10))
        .map_err(|e| Error::Measure(format!("the DLQ's end: {e}")))?;
    // One record per batch, as the notifier writes them locally (see
    // TANSU_ONE_RECORD_PER_BATCH), still pipelined.
    let publisher = KafkaPublisher::new(
        &kafka.clone().with_property(TANSU_ONE_RECORD_PER_BATCH),
        &ProducerSettings::default(),
    )?;
    let failure = shared::Error::from(shared::InfraError::Channel {
        channel: "telegram",
        retryable: true,
        maybe_delivered: false,
        retry_after: None,
        message: "sendMessage answered HTTP 502 (bench)".into(),
        source: None,
    });
    let now = Utc::now();
    let letters: Vec<_> = (0..n)
        .map(|i| {
            let envelope = shared::fixtures::payment_completed_envelope(
                ReservationId::random(),
                "bench@example.com",
                50_000,
            );
            let original =
                shared::fixtures::record_of(&envelope, &direct.topics.payment_completed, i as i64);
            DeadLetter::new(original, &failure, 0, now)
                .on_channel(ChannelKind::Telegram)
                .to_record(topic)
        })
        .collect();
    for chunk in letters.chunks(1_000) {
        for result in publisher.publish_all(chunk).await {
            result?;
        }
    }
    Ok(start)
}

/// Reads `n` records of partition 0 from `start`; records a second.
async fn read_alone(topic: &str, start: i64, n: usize) -> Result<f64, Error> {
    let consumer: StreamConsumer = testkit::kafka()
        .client_config()
        .set("group.id", testkit::unique("bench-read"))
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| Error::Measure(format!("a consumer: {e}")))?;
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Offset(start))
        .map_err(|e| Error::Measure(format!("an assignment: {e}")))?;
    consumer
        .assign(&assignment)
        .map_err(|e| Error::Measure(format!("an assignment: {e}")))?;
    let started = Instant::now();
    for read in 0..n {
        tokio::time::timeout(StdDuration::from_secs(10), consumer.recv())
            .await
            .map_err(|_| Error::Measure(format!("the bare consumer stalled after {read}")))?
            .map_err(|e| Error::Measure(format!("reading: {e}")))?;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// A notifier's tables and topics, and a dlq-retry over them.
struct Setup<C, S, L> {
    direct: DirectNotifier,
    retry: DlqRetry<C, S, L>,
}

/// dlq-retry's settings for a bench run handling `concurrency` letters at once.
fn config(direct: &DirectNotifier, concurrency: usize) -> dlq_retry::Config {
    dlq_retry::Config {
        delivery: direct.config.delivery.clone(),
        settings: dlq_retry::Settings {
            concurrency,
            group_id: testkit::unique("bench-dlq-retry"),
            max_retries: 10,
            default_run_time: Duration::hours(1),
            ..Default::default()
        },
    }
}

async fn notifier_stack() -> DirectNotifier {
    DirectNotifier::start_routed(
        ChannelRoutes::default(),
        Duration::seconds(60),
        StdDuration::from_secs(5),
    )
    .await
}

impl Setup<Channel, DynamoIdempotencyStore, DynamoFailureLedger> {
    /// As deployed, keys and ledger on moto; the sandbox answers at once.
    async fn on_moto(concurrency: usize) -> Result<Self, Error> {
        let direct = notifier_stack().await;
        let config = config(&direct, concurrency);
        let retry =
            LambdaDlqRetry::from_config(config, direct.dynamodb.clone(), Arc::new(SystemClock))
                .map_err(measure)?;
        Ok(Setup { direct, retry })
    }
}

impl Setup<Channel, InRegionStore, InRegionLedger> {
    /// Keys and ledger on stores answering as DynamoDB does in-region; every
    /// send answered by the sandbox after `send_latency`.
    async fn in_region(concurrency: usize, send_latency: StdDuration) -> Result<Self, Error> {
        let direct = notifier_stack().await;
        direct.sandbox.fail_next(FailurePlan {
            delay_ms: Some(send_latency.as_millis() as u64),
            ..FailurePlan::fail(u32::MAX, 200)
        });
        let config = config(&direct, concurrency);
        let delivery = &config.delivery;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let deliverer = in_region::deliverer(delivery, clock.clone()).map_err(measure)?;
        let sink = DeadLetterSink::new(
            KafkaPublisher::new(&delivery.kafka, &delivery.producer)?,
            InRegionLedger::new(IN_REGION_LATENCY),
            delivery.topics.clone(),
        );
        let retry = DlqRetry::new(config, deliverer, sink, clock);
        Ok(Setup { direct, retry })
    }
}

impl<C, S, L> Setup<C, S, L>
where
    C: Destination,
    S: IdempotencyStore,
    L: FailureLedger,
{
    /// Publishes `n` due letters and drains them in one run: records a second,
    /// and where they start on the topic.
    async fn drain(&self, n: usize) -> Result<(f64, i64), Error> {
        let start = due_letters(&self.direct, n).await?;
        let started = Instant::now();
        let done = self
            .retry
            .run(Utc::now() + Duration::hours(1))
            .await
            .map_err(measure)?;
        let elapsed = started.elapsed().as_secs_f64();
        if done.processed as usize != n {
            return Err(Error::Measure(format!(
                "dlq-retry delivered {} of {n} due letters: {done:?}",
                done.processed
            )));
        }
        Ok((n as f64 / elapsed, start))
    }
}

impl DlqRetryBench {
    pub async fn run(&self, report: &mut Report) -> Result<(), Error> {
        self.on_moto(report).await?;
        self.in_region(report).await
    }

    /// As deployed on moto: against a bare consumer, and one letter at a time.
    async fn on_moto(&self, report: &mut Report) -> Result<(), Error> {
        let concurrent = Setup::on_moto(notifier::DEFAULT_CONCURRENCY).await?;
        // One letter, then its commit, at a time: how dlq-retry worked before.
        let one_by_one = Setup::on_moto(1).await?;
        let sequential_records = self.records.min(1_000);
        let topic = concurrent.direct.topics.payment_completed_dlq.clone();

        let mut drained = Samples::default();
        let mut ceiling = Samples::default();
        let mut sequential = Samples::default();
        let rounds = self.runs.min(3);
        for round in 0..rounds {
            let (rate, start) = concurrent.drain(self.records).await?;
            drained.push(rate);
            ceiling.push(read_alone(&topic, start, self.records).await?);
            sequential.push(one_by_one.drain(sequential_records).await?.0);
            eprintln!("dlq-retry: round {}/{rounds} done", round + 1);
        }
        let metric = format!(
            "{} due dead letters drained in one run, {} at once",
            self.records,
            notifier::DEFAULT_CONCURRENCY
        );
        report.add(
            Figure::of("dlq-retry", &metric, "rec/s", &drained)
                .against("a bare consumer reading them (ceiling)", &ceiling),
        );
        report.add(Figure::of("dlq-retry", &metric, "rec/s", &drained).against(
            &format!("one letter and its commit at a time ({sequential_records} letters)"),
            &sequential,
        ));
        Ok(())
    }

    /// Keys and ledger answering in 5 ms concurrently (DynamoDB in-region),
    /// sends taking `send_latency`: the concurrency itself, not moto's queue,
    /// at the default and at twice it, against one letter at a time.
    async fn in_region(&self, report: &mut Report) -> Result<(), Error> {
        let default = notifier::DEFAULT_CONCURRENCY;
        let concurrent = Setup::in_region(default, self.send_latency).await?;
        let doubled = Setup::in_region(2 * default, self.send_latency).await?;
        let one_by_one = Setup::in_region(1, self.send_latency).await?;
        let (records, sequential_records) = (self.records.min(2_000), self.records.min(200));
        let [mut drained, mut drained_doubled, mut sequential] =
            [(); 3].map(|_| Samples::default());
        let rounds = self.runs.min(3);
        for round in 0..rounds {
            drained.push(concurrent.drain(records).await?.0);
            drained_doubled.push(doubled.drain(records).await?.0);
            sequential.push(one_by_one.drain(sequential_records).await?.0);
            eprintln!("dlq-retry in-region: round {}/{rounds} done", round + 1);
        }
        let baseline =
            format!("one letter and its commit at a time ({sequential_records} letters)");
        for (at_once, samples) in [(default, &drained), (2 * default, &drained_doubled)] {
            let metric = format!(
                "{records} due dead letters, sends take {} ms, keys and ledger on stores answering in {} ms concurrently (DynamoDB in-region), {at_once} at once",
                self.send_latency.as_millis(),
                IN_REGION_LATENCY.as_millis(),
            );
            report.add(
                Figure::of("dlq-retry", &metric, "rec/s", samples).against(&baseline, &sequential),
            );
        }
        Ok(())
    }
}
