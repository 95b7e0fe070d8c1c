//! A payment costs two DynamoDB round trips (one read, one transaction) with or
//! without an `Idempotency-Key`; a hold costs two; a retry costs one; and
//! concurrent duplicates under one key are settled by the transaction: one
//! charge, every other answer its receipt or 409 IN_PROGRESS.

use futures::future::join_all;
use shared::clock::{Clock, SystemClock};
use shared::config::TableNames;
use shared::dynamodb::{TicketingRepository, create_tables};
use std::sync::Arc;
use testkit::api::Handlers;
use testkit::calls::{CallLog, counted_dynamodb};
use testkit::{aws, seed, unique};

const READ: &str = "BatchGetItem";
const WRITE: &str = "TransactWriteItems";

struct Stack {
    repo: TicketingRepository,
    handlers: Handlers,
    calls: CallLog,
}

async fn stack() -> Stack {
    let aws = aws().await;
    let tables = TableNames::with_prefix(&unique("calls"));
    let (client, calls) = counted_dynamodb(&aws_sdk_dynamodb::Client::new(&aws));
    create_tables(&client, &tables)
        .await
        .expect("tables on moto");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let repo = TicketingRepository::new(client.clone(), tables.clone());
    let handlers = Handlers::on(&tables, &client, &clock);
    Stack {
        repo,
        handlers,
        calls,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_and_a_payment_make_two_round_trips_each_and_a_retry_one() {
    let s = stack().await;
    let seeded = seed(&s.repo, 2, 2, 200_000, 50_000).await;
    let (fan, other) = (&seeded.users[0], &seeded.users[1]);
    s.calls.take();

    let (status, held) = s.handlers.hold(&fan.jwt, seeded.seats[0].id).await;
    assert_eq!(status, 201, "{held}");
    assert_eq!(s.calls.take(), [READ, WRITE], "a hold");
    let reservation = held["reservationId"].as_str().unwrap();
    let (status, paid) = s.handlers.pay(&fan.jwt, reservation, None).await;
    assert_eq!(status, 200, "{paid}");
    assert_eq!(s.calls.take(), [READ, WRITE], "a payment");
    let (status, again) = s.handlers.pay(&fan.jwt, reservation, None).await;
    assert_eq!((status, &again), (200, &paid));
    assert_eq!(
        s.calls.take(),
        [READ],
        "a retry answers from the reservation"
    );

    let (_, held) = s.handlers.hold(&other.jwt, seeded.seats[1].id).await;
    let reservation = held["reservationId"].as_str().unwrap();
    s.calls.take();
    let key = Some("order-42");
    let (status, paid) = s.handlers.pay(&other.jwt, reservation, key).await;
    assert_eq!(status, 200, "{paid}");
    assert_eq!(s.calls.take(), [READ, WRITE], "a payment under a key");
    let (status, again) = s.handlers.pay(&other.jwt, reservation, key).await;
    assert_eq!((status, &again), (200, &paid));
    assert_eq!(s.calls.take(), [READ], "a retry under the key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_payments_under_one_key_charge_once_and_answer_its_receipt() {
    let s = stack().await;
    let seeded = seed(&s.repo, 1, 1, 100_000, 30_000).await;
    let fan = &seeded.users[0];
    let (status, held) = s.handlers.hold(&fan.jwt, seeded.seats[0].id).await;
    assert_eq!(status, 201, "{held}");
    let reservation = held["reservationId"].as_str().unwrap();

    let pay = || s.handlers.pay(&fan.jwt, reservation, Some("double-click"));
    let answers = join_all((0..20).map(|_| pay())).await;
    let paid: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status == 200)
        .collect();
    assert!(!paid.is_empty(), "no payment went through: {answers:?}");
    for (status, body) in &answers {
        assert!(
            *status == 200 || (*status == 409 && body["error"]["code"] == "IN_PROGRESS"),
            "{status}: {body}"
        );
    }
    assert!(
        paid.iter()
            .all(|(_, body)| body["paymentId"] == paid[0].1["paymentId"]),
        "every success is the one payment: {paid:?}"
    );
    let user = s.repo.user(fan.user.id).await.unwrap().unwrap();
    assert_eq!(user.balance.amount(), 70_000, "charged exactly once");
    // Whoever was told IN_PROGRESS gets the receipt when it asks again.
    let (status, again) = pay().await;
    assert_eq!(
        (status, &again["paymentId"]),
        (200, &paid[0].1["paymentId"])
    );
}
