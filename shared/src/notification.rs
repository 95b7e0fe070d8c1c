//! The customer's notification, in Korean as the original system sent it.

use crate::Error;
use crate::domain::EventId;
use crate::events::{EventEnvelope, EventType, PaymentCompleted, SeatHoldExpired};
use chrono::{DateTime, FixedOffset, Utc};

/// A message for one event, ready for any channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    pub event_id: EventId,
    pub text: String,
}

/// Concerts are in Korea: times are shown in KST (UTC+9, no daylight saving).
fn kst(t: DateTime<Utc>) -> String {
    match FixedOffset::east_opt(9 * 3600) {
        Some(offset) => t
            .with_timezone(&offset)
            .format("%Y-%m-%d %H:%M (KST)")
            .to_string(),
        None => t.format("%Y-%m-%d %H:%M (UTC)").to_string(),
    }
}

pub fn payment_completed_text(event: &PaymentCompleted) -> String {
    format!(
        "[결제 완료] 좌석 결제가 완료되었습니다.\n\
         예약자: {mail}\n\
         공연: {title}\n\
         좌석: {seat}번\n\
         공연 시작: {starts}\n\
         결제 시각: {paid}\n\
         결제 금액: {amount}\n\
         공연 시작 10분 전까지 입장해 주세요.",
        mail = event.customer.mail.as_str(),
        title = event.concert.title,
        seat = event.seat.number,
        starts = kst(event.concert.starts_at),
        paid = kst(event.paid_at),
        amount = event.amount_krw.to_won_string(),
    )
}

pub fn payment_completed(event_id: EventId, event: &PaymentCompleted) -> Notification {
    Notification {
        event_id,
        text: payment_completed_text(event),
    }
}

pub fn seat_hold_expired_text(event: &SeatHoldExpired) -> String {
    format!(
        "[좌석 선점 만료] 결제 시간이 지나 좌석 선점이 해제되었습니다.\n\
         예약자: {mail}\n\
         공연: {title}\n\
         좌석: {seat}번\n\
         공연 시작: {starts}\n\
         선점 만료 시각: {expired}\n\
         다시 예매하시려면 대기열에 다시 입장해 주세요.",
        mail = event.customer.mail.as_str(),
        title = event.concert.title,
        seat = event.seat.number,
        starts = kst(event.concert.starts_at),
        expired = kst(event.hold_expired_at),
    )
}

/// The customer's message for an event of the types the notifier handles.
pub fn for_event(envelope: &EventEnvelope) -> Result<Notification, Error> {
    let text = match envelope.event_type()? {
        EventType::PaymentCompleted => {
            payment_completed_text(&envelope.decode(EventType::PaymentCompleted)?)
        }
        EventType::SeatHoldExpired => {
            seat_hold_expired_text(&envelope.decode(EventType::SeatHoldExpired)?)
        }
    };
    Ok(Notification {
        event_id: envelope.event_id,
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payment_message_has_every_line_of_the_original_in_kst() {
        let event = crate::fixtures::payment_completed(
            crate::domain::ReservationId::random(),
            "kim@example.com",
            150_000,
        );
        let text = payment_completed_text(&event);
        assert_eq!(
            text,
            "[결제 완료] 좌석 결제가 완료되었습니다.\n\
             예약자: kim@example.com\n\
             공연: 아이유 콘서트\n\
             좌석: 3번\n\
             공연 시작: 2026-12-24 19:00 (KST)\n\
             결제 시각: 2026-11-21 14:30 (KST)\n\
             결제 금액: 150,000원\n\
             공연 시작 10분 전까지 입장해 주세요."
        );
    }
}

#[cfg(test)]
mod seat_hold_expired_tests {
    use super::*;
    use crate::domain::{ConcertId, EventId, Mail, ReservationId, SeatId, UserId};
    use crate::events::{ConcertInfo, Customer, SeatInfo};

    #[test]
    fn the_hold_expired_message_says_the_seat_was_released_in_kst() {
        let event = SeatHoldExpired {
            reservation_id: ReservationId::random(),
            customer: Customer {
                user_id: UserId::random(),
                mail: Mail::parse("kim@example.com").unwrap(),
            },
            concert: ConcertInfo {
                id: ConcertId::random(),
                title: "아이유 콘서트".into(),
                starts_at: "2026-12-24T10:00:00Z".parse().unwrap(),
            },
            seat: SeatInfo {
                id: SeatId::random(),
                number: 7,
            },
            hold_expired_at: "2026-11-21T05:35:00Z".parse().unwrap(),
            released_at: "2026-11-21T05:35:20Z".parse().unwrap(),
        };
        let envelope = EventEnvelope::seat_hold_expired(EventId::random(), &event).unwrap();
        let message = for_event(&envelope).unwrap();
        assert_eq!(
            message.text,
            "[좌석 선점 만료] 결제 시간이 지나 좌석 선점이 해제되었습니다.\n\
             예약자: kim@example.com\n\
             공연: 아이유 콘서트\n\
             좌석: 7번\n\
             공연 시작: 2026-12-24 19:00 (KST)\n\
             선점 만료 시각: 2026-11-21 14:35 (KST)\n\
             다시 예매하시려면 대기열에 다시 입장해 주세요."
        );
        assert_eq!(envelope.aggregate_id, event.reservation_id.to_string());
    }
}
