use super::Refusal;
use super::{Concert, Mail, Money, PaymentId, ReservationId, Seat, SeatId, User, UserId};
use chrono::{DateTime, Duration, Utc};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReservationStatus {
    Pending,
    Confirmed {
        payment_id: PaymentId,
        paid_at: DateTime<Utc>,
    },
    Expired,
}

impl ReservationStatus {
    /// The stored names, spelled once: the items and the writes' conditions use them.
    pub const PENDING: &'static str = "PENDING";
    pub const CONFIRMED: &'static str = "CONFIRMED";
    pub const EXPIRED: &'static str = "EXPIRED";

    pub fn name(&self) -> &'static str {
        match self {
            ReservationStatus::Pending => Self::PENDING,
            ReservationStatus::Confirmed { .. } => Self::CONFIRMED,
            ReservationStatus::Expired => Self::EXPIRED,
        }
    }
}

/// A customer's claim on one seat. It copies, at hold time, what the payment's
/// receipt and event need (the seat number and price, the concert, the
/// customer's mail), so the payment reads this one item and then writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    pub id: ReservationId,
    pub user_id: UserId,
    /// The customer's mail when the seat was held.
    pub mail: Mail,
    pub seat_id: SeatId,
    pub seat_number: u32,
    pub concert: Concert,
    pub amount: Money,
    pub status: ReservationStatus,
    pub created_at: DateTime<Utc>,
    pub hold_expires_at: DateTime<Utc>,
}

impl Reservation {
    /// Holds `seat` of `concert` for `customer`: the new PENDING reservation and
    /// the HELD seat.
    pub fn hold(
        id: ReservationId,
        customer: &User,
        (seat, concert): (&Seat, &Concert),
        now: DateTime<Utc>,
        hold_for: Duration,
    ) -> Result<(Reservation, Seat), Refusal> {
        if hold_for <= Duration::zero() {
            return Err(Refusal::invalid("hold time", "it must be positive"));
        }
        if seat.concert_id != concert.id {
            return Err(Refusal::Conflict(format!(
                "seat {} is not of concert {}",
                seat.id, concert.id
            )));
        }
        let held = seat.hold(id, now, hold_for)?;
        let reservation = Reservation {
            id,
            user_id: customer.id,
            mail: customer.mail.clone(),
            seat_id: seat.id,
            seat_number: seat.number,
            concert: concert.clone(),
            amount: seat.price,
            status: ReservationStatus::Pending,
            created_at: now,
            hold_expires_at: now + hold_for,
        };
        Ok((reservation, held))
    }

    pub fn ensure_owner(&self, caller: UserId) -> Result<(), Refusal> {
        if self.user_id == caller {
            Ok(())
        } else {
            Err(Refusal::NotOwner)
        }
    }

    /// Whether `caller` may pay this reservation at `now`: theirs, PENDING, and
    /// its hold not yet expired.
    pub fn ensure_payable(&self, caller: UserId, now: DateTime<Utc>) -> Result<(), Refusal> {
        self.ensure_owner(caller)?;
        match self.status {
            ReservationStatus::Confirmed { .. } => Err(Refusal::AlreadyPaid(self.id)),
            ReservationStatus::Expired => Err(Refusal::ReservationExpired(self.id)),
            ReservationStatus::Pending if now >= self.hold_expires_at => {
                Err(Refusal::HoldExpired {
                    reservation: self.id,
                    expired_at: self.hold_expires_at,
                })
            }
            ReservationStatus::Pending => Ok(()),
        }
    }

    /// Confirms a PENDING reservation of `caller` whose hold has not expired.
    pub fn confirm(
        &self,
        caller: UserId,
        payment_id: PaymentId,
        now: DateTime<Utc>,
    ) -> Result<Reservation, Refusal> {
        self.ensure_payable(caller, now)?;
        Ok(Reservation {
            status: ReservationStatus::Confirmed {
                payment_id,
                paid_at: now,
            },
            ..self.clone()
        })
    }

