//! Notifier: one invocation with a batch of PaymentCompleted records (one
//! reservation each, over three partitions), every send answered by the sandbox
//! after 20 ms, the idempotency keys on moto, and again on a store answering
//! in 5 ms concurrently as DynamoDB does in-region (`in_region`: moto serves
//! one request at a time, which bounds the first figure), there also with
//! twice the default `NOTIFY_CONCURRENCY` (the ratio follows it). Baseline:
//! the same notifier handling one record at a time (`NOTIFY_CONCURRENCY=1`).
//!
//! Then the send-rate limit: the sandbox refuses (429) what goes over 100 sends
//! a second, as Telegram does; the notifier with `TELEGRAM_MAX_SENDS_PER_SECOND`
//! at that rate beside the same notifier without a limit: the rate of messages
//! delivered and the 429s each collected.
//!
//! Last, the first dead letter of a notifier just built, which builds its
//! producer then, beside the same notifier's next dead letter.

use crate::in_region::{IN_REGION_LATENCY, InRegionStore};
use crate::report::{Figure, Report, Samples};
use crate::{Error, measure};
use aws_lambda_events::kafka::KafkaEvent;
use lambda_runtime::LambdaEvent;
use local_runner::notification_sandbox::{FailurePlan, NotificationSandbox};
use notifier::{LambdaNotifier, Notifier};
use shared::channels::Channel;
use shared::clock::{Clock, SystemClock};
use shared::domain::ReservationId;
use shared::dynamodb::DynamoFailureLedger;
use shared::idempotency::IdempotencyStore;
use shared::kafka::{KafkaPublisher, ProducerStart};
use shared::kafka_event::encode_record;
use shared::notification::ChannelRoutes;
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::DirectNotifier;

const PARTITIONS: i64 = 3;

pub struct NotifierBench {
    pub runs: usize,
    /// Records per timed batch (1,000).
    pub records: usize,
    /// The sandbox's answer time (20 ms).
    pub latency: Duration,
    /// The send-rate limit of the second part (100/s).
    pub rate_limit: usize,
}

/// A batch of `n` PaymentCompleted records spread over the partitions.
pub(crate) fn batch(n: usize, topic: &str) -> KafkaEvent {
    let mut event = KafkaEvent::default();
    for i in 0..n as i64 {
        let envelope = shared::fixtures::payment_completed_envelope(
            ReservationId::random(),
            "bench@example.com",
            50_000,
        );
        let mut record = shared::fixtures::record_of(&envelope, topic, i / PARTITIONS);
        record.partition = i % PARTITIONS;
        event
            .records
            .entry(format!("{topic}-{}", record.partition))
            .or_default()
            .push(encode_record(&record));
    }
    event
}

/// The notifier with its keys on the in-region store.
type InRegionNotifier = Notifier<Channel, InRegionStore, KafkaPublisher, DynamoFailureLedger>;

/// What one invocation did: records handled a second, messages delivered a
/// second, and the 429s the sandbox answered.
async fn handle<S: IdempotencyStore>(
    notifier: &Notifier<Channel, S, KafkaPublisher, DynamoFailureLedger>,
    sandbox: &NotificationSandbox,
    topic: &str,
    records: usize,
) -> Result<(f64, f64, u64), Error> {
    let event = batch(records, topic);
    let (before, refused_before) = (sandbox.messages().len(), sandbox.rate_limited());
    let started = Instant::now();
    notifier
        .handle(LambdaEvent::new(event, lambda_runtime::Context::default()))
        .await
        .map_err(|e| Error::Measure(format!("the notifier failed: {e}")))?;
    let elapsed = started.elapsed().as_secs_f64();
    let delivered = sandbox.messages().len() - before;
    let refused = sandbox.rate_limited() - refused_before;
    Ok((
        records as f64 / elapsed,
        delivered as f64 / elapsed,
        refused,
    ))
}

/// How long `notifier` takes over a record whose send fails (the sandbox
/// answers 503): its dead letter published and its ledger row written.
async fn dead_letter_ms(notifier: &LambdaNotifier, topic: &str) -> Result<f64, Error> {
    let started = Instant::now();
    notifier
        .handle(LambdaEvent::new(
            batch(1, topic),
            lambda_runtime::Context::default(),
        ))
        .await
        .map_err(|e| Error::Measure(format!("the notifier failed: {e}")))?;
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    if !notifier.sink().publisher().is_built() {
        return Err(Error::Measure(
            "the failed send left no dead letter: the sandbox did not fail it".into(),
        ));
    }
    Ok(elapsed)
}

