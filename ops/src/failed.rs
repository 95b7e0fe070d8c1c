//! `ops failed`: the failed-message ledger for operators.
//!
//! - `list [--status S]`: the rows (one per event and failed channel), oldest first;
//! - `show <event-id>`: the event's rows, as a JSON array;
//! - `redrive <event-id> [--channel C] | --all-failed`: for each row not yet
//!   PROCESSED (of that event, or every FAILED row), takes its dead letter from
//!   the failed (or dead-letter) topic, republishes it to the dead-letter topic
//!   with `retry-count` 0, due now, and puts the row back to PENDING, so the next
//!   dlq-retry run sends it again on that channel only. A send parked because it
//!   may have reached the customer (`shared::Error::AmbiguousSend`) has its
//!   idempotency key reopened when re-driven by its event id: the operator's
//!   word that it never arrived. `--all-failed` leaves those and lists them.

use crate::Error;
use chrono::{SecondsFormat, Utc};
use serde_json::json;
use shared::config::TopicNames;
use shared::dead_letter::DeadLetter;
use shared::delivery::{DeadLetterSink, reopen_parked_send};
use shared::dynamodb::{DynamoFailureLedger, DynamoIdempotencyStore};
use shared::error::AMBIGUOUS_SEND_KIND;
use shared::kafka::{KafkaPublisher, KafkaSettings, ProducerSettings, ScanBounds, scan_topics};
use shared::ledger::{LedgerEntry, LedgerStatus};
use shared::notification::ChannelKind;
use std::collections::HashMap;

fn entry_json(e: &LedgerEntry) -> serde_json::Value {
    json!({
        "eventId": e.event_id,
        "channel": e.channel.map(ChannelKind::name),
        "eventType": e.event_type,
        "status": e.status.name(),
        "attempts": e.attempts,
        "firstFailedAt": e.first_failed_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "lastFailedAt": e.last_failed_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        "errorKind": e.error_kind,
        "lastError": e.last_error,
        "original": {"topic": e.topic, "partition": e.partition, "offset": e.offset},
    })
}

pub async fn list(ledger: &DynamoFailureLedger, status: Option<&str>) -> Result<(), Error> {
    let status = status.map(LedgerStatus::parse).transpose()?;
    let entries = ledger.list(status).await?;
    println!(
        "{:<38} {:<9} {:<9} {:>8}  {:<24}  LAST ERROR",
        "EVENT", "CHANNEL", "STATUS", "ATTEMPTS", "LAST FAILED"
    );
    for e in &entries {
        let error: String = e.last_error.chars().take(70).collect();
        println!(
            "{:<38} {:<9} {:<9} {:>8}  {:<24}  {}",
            e.event_id,
            e.channel.map_or("-", ChannelKind::name),
            e.status.name(),
            e.attempts,
            e.last_failed_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            error
        );
    }
    println!("{} rows", entries.len());
    Ok(())
}

pub async fn show(ledger: &DynamoFailureLedger, event_id: &str) -> Result<(), Error> {
    let entries = ledger.for_event(event_id).await?;
    if entries.is_empty() {
        return Err(Error::Message(format!(
            "no ledger row for event {event_id}"
        )));
    }
    let rows: Vec<_> = entries.iter().map(entry_json).collect();
    println!("{:#}", serde_json::Value::Array(rows));
    Ok(())
}

/// A ledger row's address: the event and the channel that failed (`None`: the
/// record failed before any channel).
type RowKey = (String, Option<ChannelKind>);

/// The newest dead letter of each event and channel on `topics`, read up to
/// their current ends.
async fn dead_letters(
    kafka: &KafkaSettings,
    topics: &[&str],
) -> Result<HashMap<RowKey, DeadLetter>, Error> {
    let whole = ScanBounds {
        since: None,
        per_partition: i64::MAX,
    };
    let scanned = scan_topics(kafka, topics, whole, |_| true).await?;
    if !scanned.cut_short.is_empty() {
        eprintln!(
            "ops: the broker stopped answering before the end of {}: dead letters past that point are not seen",
            scanned.cut_short.join(", ")
        );
    }
    Ok(scanned
        .records
        .iter()
        .filter_map(|record| DeadLetter::from_dlq_record(record).ok())
        .map(|letter| ((letter.event_id(), letter.channel), letter))
        .collect())
}

