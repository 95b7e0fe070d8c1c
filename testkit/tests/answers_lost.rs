//! Sends whose answer is lost, on the real stack: the sandbox delivers the
//! message and then times out (or answers a gateway's 504), so the sender
//! cannot know. Under a channel's `retry` policy the customer gets it again (at
//! least once); under `park` never again by itself (at most once), until an
//! operator re-drives it.

use local_runner::notification_sandbox::{
    DISCORD, FailurePlan, NotificationSandbox, TELEGRAM, channel_settings,
};
use shared::dead_letter::{self, DeadLetter};
use shared::delivery::{DeadLetterSink, reopen_parked_send, send_key};
use shared::delivery::{Destination, Letter};
use shared::domain::ReservationId;
use shared::dynamodb::{DynamoFailureLedger, DynamoIdempotencyStore};
use shared::kafka::{KafkaPublisher, ProducerSettings, decoded_message};
use shared::ledger::LedgerStatus;
use shared::notification::{AmbiguousSendPolicy, ChannelKind, ChannelRoutes};
use std::time::Duration as StdDuration;
use testkit::{Options, TestPipeline, consume, eventually, header, kafka, seed};

fn message() -> Letter {
    shared::fixtures::letter_of(&shared::fixtures::payment_completed_envelope(
        ReservationId::random(),
        "a@example.com",
        1,
    ))
}

/// A send's error: (retryable, maybe delivered, text).
fn failure(error: shared::Error) -> (bool, bool, String) {
    (
        error.is_retryable(),
        error.maybe_delivered(),
        shared::error_chain(&error),
    )
}

#[tokio::test]
async fn both_channels_tell_a_send_whose_answer_was_lost_from_one_that_never_arrived() {
    let sandbox = NotificationSandbox::default();
    let addr = sandbox.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut settings = channel_settings(addr, ChannelRoutes::default());
    let timeout = StdDuration::from_millis(400);
    let telegram = settings.telegram.as_mut().unwrap();
    telegram.timeout = timeout;
    let telegram = telegram.channel().unwrap();
    let discord = settings.discord.as_mut().unwrap();
    discord.timeout = timeout;
    let discord = discord.channel().unwrap();

    // Delivered, then no answer within the client's timeout.
    sandbox.fail_next(FailurePlan::answer_lost(2, 1_500));
    let (retryable, maybe, text) = failure(telegram.send(&message()).await.unwrap_err());
    assert!(retryable && maybe, "{text}");
    assert!(text.contains("timed out waiting for the answer"), "{text}");
    let (retryable, maybe, text) = failure(discord.send(&message()).await.unwrap_err());
    assert!(retryable && maybe, "{text}");
    for channel in [TELEGRAM, DISCORD] {
        let received = sandbox.messages_on(channel);
        assert_eq!(received.len(), 1, "{channel}: delivered all the same");
        assert!(received[0].answer_lost, "{channel}");
    }

    // A gateway's 504 may hide a delivery too; an API's own 500 does not.
    sandbox.fail_next(FailurePlan::answer_lost(1, 0));
    let (_, maybe, text) = failure(telegram.send(&message()).await.unwrap_err());
    assert!(maybe && text.contains("HTTP 504"), "{text}");
    sandbox.fail_next(FailurePlan::fail(1, 500));
    let (retryable, maybe, text) = failure(telegram.send(&message()).await.unwrap_err());
    assert!(retryable && !maybe, "{text}");
    assert_eq!(sandbox.messages_on(TELEGRAM).len(), 2);
}

#[tokio::test]
async fn a_channel_that_cannot_be_reached_never_delivered() {
    // A port nobody listens on: bind one, then close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let settings = channel_settings(
        format!("127.0.0.1:{port}").parse().unwrap(),
        ChannelRoutes::default(),
    );
    let telegram = settings.telegram.unwrap().channel().unwrap();
    let (retryable, maybe, text) = failure(telegram.send(&message()).await.unwrap_err());
    assert!(retryable && !maybe, "{text}");
    assert!(text.contains("could not connect"), "{text}");
}

/// A pipeline whose dlq-retry runs every second, both channels doing `policy`
/// with sends whose answer was lost, and every Kafka batch delivered twice.
async fn pipeline(policy: AmbiguousSendPolicy) -> TestPipeline {
    TestPipeline::start(Options {
        delivery_faults: local_runner::kafka_source::DeliveryFaults {
            duplicate: true,
            ..Default::default()
        },
        on_ambiguous_send: policy,
        ..Options::retrying_at_once()
    })
    .await
}

