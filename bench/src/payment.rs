//! Payment: the handler's latency per request (API Gateway event in, answer
//! out: token check, idempotency key, reads, the transaction, the key's result)
//! against moto, p50 and p99. Baseline: the payment's own TransactWriteItems of
//! the same seven items on the same endpoint, alone (`TicketingRepository::pay`,
//! its reads done beforehand). The two alternate request by request, so both
//! see the same machine.

use crate::Error;
use crate::report::{Figure, Report, Samples};
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use lambda_runtime::LambdaEvent;
use serde_json::{Value, json};
use shared::auth::JwtKey;
use shared::clock::{Clock, SystemClock};
use shared::config::{Secret, TableNames};
use shared::domain::{EventId, PaymentId, ReservationId, pay};
use shared::dynamodb::TicketingRepository;
use shared::seed::{Seeded, SeededUser};
use std::sync::Arc;
use std::time::Instant;
use testkit::samples::sample;

pub struct PaymentBench {
    /// Payments timed on each side.
    pub requests: usize,
}

/// An HTTP API request `POST path` with `body`, signed in as `jwt`.
fn post(path: &str, jwt: &str, body: Value) -> Result<ApiGatewayV2httpRequest, Error> {
    let mut event = sample("payment.json");
    event["rawPath"] = path.into();
    event["routeKey"] = format!("POST {path}").into();
    event["requestContext"]["http"]["path"] = path.into();
    event["headers"]["authorization"] = format!("Bearer {jwt}").into();
    if let Some(headers) = event["headers"].as_object_mut() {
        headers.remove("idempotency-key");
    }
    event["body"] = body.to_string().into();
    serde_json::from_value(event).map_err(|e| Error::Measure(format!("an API request: {e}")))
}

fn answered(what: &str, response: ApiGatewayV2httpResponse) -> Result<Value, Error> {
    let body = match &response.body {
        Some(aws_lambda_events::encodings::Body::Text(text)) => text.clone(),
        other => format!("{other:?}"),
    };
    if response.status_code != 200 && response.status_code != 201 {
        return Err(Error::Measure(format!(
            "{what} answered {}: {body}",
            response.status_code
        )));
    }
    serde_json::from_str(&body).map_err(|e| Error::Measure(format!("{what}'s answer: {e}")))
}

/// The reservation and payment functions as deployed, on `client`.
fn functions(
    tables: &TableNames,
    client: &aws_sdk_dynamodb::Client,
    clock: &Arc<dyn Clock>,
    secret: &Secret,
) -> Result<(reservation::ReservationApi, payment::PaymentApi), Error> {
    let reservations = reservation::ReservationApi::new(
        &reservation::Config {
            tables: tables.clone(),
            jwt_secret: secret.clone(),
            settings: reservation::Settings {
                hold_for: chrono::Duration::minutes(30),
                ..Default::default()
            },
        },
        client.clone(),
        clock.clone(),
    )
    .map_err(|e| Error::Measure(shared::error_chain(&e)))?;
    let payments = payment::PaymentApi::new(
        &payment::Config {
            tables: tables.clone(),
            jwt_secret: secret.clone(),
            settings: payment::Settings::default(),
        },
        client.clone(),
        clock.clone(),
    )
    .map_err(|e| Error::Measure(shared::error_chain(&e)))?;
    Ok((reservations, payments))
}

/// Every user holds a seat (not timed): the users with their reservations.
async fn hold_every_seat<'a>(
    reservations: &reservation::ReservationApi,
    seeded: &'a Seeded,
) -> Result<Vec<(&'a SeededUser, ReservationId)>, Error> {
    let mut held = Vec::with_capacity(seeded.users.len());
    for (user, seat) in seeded.users.iter().zip(&seeded.seats) {
        let request = post("/reservations", &user.jwt, json!({"seatId": seat.id}))?;
        let answer = reservations
            .handle(LambdaEvent::new(
                request,
                lambda_runtime::Context::default(),
            ))
            .await
            .map_err(|e| Error::Measure(format!("holding a seat: {e}")))?;
        let answer = answered("the reservation", answer)?;
        let id = answer["reservationId"]
            .as_str()
            .ok_or_else(|| Error::Measure(format!("no reservationId in {answer}")))?;
        held.push((user, ReservationId::parse(id)?));
    }
    Ok(held)
}

/// The two sides of one round: a payment through the handler, and the bare
/// transaction of another user's payment with its reads done first.
struct Round<'a> {
    payments: &'a payment::PaymentApi,
    repo: &'a TicketingRepository,
    jwt: &'a JwtKey,
    clock: &'a Arc<dyn Clock>,
}

impl Round<'_> {
    /// The handler, from the event to its answer, in ms.
    async fn through_handler(
        &self,
        user: &SeededUser,
        reservation: ReservationId,
    ) -> Result<f64, Error> {
        let request = post(
            "/payments",
            &user.jwt,
            json!({"reservationId": reservation}),
        )?;
        let started = Instant::now();
        let answer = self
            .payments
            .handle(LambdaEvent::new(
                request,
                lambda_runtime::Context::default(),
            ))
            .await
            .map_err(|e| Error::Measure(format!("paying: {e}")))?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        answered("the payment", answer)?;
        Ok(ms)
    }

    /// The bare transaction of the same items, in ms.
    async fn bare(&self, user: &SeededUser, reservation: ReservationId) -> Result<f64, Error> {
        let admission = self.jwt.verify(&user.jwt, self.clock.now())?;
        let held = self.repo.reservation(reservation).await?.ok_or_else(|| {
            Error::Measure(format!(
                "reservation {reservation} is gone before its payment"
            ))
        })?;
        let checkout = self.repo.checkout(held, admission.token_id).await?;
        let now = self.clock.now();
        let outcome = pay(
            &checkout,
            admission.user_id,
            PaymentId::random(),
            EventId::random(),
            now,
        )?;
        let started = Instant::now();
        self.repo.pay(&checkout, &outcome, now).await?;
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
        let secret = Secret::new(testkit::JWT_SECRET);
        let (reservations, payments) = functions(tables, &client, &clock, &secret)?;
        let jwt = JwtKey::from_secret(secret.expose().as_bytes())?;
        let held = hold_every_seat(&reservations, &seeded).await?;
        let round = Round {
            payments: &payments,
            repo: &repo,
            jwt: &jwt,
            clock: &clock,
        };
        let mut handler = Samples::default();
        let mut bare = Samples::default();
        for (i, pair) in held.chunks(2).enumerate() {
            let [(user, through_handler), (other, alone)] = pair else {
                break;
            };
            let handler_ms = round.through_handler(user, *through_handler).await?;
            let bare_ms = round.bare(other, *alone).await?;
            if i >= warm_up {
                handler.push(handler_ms);
                bare.push(bare_ms);
            }
        }
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
