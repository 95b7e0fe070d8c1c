//! Dead letters: a record that could not be handled, republished with the
//! original key, value and headers plus diagnostic headers. The header names are
//! Spring Kafka's (`DeadLetterPublishingRecoverer`), so existing tools read them;
//! their values here are UTF-8 text (decimal numbers, RFC 3339 times), not
//! Spring's big-endian binary, so `kcat` and people can read them too.

use crate::Error;
use crate::events::{EventEnvelope, HEADER_EVENT_ID, HEADER_EVENT_TYPE};
use crate::kafka_event::DecodedRecord;
use crate::notification::ChannelKind;
use crate::ports::OutboundRecord;
use chrono::{DateTime, SecondsFormat, Utc};

pub const ORIGINAL_TOPIC: &str = "kafka_dlt-original-topic";
pub const ORIGINAL_PARTITION: &str = "kafka_dlt-original-partition";
pub const ORIGINAL_OFFSET: &str = "kafka_dlt-original-offset";
pub const ORIGINAL_TIMESTAMP: &str = "kafka_dlt-original-timestamp";
pub const EXCEPTION_FQCN: &str = "kafka_dlt-exception-fqcn";
pub const EXCEPTION_MESSAGE: &str = "kafka_dlt-exception-message";
pub const RETRY_COUNT: &str = "retry-count";
pub const NEXT_ATTEMPT_AT: &str = "next-attempt-at";
/// The channel the notification failed on (`telegram`, `discord`): a retry sends
/// on that channel only, so a channel that already succeeded is never sent again.
/// Absent when the record itself failed (a poison record).
pub const NOTIFICATION_CHANNEL: &str = "notification-channel";

/// Set on a dead letter whose value was cut to fit the broker's size limit:
/// why, how large it was, and where the whole record is. Kept when the letter
/// is republished (the value stays cut).
pub const TRUNCATED: &str = "dead-letter-truncated";

/// The longest event id trusted as a ledger key (an event id is a UUID;
/// DynamoDB refuses keys over 2,048 bytes, and empty ones).
pub const MAX_EVENT_ID_BYTES: usize = 128;
/// The longest error message a dead letter carries.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 2_048;
/// What is kept of a value too large for the dead-letter topic.
pub const TRUNCATED_VALUE_BYTES: usize = 4_096;

/// The headers this module writes; a republished dead letter replaces them.
pub const DIAGNOSTIC_HEADERS: [&str; 9] = [
    ORIGINAL_TOPIC,
    ORIGINAL_PARTITION,
    ORIGINAL_OFFSET,
    ORIGINAL_TIMESTAMP,
    EXCEPTION_FQCN,
    EXCEPTION_MESSAGE,
    RETRY_COUNT,
    NEXT_ATTEMPT_AT,
    NOTIFICATION_CHANNEL,
];

/// A failed record and why it failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub original: DecodedRecord,
    pub error_kind: String,
    pub error_message: String,
    pub retry_count: u32,
    pub next_attempt_at: DateTime<Utc>,
    /// The channel that failed; `None` when the record failed before any channel.
    pub channel: Option<ChannelKind>,
}

impl DeadLetter {
    pub fn new(
        original: DecodedRecord,
        error: &Error,
        retry_count: u32,
        next_attempt_at: DateTime<Utc>,
    ) -> Self {
        DeadLetter {
            original,
            error_kind: error.kind_name().to_owned(),
            error_message: bounded(crate::error_chain(error), MAX_ERROR_MESSAGE_BYTES),
            retry_count,
            next_attempt_at,
            channel: None,
        }
    }

    /// The dead letter of a record's first failure: due after `retry_delay`,
    /// or after the wait the destination asked for when that is longer.
    pub fn first(
        original: DecodedRecord,
        error: &Error,
        retry_delay: chrono::Duration,
        now: DateTime<Utc>,
    ) -> Self {
        let delay = error
            .retry_after()
            .map_or(retry_delay, |after| after.max(retry_delay));
        DeadLetter::new(original, error, 0, now + delay)
    }

