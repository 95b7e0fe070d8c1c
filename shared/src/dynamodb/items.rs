//! Item layout and the mapping between entities and DynamoDB items.
//!
//! Ticketing table (`pk`, `sk`):
//! `USER#<id>`/`PROFILE`, `CONCERT#<id>`/`META`, `SEAT#<id>`/`META`,
//! `RESERVATION#<id>`/`META`, `PAYMENT#<id>`/`META`, `TOKEN#<id>`/`META`, and the
//! payment history under `USER#<id>`/`HISTORY#<paid at, ms>#<payment id>`.
//! Timestamps are epoch milliseconds, so conditions compare numbers.

use crate::Error;
use crate::clock::{from_millis, to_millis};
use crate::domain::{
    Concert, ConcertId, Mail, Money, QueueToken, Reservation, ReservationId, ReservationStatus,
    Seat, SeatId, SeatStatus, TokenHold, TokenId, TokenStatus, User, UserId,
};
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use std::collections::HashMap;

pub type Item = HashMap<String, AttributeValue>;

pub const PK: &str = "pk";
pub const SK: &str = "sk";
pub const META: &str = "META";
pub const PROFILE: &str = "PROFILE";

/// The sparse index of held seats: only HELD seats carry `heldShard`, so the
/// seat-expiration job queries by hold expiry without scanning the table. The
/// seats are spread over a few shards so no index partition runs hot.
pub const HELD_SEATS_INDEX: &str = "held-seats";
pub const HELD_SHARDS: u32 = 4;
/// The outbox table's index of items by creation time (`createdBucket`,
/// `createdAt`): see `outbox::created_bucket`.
pub const OUTBOX_CREATED_INDEX: &str = "created-at";
/// The ticketing table's sparse index of payments by time (`paidBucket`,
/// `paidAt`): only payment items carry `paidBucket`, in the outbox's hour and
/// shard buckets (`outbox::created_bucket`), so `ops reconcile` reads a window
/// of payments with one Query per hour and shard, never a scan.
pub const PAID_AT_INDEX: &str = "paid-at";

/// The shard of a held seat: stable per seat.
pub fn held_shard(seat: SeatId) -> String {
    held_shard_name((seat.as_uuid().as_u128() % u128::from(HELD_SHARDS)) as u32)
}

pub fn held_shard_name(shard: u32) -> String {
    format!("HELD#{shard}")
}

pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub fn key(pk: String, sk: &str) -> Item {
    HashMap::from([(PK.to_owned(), s(pk)), (SK.to_owned(), s(sk))])
}

/// The partition key of an item or key.
pub fn pk_of(item: &Item) -> Option<&str> {
    match item.get(PK) {
        Some(AttributeValue::S(pk)) => Some(pk),
        _ => None,
    }
}

fn user_pk(id: UserId) -> String {
    format!("USER#{id}")
}
pub fn user_key(id: UserId) -> Item {
    key(user_pk(id), PROFILE)
}
pub fn concert_key(id: ConcertId) -> Item {
    key(format!("CONCERT#{id}"), META)
}
pub fn seat_key(id: SeatId) -> Item {
    key(format!("SEAT#{id}"), META)
}
pub fn reservation_key(id: ReservationId) -> Item {
    key(format!("RESERVATION#{id}"), META)
}
pub fn token_key(id: TokenId) -> Item {
    key(format!("TOKEN#{id}"), META)
}
pub fn payment_key(id: crate::domain::PaymentId) -> Item {
    key(format!("PAYMENT#{id}"), META)
}

/// Reads attributes of one item, naming the item in every error.
pub struct Reader<'a> {
    item: &'a Item,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(item: &'a Item, what: &'static str) -> Self {
        Reader { item, what }
    }

    fn missing(&self, name: &str) -> Error {
        Error::corrupt(format!("{} item has no valid {name}", self.what))
    }

    pub fn str(&self, name: &str) -> Result<&'a str, Error> {
        match self.item.get(name) {
            Some(AttributeValue::S(v)) => Ok(v),
            _ => Err(self.missing(name)),
        }
    }

    pub fn opt_str(&self, name: &str) -> Option<&'a str> {
        match self.item.get(name) {
            Some(AttributeValue::S(v)) => Some(v),
            _ => None,
        }
    }

    pub fn i64(&self, name: &str) -> Result<i64, Error> {
        self.opt_i64(name)?.ok_or_else(|| self.missing(name))
    }

    pub fn opt_i64(&self, name: &str) -> Result<Option<i64>, Error> {
        match self.item.get(name) {
            Some(AttributeValue::N(v)) => v.parse().map(Some).map_err(|_| self.missing(name)),
            None | Some(AttributeValue::Null(_)) => Ok(None),
            _ => Err(self.missing(name)),
        }
    }

    pub fn time(&self, name: &str) -> Result<DateTime<Utc>, Error> {
        from_millis(self.i64(name)?).ok_or_else(|| self.missing(name))
    }

    pub fn opt_time(&self, name: &str) -> Result<Option<DateTime<Utc>>, Error> {
        self.opt_i64(name)?
            .map(|ms| from_millis(ms).ok_or_else(|| self.missing(name)))
            .transpose()
    }

    pub fn money(&self, name: &str) -> Result<Money, Error> {
        Money::krw(self.i64(name)?).map_err(|_| self.missing(name))
    }

    pub fn id<T: std::str::FromStr>(&self, name: &str) -> Result<T, Error> {
        self.str(name)?.parse().map_err(|_| self.missing(name))
    }
}

