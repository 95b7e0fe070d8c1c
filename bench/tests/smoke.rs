//! `make bench` in miniature, so it keeps working: the harness runs every
//! benchmark once with small batches against the local stack and writes one JSON
//! object per figure, each beside its baseline. (Timings are not judged here.)

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use testkit::functions::FUNCTIONS;
use testkit::samples::root;

fn cargo_build(packages: &[&str]) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(root())
        .args(["build", "--quiet", "--locked"]);
    for p in packages {
        build.args(["-p", p]);
    }
    assert!(
        build.status().expect("cargo runs").success(),
        "cargo build {packages:?}"
    );
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("target"))
        .join("debug")
}

/// `sam build`'s output (`make test` sets BOOTSTRAP_DIR), else the debug
/// binaries laid out the same way.
fn bootstrap_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("BOOTSTRAP_DIR") {
        return PathBuf::from(dir);
    }
    let binaries = cargo_build(&FUNCTIONS.map(|(_, binary)| binary));
    let dir = std::env::temp_dir().join(testkit::unique("bench-bootstraps"));
    for (logical_id, binary) in FUNCTIONS {
        std::fs::create_dir_all(dir.join(logical_id)).unwrap();
        std::os::unix::fs::symlink(
            binaries.join(binary),
            dir.join(logical_id).join("bootstrap"),
        )
        .unwrap();
    }
    dir
}

/// The hello-world baseline: built as the bootstraps are (`make test` sets
/// HELLO_BOOTSTRAP), else the debug binary.
fn hello() -> PathBuf {
    std::env::var("HELLO_BOOTSTRAP")
        .map(PathBuf::from)
        .unwrap_or_else(|_| cargo_build(&["hello-lambda"]).join("hello-lambda"))
}

#[test]
fn every_benchmark_writes_figures_beside_their_baselines() {
    let out = std::env::temp_dir()
        .join(testkit::unique("bench"))
        .join("results.jsonl");
    let run = Command::new(env!("CARGO_BIN_EXE_bench"))
        .current_dir(root())
        .args([
            "--runs",
            "1",
            "--relay-records",
            "50",
            "--relay-rss-records",
            "200",
            "--notifier-records",
            "40",
            "--feed-records",
            "40",
            "--payment-requests",
            "10",
            "--dlq-records",
            "30",
            "--e2e-payments",
            "20",
        ])
        .arg("--bootstrap-dir")
        .arg(bootstrap_dir())
        .arg("--hello")
        .arg(hello())
        .arg("--out")
        .arg(&out)
        .output()
        .expect("the harness runs");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "bench failed: {stderr}");

    let printed: Vec<Value> = String::from_utf8_lossy(&run.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let written = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        written.lines().count(),
        printed.len(),
        "stdout and the file agree"
    );
    for bench in [
        "init",
        "relay",
        "notifier",
        "data-platform-feed",
        "payment",
        "end-to-end",
        "dlq-retry",
    ] {
        assert!(
            printed.iter().any(|f| f["bench"] == bench),
            "no {bench} figure"
        );
    }
    for figure in &printed {
        for key in [
            "bench", "metric", "value", "unit", "baseline", "ratio", "min", "max",
        ] {
            assert!(figure.get(key).is_some(), "{key} missing in {figure}");
        }
        // A count of 429s may be 0, and has no ratio to a baseline of 0; a rate,
        // a time or a size never is.
        let value = figure["value"].as_f64().unwrap();
        if figure["unit"] == "429s" {
            assert!(value >= 0.0, "{figure}");
        } else {
            assert!(value > 0.0, "{figure}");
        }
        if figure["baseline"].as_f64().unwrap() > 0.0 {
            assert!(figure["ratio"].as_f64().is_some(), "{figure}");
        }
    }
    assert!(stderr.contains("baseline is"), "the table: {stderr}");
}
