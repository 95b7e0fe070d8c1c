//! API Gateway HTTP API (payload format 2.0) helpers shared by the HTTP functions:
//! reading the bearer token and the JSON body, and answering JSON with errors as
//! `{"error": {"code", "message"}}`.

use crate::Error;
use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::http::{HeaderValue, header};
use base64::Engine;
use serde::{Serialize, de::DeserializeOwned};

/// Bodies above this are refused with 413: every request of this API is a few ids.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024;

pub fn header<'a>(request: &'a ApiGatewayV2httpRequest, name: &str) -> Option<&'a str> {
    request.headers.get(name).and_then(|v| v.to_str().ok())
}

/// The method of the request (from `requestContext.http.method`).
pub fn method(request: &ApiGatewayV2httpRequest) -> &str {
    request.request_context.http.method.as_str()
}

/// The refusal for a request no route serves: 405 when the path exists with
/// another method, 404 otherwise.
pub fn no_route(method: &str, path: &str, path_exists: bool) -> Error {
    if path_exists {
        Error::MethodNotAllowed {
            method: method.to_owned(),
            path: path.to_owned(),
        }
    } else {
        Error::NotFound {
            kind: "route",
            id: format!("{method} {path}"),
        }
    }
}

/// The JWT of `Authorization: Bearer <jwt>`.
pub fn bearer_token(request: &ApiGatewayV2httpRequest) -> Result<&str, Error> {
    let value = header(request, "authorization").ok_or(Error::MissingToken)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(Error::MissingToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(Error::MissingToken);
    }
    Ok(token.trim())
}

/// The body as raw bytes, decoding API Gateway's base64 form, within `limit`.
pub fn body_bytes(request: &ApiGatewayV2httpRequest, limit: usize) -> Result<Vec<u8>, Error> {
    let raw = request.body.as_deref().unwrap_or("");
    if raw.len() > limit.saturating_mul(4) / 3 + 4 {
        return Err(Error::BodyTooLarge {
            size: raw.len(),
            limit,
        });
    }
    let bytes = if request.is_base64_encoded {
        base64::engine::general_purpose::STANDARD
            .decode(raw)
            .map_err(|e| Error::MalformedBody(format!("the base64 body does not decode: {e}")))?
    } else {
        raw.as_bytes().to_vec()
    };
    if bytes.len() > limit {
        return Err(Error::BodyTooLarge {
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
) -> Result<T, Error> {
    let bytes = body_bytes(request, limit)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::MalformedBody(
            "the body is empty; send a JSON object".into(),
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| Error::MalformedBody(e.to_string()))
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
pub fn error_response(error: &Error) -> ApiGatewayV2httpResponse {
    let status = error.http_status();
    let message = if status >= 500 {
        match error {
            Error::Storage { .. } => "the database is unavailable; retry shortly".to_owned(),
            _ => "internal error; it has been logged".to_owned(),
        }
    } else {
        error.to_string()
    };
    json_response(
        status,
        &serde_json::json!({"error": {"code": error.code(), "message": message}}),
    )
}

/// Logs a failed request at the level its status deserves and answers it.
pub fn log_and_respond(route: &str, error: &Error) -> ApiGatewayV2httpResponse {
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
            Err(Error::MissingToken)
        ));
        assert!(matches!(
            bearer_token(&request(None, Some("Basic abc"))),
            Err(Error::MissingToken)
        ));
    }

    #[test]
    fn a_body_over_the_limit_is_413() {
        let big = format!("{{\"seatId\":\"{}\"}}", "x".repeat(100));
        let err = json_body::<Body1>(&request(Some(&big), None), 50).unwrap_err();
        assert_eq!(err.http_status(), 413);
    }

    #[test]
    fn an_empty_or_non_json_body_is_400_saying_why() {
        for body in [None, Some(""), Some("seat=1"), Some("{\"other\":1}")] {
            let err = json_body::<Body1>(&request(body, None), 1024).unwrap_err();
            assert_eq!(err.http_status(), 400, "{body:?}");
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
    fn errors_answer_with_code_and_message_and_hide_server_detail() {
        let r = error_response(&Error::InsufficientBalance {
            price: crate::domain::Money::krw(5).unwrap(),
            balance: crate::domain::Money::ZERO,
        });
        assert_eq!(r.status_code, 402);
        let Some(Body::Text(text)) = r.body else {
            panic!("no body")
        };
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["error"]["code"], "INSUFFICIENT_BALANCE");

        let r = error_response(&Error::CorruptItem("seat 1 has no price".into()));
        let Some(Body::Text(text)) = r.body else {
            panic!("no body")
        };
        assert!(!text.contains("seat 1"), "{text}");
    }
}
