//! The functions' binaries as Lambda runs them: their template ids, and the
//! environment Lambda and the local stack give them.

use crate::kafka;
use shared::config::{TableNames, TopicNames};

/// (template logical id, binary)
pub const FUNCTIONS: [(&str, &str); 7] = [
    ("ReservationFunction", "reservation"),
    ("PaymentFunction", "payment"),
    ("OutboxRelayFunction", "outbox-relay"),
    ("NotifierFunction", "notifier"),
    ("DlqRetryFunction", "dlq-retry"),
    ("SeatExpirationFunction", "seat-expiration"),
    FEED,
];

/// The data-platform feed (template logical id, binary), the last of [`FUNCTIONS`].
pub const FEED: (&str, &str) = ("DataPlatformFeedFunction", "data-platform-feed");

/// What every function gets: Lambda's own variables, the local stack's
/// endpoints, the tables and topics of this test.
pub fn lambda_env(
    runtime_api: &str,
    name: &str,
    tables: &TableNames,
    topics: &TopicNames,
) -> Vec<(String, String)> {
    let lambda = [
        ("AWS_LAMBDA_RUNTIME_API", runtime_api.to_owned()),
        ("AWS_LAMBDA_FUNCTION_NAME", name.to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".into()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}")),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "local".into()),
        ("AWS_LAMBDA_LOG_FORMAT", "JSON".into()),
    ];
    lambda
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .chain(stack_env(tables, topics))
        .collect()
}

/// The local stack's endpoints and credentials, the tables and topics of this
/// test: what a function or `ops` needs to work on them.
pub fn stack_env(tables: &TableNames, topics: &TopicNames) -> Vec<(String, String)> {
    [
        (
            "AWS_ENDPOINT_URL",
            std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "http://127.0.0.1:4566".into()),
        ),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("KAFKA_BOOTSTRAP_SERVERS", kafka().bootstrap_servers),
        ("TICKETING_TABLE", tables.ticketing.clone()),
        ("OUTBOX_TABLE", tables.outbox.clone()),
        ("IDEMPOTENCY_TABLE", tables.idempotency.clone()),
        ("FAILED_MESSAGES_TABLE", tables.failed_messages.clone()),
        ("TOPIC_PAYMENT_COMPLETED", topics.payment_completed.clone()),
        (
            "TOPIC_PAYMENT_COMPLETED_DLQ",
            topics.payment_completed_dlq.clone(),
        ),
        (
            "TOPIC_PAYMENT_COMPLETED_FAILED",
            topics.payment_completed_failed.clone(),
        ),
        ("TOPIC_SEAT_HOLD_EXPIRED", topics.seat_hold_expired.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}
