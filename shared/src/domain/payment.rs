use super::events::{EventEnvelope, PaymentCompleted};
use super::{
    EventId, Money, PaymentId, QueueToken, Refusal, Reservation, ReservationId, ReservationStatus,
    Seat, SeatId, TokenId, User, UserId,
};
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};

/// The answer to a successful payment, stored so a retry gets the same answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentReceipt {
    pub payment_id: PaymentId,
    pub reservation_id: ReservationId,
    pub seat_id: SeatId,
    pub user_id: UserId,
    pub amount: Money,
    pub paid_at: DateTime<Utc>,
    pub status: PaymentStatus,
}

/// What a receipt reports: one exists only for a payment that went through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentStatus {
    Confirmed,
}

impl PaymentReceipt {
    /// The receipt of a CONFIRMED reservation: what a retry is answered with,
    /// read from the reservation alone.
    pub fn of(reservation: &Reservation) -> Option<PaymentReceipt> {
        let ReservationStatus::Confirmed {
            payment_id,
            paid_at,
        } = reservation.status
        else {
            return None;
        };
        Some(PaymentReceipt {
            payment_id,
            reservation_id: reservation.id,
            seat_id: reservation.seat_id,
            user_id: reservation.user_id,
            amount: reservation.amount,
            paid_at,
            status: PaymentStatus::Confirmed,
        })
    }
}

/// What a payment writes: the reservation CONFIRMED, its receipt and event.
/// The token it finishes, the seat it sells and the balance it debits change
/// in the same transaction under conditions that restate [`refusal`]'s rules.
#[derive(Clone, Debug)]
pub struct PaymentOutcome {
    pub reservation: Reservation,
    /// The caller's queue token, finished by the payment.
    pub token_id: TokenId,
    pub receipt: PaymentReceipt,
    pub event: EventEnvelope,
}

/// Pays for `reservation`, held by `caller` with the queue token `token_id`.
/// Everything the receipt and the event say was copied onto the reservation
/// when the seat was held, so nothing else is read first.
pub fn pay(
    reservation: &Reservation,
    (caller, token_id): (UserId, TokenId),
    (payment_id, event_id): (PaymentId, EventId),
    now: DateTime<Utc>,
) -> Result<PaymentOutcome, Refusal> {
    // Stored to the millisecond: the first answer and every replay agree.
    let now = now.trunc_subsecs(3);
    let confirmed = reservation.confirm(caller, payment_id, now)?;
    let receipt = PaymentReceipt::of(&confirmed).ok_or_else(|| {
        Refusal::Conflict(format!("reservation {} is not confirmed", reservation.id))
    })?;
    let payload = PaymentCompleted::new(payment_id, &confirmed, now);
    Ok(PaymentOutcome {
        reservation: confirmed,
        token_id,
        receipt,
        event: EventEnvelope::payment_completed(event_id, &payload),
    })
}

/// The items a payment's transaction found breaking its conditions, as they
/// were then; `None` for those that passed.
#[derive(Clone, Debug, Default)]
pub struct Refuted {
    pub reservation: Option<Reservation>,
    pub token: Option<QueueToken>,
    pub seat: Option<Seat>,
    pub user: Option<User>,
}

