//! What `ops trace` found, as a timeline and an outcome per event and channel,
//! printed for people or as JSON. Nothing here reads a service: `gather` does.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

/// Where a fact was read. The order breaks ties between facts of the same
/// millisecond the way the work runs: the hold before its payment, the outbox
/// item before its record, a send before the key that records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Reservation,
    Payment,
    Outbox,
    Kafka,
    Sandbox,
    Idempotency,
    Ledger,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Reservation => "reservation",
            Source::Payment => "payment",
            Source::Outbox => "outbox",
            Source::Kafka => "kafka",
            Source::Sandbox => "sandbox",
            Source::Idempotency => "idempotency",
            Source::Ledger => "ledger",
        }
    }
}

/// One fact, at the time it happened.
#[derive(Clone, Debug)]
pub struct Entry {
    pub at: DateTime<Utc>,
    pub source: Source,
    /// One line for people.
    pub what: String,
    /// The fact's fields, for machines.
    pub details: Value,
}

/// What became of one event on one channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub event_id: String,
    pub event_type: String,
    pub channel: String,
    /// `sent`, `parked`, `failed`, `retrying`, `sending` or `not_sent`.
    pub state: &'static str,
    /// What it means and, when something is left to do, the command.
    pub note: String,
}

/// How the topics were read: from when, how much, and where the read stopped
/// before a partition's end (what lies past it was not looked at).
#[derive(Clone, Debug, Default)]
pub struct ScanNote {
    pub topics: Vec<String>,
    pub since: Option<DateTime<Utc>>,
    pub read: i64,
    pub cut_short: Vec<String>,
}

/// Everything found about one reservation (or one event).
#[derive(Clone, Debug, Default)]
pub struct Story {
    /// The id asked about.
    pub asked: String,
    pub reservation_id: Option<String>,
    pub reservation_status: Option<String>,
    /// The events of the reservation: (event id, event type).
    pub events: Vec<(String, String)>,
    pub entries: Vec<Entry>,
    pub outcomes: Vec<Outcome>,
    pub scan: ScanNote,
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Story {
    /// The entries in the order things happened.
    pub fn sort(&mut self) {
        self.entries.sort_by_key(|e| (e.at, e.source));
    }

    pub fn to_json(&self) -> Value {
        json!({
            "asked": self.asked,
            "reservationId": self.reservation_id,
            "reservationStatus": self.reservation_status,
            "events": self.events.iter()
                .map(|(id, kind)| json!({"eventId": id, "eventType": kind}))
                .collect::<Vec<_>>(),
            "timeline": self.entries.iter().map(|e| json!({
                "at": time(e.at),
                "source": e.source.name(),
                "what": e.what,
                "details": e.details,
            })).collect::<Vec<_>>(),
            "outcomes": self.outcomes.iter().map(|o| json!({
                "eventId": o.event_id,
                "eventType": o.event_type,
                "channel": o.channel,
                "state": o.state,
                "note": o.note,
            })).collect::<Vec<_>>(),
            "scan": {
                "topics": self.scan.topics,
                "since": self.scan.since.map(time),
                "recordsRead": self.scan.read,
                "cutShort": self.scan.cut_short,
            },
        })
    }

    /// The timeline for people: a header, one line per fact, the outcomes,
    /// and how much of the topics was read.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let subject = match (&self.reservation_id, &self.reservation_status) {
            (Some(id), Some(status)) => format!("reservation {id} ({status})"),
            (Some(id), None) => format!("reservation {id} (its item is gone)"),
            _ => format!("event {}", self.asked),
        };
        out.push_str(&format!("trace of {subject}\n"));
        for e in &self.entries {
            out.push_str(&format!(
                "{}  {:<11}  {}\n",
                time(e.at),
                e.source.name(),
                e.what
            ));
        }
        if self.outcomes.is_empty() {
            out.push_str("outcome: no event was written for it\n");
        }
        for o in &self.outcomes {
            out.push_str(&format!(
                "outcome: {} {} on {}: {}\n",
                o.event_type, o.event_id, o.channel, o.note
            ));
        }
        out.push_str(&self.scan_line());
        out
    }

    fn scan_line(&self) -> String {
        let since = self
            .scan
            .since
            .map_or("their oldest record".to_owned(), time);
        let records = if self.scan.read == 1 {
            "record"
        } else {
            "records"
        };
        let mut line = format!(
            "read {} {records} on {} topics from {since}",
            self.scan.read,
            self.scan.topics.len()
        );
        if !self.scan.cut_short.is_empty() {
            line.push_str(&format!(
                "; stopped early on {} (raise --scan-limit to read further)",
                self.scan.cut_short.join(", ")
            ));
        }
        line.push('\n');
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_900_000_000_000 + ms).unwrap()
    }

    fn entry(ms: i64, source: Source, what: &str) -> Entry {
        Entry {
            at: at(ms),
            source,
            what: what.into(),
            details: json!({}),
        }
    }

    fn story() -> Story {
        let mut story = Story {
            asked: "r-1".into(),
            reservation_id: Some("r-1".into()),
            reservation_status: Some("CONFIRMED".into()),
            events: vec![("e-1".into(), "PaymentCompleted".into())],
            entries: vec![
                entry(20, Source::Kafka, "published"),
                entry(10, Source::Outbox, "written"),
                entry(10, Source::Payment, "paid"),
                entry(0, Source::Reservation, "held"),
            ],
            outcomes: vec![Outcome {
                event_id: "e-1".into(),
                event_type: "PaymentCompleted".into(),
                channel: "telegram".into(),
                state: "sent",
                note: "sent at ...".into(),
            }],
            scan: ScanNote {
                topics: vec!["payment.completed".into()],
                since: Some(at(-60_000)),
                read: 3,
                cut_short: vec![],
            },
        };
        story.sort();
        story
    }

    #[test]
    fn facts_are_told_in_time_order_and_same_time_facts_in_the_order_work_runs() {
        let order: Vec<_> = story().entries.iter().map(|e| e.source).collect();
        assert_eq!(
            order,
            [
                Source::Reservation,
                Source::Payment,
                Source::Outbox,
                Source::Kafka
            ]
        );
    }

    #[test]
    fn the_text_has_a_line_per_fact_then_the_outcomes_and_what_was_read() {
        let text = story().to_text();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines[0], "trace of reservation r-1 (CONFIRMED)");
        assert!(lines[1].ends_with("reservation  held"), "{text}");
        assert!(
            lines[5].starts_with("outcome: PaymentCompleted e-1 on telegram"),
            "{text}"
        );
        assert!(
            lines[6].starts_with("read 3 records on 1 topics from"),
            "{text}"
        );
    }

    #[test]
    fn a_read_stopped_at_its_bound_says_where_and_how_to_read_further() {
        let mut s = story();
        s.scan.cut_short = vec!["payment.completed[2]".into()];
        assert!(s.to_text().contains(
            "stopped early on payment.completed[2] (raise --scan-limit to read further)"
        ));
        assert_eq!(s.to_json()["scan"]["cutShort"][0], "payment.completed[2]");
    }

    #[test]
    fn the_json_keeps_every_fact_with_its_source_and_time() {
        let v = story().to_json();
        assert_eq!(v["reservationId"], "r-1");
        assert_eq!(v["timeline"].as_array().unwrap().len(), 4);
        assert_eq!(v["timeline"][0]["source"], "reservation");
        assert_eq!(v["timeline"][0]["at"], "2030-03-17T17:46:40.000Z");
        assert_eq!(v["outcomes"][0]["state"], "sent");
    }
}
