//! The facts `ops trace` found, each made an entry of the timeline, and what
//! became of each event on each channel. Nothing here reads a service.

use super::story::{Entry, Outcome, Source};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use shared::dead_letter;
use shared::delivery::PARKED_AMBIGUOUS;
use shared::domain::{PaymentReceipt, Reservation, ReservationStatus};
use shared::events::{HEADER_EVENT_ID, HEADER_EVENT_TYPE};
use shared::idempotency::{IdempotencyRecord, IdempotencyStatus};
use shared::kafka_event::DecodedRecord;
use shared::ledger::{LedgerEntry, LedgerStatus};
use shared::notification::{ChannelKind, ChannelRoutes};
use shared::outbox::OutboxItem;
use std::collections::BTreeSet;

/// The hold, the payment (and whether its item was found: `receipt`) or the
/// hold running out.
pub fn reservation_entries(
    reservation: &Reservation,
    receipt: Option<&PaymentReceipt>,
) -> Vec<Entry> {
    let mut entries = vec![Entry {
        at: reservation.created_at,
        source: Source::Reservation,
        what: format!(
            "held seat {} of concert {} for user {}: {}, until {}",
            reservation.seat_number,
            reservation.concert.id,
            reservation.user_id,
            reservation.amount.to_won_string(),
            reservation.hold_expires_at.format("%H:%M:%S%.3fZ"),
        ),
        details: json!({
            "seatId": reservation.seat_id.to_string(),
            "seatNumber": reservation.seat_number,
            "concertId": reservation.concert.id.to_string(),
            "userId": reservation.user_id.to_string(),
            "amountKrw": reservation.amount.amount(),
            "holdExpiresAt": reservation.hold_expires_at,
        }),
    }];
    match &reservation.status {
        ReservationStatus::Confirmed {
            payment_id,
            paid_at,
        } => {
            let what = match receipt {
                Some(r) => format!("paid {} (payment {payment_id})", r.amount.to_won_string()),
                None => format!("CONFIRMED by payment {payment_id}, whose item is missing"),
            };
            entries.push(Entry {
                at: *paid_at,
                source: Source::Payment,
                what,
                details: json!({"paymentId": payment_id.to_string(), "found": receipt.is_some()}),
            });
        }
        ReservationStatus::Expired => entries.push(Entry {
            at: reservation.hold_expires_at,
            source: Source::Reservation,
            what: "the hold ran out unpaid; the seat was released (EXPIRED)".into(),
            details: json!({"status": ReservationStatus::EXPIRED}),
        }),
        ReservationStatus::Pending => {}
    }
    entries
}

/// Each event once, oldest first: from the outbox, else from its records.
pub fn events_of(outbox: &[OutboxItem], records: &[DecodedRecord]) -> Vec<(String, String)> {
    let mut events: Vec<(String, String)> = Vec::new();
    let from_outbox = outbox
        .iter()
        .map(|o| (o.event_id.clone(), o.event_type.as_str().to_owned()));
    let from_records = records.iter().filter_map(|r| {
        Some((
            r.header(HEADER_EVENT_ID)?.to_owned(),
            r.header(HEADER_EVENT_TYPE).unwrap_or("unknown").to_owned(),
        ))
    });
    for (id, kind) in from_outbox.chain(from_records) {
        if !events.iter().any(|(known, _)| *known == id) {
            events.push((id, kind));
        }
    }
    events
}

pub fn outbox_entry(item: &OutboxItem) -> Entry {
    let trace = item
        .traceparent
        .as_deref()
        .and_then(shared::trace::TraceContext::parse)
        .map(|t| format!(", trace {}", t.trace_id()))
        .unwrap_or_default();
    Entry {
        at: DateTime::from_timestamp_millis(item.created_at).unwrap_or_default(),
        source: Source::Outbox,
        what: format!(
            "{} {} written{trace}",
            item.event_type.as_str(),
            item.event_id
        ),
        details: json!({
            "eventId": item.event_id,
            "eventType": item.event_type.as_str(),
            "traceparent": item.traceparent,
        }),
    }
}

/// One entry per record; a dead letter dlq-retry read before it was due and
/// put back unchanged (the same event, channel and retry count as an earlier
/// one) says so.
pub fn record_entries(records: &[DecodedRecord]) -> Vec<Entry> {
    let mut letters = BTreeSet::new();
    records
        .iter()
        .map(|record| {
            let mut entry = record_entry(record);
            let letter = record.header(dead_letter::RETRY_COUNT).map(|retry| {
                (
                    record.topic.clone(),
                    record.header(HEADER_EVENT_ID).map(str::to_owned),
                    record
                        .header(dead_letter::NOTIFICATION_CHANNEL)
                        .map(str::to_owned),
                    retry.to_owned(),
                )
            });
            if letter.is_some_and(|letter| !letters.insert(letter)) {
                entry.what.push_str(" (put back by dlq-retry: not due yet)");
            }
            entry
        })
        .collect()
}

