//! Demo and test data: a concert with seats, users with a balance and an ACTIVE
//! queue token each, with the JWT that admits them.

use crate::Error;
use crate::auth::{Admission, JwtKey};
use crate::domain::{
    Concert, ConcertId, Mail, Money, QueueToken, Reservation, ReservationId, ReservationStatus,
    Seat, SeatId, SeatStatus, TokenId, TokenStatus, User, UserId,
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
    pub reservations: Vec<Reservation>,
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
            reservations: Vec::new(),
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

/// The sample events' concert and the seat of their payment's reservation:
/// fixed ids, so seeding again puts the same items back as they were.
const SAMPLE_CONCERT: u128 = 0x5a4b_3c2d_1e0f_4a9b_8c7d_6e5f_4a3b_2c1d;
const SAMPLE_PAID_SEAT: u128 = 0x9e8d_7c6b_5a49_4382_a1b0_c9d8_e7f6_a5b4;
/// How long the sample world's token and its reservation's hold last.
const SAMPLE_LIFETIME_DAYS: i64 = 1;

/// The world the sample events of `events/` name, so a function handed one of
/// them on a fresh stack answers as it would in use: the queue token's user
/// (with a balance for two seats) and token, the seat the hold asks for
/// (AVAILABLE), and the PENDING reservation the payment pays (its seat HELD
/// for a day). `hold` and `payment` are API Gateway events; their token must
/// verify with `key` and name the same user.
pub fn sample_world(
    hold: &Value,
    payment: &Value,
    key: &JwtKey,
    now: DateTime<Utc>,
) -> Result<SeedData, Error> {
    let admission = sample_admission(hold, "reservation-hold", key, now)?;
    if sample_admission(payment, "payment", key, now)?.user_id != admission.user_id {
        return Err(Error::malformed(
            "the sample events' hold and payment tokens name different users",
        ));
    }
    let held_seat = SeatId::parse(&body_field(hold, "reservation-hold", "seatId")?)?;
    let reservation_id = ReservationId::parse(&body_field(payment, "payment", "reservationId")?)?;
    let until = now + Duration::days(SAMPLE_LIFETIME_DAYS);
    let concert = Concert {
        id: ConcertId::from_uuid(uuid::Uuid::from_u128(SAMPLE_CONCERT)),
        title: "아이유 콘서트 2026".into(),
        starts_at: now + Duration::days(30),
    };
    let price = Money::krw(150_000)?;
    let seat = |id, number, status| Seat {
        id,
        concert_id: concert.id,
        number,
        price,
        status,
    };
    let paid_seat_id = SeatId::from_uuid(uuid::Uuid::from_u128(SAMPLE_PAID_SEAT));
    let seats = vec![
        seat(held_seat, 3, SeatStatus::Available),
        seat(
            paid_seat_id,
            4,
            SeatStatus::Held {
                reservation: reservation_id,
                expires_at: until,
            },
        ),
    ];
    let user = User {
        id: admission.user_id,
        mail: Mail::parse("fan@example.com")?,
        balance: Money::krw(500_000)?,
    };
    let reservation = Reservation {
        id: reservation_id,
        user_id: user.id,
        mail: user.mail.clone(),
        seat_id: paid_seat_id,
        seat_number: 4,
        concert: concert.clone(),
        amount: price,
        status: ReservationStatus::Pending,
        created_at: now,
        hold_expires_at: until,
    };
    let token = QueueToken {
        id: admission.token_id,
        user_id: user.id,
        concert_id: Some(concert.id),
        status: TokenStatus::Active,
        expires_at: until,
        hold: None,
    };
    Ok(SeedData {
        concerts: vec![concert],
        seats,
        users: vec![user],
        tokens: vec![token],
        reservations: vec![reservation],
    })
}

/// Who the bearer token of sample `event` (`events/<name>.json`) admits.
fn sample_admission(
    event: &Value,
    name: &str,
    key: &JwtKey,
    now: DateTime<Utc>,
) -> Result<Admission, Error> {
    let bearer = event["headers"]["authorization"]
        .as_str()
        .unwrap_or_default();
    let jwt = bearer.strip_prefix("Bearer ").ok_or_else(|| {
        Error::malformed(format!(
            "events/{name}.json has no `authorization: Bearer` header"
        ))
    })?;
    key.verify(jwt, now).map_err(|e| {
        Error::malformed(format!(
            "the token of events/{name}.json does not verify with JWT_SECRET ({e}): \
             seed with the key that signed it (scripts/local-env.sh's)"
        ))
    })
}

/// The string `field` of sample `event`'s JSON body.
fn body_field(event: &Value, name: &str, field: &str) -> Result<String, Error> {
    let body: Value = serde_json::from_str(event["body"].as_str().unwrap_or_default())
        .map_err(|e| Error::malformed(format!("events/{name}.json's body is not JSON: {e}")))?;
    body[field].as_str().map(str::to_owned).ok_or_else(|| {
        Error::malformed(format!("events/{name}.json's body has no string `{field}`"))
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
