//! The reads behind `ops trace`: the reservation and payment items, the
//! reservation's outbox items, its records on every topic (a bounded read from
//! shortly before the hold), each channel's idempotency record, the ledger's
//! rows and, locally, what the notification sandbox received.

use super::deliveries::DeliveryRecords;
use super::facts::{
    events_of, key_entry, ledger_entry, outbox_entry, record_entries, reservation_entries,
    sandbox_entry,
};
use super::story::{Entry, ScanNote, Story};
use crate::Error;
use chrono::{DateTime, Duration, Utc};
use shared::config::{TableNames, TopicNames};
use shared::domain::{Reservation, ReservationId, ReservationStatus};
use shared::dynamodb::{
    DynamoFailureLedger, DynamoIdempotencyStore, TicketingRepository, outbox_item,
    outbox_items_created_between,
};
use shared::events::{EventEnvelope, HEADER_EVENT_ID};
use shared::kafka::{KafkaSettings, ScanBounds, scan_topics};
use shared::kafka_event::DecodedRecord;
use shared::ledger::LedgerEntry;
use shared::notification::ChannelRoutes;
use shared::outbox::OutboxItem;
use std::collections::{BTreeMap, BTreeSet};

/// How long after a hold ran out its expiry event is looked for: the job runs
/// every minute, so an hour covers a long outage of it.
const EXPIRY_LATENESS: Duration = Duration::hours(1);
/// How far before the hold the topics are read: the clocks of the functions
/// and the broker may differ a little.
const CLOCK_SLACK: Duration = Duration::minutes(1);
/// How far before an event's first failure its records are looked for, when
/// only the ledger knows the event.
const LEDGER_LOOKBACK: Duration = Duration::hours(1);

/// Where `ops trace` reads.
pub struct Sources {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub tables: TableNames,
    pub topics: TopicNames,
    pub kafka: KafkaSettings,
    pub routes: ChannelRoutes,
    /// Whether the data-platform feed runs (`DATA_PLATFORM_URL` is set): every
    /// event then has a data-platform outcome too.
    pub feeds_platform: bool,
    /// The notification sandbox's URL, on a local stack.
    pub sandbox: Option<String>,
    /// The most records read on one partition.
    pub scan_limit: i64,
}

/// What the id names: a reservation, or an event (whose reservation is then
/// found from its outbox item).
struct Subject {
    reservation: Option<Reservation>,
    reservation_id: Option<String>,
    outbox: Vec<OutboxItem>,
    ledger: Vec<LedgerEntry>,
}

/// Everything found about `id` (a reservation id or an event id).
pub async fn gather(sources: &Sources, id: &str, now: DateTime<Utc>) -> Result<Story, Error> {
    let subject = subject(sources, id, now).await?;
    let mut story = Story {
        asked: id.to_owned(),
        reservation_id: subject.reservation_id.clone(),
        reservation_status: subject
            .reservation
            .as_ref()
            .map(|r| r.status.name().to_owned()),
        ..Story::default()
    };
    if let Some(reservation) = &subject.reservation {
        let receipt = match &reservation.status {
            ReservationStatus::Confirmed { payment_id, .. } => {
                sources.repository().receipt(*payment_id).await?
            }
            _ => None,
        };
        story
            .entries
            .extend(reservation_entries(reservation, receipt.as_ref()));
    }
    let (records, scan) = records_of(sources, &subject).await?;
    story.scan = scan;
    let outbox = with_published_events(sources, subject.outbox, &records).await?;
    story.entries.extend(outbox.iter().map(outbox_entry));
    story.entries.extend(record_entries(&records));
    story.events = events_of(&outbox, &records);
    let delivery_records = sources.delivery_records();
    for (event_id, event_type) in story.events.clone() {
        let deliveries = delivery_records.of(&event_id, &event_type).await?;
        story
            .entries
            .extend(deliveries.rows.iter().map(ledger_entry));
        story.entries.extend(
            deliveries
                .keys
                .iter()
                .map(|(channel, key)| key_entry(&event_id, *channel, key)),
        );
        story.outcomes.extend(deliveries.outcomes);
    }
    if let Some(url) = &sources.sandbox {
        story
            .entries
            .extend(sandbox_entries(url, &outbox, &records).await?);
    }
    story.sort();
    Ok(story)
}

impl Sources {
    fn repository(&self) -> TicketingRepository {
        TicketingRepository::new(self.dynamodb.clone(), self.tables.clone())
    }

    fn ledger(&self) -> DynamoFailureLedger {
        DynamoFailureLedger::new(self.dynamodb.clone(), self.tables.failed_messages.clone())
    }

    fn delivery_records(&self) -> DeliveryRecords {
        DeliveryRecords {
            ledger: self.ledger(),
            keys: DynamoIdempotencyStore::new(
                self.dynamodb.clone(),
                self.tables.idempotency.clone(),
            ),
            routes: self.routes.clone(),
            feeds_platform: self.feeds_platform,
        }
    }
}

