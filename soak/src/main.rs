//! `make soak`: payments from concurrent clients through the local pipeline
//! while everything around it fails on purpose (the Telegram sandbox fails a
//! share of sends with timeouts, 5xx and 429s; the Kafka source delivers every
//! batch twice and kills one notifier invocation mid-batch; the broker may be
//! restarted mid-run; dlq-retry runs on a short schedule). Then it checks that
//! confirmed payments = events published = messages delivered exactly once, the
//! ledger holds nothing pending or failed, every balance is its start minus its
//! confirmed payments, and no seat was sold twice. The last line is
//! `soak: <n> payments, <n> delivered once, <n> duplicates, <n> lost`; the exit
//! status is 1 on any violation.

use chrono::Duration;
use clap::Parser;
use e2e_tests::{Options, TestPipeline, consume, header, seed};
use local_runner::kafka_source::DeliveryFaults;
use local_runner::notification_sandbox::Chaos;
use local_runner::pipeline::DlqRetrySettings;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shared::domain::{ReservationId, ReservationStatus, SeatId, SeatStatus};
use shared::ledger::LedgerStatus;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration as StdDuration, Instant};
use tokio::sync::Mutex;

const PRICE: i64 = 50_000;
const BALANCE: i64 = 3 * PRICE;

#[derive(Parser, Debug)]
#[command(about = "Payments under faults; checks nothing is lost and nothing is sent twice")]
struct Cli {
    /// Customers who each hold a seat and pay for it.
    #[arg(long, default_value_t = 2000)]
    payments: usize,
    /// Clients sending requests at once.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// The share of payments submitted twice at once (a double click).
    #[arg(long, default_value_t = 0.1)]
    double_submit: f64,
    /// The share of sends the Telegram sandbox fails.
    #[arg(long, default_value_t = 0.2)]
    failure_rate: f64,
    /// A shell command that restarts the Kafka broker, run once mid-run.
    #[arg(long)]
    restart_broker: Option<String>,
    /// How long to wait for every message after the last payment.
    #[arg(long, default_value_t = 300)]
    settle_seconds: u64,
    /// The random sequence's seed (clients' choices and the sandbox's failures).
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

/// What one customer did.
#[derive(Clone, Debug)]
struct Attempt {
    user: usize,
    reservation: Option<ReservationId>,
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("{0}")]
    Soak(String),
    #[error(transparent)]
    Pipeline(#[from] shared::Error),
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    match run(&cli).await {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("soak: {}", shared::error_chain(&e));
            std::process::exit(2);
        }
    }
}