/// Why the store refused to pay `reservation`: the domain's rules judged on the
/// items as the transaction found them, in the order a customer is best told
/// about them (whose reservation, is it still payable, is the token good, is
/// the seat still held, is there money). `None` when every item passes: the
/// store refused for a change the caller may retry.
pub fn refusal(
    reservation: &Reservation,
    caller: UserId,
    now: DateTime<Utc>,
    found: &Refuted,
) -> Option<Refusal> {
    let reservation = found.reservation.as_ref().unwrap_or(reservation);
    let judge = || -> Result<(), Refusal> {
        reservation.ensure_payable(caller, now)?;
        if let Some(token) = &found.token {
            token.ensure_usable(caller, now)?;
        }
        if let Some(seat) = &found.seat {
            seat.sell(reservation.id, now)?;
        }
        if let Some(user) = &found.user {
            user.debit(reservation.amount)?;
        }
        Ok(())
    };
    judge().err()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::events::EventType;
    use crate::domain::{Concert, ConcertId, Mail, SeatStatus, TokenStatus};
    use chrono::Duration;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    /// A customer with `balance`, their token, a held seat and its reservation.
    struct Held {
        user: User,
        token: QueueToken,
        seat: Seat,
        reservation: Reservation,
    }

    fn held(balance: i64) -> Held {
        let user = User {
            id: UserId::random(),
            mail: Mail::parse("lee@example.com").unwrap(),
            balance: Money::krw(balance).unwrap(),
        };
        let concert = Concert {
            id: ConcertId::random(),
            title: "Winter Live".into(),
            starts_at: at(86_400),
        };
        let seat = Seat {
            id: SeatId::random(),
            concert_id: concert.id,
            number: 1,
            price: Money::krw(50_000).unwrap(),
            status: SeatStatus::Available,
        };
        let (reservation, seat) = Reservation::hold(
            ReservationId::random(),
            &user,
            (&seat, &concert),
            at(0),
            Duration::seconds(300),
        )
        .unwrap();
        let token = QueueToken {
            id: TokenId::random(),
            user_id: user.id,
            concert_id: Some(concert.id),
            status: TokenStatus::Active,
            expires_at: at(3_600),
            hold: None,
        };
        Held {
            user,
            token,
            seat,
            reservation,
        }
    }

    fn pay_as(h: &Held, caller: UserId, now: DateTime<Utc>) -> Result<PaymentOutcome, Refusal> {
        let ids = (PaymentId::random(), EventId::random());
        pay(&h.reservation, (caller, h.token.id), ids, now)
    }

    #[test]
    fn a_payment_confirms_the_reservation_and_emits_the_event_from_it_alone() {
        let h = held(80_000);
        let out = pay_as(&h, h.user.id, at(10)).unwrap();
        assert_eq!(
            PaymentReceipt::of(&out.reservation),
            Some(out.receipt.clone())
        );
        assert_eq!(out.token_id, h.token.id);
        assert_eq!(out.receipt.status, PaymentStatus::Confirmed);
        assert_eq!(out.receipt.amount, Money::krw(50_000).unwrap());
        assert_eq!(
            serde_json::to_value(&out.receipt).unwrap()["status"],
            "CONFIRMED"
        );
        let payload: PaymentCompleted = out.event.decode(EventType::PaymentCompleted).unwrap();
        assert_eq!(payload.amount_krw, Money::krw(50_000).unwrap());
        assert_eq!(payload.concert.title, "Winter Live");
        assert_eq!(payload.customer.mail.as_str(), "lee@example.com");
        assert_eq!(payload.seat.number, 1);
        assert_eq!(out.event.aggregate_id, h.reservation.id.to_string());
    }

    #[test]
    fn a_payment_is_timed_to_the_millisecond_it_is_stored_with() {
        let h = held(80_000);
        let now = at(10) + Duration::nanoseconds(1_234_567);
        let out = pay_as(&h, h.user.id, now).unwrap();
        assert_eq!(out.receipt.paid_at, at(10) + Duration::milliseconds(1));
    }

    #[test]
    fn only_a_confirmed_reservation_has_a_receipt() {
        let h = held(80_000);
        assert_eq!(PaymentReceipt::of(&h.reservation), None);
    }

    #[test]
    fn a_payment_after_the_hold_expired_is_refused() {
        let h = held(80_000);
        let err = pay_as(&h, h.user.id, at(300)).unwrap_err();
        assert!(matches!(err, Refusal::HoldExpired { .. }));
    }

    #[test]
    fn a_payment_by_another_user_is_forbidden() {
        let h = held(80_000);
        let err = pay_as(&h, UserId::random(), at(10)).unwrap_err();
        assert!(matches!(err, Refusal::NotOwner));
    }

    #[test]
    fn paying_a_confirmed_reservation_again_is_already_paid() {
        let mut h = held(200_000);
        h.reservation = pay_as(&h, h.user.id, at(10)).unwrap().reservation;
        assert!(matches!(
            pay_as(&h, h.user.id, at(11)),
            Err(Refusal::AlreadyPaid(_))
        ));
    }

    #[test]
    fn a_refused_payment_is_told_the_first_broken_rule_among_the_items_found() {
        let h = held(49_999);
        let (user, now) = (h.user.id, at(10));
        let poor = Refuted {
            user: Some(h.user.clone()),
            ..Refuted::default()
        };
        assert!(matches!(
            refusal(&h.reservation, user, now, &poor),
            Some(Refusal::InsufficientBalance { .. })
        ));
        let used = QueueToken {
            status: TokenStatus::Done,
            ..h.token.clone()
        };
        let used_and_poor = Refuted {
            token: Some(used),
            ..poor
        };
        assert!(matches!(
            refusal(&h.reservation, user, now, &used_and_poor),
            Some(Refusal::TokenUsed)
        ));
        let sold = h.seat.sell(h.reservation.id, now).unwrap();
        let sold_seat = Refuted {
            seat: Some(sold),
            ..Refuted::default()
        };
        assert!(refusal(&h.reservation, user, now, &sold_seat).is_some());
    }

    #[test]
    fn a_refusal_judges_the_reservation_as_the_store_found_it() {
        let h = held(80_000);
        let paid = pay_as(&h, h.user.id, at(10)).unwrap().reservation;
        let found = Refuted {
            reservation: Some(paid),
            ..Refuted::default()
        };
        assert!(matches!(
            refusal(&h.reservation, h.user.id, at(11), &found),
            Some(Refusal::AlreadyPaid(_))
        ));
        assert!(refusal(&h.reservation, h.user.id, at(11), &Refuted::default()).is_none());
    }
}
