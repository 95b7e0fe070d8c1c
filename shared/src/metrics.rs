//! Business metrics as CloudWatch Embedded Metric Format (EMF) log lines.
//!
//! Code counts through [`count`] and [`observe_latency_ms`] (the `metrics` facade), and
//! every value is labelled with the function whose invocation it belongs to
//! (the `function` dimension, from [`in_function`]) and a few low-cardinality
//! dimensions (channel, event type, outcome; never an id). The recorder is
//! `metrics_cloudwatch_embedded`'s: it sums counters per label set, and
//! [`Emitter::flush`] writes one EMF document per label set to stdout, where
//! Lambda's log group turns them into metrics. Each function flushes once per
//! invocation ([`invoked`]), and so does the local runner, whose log then
//! carries the same documents.
//!
//! Why this crate and not `metrique`: the counts come from places that share
//! one path (the delivery module serves the notifier, dlq-retry and re-drives),
//! and a facade lets them count without an entry struct threaded through every
//! call; per-invocation sums per label set are exactly what the alarms read.

use crate::config::{ConfigError, Vars};
use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// Where the metrics go unless `METRICS_NAMESPACE` says otherwise.
pub const DEFAULT_NAMESPACE: &str = "Ticketing";

/// The dimension every metric carries: the function it was counted in.
pub const FUNCTION: &str = "function";

tokio::task_local! {
    static CURRENT_FUNCTION: &'static str;
}

/// The process's EMF recorder (there is one per process: `metrics` has one
/// global recorder).
pub struct Emitter {
    collector: &'static metrics_cloudwatch_embedded::Collector,
    /// The function named when nothing is running in [`in_function`].
    default_function: &'static str,
}

static EMITTER: OnceLock<Emitter> = OnceLock::new();

/// A test reads the metrics ([`Capture`]): invocations leave them for it.
static CAPTURING: AtomicBool = AtomicBool::new(false);

/// Installs the recorder for this process, namespace `METRICS_NAMESPACE`
/// (`Ticketing` by default), counting for `function` outside any
/// [`in_function`] scope. Installing again answers the emitter already there.
pub fn install(vars: &Vars, function: &'static str) -> Result<&'static Emitter, ConfigError> {
    if let Some(emitter) = EMITTER.get() {
        return Ok(emitter);
    }
    let namespace = vars.or_default("METRICS_NAMESPACE", DEFAULT_NAMESPACE);
    let collector = metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace(namespace)
        .init()
        .map_err(|e| ConfigError::setup("install the metrics recorder", e))?;
    metrics::describe_histogram!(LATENCY, metrics::Unit::Milliseconds, "request latency");
    Ok(EMITTER.get_or_init(|| Emitter {
        collector,
        default_function: function,
    }))
}

/// The installed emitter, if any (nothing is recorded without one).
pub fn emitter() -> Option<&'static Emitter> {
    EMITTER.get()
}

impl Emitter {
    /// Writes what was counted since the last flush, one EMF document per
    /// label set, each with the invocation's `RequestId`.
    pub fn flush(&self, request_id: &str, out: impl std::io::Write) {
        self.collector.set_property("RequestId", request_id);
        if let Err(e) = self.collector.flush(out) {
            tracing::warn!(error = %e, "could not write the invocation's metrics");
        }
    }

    fn function(&self) -> &'static str {
        CURRENT_FUNCTION
            .try_with(|f| *f)
            .unwrap_or(self.default_function)
    }
}

/// Runs `work` as an invocation of `function`: what it counts carries that
/// function's name (the local runner runs every function in one process).
pub async fn in_function<T>(function: &'static str, work: impl Future<Output = T>) -> T {
    CURRENT_FUNCTION.scope(function, work).await
}

/// Runs one invocation of `function` and flushes its metrics after it,
/// counting a cold start on the process's first invocation of it.
pub async fn invoked<T>(
    function: &'static str,
    request_id: String,
    work: impl Future<Output = T>,
) -> T {
    // Boxed: a handler's future is deep already, and this nests it twice more.
    let work = Box::pin(work);
    let answer = in_function(function, async {
        count_cold_start(function);
        work.await
    })
    .await;
    if let Some(emitter) = emitter().filter(|_| !CAPTURING.load(Ordering::SeqCst)) {
        emitter.flush(&request_id, std::io::stdout().lock());
    }
    answer
}