/// One customer pays; answers the event id of their payment.
async fn one_payment(p: &TestPipeline) -> String {
    let s = seed(&p.repo, 1, 1, 100_000, 50_000).await;
    p.hold_and_pay(&s.users[0].jwt, s.seats[0].id).await;
    let published = consume(
        &kafka().bootstrap_servers,
        &p.topics.payment_completed,
        1,
        StdDuration::from_secs(30),
    )
    .await;
    header(&published[0], "event-id").expect("the event's id")
}

fn ledger(p: &TestPipeline) -> DynamoFailureLedger {
    DynamoFailureLedger::new(p.dynamodb.clone(), p.tables.failed_messages.clone())
}

/// Waits for the Telegram ledger row of `event_id` to reach `status`.
async fn row_reaches(p: &TestPipeline, event_id: &str, status: LedgerStatus) {
    let ledger = ledger(p);
    let what = format!("the ledger row of {event_id} {}", status.name());
    eventually(StdDuration::from_secs(30), &what, || async {
        let row = ledger
            .get(event_id, Some(ChannelKind::Telegram))
            .await
            .unwrap();
        row.filter(|r| r.status == status).map(|_| ())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_the_retry_policy_a_send_whose_answer_was_lost_reaches_the_customer_again() {
    let p = pipeline(AmbiguousSendPolicy::Retry).await;
    p.sandbox.fail_next(FailurePlan::answer_lost(1, 100));
    let event_id = one_payment(&p).await;

    row_reaches(&p, &event_id, LedgerStatus::Processed).await;
    p.wait_for_messages(2, StdDuration::from_secs(30)).await;
    let received = p.messages();
    assert_eq!(received.len(), 2, "at least once: {received:?}");
    assert!(received[0].answer_lost && !received[1].answer_lost);
    assert_eq!(received[0].text, received[1].text);
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_the_park_policy_a_send_whose_answer_was_lost_is_parked_until_an_operator_redrives_it()
 {
    let p = pipeline(AmbiguousSendPolicy::Park).await;
    p.sandbox.fail_next(FailurePlan::answer_lost(1, 100));
    let event_id = one_payment(&p).await;

    row_reaches(&p, &event_id, LedgerStatus::Failed).await;
    let row = ledger(&p)
        .get(&event_id, Some(ChannelKind::Telegram))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.error_kind, "shared::Error::AmbiguousSend");
    assert!(row.last_error.contains("may have reached the customer"));
    // Its batch is delivered twice: the second delivery finds the send parked
    // and parks it again instead of sending.
    let parked = consume(
        &kafka().bootstrap_servers,
        &p.topics.payment_completed_failed,
        2,
        StdDuration::from_secs(30),
    )
    .await;
    for letter in &parked {
        assert_eq!(header(letter, "event-id"), Some(event_id.clone()));
    }
    let again = header(&parked[1], dead_letter::EXCEPTION_MESSAGE).unwrap();
    assert!(again.contains("it was parked earlier"), "{again}");
    assert_eq!(p.messages().len(), 1, "at most once");
    let keys = DynamoIdempotencyStore::new(p.dynamodb.clone(), p.tables.idempotency.clone());
    let key = send_key(ChannelKind::Telegram, &event_id);
    assert!(
        keys.get(&key).await.unwrap().is_some(),
        "the send stays shut"
    );

    // The operator checked the chat and found nothing: re-drive it, as
    // `ops failed redrive <event-id>` does.
    let letter = DeadLetter::from_dlq_record(&decoded_message(&parked[0])).unwrap();
    assert_eq!(letter.channel, Some(ChannelKind::Telegram));
    assert!(reopen_parked_send(&keys, &letter).await.unwrap());
    let sink = DeadLetterSink::new(
        KafkaPublisher::new(&kafka(), &ProducerSettings::default()).unwrap(),
        ledger(&p),
        p.topics.clone(),
    );
    sink.redrive(&letter, chrono::Utc::now()).await.unwrap();
    row_reaches(&p, &event_id, LedgerStatus::Processed).await;
    let received = p.messages();
    assert_eq!(received.len(), 2, "sent again on the operator's word");
    assert!(!received[1].answer_lost);
    assert_eq!(
        header(&parked[0], dead_letter::NOTIFICATION_CHANNEL).as_deref(),
        Some("telegram")
    );
    p.stop().await;
}
