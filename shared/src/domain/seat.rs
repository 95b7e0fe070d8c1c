use super::Refusal;
use super::{ConcertId, Money, ReservationId, SeatId};
use chrono::{DateTime, Duration, Utc};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeatStatus {
    Available,
    /// Held for a reservation until `expires_at` (exclusive).
    Held {
        reservation: ReservationId,
        expires_at: DateTime<Utc>,
    },
    Sold {
        reservation: ReservationId,
    },
}

impl SeatStatus {
    /// The stored names, spelled once: the items and the writes' conditions use them.
    pub const AVAILABLE: &'static str = "AVAILABLE";
    pub const HELD: &'static str = "HELD";
    pub const SOLD: &'static str = "SOLD";

    pub fn name(&self) -> &'static str {
        match self {
            SeatStatus::Available => Self::AVAILABLE,
            SeatStatus::Held { .. } => Self::HELD,
            SeatStatus::Sold { .. } => Self::SOLD,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seat {
    pub id: SeatId,
    pub concert_id: ConcertId,
    pub number: u32,
    pub price: Money,
    pub status: SeatStatus,
}

impl Seat {
    /// Holds an AVAILABLE seat for `reservation` until `now + hold_for`.
    ///
    /// A HELD seat stays taken even once its hold has expired: releasing it (and
    /// expiring the old reservation) is the seat-expiration job's transition, so
    /// that every release also publishes its event.
    pub fn hold(
        &self,
        reservation: ReservationId,
        now: DateTime<Utc>,
        hold_for: Duration,
    ) -> Result<Seat, Refusal> {
        match self.status {
            SeatStatus::Available => Ok(Seat {
                status: SeatStatus::Held {
                    reservation,
                    expires_at: now + hold_for,
                },
                ..self.clone()
            }),
            _ => Err(Refusal::SeatTaken(self.id)),
        }
    }

    /// Sells a seat held by `reservation` whose hold has not expired at `now`.
    pub fn sell(&self, reservation: ReservationId, now: DateTime<Utc>) -> Result<Seat, Refusal> {
        match &self.status {
            SeatStatus::Held {
                reservation: holder,
                expires_at,
            } if *holder == reservation => {
                if now >= *expires_at {
                    return Err(Refusal::HoldExpired {
                        reservation,
                        expired_at: *expires_at,
                    });
                }
                Ok(Seat {
                    status: SeatStatus::Sold { reservation },
                    ..self.clone()
                })
            }
            SeatStatus::Sold { reservation: buyer } if *buyer == reservation => {
                Err(Refusal::AlreadyPaid(reservation))
            }
            // Held by another reservation, sold to another, or released: this
            // reservation's hold is gone.
            _ => Err(Refusal::HoldExpired {
                reservation,
                expired_at: now,
            }),
        }
    }
}

impl Seat {
    /// Releases a seat whose hold by `reservation` has expired at `now`. A seat
    /// that was sold, re-held or released meanwhile is not this job's to release.
    pub fn release_expired(
        &self,
        reservation: ReservationId,
        now: DateTime<Utc>,
    ) -> Result<Seat, Refusal> {
        match &self.status {
            SeatStatus::Held {
                reservation: holder,
                expires_at,
            } if *holder == reservation && now >= *expires_at => Ok(Seat {
                status: SeatStatus::Available,
                ..self.clone()
            }),
            _ => Err(Refusal::Conflict(format!(
                "seat {} is no longer held by reservation {reservation} with an expired hold",
                self.id
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seat(status: SeatStatus) -> Seat {
        Seat {
            id: SeatId::random(),
            concert_id: ConcertId::random(),
            number: 7,
            price: Money::krw(50_000).unwrap(),
            status,
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn an_available_seat_is_held_until_now_plus_the_hold_time() {
        let r = ReservationId::random();
        let held = seat(SeatStatus::Available)
            .hold(r, at(0), Duration::minutes(5))
            .unwrap();
        assert_eq!(
            held.status,
            SeatStatus::Held {
                reservation: r,
                expires_at: at(300)
            }
        );
    }

    #[test]
    fn a_held_or_sold_seat_cannot_be_held() {
        let r = ReservationId::random();
        for status in [
            SeatStatus::Held {
                reservation: ReservationId::random(),
                expires_at: at(100),
            },
            SeatStatus::Held {
                reservation: ReservationId::random(),
                expires_at: at(-100),
            },
            SeatStatus::Sold {
                reservation: ReservationId::random(),
            },
        ] {
            let err = seat(status)
                .hold(r, at(0), Duration::minutes(5))
                .unwrap_err();
            assert!(matches!(err, Refusal::SeatTaken(_)), "{err}");
            assert_eq!(err.code(), "SEAT_TAKEN");
        }
    }

    #[test]
    fn a_seat_held_by_the_reservation_is_sold_before_the_hold_expires() {
        let r = ReservationId::random();
        let sold = seat(SeatStatus::Held {
            reservation: r,
            expires_at: at(10),
        })
        .sell(r, at(9))
        .unwrap();
        assert_eq!(sold.status, SeatStatus::Sold { reservation: r });
    }

    #[test]
    fn a_seat_cannot_be_sold_at_or_after_its_hold_expiry() {
        let r = ReservationId::random();
        let held = seat(SeatStatus::Held {
            reservation: r,
            expires_at: at(10),
        });
        for now in [at(10), at(11)] {
            let err = held.sell(r, now).unwrap_err();
            assert!(matches!(err, Refusal::HoldExpired { .. }), "{err}");
        }
    }

    #[test]
    fn a_seat_held_by_another_reservation_cannot_be_sold() {
        let err = seat(SeatStatus::Held {
            reservation: ReservationId::random(),
            expires_at: at(10),
        })
        .sell(ReservationId::random(), at(0))
        .unwrap_err();
        assert!(matches!(err, Refusal::HoldExpired { .. }), "{err}");
    }

    #[test]
    fn selling_a_seat_already_sold_to_the_reservation_says_already_paid() {
        let r = ReservationId::random();
        let err = seat(SeatStatus::Sold { reservation: r })
            .sell(r, at(0))
            .unwrap_err();
        assert!(matches!(err, Refusal::AlreadyPaid(_)), "{err}");
    }

    #[test]
    fn an_expired_hold_is_released_and_an_unexpired_sold_or_other_one_is_not() {
        let r = ReservationId::random();
        let held = seat(SeatStatus::Held {
            reservation: r,
            expires_at: at(10),
        });
        assert_eq!(
            held.release_expired(r, at(10)).unwrap().status,
            SeatStatus::Available
        );
        assert!(held.release_expired(r, at(9)).is_err());
        assert!(
            held.release_expired(ReservationId::random(), at(11))
                .is_err()
        );
        assert!(
            seat(SeatStatus::Sold { reservation: r })
                .release_expired(r, at(11))
                .is_err()
        );
    }

    #[test]
    fn an_available_seat_cannot_be_sold() {
        let err = seat(SeatStatus::Available)
            .sell(ReservationId::random(), at(0))
            .unwrap_err();
        assert!(matches!(err, Refusal::HoldExpired { .. }), "{err}");
    }
}
