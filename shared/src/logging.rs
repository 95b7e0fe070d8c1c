//! The functions' log lines. Lambda's `LogFormat: JSON` (the template's, which
//! sets `AWS_LAMBDA_LOG_FORMAT`) gets one JSON object per line in which the
//! fields of every span the line is in, the ids of its work (`function`,
//! `request_id`, `reservation_id`, `event_id`, `trace_id`, a Kafka record's
//! `at`: see `spans`), are top-level members, so a Logs Insights query such as
//! `filter reservation_id = "…"` finds a payment's whole story. The line's own
//! fields stay under `fields` with its `message`: kept apart, a span field and
//! a line field of one name can never make an object with a member twice.
//! Any other format gets lambda_runtime's text lines. The level comes from
//! `AWS_LAMBDA_LOG_LEVEL` (the template's `LogLevel`), else `RUST_LOG`, else INFO.

use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;

/// Installs the functions' subscriber, writing to stdout (Lambda's log).
pub fn init() {
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    if json {
        json_lines(std::io::stdout, filter()).init();
    } else {
        tracing_subscriber::fmt()
            .with_target(false)
            .without_time()
            .with_env_filter(filter())
            .init();
    }
}

/// Lambda's level variable, else `RUST_LOG`, else INFO.
fn filter() -> EnvFilter {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|l| l.parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::INFO);
    EnvFilter::builder()
        .with_default_directive(level.into())
        .from_env_lossy()
}

/// The JSON lines: `timestamp`, `level`, `target`, the spans' fields at the
/// top level, the line's own under `fields`.
pub fn json_lines<W>(writer: W, filter: EnvFilter) -> impl Subscriber + Send + Sync
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    let mut lines = json_subscriber::JsonLayer::new(writer);
    lines
        .with_timer("timestamp", tracing_subscriber::fmt::time::SystemTime)
        .with_level("level")
        .with_target("target")
        .with_event("fields")
        .with_top_level_flattened_span_list();
    tracing_subscriber::registry().with(filter).with(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::sync::{Arc, Mutex};

    /// What the subscriber wrote.
    #[derive(Clone, Default)]
    struct Written(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Written {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines_of(work: impl FnOnce()) -> Vec<Value> {
        let written = Written::default();
        let sink = written.clone();
        let subscriber = json_lines(move || sink.clone(), EnvFilter::new("info"));
        tracing::subscriber::with_default(subscriber, work);
        let text = String::from_utf8(written.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn a_records_lines_carry_its_ids_as_top_level_members() {
        let lines = lines_of(|| {
            let invocation = crate::spans::invocation("notifier", "req-1");
            let _invocation = invocation.enter();
            let record = crate::spans::kafka_record("payment.completed-2@17", Some("res-1"));
            let _record = record.enter();
            crate::spans::record_event("evt-1");
            // A line field named like a span field stays apart, under `fields`.
            tracing::info!(
                channel = "telegram",
                at = "elsewhere",
                "notification handled"
            );
        });
        let line = &lines[0];
        assert_eq!(line["function"], "notifier");
        assert_eq!(line["request_id"], "req-1");
        assert_eq!(line["reservation_id"], "res-1");
        assert_eq!(line["event_id"], "evt-1");
        assert_eq!(line["at"], "payment.completed-2@17");
        assert_eq!(line["fields"]["message"], "notification handled");
        assert_eq!(line["fields"]["channel"], "telegram");
        assert_eq!(line["fields"]["at"], "elsewhere");
        assert_eq!(line["level"], "INFO");
        assert!(line["timestamp"].is_string(), "{line}");
    }

    #[test]
    fn a_request_learns_its_reservation_and_trace_and_every_later_line_has_them() {
        let lines = lines_of(|| {
            let request = crate::spans::http_request("payment", "req-2", "POST", "/payments");
            let _request = request.enter();
            tracing::info!("request received");
            crate::spans::record_reservation("res-2");
            crate::spans::record_trace(Some(
                "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01",
            ));
            tracing::info!("payment confirmed");
        });
        assert!(lines[0].get("reservation_id").is_none(), "{}", lines[0]);
        assert_eq!(lines[1]["reservation_id"], "res-2");
        assert_eq!(lines[1]["trace_id"], "5759e988bd862e3fe1be46a994272793");
        assert_eq!(lines[1]["path"], "/payments");
    }
}
