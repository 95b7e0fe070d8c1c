//! seat-expiration on moto: expired holds are released once with one event each,
//! unexpired and paid seats are never touched, runs page and stop for their
//! deadline, and a payment racing the expiry at the deadline: exactly one wins.

use chrono::{DateTime, Duration, Utc};
use futures::StreamExt;
use seat_expiration::{Config, ExpirationReport, SeatExpiration, Settings};
use shared::clock::{Clock, ManualClock};
use shared::config::TableNames;
use shared::domain::{
    EventId, PaymentId, Reservation, ReservationId, ReservationStatus, SeatStatus, pay,
};
use shared::dynamodb::{ExpiredHold, Paid, Release, TicketingRepository};
use shared::seed::{Seeded, SeededUser};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use testkit::{aws, provision, scan, seed};

const HOLD: Duration = Duration::minutes(5);

async fn repo() -> (TicketingRepository, TableNames, aws_sdk_dynamodb::Client) {
    let aws = aws().await;
    let (tables, _) = provision(&aws, 1).await;
    let client = aws_sdk_dynamodb::Client::new(&aws);
    (
        TicketingRepository::new(client.clone(), tables.clone()),
        tables,
        client,
    )
}

fn job(
    tables: &TableNames,
    client: &aws_sdk_dynamodb::Client,
    clock: Arc<dyn Clock>,
    page: i32,
) -> SeatExpiration {
    SeatExpiration::new(
        Config {
            tables: tables.clone(),
            settings: Settings {
                page_size: page,
                ..Settings::default()
            },
        },
        client.clone(),
        clock,
    )
}

/// Holds seat `i` for user `i` at `at`.
async fn hold(repo: &TicketingRepository, s: &Seeded, i: usize, at: DateTime<Utc>) -> Reservation {
    let user: &SeededUser = &s.users[i];
    let (reservation, held) = Reservation::hold(
        ReservationId::random(),
        &user.user,
        (&s.seats[i], &s.concert),
        at,
        HOLD,
    )
    .unwrap();
    repo.hold(&reservation, &held, user.token.id, at)
        .await
        .unwrap();
    reservation
}

/// Pays `reservation` at `at`; answers whether the payment committed.
async fn pay_at(
    repo: &TicketingRepository,
    s: &Seeded,
    i: usize,
    reservation: &Reservation,
    at: DateTime<Utc>,
) -> bool {
    let caller = (reservation.user_id, s.users[i].token.id);
    let ids = (PaymentId::random(), EventId::random());
    let Ok(outcome) = pay(reservation, caller, ids, at) else {
        return false;
    };
    matches!(
        repo.pay(reservation, &outcome, None, at).await,
        Ok(Paid::Now)
    )
}

