//! API Gateway HTTP API (payload format 2.0) helpers shared by the HTTP functions:
//! reading the bearer token and the JSON body, and answering JSON with errors as
//! `{"error": {"code", "message"}}`. The HTTP layer's errors and their mapping to
//! statuses live here: the domain's refusals are 4xx, the services' failures 5xx.

use crate::Error;
use crate::domain::Refusal;
use crate::error::InfraError;
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderValue, header};
use base64::Engine;
use serde::{Serialize, de::DeserializeOwned};

/// Bodies above this are refused with 413: every request of this API is a few ids.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024;

/// Why a request got no answer but an error.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request body is not valid: {0}")]
    MalformedBody(String),
    #[error("the request body is {size} bytes; the limit is {limit} bytes")]
    BodyTooLarge { size: usize, limit: usize },
    #[error("missing bearer token: send `Authorization: Bearer <queue token>`")]
    MissingToken,
    #[error("{method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("no route serves {method} {path}")]
    NoRoute { method: String, path: String },
    /// The domain refused the request.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The service could not answer: storage, configuration or a corrupt item.
    #[error("the request failed")]
    Failed(#[source] Error),
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        match error {
            Error::Refused(refusal) => ApiError::Refused(refusal),
            other => ApiError::Failed(other),
        }
    }
}

impl ApiError {
    /// The HTTP status the API answers with.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::MalformedBody(_) => 400,
            ApiError::MissingToken => 401,
            ApiError::NoRoute { .. } => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::BodyTooLarge { .. } => 413,
            ApiError::Refused(refusal) => refusal_status(refusal),
            ApiError::Failed(Error::Infra(InfraError::Storage { .. })) => 503,
            ApiError::Failed(_) => 500,
        }
    }

    /// The stable, machine-readable code of the answer's body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MalformedBody(_) => "MALFORMED_BODY",
            ApiError::BodyTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            ApiError::MissingToken => "MISSING_TOKEN",
            ApiError::MethodNotAllowed { .. } => "METHOD_NOT_ALLOWED",
            ApiError::NoRoute { .. } => "NOT_FOUND",
            ApiError::Refused(refusal) => refusal.code(),
            ApiError::Failed(error) => error.code(),
        }
    }

    /// True for failures the client caused (4xx): logged at warn, not error.
    pub fn is_client_error(&self) -> bool {
        self.status() < 500
    }
}

/// The status of each refusal of the domain.
fn refusal_status(refusal: &Refusal) -> u16 {
    match refusal {
        Refusal::InvalidInput { .. } => 400,
        Refusal::InvalidToken(_) | Refusal::TokenExpired => 401,
        Refusal::InsufficientBalance { .. } => 402,
        Refusal::NotOwner | Refusal::TokenForAnotherConcert { .. } => 403,
        Refusal::NotFound { .. } => 404,
        Refusal::SeatTaken(_)
        | Refusal::AlreadyPaid(_)
        | Refusal::HoldExpired { .. }
        | Refusal::ReservationExpired(_)
        | Refusal::TokenUsed
        | Refusal::HoldLimit { .. }
        | Refusal::InProgress
        | Refusal::Conflict(_) => 409,
        Refusal::IdempotencyKeyReused => 422,
    }
}

pub fn header<'a>(request: &'a ApiGatewayV2httpRequest, name: &str) -> Option<&'a str> {
    request.headers.get(name).and_then(|v| v.to_str().ok())
}

/// The method of the request (from `requestContext.http.method`).
pub fn method(request: &ApiGatewayV2httpRequest) -> &str {
    request.request_context.http.method.as_str()
}

/// The refusal for a request no route serves: 405 when the path exists with
/// another method, 404 otherwise.
pub fn no_route(method: &str, path: &str, path_exists: bool) -> ApiError {
    let (method, path) = (method.to_owned(), path.to_owned());
    if path_exists {
        ApiError::MethodNotAllowed { method, path }
    } else {
        ApiError::NoRoute { method, path }
    }
}