/// `ColdStart` once per function and process.
fn count_cold_start(function: &'static str) {
    static STARTED: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut started = STARTED.lock().unwrap_or_else(|p| p.into_inner());
    if !started.contains(&function) {
        started.push(function);
        count("ColdStart", &[], 1);
    }
}

/// The labels of a value: the current function, then `dimensions`.
fn labels(dimensions: &[(&'static str, &'static str)]) -> Vec<metrics::Label> {
    let function = emitter().map_or("unknown", Emitter::function);
    std::iter::once((FUNCTION, function))
        .chain(dimensions.iter().copied())
        .map(|(key, value)| metrics::Label::from_static_parts(key, value))
        .collect()
}

/// Adds `n` to the counter `metric` with `dimensions` (and the function).
pub fn count(metric: &'static str, dimensions: &[(&'static str, &'static str)], n: u64) {
    if n > 0 && emitter().is_some() {
        metrics::counter!(metric, labels(dimensions)).increment(n);
    }
}

/// Adds each `(outcome, n)` to the counter `metric` by `outcome`: what one
/// batch or run did.
pub fn count_outcomes(metric: &'static str, outcomes: &[(&'static str, u64)]) {
    for (outcome, n) in outcomes {
        count(metric, &[("outcome", outcome)], *n);
    }
}

/// The distribution of request latencies, in milliseconds (its unit is
/// declared once, when the recorder is installed).
pub const LATENCY: &str = "Latency";

/// Records `millis` in the [`LATENCY`] distribution.
pub fn observe_latency_ms(dimensions: &[(&'static str, &'static str)], millis: f64) {
    if emitter().is_some() {
        metrics::histogram!(LATENCY, labels(dimensions)).record(millis);
    }
}

/// Records `value` in the `metric` distribution (a count, such as a batch size).
pub fn observe(metric: &'static str, dimensions: &[(&'static str, &'static str)], value: f64) {
    if emitter().is_some() {
        metrics::histogram!(metric, labels(dimensions)).record(value);
    }
}

/// A test's view of the process's metrics: it holds every other capture in
/// the process off while it lives, and reads what was counted as EMF
/// documents. Put tests that use it in a test binary of their own: a test
/// that does not take it can still count into the same process.
#[cfg(feature = "fixtures")]
pub struct Capture {
    emitter: &'static Emitter,
    /// Every document flushed so far.
    documents: std::sync::Mutex<Vec<serde_json::Value>>,
    _exclusive: tokio::sync::MutexGuard<'static, ()>,
}

#[cfg(feature = "fixtures")]
impl Capture {
    /// Installs the recorder if needed, waits for other captures to finish,
    /// and forgets what was counted before.
    pub async fn start() -> Capture {
        static EXCLUSIVE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let exclusive = EXCLUSIVE.lock().await;
        let emitter = install(&Vars::none(), "test").expect("the metrics recorder installs");
        emitter.flush("before", std::io::sink());
        CAPTURING.store(true, Ordering::SeqCst);
        Capture {
            emitter,
            documents: std::sync::Mutex::default(),
            _exclusive: exclusive,
        }
    }

    /// The EMF documents of what was counted since the capture started (one
    /// flush per call: a label set counted between two calls has a document
    /// for each).
    pub fn documents(&self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        self.emitter.flush("captured", &mut out);
        let mut documents = self.documents.lock().unwrap_or_else(|p| p.into_inner());
        documents.extend(
            String::from_utf8_lossy(&out)
                .lines()
                .map(|line| serde_json::from_str(line).expect("an EMF document is JSON")),
        );
        documents.clone()
    }
}

#[cfg(feature = "fixtures")]
impl Drop for Capture {
    fn drop(&mut self) {
        CAPTURING.store(false, Ordering::SeqCst);
    }
}

/// One metric of one dimension set, summed over EMF documents as CloudWatch
/// sums them.
#[derive(Clone, Debug, PartialEq)]
pub struct Total {
    pub metric: String,
    /// Name and value of each dimension, in the order the documents declare them.
    pub dimensions: Vec<(String, String)>,
    /// A counter's sum, or every value of a distribution.
    pub values: Vec<f64>,
    pub distribution: bool,
}

