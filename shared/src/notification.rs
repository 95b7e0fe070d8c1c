//! The customer's notification, in Korean as the original system sent it.

use crate::Error;
use crate::config::{self, ConfigError};
use crate::domain::EventId;
use crate::events::{EventEnvelope, EventType, PaymentCompleted, SeatHoldExpired};
use chrono::{DateTime, FixedOffset, Utc};

/// A message for one event, ready for any channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    pub event_id: EventId,
    pub event_type: EventType,
    pub text: String,
}

/// Where an event is delivered: a channel a customer is told on, or the data
/// platform (fed by its own function). Each has its own idempotency keys,
/// dead letters (`notification-channel`) and ledger rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    Telegram,
    Discord,
    DataPlatform,
}

impl ChannelKind {
    pub const ALL: [ChannelKind; 3] = [
        ChannelKind::Telegram,
        ChannelKind::Discord,
        ChannelKind::DataPlatform,
    ];

    /// The name in configuration, idempotency keys, dead-letter headers and logs.
    pub fn name(self) -> &'static str {
        match self {
            ChannelKind::Telegram => "telegram",
            ChannelKind::Discord => "discord",
            ChannelKind::DataPlatform => "data-platform",
        }
    }

    /// Whether a customer is told on it (the notifier's routes name only these).
    pub fn tells_customer(self) -> bool {
        match self {
            ChannelKind::Telegram | ChannelKind::Discord => true,
            ChannelKind::DataPlatform => false,
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(text.trim()))
    }
}

/// What a channel does with a send that may have reached the customer but
/// whose answer was lost (a timeout after the request went out, a dropped
/// connection, a gateway's 502 or 504): `<CHANNEL>_ON_AMBIGUOUS_SEND`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AmbiguousSendPolicy {
    /// Send it again (at least once: the customer may get it twice).
    #[default]
    Retry,
    /// Never send it again by itself (at most once): parked on the failed
    /// topic with a FAILED ledger row, for an operator to check and re-drive.
    Park,
}

impl AmbiguousSendPolicy {
    pub fn name(self) -> &'static str {
        match self {
            AmbiguousSendPolicy::Retry => "retry",
            AmbiguousSendPolicy::Park => "park",
        }
    }

    /// The policy of `kind` from `<KIND>_ON_AMBIGUOUS_SEND` (`retry` when unset).
    pub fn for_channel(vars: &config::Vars, kind: ChannelKind) -> Result<Self, ConfigError> {
        let var = format!("{}_ON_AMBIGUOUS_SEND", kind.name().to_uppercase());
        match vars.optional(&var).as_deref() {
            None | Some("retry") => Ok(AmbiguousSendPolicy::Retry),
            Some("park") => Ok(AmbiguousSendPolicy::Park),
            Some(other) => Err(ConfigError::invalid(
                var,
                format!("{other:?} is neither `retry` nor `park`"),
            )),
        }
    }
}

/// Which channels each event type is sent on, from
/// `NOTIFY_PAYMENT_COMPLETED_CHANNELS` and `NOTIFY_SEAT_HOLD_EXPIRED_CHANNELS`
/// (comma-separated: `telegram`, `discord` or `telegram,discord`; Telegram alone
/// by default, as the original system sent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelRoutes {
    pub payment_completed: Vec<ChannelKind>,
    pub seat_hold_expired: Vec<ChannelKind>,
}

impl Default for ChannelRoutes {
    fn default() -> Self {
        ChannelRoutes::all_on(&[ChannelKind::Telegram])
    }
}

impl ChannelRoutes {
    pub const PAYMENT_COMPLETED_VAR: &str = "NOTIFY_PAYMENT_COMPLETED_CHANNELS";
    pub const SEAT_HOLD_EXPIRED_VAR: &str = "NOTIFY_SEAT_HOLD_EXPIRED_CHANNELS";

    /// Every event type on the same channels.
    pub fn all_on(channels: &[ChannelKind]) -> Self {
        ChannelRoutes {
            payment_completed: channels.to_vec(),
            seat_hold_expired: channels.to_vec(),
        }
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(ChannelRoutes {
            payment_completed: Self::parse_list(
                Self::PAYMENT_COMPLETED_VAR,
                &config::or_default(Self::PAYMENT_COMPLETED_VAR, "telegram"),
            )?,
            seat_hold_expired: Self::parse_list(
                Self::SEAT_HOLD_EXPIRED_VAR,
                &config::or_default(Self::SEAT_HOLD_EXPIRED_VAR, "telegram"),
            )?,
        })
    }