pub fn user_item(user: &User) -> Item {
    let mut item = user_key(user.id);
    item.insert("entity".into(), s("User"));
    item.insert("userId".into(), s(user.id.to_string()));
    item.insert("mail".into(), s(user.mail.as_str()));
    item.insert("balance".into(), n(user.balance.amount()));
    item
}

pub fn user_from(item: &Item) -> Result<User, Error> {
    let r = Reader::new(item, "user");
    Ok(User {
        id: r.id("userId")?,
        mail: Mail::parse(r.str("mail")?)?,
        balance: r.money("balance")?,
    })
}

pub fn concert_item(concert: &Concert) -> Item {
    let mut item = concert_key(concert.id);
    item.insert("entity".into(), s("Concert"));
    item.insert("concertId".into(), s(concert.id.to_string()));
    item.insert("title".into(), s(concert.title.clone()));
    item.insert("startsAt".into(), n(to_millis(concert.starts_at)));
    item
}

pub fn concert_from(item: &Item) -> Result<Concert, Error> {
    let r = Reader::new(item, "concert");
    Ok(Concert {
        id: r.id("concertId")?,
        title: r.str("title")?.to_owned(),
        starts_at: r.time("startsAt")?,
    })
}

/// The concert copied onto a seat or reservation item (`concertId`,
/// `concertTitle`, `concertStartsAt`), so holding and paying read no concert item.
fn insert_concert_copy(item: &mut Item, concert: &Concert) {
    item.insert("concertId".into(), s(concert.id.to_string()));
    item.insert("concertTitle".into(), s(concert.title.clone()));
    item.insert("concertStartsAt".into(), n(to_millis(concert.starts_at)));
}

fn concert_copy(r: &Reader) -> Result<Concert, Error> {
    Ok(Concert {
        id: r.id("concertId")?,
        title: r.str("concertTitle")?.to_owned(),
        starts_at: r.time("concertStartsAt")?,
    })
}

/// A seat's item, carrying its concert's title and start as well.
pub fn seat_item(seat: &Seat, concert: &Concert) -> Result<Item, Error> {
    if seat.concert_id != concert.id {
        return Err(Error::corrupt(format!(
            "seat {} is of concert {}, not {}",
            seat.id, seat.concert_id, concert.id
        )));
    }
    let mut item = seat_key(seat.id);
    item.insert("entity".into(), s("Seat"));
    item.insert("seatId".into(), s(seat.id.to_string()));
    insert_concert_copy(&mut item, concert);
    item.insert("seatNumber".into(), n(seat.number));
    item.insert("price".into(), n(seat.price.amount()));
    item.insert("status".into(), s(seat.status.name()));
    match &seat.status {
        SeatStatus::Available => {}
        SeatStatus::Held {
            reservation,
            expires_at,
        } => {
            item.insert("heldBy".into(), s(reservation.to_string()));
            item.insert("heldShard".into(), s(held_shard(seat.id)));
            item.insert("holdExpiresAt".into(), n(to_millis(*expires_at)));
        }
        SeatStatus::Sold { reservation } => {
            item.insert("soldTo".into(), s(reservation.to_string()));
        }
    }
    Ok(item)
}

/// A seat and the concert its item carries: what a hold copies.
pub fn seat_listing_from(item: &Item) -> Result<(Seat, Concert), Error> {
    Ok((seat_from(item)?, concert_copy(&Reader::new(item, "seat"))?))
}