/// The notifiers compared, all on the same tables and sandbox.
struct Notifiers {
    /// As deployed: `NOTIFY_CONCURRENCY` keys at once.
    concurrent: LambdaNotifier,
    /// `NOTIFY_CONCURRENCY=1`.
    one_at_a_time: LambdaNotifier,
    /// As deployed, with `TELEGRAM_MAX_SENDS_PER_SECOND` at the sandbox's limit.
    paced: LambdaNotifier,
    /// With the keys on the in-region store: as deployed, twice as many keys
    /// at once, and one at a time.
    in_region: InRegionNotifier,
    in_region_doubled: InRegionNotifier,
    in_region_one_at_a_time: InRegionNotifier,
}

/// `direct`'s notifier with its keys on a store of its own answering as
/// DynamoDB does in-region, handling `keys` keys at once.
fn in_region(direct: &DirectNotifier, keys: usize) -> Result<InRegionNotifier, Error> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let deliverer =
        crate::in_region::deliverer(&direct.config.delivery, clock.clone()).map_err(measure)?;
    let notifier = Notifier::with_deliverer(
        &direct.config,
        deliverer,
        direct.dynamodb.clone(),
        clock,
        ProducerStart::AtFirstPublish,
    );
    Ok(notifier.map_err(measure)?.with_concurrency(keys))
}

/// `direct`'s notifier as it was built before its producer waited for the
/// first dead letter: the producer built with it.
fn producer_at_init(direct: &DirectNotifier) -> Result<LambdaNotifier, Error> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let client = direct.dynamodb.clone();
    let deliverer = direct
        .config
        .delivery
        .deliverer(client.clone(), clock.clone())
        .map_err(measure)?;
    Notifier::with_deliverer(
        &direct.config,
        deliverer,
        client,
        clock,
        ProducerStart::AtInit,
    )
    .map_err(measure)
}

impl Notifiers {
    fn build(direct: &DirectNotifier, per_second: f64) -> Result<Self, Error> {
        let build = |edit: &dyn Fn(&mut notifier::Config)| -> Result<LambdaNotifier, Error> {
            let mut config = direct.config.clone();
            edit(&mut config);
            LambdaNotifier::from_config(&config, direct.dynamodb.clone(), Arc::new(SystemClock))
                .map_err(measure)
        };
        Ok(Notifiers {
            concurrent: build(&|_| {})?,
            one_at_a_time: build(&|c| c.settings.concurrency = 1)?,
            paced: build(&|c| {
                if let Some(telegram) = c.delivery.channels.telegram.as_mut() {
                    telegram.max_sends_per_second = Some(per_second);
                }
            })?,
            in_region: in_region(direct, direct.config.settings.concurrency)?,
            in_region_doubled: in_region(direct, 2 * direct.config.settings.concurrency)?,
            in_region_one_at_a_time: in_region(direct, 1)?,
        })
    }

    /// The in-region notifiers: as deployed, doubled, one at a time.
    fn in_region_all(&self) -> [&InRegionNotifier; 3] {
        [
            &self.in_region,
            &self.in_region_doubled,
            &self.in_region_one_at_a_time,
        ]
    }
}

impl NotifierBench {
    pub async fn run(&self, report: &mut Report) -> Result<(), Error> {
        let direct = DirectNotifier::start_routed(
            ChannelRoutes::default(),
            chrono::Duration::seconds(60),
            Duration::from_secs(5),
        )
        .await;
        let notifiers = Notifiers::build(&direct, self.rate_limit as f64)?;
        direct.sandbox.fail_next(FailurePlan {
            delay_ms: Some(self.latency.as_millis() as u64),
            ..FailurePlan::fail(u32::MAX, 200)
        });
        self.throughput(report, &direct, &notifiers).await?;
        self.rate_limited(report, &direct, &notifiers).await?;
        self.first_dead_letter(report).await
    }

    /// What building the dead-letter producer at the first dead letter costs
    /// (`ProducerStart::AtFirstPublish`, instead of at init): a record
    /// dead-lettered by a notifier just built, beside the same notifier's next.
    async fn first_dead_letter(&self, report: &mut Report) -> Result<(), Error> {
        let direct = DirectNotifier::start_routed(
            ChannelRoutes::default(),
            chrono::Duration::seconds(60),
            Duration::from_secs(5),
        )
        .await;
        direct.sandbox.fail_next(FailurePlan::fail(u32::MAX, 503));
        let topic = &direct.topics.payment_completed;
        let [mut first, mut next, mut built_at_init] = [(); 3].map(|_| Samples::default());
        for _ in 0..self.runs {
            let notifier = LambdaNotifier::from_config(
                &direct.config,
                direct.dynamodb.clone(),
                Arc::new(SystemClock),
            )
            .map_err(measure)?;
            first.push(dead_letter_ms(&notifier, topic).await?);
            next.push(dead_letter_ms(&notifier, topic).await?);
            let eager = producer_at_init(&direct)?;
            built_at_init.push(dead_letter_ms(&eager, topic).await?);
        }
        let metric = "a record dead-lettered by a notifier just built (its producer built then)";
        report.add(
            Figure::of("notifier", metric, "ms", &first)
                .against("the same notifier's next dead letter", &next),
        );
        report.add(Figure::of("notifier", metric, "ms", &first).against(
            "the same, its producer built at init (before this change)",
            &built_at_init,
        ));
        Ok(())
    }

