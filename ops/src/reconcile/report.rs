//! What `ops reconcile` concludes from the facts it read: one finding per
//! discrepancy or open case, counts per destination and state, and the exit
//! status. Nothing here reads a service.

use crate::trace::story::Outcome;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{Value, json};
use shared::dynamodb::PaymentMade;
use std::collections::BTreeMap;
use std::fmt::Write;

/// One payment as found: its events on `payment.completed` and, per event,
/// what each destination made of it.
pub struct PaymentFacts {
    pub payment: PaymentMade,
    /// The distinct PaymentCompleted event ids keyed by its reservation.
    pub events: Vec<String>,
    pub outcomes: Vec<Outcome>,
}

/// What a finding says about a payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Confirmed, and no event of it on the topic.
    NotOnTopic,
    /// On the topic, never acknowledged by a destination and not in the ledger.
    NotDelivered,
    /// More than one PaymentCompleted event: a destination may count the sale twice.
    PublishedTwice,
    /// In the ledger, failed for good or parked: left to an operator.
    LeftToOperator,
    /// Not done yet and accounted for: retrying, being sent, or too recent to judge.
    InFlight,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::NotOnTopic => "not_on_topic",
            Kind::NotDelivered => "not_delivered",
            Kind::PublishedTwice => "published_twice",
            Kind::LeftToOperator => "left_to_operator",
            Kind::InFlight => "in_flight",
        }
    }

    /// The word a text line starts with.
    fn label(self) -> &'static str {
        match self {
            Kind::NotOnTopic | Kind::NotDelivered => "MISSING",
            Kind::PublishedTwice => "TWICE",
            Kind::LeftToOperator => "OPEN",
            Kind::InFlight => "WAITING",
        }
    }

    /// True for what breaks the promise: a sale missing somewhere, or counted twice.
    pub fn is_discrepancy(self) -> bool {
        matches!(
            self,
            Kind::NotOnTopic | Kind::NotDelivered | Kind::PublishedTwice
        )
    }
}

#[derive(Clone, Debug)]
pub struct Finding {
    pub kind: Kind,
    pub payment: PaymentMade,
    pub event_id: Option<String>,
    pub destination: Option<String>,
    /// What it means and the command to run.
    pub note: String,
}

