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

use chrono::Duration;
use clap::Args;
use local_runner::kafka_source::DeliveryFaults;
use local_runner::notification_sandbox::Chaos;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use shared::domain::{ReservationId, ReservationStatus, SeatId, SeatStatus};
use shared::dynamodb::DynamoFailureLedger;
use shared::ledger::LedgerStatus;
use shared::seed::Seeded;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration as StdDuration, Instant};
use testkit::{Options, TestPipeline, consume, header, seed};
use tokio::sync::Mutex;

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

/// Each confirmed customer's payment event id, from the topic's records
/// (keyed by reservation).
fn payment_events(
    records: &[OwnedMessage],
    confirmed: &HashMap<usize, ReservationId>,
) -> HashMap<usize, String> {
    let by_reservation: HashMap<String, String> = records
        .iter()
        .filter_map(|m| {
            let key = String::from_utf8_lossy(m.key()?).into_owned();
            Some((key, header(m, "event-id")?))
        })
        .collect();
    confirmed
        .iter()
        .filter_map(|(user, reservation)| {
            let event = by_reservation.get(&reservation.to_string())?;
            Some((*user, event.clone()))
        })
        .collect()
}

/// Splits the copies beyond the first into those a lost answer or a killed
/// invocation explains (at most one each) and unexplained duplicates.
fn split_extra(extra: usize, answers_lost: usize, killed: bool) -> (usize, usize) {
    let explained = extra.min(answers_lost + usize::from(killed));
    (explained, extra - explained)
}

/// Counts each confirmed customer told once, twice or never, and those told
/// of a payment that did not happen.
fn tally_told(
    pipeline: &TestPipeline,
    mails: &HashMap<usize, String>,
    events: &HashMap<usize, String>,
    killed: &BTreeSet<String>,
    report: &mut Report,
) {
    let told = told_per_customer(pipeline);
    for (user, mail) in mails {
        match told.get(mail).copied().unwrap_or_default() {
            Told { copies: 0, .. } => report.lost += 1,
            Told {
                copies,
                answers_lost,
            } => {
                report.delivered_once += 1;
                let in_killed = events.get(user).is_some_and(|e| killed.contains(e));
                let (resent, duplicates) = split_extra(copies - 1, answers_lost, in_killed);
                report.resent += resent;
                report.duplicates += duplicates;
            }
        }
    }
    let phantom = told.len() - mails.values().filter(|m| told.contains_key(*m)).count();
    if phantom > 0 {
        report.violations.push(format!(
            "{phantom} customers told of a payment that did not happen"
        ));
    }
    if report.duplicates > 0 {
        report.violations.push(format!(
            "{} messages sent twice without a lost answer or a crash",
            report.duplicates
        ));
    }
    if report.lost > 0 {
        report
            .violations
            .push(format!("{} confirmed payments never told", report.lost));
    }
}

/// Counts each confirmed payment's sale received by the data platform once,
/// sent again, or never.
fn tally_platform(
    pipeline: &TestPipeline,
    events: &HashMap<usize, String>,
    killed: &BTreeSet<String>,
    report: &mut Report,
) {
    let platform_events = pipeline.platform_events();
    let paid: BTreeSet<&String> = events.values().collect();
    let phantom = platform_events
        .iter()
        .filter(|e| e.event["eventType"] == "PaymentCompleted" && !paid.contains(&e.event_id))
        .count();
    if phantom > 0 {
        report.violations.push(format!(
            "the data platform holds {phantom} sales of payments that did not happen"
        ));
    }
    let received: BTreeSet<String> = platform_events.into_iter().map(|e| e.event_id).collect();
    let mut copies_again: HashMap<String, usize> = HashMap::new();
    for id in pipeline.sandbox.platform_duplicates() {
        *copies_again.entry(id).or_default() += 1;
    }
    let answers_lost = pipeline.sandbox.platform_answers_lost();
    let tally = &mut report.platform;
    for event in events.values() {
        if !received.contains(event) {
            tally.lost += 1;
            continue;
        }
        tally.received_once += 1;
        let extra = copies_again.get(event).copied().unwrap_or_default();
        let lost_answers = answers_lost.get(event).copied().unwrap_or_default();
        let (resent, duplicates) = split_extra(extra, lost_answers, killed.contains(event));
        tally.resent += resent;
        tally.duplicates += duplicates;
    }
    if tally.lost > 0 {
        report.violations.push(format!(
            "{} confirmed payments never reached the data platform",
            tally.lost
        ));
    }
    if tally.duplicates > 0 {
        report.violations.push(format!(
            "{} sales sent to the data platform again without a lost answer or a crash",
            tally.duplicates
        ));
    }
}