pub fn seat_from(item: &Item) -> Result<Seat, Error> {
    let r = Reader::new(item, "seat");
    let status = match r.str("status")? {
        SeatStatus::AVAILABLE => SeatStatus::Available,
        SeatStatus::HELD => SeatStatus::Held {
            reservation: r.id("heldBy")?,
            expires_at: r.time("holdExpiresAt")?,
        },
        SeatStatus::SOLD => SeatStatus::Sold {
            reservation: r.id("soldTo")?,
        },
        other => return Err(Error::corrupt(format!("unknown seat status {other:?}"))),
    };
    Ok(Seat {
        id: r.id("seatId")?,
        concert_id: r.id("concertId")?,
        number: u32::try_from(r.i64("seatNumber")?)
            .map_err(|_| Error::corrupt("seat number out of range"))?,
        price: r.money("price")?,
        status,
    })
}

/// A payment's item, with the receipt a retry is answered with.
pub fn payment_item(
    receipt: &crate::domain::PaymentReceipt,
    reservation: &Reservation,
    now: DateTime<Utc>,
) -> Result<Item, Error> {
    let mut item = payment_key(receipt.payment_id);
    item.insert("entity".into(), s("Payment"));
    item.insert("paymentId".into(), s(receipt.payment_id.to_string()));
    item.insert("reservationId".into(), s(reservation.id.to_string()));
    item.insert("userId".into(), s(reservation.user_id.to_string()));
    item.insert("amount".into(), n(reservation.amount.amount()));
    item.insert("paidAt".into(), n(to_millis(now)));
    let bucket = crate::outbox::created_bucket(now, &receipt.payment_id.to_string());
    item.insert("paidBucket".into(), s(bucket));
    let text = serde_json::to_string(receipt).map_err(|e| Error::storage("receipt", e))?;
    item.insert("receipt".into(), s(text));
    Ok(item)
}

/// The payment in its user's history, sorted by time.
pub fn history_item(
    receipt: &crate::domain::PaymentReceipt,
    reservation: &Reservation,
    now: DateTime<Utc>,
) -> Item {
    let sort = format!("HISTORY#{:013}#{}", to_millis(now), receipt.payment_id);
    let mut item = key(user_pk(reservation.user_id), &sort);
    item.insert("entity".into(), s("PaymentHistory"));
    item.insert("kind".into(), s("PAYMENT"));
    item.insert("paymentId".into(), s(receipt.payment_id.to_string()));
    item.insert("reservationId".into(), s(reservation.id.to_string()));
    item.insert("amount".into(), n(reservation.amount.amount()));
    item.insert("at".into(), n(to_millis(now)));
    item
}

pub fn reservation_item(reservation: &Reservation) -> Item {
    let mut item = reservation_key(reservation.id);
    item.insert("entity".into(), s("Reservation"));
    item.insert("reservationId".into(), s(reservation.id.to_string()));
    item.insert("userId".into(), s(reservation.user_id.to_string()));
    item.insert("mail".into(), s(reservation.mail.as_str()));
    item.insert("seatId".into(), s(reservation.seat_id.to_string()));
    item.insert("seatNumber".into(), n(reservation.seat_number));
    insert_concert_copy(&mut item, &reservation.concert);
    item.insert("amount".into(), n(reservation.amount.amount()));
    item.insert("status".into(), s(reservation.status.name()));
    item.insert("createdAt".into(), n(to_millis(reservation.created_at)));
    item.insert(
        "holdExpiresAt".into(),
        n(to_millis(reservation.hold_expires_at)),
    );
    if let ReservationStatus::Confirmed {
        payment_id,
        paid_at,
    } = &reservation.status
    {
        item.insert("paymentId".into(), s(payment_id.to_string()));
        item.insert("paidAt".into(), n(to_millis(*paid_at)));
    }
    item
}

pub fn reservation_from(item: &Item) -> Result<Reservation, Error> {
    let r = Reader::new(item, "reservation");
    let status = match r.str("status")? {
        ReservationStatus::PENDING => ReservationStatus::Pending,
        ReservationStatus::CONFIRMED => ReservationStatus::Confirmed {
            payment_id: r.id("paymentId")?,
            paid_at: r.time("paidAt")?,
        },
        ReservationStatus::EXPIRED => ReservationStatus::Expired,
        other => {
            return Err(Error::corrupt(format!(
                "unknown reservation status {other:?}"
            )));
        }
    };
    Ok(Reservation {
        id: r.id("reservationId")?,
        user_id: r.id("userId")?,
        mail: Mail::parse(r.str("mail")?)?,
        seat_id: r.id("seatId")?,
        seat_number: u32::try_from(r.i64("seatNumber")?)
            .map_err(|_| Error::corrupt("seat number out of range"))?,
        concert: concert_copy(&r)?,
        amount: r.money("amount")?,
        status,
        created_at: r.time("createdAt")?,
        hold_expires_at: r.time("holdExpiresAt")?,
    })
}