fn record_entry(record: &DecodedRecord) -> Entry {
    let header = |name| record.header(name).unwrap_or("-");
    let mut what = format!(
        "{} {} {}",
        record.coordinates(),
        header(HEADER_EVENT_TYPE),
        header(HEADER_EVENT_ID)
    );
    if let Some(error) = record.header(dead_letter::EXCEPTION_FQCN) {
        what.push_str(&format!(
            " on {}, retry {}, next at {}: {error}: {}",
            header(dead_letter::NOTIFICATION_CHANNEL),
            header(dead_letter::RETRY_COUNT),
            header(dead_letter::NEXT_ATTEMPT_AT),
            header(dead_letter::EXCEPTION_MESSAGE),
        ));
    }
    let headers: serde_json::Map<String, Value> = record
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(String::from_utf8_lossy(v).into())))
        .collect();
    Entry {
        at: DateTime::from_timestamp_millis(record.timestamp_ms).unwrap_or_default(),
        source: Source::Kafka,
        what,
        details: json!({
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "key": record.key.as_deref().map(String::from_utf8_lossy),
            "headers": headers,
        }),
    }
}

pub fn ledger_entry(row: &LedgerEntry) -> Entry {
    let channel = row.channel.map_or("-", ChannelKind::name);
    Entry {
        at: row.last_failed_at,
        source: Source::Ledger,
        what: format!(
            "{} on {channel}: {} after {} (first {}): {}: {}",
            row.event_id,
            row.status.name(),
            if row.attempts == 1 {
                "1 failed attempt".to_owned()
            } else {
                format!("{} failed attempts", row.attempts)
            },
            row.first_failed_at.format("%H:%M:%S%.3fZ"),
            row.error_kind,
            row.last_error
        ),
        details: json!({
            "eventId": row.event_id,
            "channel": row.channel.map(ChannelKind::name),
            "status": row.status.name(),
            "attempts": row.attempts,
            "firstFailedAt": row.first_failed_at,
            "lastFailedAt": row.last_failed_at,
            "errorKind": row.error_kind,
            "lastError": row.last_error,
        }),
    }
}

pub fn key_entry(event_id: &str, channel: ChannelKind, record: &IdempotencyRecord) -> Entry {
    let parked = record.response.as_deref() == Some(PARKED_AMBIGUOUS);
    let (at, what) = match (record.status, parked) {
        (IdempotencyStatus::Completed, true) => (
            record.completed_at,
            "parked: the send may have reached the customer",
        ),
        (IdempotencyStatus::Completed, false) => (record.completed_at, "sent"),
        (IdempotencyStatus::InProgress, _) => {
            (record.in_progress_until, "being sent (the key is locked)")
        }
    };
    Entry {
        at: at.unwrap_or(record.expires_at),
        source: Source::Idempotency,
        what: format!("{event_id} on {}: {what}", channel.name()),
        details: json!({
            "key": record.key,
            "status": record.status.name(),
            "response": record.response,
            "completedAt": record.completed_at,
            "inProgressUntil": record.in_progress_until,
            "expiresAt": record.expires_at,
        }),
    }
}

/// Where an event of `event_type` goes now (its routes, and the data platform
/// when the feed runs), and any channel its ledger rows name.
pub fn destinations(
    routes: &ChannelRoutes,
    feeds_platform: bool,
    event_type: &str,
    ledger: &[LedgerEntry],
) -> Vec<ChannelKind> {
    let mut channels: Vec<ChannelKind> = shared::events::EventType::parse(event_type)
        .map(|t| routes.for_type(t).to_vec())
        .unwrap_or_default();
    if feeds_platform {
        channels.push(ChannelKind::DataPlatform);
    }
    for channel in ledger.iter().filter_map(|row| row.channel) {
        if !channels.contains(&channel) {
            channels.push(channel);
        }
    }
    channels
}

/// What became of an event on a channel, from its key and its ledger row.
pub fn outcome(
    event_id: &str,
    event_type: &str,
    channel: ChannelKind,
    key: Option<&IdempotencyRecord>,
    row: Option<&LedgerEntry>,
) -> Outcome {
    let name = channel.name();
    let parked = key.is_some_and(|k| k.response.as_deref() == Some(PARKED_AMBIGUOUS));
    let completed = key.is_some_and(|k| k.status == IdempotencyStatus::Completed);
    let (state, note) = match (completed, parked, row.map(|r| r.status)) {
        (true, true, _) => (
            "parked",
            format!(
                "parked: it may have reached the customer; check the chat, then \
             `ops failed redrive {event_id} --channel {name}` if it never arrived"
            ),
        ),
        (true, false, _) => (
            "sent",
            match key.and_then(|k| k.completed_at) {
                Some(at) => format!("sent at {}", at.format("%Y-%m-%dT%H:%M:%S%.3fZ")),
                None => "sent".into(),
            },
        ),
        (false, _, Some(LedgerStatus::Failed)) => (
            "failed",
            format!(
                "failed for good: `ops failed show {event_id}`, then \
             `ops failed redrive {event_id} --channel {name}` once the cause is fixed"
            ),
        ),
        (false, _, Some(LedgerStatus::Pending)) => (
            "retrying",
            format!(
                "waiting on the dead-letter topic for dlq-retry (`ops failed show {event_id}`)"
            ),
        ),
        (false, _, Some(LedgerStatus::Processed)) => ("sent", "sent by a retry".into()),
        (false, _, None) if key.is_some() => ("sending", "a send holds its key now".into()),
        (false, _, None) => (
            "not_sent",
            match channel {
                ChannelKind::DataPlatform => "not sent yet: the feed has not handled it".into(),
                _ => "no send recorded yet: the notifier has not handled it".into(),
            },
        ),
    };
    Outcome {
        event_id: event_id.to_owned(),
        event_type: event_type.to_owned(),
        channel: name.to_owned(),
        state,
        note,
    }
}