    /// The same dead letter, for a failure on `channel`.
    pub fn on_channel(self, channel: ChannelKind) -> Self {
        DeadLetter {
            channel: Some(channel),
            ..self
        }
    }

    /// Reads a dead letter back from a record of the dead-letter topic.
    pub fn from_dlq_record(dlq: &DecodedRecord) -> Result<Self, Error> {
        let required = |name: &str| {
            dlq.header(name)
                .ok_or_else(|| Error::malformed(format!("the dead letter has no {name} header")))
        };
        let number = |name: &str| -> Result<i64, Error> {
            required(name)?.parse().map_err(|_| {
                Error::malformed(format!("the dead letter's {name} header is not a number"))
            })
        };
        let next_attempt_at = required(NEXT_ATTEMPT_AT)?
            .parse::<DateTime<Utc>>()
            .map_err(|_| {
                Error::malformed(format!("the dead letter's {NEXT_ATTEMPT_AT} is not a time"))
            })?;
        Ok(DeadLetter {
            original: DecodedRecord {
                topic: required(ORIGINAL_TOPIC)?.to_owned(),
                partition: number(ORIGINAL_PARTITION)?,
                offset: number(ORIGINAL_OFFSET)?,
                timestamp_ms: number(ORIGINAL_TIMESTAMP)?,
                key: dlq.key.clone(),
                value: dlq.value.clone(),
                headers: dlq
                    .headers
                    .iter()
                    .filter(|(k, _)| !DIAGNOSTIC_HEADERS.contains(&k.as_str()))
                    .cloned()
                    .collect(),
            },
            error_kind: required(EXCEPTION_FQCN)?.to_owned(),
            error_message: required(EXCEPTION_MESSAGE)?.to_owned(),
            retry_count: u32::try_from(number(RETRY_COUNT)?).map_err(|_| {
                Error::malformed(format!("the dead letter's {RETRY_COUNT} is out of range"))
            })?,
            next_attempt_at,
            // An empty channel names none: the letter is retried on every
            // routed channel (those already sent are skipped by idempotency).
            channel: dlq
                .header(NOTIFICATION_CHANNEL)
                .filter(|name| !name.trim().is_empty())
                .map(|name| {
                    ChannelKind::parse(name).ok_or_else(|| {
                        Error::malformed(format!(
                            "the dead letter's {NOTIFICATION_CHANNEL} {name:?} is no channel this build knows"
                        ))
                    })
                })
                .transpose()?,
        })
    }

    /// The same dead letter after one more failed attempt.
    pub fn retried(&self, error: &Error, next_attempt_at: DateTime<Utc>) -> Self {
        DeadLetter {
            original: self.original.clone(),
            error_kind: error.kind_name().to_owned(),
            error_message: bounded(crate::error_chain(error), MAX_ERROR_MESSAGE_BYTES),
            retry_count: self.retry_count + 1,
            next_attempt_at,
            channel: self.channel,
        }
    }

    /// The event id, the letter's ledger key: the `event-id` header when it is
    /// one (not empty, not over [`MAX_EVENT_ID_BYTES`], no control characters),
    /// else the envelope's, else the record's coordinates (a poison record may
    /// have neither).
    pub fn event_id(&self) -> String {
        self.original
            .header(HEADER_EVENT_ID)
            .map(str::trim)
            .filter(|id| {
                !id.is_empty()
                    && id.len() <= MAX_EVENT_ID_BYTES
                    && !id.chars().any(char::is_control)
            })
            .map(str::to_owned)
            .or_else(|| {
                self.original
                    .value
                    .as_deref()
                    .and_then(|v| EventEnvelope::from_json(v).ok())
                    .map(|e| e.event_id.to_string())
            })
            .unwrap_or_else(|| self.original.coordinates())
    }

    pub fn event_type(&self) -> Option<String> {
        self.original.header(HEADER_EVENT_TYPE).map(str::to_owned)
    }