impl Total {
    /// The value of dimension `name`, if it has it.
    pub fn dimension(&self, name: &str) -> Option<&str> {
        self.dimensions
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// True when its dimensions are exactly `dimensions`, in any order.
    pub fn has_dimensions(&self, dimensions: &[(&str, &str)]) -> bool {
        self.dimensions.len() == dimensions.len()
            && dimensions
                .iter()
                .all(|(k, v)| self.dimension(k) == Some(*v))
    }
}

/// The totals of EMF `documents` (anything else skipped), one per metric and
/// dimension set, sorted by metric and dimensions.
pub fn totals<'a>(documents: impl IntoIterator<Item = &'a serde_json::Value>) -> Vec<Total> {
    let mut totals: std::collections::BTreeMap<(String, Vec<(String, String)>), Total> =
        std::collections::BTreeMap::new();
    for doc in documents {
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        let dimensions: Vec<(String, String)> = directive["Dimensions"][0]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|name| name.as_str())
            .map(|name| (name.to_owned(), doc[name].as_str().unwrap_or("").to_owned()))
            .collect();
        let names = directive["Metrics"].as_array().into_iter().flatten();
        for metric in names.filter_map(|m| m["Name"].as_str()) {
            let value = &doc[metric];
            let key = (metric.to_owned(), dimensions.clone());
            let total = totals.entry(key).or_insert_with(|| Total {
                metric: metric.to_owned(),
                dimensions: dimensions.clone(),
                values: Vec::new(),
                distribution: value.is_array(),
            });
            match value {
                serde_json::Value::Array(values) => total
                    .values
                    .extend(values.iter().filter_map(|v| v.as_f64())),
                single => match (total.values.first_mut(), single.as_f64()) {
                    (Some(sum), Some(n)) => *sum += n,
                    (None, Some(n)) => total.values.push(n),
                    (_, None) => {}
                },
            }
        }
    }
    totals.into_values().collect()
}

/// What CloudWatch makes of `metric` in the documents whose dimensions are
/// exactly `dimensions` (the function among them): a counter's sum, or a
/// distribution's values; `None` when no document has it.
#[cfg(feature = "fixtures")]
pub fn value_of(
    documents: &[serde_json::Value],
    metric: &str,
    dimensions: &[(&str, &str)],
) -> Option<serde_json::Value> {
    let total = totals(documents)
        .into_iter()
        .find(|t| t.metric == metric && t.has_dimensions(dimensions))?;
    Some(if total.distribution {
        serde_json::json!(total.values)
    } else {
        serde_json::json!(total.values.first().copied().unwrap_or(0.0) as u64)
    })
}

#[cfg(all(test, feature = "fixtures"))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_are_emf_documents_per_function_and_dimensions_flushed_once() {
        let capture = Capture::start().await;
        in_function("payment", async {
            count("Requests", &[("outcome", "confirmed")], 1);
            count("Requests", &[("outcome", "confirmed")], 2);
            count("Requests", &[("outcome", "HOLD_EXPIRED")], 1);
            observe_latency_ms(&[], 12.5);
        })
        .await;
        let docs = capture.documents();
        let requests = |outcome| {
            value_of(
                &docs,
                "Requests",
                &[(FUNCTION, "payment"), ("outcome", outcome)],
            )
        };
        assert_eq!(requests("confirmed"), Some(3.into()));
        assert_eq!(requests("HOLD_EXPIRED"), Some(1.into()));
        let latency = value_of(&docs, "Latency", &[(FUNCTION, "payment")]).unwrap();
        assert_eq!(latency, serde_json::json!([12.5]));
        let doc = docs.iter().find(|d| d.get("Latency").is_some()).unwrap();
        let aws = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(aws["Namespace"], DEFAULT_NAMESPACE);
        assert_eq!(aws["Metrics"][0]["Unit"], "Milliseconds");
        assert_eq!(doc["RequestId"], "captured");
        let again = capture.documents();
        assert_eq!(again.len(), docs.len(), "flushed once: nothing new");
    }

    #[tokio::test]
    async fn a_function_counts_one_cold_start_however_many_times_it_is_invoked() {
        let capture = Capture::start().await;
        for _ in 0..3 {
            invoked("cold-start-test", "r".into(), async {}).await;
        }
        let docs = capture.documents();
        let cold = value_of(&docs, "ColdStart", &[(FUNCTION, "cold-start-test")]);
        assert_eq!(cold, Some(1.into()));
    }
}
