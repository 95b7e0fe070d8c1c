//! In-memory stand-ins for the ports, for unit tests of the functions' logic
//! (feature `fixtures`; never in a function's build). The adapters themselves
//! are tested against real services in `testkit/tests/`.

use crate::delivery::Destination;
use crate::ledger::{FailureLedger, LedgerFailure};
use crate::notification::{AmbiguousSendPolicy, ChannelKind, Notification};
use crate::ports::{EventPublisher, OutboundRecord};
use crate::{Error, InfraError};
use chrono::{DateTime, Utc};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How a fake channel fails: retryable or not, with a 429's `retry_after`, or
/// after delivering (the answer lost).
#[derive(Clone, Copy, Debug)]
struct FakeFailure {
    times: usize,
    retryable: bool,
    retry_after: Option<Duration>,
    answer_lost: bool,
}

/// A channel that records what it sends, optionally slow, optionally failing
/// its first sends; it counts how many sends ran at once.
#[derive(Debug)]
pub struct FakeChannel {
    kind: ChannelKind,
    failure: Option<FakeFailure>,
    latency: Duration,
    attempts: AtomicUsize,
    sent: Mutex<Vec<Notification>>,
    /// Sends running now, and the most that ran at once (shared between
    /// channels made with [`FakeChannel::counted_with`]).
    in_flight: Arc<AtomicUsize>,
    most_in_flight: Arc<AtomicUsize>,
    ambiguous: AmbiguousSendPolicy,
}

impl FakeChannel {
    pub fn new(kind: ChannelKind) -> Self {
        FakeChannel {
            kind,
            failure: None,
            latency: Duration::ZERO,
            attempts: AtomicUsize::new(0),
            sent: Mutex::default(),
            in_flight: Arc::default(),
            most_in_flight: Arc::default(),
            ambiguous: AmbiguousSendPolicy::Retry,
        }
    }

    pub fn telegram() -> Self {
        Self::new(ChannelKind::Telegram)
    }

    pub fn discord() -> Self {
        Self::new(ChannelKind::Discord)
    }

    /// Fails its first `times` sends (`usize::MAX`: every send), retryable or
    /// not, asking to wait `retry_after` if given (as a 429 does).
    pub fn failing_for(self, times: usize, retryable: bool, retry_after: Option<Duration>) -> Self {
        FakeChannel {
            failure: Some(FakeFailure {
                times,
                retryable,
                retry_after,
                answer_lost: false,
            }),
            ..self
        }
    }

    /// Delivers its first `times` sends but fails them as a timeout would:
    /// the customer has the message, the caller does not know.
    pub fn losing_answers(self, times: usize) -> Self {
        FakeChannel {
            failure: Some(FakeFailure {
                times,
                retryable: true,
                retry_after: None,
                answer_lost: true,
            }),
            ..self
        }
    }

    /// Does `policy` with a send whose answer was lost.
    pub fn on_ambiguous(self, policy: AmbiguousSendPolicy) -> Self {
        FakeChannel {
            ambiguous: policy,
            ..self
        }
    }

    /// Its sends counted in flight together with `other`'s: `most_in_flight`
    /// then tells whether the two channels sent at the same time.
    pub fn counted_with(self, other: &FakeChannel) -> Self {
        FakeChannel {
            in_flight: other.in_flight.clone(),
            most_in_flight: other.most_in_flight.clone(),
            ..self
        }
    }

    /// Each send takes `latency`.
    pub fn with_latency(self, latency: Duration) -> Self {
        FakeChannel { latency, ..self }
    }

    /// The messages sent, in the order they were.
    pub fn sent(&self) -> Vec<Notification> {
        lock(&self.sent).clone()
    }

    /// The most sends that ran at the same time.
    pub fn most_in_flight(&self) -> usize {
        self.most_in_flight.load(Ordering::SeqCst)
    }
}

impl Destination for FakeChannel {
    fn kind(&self) -> ChannelKind {
        self.kind
    }

    async fn send(&self, letter: &crate::delivery::Letter) -> Result<(), Error> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.latency).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let attempt = self.attempts.fetch_add(1, Ordering::SeqCst);
        let failure = self.failure.filter(|f| attempt < f.times);
        if failure.is_none_or(|f| f.answer_lost) {
            lock(&self.sent).push(letter.notification.clone());
        }
        match failure {
            None => Ok(()),
            Some(failure) => Err(Error::from(InfraError::Channel {
                channel: self.kind.name(),
                retryable: failure.retryable,
                maybe_delivered: failure.answer_lost,
                retry_after: failure.retry_after,
                message: "the fake channel failed as told".into(),
                source: None,
            })),
        }
    }

    fn on_ambiguous_send(&self) -> AmbiguousSendPolicy {
        self.ambiguous
    }
}

/// A publisher that keeps what it was given, or refuses everything as a
/// broker that cannot be reached.
#[derive(Debug, Default)]
pub struct FakePublisher {
    broken: bool,
    published: Mutex<Vec<OutboundRecord>>,
}

impl FakePublisher {
    pub fn broken_if(broken: bool) -> Self {
        FakePublisher {
            broken,
            ..Default::default()
        }
    }