    /// The record to publish to `topic`: the original key, value and headers,
    /// then the diagnostic headers.
    pub fn to_record(&self, topic: &str) -> OutboundRecord {
        let mut headers: Vec<(String, Vec<u8>)> = self
            .original
            .headers
            .iter()
            .filter(|(k, _)| !DIAGNOSTIC_HEADERS.contains(&k.as_str()))
            .cloned()
            .collect();
        let text = |k: &str, v: String| (k.to_owned(), v.into_bytes());
        headers.extend([
            text(ORIGINAL_TOPIC, self.original.topic.clone()),
            text(ORIGINAL_PARTITION, self.original.partition.to_string()),
            text(ORIGINAL_OFFSET, self.original.offset.to_string()),
            text(ORIGINAL_TIMESTAMP, self.original.timestamp_ms.to_string()),
            text(EXCEPTION_FQCN, self.error_kind.clone()),
            text(EXCEPTION_MESSAGE, self.error_message.clone()),
            text(RETRY_COUNT, self.retry_count.to_string()),
            text(
                NEXT_ATTEMPT_AT,
                self.next_attempt_at
                    .to_rfc3339_opts(SecondsFormat::Millis, true),
            ),
        ]);
        if let Some(channel) = self.channel {
            headers.push(text(NOTIFICATION_CHANNEL, channel.name().to_owned()));
        }
        OutboundRecord {
            topic: topic.to_owned(),
            key: self.original.key.clone(),
            value: self.original.value.clone(),
            headers,
            event_id: self.event_id(),
        }
    }
}

impl DeadLetter {
    /// The record to publish when the whole one is refused for its size: the
    /// same key and headers, the value cut to [`TRUNCATED_VALUE_BYTES`], and a
    /// [`TRUNCATED`] header saying why and where the whole record is.
    pub fn to_truncated_record(&self, topic: &str) -> OutboundRecord {
        let mut record = self.to_record(topic);
        let size = record.value.as_ref().map_or(0, Vec::len);
        if let Some(value) = record.value.as_mut() {
            value.truncate(TRUNCATED_VALUE_BYTES);
        }
        let reason = format!(
            "the value was {size} bytes, over the dead-letter topic's limit: its first {TRUNCATED_VALUE_BYTES} are kept; the whole record is at {}",
            self.original.coordinates()
        );
        record.headers.retain(|(k, _)| k != TRUNCATED);
        record
            .headers
            .push((TRUNCATED.to_owned(), reason.into_bytes()));
        record
    }
}