/// Which rows to re-drive: one event's (on one channel, if given), or every
/// FAILED row.
pub struct Rows<'a> {
    pub event_id: Option<&'a str>,
    pub channel: Option<ChannelKind>,
    pub all_failed: bool,
}

pub async fn redrive(
    ledger: &DynamoFailureLedger,
    keys: &DynamoIdempotencyStore,
    wanted: Rows<'_>,
) -> Result<(), Error> {
    let mut rows = rows_to_redrive(ledger, &wanted).await?;
    if wanted.all_failed {
        leave_ambiguous_sends(&mut rows);
    }
    if rows.is_empty() {
        println!("nothing to re-drive");
        return Ok(());
    }
    let kafka = KafkaSettings::from_env()?;
    let topics = TopicNames::from_env();
    let letters = dead_letters(
        &kafka,
        &[
            &topics.payment_completed_failed,
            &topics.payment_completed_dlq,
        ],
    )
    .await?;
    let publisher = KafkaPublisher::new(&kafka, &ProducerSettings::default())?;
    let sink = DeadLetterSink::new(publisher, ledger.clone(), topics);
    let mut missing = Vec::new();
    for row in &rows {
        let name = match row.channel {
            Some(channel) => format!("{} on {}", row.event_id, channel.name()),
            None => row.event_id.clone(),
        };
        let Some(letter) = letters.get(&(row.event_id.clone(), row.channel)) else {
            missing.push(format!("{name} (no dead letter on the topics)"));
            continue;
        };
        if reopen_parked_send(keys, letter).await? {
            println!(
                "{name} may have reached the customer: re-driven on your word that it did not"
            );
        }
        sink.redrive(letter, Utc::now()).await?;
        println!(
            "re-drove {name}: on {} again, ledger PENDING",
            sink.retry_topic()
        );
    }
    if !missing.is_empty() {
        return Err(Error::Message(format!(
            "could not re-drive {}",
            missing.join(", ")
        )));
    }
    Ok(())
}

/// Takes out of `rows` the sends parked because they may have reached the
/// customer, and names them: re-sending those is a decision per customer.
fn leave_ambiguous_sends(rows: &mut Vec<LedgerEntry>) {
    let (ambiguous, rest): (Vec<_>, Vec<_>) = std::mem::take(rows)
        .into_iter()
        .partition(|row| row.error_kind == AMBIGUOUS_SEND_KIND);
    *rows = rest;
    for row in &ambiguous {
        let channel = row.channel.map_or("-", ChannelKind::name);
        println!(
            "left {} on {channel}: it may have reached the customer; check the chat, then \
             `ops failed redrive {} --channel {channel}` if it never arrived",
            row.event_id, row.event_id
        );
    }
}

/// The rows of `event_id` (on `channel`, if given) not yet PROCESSED, or every
/// FAILED row.
async fn rows_to_redrive(
    ledger: &DynamoFailureLedger,
    wanted: &Rows<'_>,
) -> Result<Vec<LedgerEntry>, Error> {
    let (event_id, channel) = (wanted.event_id, wanted.channel);
    match (event_id, wanted.all_failed) {
        (Some(id), false) => {
            let rows: Vec<LedgerEntry> = ledger
                .for_event(id)
                .await?
                .into_iter()
                .filter(|e| channel.is_none() || e.channel == channel)
                .collect();
            if rows.is_empty() {
                let on = channel
                    .map(|c| format!(" on {}", c.name()))
                    .unwrap_or_default();
                return Err(Error::Message(format!("no ledger row for event {id}{on}")));
            }
            Ok(rows
                .into_iter()
                .filter(|e| e.status != LedgerStatus::Processed)
                .collect())
        }
        (None, true) => Ok(ledger.list(Some(LedgerStatus::Failed)).await?),
        _ => Err(Error::Message(
            "give one event id or --all-failed, not both".into(),
        )),
    }
}
