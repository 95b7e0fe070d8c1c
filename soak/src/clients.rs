//! The soak's clients: every customer holds a seat and pays (some twice at
//! once), and halfway through the broker may be restarted.

use crate::{Attempt, Error, SoakConfig};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use shared::domain::ReservationId;
use shared::seed::Seeded;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use testkit::TestPipeline;
use tokio::sync::Mutex;

/// Every customer holds their seat and pays (some twice at once), from
/// `config.clients` clients; halfway through, the broker restarts. Returns the
/// attempts and whether the restart succeeded.
pub(crate) async fn drive_clients(
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