/// `text` cut to at most `max` bytes (at a character boundary), marked with "…".
fn bounded(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Exponential back-off with equal jitter: half of `base * 2^retry_count` (capped
/// at `max`), plus `jitter` (0 to 1, from the caller's random source) times the
/// other half. Spreads retries of many failures over time.
pub fn backoff(
    base: chrono::Duration,
    retry_count: u32,
    max: chrono::Duration,
    jitter: f64,
) -> chrono::Duration {
    let factor = 2i64.saturating_pow(retry_count.min(30));
    let exponential = base
        .num_milliseconds()
        .saturating_mul(factor)
        .min(max.num_milliseconds())
        .max(0);
    let half = exponential / 2;
    let jittered = half + (half as f64 * jitter.clamp(0.0, 1.0)) as i64;
    chrono::Duration::milliseconds(jittered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Refusal;

    fn original() -> DecodedRecord {
        DecodedRecord {
            topic: "payment.completed".into(),
            partition: 2,
            offset: 41,
            timestamp_ms: 1_800_000_000_000,
            key: Some(b"res-1".to_vec()),
            value: Some(b"not json".to_vec()),
            headers: vec![
                ("event-id".into(), b"e-1".to_vec()),
                (RETRY_COUNT.into(), b"7".to_vec()),
            ],
        }
    }

    /// `record` as a consumer of its topic reads it back at `offset`.
    fn consumed(record: &OutboundRecord, offset: i64) -> DecodedRecord {
        DecodedRecord {
            topic: record.topic.clone(),
            partition: 0,
            offset,
            timestamp_ms: 0,
            key: record.key.clone(),
            value: record.value.clone(),
            headers: record.headers.clone(),
        }
    }

    fn with_event_id_header(id: &[u8]) -> DeadLetter {
        let mut record = original();
        record.headers[0].1 = id.to_vec();
        DeadLetter::new(record, &Error::malformed("x"), 0, Utc::now())
    }

    #[test]
    fn an_empty_over_long_or_garbled_event_id_header_falls_back_to_the_coordinates() {
        assert_eq!(with_event_id_header(b"e-1").event_id(), "e-1");
        for bad in [&b""[..], b"   ", &[b'x'; 3000], b"a\nb"] {
            assert_eq!(
                with_event_id_header(bad).event_id(),
                "payment.completed-2@41",
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn an_empty_notification_channel_names_no_channel() {
        let letter = DeadLetter::new(original(), &Error::malformed("x"), 0, Utc::now())
            .on_channel(ChannelKind::Telegram);
        let mut record = consumed(&letter.to_record("payment.completed.dlq"), 3);
        for (name, value) in record.headers.iter_mut() {
            if name == NOTIFICATION_CHANNEL {
                value.clear();
            }
        }
        let read = DeadLetter::from_dlq_record(&record).unwrap();
        assert_eq!(read.channel, None);
    }

    #[test]
    fn a_long_error_message_is_bounded_at_a_character_boundary() {
        let long = Error::malformed("원".repeat(5_000));
        let letter = DeadLetter::new(original(), &long, 0, Utc::now());
        assert!(letter.error_message.len() <= MAX_ERROR_MESSAGE_BYTES);
        assert!(letter.error_message.ends_with('…'));
        let retried = letter.retried(&long, Utc::now());
        assert!(retried.error_message.len() <= MAX_ERROR_MESSAGE_BYTES);
    }

    #[test]
    fn a_truncated_record_keeps_key_and_headers_and_says_why() {
        let mut record = original();
        record.value = Some(vec![b'x'; 100_000]);
        let letter = DeadLetter::new(record, &Error::malformed("x"), 1, Utc::now());
        let whole = letter.to_record("payment.completed.dlq");
        let cut = letter.to_truncated_record("payment.completed.dlq");
        assert_eq!(cut.value.as_ref().unwrap().len(), TRUNCATED_VALUE_BYTES);
        assert_eq!(cut.key, whole.key);
        assert_eq!(cut.headers[..whole.headers.len()], whole.headers[..]);
        let (name, reason) = cut.headers.last().unwrap();
        assert_eq!(name, TRUNCATED);
        let reason = String::from_utf8_lossy(reason);
        assert!(
            reason.contains("100000 bytes") && reason.contains("payment.completed-2@41"),
            "{reason}"
        );
    }

    #[test]
    fn a_dead_letter_keeps_the_original_and_adds_spring_diagnostic_headers() {
        let at: DateTime<Utc> = "2026-11-21T10:00:00Z".parse().unwrap();
        let letter = DeadLetter::new(
            original(),
            &Error::malformed("the value is not JSON"),
            0,
            at,
        );
        let record = letter.to_record("payment.completed.failed");
        assert_eq!(record.topic, "payment.completed.failed");
        assert_eq!(record.key.as_deref(), Some(&b"res-1"[..]));
        assert_eq!(record.value.as_deref(), Some(&b"not json"[..]));
        assert_eq!(record.header("event-id"), Some("e-1"));
        assert_eq!(record.header(ORIGINAL_TOPIC), Some("payment.completed"));
        assert_eq!(record.header(ORIGINAL_PARTITION), Some("2"));
        assert_eq!(record.header(ORIGINAL_OFFSET), Some("41"));
        assert_eq!(record.header(ORIGINAL_TIMESTAMP), Some("1800000000000"));
        assert_eq!(
            record.header(EXCEPTION_FQCN),
            Some("shared::Error::MalformedEvent")
        );
        assert_eq!(
            record.header(EXCEPTION_MESSAGE),
            Some("event is malformed: the value is not JSON")
        );
        // The stale retry-count of the original is replaced, not duplicated.
        assert_eq!(record.header(RETRY_COUNT), Some("0"));
        assert_eq!(
            record
                .headers
                .iter()
                .filter(|(k, _)| k == RETRY_COUNT)
                .count(),
            1
        );
        assert_eq!(
            record.header(NEXT_ATTEMPT_AT),
            Some("2026-11-21T10:00:00.000Z")
        );
        assert_eq!(record.event_id, "e-1");
    }

    #[test]
    fn a_dead_letter_reads_back_from_its_dlq_record() {
        let at: DateTime<Utc> = "2026-11-21T10:00:00.250Z".parse().unwrap();
        let letter = DeadLetter::new(original(), &Refusal::InProgress.into(), 0, at);
        let record = letter.to_record("payment.completed.dlq");
        let dlq = consumed(&record, 3);
        let back = DeadLetter::from_dlq_record(&dlq).unwrap();
        let mut expected = letter.clone();
        expected.original.headers.retain(|(k, _)| k != RETRY_COUNT);
        assert_eq!(back, expected);
        let again = back.retried(&Refusal::InProgress.into(), at);
        assert_eq!(again.retry_count, 1);
        assert_eq!(again.channel, None);
    }

    #[test]
    fn the_failed_channel_travels_with_the_dead_letter_and_its_retries() {
        let at: DateTime<Utc> = "2026-11-21T10:00:00Z".parse().unwrap();
        let letter = DeadLetter::new(original(), &Refusal::InProgress.into(), 0, at)
            .on_channel(ChannelKind::Discord);
        let record = letter.to_record("payment.completed.dlq");
        assert_eq!(record.header(NOTIFICATION_CHANNEL), Some("discord"));
        let dlq = consumed(&record, 0);
        let back = DeadLetter::from_dlq_record(&dlq).unwrap();
        assert_eq!(back.channel, Some(ChannelKind::Discord));
        let again = back
            .retried(&Refusal::InProgress.into(), at)
            .to_record("payment.completed.dlq");
        let channels: Vec<_> = again
            .headers
            .iter()
            .filter(|(k, _)| k == NOTIFICATION_CHANNEL)
            .collect();
        assert_eq!(channels.len(), 1, "the header is replaced, not repeated");
    }

    #[test]
    fn a_dead_letter_for_a_channel_this_build_does_not_know_is_malformed() {
        let letter = DeadLetter::new(original(), &Refusal::InProgress.into(), 0, Utc::now());
        let mut record = letter.to_record("payment.completed.dlq");
        record
            .headers
            .push((NOTIFICATION_CHANNEL.into(), b"carrier-pigeon".to_vec()));
        let dlq = consumed(&record, 0);
        let error = DeadLetter::from_dlq_record(&dlq).unwrap_err();
        assert!(error.to_string().contains("carrier-pigeon"), "{error}");
    }

    #[test]
    fn a_record_without_diagnostic_headers_is_not_a_dead_letter() {
        assert!(matches!(
            DeadLetter::from_dlq_record(&original()),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn backoff_doubles_per_retry_within_its_jitter_and_stops_at_the_cap() {
        let base = chrono::Duration::seconds(10);
        let max = chrono::Duration::seconds(300);
        assert_eq!(backoff(base, 0, max, 0.0), chrono::Duration::seconds(5));
        assert_eq!(backoff(base, 0, max, 1.0), chrono::Duration::seconds(10));
        assert_eq!(backoff(base, 2, max, 1.0), chrono::Duration::seconds(40));
        assert_eq!(backoff(base, 20, max, 1.0), max);
        assert_eq!(backoff(base, 20, max, 0.0), max / 2);
    }

    #[test]
    fn a_record_without_an_event_id_is_named_by_its_coordinates() {
        let mut o = original();
        o.headers.clear();
        let letter = DeadLetter::new(o, &Refusal::InProgress.into(), 0, Utc::now());
        assert_eq!(letter.event_id(), "payment.completed-2@41");
    }
}
