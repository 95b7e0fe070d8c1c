//! Secrets read at cold start from Secrets Manager and SSM Parameter Store, on
//! moto: each source resolves, a value in the environment is left to it, and a
//! missing secret fails with a message that names it; a function's secrets are
//! read at the same time.

use shared::config::Secret;
use shared::secrets::SecretStore;
use testkit::{aws, unique};

fn vars(pairs: &[(&str, String)]) -> impl Fn(&str) -> Option<String> {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    move |name| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

#[tokio::test]
async fn secrets_come_from_secrets_manager_and_ssm_and_values_are_left_to_the_environment() {
    let aws = aws().await;
    let store = SecretStore::new(&aws);
    let secret_id = unique("ticketing/jwt");
    store
        .put_secret(&secret_id, &Secret::new("from-secrets-manager"))
        .await
        .unwrap();
    // Putting it again (a second `ops provision`) updates it.
    store
        .put_secret(&secret_id, &Secret::new("from-secrets-manager-2"))
        .await
        .unwrap();
    let parameter = format!("/{}", unique("ticketing/bot"));
    aws_sdk_ssm::Client::new(&aws)
        .put_parameter()
        .name(&parameter)
        .value("from-ssm")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();

    let fetched = store
        .fetch_in(
            &["JWT_SECRET", "TELEGRAM_BOT_TOKEN", "DISCORD_WEBHOOK_URL"],
            vars(&[
                ("JWT_SECRET_SECRET_ID", secret_id),
                ("TELEGRAM_BOT_TOKEN_PARAMETER", parameter),
                ("DISCORD_WEBHOOK_URL", "http://local".into()),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(fetched["JWT_SECRET"].expose(), "from-secrets-manager-2");
    assert_eq!(fetched["TELEGRAM_BOT_TOKEN"].expose(), "from-ssm");
    assert!(
        !fetched.contains_key("DISCORD_WEBHOOK_URL"),
        "a value in the environment is read from there"
    );
}

#[tokio::test]
async fn a_missing_secret_fails_the_cold_start_naming_it() {
    let store = SecretStore::new(&aws().await);
    let missing = unique("ticketing/missing");
    let error = store
        .fetch_in(
            &["JWT_SECRET"],
            vars(&[("JWT_SECRET_SECRET_ID", missing.clone())]),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains(&missing), "{error}");
    let error = store
        .fetch_in(
            &["JWT_SECRET"],
            vars(&[("JWT_SECRET_PARAMETER", "/no/such/parameter".into())]),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("/no/such/parameter"), "{error}");
}

/// A proxy in front of moto that holds every request until `expected` of them
/// are waiting (or a few seconds have passed), then forwards each: it tells
/// whether the reads were in flight at the same time.
mod gate {
    use axum::body::{Body, to_bytes};
    use axum::extract::{Request, State};
    use axum::response::Response;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tokio::sync::Notify;

    pub struct Gate {
        expected: usize,
        waiting: AtomicUsize,
        most_waiting: AtomicUsize,
        arrived: Notify,
        upstream: String,
        client: reqwest::Client,
    }

    impl Gate {
        /// Until `expected` requests have waited at the gate at one time.
        async fn all_here(&self) {
            loop {
                let arrival = self.arrived.notified();
                tokio::pin!(arrival);
                arrival.as_mut().enable();
                if self.most_waiting() >= self.expected {
                    return;
                }
                arrival.await;
            }
        }

        /// The most requests that waited at the gate at one time.
        pub fn most_waiting(&self) -> usize {
            self.most_waiting.load(Ordering::SeqCst)
        }
    }

    /// Starts the gate on a free port; answers its endpoint and the gate.
    pub async fn start(expected: usize, upstream: String) -> (String, Arc<Gate>) {
        let gate = Arc::new(Gate {
            expected,
            waiting: AtomicUsize::new(0),
            most_waiting: AtomicUsize::new(0),
            arrived: Notify::new(),
            upstream,
            client: reqwest::Client::new(),
        });
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(gate.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (endpoint, gate)
    }

    async fn forward(State(gate): State<Arc<Gate>>, request: Request) -> Response {
        let now_waiting = gate.waiting.fetch_add(1, Ordering::SeqCst) + 1;
        gate.most_waiting.fetch_max(now_waiting, Ordering::SeqCst);
        gate.arrived.notify_waiters();
        // Waits for the others; gives up after a while, so reads made one
        // after the other are answered (slowly) and the test fails on the
        // count instead of hanging.
        let _ = tokio::time::timeout(Duration::from_secs(3), gate.all_here()).await;
        gate.waiting.fetch_sub(1, Ordering::SeqCst);
        let (parts, body) = request.into_parts();
        let body = to_bytes(body, usize::MAX).await.unwrap();
        let mut headers = parts.headers.clone();
        headers.remove(axum::http::header::HOST);
        let answer = gate
            .client
            .request(parts.method, format!("{}{}", gate.upstream, parts.uri))
            .headers(headers)
            .body(body)
            .send()
            .await
            .unwrap();
        let mut response = Response::builder().status(answer.status());
        for (name, value) in answer.headers() {
            response = response.header(name, value);
        }
        response
            .body(Body::from(answer.bytes().await.unwrap()))
            .unwrap()
    }
}

#[tokio::test]
async fn a_functions_secrets_are_read_at_the_same_time_not_one_after_the_other() {
    let aws = aws().await;
    let store = SecretStore::new(&aws);
    let secret_id = unique("ticketing/jwt");
    store
        .put_secret(&secret_id, &Secret::new("jwt-key"))
        .await
        .unwrap();
    let api_key_id = unique("ticketing/platform-key");
    store
        .put_secret(&api_key_id, &Secret::new("platform-key"))
        .await
        .unwrap();
    let parameter = format!("/{}", unique("ticketing/bot"));
    aws_sdk_ssm::Client::new(&aws)
        .put_parameter()
        .name(&parameter)
        .value("bot-token")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    let moto = aws.endpoint_url().unwrap().to_owned();
    let (endpoint, gate) = gate::start(3, moto).await;
    let through_gate = aws.to_builder().endpoint_url(endpoint).build();

    let fetched = SecretStore::new(&through_gate)
        .fetch_in(
            &["JWT_SECRET", "TELEGRAM_BOT_TOKEN", "DATA_PLATFORM_API_KEY"],
            vars(&[
                ("JWT_SECRET_SECRET_ID", secret_id),
                ("TELEGRAM_BOT_TOKEN_PARAMETER", parameter),
                ("DATA_PLATFORM_API_KEY_SECRET_ID", api_key_id),
            ]),
        )
        .await
        .unwrap();

    assert_eq!(
        gate.most_waiting(),
        3,
        "the three reads were in flight together"
    );
    assert_eq!(fetched["JWT_SECRET"].expose(), "jwt-key");
    assert_eq!(fetched["TELEGRAM_BOT_TOKEN"].expose(), "bot-token");
    assert_eq!(fetched["DATA_PLATFORM_API_KEY"].expose(), "platform-key");
}
