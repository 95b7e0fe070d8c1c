//! `ops seed --sample-events` as a user runs it before `sam local invoke -e
//! events/...`: the real binary on moto writes exactly the world the samples
//! name, and the samples, as they are, then answer 201 (hold) and 200 (show,
//! pay) from the real handlers; seeding again is safe, and a key that did not
//! sign the samples' token is refused before anything is written.

use local_runner::invoke::invoke;
use serde_json::Value;
use shared::clock::SystemClock;
use shared::config::{Secret, TableNames, TopicNames};
use shared::domain::{ReservationId, ReservationStatus, SeatId, SeatStatus};
use shared::dynamodb::TicketingRepository;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;
use testkit::functions::stack_env;
use testkit::samples::{root, sample};
use testkit::{LOCAL_JWT_SECRET, aws, provision};

const TIMEOUT: Duration = Duration::from_secs(30);

fn ops_seed_sample_events(tables: &TableNames, topics: &TopicNames, jwt_secret: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ops"))
        .args(["seed", "--sample-events"])
        .arg(root().join("events"))
        .envs(stack_env(tables, topics))
        .env("JWT_SECRET", jwt_secret)
        .output()
        .unwrap()
}

/// The id the sample event `name`'s JSON body gives as `field`.
fn body_id(name: &str, field: &str) -> String {
    let body: Value = serde_json::from_str(sample(name)["body"].as_str().unwrap()).unwrap();
    body[field].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_samples_answer_as_in_use_on_the_world_ops_seed_sample_events_writes() {
    let aws = aws().await;
    let (tables, topics) = provision(&aws, 1).await;
    for _ in 0..2 {
        let seeded = ops_seed_sample_events(&tables, &topics, LOCAL_JWT_SECRET);
        assert!(
            seeded.status.success(),
            "{}",
            String::from_utf8_lossy(&seeded.stderr)
        );
    }
    let client = aws_sdk_dynamodb::Client::new(&aws);
    let repo = TicketingRepository::new(client.clone(), tables.clone());
    let held_seat = SeatId::parse(&body_id("reservation-hold.json", "seatId")).unwrap();
    let paid = ReservationId::parse(&body_id("payment.json", "reservationId")).unwrap();
    let seat = repo
        .seat(held_seat)
        .await
        .unwrap()
        .expect("the hold's seat");
    assert_eq!(seat.status, SeatStatus::Available);
    let reservation = repo
        .reservation(paid)
        .await
        .unwrap()
        .expect("the payment's");
    assert_eq!(reservation.status, ReservationStatus::Pending);

    let jwt_secret = Secret::new(LOCAL_JWT_SECRET);
    let reservations = reservation::ReservationApi::new(
        &reservation::Config {
            tables: tables.clone(),
            jwt_secret: jwt_secret.clone(),
            settings: reservation::Settings::default(),
        },
        client.clone(),
        Arc::new(SystemClock),
    )
    .unwrap();
    let payments = payment::PaymentApi::new(
        &payment::Config {
            tables: tables.clone(),
            jwt_secret,
            settings: payment::Settings::default(),
        },
        client,
        Arc::new(SystemClock),
    )
    .unwrap();
    let held = invoke(
        "reservation",
        TIMEOUT,
        sample("reservation-hold.json"),
        |e| reservations.handle(e),
    )
    .await
    .unwrap();
    assert_eq!(held["statusCode"], 201, "{held}");
    let shown = invoke(
        "reservation",
        TIMEOUT,
        sample("reservation-show.json"),
        |e| reservations.handle(e),
    )
    .await
    .unwrap();
    assert_eq!(shown["statusCode"], 200, "{shown}");
    let paid = invoke("payment", TIMEOUT, sample("payment.json"), |e| {
        payments.handle(e)
    })
    .await
    .unwrap();
    assert_eq!(paid["statusCode"], 200, "{paid}");
}

#[tokio::test]
async fn a_key_that_did_not_sign_the_samples_is_refused_and_nothing_is_written() {
    let aws = aws().await;
    let (tables, topics) = provision(&aws, 1).await;
    let refused =
        ops_seed_sample_events(&tables, &topics, "another-key-another-key-another-key-0123");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{said}");
    assert!(said.contains("JWT_SECRET"), "{said}");
    assert!(said.contains("reservation-hold.json"), "{said}");
    let repo = TicketingRepository::new(aws_sdk_dynamodb::Client::new(&aws), tables);
    let paid = ReservationId::parse(&body_id("payment.json", "reservationId")).unwrap();
    assert_eq!(repo.reservation(paid).await.unwrap(), None);
}