/// The reconciliation of a window.
#[derive(Debug, Default)]
pub struct Reconciliation {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub payments: usize,
    /// Payments with at least one event on the topic.
    pub on_topic: usize,
    /// Per destination, per outcome state, how many events.
    pub destinations: BTreeMap<String, BTreeMap<&'static str, usize>>,
    pub findings: Vec<Finding>,
    pub topic: String,
    pub records_read: i64,
    /// Partitions where the read stopped before the end (`--scan-limit`).
    pub cut_short: Vec<String>,
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Reconciliation {
    /// Judges each payment: a payment paid within `grace` of `now` that is not
    /// on the topic or not delivered yet is in flight, not missing.
    pub fn judge(&mut self, facts: &[PaymentFacts], now: DateTime<Utc>, grace: Duration) {
        for fact in facts {
            self.payments += 1;
            let recent = fact.payment.paid_at > now - grace;
            let finding = |kind, event_id: Option<&str>, destination: Option<&str>, note| Finding {
                kind,
                payment: fact.payment.clone(),
                event_id: event_id.map(str::to_owned),
                destination: destination.map(str::to_owned),
                note,
            };
            match fact.events.len() {
                0 => {
                    let kind = if recent {
                        Kind::InFlight
                    } else {
                        Kind::NotOnTopic
                    };
                    let note = self.not_on_topic_note(&fact.payment);
                    self.findings.push(finding(kind, None, None, note));
                    continue;
                }
                1 => {}
                n => {
                    let note = format!(
                        "{n} PaymentCompleted events on {} ({}): a destination may count the sale twice",
                        self.topic,
                        fact.events.join(", ")
                    );
                    self.findings
                        .push(finding(Kind::PublishedTwice, None, None, note));
                }
            }
            self.on_topic += 1;
            for outcome in &fact.outcomes {
                *self
                    .destinations
                    .entry(outcome.channel.clone())
                    .or_default()
                    .entry(outcome.state)
                    .or_default() += 1;
                let kind = match outcome.state {
                    "sent" => continue,
                    "not_sent" if !recent => Kind::NotDelivered,
                    "failed" | "parked" => Kind::LeftToOperator,
                    _ => Kind::InFlight,
                };
                let note = match kind {
                    Kind::NotDelivered => format!(
                        "never acknowledged and not in the ledger: `ops trace {}` shows where it stopped",
                        outcome.event_id
                    ),
                    _ => outcome.note.clone(),
                };
                self.findings.push(finding(
                    kind,
                    Some(&outcome.event_id),
                    Some(&outcome.channel),
                    note,
                ));
            }
        }
    }

    fn not_on_topic_note(&self, payment: &PaymentMade) -> String {
        let (from, to) = (
            payment.paid_at - Duration::minutes(1),
            payment.paid_at + Duration::minutes(1),
        );
        format!(
            "no PaymentCompleted on {}: `ops outbox replay --from {} --to {}` publishes it again from the outbox (kept 7 days)",
            self.topic,
            from.to_rfc3339_opts(SecondsFormat::Secs, true),
            to.to_rfc3339_opts(SecondsFormat::Secs, true)
        )
    }

    pub fn count(&self, kinds: &[Kind]) -> usize {
        self.findings
            .iter()
            .filter(|f| kinds.contains(&f.kind))
            .count()
    }

    /// True when nothing is missing and nothing was published twice.
    pub fn balanced(&self) -> bool {
        !self.findings.iter().any(|f| f.kind.is_discrepancy())
    }

    /// `telegram 3 sent, 1 failed; data-platform 4 sent`.
    fn destinations_line(&self) -> String {
        let parts: Vec<String> = self
            .destinations
            .iter()
            .map(|(destination, states)| {
                let counts: Vec<String> = states
                    .iter()
                    .map(|(state, n)| format!("{n} {state}"))
                    .collect();
                format!("{destination} {}", counts.join(", "))
            })
            .collect();
        parts.join("; ")
    }

    pub fn summary(&self) -> String {
        let mut line = format!(
            "reconcile: {} payments, {} on {}, {} missing, {} twice, {} left to an operator, {} in flight",
            self.payments,
            self.on_topic,
            self.topic,
            self.count(&[Kind::NotOnTopic, Kind::NotDelivered]),
            self.count(&[Kind::PublishedTwice]),
            self.count(&[Kind::LeftToOperator]),
            self.count(&[Kind::InFlight]),
        );
        if !self.destinations.is_empty() {
            let _ = write!(line, "; {}", self.destinations_line());
        }
        line
    }

    pub fn to_text(&self) -> String {
        let mut text = format!(
            "payments confirmed from {} to {}, read {} records of {}\n",
            time(self.from),
            time(self.to),
            self.records_read,
            self.topic
        );
        for f in &self.findings {
            let what = match (&f.event_id, &f.destination) {
                (Some(event), Some(destination)) => format!("event {event} to {destination}"),
                _ => format!("payment {}", f.payment.payment_id),
            };
            let _ = writeln!(
                text,
                "{:<8} reservation {} paid {}: {what}: {}",
                f.kind.label(),
                f.payment.reservation_id,
                time(f.payment.paid_at),
                f.note
            );
        }
        if !self.cut_short.is_empty() {
            let _ = writeln!(
                text,
                "the read stopped early on {} (raise --scan-limit): events past it were not seen",
                self.cut_short.join(", ")
            );
        }
        text.push_str(&self.summary());
        text.push('\n');
        text
    }

    pub fn to_json(&self) -> Value {
        let findings: Vec<Value> = self
            .findings
            .iter()
            .map(|f| {
                json!({
                    "kind": f.kind.name(),
                    "discrepancy": f.kind.is_discrepancy(),
                    "reservationId": f.payment.reservation_id.to_string(),
                    "paymentId": f.payment.payment_id.to_string(),
                    "paidAt": time(f.payment.paid_at),
                    "eventId": f.event_id,
                    "destination": f.destination,
                    "note": f.note,
                })
            })
            .collect();
        json!({
            "from": time(self.from),
            "to": time(self.to),
            "payments": self.payments,
            "onTopic": self.on_topic,
            "missing": self.count(&[Kind::NotOnTopic, Kind::NotDelivered]),
            "twice": self.count(&[Kind::PublishedTwice]),
            "balanced": self.balanced(),
            "destinations": self.destinations,
            "findings": findings,
            "scan": {"topic": self.topic, "recordsRead": self.records_read, "cutShort": self.cut_short},
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::domain::{PaymentId, ReservationId};

    fn payment(paid_at: DateTime<Utc>) -> PaymentMade {
        PaymentMade {
            payment_id: PaymentId::random(),
            reservation_id: ReservationId::random(),
            paid_at,
        }
    }

    fn outcome(event: &str, channel: &str, state: &'static str) -> Outcome {
        Outcome {
            event_id: event.into(),
            event_type: "PaymentCompleted".into(),
            channel: channel.into(),
            state,
            note: format!("{state} note"),
        }
    }

    fn judged(facts: &[PaymentFacts], now: DateTime<Utc>) -> Reconciliation {
        let mut r = Reconciliation {
            topic: "payment.completed".into(),
            ..Reconciliation::default()
        };
        r.judge(facts, now, Duration::minutes(5));
        r
    }

    #[test]
    fn a_payment_sent_everywhere_balances() {
        let now = Utc::now();
        let facts = [PaymentFacts {
            payment: payment(now - Duration::hours(1)),
            events: vec!["e1".into()],
            outcomes: vec![
                outcome("e1", "telegram", "sent"),
                outcome("e1", "data-platform", "sent"),
            ],
        }];
        let r = judged(&facts, now);
        assert!(r.balanced());
        assert!(r.findings.is_empty());
        assert_eq!(
            r.summary(),
            "reconcile: 1 payments, 1 on payment.completed, 0 missing, 0 twice, 0 left to an operator, 0 in flight; data-platform 1 sent; telegram 1 sent"
        );
    }

    #[test]
    fn an_old_payment_off_the_topic_or_never_sent_is_missing_and_a_recent_one_in_flight() {
        let now = Utc::now();
        let old = now - Duration::hours(1);
        let facts = [
            PaymentFacts {
                payment: payment(old),
                events: vec![],
                outcomes: vec![],
            },
            PaymentFacts {
                payment: payment(old),
                events: vec!["e2".into()],
                outcomes: vec![outcome("e2", "data-platform", "not_sent")],
            },
            PaymentFacts {
                payment: payment(now - Duration::seconds(10)),
                events: vec!["e3".into()],
                outcomes: vec![outcome("e3", "data-platform", "not_sent")],
            },
        ];
        let r = judged(&facts, now);
        let kinds: Vec<Kind> = r.findings.iter().map(|f| f.kind).collect();
        assert_eq!(
            kinds,
            [Kind::NotOnTopic, Kind::NotDelivered, Kind::InFlight]
        );
        assert!(!r.balanced());
        assert!(r.findings[0].note.contains("ops outbox replay --from"));
        assert!(r.findings[1].note.contains("ops trace e2"));
    }

    #[test]
    fn two_events_of_one_payment_are_a_discrepancy_and_a_parked_send_is_left_to_an_operator() {
        let now = Utc::now();
        let facts = [PaymentFacts {
            payment: payment(now - Duration::hours(1)),
            events: vec!["e1".into(), "e2".into()],
            outcomes: vec![
                outcome("e1", "telegram", "parked"),
                outcome("e2", "telegram", "retrying"),
            ],
        }];
        let r = judged(&facts, now);
        let kinds: Vec<Kind> = r.findings.iter().map(|f| f.kind).collect();
        assert_eq!(
            kinds,
            [Kind::PublishedTwice, Kind::LeftToOperator, Kind::InFlight]
        );
        assert!(!r.balanced());
        assert_eq!(r.to_json()["twice"], 1);
        assert!(r.to_text().contains("TWICE"), "{}", r.to_text());
    }
}