    /// Records a second, `NOTIFY_CONCURRENCY` keys at once against one at a
    /// time, on moto and on the in-region store (there also twice as many).
    async fn throughput(
        &self,
        report: &mut Report,
        direct: &DirectNotifier,
        notifiers: &Notifiers,
    ) -> Result<(), Error> {
        let (sandbox, topic) = (&direct.sandbox, &direct.topics.payment_completed);
        // Connections and clients warm, as after a cold start.
        for on_moto in [&notifiers.concurrent, &notifiers.one_at_a_time] {
            handle(on_moto, sandbox, topic, 10).await?;
        }
        for in_region in notifiers.in_region_all() {
            handle(in_region, sandbox, topic, 10).await?;
        }
        let [mut fast, mut slow] = [(); 2].map(|_| Samples::default());
        let mut in_region = [(); 3].map(|_| Samples::default());
        for round in 0..self.runs {
            fast.push(
                handle(&notifiers.concurrent, sandbox, topic, self.records)
                    .await?
                    .0,
            );
            slow.push(
                handle(&notifiers.one_at_a_time, sandbox, topic, self.records)
                    .await?
                    .0,
            );
            for (samples, notifier) in in_region.iter_mut().zip(notifiers.in_region_all()) {
                samples.push(handle(notifier, sandbox, topic, self.records).await?.0);
            }
            eprintln!("notifier: round {}/{} done", round + 1, self.runs);
        }
        let (records, latency_ms) = (self.records, self.latency.as_millis());
        let default = notifier::DEFAULT_CONCURRENCY;
        let sends = format!("{records}-record batch, sends take {latency_ms} ms");
        let metric = format!("{sends}, {default} keys at once");
        report.add(
            Figure::of("notifier", &metric, "rec/s", &fast).against("one record at a time", &slow),
        );
        let [deployed, doubled, one_at_a_time] = &in_region;
        for (keys, samples) in [(default, deployed), (2 * default, doubled)] {
            let metric = format!(
                "{sends}, keys on a store answering in {} ms concurrently (DynamoDB in-region), {keys} keys at once",
                IN_REGION_LATENCY.as_millis(),
            );
            report.add(
                Figure::of("notifier", &metric, "rec/s", samples)
                    .against("one record at a time", one_at_a_time),
            );
        }
        Ok(())
    }

    /// Against a sandbox that refuses what goes over the rate limit: messages
    /// delivered a second and 429s, with the send-rate limit and without.
    async fn rate_limited(
        &self,
        report: &mut Report,
        direct: &DirectNotifier,
        notifiers: &Notifiers,
    ) -> Result<(), Error> {
        let topic = &direct.topics.payment_completed;
        let handle = |notifier, records| handle(notifier, &direct.sandbox, topic, records);
        direct.sandbox.limit_rate(Some(self.rate_limit));
        let (mut limited_rate, mut limited_429) = (Samples::default(), Samples::default());
        let (mut unlimited_rate, mut unlimited_429) = (Samples::default(), Samples::default());
        let rounds = self.runs.min(3);
        for round in 0..rounds {
            // Each run starts with an empty window at the sandbox.
            tokio::time::sleep(Duration::from_millis(1_100)).await;
            let (_, rate, refused) = handle(&notifiers.paced, self.records).await?;
            limited_rate.push(rate);
            limited_429.push(refused as f64);
            tokio::time::sleep(Duration::from_millis(1_100)).await;
            let (_, rate, refused) = handle(&notifiers.concurrent, self.records).await?;
            unlimited_rate.push(rate);
            unlimited_429.push(refused as f64);
            eprintln!("notifier rate limit: round {}/{rounds} done", round + 1);
        }
        direct.sandbox.limit_rate(None);
        let metric = |what: &str| {
            format!(
                "{what}, API limit {0}/s, TELEGRAM_MAX_SENDS_PER_SECOND={0}",
                self.rate_limit
            )
        };
        report.add(
            Figure::of("notifier", &metric("delivered/s"), "msg/s", &limited_rate)
                .against("no send-rate limit", &unlimited_rate),
        );
        report.add(
            Figure::of(
                "notifier",
                &metric(&format!("429s per {} records", self.records)),
                "429s",
                &limited_429,
            )
            .against("no send-rate limit", &unlimited_429),
        );
        Ok(())
    }
}