async fn run(cli: &Cli) -> Result<bool, Error> {
    let started = Instant::now();
    let pipeline = Arc::new(
        TestPipeline::start(Options {
            retry_delay: Duration::seconds(1),
            function_timeout: StdDuration::from_secs(10),
            dlq_retry: DlqRetrySettings {
                interval: StdDuration::from_secs(2),
                max_retries: 1_000,
                backoff_base: Duration::seconds(1),
                backoff_max: Duration::seconds(5),
            },
            delivery_faults: DeliveryFaults {
                duplicate: true,
                kill_once_after: Some(StdDuration::from_millis(300)),
            },
            ..Options::default()
        })
        .await,
    );
    pipeline.sandbox.chaos(Some(Chaos {
        failure_rate: cli.failure_rate,
        timeout_ms: 6_000,
        seed: Some(cli.seed),
    }));
    // A tenth more customers than seats: some find their seat taken.
    let customers = cli.payments + cli.payments / 10;
    let seeded = Arc::new(
        seed(
            &pipeline.repo,
            cli.payments as u32,
            customers as u32,
            BALANCE,
            PRICE,
        )
        .await,
    );
    eprintln!(
        "soak: {} customers, {} seats, {} clients",
        customers, cli.payments, cli.clients
    );

    // Each customer's seat: their own, or (the extra tenth) somebody else's.
    let mut rng = StdRng::seed_from_u64(cli.seed);
    let jobs: Vec<(usize, usize, bool)> = (0..customers)
        .map(|user| {
            let seat = if user < cli.payments {
                user
            } else {
                rng.random_range(0..cli.payments)
            };
            (user, seat, rng.random_bool(cli.double_submit))
        })
        .collect();
    let queue = Arc::new(Mutex::new(jobs.into_iter()));
    let done = Arc::new(AtomicUsize::new(0));
    let attempts = Arc::new(Mutex::new(Vec::with_capacity(customers)));
    let restarted = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..cli.clients {
        let (pipeline, seeded, queue, done, attempts, restarted) = (
            pipeline.clone(),
            seeded.clone(),
            queue.clone(),
            done.clone(),
            attempts.clone(),
            restarted.clone(),
        );
        let restart = cli.restart_broker.clone();
        clients.push(tokio::spawn(async move {
            loop {
                let Some((user, seat, twice)) = queue.lock().await.next() else {
                    break;
                };
                let customer = &seeded.users[user];
                let (status, hold) = pipeline.hold(&customer.jwt, seeded.seats[seat].id).await;
                let reservation = match (status, hold["reservationId"].as_str()) {
                    (201, Some(id)) => ReservationId::parse(id).ok(),
                    _ => None,
                };
                if let Some(id) = reservation {
                    let id = id.to_string();
                    if twice {
                        let (a, b) = tokio::join!(
                            pipeline.pay(&customer.jwt, &id),
                            pipeline.pay(&customer.jwt, &id)
                        );
                        let _ = (a, b);
                    } else {
                        let _ = pipeline.pay(&customer.jwt, &id).await;
                    }
                }
                attempts.lock().await.push(Attempt { user, reservation });
                let finished = done.fetch_add(1, Ordering::SeqCst) + 1;
                if let Some(command) = &restart
                    && finished * 2 >= seeded.users.len()
                    && restarted.fetch_add(1, Ordering::SeqCst) == 0
                {
                    eprintln!("soak: restarting the broker mid-run: {command}");
                    match tokio::process::Command::new("sh")
                        .args(["-c", command])
                        .status()
                        .await
                    {
                        Ok(s) if s.success() => {}
                        other => eprintln!("soak: the broker restart failed: {other:?}"),
                    }
                }
            }
        }));
    }
    for client in clients {
        client
            .await
            .map_err(|e| Error::Soak(format!("a client: {e}")))?;
    }
    let attempts = attempts.lock().await.clone();
    eprintln!(
        "soak: {} customers done in {:.0} s; waiting for the messages",
        attempts.len(),
        started.elapsed().as_secs_f64()
    );

    // Which payments went through, from the table.
    let mut confirmed: HashMap<usize, ReservationId> = HashMap::new();
    let mut seat_sales: HashMap<SeatId, usize> = HashMap::new();
    for attempt in &attempts {
        let Some(id) = attempt.reservation else {
            continue;
        };
        let reservation = pipeline.repo.reservation(id).await?;
        if let Some(r) = reservation
            && matches!(r.status, ReservationStatus::Confirmed { .. })
        {
            confirmed.insert(attempt.user, id);
            *seat_sales.entry(r.seat_id).or_default() += 1;
        }
    }
    let mail_of = |user: usize| seeded.users[user].user.mail.as_str().to_owned();

    // Wait until every confirmed customer was told and nothing is pending.
    let ledger = shared::dynamodb::DynamoFailureLedger::new(
        pipeline.dynamodb.clone(),
        pipeline.tables.failed_messages.clone(),
    );
    let settle_by = Instant::now() + StdDuration::from_secs(cli.settle_seconds);
    loop {
        let told = told_per_customer(&pipeline, &seeded);
        let pending = ledger.list(Some(LedgerStatus::Pending)).await?.len();
        let all_told = confirmed.keys().all(|u| told.contains_key(&mail_of(*u)));
        if (all_told && pending == 0) || Instant::now() >= settle_by {
            break;
        }
        tokio::time::sleep(StdDuration::from_secs(2)).await;
    }
    // Long enough for a late second copy to show.
    tokio::time::sleep(StdDuration::from_secs(5)).await;
    pipeline.sandbox.chaos(None);

    let mut violations = Vec::new();
    let told = told_per_customer(&pipeline, &seeded);
    let mut delivered_once = 0;
    let mut duplicates = 0;
    let mut lost = 0;
    for user in confirmed.keys() {
        match told.get(&mail_of(*user)).copied().unwrap_or(0) {
            0 => lost += 1,
            1 => delivered_once += 1,
            n => {
                delivered_once += 1;
                duplicates += n - 1;
            }
        }
    }
    let phantom = told
        .keys()
        .filter(|mail| !confirmed.keys().any(|u| &mail_of(*u) == *mail))
        .count();
    if phantom > 0 {
        violations.push(format!(
            "{phantom} customers told of a payment that did not happen"
        ));
    }

    // Events published: distinct event ids on the topic.
    let published: BTreeSet<String> = consume(
        &e2e_tests::kafka().bootstrap_servers,
        &pipeline.topics.payment_completed,
        usize::MAX,
        StdDuration::from_secs(10),
    )
    .await
    .iter()
    .filter_map(|m| header(m, "event-id"))
    .collect();
    if published.len() != confirmed.len() {
        violations.push(format!(
            "{} confirmed payments but {} events published",
            confirmed.len(),
            published.len()
        ));
    }

    for status in [LedgerStatus::Pending, LedgerStatus::Failed] {
        let rows = ledger.list(Some(status)).await?;
        if !rows.is_empty() {
            violations.push(format!(
                "{} ledger rows still {}",
                rows.len(),
                status.name()
            ));
        }
    }

    // Balances and seats.
    for (user, customer) in seeded.users.iter().enumerate() {
        let paid = i64::from(confirmed.contains_key(&user));
        let now = pipeline
            .repo
            .user(customer.user.id)
            .await?
            .ok_or_else(|| Error::Soak(format!("user {} is gone", customer.user.id)))?;
        if now.balance.amount() != BALANCE - paid * PRICE {
            violations.push(format!(
                "user {} has {} after {paid} payments",
                customer.user.id,
                now.balance.amount()
            ));
        }
    }
    for (seat, sales) in &seat_sales {
        if *sales > 1 {
            violations.push(format!("seat {seat} sold {sales} times"));
        }
    }
    for seat in &seeded.seats {
        if let Some(now) = pipeline.repo.seat(seat.id).await?
            && let SeatStatus::Sold { reservation, .. } = now.status
            && !confirmed.values().any(|r| *r == reservation)
        {
            violations.push(format!(
                "seat {} is sold to {reservation}, which is not a confirmed payment",
                seat.number
            ));
        }
    }

    if duplicates > 0 {
        violations.push(format!("{duplicates} messages sent twice"));
    }
    if lost > 0 {
        violations.push(format!("{lost} confirmed payments never told"));
    }
    let chaos = pipeline.sandbox.chaos_failures();
    eprintln!(
        "soak: faults: {} timeouts, {} 5xx, {} 429s from the sandbox; every batch delivered twice; one invocation killed; broker restarted: {}",
        chaos.timeouts,
        chaos.server_errors,
        chaos.rate_limited,
        cli.restart_broker.is_some()
    );
    for v in &violations {
        eprintln!("soak: VIOLATION: {v}");
    }
    println!(
        "soak: {} payments, {delivered_once} delivered once, {duplicates} duplicates, {lost} lost",
        confirmed.len()
    );
    if let Ok(pipeline) = Arc::try_unwrap(pipeline) {
        pipeline.stop().await;
    }
    Ok(violations.is_empty())
}

/// Messages received per customer mail.
fn told_per_customer(
    pipeline: &TestPipeline,
    seeded: &shared::seed::Seeded,
) -> HashMap<String, usize> {
    let mut told = HashMap::new();
    for message in pipeline.sandbox.messages() {
        if let Some(user) = seeded
            .users
            .iter()
            .find(|u| message.text.contains(u.user.mail.as_str()))
        {
            *told.entry(user.user.mail.as_str().to_owned()).or_default() += 1;
        }
    }
    told
}
