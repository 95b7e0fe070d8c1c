//! Every refusal of the HTTP API: the right status, a JSON error that says what is
//! wrong, and no table changed.

use chrono::{Duration, Utc};
use serde_json::{Value, json};
use shared::auth::{Admission, JwtKey};
use shared::clock::{Clock, ManualClock};
use shared::domain::{ReservationId, SeatId};
use shared::seed::Seeded;
use std::sync::Arc;
use testkit::{JWT_SECRET, Options, TestPipeline, seed};

async fn start() -> (TestPipeline, Seeded) {
    let p = TestPipeline::start(Options::default()).await;
    let s = seed(&p.repo, 3, 2, 100_000, 60_000).await;
    (p, s)
}

/// Runs `request` and checks its status, error code, and that nothing changed.
async fn assert_refused<F>(p: &TestPipeline, request: F, status: u16, code: &str)
where
    F: std::future::Future<Output = (u16, Value)>,
{
    let before = p.snapshot().await;
    let (actual, body) = request.await;
    assert_eq!(actual, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(
        p.snapshot().await,
        before,
        "a refused request changed a table"
    );
}

/// Waits until the first payment's notification was sent, so the notifier's
/// idempotency record is not written between two snapshots.
async fn notified(p: &TestPipeline) {
    p.wait_for_messages(1, std::time::Duration::from_secs(30))
        .await;
}

/// A pipeline whose clock the test moves, holding seats for 5 minutes.
async fn start_on_a_manual_clock() -> (TestPipeline, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let p = TestPipeline::start(Options {
        clock: clock.clone(),
        hold_for: Duration::minutes(5),
        ..Options::default()
    })
    .await;
    (p, clock)
}

async fn held(p: &TestPipeline, jwt: &str, seat: SeatId) -> String {
    let (status, body) = p.hold(jwt, seat).await;
    assert_eq!(status, 201, "{body}");
    body["reservationId"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_malformed_body_or_id_is_400() {
    let (p, s) = start().await;
    let jwt = s.users[0].jwt.as_str();
    assert_refused(
        &p,
        p.post("/reservations", Some(jwt), "not json"),
        400,
        "MALFORMED_BODY",
    )
    .await;
    assert_refused(
        &p,
        p.post("/reservations", Some(jwt), ""),
        400,
        "MALFORMED_BODY",
    )
    .await;
    assert_refused(
        &p,
        p.post("/reservations", Some(jwt), r#"{"seat": "x"}"#),
        400,
        "MALFORMED_BODY",
    )
    .await;
    assert_refused(
        &p,
        p.post("/reservations", Some(jwt), r#"{"seatId": "seat-1"}"#),
        400,
        "INVALID_INPUT",
    )
    .await;
    assert_refused(
        &p,
        p.post("/payments", Some(jwt), r#"{"reservationId": 5}"#),
        400,
        "MALFORMED_BODY",
    )
    .await;
    assert_refused(
        &p,
        p.get("/reservations/nope", Some(jwt)),
        400,
        "INVALID_INPUT",
    )
    .await;
    let reservation = ReservationId::random().to_string();
    let body = json!({"reservationId": reservation}).to_string();
    assert_refused(
        &p,
        p.post_with("/payments", Some(jwt), &body, &[("Idempotency-Key", "")]),
        400,
        "INVALID_INPUT",
    )
    .await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_invalid_or_expired_token_is_401() {
    let (p, s) = start().await;
    let seat = json!({"seatId": s.seats[0].id}).to_string();
    assert_refused(
        &p,
        p.post("/reservations", None, &seat),
        401,
        "MISSING_TOKEN",
    )
    .await;
    assert_refused(
        &p,
        p.post("/reservations", Some("abc.def.ghi"), &seat),
        401,
        "INVALID_TOKEN",
    )
    .await;
    let forged = JwtKey::from_secret(b"someone-elses-secret-0123456789abcdef")
        .unwrap()
        .issue(
            Admission {
                user_id: s.users[0].user.id,
                token_id: s.users[0].token.id,
            },
            Utc::now(),
            Utc::now() + Duration::hours(1),
        )
        .unwrap();
    assert_refused(
        &p,
        p.post("/reservations", Some(&forged), &seat),
        401,
        "INVALID_TOKEN",
    )
    .await;
    let expired = JwtKey::from_secret(JWT_SECRET.as_bytes())
        .unwrap()
        .issue(
            Admission {
                user_id: s.users[0].user.id,
                token_id: s.users[0].token.id,
            },
            Utc::now() - Duration::hours(2),
            Utc::now() - Duration::hours(1),
        )
        .unwrap();
    assert_refused(
        &p,
        p.post("/reservations", Some(&expired), &seat),
        401,
        "TOKEN_EXPIRED",
    )
    .await;
    let unknown_token = JwtKey::from_secret(JWT_SECRET.as_bytes())
        .unwrap()
        .issue(
            Admission {
                user_id: s.users[0].user.id,
                token_id: shared::domain::TokenId::random(),
            },
            Utc::now(),
            Utc::now() + Duration::hours(1),
        )
        .unwrap();
    assert_refused(
        &p,
        p.post("/reservations", Some(&unknown_token), &seat),
        401,
        "INVALID_TOKEN",
    )
    .await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_users_reservation_is_403() {
    let (p, s) = start().await;
    let reservation = held(&p, &s.users[0].jwt, s.seats[0].id).await;
    let intruder = s.users[1].jwt.as_str();
    assert_refused(
        &p,
        p.get(&format!("/reservations/{reservation}"), Some(intruder)),
        403,
        "FORBIDDEN",
    )
    .await;
    assert_refused(&p, p.pay(intruder, &reservation), 403, "FORBIDDEN").await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unknown_seat_reservation_or_route_is_404() {
    let (p, s) = start().await;
    let jwt = s.users[0].jwt.as_str();
    assert_refused(&p, p.hold(jwt, SeatId::random()), 404, "NOT_FOUND").await;
    let unknown = ReservationId::random().to_string();
    assert_refused(&p, p.pay(jwt, &unknown), 404, "NOT_FOUND").await;
    assert_refused(
        &p,
        p.get(&format!("/reservations/{unknown}"), Some(jwt)),
        404,
        "NOT_FOUND",
    )
    .await;
    let before = p.snapshot().await;
    let (status, _) = p.get("/concerts", Some(jwt)).await;
    assert_eq!(status, 404);
    assert_eq!(p.snapshot().await, before);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_seat_held_by_another_customer_is_409_seat_taken() {
    let (p, s) = start().await;
    held(&p, &s.users[0].jwt, s.seats[0].id).await;
    assert_refused(
        &p,
        p.hold(&s.users[1].jwt, s.seats[0].id),
        409,
        "SEAT_TAKEN",
    )
    .await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paying_after_the_hold_expired_is_409_hold_expired() {
    let (p, clock) = start_on_a_manual_clock().await;
    let s = seed(&p.repo, 1, 1, 100_000, 60_000).await;
    let reservation = held(&p, &s.users[0].jwt, s.seats[0].id).await;
    clock.set(clock.now() + Duration::minutes(5));
    assert_refused(
        &p,
        p.pay(&s.users[0].jwt, &reservation),
        409,
        "HOLD_EXPIRED",
    )
    .await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_hold_with_one_queue_token_is_409_hold_limit_until_the_first_ends() {
    let (p, clock) = start_on_a_manual_clock().await;
    let s = seed(&p.repo, 2, 1, 100_000, 60_000).await;
    let jwt = s.users[0].jwt.as_str();
    let first = held(&p, jwt, s.seats[0].id).await;
    let before = p.snapshot().await;
    let (status, body) = p.hold(jwt, s.seats[1].id).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "HOLD_LIMIT", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(&first), "names the hold it has: {message}");
    assert_eq!(p.snapshot().await, before, "a refused hold changed a table");
    // Once the first hold has ended, the token holds again.
    clock.set(clock.now() + Duration::minutes(5));
    held(&p, jwt, s.seats[1].id).await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_queue_token_used_on_another_concerts_seat_is_403() {
    let (p, s) = start().await;
    let other_concert = seed(&p.repo, 1, 1, 100_000, 60_000).await;
    assert_refused(
        &p,
        p.hold(&s.users[0].jwt, other_concert.seats[0].id),
        403,
        "TOKEN_FOR_ANOTHER_CONCERT",
    )
    .await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_queue_token_written_without_its_concert_holds_nothing_401() {
    let (p, s) = start().await;
    // As the queue wrote tokens before they named their concert.
    p.dynamodb
        .update_item()
        .table_name(&p.tables.ticketing)
        .set_key(Some(shared::dynamodb::items::token_key(
            s.users[0].token.id,
        )))
        .update_expression("REMOVE concertId")
        .send()
        .await
        .unwrap();
    assert_refused(
        &p,
        p.hold(&s.users[0].jwt, s.seats[0].id),
        401,
        "INVALID_TOKEN",
    )
    .await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_queue_token_used_by_a_payment_is_409_token_used() {
    let (p, s) = start().await;
    let jwt = s.users[0].jwt.as_str();
    let reservation = held(&p, jwt, s.seats[0].id).await;
    let (status, body) = p.pay(jwt, &reservation).await;
    assert_eq!(status, 200, "{body}");
    notified(&p).await;
    assert_refused(&p, p.hold(jwt, s.seats[1].id), 409, "TOKEN_USED").await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payment_above_the_balance_is_402() {
    let p = TestPipeline::start(Options::default()).await;
    let s = seed(&p.repo, 1, 1, 59_999, 60_000).await;
    let reservation = held(&p, &s.users[0].jwt, s.seats[0].id).await;
    assert_refused(
        &p,
        p.pay(&s.users[0].jwt, &reservation),
        402,
        "INSUFFICIENT_BALANCE",
    )
    .await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_body_above_the_limit_is_413() {
    let (p, s) = start().await;
    let big = json!({"seatId": "x".repeat(20_000)}).to_string();
    assert_refused(
        &p,
        p.post("/reservations", Some(&s.users[0].jwt), &big),
        413,
        "PAYLOAD_TOO_LARGE",
    )
    .await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idempotency_key_reused_for_another_reservation_is_422() {
    let (p, s) = start().await;
    let jwt = s.users[0].jwt.as_str();
    let first = held(&p, jwt, s.seats[0].id).await;
    // The key is judged before the reservation is read: any other one will do.
    let second = ReservationId::random().to_string();
    let key = [("Idempotency-Key", "order-7")];
    let (status, body) = p
        .post_with(
            "/payments",
            Some(jwt),
            &json!({"reservationId": first}).to_string(),
            &key,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    notified(&p).await;
    assert_refused(
        &p,
        p.post_with(
            "/payments",
            Some(jwt),
            &json!({"reservationId": second}).to_string(),
            &key,
        ),
        422,
        "IDEMPOTENCY_KEY_REUSED",
    )
    .await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retried_payment_returns_the_first_receipt_and_charges_once() {
    let (p, s) = start().await;
    let jwt = s.users[0].jwt.as_str();
    let reservation = held(&p, jwt, s.seats[0].id).await;
    let key = [("Idempotency-Key", "pay-once")];
    let body = json!({"reservationId": reservation}).to_string();
    let (status, first) = p.post_with("/payments", Some(jwt), &body, &key).await;
    assert_eq!(status, 200, "{first}");
    let before = p.snapshot().await;
    // The same key, then the same reservation without a key: both replay.
    let (status, again) = p.post_with("/payments", Some(jwt), &body, &key).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, first);
    let (status, again) = p.pay(jwt, &reservation).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["paymentId"], first["paymentId"]);
    let after = p.snapshot().await;
    assert_eq!(after[&p.tables.ticketing], before[&p.tables.ticketing]);
    assert_eq!(after[&p.tables.outbox], before[&p.tables.outbox]);
    let user = p.repo.user(s.users[0].user.id).await.unwrap().unwrap();
    assert_eq!(user.balance.amount(), 40_000);
    p.stop().await;
}