    /// `telegram,discord` into its channels, each once, in the order given.
    pub fn parse_list(variable: &str, text: &str) -> Result<Vec<ChannelKind>, ConfigError> {
        let mut channels = Vec::new();
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let kind = ChannelKind::parse(name)
                .filter(|kind| kind.tells_customer())
                .ok_or_else(|| {
                    ConfigError::invalid(
                        variable,
                        format!(
                            "unknown channel {name:?}; use telegram, discord or telegram,discord"
                        ),
                    )
                })?;
            if !channels.contains(&kind) {
                channels.push(kind);
            }
        }
        if channels.is_empty() {
            return Err(ConfigError::invalid(
                variable,
                "it names no channel; use telegram, discord or telegram,discord",
            ));
        }
        Ok(channels)
    }

    pub fn for_type(&self, event_type: EventType) -> &[ChannelKind] {
        match event_type {
            EventType::PaymentCompleted => &self.payment_completed,
            EventType::SeatHoldExpired => &self.seat_hold_expired,
        }
    }

    /// Whether any event type is sent on `kind` (its settings are then required).
    pub fn uses(&self, kind: ChannelKind) -> bool {
        self.payment_completed.contains(&kind) || self.seat_hold_expired.contains(&kind)
    }
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
        event_type: EventType::PaymentCompleted,
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
    let event_type = envelope.event_type;
    let text = match event_type {
        EventType::PaymentCompleted => {
            payment_completed_text(&envelope.decode(EventType::PaymentCompleted)?)
        }
        EventType::SeatHoldExpired => {
            seat_hold_expired_text(&envelope.decode(EventType::SeatHoldExpired)?)
        }
    };
    Ok(Notification {
        event_id: envelope.event_id,
        event_type,
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ambiguous_send_is_retried_unless_the_channel_says_park_and_a_typo_is_refused() {
        let vars = config::Vars::from_pairs([
            ("DISCORD_ON_AMBIGUOUS_SEND", "park"),
            ("TELEGRAM_ON_AMBIGUOUS_SEND", "retry"),
        ]);
        let policy = |vars: &config::Vars, kind| AmbiguousSendPolicy::for_channel(vars, kind);
        assert_eq!(
            policy(&vars, ChannelKind::Discord).unwrap(),
            AmbiguousSendPolicy::Park
        );
        assert_eq!(
            policy(&vars, ChannelKind::Telegram).unwrap(),
            AmbiguousSendPolicy::Retry
        );
        assert_eq!(
            policy(&config::Vars::none(), ChannelKind::Discord).unwrap(),
            AmbiguousSendPolicy::Retry
        );
        let typo = config::Vars::from_pairs([("TELEGRAM_ON_AMBIGUOUS_SEND", "parked")]);
        let error = policy(&typo, ChannelKind::Telegram)
            .unwrap_err()
            .to_string();
        assert!(error.contains("TELEGRAM_ON_AMBIGUOUS_SEND"), "{error}");
        assert!(error.contains("neither `retry` nor `park`"), "{error}");
    }

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
mod channel_routes_tests {
    use super::*;

    #[test]
    fn a_channel_list_is_parsed_in_order_without_repeats_and_case_blind() {
        assert_eq!(
            ChannelRoutes::parse_list("V", " Discord, telegram ,discord").unwrap(),
            vec![ChannelKind::Discord, ChannelKind::Telegram]
        );
    }

    #[test]
    fn an_unknown_or_empty_channel_list_is_a_configuration_error_naming_the_variable() {
        let feed = ChannelRoutes::parse_list("NOTIFY_X", "telegram,data-platform").unwrap_err();
        assert!(feed.to_string().contains("NOTIFY_X"), "{feed}");
        let unknown = ChannelRoutes::parse_list("NOTIFY_X", "telegram,slack").unwrap_err();
        assert!(unknown.to_string().contains("NOTIFY_X"), "{unknown}");
        assert!(unknown.to_string().contains("slack"), "{unknown}");
        assert!(ChannelRoutes::parse_list("NOTIFY_X", " , ").is_err());
    }

    #[test]
    fn routes_answer_per_event_type_and_say_which_channels_are_used() {
        let routes = ChannelRoutes {
            payment_completed: vec![ChannelKind::Telegram],
            seat_hold_expired: vec![ChannelKind::Telegram, ChannelKind::Discord],
        };
        assert_eq!(
            routes.for_type(EventType::SeatHoldExpired),
            [ChannelKind::Telegram, ChannelKind::Discord]
        );
        assert!(routes.uses(ChannelKind::Discord));
        assert!(!ChannelRoutes::default().uses(ChannelKind::Discord));
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
        let envelope = EventEnvelope::seat_hold_expired(EventId::random(), &event);
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
