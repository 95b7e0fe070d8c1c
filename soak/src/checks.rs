//! What the soak checks once the messages settled: each customer told once
//! (a copy sent again after a lost answer or a killed invocation counted apart),
//! each sale at the data platform once, every event published, the ledger
//! clean, the balances and seats right, and every fault fired.

use crate::{BALANCE, CUSTOMER_LINE, Error, PAYMENT_MESSAGE, PRICE, Report, SoakConfig};
use local_runner::kafka_source::DeliveryFaults;
use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use shared::domain::{ReservationId, SeatId, SeatStatus};
use shared::dynamodb::DynamoFailureLedger;
use shared::ledger::LedgerStatus;
use shared::seed::Seeded;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration as StdDuration;
use testkit::{TestPipeline, consume, header};

/// Each confirmed customer's payment event id, from the topic's records
/// (keyed by reservation).
pub(crate) fn payment_events(
    records: &[OwnedMessage],
    confirmed: &HashMap<usize, ReservationId>,
) -> HashMap<usize, String> {
    let by_reservation: HashMap<String, String> = records
        .iter()
        .filter_map(|m| {
            let key = String::from_utf8_lossy(m.key()?).into_owned();
            Some((key, header(m, "event-id")?))
        })
        .collect();
    confirmed
        .iter()
        .filter_map(|(user, reservation)| {
            let event = by_reservation.get(&reservation.to_string())?;
            Some((*user, event.clone()))
        })
        .collect()
}

/// Splits the copies beyond the first into those a lost answer or a killed
/// invocation explains (at most one each) and unexplained duplicates.
pub(crate) fn split_extra(extra: usize, answers_lost: usize, killed: bool) -> (usize, usize) {
    let explained = extra.min(answers_lost + usize::from(killed));
    (explained, extra - explained)
}

/// Counts each confirmed customer told once, twice or never, and those told
/// of a payment that did not happen.
pub(crate) fn tally_told(
    pipeline: &TestPipeline,
    mails: &HashMap<usize, String>,
    events: &HashMap<usize, String>,
    killed: &BTreeSet<String>,
    report: &mut Report,
) {
    let told = told_per_customer(pipeline);
    for (user, mail) in mails {
        match told.get(mail).copied().unwrap_or_default() {
            Told { copies: 0, .. } => report.lost += 1,
            Told {
                copies,
                answers_lost,
            } => {
                report.delivered_once += 1;
                let in_killed = events.get(user).is_some_and(|e| killed.contains(e));
                let (resent, duplicates) = split_extra(copies - 1, answers_lost, in_killed);
                report.resent += resent;
                report.duplicates += duplicates;
            }
        }
    }
    let phantom = told.len() - mails.values().filter(|m| told.contains_key(*m)).count();
    if phantom > 0 {
        report.violations.push(format!(
            "{phantom} customers told of a payment that did not happen"
        ));
    }
    if report.duplicates > 0 {
        report.violations.push(format!(
            "{} messages sent twice without a lost answer or a crash",
            report.duplicates
        ));
    }
    if report.lost > 0 {
        report
            .violations
            .push(format!("{} confirmed payments never told", report.lost));
    }
}

/// Counts each confirmed payment's sale received by the data platform once,
/// sent again, or never.
pub(crate) fn tally_platform(
    pipeline: &TestPipeline,
    events: &HashMap<usize, String>,
    killed: &BTreeSet<String>,
    report: &mut Report,
) {
    let platform_events = pipeline.platform_events();
    let paid: BTreeSet<&String> = events.values().collect();
    let phantom = platform_events
        .iter()
        .filter(|e| e.event["eventType"] == "PaymentCompleted" && !paid.contains(&e.event_id))
        .count();
    if phantom > 0 {
        report.violations.push(format!(
            "the data platform holds {phantom} sales of payments that did not happen"
        ));
    }
    let received: BTreeSet<String> = platform_events.into_iter().map(|e| e.event_id).collect();
    let mut copies_again: HashMap<String, usize> = HashMap::new();
    for id in pipeline.sandbox.platform_duplicates() {
        *copies_again.entry(id).or_default() += 1;
    }
    let answers_lost = pipeline.sandbox.platform_answers_lost();
    let tally = &mut report.platform;
    for event in events.values() {
        if !received.contains(event) {
            tally.lost += 1;
            continue;
        }
        tally.received_once += 1;
        let extra = copies_again.get(event).copied().unwrap_or_default();
        let lost_answers = answers_lost.get(event).copied().unwrap_or_default();
        let (resent, duplicates) = split_extra(extra, lost_answers, killed.contains(event));
        tally.resent += resent;
        tally.duplicates += duplicates;
    }
    if tally.lost > 0 {
        report.violations.push(format!(
            "{} confirmed payments never reached the data platform",
            tally.lost
        ));
    }
    if tally.duplicates > 0 {
        report.violations.push(format!(
            "{} sales sent to the data platform again without a lost answer or a crash",
            tally.duplicates
        ));
    }
}

/// The faults injected, and a violation for each that never fired: a fault
/// that never fired proves nothing.
pub(crate) fn check_faults(
    config: &SoakConfig,
    pipeline: &TestPipeline,
    faults: &DeliveryFaults,
    restarted: bool,
    report: &mut Report,
) {
    // One kill per Kafka source: the notifier's and the feed's.
    if faults.injected.killed() < 2 {
        report.violations.push(format!(
            "{} of the 2 Kafka sources killed an invocation (the fault must fire in both)",
            faults.injected.killed()
        ));
    }
    if config.restart_broker.is_some() && !restarted {
        report
            .violations
            .push("the broker restart did not happen or failed".into());
    }
    let chaos = pipeline.sandbox.chaos_failures();
    if config.answer_lost_rate > 0.0 && chaos.answers_lost == 0 {
        report
            .violations
            .push("no send lost its answer (the fault never fired)".into());
    }
    report.faults = format!(
        "{} timeouts, {} 5xx, {} 429s, {} answers lost from the sandbox (channels and platform); {} batches delivered twice; {} invocations killed; broker restarted: {}",
        chaos.timeouts,
        chaos.server_errors,
        chaos.rate_limited,
        chaos.answers_lost,
        faults.injected.duplicated_batches(),
        faults.injected.killed(),
        if restarted { "yes" } else { "no" },
    );
}

