//! Relay: one invocation with a batch of real outbox items (DynamoDB stream
//! INSERT records) until every record is acknowledged by the broker (tansu).
//! Baseline A: raw rdkafka producing the same payloads to the same broker (the
//! ceiling). Baseline B: the same relay sending and waiting record by record.
//! And the relay's release bootstrap's peak RSS with a large batch.

use crate::Error;
use crate::init::start_and_invoke;
use crate::report::{Figure, Report, Samples};
use aws_lambda_events::dynamodb::Event;
use local_runner::runtime_api::Outcome;
use outbox_relay::Relay;
use rdkafka::producer::FutureProducer;
use shared::config::{TableNames, TopicNames};
use shared::domain::ReservationId;
use shared::kafka::{KafkaPublisher, KafkaSettings, ProducerSettings};
use shared::outbox::OutboxItem;
use shared::ports::{EventPublisher, OutboundRecord};
use std::path::PathBuf;
use std::time::Instant;
use testkit::functions::lambda_env;

/// Baseline B's publisher: each record sent, then waited for, before the next.
struct OneByOne(KafkaPublisher);

impl EventPublisher for OneByOne {
    async fn publish_all(&self, records: &[OutboundRecord]) -> Vec<Result<(), shared::Error>> {
        let mut results = Vec::with_capacity(records.len());
        for record in records {
            results.extend(self.0.publish_all(std::slice::from_ref(record)).await);
        }
        results
    }
}

/// A stream batch of `n` outbox inserts of PaymentCompleted events, one
/// reservation each.
pub fn outbox_batch(n: usize) -> Event {
    let mut event = Event::default();
    event.records = (0..n)
        .map(|i| {
            let envelope = shared::fixtures::payment_completed_envelope(
                ReservationId::random(),
                "bench@example.com",
                50_000,
            );
            shared::fixtures::outbox_insert(&envelope, i as u64 + 1)
        })
        .collect();
    event
}

/// What the relay would publish for `event`, for the raw baseline.
fn outbound(event: &Event, topics: &TopicNames) -> Result<Vec<OutboundRecord>, Error> {
    event
        .records
        .iter()
        .map(|r| {
            serde_dynamo::from_item::<_, OutboxItem>(r.change.new_image.clone())
                .map_err(|e| Error::Measure(format!("a sample outbox item: {e}")))
                .map(|item| item.to_record(topics))
        })
        .collect()
}

async fn relay_once<P: EventPublisher>(relay: &Relay<P>, event: &Event) -> Result<f64, Error> {
    let event = event.clone();
    let records = event.records.len();
    let started = Instant::now();
    let answer = relay.relay(event).await;
    let elapsed = started.elapsed().as_secs_f64();
    if !answer.response.batch_item_failures.is_empty() {
        return Err(Error::Measure(format!(
            "the relay reported failures: {:?}",
            answer.response.batch_item_failures
        )));
    }
    Ok(records as f64 / elapsed)
}

/// Sends every payload, then waits for every acknowledgement.
async fn raw_once(producer: &FutureProducer, records: &[OutboundRecord]) -> Result<f64, Error> {
    let started = Instant::now();
    let mut pending = Vec::with_capacity(records.len());
    for r in records {
        let record = shared::kafka::future_record(r);
        pending.push(
            producer
                .send_result(record)
                .map_err(|(e, _)| Error::Measure(format!("raw produce: {e}")))?,
        );
    }
    for delivery in pending {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(Error::Measure(format!("raw produce: {e}"))),
            Err(_) => return Err(Error::Measure("raw produce: canceled".into())),
        }
    }
    Ok(records.len() as f64 / started.elapsed().as_secs_f64())
}

pub struct RelayBench {
    pub runs: usize,
    /// Records per timed batch (1,000).
    pub records: usize,
    /// Records of the batch whose peak RSS is measured (10,000).
    pub rss_records: usize,
    pub bootstrap: PathBuf,
}

impl RelayBench {
    pub async fn run(
        &self,
        report: &mut Report,
        kafka: &KafkaSettings,
        tables: &TableNames,
        topics: &TopicNames,
    ) -> Result<(), Error> {
        // Clients once, as per cold start; a first small batch opens the connections.
        let producer_settings = ProducerSettings::default();
        let relay = Relay::new(
            KafkaPublisher::new(kafka, &producer_settings)?,
            topics.clone(),
        );
        let one_by_one = Relay::new(
            OneByOne(KafkaPublisher::new(kafka, &producer_settings)?),
            topics.clone(),
        );
        let raw: FutureProducer = kafka
            .client_config()
            .set(
                "linger.ms",
                producer_settings.linger.as_millis().to_string(),
            )
            .create()
            .map_err(|e| Error::Measure(format!("raw producer: {e}")))?;
        let warm_up = outbox_batch(10);
        relay_once(&relay, &warm_up).await?;
        relay_once(&one_by_one, &warm_up).await?;
        raw_once(&raw, &outbound(&warm_up, topics)?).await?;

        let mut pipelined = Samples::default();
        let mut sequential = Samples::default();
        let mut ceiling = Samples::default();
        for round in 0..self.runs {
            let event = outbox_batch(self.records);
            let records = outbound(&event, topics)?;
            pipelined.push(relay_once(&relay, &event).await?);
            sequential.push(relay_once(&one_by_one, &outbox_batch(self.records)).await?);
            ceiling.push(raw_once(&raw, &records).await?);
            eprintln!("relay: round {}/{} done", round + 1, self.runs);
        }
        let metric = format!("relay, {}-record batch", self.records);
        report.add(
            Figure::of("relay", &metric, "rec/s", &pipelined)
                .against("raw rdkafka, same payloads (ceiling)", &ceiling),
        );
        report.add(
            Figure::of("relay", &metric, "rec/s", &pipelined)
                .against("relay sending record by record", &sequential),
        );

        // Peak RSS of the real bootstrap: the large batch beside the timed size.
        let mut small = Samples::default();
        let mut large = Samples::default();
        for _ in 0..self.runs.min(3) {
            small.push(self.bootstrap_rss(tables, topics, self.records).await?);
            large.push(self.bootstrap_rss(tables, topics, self.rss_records).await?);
        }
        report.add(
            Figure::of(
                "relay",
                &format!("relay peak RSS, {}-record batch", self.rss_records),
                "MiB",
                &large,
            )
            .against(&format!("{}-record batch", self.records), &small),
        );
        Ok(())
    }

    async fn bootstrap_rss(
        &self,
        tables: &TableNames,
        topics: &TopicNames,
        records: usize,
    ) -> Result<f64, Error> {
        let event = serde_json::to_value(outbox_batch(records))
            .map_err(|e| Error::Measure(format!("a stream batch as JSON: {e}")))?;
        let started = start_and_invoke(
            "outbox-relay",
            &self.bootstrap,
            |api| lambda_env(api, "outbox-relay", tables, topics),
            event,
        )
        .await?;
        match started.outcome {
            Outcome::Response(answer)
                if answer["batchItemFailures"]
                    .as_array()
                    .is_some_and(Vec::is_empty) =>
            {
                Ok(started.peak_rss_kib as f64 / 1024.0)
            }
            other => Err(Error::Measure(format!(
                "the relay bootstrap did not publish all {records} records: {other:?}"
            ))),
        }
    }
}
