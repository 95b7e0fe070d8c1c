//! The reservation function: `POST /reservations` holds a seat for the caller,
//! `GET /reservations/{id}` shows the caller's reservation. API Gateway HTTP API
//! (payload format 2.0) events in, JSON out.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use chrono::{DateTime, Duration, Utc};
use lambda_runtime::LambdaEvent;
use serde::{Deserialize, Serialize};
use shared::api::{self, ApiError, DEFAULT_MAX_BODY_BYTES, Success};
use shared::auth::JwtKey;
use shared::clock::Clock;
use shared::config::{self, Secret, TableNames, Vars};
use shared::domain::{Reservation, ReservationId, ReservationStatus, SeatId};
use shared::dynamodb::TicketingRepository;
use shared::spans;
use std::sync::Arc;
use tracing::Instrument;

/// Why the function could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the reservation function is misconfigured")]
    Config(#[source] shared::config::ConfigError),
}

pub use shared::auth::JWT_SECRET;

/// How long a seat is held unless `HOLD_SECONDS` says otherwise.
pub const DEFAULT_HOLD: Duration = Duration::minutes(5);

/// What the function reads from its variables besides tables and secrets.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `HOLD_SECONDS`.
    pub hold_for: Duration,
    /// `MAX_BODY_BYTES`.
    pub max_body_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            hold_for: DEFAULT_HOLD,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

impl Settings {
    pub fn from_vars(vars: &Vars) -> Result<Self, shared::config::ConfigError> {
        let default = Settings::default();
        Ok(Settings {
            hold_for: vars.positive_seconds("HOLD_SECONDS", default.hold_for)?,
            max_body_bytes: vars.parsed("MAX_BODY_BYTES", default.max_body_bytes)?,
        })
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub tables: TableNames,
    /// The HS256 key of the queue tokens (from Secrets Manager in AWS, the
    /// environment locally).
    pub jwt_secret: Secret,
    pub settings: Settings,
}

impl Config {
    pub fn from_env() -> Result<Self, Error> {
        let read = || -> Result<Config, shared::config::ConfigError> {
            Ok(Config {
                tables: TableNames::from_env(),
                jwt_secret: config::secret(JWT_SECRET)?,
                settings: Settings::from_vars(&Vars::process())?,
            })
        };
        read().map_err(Error::Config)
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HoldRequest {
    seat_id: String,
}

/// A reservation as the API shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReservationView {
    pub reservation_id: ReservationId,
    pub seat_id: SeatId,
    pub seat_number: u32,
    pub concert_id: String,
    pub amount: i64,
    pub status: &'static str,
    pub created_at: DateTime<Utc>,
    pub hold_expires_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paid_at: Option<DateTime<Utc>>,
}

impl From<&Reservation> for ReservationView {
    fn from(r: &Reservation) -> Self {
        let (payment_id, paid_at) = match &r.status {
            ReservationStatus::Confirmed {
                payment_id,
                paid_at,
            } => (Some(payment_id.to_string()), Some(*paid_at)),
            _ => (None, None),
        };
        ReservationView {
            reservation_id: r.id,
            seat_id: r.seat_id,
            seat_number: r.seat_number,
            concert_id: r.concert.id.to_string(),
            amount: r.amount.amount(),
            status: r.status.name(),
            created_at: r.created_at,
            hold_expires_at: r.hold_expires_at,
            payment_id,
            paid_at,
        }
    }
}

pub struct ReservationApi {
    repository: TicketingRepository,
    jwt: JwtKey,
    clock: Arc<dyn Clock>,
    hold_for: Duration,
    max_body_bytes: usize,
}

impl ReservationApi {
    pub fn new(
        config: &Config,
        client: aws_sdk_dynamodb::Client,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, Error> {
        Ok(ReservationApi {
            repository: TicketingRepository::new(client, config.tables.clone()),
            jwt: JwtKey::from_secret(config.jwt_secret.expose().as_bytes())
                .map_err(Error::Config)?,
            clock,
            hold_for: config.settings.hold_for,
            max_body_bytes: config.settings.max_body_bytes,
        })
    }

    /// The Lambda handler. Every outcome, refusals included, is an HTTP answer.
    pub async fn handle(
        &self,
        event: LambdaEvent<ApiGatewayV2httpRequest>,
    ) -> Result<ApiGatewayV2httpResponse, lambda_runtime::Error> {
        let request = event.payload;
        let path = request.raw_path.clone().unwrap_or_default();
        let method = api::method(&request).to_owned();
        let span = spans::http_request("reservation", &event.context.request_id, &method, &path);
        let started = std::time::Instant::now();
        let answer = async {
            match (method.as_str(), path_segments(&path).as_slice()) {
                ("POST", ["reservations"]) => self.hold(&request).await,
                ("GET", ["reservations", id]) => self.show(&request, id).await,
                (_, segments) => Err(api::no_route(
                    &method,
                    &path,
                    matches!(segments, ["reservations"] | ["reservations", _]),
                )),
            }
        }
        .instrument(span.clone())
        .await;
        Ok(span.in_scope(|| api::respond("reservations", started, answer)))
    }

    async fn hold(&self, request: &ApiGatewayV2httpRequest) -> Result<Success, ApiError> {
        let now = self.clock.now();
        let admission = self.jwt.verify(api::bearer_token(request)?, now)?;
        let body: HoldRequest = api::json_body(request, self.max_body_bytes)?;
        let seat_id = SeatId::parse(&body.seat_id)?;
        // The seat carries its concert: one read gives all the hold copies.
        let (seat, concert, customer) = self
            .repository
            .hold_listing(seat_id, admission.user_id)
            .await?;
        let (reservation, held) = Reservation::hold(
            ReservationId::random(),
            &customer,
            (&seat, &concert),
            now,
            self.hold_for,
        )?;
        spans::record_reservation(reservation.id);
        self.repository
            .hold(&reservation, &held, admission.token_id, now)
            .await?;
        tracing::info!(
            seat = %seat_id,
            user = %admission.user_id,
            "seat held"
        );
        Ok(Success::json(
            "held",
            201,
            &ReservationView::from(&reservation),
        ))
    }

    async fn show(&self, request: &ApiGatewayV2httpRequest, id: &str) -> Result<Success, ApiError> {
        let admission = self
            .jwt
            .verify(api::bearer_token(request)?, self.clock.now())?;
        let id = ReservationId::parse(id)?;
        spans::record_reservation(id);
        let reservation =
            self.repository
                .reservation(id)
                .await?
                .ok_or(shared::domain::Refusal::NotFound {
                    kind: "reservation",
                    id: id.to_string(),
                })?;
        reservation.ensure_owner(admission.user_id)?;
        Ok(Success::json(
            "shown",
            200,
            &ReservationView::from(&reservation),
        ))
    }
}

fn path_segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}