    pub fn published(&self) -> Vec<OutboundRecord> {
        lock(&self.published).clone()
    }
}

impl EventPublisher for FakePublisher {
    async fn publish_all(&self, records: &[OutboundRecord]) -> Vec<Result<(), Error>> {
        records
            .iter()
            .map(|r| {
                if self.broken {
                    return Err(Error::from(InfraError::Publish {
                        event_id: r.event_id.clone(),
                        topic: r.topic.clone(),
                        source: "broker unreachable".into(),
                    }));
                }
                lock(&self.published).push(r.clone());
                Ok(())
            })
            .collect()
    }
}

/// A ledger that keeps what it was told: failures, and the (event id,
/// channel) pairs marked processed or re-driven.
#[derive(Debug, Default)]
pub struct FakeLedger {
    failures: Mutex<Vec<LedgerFailure>>,
    processed: Mutex<Vec<(String, Option<ChannelKind>)>>,
    redriven: Mutex<Vec<(String, Option<ChannelKind>)>>,
}

impl FakeLedger {
    pub fn failures(&self) -> Vec<LedgerFailure> {
        lock(&self.failures).clone()
    }

    pub fn processed(&self) -> Vec<(String, Option<ChannelKind>)> {
        lock(&self.processed).clone()
    }

    pub fn redriven(&self) -> Vec<(String, Option<ChannelKind>)> {
        lock(&self.redriven).clone()
    }
}

impl FailureLedger for FakeLedger {
    async fn record_failure(&self, failure: &LedgerFailure) -> Result<(), Error> {
        lock(&self.failures).push(failure.clone());
        Ok(())
    }

    async fn mark_processed(
        &self,
        event_id: &str,
        channel: Option<ChannelKind>,
        _: DateTime<Utc>,
    ) -> Result<(), Error> {
        lock(&self.processed).push((event_id.to_owned(), channel));
        Ok(())
    }

    async fn mark_redriven(
        &self,
        event_id: &str,
        channel: Option<ChannelKind>,
        _: DateTime<Utc>,
    ) -> Result<(), Error> {
        lock(&self.redriven).push((event_id.to_owned(), channel));
        Ok(())
    }
}

/// The log lines of some work, as the local runner prints them: each with the
/// fields of the spans it was written in. For tests that check which ids a line
/// of some work carries.
///
/// One process-wide subscriber writes every line, to the buffer of the thread
/// that wrote it (`start`) or to the process's (`global`). Swapping scoped
/// subscribers per test instead races with tracing's callsite interest cache:
/// a span first hit by a test without one could stay disabled for the test
/// that captures.
#[derive(Clone, Debug, Default)]
pub struct CapturedLogs {
    buffer: Arc<Mutex<Vec<u8>>>,
}

type Buffer = Arc<Mutex<Vec<u8>>>;

thread_local! {
    static THREAD_BUFFER: std::cell::RefCell<Option<Buffer>> = const { std::cell::RefCell::new(None) };
}

/// Where lines of threads without their own buffer go, once `global` was called.
static PROCESS_BUFFER: Mutex<Option<Buffer>> = Mutex::new(None);

/// Writes a line to the buffer its thread or the process captures into, if any.
struct RoutedWriter;

impl std::io::Write for RoutedWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let buffer = THREAD_BUFFER
            .with(|b| b.borrow().clone())
            .or_else(|| lock(&PROCESS_BUFFER).clone());
        if let Some(buffer) = buffer {
            lock(&buffer).extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the routing subscriber once per process. Panics when another
/// subscriber was set first: nothing could be captured.
fn install_router() {
    static INSTALLED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    INSTALLED.get_or_init(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(|| RoutedWriter)
            .with_ansi(false)
            .without_time()
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other log subscriber is set in a test that captures logs");
    });
}

/// Captures this thread's lines until dropped.
pub struct CaptureGuard(());

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        THREAD_BUFFER.with(|b| b.borrow_mut().take());
    }
}

impl CapturedLogs {
    /// Captures this thread's lines until the guard is dropped (a
    /// `#[tokio::test]` runs on one thread).
    pub fn start() -> (CapturedLogs, CaptureGuard) {
        install_router();
        let logs = CapturedLogs::default();
        THREAD_BUFFER.with(|b| *b.borrow_mut() = Some(logs.buffer.clone()));
        (logs, CaptureGuard(()))
    }

    /// Captures the lines of every thread without its own capture, for the
    /// rest of the process (an end-to-end test's pipeline runs on many).
    pub fn global() -> CapturedLogs {
        install_router();
        let logs = CapturedLogs::default();
        *lock(&PROCESS_BUFFER) = Some(logs.buffer.clone());
        logs
    }

    pub fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&lock(&self.buffer))
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The first line that contains `text`; panics with every line if none does.
    pub fn line_with(&self, text: &str) -> String {
        let lines = self.lines();
        lines
            .iter()
            .find(|l| l.contains(text))
            .cloned()
            .unwrap_or_else(|| panic!("no log line contains {text:?}; the lines: {lines:#?}"))
    }
}
