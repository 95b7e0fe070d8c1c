//! The local stream source plays the relay's mapping as Lambda does, on a real
//! DynamoDB stream (moto) and a real SQS on-failure queue (moto): the filter,
//! bisecting on a function error, the retry and record-age limits, and what a
//! discarded batch leaves on the queue. The template's own (unbounded) limits
//! are held by the runner's unit tests; here they are set low to be seen.

use aws_sdk_dynamodb::types::AttributeValue;
use local_runner::http_api::Invoker;
use local_runner::stream_source::{self, FailureQueue, StreamSourceSettings};
use local_runner::template::StreamMapping;
use serde_json::{Value, json};
use shared::outbox::{DiscardCondition, StreamFailureRecord};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use testkit::{aws, eventually, provision};

const WAIT: Duration = Duration::from_secs(30);

/// One invocation's records: (event name, pk).
type Invocation = Vec<(String, String)>;

/// A function that fails whenever its batch holds the item `poison`, and keeps
/// every batch it was invoked with.
fn function(invocations: Arc<Mutex<Vec<Invocation>>>) -> Invoker {
    Arc::new(move |event: Value| {
        let invocations = invocations.clone();
        Box::pin(async move {
            let records: Invocation = event["Records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    let name = r["eventName"].as_str().unwrap().to_owned();
                    let pk = r["dynamodb"]["Keys"]["pk"]["S"]
                        .as_str()
                        .unwrap()
                        .to_owned();
                    (name, pk)
                })
                .collect();
            let poisoned = records.iter().any(|(_, pk)| pk == "poison");
            invocations.lock().unwrap().push(records);
            if poisoned {
                return Err(local_runner::Error::Invocation {
                    function: "outbox-relay".into(),
                    message: "the batch holds the poison item".into(),
                });
            }
            Ok(json!({"batchItemFailures": []}))
        })
    })
}

/// The stream source on `table` with `mapping`; its invocations and queue.
struct Source {
    invocations: Arc<Mutex<Vec<Invocation>>>,
    queue: FailureQueue,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), local_runner::Error>>,
}

impl Source {
    async fn start(aws: &aws_config::SdkConfig, table: &str, mapping: StreamMapping) -> Source {
        let queue =
            FailureQueue::create(aws_sdk_sqs::Client::new(aws), &format!("{table}-failures"))
                .await
                .unwrap();
        let invocations = Arc::default();
        let (stop, watcher) = tokio::sync::watch::channel(false);
        let settings = StreamSourceSettings {
            mapping,
            poll_interval: Duration::from_millis(50),
            retry_backoff: Duration::from_millis(100),
            ..StreamSourceSettings::relay(Some(queue.clone())).unwrap()
        };
        let task = tokio::spawn(stream_source::run(
            aws_sdk_dynamodb::Client::new(aws),
            aws_sdk_dynamodbstreams::Client::new(aws),
            table.to_owned(),
            settings,
            function(Arc::clone(&invocations)),
            watcher,
        ));
        Source {
            invocations,
            queue,
            stop,
            task,
        }
    }

    /// The pks the function took without failing, in order.
    fn delivered(&self) -> Vec<String> {
        self.invocations
            .lock()
            .unwrap()
            .iter()
            .filter(|batch| !batch.iter().any(|(_, pk)| pk == "poison"))
            .flat_map(|batch| batch.iter().map(|(_, pk)| pk.clone()))
            .collect()
    }

    /// Every record the function was invoked with.
    fn every_record(&self) -> Vec<(String, String)> {
        self.invocations.lock().unwrap().concat()
    }

