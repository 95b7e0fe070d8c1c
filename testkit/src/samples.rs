//! The sample events of `events/` and the settings of `env.local.json`, and the
//! world they name (the token's user, the seat), for the tests that feed them to
//! the handlers and to the built bootstraps.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{Duration, Utc};
use serde_json::Value;
use shared::domain::{
    Concert, ConcertId, Mail, Money, QueueToken, Seat, SeatId, SeatStatus, TokenId, TokenStatus,
    User, UserId,
};
use shared::dynamodb::TicketingRepository;
use shared::seed::SeedData;

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

/// Seeds what the HTTP samples name: the token's user (with its queue token) and
/// the seat the hold asks for.
pub async fn seed_the_sample_world(repo: &TicketingRepository, hold: &Value) {
    let claims = token_claims(hold);
    let body: Value = serde_json::from_str(hold["body"].as_str().unwrap()).unwrap();
    let user_id = UserId::parse(claims["sub"].as_str().unwrap()).unwrap();
    let concert = Concert {
        id: ConcertId::random(),
        title: "아이유 콘서트 2026".into(),
        starts_at: "2026-12-24T10:00:00Z".parse().unwrap(),
    };
    let data = SeedData {
        seats: vec![Seat {
            id: SeatId::parse(body["seatId"].as_str().unwrap()).unwrap(),
            concert_id: concert.id,
            number: 3,
            price: Money::krw(150_000).unwrap(),
            status: SeatStatus::Available,
        }],
        concerts: vec![concert.clone()],
        users: vec![User {
            id: user_id,
            mail: Mail::parse("fan@example.com").unwrap(),
            balance: Money::krw(200_000).unwrap(),
        }],
        tokens: vec![QueueToken {
            id: TokenId::parse(claims["jti"].as_str().unwrap()).unwrap(),
            user_id,
            concert_id: Some(concert.id),
            status: TokenStatus::Active,
            expires_at: Utc::now() + Duration::days(1),
            hold: None,
        }],
    };
    repo.seed(&data).await.unwrap();
}

/// `pay`'s sample with the reservation replaced by `reservation`.
pub fn payment_of(reservation: &str) -> Value {
    let mut pay = sample("payment.json");
    pay["body"] = serde_json::json!({ "reservationId": reservation })
        .to_string()
        .into();
    pay
}
