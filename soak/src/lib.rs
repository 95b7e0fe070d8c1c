//! `make soak`: payments from concurrent clients through the local pipeline
//! while everything around it fails on purpose (the Telegram sandbox fails a
//! share of sends with timeouts, 5xx and 429s, and delivers a share of the others
//! but loses their answers; the Kafka source delivers every
//! batch twice and kills one notifier invocation mid-batch; the broker may be
//! restarted mid-run; dlq-retry runs on a short schedule). The data-platform
//! feed runs beside the notifier, under the same faults. Then it checks that
//! confirmed payments = events published = messages delivered exactly once =
//! sales the data platform received (a second copy counted apart when it
//! follows a lost answer or an invocation killed mid-send: the `retry` policy
//! sends those again, as it says), the
//! ledger names only published events and holds nothing pending or failed,
//! every balance is its start minus its confirmed payments, and no seat was sold
//! twice.

mod checks;
mod clients;

use checks::{
    check_balances_and_seats, check_faults, check_ledger, check_published, event_ids,
    one_key_per_partition, payment_events, published_records, tally_platform, tally_told,
    told_per_customer,
};
use chrono::Duration;
use clap::Args;
use clients::drive_clients;
use local_runner::kafka_source::DeliveryFaults;
use local_runner::notification_sandbox::Chaos;
use shared::domain::{ReservationId, ReservationStatus, SeatId};
use shared::dynamodb::DynamoFailureLedger;
use shared::ledger::LedgerStatus;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};
use testkit::{Options, TestPipeline, seed};

const PRICE: i64 = 50_000;
const BALANCE: i64 = 3 * PRICE;
/// How the notifier's payment message starts (the other kind is a hold expiring).
const PAYMENT_MESSAGE: &str = "[결제 완료]";
/// The line of a message that names the customer.
const CUSTOMER_LINE: &str = "예약자: ";

