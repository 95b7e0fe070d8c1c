//! The HTTP API as API Gateway HTTP API serves it: each request becomes a payload
//! format 2.0 event for the function its route names, and the function's answer
//! becomes the HTTP response.

use crate::Error;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::future::BoxFuture;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// API Gateway refuses payloads above 10 MB before any function runs.
const API_GATEWAY_MAX_PAYLOAD: usize = 10 * 1024 * 1024;

pub type Invoker = Arc<dyn Fn(Value) -> BoxFuture<'static, Result<Value, Error>> + Send + Sync>;

/// One route of the API, as template.yaml declares it (`POST /payments`).
#[derive(Clone)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub invoker: Invoker,
}

impl Route {
    fn route_key(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// The path parameters when `path` matches this route's template.
    fn matches(&self, path: &str) -> Option<HashMap<String, String>> {
        let template: Vec<&str> = self.path.split('/').filter(|s| !s.is_empty()).collect();
        let actual: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        if template.len() != actual.len() {
            return None;
        }
        let mut params = HashMap::new();
        for (t, a) in template.iter().zip(&actual) {
            match t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                Some(name) => {
                    params.insert(name.to_owned(), (*a).to_owned());
                }
                None if t == a => {}
                None => return None,
            }
        }
        Some(params)
    }
}

#[derive(Clone)]
struct Api {
    routes: Arc<Vec<Route>>,
}

/// Serves the API on `addr` until the task is dropped; answers the bound address.
pub async fn serve(addr: SocketAddr, routes: Vec<Route>) -> Result<SocketAddr, Error> {
    let listener = TcpListener::bind(addr).await.map_err(|e| Error::Listen {
        addr: addr.to_string(),
        source: e,
    })?;
    let bound = listener.local_addr().map_err(|e| Error::Listen {
        addr: addr.to_string(),
        source: e,
    })?;
    let app = Router::new()
        .fallback(handle)
        .layer(DefaultBodyLimit::max(API_GATEWAY_MAX_PAYLOAD))
        .with_state(Api {
            routes: Arc::new(routes),
        });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        {
            tracing::error!(error = %e, "HTTP API stopped");
        }
    });
    Ok(bound)
}

fn gateway_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"message": message}))).into_response()
}

async fn handle(
    State(api): State<Api>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let matched = api.routes.iter().find_map(|route| {
        (route.method == method.as_str())
            .then(|| route.matches(&path))
            .flatten()
            .map(|params| (route, params))
    });
    let Some((route, params)) = matched else {
        return gateway_error(StatusCode::NOT_FOUND, "Not Found");
    };
    let event = v2_event(
        &route.route_key(),
        &method,
        &uri,
        &headers,
        &body,
        &params,
        peer,
    );
    match (route.invoker)(event).await {
        Ok(answer) => into_http(answer),
        Err(e) => {
            tracing::error!(route = %route.route_key(), error = %shared::error_chain(&e), "function failed");
            gateway_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
        }
    }
}

/// The payload format 2.0 event API Gateway sends for this request.
pub fn v2_event(
    route_key: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    path_parameters: &HashMap<String, String>,
    peer: SocketAddr,
) -> Value {
    // Header names are lower-cased; repeated headers are joined with commas.
    let mut header_map: Map<String, Value> = Map::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        let key = name.as_str().to_ascii_lowercase();
        let joined = match header_map.get(&key) {
            Some(Value::String(prev)) => format!("{prev},{value}"),
            _ => value,
        };
        header_map.insert(key, Value::String(joined));
    }
    let query = uri.query().unwrap_or("");
    let mut query_map: Map<String, Value> = Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let joined = match query_map.get(k) {
            Some(Value::String(prev)) => format!("{prev},{v}"),
            _ => v.to_owned(),
        };
        query_map.insert(k.to_owned(), Value::String(joined));
    }
    let now = chrono::Utc::now();
    let user_agent = headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": uri.path(),
        "rawQueryString": query,
        "headers": header_map,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": headers.get("host").and_then(|v| v.to_str().ok()).unwrap_or("127.0.0.1"),
            "domainPrefix": "local",
            "http": {
                "method": method.as_str(),
                "path": uri.path(),
                "protocol": "HTTP/1.1",
                "sourceIp": peer.ip().to_string(),
                "userAgent": user_agent,
            },
            "requestId": shared::domain::EventId::random().to_string(),
            "routeKey": route_key,
            "stage": "$default",
            "time": now.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
            "timeEpoch": now.timestamp_millis(),
        },
        "isBase64Encoded": false,
    });
    if !query_map.is_empty() {
        event["queryStringParameters"] = Value::Object(query_map);
    }
    if !path_parameters.is_empty() {
        event["pathParameters"] = json!(path_parameters);
    }
    if !body.is_empty() {
        match std::str::from_utf8(body) {
            Ok(text) => event["body"] = Value::String(text.to_owned()),
            Err(_) => {
                event["body"] = Value::String(STANDARD.encode(body));
                event["isBase64Encoded"] = Value::Bool(true);
            }
        }
    }
    event
}

/// The function's answer as an HTTP response.
fn into_http(answer: Value) -> Response {
    let status = answer
        .get("statusCode")
        .and_then(Value::as_u64)
        .and_then(|s| StatusCode::from_u16(s as u16).ok())
        .unwrap_or(StatusCode::OK);
    let body_text = answer.get("body").and_then(Value::as_str).unwrap_or("");
    let body = if answer.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) {
        STANDARD.decode(body_text).unwrap_or_default()
    } else {
        body_text.as_bytes().to_vec()
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    if let Some(Value::Object(headers)) = answer.get("headers") {
        for (k, v) in headers {
            if let (Ok(name), Some(Ok(value))) = (
                HeaderName::from_bytes(k.as_bytes()),
                v.as_str().map(HeaderValue::from_str),
            ) {
                response.headers_mut().insert(name, value);
            }
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: &'static str, path: &'static str) -> Route {
        Route {
            method,
            path,
            invoker: Arc::new(|_| Box::pin(async { Ok(Value::Null) })),
        }
    }

    #[test]
    fn a_route_template_matches_and_extracts_path_parameters() {
        let r = route("GET", "/reservations/{id}");
        assert_eq!(r.matches("/reservations/abc").unwrap()["id"], "abc");
        assert!(r.matches("/reservations").is_none());
        assert!(r.matches("/payments/abc").is_none());
    }

    #[test]
    fn the_event_is_the_v2_payload_that_the_upstream_type_reads() {
        let mut headers = HeaderMap::new();
        headers.insert("Authorization", HeaderValue::from_static("Bearer x"));
        let uri: Uri = "/reservations/r1?a=1".parse().unwrap();
        let event = v2_event(
            "GET /reservations/{id}",
            &Method::GET,
            &uri,
            &headers,
            b"{}",
            &HashMap::from([("id".to_owned(), "r1".to_owned())]),
            "127.0.0.1:5000".parse().unwrap(),
        );
        let parsed: aws_lambda_events::apigw::ApiGatewayV2httpRequest =
            serde_json::from_value(event).unwrap();
        assert_eq!(parsed.request_context.http.method, Method::GET);
        assert_eq!(parsed.raw_path.as_deref(), Some("/reservations/r1"));
        assert_eq!(parsed.path_parameters["id"], "r1");
        assert_eq!(parsed.headers["authorization"], "Bearer x");
        assert_eq!(parsed.body.as_deref(), Some("{}"));
    }
}
