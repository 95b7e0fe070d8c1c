//! The local runner does on a laptop what AWS does around the functions:
//!
//! - [`http_api`]: serves the HTTP API on 127.0.0.1:3000 as API Gateway HTTP API
//!   (payload format 2.0) events, like `sam local start-api`;
//! - [`stream_source`]: polls the outbox table's DynamoDB stream and invokes the
//!   relay with Lambda's DynamoDB event JSON, playing the relay's mapping as
//!   [`template`] reads it from template.yaml (batching, filter, item failures,
//!   bisecting, retry and age limits, the on-failure queue);
//! - [`kafka_source`]: consumes Kafka in a consumer group and invokes the notifier
//!   with Lambda's self-managed Kafka event JSON, committing offsets only after
//!   the invocation succeeded;
//! - [`runtime_api`]: a Lambda Runtime API, to run a function's real `bootstrap`
//!   binary with an event;
//! - [`notification_sandbox`]: a Telegram-Bot-API- and Discord-webhook-compatible
//!   server that records every message and can be told to fail.
//!
//! Functions run in this process, but every invocation goes through JSON exactly
//! as the Lambda runtime would hand it to them.

pub mod http_api;
pub mod invoke;
pub mod kafka_source;
pub mod notification_sandbox;
pub mod pipeline;
pub mod runtime_api;
pub mod stream_source;
pub mod template;

pub use pipeline::{Pipeline, PipelineConfig};

/// What can go wrong running the local pipeline.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("function {function} failed: {message}")]
    Invocation { function: String, message: String },
    #[error("function {function} did not answer within {seconds} s")]
    Timeout { function: String, seconds: u64 },
    #[error("the local runner is misconfigured")]
    Config(#[from] shared::config::ConfigError),
    #[error("a function cannot start")]
    Startup(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot encode the event a function is invoked with")]
    Encode(#[from] serde_json::Error),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("DynamoDB Streams call {operation} failed: {message}")]
    Streams {
        operation: &'static str,
        message: String,
    },
    #[error("template.yaml's {place} cannot be played locally: {reason}")]
    Template { place: String, reason: String },
    #[error("SQS call {operation} on the relay's on-failure queue failed: {message}")]
    FailureQueue {
        operation: &'static str,
        message: String,
    },
    #[error("Kafka consumer failed")]
    Kafka(#[source] rdkafka::error::KafkaError),
    #[error(transparent)]
    Domain(#[from] shared::Error),
}
