//! The payment function: `POST /payments` pays for the caller's held seat in two
//! DynamoDB round trips: one read (the reservation, which carries what the
//! receipt and event say, and the `Idempotency-Key`'s record if one was sent),
//! then ONE transaction in which the balance, seat, reservation, queue token,
//! payment, history, the outbox item and the key's record change together. A
//! retry (same reservation, or the same key) gets the first answer and is never
//! charged twice; concurrent duplicates are settled by the transaction.

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use chrono::Duration;
use lambda_runtime::LambdaEvent;
use serde::Deserialize;
use shared::api::{self, ApiError, DEFAULT_MAX_BODY_BYTES, Success};
use shared::auth::JwtKey;
use shared::clock::Clock;
use shared::config::{self, Secret, TableNames, Vars};
use shared::domain::{EventId, PaymentId, PaymentReceipt, Refusal, ReservationId, pay};
use shared::dynamodb::{Paid, PaymentKey, PaymentStart, TicketingRepository};
use shared::idempotency::payload_hash;
use shared::spans;
use shared::trace::TraceContext;
use std::sync::Arc;
use tracing::Instrument;

/// Why the function could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the payment function is misconfigured")]
    Config(#[source] shared::config::ConfigError),
}

/// The longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

/// The `Requests` outcomes of a payment that went through: charged now, or
/// answered again with the first receipt (a retry, a double click).
const CONFIRMED: &str = "confirmed";
const REPLAYED: &str = "replayed";

pub use shared::auth::JWT_SECRET;

/// How long a completed payment's answer is replayed unless
/// `IDEMPOTENCY_TTL_SECONDS` says otherwise.
pub const DEFAULT_IDEMPOTENCY_TTL: Duration = Duration::days(1);

/// What the function reads from its variables besides tables and secrets.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `IDEMPOTENCY_TTL_SECONDS`: how long a completed payment's answer is replayed.
    pub idempotency_ttl: Duration,
    /// `MAX_BODY_BYTES`.
    pub max_body_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            idempotency_ttl: DEFAULT_IDEMPOTENCY_TTL,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

impl Settings {
    pub fn from_vars(vars: &Vars) -> Result<Self, shared::config::ConfigError> {
        let default = Settings::default();
        Ok(Settings {
            idempotency_ttl: vars.seconds("IDEMPOTENCY_TTL_SECONDS", default.idempotency_ttl)?,
            max_body_bytes: vars.parsed("MAX_BODY_BYTES", default.max_body_bytes)?,
        })
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub tables: TableNames,
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
struct PaymentRequest {
    reservation_id: String,
}

pub struct PaymentApi {
    repository: TicketingRepository,
    jwt: JwtKey,
    clock: Arc<dyn Clock>,
    idempotency_ttl: Duration,
    max_body_bytes: usize,
}

/// The `Idempotency-Key` header, if sent: 1 to 128 visible ASCII characters.
fn idempotency_key(request: &ApiGatewayV2httpRequest) -> Result<Option<&str>, Refusal> {
    match api::header(request, "idempotency-key") {
        None => Ok(None),
        Some(key)
            if !key.is_empty()
                && key.len() <= MAX_IDEMPOTENCY_KEY_LEN
                && key.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(key))
        }
        Some(_) => Err(Refusal::invalid(
            "Idempotency-Key",
            format!("use 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"),
        )),
    }
}

impl PaymentApi {
    pub fn new(
        config: &Config,
        client: aws_sdk_dynamodb::Client,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, Error> {
        Ok(PaymentApi {
            repository: TicketingRepository::new(client, config.tables.clone()),
            jwt: JwtKey::from_secret(config.jwt_secret.expose().as_bytes())
                .map_err(Error::Config)?,
            clock,
            idempotency_ttl: config.settings.idempotency_ttl,
            max_body_bytes: config.settings.max_body_bytes,
        })
    }

    pub async fn handle(
        &self,
        event: LambdaEvent<ApiGatewayV2httpRequest>,
    ) -> Result<ApiGatewayV2httpResponse, lambda_runtime::Error> {
        let request = event.payload;
        let path = request.raw_path.clone().unwrap_or_default();
        let method = api::method(&request).to_owned();
        let span = spans::http_request("payment", &event.context.request_id, &method, &path);
        // The trace the PaymentCompleted event carries to its message.
        let trace = TraceContext::for_invocation(event.context.xray_trace_id.as_deref());
        span.record("trace_id", trace.trace_id());
        let started = std::time::Instant::now();
        let answer = async {
            match (method.as_str(), path.trim_end_matches('/')) {
                ("POST", "/payments") => self.pay(&request, trace).await,
                (_, route) => Err(api::no_route(&method, &path, route == "/payments")),
            }
        }
        .instrument(span.clone())
        .await;
        Ok(span.in_scope(|| api::respond("payments", started, answer)))
    }

    /// Two round trips: the reservation (and the key's record, under a key)
    /// in one read, then one transaction that writes the key with the rest.
    async fn pay(
        &self,
        request: &ApiGatewayV2httpRequest,
        trace: TraceContext,
    ) -> Result<Success, ApiError> {
        let now = self.clock.now();
        let admission = self.jwt.verify(api::bearer_token(request)?, now)?;
        let body: PaymentRequest = api::json_body(request, self.max_body_bytes)?;
        let reservation_id = ReservationId::parse(&body.reservation_id)?;
        spans::record_reservation(reservation_id);
        // Keys are scoped to the caller, so one user's key never answers another's.
        let key = idempotency_key(request)?.map(|key| PaymentKey {
            key: format!("payment:{}:key:{key}", admission.user_id),
            payload_hash: payload_hash(reservation_id.to_string().as_bytes()),
            expires_at: now + self.idempotency_ttl,
        });
        let reservation = match self
            .repository
            .payment_start(reservation_id, key.as_ref(), now)
            .await?
        {
            PaymentStart::PaidUnderKey(receipt) => {
                tracing::info!(payment = %receipt.payment_id, "payment replayed from its idempotency key");
                return Ok(Success::json(REPLAYED, 200, &receipt));
            }
            PaymentStart::Reservation(reservation) => reservation,
        };
        reservation.ensure_owner(admission.user_id)?;
        // A retry of a payment that went through: the first receipt, no charge.
        if let Some(receipt) = PaymentReceipt::of(&reservation) {
            tracing::info!(payment = %receipt.payment_id, "payment retried; answering the first receipt");
            return Ok(Success::json(REPLAYED, 200, &receipt));
        }
        let ids = (PaymentId::random(), EventId::random());
        let outcome = pay(
            &reservation,
            (admission.user_id, admission.token_id),
            ids,
            now,
        )?;
        let paid = self
            .repository
            .traced(trace)
            .pay(&reservation, &outcome, key.as_ref(), now)
            .await?;
        Ok(match paid {
            Paid::Now => {
                tracing::info!(
                    payment = %outcome.receipt.payment_id,
                    event_id = %outcome.event.event_id,
                    amount = outcome.receipt.amount.amount(),
                    customer = %reservation.mail,
                    "payment confirmed"
                );
                Success::json(CONFIRMED, 200, &outcome.receipt)
            }
            Paid::Before(receipt) => {
                tracing::info!(payment = %receipt.payment_id, "a duplicate paid first; answering its receipt");
                Success::json(REPLAYED, 200, &receipt)
            }
        })
    }
}