pub fn token_item(token: &QueueToken) -> Item {
    let mut item = token_key(token.id);
    item.insert("entity".into(), s("QueueToken"));
    item.insert("tokenId".into(), s(token.id.to_string()));
    item.insert("userId".into(), s(token.user_id.to_string()));
    if let Some(concert) = token.concert_id {
        item.insert("concertId".into(), s(concert.to_string()));
    }
    item.insert("status".into(), s(token.status.name()));
    item.insert("expiresAt".into(), n(to_millis(token.expires_at)));
    if let Some(hold) = token.hold {
        item.insert("heldReservation".into(), s(hold.reservation.to_string()));
        item.insert("heldUntil".into(), n(to_millis(hold.until)));
    }
    item
}

pub fn token_from(item: &Item) -> Result<QueueToken, Error> {
    let r = Reader::new(item, "queue token");
    Ok(QueueToken {
        id: r.id("tokenId")?,
        user_id: r.id("userId")?,
        concert_id: r
            .opt_str("concertId")
            .map(|id| {
                id.parse()
                    .map_err(|_| Error::corrupt(format!("queue token concertId {id:?}")))
            })
            .transpose()?,
        status: {
            let status = r.str("status")?;
            TokenStatus::parse(status)
                .ok_or_else(|| Error::corrupt(format!("unknown token status {status:?}")))?
        },
        expires_at: r.time("expiresAt")?,
        hold: match r.opt_time("heldUntil")? {
            Some(until) => Some(TokenHold {
                reservation: r.id("heldReservation")?,
                until,
            }),
            None => None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn every_entity_round_trips_through_its_item() {
        let user = User {
            id: UserId::random(),
            mail: Mail::parse("a@example.com").unwrap(),
            balance: Money::krw(10).unwrap(),
        };
        assert_eq!(user_from(&user_item(&user)).unwrap(), user);
        let concert = Concert {
            id: ConcertId::random(),
            title: "t".into(),
            starts_at: at(5),
        };
        assert_eq!(concert_from(&concert_item(&concert)).unwrap(), concert);
        let seat = Seat {
            id: SeatId::random(),
            concert_id: concert.id,
            number: 4,
            price: Money::krw(9).unwrap(),
            status: SeatStatus::Available,
        };
        assert_eq!(
            seat_listing_from(&seat_item(&seat, &concert).unwrap()).unwrap(),
            (seat.clone(), concert.clone())
        );
        let (reservation, held) = Reservation::hold(
            ReservationId::random(),
            &user,
            (&seat, &concert),
            at(0),
            Duration::seconds(60),
        )
        .unwrap();
        assert_eq!(
            seat_from(&seat_item(&held, &concert).unwrap()).unwrap(),
            held
        );
        assert_eq!(
            reservation_from(&reservation_item(&reservation)).unwrap(),
            reservation
        );
        let confirmed = reservation
            .confirm(user.id, crate::domain::PaymentId::random(), at(1))
            .unwrap();
        assert_eq!(
            reservation_from(&reservation_item(&confirmed)).unwrap(),
            confirmed
        );
        let sold = held.sell(reservation.id, at(1)).unwrap();
        assert_eq!(
            seat_from(&seat_item(&sold, &concert).unwrap()).unwrap(),
            sold
        );
        let mut token = QueueToken {
            id: TokenId::random(),
            user_id: user.id,
            concert_id: Some(concert.id),
            status: TokenStatus::Active,
            expires_at: at(100),
            hold: None,
        };
        assert_eq!(token_from(&token_item(&token)).unwrap(), token);
        token.hold = Some(TokenHold {
            reservation: reservation.id,
            until: at(60),
        });
        assert_eq!(token_from(&token_item(&token)).unwrap(), token);
        // A token written before tokens named their concert reads as naming none.
        token.concert_id = None;
        assert_eq!(token_from(&token_item(&token)).unwrap(), token);
    }

    #[test]
    fn an_item_missing_an_attribute_is_corrupt_and_says_which() {
        let mut item = user_item(&User {
            id: UserId::random(),
            mail: Mail::parse("a@example.com").unwrap(),
            balance: Money::ZERO,
        });
        item.remove("balance");
        let err = user_from(&item).unwrap_err();
        assert_eq!(
            err.to_string(),
            "stored item is corrupt: user item has no valid balance"
        );
    }
}
