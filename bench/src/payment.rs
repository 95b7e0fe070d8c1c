//! Payment: the handler's latency per request (API Gateway event in, answer
//! out: token check, the read of the reservation, the transaction) against
//! moto, p50 and p99, and the DynamoDB calls it makes. Baseline: the payment's
//! own TransactWriteItems of the same seven items on the same endpoint, alone
//! (`TicketingRepository::pay`, its read done beforehand). The two alternate
//! request by request, so both see the same machine.

use crate::Error;
use crate::report::{Figure, Report, Samples};
use serde_json::{Value, json};
use shared::auth::JwtKey;
use shared::clock::{Clock, SystemClock};
use shared::config::TableNames;
use shared::domain::{EventId, PaymentId, ReservationId, pay};
use shared::dynamodb::TicketingRepository;
use shared::seed::{Seeded, SeededUser};
use std::sync::Arc;
use std::time::Instant;
use testkit::api::{Handlers, answer, invocation, post};
use testkit::calls::{CallLog, counted_dynamodb};

pub struct PaymentBench {
    /// Payments timed on each side.
    pub requests: usize,
}

/// The body of a 200 or 201 answer, or what the function said instead.
fn answered(what: &str, (status, body): (u16, Value)) -> Result<Value, Error> {
    if status == 200 || status == 201 {
        Ok(body)
    } else {
        Err(Error::Measure(format!("{what} answered {status}: {body}")))
    }
}

/// Every user holds a seat (not timed): the users with their reservations.
async fn hold_every_seat<'a>(
    handlers: &Handlers,
    seeded: &'a Seeded,
) -> Result<Vec<(&'a SeededUser, ReservationId)>, Error> {
    let mut held = Vec::with_capacity(seeded.users.len());
    for (user, seat) in seeded.users.iter().zip(&seeded.seats) {
        let answer = answered("the reservation", handlers.hold(&user.jwt, seat.id).await)?;
        let id = answer["reservationId"]
            .as_str()
            .ok_or_else(|| Error::Measure(format!("no reservationId in {answer}")))?;
        held.push((user, ReservationId::parse(id)?));
    }
    Ok(held)
}

/// The two sides of one round: a payment through the handler, and the bare
/// transaction of another user's payment with its read done first.
struct Round<'a> {
    handlers: &'a Handlers,
    calls: &'a CallLog,
    repo: &'a TicketingRepository,
    jwt: &'a JwtKey,
    clock: &'a Arc<dyn Clock>,
}

impl Round<'_> {
    /// The handler, from the event to its answer: ms, and DynamoDB calls made.
    async fn through_handler(
        &self,
        user: &SeededUser,
        reservation: ReservationId,
    ) -> Result<(f64, usize), Error> {
        let body = json!({"reservationId": reservation});
        let request = invocation(post("/payments", &user.jwt, &body, &[]));
        self.calls.take();
        let started = Instant::now();
        let response = self.handlers.payments.handle(request).await;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let calls = self.calls.take().len();
        let response = response.map_err(|e| Error::Measure(format!("paying: {e}")))?;
        answered("the payment", answer(&response))?;
        Ok((ms, calls))
    }

    /// The bare transaction of the same items, in ms.
    async fn bare(&self, user: &SeededUser, reservation: ReservationId) -> Result<f64, Error> {
        let admission = self.jwt.verify(&user.jwt, self.clock.now())?;
        let held = self.repo.reservation(reservation).await?.ok_or_else(|| {
            Error::Measure(format!(
                "reservation {reservation} is gone before its payment"
            ))
        })?;
        let now = self.clock.now();
        let ids = (PaymentId::random(), EventId::random());
        let outcome = pay(&held, (admission.user_id, admission.token_id), ids, now)?;
        let started = Instant::now();
        self.repo.pay(&held, &outcome, None, now).await?;
        Ok(started.elapsed().as_secs_f64() * 1e3)
    }
}

impl PaymentBench {
    pub async fn run(
        &self,
        report: &mut Report,
        client: aws_sdk_dynamodb::Client,
        tables: &TableNames,
    ) -> Result<(), Error> {
        let warm_up = 5;
        let users = 2 * (self.requests + warm_up);
        let repo = TicketingRepository::new(client.clone(), tables.clone());
        let seeded = testkit::seed(&repo, users as u32, users as u32, 10_000_000, 50_000).await;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let (counted, calls) = counted_dynamodb(&client);
        let handlers = Handlers::on(tables, &counted, &clock);
        let jwt = JwtKey::from_secret(testkit::JWT_SECRET.as_bytes())?;
        let held = hold_every_seat(&handlers, &seeded).await?;
        let round = Round {
            handlers: &handlers,
            calls: &calls,
            repo: &repo,
            jwt: &jwt,
            clock: &clock,
        };
        let (mut handler, mut bare, mut made) =
            (Samples::default(), Samples::default(), Samples::default());
        for (i, pair) in held.chunks(2).enumerate() {
            let [(user, through_handler), (other, alone)] = pair else {
                break;
            };
            let (handler_ms, calls) = round.through_handler(user, *through_handler).await?;
            let bare_ms = round.bare(other, *alone).await?;
            if i >= warm_up {
                handler.push(handler_ms);
                bare.push(bare_ms);
                made.push(calls as f64);
            }
        }
        let mut one_call = Samples::default();
        one_call.push(1.0);
        report.add(
            Figure::of("payment", "DynamoDB calls per payment", "calls", &made)
                .against("its bare TransactWriteItems (1 call)", &one_call),
        );
        for p in [50.0, 99.0] {
            report.add(
                Figure::at_percentile(
                    "payment",
                    &format!("payment handler latency p{p}, {} requests", handler.len()),
                    "ms",
                    &handler,
                    p,
                )
                .against_percentile(
                    &format!("its bare TransactWriteItems p{p}"),
                    &bare,
                    p,
                ),
            );
        }
        Ok(())
    }
}
