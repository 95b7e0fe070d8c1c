//! `ops seed`: a concert with seats, users with a balance and ACTIVE queue tokens.

use chrono::{Duration, Utc};
use serde_json::{Value, json};
use shared::auth::{Admission, JwtKey};
use shared::domain::{
    Concert, ConcertId, Mail, Money, QueueToken, Seat, SeatId, SeatStatus, TokenId, TokenStatus,
    User, UserId,
};
use shared::dynamodb::{SeedData, TicketingRepository};

pub struct SeedRequest {
    pub seats: u32,
    pub users: u32,
    pub balance: Money,
    pub price: Money,
    pub title: String,
    pub token_ttl: Duration,
}

pub struct SeededUser {
    pub user: User,
    pub token_id: TokenId,
    pub jwt: String,
}

pub struct Seeded {
    pub concert: Concert,
    pub seats: Vec<Seat>,
    pub users: Vec<SeededUser>,
}

impl Seeded {
    /// The contract of `ops seed`'s output.
    pub fn to_json(&self) -> Value {
        json!({
            "concert": {"id": self.concert.id, "title": self.concert.title,
                        "startsAt": self.concert.starts_at},
            "seats": self.seats.iter().map(|s| json!({
                "id": s.id, "price": s.price.amount(), "number": s.number,
            })).collect::<Vec<_>>(),
            "users": self.users.iter().map(|u| json!({
                "id": u.user.id, "mail": u.user.mail.as_str(),
                "balance": u.user.balance.amount(), "token": u.jwt, "tokenId": u.token_id,
            })).collect::<Vec<_>>(),
        })
    }
}

pub async fn seed(
    repo: &TicketingRepository,
    key: &JwtKey,
    request: &SeedRequest,
) -> Result<Seeded, crate::Error> {
    let now = Utc::now();
    let concert = Concert {
        id: ConcertId::random(),
        title: request.title.clone(),
        // Doors at 19:00 KST (10:00 UTC), a month from now.
        starts_at: (now + Duration::days(30))
            .date_naive()
            .and_hms_opt(10, 0, 0)
            .map(|t| t.and_utc())
            .unwrap_or(now),
    };
    let seats: Vec<Seat> = (1..=request.seats)
        .map(|number| Seat {
            id: SeatId::random(),
            concert_id: concert.id,
            number,
            price: request.price,
            status: SeatStatus::Available,
        })
        .collect();
    let mut users = Vec::new();
    let mut tokens = Vec::new();
    for _ in 0..request.users {
        let id = UserId::random();
        let user = User {
            id,
            mail: Mail::parse(&format!("user-{}@example.com", &id.to_string()[..8]))?,
            balance: request.balance,
        };
        let token = QueueToken {
            id: TokenId::random(),
            user_id: id,
            status: TokenStatus::Active,
            expires_at: now + request.token_ttl,
        };
        let jwt = key.issue(
            Admission {
                user_id: id,
                token_id: token.id,
            },
            now,
            token.expires_at,
        )?;
        tokens.push(token.clone());
        users.push(SeededUser {
            user,
            token_id: token.id,
            jwt,
        });
    }
    repo.seed(&SeedData {
        concerts: vec![concert.clone()],
        seats: seats.clone(),
        users: users.iter().map(|u| u.user.clone()).collect(),
        tokens,
    })
    .await?;
    Ok(Seeded {
        concert,
        seats,
        users,
    })
}
