//! End to end: payments at a fixed rate through the local runner (HTTP API,
//! outbox stream, relay, Kafka, notifier, sandbox), each timed from its HTTP
//! 200 to the sandbox receiving its message (matched by the customer's mail).
//! Printed beside them: the runner's polling settings, and as the baseline the
//! floor those settings put under any delivery (one stream poll plus one Kafka
//! batching window), so the ratio says what the pipeline adds to polling.

use crate::Error;
use crate::report::{Figure, Report, Samples};
use chrono::{DateTime, Utc};
use local_runner::template::StreamMapping;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::{KAFKA_BATCHING_WINDOW, Options, STREAM_POLL_INTERVAL, TestPipeline};

pub struct EndToEndBench {
    /// Payments sent (500).
    pub payments: usize,
    /// Payments started a second.
    pub per_second: f64,
}

/// A held seat waiting for its payment: the user's token, mail and reservation.
struct Hold {
    jwt: String,
    mail: String,
    reservation: String,
}

/// Every user holds a seat (not timed).
async fn hold_every_seat(
    pipeline: &TestPipeline,
    seeded: &shared::seed::Seeded,
) -> Result<Vec<Hold>, Error> {
    let mut holds = Vec::with_capacity(seeded.users.len());
    for (user, seat) in seeded.users.iter().zip(&seeded.seats) {
        let (status, answer) = pipeline.hold(&user.jwt, seat.id).await;
        match (status, answer["reservationId"].as_str()) {
            (201, Some(id)) => holds.push(Hold {
                jwt: user.jwt.clone(),
                mail: user.user.mail.as_str().to_owned(),
                reservation: id.to_owned(),
            }),
            _ => {
                return Err(Error::Measure(format!(
                    "holding a seat answered {status}: {answer}"
                )));
            }
        }
    }
    Ok(holds)
}

/// Each message's latency from its payment's 200, in ms.
fn latencies(pipeline: &TestPipeline, accepted: &HashMap<String, DateTime<Utc>>) -> Samples {
    let mut latency = Samples::default();
    for message in pipeline.sandbox.messages() {
        if let Some((_, at)) = accepted
            .iter()
            .find(|(mail, _)| message.text.contains(*mail))
        {
            latency.push((message.received_at - *at).num_microseconds().unwrap_or(0) as f64 / 1e3);
        }
    }
    latency
}

impl EndToEndBench {
    pub async fn run(&self, report: &mut Report) -> Result<(), Error> {
        let pipeline = Arc::new(TestPipeline::start(Options::default()).await);
        let n = self.payments as u32;
        let seeded = testkit::seed(&pipeline.repo, n, n, 1_000_000, 50_000).await;
        let holds = hold_every_seat(&pipeline, &seeded).await?;
        let started = Instant::now();
        let accepted = self.pay_at_rate(&pipeline, holds).await?;
        let sending = started.elapsed();
        pipeline
            .wait_for_messages(self.payments, Duration::from_secs(120))
            .await;
        let latency = latencies(&pipeline, &accepted);
        if latency.len() != self.payments {
            return Err(Error::Measure(format!(
                "{} of {} messages matched their payments",
                latency.len(),
                self.payments
            )));
        }
        self.report(report, &latency, sending);
        match Arc::try_unwrap(pipeline) {
            Ok(pipeline) => pipeline.stop().await,
            Err(_) => eprintln!("end-to-end: the pipeline is still shared; it stops when dropped"),
        }
        Ok(())
    }

    /// The payments, one every 1/rate seconds, each on its own task: when each
    /// customer's payment was accepted, by mail.
    async fn pay_at_rate(
        &self,
        pipeline: &Arc<TestPipeline>,
        holds: Vec<Hold>,
    ) -> Result<HashMap<String, DateTime<Utc>>, Error> {
        let gap = Duration::from_secs_f64(1.0 / self.per_second);
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(holds.len());
        for (i, hold) in holds.into_iter().enumerate() {
            let pipeline = pipeline.clone();
            let at = started + gap * i as u32;
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep_until(at.into()).await;
                let (status, answer) = pipeline.pay(&hold.jwt, &hold.reservation).await;
                (hold.mail, status, answer, Utc::now())
            }));
        }
        let mut accepted = HashMap::new();
        for task in tasks {
            let (mail, status, answer, at) = task
                .await
                .map_err(|e| Error::Measure(format!("a payment task: {e}")))?;
            if status != 200 {
                return Err(Error::Measure(format!(
                    "a payment answered {status}: {answer}"
                )));
            }
            accepted.insert(mail, at);
        }
        Ok(accepted)
    }

    /// The latency percentiles beside the floor the runner's polling puts under them.
    fn report(&self, report: &mut Report, latency: &Samples, sending: Duration) {
        // The relay's batching window is the template's (a lone record waits it out on AWS too).
        let stream_window = StreamMapping::relay()
            .map(|m| m.batching_window)
            .unwrap_or_default();
        let floor_ms =
            (STREAM_POLL_INTERVAL + stream_window + KAFKA_BATCHING_WINDOW).as_secs_f64() * 1e3;
        let mut floor = Samples::default();
        floor.push(floor_ms);
        let settings = format!(
            "stream poll {} ms, stream batching window {} ms, Kafka batching window {} ms",
            STREAM_POLL_INTERVAL.as_millis(),
            stream_window.as_millis(),
            KAFKA_BATCHING_WINDOW.as_millis()
        );
        eprintln!(
            "end-to-end: {} payments sent in {:.1} s ({:.0}/s asked); runner: {settings}",
            self.payments,
            sending.as_secs_f64(),
            self.per_second
        );
        for (name, p) in [("p50", 50.0), ("p99", 99.0), ("max", 100.0)] {
            report.add(
                Figure::at_percentile(
                    "end-to-end",
                    &format!(
                        "payment accepted to message received {name}, {} at {}/s",
                        self.payments, self.per_second
                    ),
                    "ms",
                    latency,
                    p,
                )
                .against(&format!("the polling floor ({settings})"), &floor),
            );
        }
    }
}