/// The JWT of `Authorization: Bearer <jwt>`.
pub fn bearer_token(request: &ApiGatewayV2httpRequest) -> Result<&str, ApiError> {
    let value = header(request, "authorization").ok_or(ApiError::MissingToken)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(ApiError::MissingToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::MissingToken);
    }
    Ok(token.trim())
}

/// The body as raw bytes, decoding API Gateway's base64 form, within `limit`.
pub fn body_bytes(request: &ApiGatewayV2httpRequest, limit: usize) -> Result<Vec<u8>, ApiError> {
    let raw = request.body.as_deref().unwrap_or("");
    if raw.len() > limit.saturating_mul(4) / 3 + 4 {
        return Err(ApiError::BodyTooLarge {
            size: raw.len(),
            limit,
        });
    }
    let bytes = if request.is_base64_encoded {
        base64::engine::general_purpose::STANDARD
            .decode(raw)
            .map_err(|e| ApiError::MalformedBody(format!("the base64 body does not decode: {e}")))?
    } else {
        raw.as_bytes().to_vec()
    };
    if bytes.len() > limit {
        return Err(ApiError::BodyTooLarge {
            size: bytes.len(),
            limit,
        });
    }
    Ok(bytes)
}

/// The body parsed as `T`; a missing, non-JSON or wrongly shaped body is a 400
/// that says what is wrong.
pub fn json_body<T: DeserializeOwned>(
    request: &ApiGatewayV2httpRequest,
    limit: usize,
) -> Result<T, ApiError> {
    let bytes = body_bytes(request, limit)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::MalformedBody(
            "the body is empty; send a JSON object".into(),
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| ApiError::MalformedBody(e.to_string()))
}

pub fn json_response(status: u16, body: &impl Serialize) -> ApiGatewayV2httpResponse {
    let mut response = ApiGatewayV2httpResponse::default();
    response.status_code = i64::from(status);
    response.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response.body = Some(Body::Text(
        serde_json::to_string(body).unwrap_or_else(|_| "{}".to_owned()),
    ));
    response
}

/// The error as JSON with its status. Server-side failures say only that the
/// service failed: their detail goes to the log, not to the client.
pub fn error_response(error: &ApiError) -> ApiGatewayV2httpResponse {
    let status = error.status();
    let message = match status {
        503 => "the database is unavailable; retry shortly".to_owned(),
        500.. => "internal error; it has been logged".to_owned(),
        _ => error.to_string(),
    };
    json_response(
        status,
        &serde_json::json!({"error": {"code": error.code(), "message": message}}),
    )
}

/// A request that succeeded: what it did (its outcome in the `Requests`
/// metric: `held`, `confirmed`, `replayed`...) and its answer.
pub struct Success {
    pub outcome: &'static str,
    pub response: ApiGatewayV2httpResponse,
}

impl Success {
    pub fn json(outcome: &'static str, status: u16, body: &impl Serialize) -> Self {
        Success {
            outcome,
            response: json_response(status, body),
        }
    }
}

/// Answers a request and counts it: `Requests` by outcome (the success's,
/// the refusal's code, or `5xx` for every server-side failure) and its
/// `Latency` since `started`.
pub fn respond(
    route: &str,
    started: std::time::Instant,
    answer: Result<Success, ApiError>,
) -> ApiGatewayV2httpResponse {
    let outcome = match &answer {
        Ok(success) => success.outcome,
        Err(e) if e.status() >= 500 => "5xx",
        Err(e) => e.code(),
    };
    crate::metrics::count("Requests", &[("outcome", outcome)], 1);
    let millis = started.elapsed().as_secs_f64() * 1_000.0;
    crate::metrics::observe_latency_ms(&[], millis);
    match answer {
        Ok(success) => success.response,
        Err(e) => log_and_respond(route, &e),
    }
}

