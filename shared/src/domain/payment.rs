use super::events::{EventEnvelope, PaymentCompleted};
use super::{
    Concert, EventId, Money, PaymentId, QueueToken, Refusal, Reservation, ReservationId, Seat,
    SeatId, User, UserId,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What the payment reads before it writes.
#[derive(Clone, Debug)]
pub struct Checkout {
    pub user: User,
    pub seat: Seat,
    pub reservation: Reservation,
    pub token: QueueToken,
    pub concert: Concert,
}

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

/// Every item the payment changes, after the change, plus the event it publishes.
#[derive(Clone, Debug)]
pub struct PaymentOutcome {
    pub user: User,
    pub seat: Seat,
    pub reservation: Reservation,
    pub token: QueueToken,
    pub receipt: PaymentReceipt,
    pub event: EventEnvelope,
}

/// Pays for a reservation. The checks run in the order a customer is best told
/// about them: whose reservation, is it still payable, is the token good, is the
/// seat still held, is there money.
pub fn pay(
    checkout: &Checkout,
    caller: UserId,
    payment_id: PaymentId,
    event_id: EventId,
    now: DateTime<Utc>,
) -> Result<PaymentOutcome, Refusal> {
    let reservation = checkout.reservation.confirm(caller, payment_id, now)?;
    let token = checkout.token.finish(caller, now)?;
    let seat = checkout.seat.sell(reservation.id, now)?;
    let user = checkout.user.debit(reservation.amount)?;
    let payload = PaymentCompleted::new(
        payment_id,
        &reservation,
        &checkout.user.mail,
        &checkout.concert,
        now,
    );
    let event = EventEnvelope::payment_completed(event_id, &payload);
    let receipt = PaymentReceipt {
        payment_id,
        reservation_id: reservation.id,
        seat_id: seat.id,
        user_id: caller,
        amount: reservation.amount,
        paid_at: now,
        status: PaymentStatus::Confirmed,
    };
    Ok(PaymentOutcome {
        user,
        seat,
        reservation,
        token,
        receipt,
        event,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::events::EventType;
    use crate::domain::{ConcertId, Mail, ReservationStatus, SeatStatus, TokenId, TokenStatus};
    use chrono::Duration;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn checkout(balance: i64) -> Checkout {
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
            user.id,
            &seat,
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
        Checkout {
            user,
            seat,
            reservation,
            token,
            concert,
        }
    }

    fn pay_now(c: &Checkout, now: DateTime<Utc>) -> Result<PaymentOutcome, Refusal> {
        pay(c, c.user.id, PaymentId::random(), EventId::random(), now)
    }

    #[test]
    fn a_payment_debits_sells_confirms_finishes_the_token_and_emits_the_event() {
        let c = checkout(80_000);
        let out = pay_now(&c, at(10)).unwrap();
        assert_eq!(out.user.balance, Money::krw(30_000).unwrap());
        assert!(matches!(out.seat.status, SeatStatus::Sold { .. }));
        assert!(matches!(
            out.reservation.status,
            ReservationStatus::Confirmed { .. }
        ));
        assert_eq!(out.token.status, TokenStatus::Done);
        assert_eq!(out.receipt.status, PaymentStatus::Confirmed);
        assert_eq!(
            serde_json::to_value(&out.receipt).unwrap()["status"],
            "CONFIRMED"
        );
        let payload: PaymentCompleted = out.event.decode(EventType::PaymentCompleted).unwrap();
        assert_eq!(payload.amount_krw, Money::krw(50_000).unwrap());
        assert_eq!(payload.concert.title, "Winter Live");
        assert_eq!(out.event.aggregate_id, c.reservation.id.to_string());
    }

    #[test]
    fn a_payment_without_enough_balance_is_refused() {
        let err = pay_now(&checkout(49_999), at(10)).unwrap_err();
        assert!(matches!(err, Refusal::InsufficientBalance { .. }));
    }

    #[test]
    fn a_payment_after_the_hold_expired_is_refused() {
        let err = pay_now(&checkout(80_000), at(300)).unwrap_err();
        assert!(matches!(err, Refusal::HoldExpired { .. }));
    }

    #[test]
    fn a_payment_with_a_used_token_is_refused() {
        let mut c = checkout(80_000);
        c.token.status = TokenStatus::Done;
        assert!(matches!(pay_now(&c, at(10)), Err(Refusal::TokenUsed)));
    }

    #[test]
    fn a_payment_by_another_user_is_forbidden() {
        let c = checkout(80_000);
        let other = UserId::random();
        let err = pay(&c, other, PaymentId::random(), EventId::random(), at(10)).unwrap_err();
        assert!(matches!(err, Refusal::NotOwner));
    }

    #[test]
    fn paying_a_confirmed_reservation_again_is_already_paid() {
        let c = checkout(200_000);
        let out = pay_now(&c, at(10)).unwrap();
        let again = Checkout {
            reservation: out.reservation,
            seat: out.seat,
            token: out.token,
            user: out.user,
            concert: c.concert.clone(),
        };
        assert!(matches!(
            pay_now(&again, at(11)),
            Err(Refusal::AlreadyPaid(_))
        ));
    }
}
