//! Concurrent requests never double-charge or double-sell.

use futures::future::join_all;
use std::time::Duration;
use testkit::{Options, TestPipeline, seed};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_payments_of_one_reservation_charge_once_and_notify_once() {
    let p = TestPipeline::start(Options::default()).await;
    let s = seed(&p.repo, 1, 1, 100_000, 30_000).await;
    let fan = &s.users[0];
    let (status, held) = p.hold(&fan.jwt, s.seats[0].id).await;
    assert_eq!(status, 201, "{held}");
    let reservation = held["reservationId"].as_str().unwrap().to_owned();

    let answers = join_all((0..50).map(|_| p.pay(&fan.jwt, &reservation))).await;
    let ok: Vec<_> = answers.iter().filter(|(s, _)| *s == 200).collect();
    assert!(!ok.is_empty(), "no payment succeeded: {answers:?}");
    for (status, body) in &answers {
        assert!(
            *status == 200 || *status == 409,
            "unexpected answer {status}: {body}"
        );
    }
    // Every success is the same payment: the first one, replayed.
    let payment_id = &ok[0].1["paymentId"];
    assert!(
        ok.iter().all(|(_, b)| &b["paymentId"] == payment_id),
        "{ok:?}"
    );

    let user = p.repo.user(fan.user.id).await.unwrap().unwrap();
    assert_eq!(user.balance.amount(), 70_000, "debited exactly once");
    assert_eq!(p.outbox_count().await, 1, "exactly one outbox item");
    p.wait_for_messages(1, Duration::from_secs(30)).await;
    p.settle(&[&reservation]).await;
    assert_eq!(p.messages().len(), 1, "exactly one message");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_holds_of_one_seat_hold_it_once() {
    let p = TestPipeline::start(Options::default()).await;
    let s = seed(&p.repo, 1, 50, 100_000, 30_000).await;
    let seat = s.seats[0].id;
    let answers = join_all(s.users.iter().map(|u| p.hold(&u.jwt, seat))).await;
    let created: Vec<_> = answers.iter().filter(|(s, _)| *s == 201).collect();
    assert_eq!(created.len(), 1, "{answers:?}");
    for (status, body) in &answers {
        assert!(*status == 201 || *status == 409, "{status}: {body}");
    }
    let winner = created[0].1["reservationId"].as_str().unwrap();
    let stored = p.repo.seat(seat).await.unwrap().unwrap();
    match stored.status {
        shared::domain::SeatStatus::Held { reservation, .. } => {
            assert_eq!(reservation.to_string(), winner)
        }
        other => panic!("seat is {other:?}"),
    }
    p.stop().await;
}