    /// Expires a PENDING reservation whose hold has run out.
    pub fn expire(&self, now: DateTime<Utc>) -> Result<Reservation, Refusal> {
        match self.status {
            ReservationStatus::Pending if now >= self.hold_expires_at => Ok(Reservation {
                status: ReservationStatus::Expired,
                ..self.clone()
            }),
            ReservationStatus::Pending => Err(Refusal::Conflict(format!(
                "reservation {} (its hold runs until {})",
                self.id, self.hold_expires_at
            ))),
            ReservationStatus::Confirmed { .. } => Err(Refusal::AlreadyPaid(self.id)),
            ReservationStatus::Expired => Err(Refusal::ReservationExpired(self.id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ConcertId, SeatStatus};

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn concert() -> Concert {
        Concert {
            id: ConcertId::from_uuid(uuid::Uuid::nil()),
            title: "Winter Live".into(),
            starts_at: at(86_400),
        }
    }

    fn customer(id: UserId) -> User {
        User {
            id,
            mail: Mail::parse("lee@example.com").unwrap(),
            balance: Money::ZERO,
        }
    }

    fn available_seat() -> Seat {
        Seat {
            id: SeatId::random(),
            concert_id: concert().id,
            number: 12,
            price: Money::krw(77_000).unwrap(),
            status: SeatStatus::Available,
        }
    }

    fn pending(owner: UserId) -> Reservation {
        Reservation::hold(
            ReservationId::random(),
            &customer(owner),
            (&available_seat(), &concert()),
            at(0),
            Duration::seconds(300),
        )
        .unwrap()
        .0
    }

    #[test]
    fn holding_creates_a_pending_reservation_with_the_seat_price_and_expiry() {
        let seat = available_seat();
        let user = UserId::random();
        let id = ReservationId::random();
        let (r, held) = Reservation::hold(
            id,
            &customer(user),
            (&seat, &concert()),
            at(0),
            Duration::seconds(300),
        )
        .unwrap();
        assert_eq!(r.status, ReservationStatus::Pending);
        assert_eq!(r.amount, seat.price);
        assert_eq!(r.seat_number, 12);
        assert_eq!(r.concert, concert(), "the concert travels with it");
        assert_eq!(r.mail.as_str(), "lee@example.com");
        assert_eq!(r.hold_expires_at, at(300));
        assert_eq!(
            held.status,
            SeatStatus::Held {
                reservation: id,
                expires_at: at(300)
            }
        );
    }

    #[test]
    fn holding_with_a_zero_hold_time_is_refused() {
        let err = Reservation::hold(
            ReservationId::random(),
            &customer(UserId::random()),
            (&available_seat(), &concert()),
            at(0),
            Duration::zero(),
        )
        .unwrap_err();
        assert!(matches!(err, Refusal::InvalidInput { .. }));
    }

    #[test]
    fn holding_a_seat_with_another_concerts_details_is_refused() {
        let other = Concert {
            id: ConcertId::random(),
            ..concert()
        };
        let err = Reservation::hold(
            ReservationId::random(),
            &customer(UserId::random()),
            (&available_seat(), &other),
            at(0),
            Duration::seconds(300),
        )
        .unwrap_err();
        assert!(matches!(err, Refusal::Conflict(_)), "{err}");
    }

    #[test]
    fn the_owner_confirms_a_pending_reservation_before_expiry() {
        let owner = UserId::random();
        let payment = PaymentId::random();
        let confirmed = pending(owner).confirm(owner, payment, at(299)).unwrap();
        assert_eq!(
            confirmed.status,
            ReservationStatus::Confirmed {
                payment_id: payment,
                paid_at: at(299)
            }
        );
    }

    #[test]
    fn another_user_cannot_confirm() {
        let err = pending(UserId::random())
            .confirm(UserId::random(), PaymentId::random(), at(1))
            .unwrap_err();
        assert!(matches!(err, Refusal::NotOwner));
        assert_eq!(err.code(), "FORBIDDEN");
    }

    #[test]
    fn confirming_at_the_expiry_instant_is_refused_as_hold_expired() {
        let owner = UserId::random();
        let err = pending(owner)
            .confirm(owner, PaymentId::random(), at(300))
            .unwrap_err();
        assert!(matches!(err, Refusal::HoldExpired { .. }), "{err}");
    }

    #[test]
    fn confirming_twice_is_refused_as_already_paid() {
        let owner = UserId::random();
        let confirmed = pending(owner)
            .confirm(owner, PaymentId::random(), at(1))
            .unwrap();
        let err = confirmed
            .confirm(owner, PaymentId::random(), at(2))
            .unwrap_err();
        assert!(matches!(err, Refusal::AlreadyPaid(_)));
    }

    #[test]
    fn an_expired_reservation_cannot_be_confirmed() {
        let owner = UserId::random();
        let expired = pending(owner).expire(at(300)).unwrap();
        assert_eq!(expired.status, ReservationStatus::Expired);
        let err = expired
            .confirm(owner, PaymentId::random(), at(301))
            .unwrap_err();
        assert!(matches!(err, Refusal::ReservationExpired(_)));
    }

    #[test]
    fn a_reservation_does_not_expire_before_its_hold_ends_nor_after_payment() {
        let owner = UserId::random();
        let r = pending(owner);
        assert!(matches!(r.expire(at(299)), Err(Refusal::Conflict(_))));
        let paid = r.confirm(owner, PaymentId::random(), at(1)).unwrap();
        assert!(matches!(paid.expire(at(400)), Err(Refusal::AlreadyPaid(_))));
    }
}
