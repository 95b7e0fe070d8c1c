//! Demo and test data: a concert with seats, users with a balance and an ACTIVE
//! queue token each, with the JWT that admits them.

use crate::Error;
use crate::auth::{Admission, JwtKey};
use crate::domain::{
    Concert, ConcertId, Mail, Money, QueueToken, Seat, SeatId, SeatStatus, TokenId, TokenStatus,
    User, UserId,
};
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

pub struct SeedRequest {
    pub seats: u32,
    pub users: u32,
    pub balance: Money,
    pub price: Money,
    pub title: String,
    pub starts_at: DateTime<Utc>,
    pub token_ttl: Duration,
    /// Mail addresses are `<prefix><n>.<8 hex>@example.com`, unique per run.
    pub mail_prefix: String,
}

/// Everything a seed writes.
#[derive(Clone, Debug, Default)]
pub struct SeedData {
    pub concerts: Vec<Concert>,
    pub seats: Vec<Seat>,
    pub users: Vec<User>,
    pub tokens: Vec<QueueToken>,
}

pub struct SeededUser {
    pub user: User,
    pub token: QueueToken,
    pub jwt: String,
}

pub struct Seeded {
    pub concert: Concert,
    pub seats: Vec<Seat>,
    pub users: Vec<SeededUser>,
}

impl Seeded {
    pub fn data(&self) -> SeedData {
        SeedData {
            concerts: vec![self.concert.clone()],
            seats: self.seats.clone(),
            users: self.users.iter().map(|u| u.user.clone()).collect(),
            tokens: self.users.iter().map(|u| u.token.clone()).collect(),
        }
    }

    /// The output contract of `ops seed`.
    pub fn to_json(&self) -> Value {
        json!({
            "concert": {"id": self.concert.id, "title": self.concert.title,
                        "startsAt": self.concert.starts_at},
            "seats": self.seats.iter().map(|s| json!({
                "id": s.id, "price": s.price.amount(), "number": s.number,
            })).collect::<Vec<_>>(),
            "users": self.users.iter().map(|u| json!({
                "id": u.user.id, "mail": u.user.mail.as_str(),
                "balance": u.user.balance.amount(), "token": u.jwt, "tokenId": u.token.id,
            })).collect::<Vec<_>>(),
        })
    }
}

pub fn generate(request: &SeedRequest, key: &JwtKey, now: DateTime<Utc>) -> Result<Seeded, Error> {
    let concert = Concert {
        id: ConcertId::random(),
        title: request.title.clone(),
        starts_at: request.starts_at,
    };
    let seats = (1..=request.seats)
        .map(|number| Seat {
            id: SeatId::random(),
            concert_id: concert.id,
            number,
            price: request.price,
            status: SeatStatus::Available,
        })
        .collect();
    let users = (0..request.users)
        .map(|n| {
            let id = UserId::random();
            let short = &id.as_uuid().simple().to_string()[..8];
            let user = User {
                id,
                mail: Mail::parse(&format!("{}{n}.{short}@example.com", request.mail_prefix))?,
                balance: request.balance,
            };
            let token = QueueToken {
                id: TokenId::random(),
                user_id: id,
                concert_id: Some(concert.id),
                status: TokenStatus::Active,
                expires_at: now + request.token_ttl,
                hold: None,
            };
            let jwt = key.issue(
                Admission {
                    user_id: id,
                    token_id: token.id,
                },
                now,
                token.expires_at,
            )?;
            Ok(SeededUser { user, token, jwt })
        })
        .collect::<Result<_, Error>>()?;
    Ok(Seeded {
        concert,
        seats,
        users,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_has_the_seats_and_users_asked_for_with_tokens_that_verify() {
        let key = JwtKey::from_secret(b"seed-test-secret-seed-test-secret-01").unwrap();
        let now = Utc::now();
        let seeded = generate(
            &SeedRequest {
                seats: 3,
                users: 2,
                balance: Money::krw(100).unwrap(),
                price: Money::krw(10).unwrap(),
                title: "t".into(),
                starts_at: now,
                token_ttl: Duration::hours(1),
                mail_prefix: "fan".into(),
            },
            &key,
            now,
        )
        .unwrap();
        assert_eq!(seeded.seats.len(), 3);
        assert_eq!(seeded.users.len(), 2);
        assert!(seeded.users[1].user.mail.as_str().starts_with("fan1."));
        let admission = key.verify(&seeded.users[0].jwt, now).unwrap();
        assert_eq!(admission.token_id, seeded.users[0].token.id);
        let json = seeded.to_json();
        assert_eq!(json["seats"][2]["number"], 3);
        assert_eq!(json["users"][0]["balance"], 100);
        assert_eq!(seeded.data().tokens.len(), 2);
    }
}
