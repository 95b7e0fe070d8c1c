//! The sample events of `events/` and the settings of `env.local.json`, and the
//! world they name (the token's user, the seat), for the tests that feed them to
//! the handlers and to the built bootstraps.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use serde_json::Value;
use shared::dynamodb::TicketingRepository;
use shared::seed::sample_world;

/// The workspace's root folder.
pub fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `events/<name>`, parsed.
pub fn sample(name: &str) -> Value {
    let path = root().join("events").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// The variables `env.local.json` sets for `function` (a template logical id).
pub fn local_env(function: &str) -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(root().join("env.local.json")).unwrap();
    let all: Value = serde_json::from_str(&text).unwrap();
    all[function].as_object().cloned().unwrap_or_default()
}

/// The claims of the sample events' queue token.
pub fn token_claims(event: &Value) -> Value {
    let bearer = event["headers"]["authorization"].as_str().unwrap();
    let jwt = bearer.strip_prefix("Bearer ").unwrap();
    let claims = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap()
}

/// Seeds what the HTTP samples name, as `ops seed --sample-events` does: the
/// token's user (with its queue token), the seat the hold asks for and the
/// reservation the payment and show samples name.
pub async fn seed_the_sample_world(repo: &TicketingRepository) {
    let key = shared::auth::JwtKey::from_secret(crate::LOCAL_JWT_SECRET.as_bytes()).unwrap();
    let world = sample_world(
        &sample("reservation-hold.json"),
        &sample("payment.json"),
        &key,
        Utc::now(),
    )
    .unwrap();
    repo.seed(&world).await.unwrap();
}

/// `pay`'s sample with the reservation replaced by `reservation`.
pub fn payment_of(reservation: &str) -> Value {
    let mut pay = sample("payment.json");
    pay["body"] = serde_json::json!({ "reservationId": reservation })
        .to_string()
        .into();
    pay
}
