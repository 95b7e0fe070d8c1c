//! The data platform's client against the sandbox's platform, over HTTP: the
//! contract's answers (taken, had already, refused one by one) and its
//! failures, each classified for the delivery path (retryable or not, and
//! whether the platform may have taken the batch).

use local_runner::notification_sandbox::{
    FailurePlan, NotificationSandbox, data_platform_settings,
};
use shared::channels::{DATA_PLATFORM, DataPlatformClient, DataPlatformSettings};
use shared::config::Secret;
use shared::data_platform::PlatformEvent;
use shared::domain::ReservationId;
use std::time::Duration;

async fn platform() -> (NotificationSandbox, DataPlatformSettings) {
    let sandbox = NotificationSandbox::default();
    let addr = sandbox.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    (sandbox, data_platform_settings(addr))
}

/// `n` sales as the platform is sent them.
fn sales(settings: &DataPlatformSettings, n: usize) -> Vec<PlatformEvent> {
    let key = settings.pseudonyms().unwrap();
    (0..n)
        .map(|i| {
            let envelope = shared::fixtures::payment_completed_envelope(
                ReservationId::random(),
                &format!("fan{i}@example.com"),
                150_000,
            );
            PlatformEvent::of(&envelope, &key).unwrap()
        })
        .collect()
}

fn ids(events: &[PlatformEvent]) -> Vec<String> {
    events.iter().map(|e| e.event_id.clone()).collect()
}

/// How a failed request is classified: (retryable, maybe taken, message).
fn classified(error: shared::Error) -> (bool, bool, String) {
    (
        error.is_retryable(),
        error.maybe_delivered(),
        shared::error_chain(&error),
    )
}

#[tokio::test]
async fn a_batch_is_taken_once_and_sending_it_again_is_answered_as_duplicates() {
    let (sandbox, settings) = platform().await;
    let client = settings.client().unwrap();
    let batch = sales(&settings, 3);

    let first = client.send(&batch).await.unwrap();
    assert_eq!(first.accepted, ids(&batch));
    let again = client.send(&batch).await.unwrap();
    assert!(again.accepted.is_empty(), "{again:?}");
    assert_eq!(again.duplicates, ids(&batch));

    let received = sandbox.platform_events();
    assert_eq!(received.len(), 3, "each event once");
    assert_eq!(sandbox.platform_duplicates(), ids(&batch));
    let sent = serde_json::to_string(&received).unwrap();
    assert!(!sent.contains("@example.com"), "no mail leaves: {sent}");
    assert!(received[0].event["payload"]["customerPseudonym"].is_string());
    // What a script reads of it.
    let listed: serde_json::Value =
        reqwest::get(format!("{}/sandbox/data-platform/events", settings.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(listed["events"].as_array().map(Vec::len), Some(3));
    assert_eq!(listed["duplicates"], 3);
    assert_eq!(listed["requests"], 2);
}

#[tokio::test]
async fn an_event_the_platform_refuses_is_named_and_the_others_are_taken() {
    let (sandbox, settings) = platform().await;
    let batch = sales(&settings, 3);
    sandbox.reject_events(&[batch[1].event_id.clone()], "unknown concert");

    let answer = settings.client().unwrap().send(&batch).await.unwrap();
    assert_eq!(
        answer.accepted,
        [batch[0].event_id.clone(), batch[2].event_id.clone()]
    );
    assert_eq!(
        answer.rejection_of(&batch[1].event_id),
        Some("unknown concert")
    );
    assert_eq!(sandbox.platform_events().len(), 2);
}

#[tokio::test]
async fn an_outage_or_a_throttle_is_retried_and_said_to_have_taken_nothing() {
    let (sandbox, settings) = platform().await;
    let client = settings.client().unwrap();
    let batch = sales(&settings, 2);

    sandbox.fail_next(FailurePlan::fail(1, 503).on(DATA_PLATFORM));
    let (retryable, maybe, text) = classified(client.send(&batch).await.unwrap_err());
    assert!(retryable && !maybe, "{text}");
    assert!(
        text.contains("data-platform") && text.contains("503"),
        "{text}"
    );

    sandbox.fail_next(FailurePlan {
        retry_after: Some(2),
        ..FailurePlan::fail(1, 429).on(DATA_PLATFORM)
    });
    let error = client.send(&batch).await.unwrap_err();
    assert_eq!(error.retry_after(), Some(chrono::Duration::seconds(2)));
    assert!(sandbox.platform_events().is_empty(), "nothing was taken");
}

#[tokio::test]
async fn a_lost_answer_may_have_been_taken_and_is_retried_safely() {
    let (sandbox, mut settings) = platform().await;
    settings.timeout = Duration::from_millis(300);
    let client = settings.client().unwrap();
    let batch = sales(&settings, 2);

    sandbox.fail_next(FailurePlan::answer_lost(1, 2_000).on(DATA_PLATFORM));
    let (retryable, maybe, text) = classified(client.send(&batch).await.unwrap_err());
    assert!(retryable && maybe, "{text}");
    // The retry finds them taken: delivered once, whatever the answer said.
    let retried = client.send(&batch).await.unwrap();
    assert_eq!(retried.duplicates, ids(&batch));
    assert_eq!(sandbox.platform_events().len(), 2);
}

#[tokio::test]
async fn a_refused_key_or_request_is_not_retried_and_says_what_to_check() {
    let (sandbox, settings) = platform().await;
    let batch = sales(&settings, 1);
    let wrong = DataPlatformClient::new(&settings.url, &Secret::new("wrong-key"), settings.timeout)
        .unwrap();
    let (retryable, _, text) = classified(wrong.send(&batch).await.unwrap_err());
    assert!(!retryable, "{text}");
    assert!(text.contains("DATA_PLATFORM_API_KEY"), "{text}");

    sandbox.fail_next(FailurePlan::fail(1, 422).on(DATA_PLATFORM));
    let (retryable, maybe, _) =
        classified(settings.client().unwrap().send(&batch).await.unwrap_err());
    assert!(!retryable && !maybe);
    assert!(sandbox.platform_events().is_empty());
}

#[test]
fn the_settings_refuse_a_short_pseudonym_key_and_a_url_that_is_not_http() {
    let settings = DataPlatformSettings {
        pseudonym_key: Secret::new("short"),
        ..data_platform_settings("127.0.0.1:1".parse().unwrap())
    };
    let error = settings.pseudonyms().unwrap_err().to_string();
    assert!(error.contains("DATA_PLATFORM_PSEUDONYM_KEY"), "{error}");
    let error = DataPlatformClient::new("ftp://x", &Secret::new("k"), Duration::from_secs(1))
        .unwrap_err()
        .to_string();
    assert!(error.contains("DATA_PLATFORM_URL"), "{error}");
}