/// The payment messages one customer got.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Told {
    copies: usize,
    /// Of those, the ones whose answer the sender never got.
    answers_lost: usize,
}

/// Payment messages the sandbox accepted, per customer mail.
pub(crate) fn told_per_customer(pipeline: &TestPipeline) -> HashMap<String, Told> {
    let mut told = HashMap::new();
    for message in pipeline.messages() {
        if !message.text.starts_with(PAYMENT_MESSAGE) {
            continue;
        }
        let customer = message
            .text
            .lines()
            .find_map(|line| line.strip_prefix(CUSTOMER_LINE))
            .unwrap_or_default();
        let told: &mut Told = told.entry(customer.to_owned()).or_default();
        told.copies += 1;
        told.answers_lost += usize::from(message.answer_lost);
    }
    told
}

/// Every record on `topic`.
pub(crate) async fn published_records(topic: &str) -> Vec<OwnedMessage> {
    consume(
        &testkit::kafka().bootstrap_servers,
        topic,
        usize::MAX,
        StdDuration::from_secs(10),
    )
    .await
}

/// The distinct event ids of `records`.
pub(crate) fn event_ids(records: &[OwnedMessage]) -> BTreeSet<String> {
    records
        .iter()
        .filter_map(|m| header(m, "event-id"))
        .collect()
}

/// A key (reservation) of each partition that has records.
pub(crate) fn one_key_per_partition(records: &[OwnedMessage]) -> Vec<String> {
    let mut keys: BTreeMap<i32, String> = BTreeMap::new();
    for record in records {
        if let Some(key) = record.key() {
            keys.entry(record.partition())
                .or_insert_with(|| String::from_utf8_lossy(key).into_owned());
        }
    }
    keys.into_values().collect()
}

/// Events published: distinct event ids on the payment topic (read before the
/// markers were sent).
pub(crate) fn check_published(
    records: &[OwnedMessage],
    confirmed: usize,
    report: &mut Report,
) -> BTreeSet<String> {
    let published = event_ids(records);
    if published.len() != confirmed {
        report.violations.push(format!(
            "{confirmed} confirmed payments but {} events published",
            published.len()
        ));
    }
    published
}

/// The ledger agrees with the deliveries: every row names a published event,
/// and none is left pending or failed (each failure ended in a delivery).
pub(crate) async fn check_ledger(
    ledger: &DynamoFailureLedger,
    published: &BTreeSet<String>,
    markers: &BTreeSet<String>,
    report: &mut Report,
) -> Result<(), Error> {
    let mut rows = ledger.list(None).await?;
    rows.retain(|row| !markers.contains(&row.event_id));
    let unknown = rows
        .iter()
        .filter(|row| !published.contains(&row.event_id))
        .count();
    if unknown > 0 {
        report.violations.push(format!(
            "{unknown} ledger rows name an event that was never published"
        ));
    }
    for status in [LedgerStatus::Pending, LedgerStatus::Failed] {
        let left = rows.iter().filter(|row| row.status == status).count();
        if left > 0 {
            report
                .violations
                .push(format!("{left} ledger rows still {}", status.name()));
        }
    }
    Ok(())
}

pub(crate) async fn check_balances_and_seats(
    pipeline: &TestPipeline,
    seeded: &Seeded,
    confirmed: &HashMap<usize, ReservationId>,
    seat_sales: &HashMap<SeatId, usize>,
    report: &mut Report,
) -> Result<(), Error> {
    for (user, customer) in seeded.users.iter().enumerate() {
        let paid = i64::from(confirmed.contains_key(&user));
        let now = pipeline
            .repo
            .user(customer.user.id)
            .await?
            .ok_or_else(|| Error::UserGone(customer.user.id.to_string()))?;
        if now.balance.amount() != BALANCE - paid * PRICE {
            report.violations.push(format!(
                "user {} has {} after {paid} payments",
                customer.user.id,
                now.balance.amount()
            ));
        }
    }
    for (seat, sales) in seat_sales {
        if *sales > 1 {
            report
                .violations
                .push(format!("seat {seat} sold {sales} times"));
        }
    }
    for seat in &seeded.seats {
        if let Some(now) = pipeline.repo.seat(seat.id).await?
            && let SeatStatus::Sold { reservation, .. } = now.status
            && !confirmed.values().any(|r| *r == reservation)
        {
            report.violations.push(format!(
                "seat {} is sold to {reservation}, which is not a confirmed payment",
                seat.number
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::split_extra;

    #[test]
    fn a_copy_again_is_explained_by_each_lost_answer_and_by_a_kill_at_most_once() {
        assert_eq!(split_extra(0, 0, false), (0, 0));
        assert_eq!(split_extra(1, 1, false), (1, 0));
        assert_eq!(split_extra(1, 0, true), (1, 0));
        assert_eq!(split_extra(2, 1, true), (2, 0));
        assert_eq!(split_extra(2, 0, true), (1, 1));
        assert_eq!(split_extra(1, 0, false), (0, 1));
    }
}