/// Logs a failed request at the level its status deserves and answers it.
pub fn log_and_respond(route: &str, error: &ApiError) -> ApiGatewayV2httpResponse {
    if error.is_client_error() {
        tracing::warn!(route, code = error.code(), error = %error, "request refused");
    } else {
        tracing::error!(route, code = error.code(), error = %crate::error_chain(error), "request failed");
    }
    error_response(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Option<&str>, auth: Option<&str>) -> ApiGatewayV2httpRequest {
        let mut r = ApiGatewayV2httpRequest::default();
        r.body = body.map(str::to_owned);
        if let Some(a) = auth {
            r.headers
                .insert("authorization", HeaderValue::from_str(a).unwrap());
        }
        r
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Body1 {
        #[allow(dead_code)]
        seat_id: String,
    }

    #[test]
    fn the_bearer_token_is_read_from_the_authorization_header() {
        assert_eq!(
            bearer_token(&request(None, Some("Bearer abc.def"))).unwrap(),
            "abc.def"
        );
        assert!(matches!(
            bearer_token(&request(None, None)),
            Err(ApiError::MissingToken)
        ));
        assert!(matches!(
            bearer_token(&request(None, Some("Basic abc"))),
            Err(ApiError::MissingToken)
        ));
    }

    #[test]
    fn a_body_over_the_limit_is_413() {
        let big = format!("{{\"seatId\":\"{}\"}}", "x".repeat(100));
        let err = json_body::<Body1>(&request(Some(&big), None), 50).unwrap_err();
        assert_eq!(err.status(), 413);
    }

    #[test]
    fn an_empty_or_non_json_body_is_400_saying_why() {
        for body in [None, Some(""), Some("seat=1"), Some("{\"other\":1}")] {
            let err = json_body::<Body1>(&request(body, None), 1024).unwrap_err();
            assert_eq!(err.status(), 400, "{body:?}");
            assert_eq!(err.code(), "MALFORMED_BODY");
        }
    }

    #[test]
    fn a_base64_body_is_decoded() {
        let mut r = request(Some("eyJzZWF0SWQiOiJhIn0="), None);
        r.is_base64_encoded = true;
        assert!(json_body::<Body1>(&r, 1024).is_ok());
    }

    #[test]
    fn a_path_served_with_another_method_is_405_and_an_unknown_path_404() {
        let r = error_response(&no_route("DELETE", "/payments", true));
        assert_eq!(r.status_code, 405);
        let r = error_response(&no_route("GET", "/concerts", false));
        assert_eq!(r.status_code, 404);
    }

    #[test]
    fn each_refusal_answers_its_4xx_and_storage_failures_a_503() {
        let status = |error: Error| ApiError::from(error).status();
        assert_eq!(status(Refusal::NotOwner.into()), 403);
        assert_eq!(status(Refusal::TokenExpired.into()), 401);
        assert_eq!(status(Refusal::InProgress.into()), 409);
        assert_eq!(status(Refusal::IdempotencyKeyReused.into()), 422);
        assert_eq!(status(Refusal::invalid("seatId", "not a UUID").into()), 400);
        assert_eq!(status(Error::storage("GetItem", "timeout")), 503);
        assert_eq!(status(Error::corrupt("seat 1")), 500);
        let refused = ApiError::from(Error::from(Refusal::TokenUsed));
        assert!(matches!(refused, ApiError::Refused(Refusal::TokenUsed)));
        assert_eq!(refused.code(), "TOKEN_USED");
    }

    #[test]
    fn errors_answer_with_code_and_message_and_hide_server_detail() {
        let r = error_response(&ApiError::Refused(Refusal::InsufficientBalance {
            price: crate::domain::Money::krw(5).unwrap(),
            balance: crate::domain::Money::ZERO,
        }));
        assert_eq!(r.status_code, 402);
        let Some(Body::Text(text)) = r.body else {
            panic!("no body")
        };
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["error"]["code"], "INSUFFICIENT_BALANCE");

        let r = error_response(&Error::corrupt("seat 1 has no price").into());
        let Some(Body::Text(text)) = r.body else {
            panic!("no body")
        };
        assert!(!text.contains("seat 1"), "{text}");
    }
}