async fn hold_expired_events(
    client: &aws_sdk_dynamodb::Client,
    tables: &TableNames,
) -> Vec<String> {
    scan(client, &tables.outbox)
        .await
        .into_iter()
        .filter(|item| item.contains("SeatHoldExpired"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_holds_are_released_unexpired_ones_left_and_paid_seats_never_touched() {
    let (repo, tables, client) = repo().await;
    let s = seed(&repo, 3, 3, 100_000, 10_000).await;
    let t0 = Utc::now();
    let expired = hold(&repo, &s, 0, t0).await;
    let paid = hold(&repo, &s, 1, t0).await;
    assert!(pay_at(&repo, &s, 1, &paid, t0 + Duration::minutes(1)).await);
    let fresh = hold(&repo, &s, 2, t0 + Duration::minutes(3)).await;

    let now = t0 + HOLD + Duration::seconds(1);
    let clock = Arc::new(ManualClock::new(now));
    let report = job(&tables, &client, clock, 25)
        .run(now + Duration::seconds(60))
        .await
        .unwrap();
    assert_eq!(report.released, 1, "{report:?}");

    let seat = repo.seat(s.seats[0].id).await.unwrap().unwrap();
    assert_eq!(seat.status, SeatStatus::Available);
    let r = repo.reservation(expired.id).await.unwrap().unwrap();
    assert_eq!(r.status, ReservationStatus::Expired);
    assert!(matches!(
        repo.seat(s.seats[1].id).await.unwrap().unwrap().status,
        SeatStatus::Sold { .. }
    ));
    assert!(matches!(
        repo.seat(s.seats[2].id).await.unwrap().unwrap().status,
        SeatStatus::Held { .. }
    ));
    assert_eq!(
        repo.reservation(fresh.id).await.unwrap().unwrap().status,
        ReservationStatus::Pending
    );
    let events = hold_expired_events(&client, &tables).await;
    assert_eq!(events.len(), 1);
    assert!(events[0].contains(&expired.id.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_runs_at_once_and_a_run_after_release_each_hold_once_with_one_event() {
    let (repo, tables, client) = repo().await;
    let s = seed(&repo, 6, 6, 100_000, 10_000).await;
    let t0 = Utc::now();
    for i in 0..6 {
        hold(&repo, &s, i, t0).await;
    }
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(t0 + HOLD));
    let deadline = t0 + HOLD + Duration::seconds(60);
    let a = job(&tables, &client, clock.clone(), 2);
    let b = job(&tables, &client, clock.clone(), 2);
    let (ra, rb) = tokio::join!(a.run(deadline), b.run(deadline));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.released + rb.released, 6, "{ra:?} {rb:?}");
    assert_eq!(ra.failed + rb.failed, 0);
    let again = a.run(deadline).await.unwrap();
    assert_eq!(again, ExpirationReport::default());
    assert_eq!(hold_expired_events(&client, &tables).await.len(), 6);
}

/// A clock that moves one second each time it is read.
struct TickingClock(AtomicI64);

impl Clock for TickingClock {
    fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.0.fetch_add(1_000, Ordering::SeqCst)).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn more_holds_than_a_page_are_all_released_and_a_deadline_stop_leaves_the_rest() {
    let (repo, tables, client) = repo().await;
    let s = seed(&repo, 10, 10, 100_000, 10_000).await;
    let t0 = Utc::now();
    for i in 0..10 {
        hold(&repo, &s, i, t0).await;
    }
    let start = t0 + HOLD;
    let clock = Arc::new(TickingClock(AtomicI64::new(start.timestamp_millis())));
    // Time for a few holds only: a safety margin of 5 s, 12 s to the deadline.
    let short = job(&tables, &client, clock.clone(), 3)
        .run(start + Duration::seconds(12))
        .await
        .unwrap();
    assert!(short.stopped_for_deadline, "{short:?}");
    assert!(short.released > 0 && short.released < 10, "{short:?}");
    let rest = job(&tables, &client, clock, 3)
        .run(start + Duration::hours(1))
        .await
        .unwrap();
    assert!(!rest.stopped_for_deadline);
    assert_eq!(short.released + rest.released, 10, "{short:?} {rest:?}");
    assert_eq!(hold_expired_events(&client, &tables).await.len(), 10);
}

/// One race: a hold, then its payment and its release at times around the
/// deadline, at once. Answers (paid, released, payment on time, job after deadline).
async fn race(
    repo: &TicketingRepository,
    s: &Seeded,
    i: usize,
    trial: usize,
) -> (bool, bool, bool, bool) {
    let reservation = hold(repo, s, i, Utc::now()).await;
    let deadline = reservation.hold_expires_at;
    // Both sides act within 20 ms of the deadline, either side of it.
    let jitter = |n: usize| Duration::milliseconds((n as i64 * 7919 % 41) - 20);
    let pay_time = deadline + jitter(trial);
    let job_time = deadline + jitter(trial * 31 + 17);
    let hold = ExpiredHold {
        seat_id: s.seats[i].id,
        reservation_id: reservation.id,
        expires_at: deadline,
    };
    let (paid, released) = tokio::join!(
        pay_at(repo, s, i, &reservation, pay_time),
        repo.release_expired_hold(&hold, job_time, EventId::random())
    );
    let released = released.unwrap() == Release::Released;
    (paid, released, pay_time < deadline, job_time >= deadline)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_payments_racing_the_expiry_at_the_deadline_exactly_one_wins() {
    const TRIALS: usize = 1_000;
    // moto copies a whole table in every transaction: small tables, 10 trials each.
    const PER_TABLE: usize = 10;
    let aws = aws().await;
    let client = aws_sdk_dynamodb::Client::new(&aws);
    let mut outcomes = Vec::with_capacity(TRIALS);
    for chunk in 0..TRIALS / PER_TABLE {
        let (tables, _) = provision(&aws, 1).await;
        let repo = TicketingRepository::new(client.clone(), tables.clone());
        let s = seed(&repo, PER_TABLE as u32, PER_TABLE as u32, 100_000, 10_000).await;
        let results: Vec<_> = futures::stream::iter(0..PER_TABLE)
            .map(|i| race(&repo, &s, i, chunk * PER_TABLE + i))
            .buffer_unordered(4)
            .collect()
            .await;
        outcomes.extend(results);
        shared::dynamodb::delete_tables(&client, &tables)
            .await
            .unwrap();
    }
    assert_eq!(outcomes.len(), TRIALS);
    for &(paid, released, pay_on_time, job_after_deadline) in &outcomes {
        assert!(!(paid && released), "both won");
        if pay_on_time || job_after_deadline {
            assert!(paid ^ released, "neither won");
        }
    }
    let paid = outcomes.iter().filter(|o| o.0).count();
    let released = outcomes.iter().filter(|o| o.1).count();
    assert!(paid > 0 && released > 0, "paid {paid}, released {released}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_hold_is_announced_on_its_topic_the_customer_told_on_telegram_and_discord_and_the_seat_sold_again()
 {
    use local_runner::notification_sandbox::{DISCORD, TELEGRAM};
    use rdkafka::message::Message;
    use shared::notification::{ChannelKind, ChannelRoutes};
    use testkit::{Options, TestPipeline, consume, kafka};
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let p = TestPipeline::start(Options {
        clock: clock.clone(),
        routes: ChannelRoutes {
            payment_completed: vec![ChannelKind::Telegram],
            seat_hold_expired: vec![ChannelKind::Telegram, ChannelKind::Discord],
        },
        ..Options::default()
    })
    .await;
    let s = seed(&p.repo, 1, 2, 100_000, 10_000).await;
    let (status, held) = p.hold(&s.users[0].jwt, s.seats[0].id).await;
    assert_eq!(status, 201, "{held}");
    let reservation = held["reservationId"].as_str().unwrap().to_owned();

    clock.advance(HOLD);
    let report = job(&p.tables, &p.dynamodb, clock.clone(), 25)
        .run(clock.now() + Duration::seconds(60))
        .await
        .unwrap();
    assert_eq!(report.released, 1, "{report:?}");

    let records = consume(
        &kafka().bootstrap_servers,
        &p.topics.seat_hold_expired,
        1,
        std::time::Duration::from_secs(30),
    )
    .await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].key(), Some(reservation.as_bytes()));
    p.wait_for_messages(2, std::time::Duration::from_secs(30))
        .await;
    for channel in [TELEGRAM, DISCORD] {
        let messages = p.sandbox.messages_on(channel);
        assert_eq!(messages.len(), 1, "{channel}: {messages:?}");
        let text = &messages[0].text;
        assert!(text.starts_with("[좌석 선점 만료]"), "{text}");
        assert!(text.contains(s.users[0].user.mail.as_str()), "{text}");
        assert!(text.contains("좌석: 1번"), "{text}");
    }

    // The released seat is another customer's to hold.
    let (status, again) = p.hold(&s.users[1].jwt, s.seats[0].id).await;
    assert_eq!(status, 201, "{again}");
    p.stop().await;
}