/// Finds what `id` names, or says that nothing is known of it.
async fn subject(sources: &Sources, id: &str, now: DateTime<Utc>) -> Result<Subject, Error> {
    let repository = sources.repository();
    let as_reservation = match ReservationId::parse(id) {
        Ok(rid) => repository.reservation(rid).await?,
        Err(_) => None,
    };
    if let Some(reservation) = as_reservation {
        let outbox = outbox_of(sources, &reservation, now).await?;
        return Ok(Subject {
            reservation_id: Some(reservation.id.to_string()),
            reservation: Some(reservation),
            outbox,
            ledger: Vec::new(),
        });
    }
    if let Some(item) = outbox_item(&sources.dynamodb, &sources.tables.outbox, id).await? {
        let reservation = match ReservationId::parse(&item.aggregate_id) {
            Ok(rid) => repository.reservation(rid).await?,
            Err(_) => None,
        };
        let mut outbox = match &reservation {
            Some(r) => outbox_of(sources, r, now).await?,
            None => Vec::new(),
        };
        if !outbox.iter().any(|o| o.event_id == item.event_id) {
            outbox.push(item.clone());
        }
        return Ok(Subject {
            reservation_id: Some(item.aggregate_id.clone()),
            reservation,
            outbox,
            ledger: Vec::new(),
        });
    }
    let ledger = sources.ledger().for_event(id).await?;
    if ledger.is_empty() {
        return Err(Error::Message(format!(
            "no reservation, outbox item or ledger row has the id {id} (outbox items are kept 7 days; \
             check the tables the *_TABLE variables name)"
        )));
    }
    Ok(Subject {
        reservation: None,
        reservation_id: None,
        outbox: Vec::new(),
        ledger,
    })
}

/// The reservation's outbox items: written between its hold and an hour after
/// the hold ran out (its payment before, its expiry event after).
async fn outbox_of(
    sources: &Sources,
    reservation: &Reservation,
    now: DateTime<Utc>,
) -> Result<Vec<OutboxItem>, Error> {
    let from = reservation.created_at - Duration::seconds(1);
    let to = (reservation.hold_expires_at + EXPIRY_LATENESS).min(now);
    let id = reservation.id.to_string();
    Ok(
        outbox_items_created_between(&sources.dynamodb, &sources.tables.outbox, from, to)
            .await?
            .into_iter()
            .filter(|item| item.aggregate_id == id)
            .collect(),
    )
}

/// The reservation's records on every topic: keyed by it, or carrying one of
/// its events' ids.
async fn records_of(
    sources: &Sources,
    subject: &Subject,
) -> Result<(Vec<DecodedRecord>, ScanNote), Error> {
    let since = match (
        &subject.reservation,
        subject.outbox.first(),
        subject.ledger.first(),
    ) {
        (Some(r), _, _) => Some(r.created_at - CLOCK_SLACK),
        (None, Some(item), _) => DateTime::from_timestamp_millis(item.created_at - 60_000),
        (None, None, Some(row)) => Some(row.first_failed_at - LEDGER_LOOKBACK),
        (None, None, None) => None,
    };
    let key = subject.reservation_id.clone().map(String::into_bytes);
    let mut event_ids: BTreeSet<String> =
        subject.outbox.iter().map(|o| o.event_id.clone()).collect();
    event_ids.extend(subject.ledger.iter().map(|row| row.event_id.clone()));
    let topics = sources.topics.all();
    let bounds = ScanBounds {
        since,
        per_partition: sources.scan_limit,
    };
    let scanned = scan_topics(&sources.kafka, &topics, bounds, |record| {
        (key.is_some() && record.key == key)
            || record
                .header(HEADER_EVENT_ID)
                .is_some_and(|id| event_ids.contains(id))
    })
    .await?;
    let note = ScanNote {
        topics: topics.iter().map(|t| (*t).to_owned()).collect(),
        since,
        read: scanned.read,
        cut_short: scanned.cut_short,
    };
    Ok((scanned.records, note))
}

/// `outbox` and the outbox items of events seen only on the topics (written
/// outside the window looked at), while the outbox keeps them.
async fn with_published_events(
    sources: &Sources,
    mut outbox: Vec<OutboxItem>,
    records: &[DecodedRecord],
) -> Result<Vec<OutboxItem>, Error> {
    let unknown: BTreeSet<&str> = records
        .iter()
        .filter_map(|r| r.header(HEADER_EVENT_ID))
        .filter(|id| !outbox.iter().any(|o| o.event_id == *id))
        .collect();
    for event_id in unknown {
        if let Some(item) = outbox_item(&sources.dynamodb, &sources.tables.outbox, event_id).await?
        {
            outbox.push(item);
        }
    }
    Ok(outbox)
}

/// The sandbox's messages whose text is one of these events' notifications.
async fn sandbox_entries(
    url: &str,
    outbox: &[OutboxItem],
    records: &[DecodedRecord],
) -> Result<Vec<Entry>, Error> {
    let envelopes = outbox
        .iter()
        .map(|o| o.envelope.as_bytes())
        .chain(records.iter().filter_map(|r| r.value.as_deref()))
        .filter_map(|bytes| EventEnvelope::from_json(bytes).ok());
    // Each event's notification text, the way the notifier words it.
    let texts: BTreeMap<String, String> = envelopes
        .filter_map(|envelope| shared::notification::for_event(&envelope).ok())
        .map(|n| (n.event_id.to_string(), n.text))
        .collect();
    let messages = crate::sandbox::messages(&reqwest::Client::new(), url, None).await?;
    Ok(messages
        .iter()
        .filter_map(|m| {
            let (event_id, _) = texts.iter().find(|(_, text)| m["text"] == **text)?;
            Some(sandbox_entry(event_id, m))
        })
        .collect())
}