/// The soak's size and faults.
#[derive(Args, Clone, Debug)]
pub struct SoakConfig {
    /// Seats, each paid for by one customer (a tenth more customers try).
    #[arg(long, default_value_t = 2000)]
    pub payments: usize,
    /// Clients sending requests at once.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// The share of payments submitted twice at once (a double click).
    #[arg(long, default_value_t = 0.1)]
    pub double_submit: f64,
    /// The share of sends the Telegram sandbox fails (timeouts, 5xx, 429s).
    #[arg(long, default_value_t = 0.2)]
    pub failure_rate: f64,
    /// The share of the other sends it delivers and then times out (the
    /// answer lost: under the default `retry` policy they are sent again).
    #[arg(long, default_value_t = 0.02)]
    pub answer_lost_rate: f64,
    /// A shell command that restarts the Kafka broker, run once mid-run.
    #[arg(long)]
    pub restart_broker: Option<String>,
    /// How long to wait for every message after the last payment.
    #[arg(long, default_value_t = 300)]
    pub settle_seconds: u64,
    /// The random sequence's seed (clients' choices and the sandbox's failures).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

impl SoakConfig {
    /// A configuration of `payments` payments with the default faults.
    pub fn small(payments: usize) -> Self {
        SoakConfig {
            payments,
            clients: 8,
            double_submit: 0.1,
            failure_rate: 0.2,
            // High enough that a few dozen payments meet the fault.
            answer_lost_rate: 0.1,
            restart_broker: None,
            settle_seconds: 120,
            seed: 7,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("a soak client failed: {0}")]
    Client(#[from] tokio::task::JoinError),
    #[error("user {0} is gone from the users table")]
    UserGone(String),
    #[error(transparent)]
    Pipeline(#[from] shared::Error),
}

/// What the soak found.
#[derive(Debug, Default)]
pub struct Report {
    /// Confirmed payments.
    pub payments: usize,
    pub delivered_once: usize,
    /// Messages beyond the first per customer, not explained by a lost answer
    /// or a killed invocation.
    pub duplicates: usize,
    /// Messages beyond the first per customer that followed a copy whose
    /// answer was lost, or an invocation killed while it sent them: what the
    /// `retry` policy promises (at least once).
    pub resent: usize,
    /// Confirmed payments whose customer was never told.
    pub lost: usize,
    /// What the data platform received.
    pub platform: PlatformTally,
    /// Everything that broke a promise, one line each.
    pub violations: Vec<String>,
    /// The faults that were injected, one line.
    pub faults: String,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// The confirmed payments' sales as the data platform received them.
#[derive(Debug, Default)]
pub struct PlatformTally {
    pub received_once: usize,
    /// Copies sent again not explained by a lost answer or a killed invocation.
    pub duplicates: usize,
    /// Copies sent again after a lost answer or a killed invocation (the
    /// platform deduplicates them by event id).
    pub resent: usize,
    /// Confirmed payments the platform never received.
    pub lost: usize,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "soak: {} payments, {} delivered once, {} duplicates, {} sent again after a lost answer or a crash, {} lost; ",
            self.payments, self.delivered_once, self.duplicates, self.resent, self.lost
        )?;
        let platform = &self.platform;
        write!(
            f,
            "data platform: {} received once, {} duplicates, {} sent again after a lost answer or a crash, {} lost",
            platform.received_once, platform.duplicates, platform.resent, platform.lost
        )
    }
}

/// One customer's attempt: the reservation they held, if they got the seat.
#[derive(Clone, Copy, Debug)]
struct Attempt {
    user: usize,
    reservation: Option<ReservationId>,
}

/// Runs the soak on its own tables and topics of the local stack.
pub async fn run(config: &SoakConfig) -> Result<Report, Error> {
    let started = Instant::now();
    let faults = DeliveryFaults {
        duplicate: true,
        kill_once_after: Some(StdDuration::from_millis(300)),
        ..DeliveryFaults::default()
    };
    let pipeline = Arc::new(start_pipeline(config, &faults).await);
    // A tenth more customers than seats: some find their seat taken.
    let customers = config.payments + config.payments / 10;
    let seeded = Arc::new(
        seed(
            &pipeline.repo,
            config.payments as u32,
            customers as u32,
            BALANCE,
            PRICE,
        )
        .await,
    );
    eprintln!(
        "soak: {customers} customers, {} seats, {} clients",
        config.payments, config.clients
    );

    let (attempts, restarted) = drive_clients(config, &pipeline, &seeded).await?;
    eprintln!(
        "soak: {} customers done in {:.0} s; waiting for the messages",
        attempts.len(),
        started.elapsed().as_secs_f64()
    );
    let mut report = Report::default();
    let (confirmed, seat_sales) = confirmed_payments(&pipeline, &attempts).await?;
    let ledger = DynamoFailureLedger::new(
        pipeline.dynamodb.clone(),
        pipeline.tables.failed_messages.clone(),
    );
    let mails: HashMap<usize, String> = confirmed
        .keys()
        .map(|user| (*user, seeded.users[*user].user.mail.as_str().to_owned()))
        .collect();
    wait_until_told(config, &pipeline, &ledger, &mails, confirmed.len()).await?;
    pipeline.sandbox.chaos(None);
    // A late second copy would show before markers sent behind every
    // partition's records and dead letters.
    let payment_records = published_records(&pipeline.topics.payment_completed).await;
    let keys = one_key_per_partition(&payment_records);
    pipeline
        .settle_retries(&keys.iter().map(String::as_str).collect::<Vec<_>>())
        .await;

    report.payments = confirmed.len();
    let events = payment_events(&payment_records, &confirmed);
    let killed: BTreeSet<String> = faults.injected.killed_event_ids().into_iter().collect();
    tally_told(&pipeline, &mails, &events, &killed, &mut report);
    tally_platform(&pipeline, &events, &killed, &mut report);
    let mut published = check_published(&payment_records, confirmed.len(), &mut report);
    // Holds that expired were told too, and their failures are in the ledger.
    published.extend(event_ids(
        &published_records(&pipeline.topics.seat_hold_expired).await,
    ));
    let markers = pipeline.marker_event_ids();
    check_ledger(&ledger, &published, &markers, &mut report).await?;
    check_balances_and_seats(&pipeline, &seeded, &confirmed, &seat_sales, &mut report).await?;
    check_faults(config, &pipeline, &faults, restarted, &mut report);
    if let Ok(pipeline) = Arc::try_unwrap(pipeline) {
        pipeline.stop().await;
    }
    eprintln!("soak: finished in {:.0} s", started.elapsed().as_secs_f64());
    Ok(report)
}

/// A pipeline of its own with the soak's faults: the sandbox's chaos, the
/// Kafka source's `faults`, dlq-retry every 2 s with a short back-off.
async fn start_pipeline(config: &SoakConfig, faults: &DeliveryFaults) -> TestPipeline {
    let pipeline = TestPipeline::start(Options {
        retry_delay: Duration::seconds(1),
        // Also how long a killed invocation's idempotency keys stay locked.
        function_timeout: StdDuration::from_secs(10),
        dlq_retry_interval: StdDuration::from_secs(2),
        dlq_retry: dlq_retry::Settings {
            max_retries: 1_000,
            backoff_base: Duration::seconds(1),
            backoff_max: Duration::seconds(5),
            ..Default::default()
        },
        delivery_faults: faults.clone(),
        data_platform: true,
        ..Options::default()
    })
    .await;
    pipeline.sandbox.chaos(Some(Chaos {
        failure_rate: config.failure_rate,
        timeout_ms: 6_000,
        seed: Some(config.seed),
        answer_lost_rate: config.answer_lost_rate,
    }));
    pipeline
}

/// The confirmed payments per customer, from the reservations table, and how
/// many confirmed reservations each seat has.
async fn confirmed_payments(
    pipeline: &TestPipeline,
    attempts: &[Attempt],
) -> Result<(HashMap<usize, ReservationId>, HashMap<SeatId, usize>), Error> {
    let mut confirmed = HashMap::new();
    let mut seat_sales: HashMap<SeatId, usize> = HashMap::new();
    for attempt in attempts {
        let Some(id) = attempt.reservation else {
            continue;
        };
        if let Some(r) = pipeline.repo.reservation(id).await?
            && matches!(r.status, ReservationStatus::Confirmed { .. })
        {
            confirmed.insert(attempt.user, id);
            *seat_sales.entry(r.seat_id).or_default() += 1;
        }
    }
    Ok((confirmed, seat_sales))
}

/// Waits until every confirmed customer was told, the data platform holds as
/// many sales as there are confirmed payments, and no ledger row is pending,
/// or `settle_seconds` passed.
async fn wait_until_told(
    config: &SoakConfig,
    pipeline: &TestPipeline,
    ledger: &DynamoFailureLedger,
    mails: &HashMap<usize, String>,
    confirmed: usize,
) -> Result<(), Error> {
    let settle_by = Instant::now() + StdDuration::from_secs(config.settle_seconds);
    let mut last_report = Instant::now();
    loop {
        let told = told_per_customer(pipeline);
        let waiting = mails.values().filter(|m| !told.contains_key(*m)).count();
        let sales = pipeline
            .platform_events()
            .iter()
            .filter(|e| e.event["eventType"] == "PaymentCompleted")
            .count();
        let platform_waiting = confirmed.saturating_sub(sales);
        let pending = ledger.list(Some(LedgerStatus::Pending)).await?.len();
        let done = waiting == 0 && platform_waiting == 0 && pending == 0;
        if done || Instant::now() >= settle_by {
            return Ok(());
        }
        if last_report.elapsed() >= StdDuration::from_secs(30) {
            eprintln!(
                "soak: {waiting} customers not told yet, {platform_waiting} sales not on the data platform, {pending} ledger rows pending"
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(TOLD_POLL_INTERVAL).await;
    }
}

/// How often the soak looks whether every customer was told: each look reads the
/// sandbox and scans the ledger's PENDING rows.
const TOLD_POLL_INTERVAL: StdDuration = StdDuration::from_secs(1);
