//! "Nothing more arrives", shown by markers instead of a fixed wait: a marker
//! event of the same reservation goes the whole way behind what a test sent
//! (outbox, stream, relay, the reservation's partition, the notifier), and a
//! marker dead letter behind the reservation's dead letters (dlq-retry). Once
//! a marker's message arrived, everything before it on its path was handled,
//! so a duplicate of it would have arrived too. When the data-platform feed
//! runs, the markers must reach the platform as well.

use crate::{TestPipeline, eventually};
use chrono::Utc;
use local_runner::notification_sandbox::{ReceivedEvent, ReceivedMessage};
use shared::dead_letter::DeadLetter;
use shared::delivery::{DeadLetterSink, Disposition};
use shared::domain::ReservationId;
use shared::dynamodb::DynamoFailureLedger;
use shared::events::EventEnvelope;
use shared::kafka::{KafkaPublisher, ProducerSettings};
use shared::ledger::LedgerStatus;
use shared::notification::ChannelKind;
use shared::outbox::OutboxItem;
use std::time::Duration;

/// The domain of the markers' customers: their messages are told apart by it.
const MARKER_DOMAIN: &str = "@markers.test";
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

fn is_marker(message: &ReceivedMessage) -> bool {
    message.text.contains(MARKER_DOMAIN)
}

impl TestPipeline {
    /// A marker PaymentCompleted of `reservation` (its key), remembered.
    fn marker_event(&self, reservation: &str) -> EventEnvelope {
        let reservation = ReservationId::parse(reservation).expect("a reservation id");
        let mail = format!("settle-{}{MARKER_DOMAIN}", &crate::unique("m")[2..10]);
        let marker = shared::fixtures::payment_completed_envelope(reservation, &mail, 1);
        self.markers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(marker.event_id.to_string());
        marker
    }

    /// The event ids of the markers sent so far.
    pub fn marker_event_ids(&self) -> std::collections::BTreeSet<String> {
        self.markers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The messages the sandbox accepted, without the markers of `settle`.
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        self.sandbox
            .messages()
            .into_iter()
            .filter(|m| !is_marker(m))
            .collect()
    }

    /// The events the sandbox's data platform took, without the markers.
    pub fn platform_events(&self) -> Vec<ReceivedEvent> {
        let markers = self.marker_event_ids();
        self.sandbox
            .platform_events()
            .into_iter()
            .filter(|e| !markers.contains(&e.event_id))
            .collect()
    }

    /// Waits until the notifier has handled everything sent so far for these
    /// reservations: a marker event of each through the outbox, told.
    pub async fn settle(&self, reservations: &[&str]) {
        let markers: Vec<EventEnvelope> =
            reservations.iter().map(|r| self.marker_event(r)).collect();
        for marker in &markers {
            let item = serde_dynamo::to_item(OutboxItem::new(marker, Utc::now())).unwrap();
            self.dynamodb
                .put_item()
                .table_name(&self.tables.outbox)
                .set_item(Some(item))
                .send()
                .await
                .unwrap();
        }
        self.wait_for_markers(&markers).await;
    }

    /// `settle`, then waits until no dead letter is pending and dlq-retry has
    /// passed every dead letter of these reservations: a marker dead letter of
    /// each, due now, told. Needs a short dlq-retry interval.
    pub async fn settle_retries(&self, reservations: &[&str]) {
        self.settle(reservations).await;
        let ledger =
            DynamoFailureLedger::new(self.dynamodb.clone(), self.tables.failed_messages.clone());
        eventually(SETTLE_TIMEOUT, "no dead letter pending", || async {
            let pending = ledger.list(Some(LedgerStatus::Pending)).await.unwrap();
            pending.is_empty().then_some(())
        })
        .await;
        let publisher = KafkaPublisher::new(&crate::kafka(), &ProducerSettings::default()).unwrap();
        let sink = DeadLetterSink::new(publisher, ledger, self.topics.clone());
        let markers: Vec<EventEnvelope> =
            reservations.iter().map(|r| self.marker_event(r)).collect();
        let cause = shared::Error::from(shared::domain::Refusal::InProgress);
        let mut channels = vec![ChannelKind::Telegram];
        if self.data_platform {
            channels.push(ChannelKind::DataPlatform);
        }
        for (marker, channel) in markers
            .iter()
            .flat_map(|m| channels.iter().map(move |c| (m, *c)))
        {
            let original = shared::fixtures::record_of(marker, &self.topics.payment_completed, 0);
            let letter = DeadLetter::new(original, &cause, 0, Utc::now()).on_channel(channel);
            sink.dead_letter(&letter, Disposition::Retry, Utc::now())
                .await
                .unwrap();
        }
        self.wait_for_markers(&markers).await;
    }

    async fn wait_for_markers(&self, markers: &[EventEnvelope]) {
        let mails: Vec<String> = markers
            .iter()
            .map(|m| m.payload["customer"]["mail"].as_str().unwrap().to_owned())
            .collect();
        eventually(SETTLE_TIMEOUT, "the markers told", || async {
            let told = self.sandbox.messages();
            mails
                .iter()
                .all(|mail| told.iter().any(|m| m.text.contains(mail.as_str())))
                .then_some(())
        })
        .await;
        if self.data_platform {
            eventually(
                SETTLE_TIMEOUT,
                "the markers on the data platform",
                || async {
                    let received = self.sandbox.platform_events();
                    markers
                        .iter()
                        .all(|marker| {
                            let id = marker.event_id.to_string();
                            received.iter().any(|e| e.event_id == id)
                        })
                        .then_some(())
                },
            )
            .await;
        }
    }
}
