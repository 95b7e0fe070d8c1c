//! The small configuration of `make soak` that `make test` runs: a few dozen
//! payments under the same faults (sandbox chaos, every batch delivered twice,
//! one invocation of the notifier and one of the data-platform feed killed), on
//! make test's broker, which is not restarted.

use soak::{SoakConfig, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn payments_under_faults_are_each_told_once_and_reach_the_data_platform_once() {
    let report = run(&SoakConfig::small(40)).await.expect("the soak runs");
    eprintln!("soak: faults: {}", report.faults);
    eprintln!("{report}");
    assert_eq!(report.payments, 40, "every seat sold: {report}");
    assert_eq!(report.delivered_once, report.payments, "{report}");
    assert_eq!((report.duplicates, report.lost), (0, 0), "{report}");
    let platform = &report.platform;
    assert_eq!(platform.received_once, report.payments, "{report}");
    assert_eq!((platform.duplicates, platform.lost), (0, 0), "{report}");
    assert!(report.passed(), "{:#?}", report.violations);
}