/// The faults injected, and a violation for each that never fired: a fault
/// that never fired proves nothing.
fn check_faults(
    config: &SoakConfig,
    pipeline: &TestPipeline,
    faults: &DeliveryFaults,
    restarted: bool,
    report: &mut Report,
) {
    // One kill per Kafka source: the notifier's and the feed's.
    if faults.injected.killed() < 2 {
        report.violations.push(format!(
            "{} of the 2 Kafka sources killed an invocation (the fault must fire in both)",
            faults.injected.killed()
        ));
    }
    if config.restart_broker.is_some() && !restarted {
        report
            .violations
            .push("the broker restart did not happen or failed".into());
    }
    let chaos = pipeline.sandbox.chaos_failures();
    if config.answer_lost_rate > 0.0 && chaos.answers_lost == 0 {
        report
            .violations
            .push("no send lost its answer (the fault never fired)".into());
    }
    report.faults = format!(
        "{} timeouts, {} 5xx, {} 429s, {} answers lost from the sandbox (channels and platform); {} batches delivered twice; {} invocations killed; broker restarted: {}",
        chaos.timeouts,
        chaos.server_errors,
        chaos.rate_limited,
        chaos.answers_lost,
        faults.injected.duplicated_batches(),
        faults.injected.killed(),
        if restarted { "yes" } else { "no" },
    );
}

/// Every customer holds their seat and pays (some twice at once), from
/// `config.clients` clients; halfway through, the broker restarts. Returns the
/// attempts and whether the restart succeeded.
async fn drive_clients(
    config: &SoakConfig,
    pipeline: &Arc<TestPipeline>,
    seeded: &Arc<Seeded>,
) -> Result<(Vec<Attempt>, bool), Error> {
    // Each customer's seat: their own, or (the extra tenth) somebody else's.
    let mut rng = StdRng::seed_from_u64(config.seed);
    let jobs: Vec<(usize, usize, bool)> = (0..seeded.users.len())
        .map(|user| {
            let seat = if user < config.payments {
                user
            } else {
                rng.random_range(0..config.payments)
            };
            (user, seat, rng.random_bool(config.double_submit))
        })
        .collect();
    let queue = Arc::new(Mutex::new(jobs.into_iter()));
    let done = Arc::new(AtomicUsize::new(0));
    let restarts = Arc::new(AtomicUsize::new(0));
    let restarted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..config.clients {
        let (pipeline, seeded, queue, done) = (
            pipeline.clone(),
            seeded.clone(),
            queue.clone(),
            done.clone(),
        );
        let (restarts, restarted, restart) = (
            restarts.clone(),
            restarted.clone(),
            config.restart_broker.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut attempts = Vec::new();
            loop {
                let Some((user, seat, twice)) = queue.lock().await.next() else {
                    break;
                };
                let reservation = hold_and_pay(&pipeline, &seeded, user, seat, twice).await;
                attempts.push(Attempt { user, reservation });
                let finished = done.fetch_add(1, Ordering::SeqCst) + 1;
                if let Some(command) = &restart
                    && finished * 2 >= seeded.users.len()
                    && restarts.fetch_add(1, Ordering::SeqCst) == 0
                {
                    restarted.store(restart_broker(command).await, Ordering::SeqCst);
                }
            }
            attempts
        }));
    }
    let mut attempts = Vec::with_capacity(seeded.users.len());
    for client in clients {
        attempts.extend(client.await?);
    }
    Ok((attempts, restarted.load(Ordering::SeqCst)))
}

/// Holds the seat and pays for it (twice at once if `twice`); the reservation
/// if the hold succeeded (whether the payment did is read from the table later).
async fn hold_and_pay(
    pipeline: &TestPipeline,
    seeded: &Seeded,
    user: usize,
    seat: usize,
    twice: bool,
) -> Option<ReservationId> {
    let customer = &seeded.users[user];
    let (status, hold) = pipeline.hold(&customer.jwt, seeded.seats[seat].id).await;
    let reservation = match (status, hold["reservationId"].as_str()) {
        (201, Some(id)) => ReservationId::parse(id).ok()?,
        _ => return None,
    };
    let id = reservation.to_string();
    if twice {
        tokio::join!(
            pipeline.pay(&customer.jwt, &id),
            pipeline.pay(&customer.jwt, &id)
        );
    } else {
        pipeline.pay(&customer.jwt, &id).await;
    }
    Some(reservation)
}

