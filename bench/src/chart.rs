//! The figures' ratios as a chart: one horizontal bar per figure that has a
//! baseline, on a logarithmic scale around 1x (the baseline), as SVG. `make
//! bench` writes it beside its JSON lines; BENCHMARKS.md shows the one drawn
//! from its last full run.

use crate::report::Figure;
use std::fmt::Write;

const WIDTH: f64 = 1100.0;
const LABEL_WIDTH: f64 = 640.0;
const BAR_HEIGHT: f64 = 18.0;
const ROW: f64 = 26.0;
const TOP: f64 = 56.0;
/// The scale's ends: 1/100 to 1000 times the baseline.
const MIN_RATIO: f64 = 0.01;
const MAX_RATIO: f64 = 1000.0;

/// Where `ratio` falls on the bar area, from its left edge.
fn x_of(ratio: f64) -> f64 {
    let span = MAX_RATIO.log10() - MIN_RATIO.log10();
    let clamped = ratio.clamp(MIN_RATIO, MAX_RATIO);
    (clamped.log10() - MIN_RATIO.log10()) / span * (WIDTH - LABEL_WIDTH - 60.0)
}

/// Text made safe inside SVG.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `text` cut to `max` characters on a character boundary.
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some(_) => text.chars().take(max - 1).collect::<String>() + "…",
    }
}

/// Draws `report`'s ratios beside its JSON lines (the same path, `.svg`).
pub fn write_beside(report: &crate::report::Report) {
    let path = report.path().with_extension("svg");
    let title = format!(
        "make bench: each figure against its baseline (ratio, log scale), {}",
        chrono::Utc::now().format("%Y-%m-%d")
    );
    match std::fs::write(&path, svg(&title, report.figures())) {
        Ok(()) => eprintln!("(the ratios drawn in {})", path.display()),
        Err(e) => eprintln!("bench: cannot write {path:?}: {e}"),
    }
}

/// The chart of every figure with a ratio, titled `title`.
pub fn svg(title: &str, figures: &[Figure]) -> String {
    let rows: Vec<&Figure> = figures.iter().filter(|f| f.ratio.is_some()).collect();
    let height = TOP + ROW * rows.len() as f64 + 40.0;
    let origin = LABEL_WIDTH;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r##"<rect width="100%" height="100%" fill="#ffffff"/><text x="10" y="22" font-size="15" font-weight="bold">{}</text>"##,
        escape(title)
    );
    for tick in [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0] {
        let x = origin + x_of(tick);
        let stroke = if tick == 1.0 { "#333333" } else { "#dddddd" };
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="{stroke}"/><text x="{x:.1}" y="{}" text-anchor="middle" fill="#555555">{tick}x</text>"##,
            TOP - 14.0,
            height - 30.0,
            height - 14.0
        );
    }
    for (i, figure) in rows.iter().enumerate() {
        let ratio = figure.ratio.unwrap_or(1.0);
        let y = TOP + ROW * i as f64;
        let (from, to) = (x_of(ratio.min(1.0)), x_of(ratio.max(1.0)));
        let fill = if ratio >= 1.0 { "#4a7ebb" } else { "#c0504d" };
        let label = cut(&format!("{}: {}", figure.bench, figure.metric), 92);
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text><rect x="{:.1}" y="{y:.1}" width="{:.1}" height="{BAR_HEIGHT}" fill="{fill}"><title>{} vs {}</title></rect><text x="{:.1}" y="{:.1}">{ratio:.2}x</text>"#,
            origin - 8.0,
            y + 13.0,
            escape(&label),
            origin + from,
            (to - from).max(1.0),
            escape(&figure.metric),
            escape(figure.baseline_of.as_deref().unwrap_or("")),
            origin + to + 4.0,
            y + 13.0,
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figure(metric: &str, ratio: Option<f64>) -> Figure {
        Figure {
            bench: "b".into(),
            metric: metric.into(),
            value: 1.0,
            unit: "ms".into(),
            baseline: ratio.map(|_| 1.0),
            baseline_of: ratio.map(|_| "a <baseline>".into()),
            ratio,
            min: 1.0,
            max: 1.0,
            runs: 1,
        }
    }

    #[test]
    fn every_figure_with_a_ratio_gets_a_bar_and_its_text_is_escaped() {
        let chart = svg(
            "t & u",
            &[
                figure("faster", Some(9.97)),
                figure("alone", None),
                figure("slower", Some(0.5)),
            ],
        );
        assert_eq!(chart.matches("<rect x=").count(), 2, "{chart}");
        assert!(chart.contains("9.97x") && chart.contains("0.50x"));
        assert!(chart.contains("t &amp; u") && chart.contains("a &lt;baseline&gt;"));
        assert!(!chart.contains("alone"));
    }

    #[test]
    fn the_scale_is_logarithmic_around_the_baseline() {
        let one = x_of(1.0);
        assert!((x_of(10.0) - one - (one - x_of(0.1))).abs() < 1e-9);
        assert_eq!(
            x_of(1e9),
            x_of(MAX_RATIO),
            "off the scale is drawn at its end"
        );
    }
}
