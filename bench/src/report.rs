//! Figures: the median of repeated runs with min and max, beside the baseline
//! measured in the same run, printed as one JSON object per line on stdout (and
//! appended to `target/bench/results.jsonl`) and as a table at the end.

use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;

/// Repeated measurements of one quantity.
#[derive(Clone, Debug, Default)]
pub struct Samples(Vec<f64>);

impl Samples {
    pub fn push(&mut self, value: f64) {
        self.0.push(value);
    }

    fn sorted(&self) -> Vec<f64> {
        let mut sorted = self.0.clone();
        sorted.sort_by(f64::total_cmp);
        sorted
    }

    pub fn median(&self) -> f64 {
        let sorted = self.sorted();
        match sorted.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        }
    }

    /// The nearest-rank `p`th percentile (0 < p ≤ 100).
    pub fn percentile(&self, p: f64) -> f64 {
        let sorted = self.sorted();
        if sorted.is_empty() {
            return f64::NAN;
        }
        let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    pub fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }

    pub fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// One line of the results.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    pub bench: String,
    pub metric: String,
    /// The median.
    pub value: f64,
    pub unit: String,
    /// The baseline's median, measured in the same run.
    pub baseline: Option<f64>,
    /// What the baseline is.
    pub baseline_of: Option<String>,
    /// `value / baseline`.
    pub ratio: Option<f64>,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
}

impl Figure {
    /// The median of `samples`, alone.
    pub fn of(bench: &str, metric: &str, unit: &str, samples: &Samples) -> Figure {
        Figure {
            bench: bench.into(),
            metric: metric.into(),
            value: round(samples.median()),
            unit: unit.into(),
            baseline: None,
            baseline_of: None,
            ratio: None,
            min: round(samples.min()),
            max: round(samples.max()),
            runs: samples.len(),
        }
    }

    /// The `p`th percentile of `samples` (each one request, say), alone.
    pub fn at_percentile(
        bench: &str,
        metric: &str,
        unit: &str,
        samples: &Samples,
        p: f64,
    ) -> Figure {
        Figure {
            value: round(samples.percentile(p)),
            ..Figure::of(bench, metric, unit, samples)
        }
    }

    /// Beside the median of `baseline` (called `what`), with their ratio.
    pub fn against(self, what: &str, baseline: &Samples) -> Figure {
        let base = baseline.median();
        self.against_value(what, base)
    }

    /// Beside the `p`th percentile of `baseline`, with their ratio.
    pub fn against_percentile(self, what: &str, baseline: &Samples, p: f64) -> Figure {
        self.against_value(what, baseline.percentile(p))
    }

    fn against_value(mut self, what: &str, base: f64) -> Figure {
        self.baseline = Some(round(base));
        self.baseline_of = Some(what.into());
        // No ratio to nothing (a baseline of 0 429s, say).
        self.ratio = (base != 0.0).then(|| (self.value / base * 100.0).round() / 100.0);
        self
    }
}

fn round(value: f64) -> f64 {
    if value.abs() >= 100.0 {
        value.round()
    } else {
        (value * 100.0).round() / 100.0
    }
}

/// Collects the figures: prints each as it comes, the table at the end.
pub struct Report {
    figures: Vec<Figure>,
    jsonl: std::fs::File,
    path: PathBuf,
}

impl Report {
    /// Writes `path` afresh (its folder is created).
    pub fn create(path: PathBuf) -> std::io::Result<Report> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let jsonl = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)?;
        Ok(Report {
            figures: Vec::new(),
            jsonl,
            path,
        })
    }

    pub fn add(&mut self, figure: Figure) {
        let line = serde_json::to_string(&figure).expect("a figure serialises");
        println!("{line}");
        if let Err(e) = writeln!(self.jsonl, "{line}") {
            eprintln!("bench: cannot write {:?}: {e}", self.path);
        }
        self.figures.push(figure);
    }

    /// The figures so far, in the order they came.
    pub fn figures(&self) -> &[Figure] {
        &self.figures
    }

    /// Where the JSON lines go.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The table, on stderr (stdout stays JSON lines).
    pub fn print_table(&self) {
        let mut out = String::new();
        out.push_str(&format!(
            "\n{:<9} {:<44} {:>11} {:<6} {:>11} {:>7}  {:<16} {}\n",
            "bench", "metric", "median", "unit", "baseline", "ratio", "min..max", "baseline is"
        ));
        for f in &self.figures {
            out.push_str(&format!(
                "{:<9} {:<44} {:>11} {:<6} {:>11} {:>7}  {:<16} {}\n",
                f.bench,
                f.metric,
                f.value,
                f.unit,
                f.baseline.map(|b| b.to_string()).unwrap_or_default(),
                f.ratio.map(|r| format!("{r:.2}x")).unwrap_or_default(),
                format!("{}..{}", f.min, f.max),
                f.baseline_of.as_deref().unwrap_or(""),
            ));
        }
        out.push_str(&format!("(also in {})\n", self.path.display()));
        eprint!("{out}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(values: &[f64]) -> Samples {
        let mut s = Samples::default();
        for v in values {
            s.push(*v);
        }
        s
    }

    #[test]
    fn median_min_and_max_of_unsorted_samples() {
        let s = samples(&[5.0, 1.0, 4.0, 2.0, 3.0]);
        assert_eq!(s.median(), 3.0);
        assert_eq!((s.min(), s.max()), (1.0, 5.0));
        assert_eq!(samples(&[1.0, 2.0, 3.0, 4.0]).median(), 2.5);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let hundred = samples(&(1..=100).rev().map(f64::from).collect::<Vec<_>>());
        assert_eq!(hundred.percentile(50.0), 50.0);
        assert_eq!(hundred.percentile(99.0), 99.0);
        assert_eq!(hundred.percentile(100.0), 100.0);
        assert_eq!(samples(&[7.0]).percentile(99.0), 7.0);
        let figure = Figure::at_percentile("payment", "p99", "ms", &hundred, 99.0)
            .against_percentile("bare", &samples(&[10.0, 30.0, 20.0]), 99.0);
        assert_eq!(
            (figure.value, figure.baseline, figure.ratio),
            (99.0, Some(30.0), Some(3.3))
        );
    }

    #[test]
    fn a_baseline_of_zero_has_no_ratio() {
        let figure = Figure::of("notifier", "429s", "429s", &samples(&[0.0]))
            .against("no limit", &samples(&[0.0, 12.0, 30.0]));
        assert_eq!(figure.baseline, Some(12.0));
        let zero = Figure::of("notifier", "429s", "429s", &samples(&[3.0]))
            .against("no limit", &samples(&[0.0]));
        assert_eq!(zero.ratio, None);
    }

    #[test]
    fn a_figure_against_its_baseline_carries_the_ratio_of_the_medians() {
        let figure = Figure::of("init", "relay", "ms", &samples(&[30.0, 10.0, 20.0]))
            .against("hello-world", &samples(&[5.0, 4.0, 6.0]));
        assert_eq!(figure.value, 20.0);
        assert_eq!(figure.baseline, Some(5.0));
        assert_eq!(figure.ratio, Some(4.0));
        assert_eq!((figure.min, figure.max, figure.runs), (10.0, 30.0, 3));
        let json = serde_json::to_value(&figure).unwrap();
        for key in ["bench", "metric", "value", "unit", "baseline", "ratio"] {
            assert!(json.get(key).is_some(), "{key} in {json}");
        }
    }
}