    /// The failure records on the queue so far.
    async fn discarded(&self) -> Vec<StreamFailureRecord> {
        let out = self
            .queue
            .sqs
            .receive_message()
            .queue_url(&self.queue.url)
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .send()
            .await
            .unwrap();
        out.messages()
            .iter()
            .map(|m| serde_json::from_str(m.body().unwrap()).unwrap())
            .collect()
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

async fn put(dynamodb: &aws_sdk_dynamodb::Client, table: &str, pk: &str, version: u32) {
    dynamodb
        .put_item()
        .table_name(table)
        .item("pk", AttributeValue::S(pk.into()))
        .item("version", AttributeValue::N(version.to_string()))
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_record_is_bisected_out_discarded_at_the_retry_limit_and_the_rest_delivered_once()
{
    let aws = aws().await;
    let (tables, _) = provision(&aws, 1).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    for pk in ["a", "b", "poison", "c", "d"] {
        put(&dynamodb, &tables.outbox, pk, 1).await;
    }
    let mapping = StreamMapping {
        retry_attempts: Some(1),
        ..StreamMapping::relay().unwrap()
    };
    let source = Source::start(&aws, &tables.outbox, mapping).await;

    let discarded = eventually(
        WAIT,
        "the poison record's batch on the failure queue",
        || async {
            let found = source.discarded().await;
            (!found.is_empty()).then_some(found)
        },
    )
    .await;
    eventually(
        WAIT,
        "the records behind the poison one delivered",
        || async { (source.delivered().len() >= 4).then_some(()) },
    )
    .await;
    let delivered = source.delivered();
    source.stop().await;

    // Each once, in order: the first half, then the rest once the poison
    // record was split off.
    assert_eq!(delivered, ["a", "b", "c", "d"]);
    assert_eq!(discarded.len(), 1, "{discarded:?}");
    let failure = &discarded[0];
    assert_eq!(
        failure.request_context.condition,
        DiscardCondition::RetryAttemptsExhausted
    );
    // Alone after bisecting, invoked once and retried once (the limit).
    assert_eq!(failure.batch.batch_size, 1);
    assert_eq!(failure.request_context.approximate_invoke_count, 2);
    assert_eq!(
        failure.batch.start_sequence_number,
        failure.batch.end_sequence_number
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_record_failing_past_the_record_age_is_discarded_as_too_old_and_the_next_is_delivered() {
    let aws = aws().await;
    let (tables, _) = provision(&aws, 1).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    put(&dynamodb, &tables.outbox, "poison", 1).await;
    let mapping = StreamMapping {
        record_age: Some(Duration::from_secs(2)),
        ..StreamMapping::relay().unwrap()
    };
    let source = Source::start(&aws, &tables.outbox, mapping).await;

    let discarded = eventually(WAIT, "the too old record on the failure queue", || async {
        let found = source.discarded().await;
        (!found.is_empty()).then_some(found)
    })
    .await;
    put(&dynamodb, &tables.outbox, "fresh", 1).await;
    eventually(WAIT, "the record behind it delivered", || async {
        (source.delivered() == ["fresh"]).then_some(())
    })
    .await;
    source.stop().await;

    assert_eq!(discarded.len(), 1, "{discarded:?}");
    assert_eq!(
        discarded[0].request_context.condition,
        DiscardCondition::RecordAgeExceeded
    );
    assert_eq!(discarded[0].batch.batch_size, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_the_inserts_the_templates_filter_lets_through_reach_the_function() {
    let aws = aws().await;
    let (tables, _) = provision(&aws, 1).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    let source = Source::start(&aws, &tables.outbox, StreamMapping::relay().unwrap()).await;

    put(&dynamodb, &tables.outbox, "x", 1).await;
    put(&dynamodb, &tables.outbox, "x", 2).await; // MODIFY
    dynamodb
        .delete_item()
        .table_name(&tables.outbox)
        .key("pk", AttributeValue::S("x".into()))
        .send()
        .await
        .unwrap(); // REMOVE, as a TTL deletion is
    put(&dynamodb, &tables.outbox, "y", 1).await;
    eventually(WAIT, "the second insert delivered", || async {
        source
            .every_record()
            .iter()
            .any(|(_, pk)| pk == "y")
            .then_some(())
    })
    .await;
    let every_record = source.every_record();
    source.stop().await;

    assert_eq!(
        every_record,
        [
            ("INSERT".to_owned(), "x".to_owned()),
            ("INSERT".into(), "y".into())
        ]
    );
}
