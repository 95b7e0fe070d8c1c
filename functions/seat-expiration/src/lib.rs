//! seat-expiration: on a schedule, releases the seats whose temporary hold
//! expired. It finds them in the sparse held-seats index (only HELD seats are in
//! it) by hold expiry up to now, page by page, shard by shard, and releases each
//! in one transaction conditioned on the seat still being HELD by that
//! reservation with an expired hold: the seat AVAILABLE, the reservation EXPIRED
//! and a SeatHoldExpired outbox item, which the relay publishes to
//! `seat.hold-expired`. A seat paid or re-held meanwhile is skipped, so running it
//! twice, or two copies at once, releases each hold once with one event. It stops
//! before the invocation's deadline; what is left is done by the next run.

use chrono::{DateTime, Duration, Utc};
use lambda_runtime::LambdaEvent;
use serde::Serialize;
use shared::clock::Clock;
use shared::config::{TableNames, Vars};
use shared::domain::EventId;
use shared::dynamodb::items::{HELD_SHARDS, held_shard_name};
use shared::dynamodb::{ExpiredHold, Release, TicketingRepository};
use shared::spans;
use shared::trace::TraceContext;
use std::sync::Arc;
use tracing::Instrument;

/// Why the function could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("seat-expiration is misconfigured")]
    Config(#[source] shared::config::ConfigError),
    #[error("listing the expired holds failed")]
    List(#[source] shared::Error),
}

/// Holds read per index query unless `EXPIRATION_PAGE_SIZE` says otherwise.
pub const DEFAULT_PAGE_SIZE: i32 = 25;
/// Stop this long before the deadline unless `EXPIRATION_SAFETY_MARGIN_SECONDS` says otherwise.
pub const DEFAULT_SAFETY_MARGIN: Duration = Duration::seconds(5);
/// How long a run may take when the invocation has no deadline (a local call).
pub const DEFAULT_RUN_TIME: Duration = Duration::minutes(1);

/// What the function reads from its variables besides its tables.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `EXPIRATION_PAGE_SIZE`: holds read per index query.
    pub page_size: i32,
    /// `EXPIRATION_SAFETY_MARGIN_SECONDS`: stop taking new holds when less
    /// than this is left before the deadline.
    pub safety_margin: Duration,
    /// Used when the invocation has no deadline (a local call).
    pub default_run_time: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            page_size: DEFAULT_PAGE_SIZE,
            safety_margin: DEFAULT_SAFETY_MARGIN,
            default_run_time: DEFAULT_RUN_TIME,
        }
    }
}

impl Settings {
    pub fn from_vars(vars: &Vars) -> Result<Self, shared::config::ConfigError> {
        let default = Settings::default();
        Ok(Settings {
            page_size: vars.parsed("EXPIRATION_PAGE_SIZE", default.page_size)?,
            safety_margin: vars
                .seconds("EXPIRATION_SAFETY_MARGIN_SECONDS", default.safety_margin)?,
            default_run_time: default.default_run_time,
        })
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub tables: TableNames,
    pub settings: Settings,
}

impl Config {
    pub fn from_env() -> Result<Self, Error> {
        let read = || -> Result<Config, shared::config::ConfigError> {
            Ok(Config {
                tables: TableNames::from_env(),
                settings: Settings::from_vars(&Vars::process())?,
            })
        };
        read().map_err(Error::Config)
    }
}

/// What one run did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpirationReport {
    pub released: u32,
    /// Paid, re-held or released by another run meanwhile.
    pub skipped: u32,
    /// Could not be released this time; the next run tries again.
    pub failed: u32,
    /// True when the run stopped for the deadline with holds left.
    pub stopped_for_deadline: bool,
}

impl ExpirationReport {
    /// The run's `Holds` by outcome.
    fn count(&self) {
        shared::metrics::count_outcomes(
            "Holds",
            &[
                ("released", self.released.into()),
                ("skipped", self.skipped.into()),
                ("failed", self.failed.into()),
            ],
        );
    }
}

pub struct SeatExpiration {
    repository: TicketingRepository,
    config: Config,
    clock: Arc<dyn Clock>,
}

impl SeatExpiration {
    pub fn new(config: Config, client: aws_sdk_dynamodb::Client, clock: Arc<dyn Clock>) -> Self {
        SeatExpiration {
            repository: TicketingRepository::new(client, config.tables.clone()),
            config,
            clock,
        }
    }

    pub async fn handle(
        &self,
        event: LambdaEvent<serde_json::Value>,
    ) -> Result<ExpirationReport, lambda_runtime::Error> {
        let deadline = shared::clock::deadline_from_millis(event.context.deadline)
            .unwrap_or_else(|| self.clock.now() + self.config.settings.default_run_time);
        let span = spans::invocation("seat-expiration", &event.context.request_id);
        // The run's trace: its SeatHoldExpired events carry it to their notices.
        let trace = TraceContext::for_invocation(event.context.xray_trace_id.as_deref());
        span.record("trace_id", trace.trace_id());
        let report = self
            .traced(trace)
            .run(deadline)
            .instrument(span.clone())
            .await
            .map_err(Box::new)?;
        span.in_scope(|| tracing::info!(?report, "seat-expiration run finished"));
        report.count();
        Ok(report)
    }

    /// The same job, its events carrying `trace`.
    fn traced(&self, trace: TraceContext) -> SeatExpiration {
        SeatExpiration {
            repository: self.repository.traced(trace),
            config: self.config.clone(),
            clock: self.clock.clone(),
        }
    }

    fn out_of_time(&self, deadline: DateTime<Utc>) -> bool {
        self.clock.now() + self.config.settings.safety_margin >= deadline
    }

    /// Releases one expired hold (with its SeatHoldExpired event) unless a
    /// payment or another run got there first; a failure is logged and left to
    /// the next run, so one seat's failure does not stop the others.
    async fn release(&self, hold: &ExpiredHold, report: &mut ExpirationReport) {
        let now = self.clock.now();
        match self
            .repository
            .release_expired_hold(hold, now, EventId::random())
            .await
        {
            Ok(Release::Released) => {
                report.released += 1;
                tracing::info!("hold expired; seat released");
            }
            Ok(Release::Skipped) => report.skipped += 1,
            Err(e) => {
                report.failed += 1;
                tracing::error!(error = %shared::error_chain(&e), "could not release the hold; the next run tries again");
            }
        }
    }

    /// Releases every expired hold, page by page, until done or near the deadline.
    pub async fn run(&self, deadline: DateTime<Utc>) -> Result<ExpirationReport, Error> {
        let mut report = ExpirationReport::default();
        let cutoff = self.clock.now();
        for shard in 0..HELD_SHARDS {
            let shard = held_shard_name(shard);
            let mut start = None;
            loop {
                if self.out_of_time(deadline) {
                    report.stopped_for_deadline = true;
                    return Ok(report);
                }
                let (holds, next) = self
                    .repository
                    .expired_holds(&shard, cutoff, self.config.settings.page_size, start)
                    .await
                    .map_err(Error::List)?;
                for hold in &holds {
                    if self.out_of_time(deadline) {
                        report.stopped_for_deadline = true;
                        return Ok(report);
                    }
                    let span = spans::expired_hold(
                        &hold.reservation_id.to_string(),
                        &hold.seat_id.to_string(),
                    );
                    self.release(hold, &mut report).instrument(span).await;
                }
                match next {
                    Some(key) => start = Some(key),
                    None => break,
                }
            }
        }
        Ok(report)
    }
}
