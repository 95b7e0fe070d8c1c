//! The reservation and payment functions called in-process, as API Gateway
//! calls them: for tests and the bench that look at one request at a time.

use crate::JWT_SECRET;
use crate::samples::sample;
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use lambda_runtime::LambdaEvent;
use serde_json::{Value, json};
use shared::clock::Clock;
use shared::config::{Secret, TableNames};
use shared::domain::SeatId;
use std::sync::Arc;

/// An HTTP API request `POST path` with `body` and `headers`, signed in as `jwt`.
pub fn post(
    path: &str,
    jwt: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> ApiGatewayV2httpRequest {
    let mut event = sample("payment.json");
    event["rawPath"] = path.into();
    event["routeKey"] = format!("POST {path}").into();
    event["requestContext"]["http"]["path"] = path.into();
    event["headers"]["authorization"] = format!("Bearer {jwt}").into();
    if let Some(sent) = event["headers"].as_object_mut() {
        sent.remove("idempotency-key");
        for (name, value) in headers {
            sent.insert(name.to_ascii_lowercase(), (*value).into());
        }
    }
    event["body"] = body.to_string().into();
    serde_json::from_value(event).expect("an API Gateway request")
}

/// A function's answer: its status and JSON body.
pub fn answer(response: &ApiGatewayV2httpResponse) -> (u16, Value) {
    let body = match &response.body {
        Some(Body::Text(text)) => serde_json::from_str(text).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    (response.status_code as u16, body)
}

/// The reservation and payment functions as deployed (the test JWT secret),
/// on `client`.
pub struct Handlers {
    pub reservations: reservation::ReservationApi,
    pub payments: payment::PaymentApi,
}

impl Handlers {
    pub fn on(
        tables: &TableNames,
        client: &aws_sdk_dynamodb::Client,
        clock: &Arc<dyn Clock>,
    ) -> Self {
        let secret = Secret::new(JWT_SECRET);
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
        .expect("the reservation function");
        let payments = payment::PaymentApi::new(
            &payment::Config {
                tables: tables.clone(),
                jwt_secret: secret,
                settings: payment::Settings::default(),
            },
            client.clone(),
            clock.clone(),
        )
        .expect("the payment function");
        Handlers {
            reservations,
            payments,
        }
    }

    /// `POST /reservations` for `seat`.
    pub async fn hold(&self, jwt: &str, seat: SeatId) -> (u16, Value) {
        let request = post("/reservations", jwt, &json!({"seatId": seat}), &[]);
        let response = self.reservations.handle(invocation(request)).await;
        answer(&response.expect("the reservation function answers"))
    }

    /// `POST /payments` for `reservation`, under `key` if given.
    pub async fn pay(&self, jwt: &str, reservation: &str, key: Option<&str>) -> (u16, Value) {
        let headers: Vec<(&str, &str)> = key.map(|k| ("Idempotency-Key", k)).into_iter().collect();
        let body = json!({"reservationId": reservation});
        let request = post("/payments", jwt, &body, &headers);
        let response = self.payments.handle(invocation(request)).await;
        answer(&response.expect("the payment function answers"))
    }
}

/// An invocation of `request` with a default context.
pub fn invocation(request: ApiGatewayV2httpRequest) -> LambdaEvent<ApiGatewayV2httpRequest> {
    LambdaEvent::new(request, lambda_runtime::Context::default())
}
