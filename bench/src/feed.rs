//! Data-platform feed: one invocation with a batch of PaymentCompleted records
//! (one reservation each, over three partitions), the sandbox's platform
//! answering every request after 20 ms, the idempotency keys on moto (two
//! writes per event, taken 16 at a time; moto serves one request at a time, so
//! they bound the figure). Baseline: the same feed sending one event per
//! request (`DATA_PLATFORM_BATCH_SIZE=1`).

use crate::notifier::batch;
use crate::report::{Figure, Report, Samples};
use crate::{Error, measure};
use data_platform_feed::{Config, LambdaFeed};
use lambda_runtime::LambdaEvent;
use local_runner::notification_sandbox::{
    FailurePlan, NotificationSandbox, data_platform_settings,
};
use shared::channels::DATA_PLATFORM;
use shared::clock::SystemClock;
use shared::kafka::ProducerSettings;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct FeedBench {
    pub runs: usize,
    /// Records per timed batch (1,000).
    pub records: usize,
    /// The platform's answer time (20 ms).
    pub latency: Duration,
}

/// The feeds compared, on the same tables and platform.
struct Feeds {
    /// As deployed: `DATA_PLATFORM_BATCH_SIZE` events a request.
    batched: LambdaFeed,
    /// One event a request.
    one_per_request: LambdaFeed,
    topic: String,
}

impl Feeds {
    async fn start(sandbox: &NotificationSandbox) -> Result<Feeds, Error> {
        let aws = testkit::aws().await;
        let (tables, topics) = testkit::provision(&aws, 3).await;
        let addr = sandbox
            .serve("127.0.0.1:0".parse().expect("an address"))
            .await?;
        let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
        let config = Config {
            tables,
            platform: data_platform_settings(addr),
            idempotency_ttl: chrono::Duration::days(1),
            kafka: testkit::kafka(),
            producer: ProducerSettings::default(),
            topics: topics.clone(),
            retry_delay: chrono::Duration::seconds(60),
        };
        let build = |batch_size: usize| {
            let mut config = config.clone();
            config.platform.batch_size = batch_size;
            LambdaFeed::from_config(&config, dynamodb.clone(), Arc::new(SystemClock))
                .map_err(measure)
        };
        Ok(Feeds {
            batched: build(config.platform.batch_size)?,
            one_per_request: build(1)?,
            topic: topics.payment_completed,
        })
    }

    /// Records a second through `feed`; every one must reach the platform.
    async fn handle(&self, feed: &LambdaFeed, records: usize) -> Result<f64, Error> {
        let event = batch(records, &self.topic);
        let started = Instant::now();
        let answer = feed
            .handle(LambdaEvent::new(event, lambda_runtime::Context::default()))
            .await
            .map_err(|e| Error::Measure(format!("the feed failed: {e}")))?;
        let elapsed = started.elapsed().as_secs_f64();
        if answer.delivered != records {
            return Err(Error::Measure(format!(
                "the feed delivered {} of {records} records",
                answer.delivered
            )));
        }
        Ok(records as f64 / elapsed)
    }
}

impl FeedBench {
    pub async fn run(&self, report: &mut Report) -> Result<(), Error> {
        let sandbox = NotificationSandbox::default();
        let feeds = Feeds::start(&sandbox).await?;
        sandbox.fail_next(
            FailurePlan {
                delay_ms: Some(self.latency.as_millis() as u64),
                ..FailurePlan::fail(u32::MAX, 200)
            }
            .on(DATA_PLATFORM),
        );
        // Connections and clients warm, as after a cold start.
        feeds.handle(&feeds.batched, 10).await?;
        feeds.handle(&feeds.one_per_request, 10).await?;
        let (mut batched, mut single) = (Samples::default(), Samples::default());
        for round in 0..self.runs {
            batched.push(feeds.handle(&feeds.batched, self.records).await?);
            single.push(feeds.handle(&feeds.one_per_request, self.records).await?);
            eprintln!("data-platform-feed: round {}/{} done", round + 1, self.runs);
        }
        report.add(
            Figure::of(
                "data-platform-feed",
                &format!(
                    "{}-record batch, the platform answers in {} ms, {} events a request",
                    self.records,
                    self.latency.as_millis(),
                    shared::channels::DEFAULT_DATA_PLATFORM_BATCH_SIZE
                ),
                "rec/s",
                &batched,
            )
            .against("one event per request", &single),
        );
        Ok(())
    }
}