async fn restart_broker(command: &str) -> bool {
    eprintln!("soak: restarting the broker mid-run: {command}");
    match tokio::process::Command::new("sh")
        .args(["-c", command])
        .status()
        .await
    {
        Ok(status) if status.success() => true,
        other => {
            eprintln!("soak: the broker restart failed: {other:?}");
            false
        }
    }
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

/// The payment messages one customer got.
#[derive(Clone, Copy, Debug, Default)]
struct Told {
    copies: usize,
    /// Of those, the ones whose answer the sender never got.
    answers_lost: usize,
}

/// Payment messages the sandbox accepted, per customer mail.
fn told_per_customer(pipeline: &TestPipeline) -> HashMap<String, Told> {
    let mut told = HashMap::new();
    for message in pipeline.messages() {
        if !message.text.starts_with(PAYMENT_MESSAGE) {
            continue;
        }
        let customer = message
            .text
            .lines()
            .find_map(|line| line.strip_prefix(CUSTOMER_LINE))
            .unwrap_or_default();
        let told: &mut Told = told.entry(customer.to_owned()).or_default();
        told.copies += 1;
        told.answers_lost += usize::from(message.answer_lost);
    }
    told
}

/// Every record on `topic`.
async fn published_records(topic: &str) -> Vec<OwnedMessage> {
    consume(
        &testkit::kafka().bootstrap_servers,
        topic,
        usize::MAX,
        StdDuration::from_secs(10),
    )
    .await
}

/// The distinct event ids of `records`.
fn event_ids(records: &[OwnedMessage]) -> BTreeSet<String> {
    records
        .iter()
        .filter_map(|m| header(m, "event-id"))
        .collect()
}

/// A key (reservation) of each partition that has records.
fn one_key_per_partition(records: &[OwnedMessage]) -> Vec<String> {
    let mut keys: BTreeMap<i32, String> = BTreeMap::new();
    for record in records {
        if let Some(key) = record.key() {
            keys.entry(record.partition())
                .or_insert_with(|| String::from_utf8_lossy(key).into_owned());
        }
    }
    keys.into_values().collect()
}

/// Events published: distinct event ids on the payment topic (read before the
/// markers were sent).
fn check_published(
    records: &[OwnedMessage],
    confirmed: usize,
    report: &mut Report,
) -> BTreeSet<String> {
    let published = event_ids(records);
    if published.len() != confirmed {
        report.violations.push(format!(
            "{confirmed} confirmed payments but {} events published",
            published.len()
        ));
    }
    published
}

/// The ledger agrees with the deliveries: every row names a published event,
/// and none is left pending or failed (each failure ended in a delivery).
async fn check_ledger(
    ledger: &DynamoFailureLedger,
    published: &BTreeSet<String>,
    markers: &BTreeSet<String>,
    report: &mut Report,
) -> Result<(), Error> {
    let mut rows = ledger.list(None).await?;
    rows.retain(|row| !markers.contains(&row.event_id));
    let unknown = rows
        .iter()
        .filter(|row| !published.contains(&row.event_id))
        .count();
    if unknown > 0 {
        report.violations.push(format!(
            "{unknown} ledger rows name an event that was never published"
        ));
    }
    for status in [LedgerStatus::Pending, LedgerStatus::Failed] {
        let left = rows.iter().filter(|row| row.status == status).count();
        if left > 0 {
            report
                .violations
                .push(format!("{left} ledger rows still {}", status.name()));
        }
    }
    Ok(())
}

async fn check_balances_and_seats(
    pipeline: &TestPipeline,
    seeded: &Seeded,
    confirmed: &HashMap<usize, ReservationId>,
    seat_sales: &HashMap<SeatId, usize>,
    report: &mut Report,
) -> Result<(), Error> {
    for (user, customer) in seeded.users.iter().enumerate() {
        let paid = i64::from(confirmed.contains_key(&user));
        let now = pipeline
            .repo
            .user(customer.user.id)
            .await?
            .ok_or_else(|| Error::UserGone(customer.user.id.to_string()))?;
        if now.balance.amount() != BALANCE - paid * PRICE {
            report.violations.push(format!(
                "user {} has {} after {paid} payments",
                customer.user.id,
                now.balance.amount()
            ));
        }
    }
    for (seat, sales) in seat_sales {
        if *sales > 1 {
            report
                .violations
                .push(format!("seat {seat} sold {sales} times"));
        }
    }
    for seat in &seeded.seats {
        if let Some(now) = pipeline.repo.seat(seat.id).await?
            && let SeatStatus::Sold { reservation, .. } = now.status
            && !confirmed.values().any(|r| *r == reservation)
        {
            report.violations.push(format!(
                "seat {} is sold to {reservation}, which is not a confirmed payment",
                seat.number
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::split_extra;

    #[test]
    fn a_copy_again_is_explained_by_each_lost_answer_and_by_a_kill_at_most_once() {
        assert_eq!(split_extra(0, 0, false), (0, 0));
        assert_eq!(split_extra(1, 1, false), (1, 0));
        assert_eq!(split_extra(1, 0, true), (1, 0));
        assert_eq!(split_extra(2, 1, true), (2, 0));
        assert_eq!(split_extra(2, 0, true), (1, 1));
        assert_eq!(split_extra(1, 0, false), (0, 1));
    }
}
