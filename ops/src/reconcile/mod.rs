//! `ops reconcile --from <time> --to <time>`: for the payments confirmed in
//! the window (the ticketing table's `paid-at` index), their events on
//! `payment.completed` (read from shortly before the window, at most
//! `--scan-limit` records per partition), what each destination acknowledged
//! (the notification channels and the data platform, from their idempotency
//! records) and the ledger. One line per discrepancy or open case and a
//! summary; exits 1 when a sale is missing somewhere or was published twice.
//! `make soak`'s "nothing lost" check, as an operator's command.

mod report;

use crate::Error;
use crate::trace::deliveries::DeliveryRecords;
use chrono::{DateTime, Duration, Utc};
use clap::Args;
use report::{PaymentFacts, Reconciliation};
use shared::config::{TableNames, TopicNames};
use shared::dynamodb::{
    DynamoFailureLedger, DynamoIdempotencyStore, PaymentMade, payments_between,
};
use shared::events::{EventType, HEADER_EVENT_ID};
use shared::kafka::{KafkaSettings, ScanBounds, scan_topics};
use shared::notification::ChannelRoutes;
use std::collections::{BTreeMap, BTreeSet};

/// How far before the window the topic is read: the clocks of the functions
/// and the broker may differ a little.
const CLOCK_SLACK: Duration = Duration::minutes(1);

#[derive(Args)]
pub struct ReconcileArgs {
    /// The window's start (RFC 3339, e.g. 2026-11-30T05:00:00Z).
    #[arg(long)]
    from: DateTime<Utc>,
    /// The window's end (RFC 3339); now by default.
    #[arg(long)]
    to: Option<DateTime<Utc>>,
    /// Payments younger than this many seconds that are not on the topic or
    /// not delivered yet are in flight, not missing.
    #[arg(long, default_value_t = 300)]
    grace_seconds: i64,
    /// Print the reconciliation as one JSON object.
    #[arg(long)]
    json: bool,
    /// The most records read on one partition of payment.completed.
    #[arg(long, default_value_t = crate::trace::DEFAULT_SCAN_LIMIT)]
    scan_limit: i64,
}

/// Where the reconciliation reads.
struct Sources {
    dynamodb: aws_sdk_dynamodb::Client,
    tables: TableNames,
    topic: String,
    kafka: KafkaSettings,
    deliveries: DeliveryRecords,
}

/// Runs the reconciliation; an `Error::Unbalanced` when it found a discrepancy.
pub async fn run(args: ReconcileArgs, dynamodb: aws_sdk_dynamodb::Client) -> Result<(), Error> {
    let now = Utc::now();
    let to = args.to.unwrap_or(now);
    if args.from > to {
        return Err(Error::Message(format!(
            "--from {} is after --to {to}",
            args.from
        )));
    }
    let tables = TableNames::from_env();
    let deliveries = DeliveryRecords {
        ledger: DynamoFailureLedger::new(dynamodb.clone(), tables.failed_messages.clone()),
        keys: DynamoIdempotencyStore::new(dynamodb.clone(), tables.idempotency.clone()),
        routes: ChannelRoutes::from_env()?,
        feeds_platform: shared::config::optional("DATA_PLATFORM_URL").is_some(),
    };
    let sources = Sources {
        dynamodb,
        tables,
        topic: TopicNames::from_env().payment_completed,
        kafka: KafkaSettings::from_env()?,
        deliveries,
    };
    let payments =
        payments_between(&sources.dynamodb, &sources.tables.ticketing, args.from, to).await?;
    let mut reconciliation = Reconciliation {
        from: args.from,
        to,
        topic: sources.topic.clone(),
        ..Reconciliation::default()
    };
    let events = events_on_topic(
        &sources,
        &payments,
        args.from,
        args.scan_limit,
        &mut reconciliation,
    )
    .await?;
    let mut facts = Vec::with_capacity(payments.len());
    for payment in payments {
        let events = events
            .get(&payment.reservation_id.to_string())
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default();
        facts.push(facts_of(&sources, payment, events).await?);
    }
    reconciliation.judge(&facts, now, Duration::seconds(args.grace_seconds));
    if args.json {
        println!("{:#}", reconciliation.to_json());
    } else {
        print!("{}", reconciliation.to_text());
    }
    if reconciliation.balanced() {
        Ok(())
    } else {
        Err(Error::Unbalanced(reconciliation.summary()))
    }
}

/// The PaymentCompleted event ids on the topic per reservation (its key), of
/// these payments.
async fn events_on_topic(
    sources: &Sources,
    payments: &[PaymentMade],
    from: DateTime<Utc>,
    scan_limit: i64,
    reconciliation: &mut Reconciliation,
) -> Result<BTreeMap<String, BTreeSet<String>>, Error> {
    let reservations: BTreeSet<Vec<u8>> = payments
        .iter()
        .map(|p| p.reservation_id.to_string().into_bytes())
        .collect();
    let bounds = ScanBounds {
        since: Some(from - CLOCK_SLACK),
        per_partition: scan_limit,
    };
    let scanned = scan_topics(
        &sources.kafka,
        &[sources.topic.as_str()],
        bounds,
        |record| {
            record
                .key
                .as_ref()
                .is_some_and(|k| reservations.contains(k))
        },
    )
    .await?;
    reconciliation.records_read = scanned.read;
    reconciliation.cut_short = scanned.cut_short;
    let mut events: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for record in &scanned.records {
        if let (Some(key), Some(event_id)) = (&record.key, record.header(HEADER_EVENT_ID)) {
            events
                .entry(String::from_utf8_lossy(key).into_owned())
                .or_default()
                .insert(event_id.to_owned());
        }
    }
    Ok(events)
}

/// What each destination made of each of the payment's events: its key in the
/// idempotency table and its ledger row.
async fn facts_of(
    sources: &Sources,
    payment: PaymentMade,
    events: Vec<String>,
) -> Result<PaymentFacts, Error> {
    let event_type = EventType::PaymentCompleted.as_str();
    let mut outcomes = Vec::new();
    for event_id in &events {
        outcomes.extend(sources.deliveries.of(event_id, event_type).await?.outcomes);
    }
    Ok(PaymentFacts {
        payment,
        events,
        outcomes,
    })
}
