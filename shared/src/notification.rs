//! The customer's notification, in Korean as the original system sent it.

use crate::domain::EventId;
use crate::events::PaymentCompleted;
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