pub fn sandbox_entry(event_id: &str, message: &Value) -> Entry {
    let lost = message["answerLost"].as_bool().unwrap_or(false);
    Entry {
        at: message["receivedAt"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default(),
        source: Source::Sandbox,
        what: format!(
            "{event_id} received on {} as message {} in chat {}{}",
            message["channel"].as_str().unwrap_or("-"),
            message["messageId"],
            message["chatId"].as_str().unwrap_or("-"),
            if lost { " (its answer was lost)" } else { "" }
        ),
        details: json!({
            "eventId": event_id,
            "channel": message["channel"],
            "messageId": message["messageId"],
            "chatId": message["chatId"],
            "answerLost": lost,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(offset: i64, retry: &str) -> DecodedRecord {
        let header = |k: &str, v: &str| (k.to_owned(), v.as_bytes().to_vec());
        DecodedRecord {
            topic: "payment.completed.dlq".into(),
            partition: 0,
            offset,
            timestamp_ms: 1_900_000_000_000 + offset,
            key: Some(b"r-1".to_vec()),
            value: None,
            headers: vec![
                header(HEADER_EVENT_ID, "e-1"),
                header(HEADER_EVENT_TYPE, "PaymentCompleted"),
                header(dead_letter::NOTIFICATION_CHANNEL, "telegram"),
                header(dead_letter::RETRY_COUNT, retry),
                header(dead_letter::EXCEPTION_FQCN, "shared::Error::Channel"),
            ],
        }
    }

    fn key(response: Option<&str>) -> IdempotencyRecord {
        let at = DateTime::from_timestamp(1_900_000_000, 0).unwrap();
        IdempotencyRecord {
            key: "notify:telegram:e-1".into(),
            status: IdempotencyStatus::Completed,
            payload_hash: "h".into(),
            expires_at: at + chrono::Duration::days(7),
            in_progress_until: None,
            response: response.map(str::to_owned),
            completed_at: Some(at),
        }
    }

    fn row(status: LedgerStatus) -> LedgerEntry {
        let at = DateTime::from_timestamp(1_900_000_000, 0).unwrap();
        LedgerEntry {
            event_id: "e-1".into(),
            channel: Some(ChannelKind::Telegram),
            event_type: Some("PaymentCompleted".into()),
            status,
            attempts: 1,
            first_failed_at: at,
            last_failed_at: at,
            error_kind: "shared::Error::Channel".into(),
            last_error: "503".into(),
            topic: "payment.completed".into(),
            partition: 0,
            offset: 1,
        }
    }

    fn state(key: Option<&IdempotencyRecord>, row: Option<&LedgerEntry>) -> (&'static str, String) {
        let o = outcome("e-1", "PaymentCompleted", ChannelKind::Telegram, key, row);
        (o.state, o.note)
    }

    #[test]
    fn a_dead_letter_put_back_unchanged_is_told_apart_from_a_retry() {
        let entries = record_entries(&[letter(0, "0"), letter(1, "0"), letter(2, "1")]);
        let put_back: Vec<bool> = entries
            .iter()
            .map(|e| e.what.ends_with("(put back by dlq-retry: not due yet)"))
            .collect();
        assert_eq!(put_back, [false, true, false]);
        assert!(
            entries[0].what.contains("on telegram, retry 0"),
            "{}",
            entries[0].what
        );
    }

    #[test]
    fn each_outcome_says_what_an_operator_does_next() {
        assert_eq!(state(Some(&key(None)), None).0, "sent");
        let (parked, note) = state(Some(&key(Some(PARKED_AMBIGUOUS))), None);
        assert_eq!(parked, "parked");
        assert!(note.contains("check the chat, then `ops failed redrive e-1 --channel telegram`"));
        let (failed, note) = state(None, Some(&row(LedgerStatus::Failed)));
        assert_eq!(failed, "failed");
        assert!(note.contains("`ops failed show e-1`"), "{note}");
        assert_eq!(state(None, Some(&row(LedgerStatus::Pending))).0, "retrying");
        assert_eq!(state(None, None).0, "not_sent");
        // A send that succeeded on a retry: its key says sent, whatever the row says.
        assert_eq!(
            state(Some(&key(None)), Some(&row(LedgerStatus::Failed))).0,
            "sent"
        );
    }
}
