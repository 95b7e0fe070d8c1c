//! `ops metrics <log>`: the business metrics in a log (the local runner's, or a
//! function's log group exported), summed per metric and dimension set as
//! CloudWatch sums the EMF lines: what `make demo` shows at its end.

use crate::Error;
use shared::metrics::{FUNCTION, Total, totals};
use std::path::Path;

pub fn print(log: &Path) -> Result<(), Error> {
    let text = std::fs::read_to_string(log)
        .map_err(|e| Error::Message(format!("cannot read {}: {e}", log.display())))?;
    let rows = rows(&text);
    if rows.is_empty() {
        println!("no metrics in {}", log.display());
    }
    for row in rows {
        println!("{row}");
    }
    Ok(())
}

/// One line per metric and dimension set: the function, the metric, the other
/// dimensions, and the sum (or a distribution's count, median and maximum).
fn rows(log: &str) -> Vec<String> {
    let documents: Vec<serde_json::Value> = log
        .lines()
        .filter(|line| line.contains("\"_aws\""))
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    totals(&documents).iter().map(row).collect()
}

fn row(total: &Total) -> String {
    let function = total.dimension(FUNCTION).unwrap_or("-");
    let others: Vec<String> = total
        .dimensions
        .iter()
        .filter(|(k, _)| k != FUNCTION)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let others = if others.is_empty() {
        "-".to_owned()
    } else {
        others.join(" ")
    };
    format!(
        "{function:<16} {:<18} {others:<48} {}",
        total.metric,
        value(total)
    )
}

fn value(total: &Total) -> String {
    if !total.distribution {
        return format!("{}", total.values.first().copied().unwrap_or(0.0));
    }
    let mut sorted = total.values.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
    let max = sorted.last().copied().unwrap_or(0.0);
    format!("n={} median={median:.1} max={max:.1}", sorted.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emf(dimensions: &[(&str, &str)], metric: &str, value: serde_json::Value) -> String {
        let names: Vec<&str> = dimensions.iter().map(|(k, _)| *k).collect();
        let mut doc = serde_json::json!({"_aws": {"Timestamp": 1, "CloudWatchMetrics": [
            {"Namespace": "Ticketing", "Dimensions": [names], "Metrics": [{"Name": metric}]}]}});
        for (k, v) in dimensions {
            doc[*k] = serde_json::json!(v);
        }
        doc[metric] = value;
        doc.to_string()
    }

    #[test]
    fn a_log_sums_each_metric_per_dimension_set_and_skips_other_lines() {
        let sent = [
            ("function", "notifier"),
            ("channel", "telegram"),
            ("outcome", "sent"),
        ];
        let log = [
            "2026-11-29T10:00:00Z INFO local-runner: HTTP API on 127.0.0.1:3000".to_owned(),
            emf(&sent, "Sends", serde_json::json!(2)),
            emf(&sent, "Sends", serde_json::json!(1)),
            emf(
                &[("function", "payment")],
                "Latency",
                serde_json::json!([30.0, 10.0, 20.0]),
            ),
        ]
        .join("\n");
        let rows = rows(&log);
        assert_eq!(rows.len(), 2, "{rows:#?}");
        assert!(rows[0].starts_with("payment"), "{rows:#?}");
        assert!(rows[0].ends_with("n=3 median=20.0 max=30.0"), "{rows:#?}");
        assert!(
            rows[1].contains("channel=telegram outcome=sent"),
            "{rows:#?}"
        );
        assert!(rows[1].ends_with(" 3"), "{rows:#?}");
    }
}
