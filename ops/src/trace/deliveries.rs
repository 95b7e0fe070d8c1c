//! What became of one event at each of its destinations: its ledger rows, each
//! destination's idempotency record and the outcome they make. Read the same
//! way by `ops trace` (one reservation's events) and `ops reconcile` (a
//! window's payments).

use super::facts::{destinations, outcome};
use super::story::Outcome;
use crate::Error;
use shared::delivery::send_key;
use shared::dynamodb::{DynamoFailureLedger, DynamoIdempotencyStore};
use shared::idempotency::IdempotencyRecord;
use shared::ledger::LedgerEntry;
use shared::notification::{ChannelKind, ChannelRoutes};

/// Where an event's deliveries are recorded, and where it goes.
pub struct DeliveryRecords {
    pub ledger: DynamoFailureLedger,
    pub keys: DynamoIdempotencyStore,
    pub routes: ChannelRoutes,
    /// Whether the data-platform feed runs: every event then goes there too.
    pub feeds_platform: bool,
}

/// One event's deliveries as recorded.
pub struct EventDeliveries {
    pub rows: Vec<LedgerEntry>,
    /// The idempotency record of each destination that has one.
    pub keys: Vec<(ChannelKind, IdempotencyRecord)>,
    /// One per destination, in route order.
    pub outcomes: Vec<Outcome>,
}

impl DeliveryRecords {
    /// The ledger rows of `event_id`, then each destination's key and outcome.
    pub async fn of(&self, event_id: &str, event_type: &str) -> Result<EventDeliveries, Error> {
        let rows = self.ledger.for_event(event_id).await?;
        let mut keys = Vec::new();
        let mut outcomes = Vec::new();
        for channel in destinations(&self.routes, self.feeds_platform, event_type, &rows) {
            let key = self.keys.get(&send_key(channel, event_id)).await?;
            let row = rows.iter().find(|row| row.channel == Some(channel));
            outcomes.push(outcome(event_id, event_type, channel, key.as_ref(), row));
            keys.extend(key.map(|key| (channel, key)));
        }
        Ok(EventDeliveries {
            rows,
            keys,
            outcomes,
        })
    }
}
