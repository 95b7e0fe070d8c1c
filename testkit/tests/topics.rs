//! `ops topics apply`'s adapter on a real broker (tansu, one node): the topics
//! are created with the settings asked, and applying other settings to them
//! afterwards reports every difference instead of accepting them.

use chrono::Duration;
use shared::kafka::apply_topics;
use shared::topics::{TopicOutcome, TopicSpec};
use testkit::{kafka, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_created_then_found_matching_and_other_settings_are_reported() {
    let names = [unique("apply.a"), unique("apply.b")];
    let topics: Vec<&str> = names.iter().map(String::as_str).collect();
    let spec = TopicSpec::single_broker(2, Duration::days(7));

    let created = apply_topics(&kafka(), &topics, &spec).await.unwrap();
    assert!(
        created.iter().all(|(_, o)| *o == TopicOutcome::Created),
        "{created:?}"
    );

    let again = apply_topics(&kafka(), &topics, &spec).await.unwrap();
    assert!(
        again.iter().all(|(_, o)| *o == TopicOutcome::Matches),
        "{again:?}"
    );

    let other = TopicSpec {
        partitions: 4,
        ..spec
    };
    let differs = apply_topics(&kafka(), &topics, &other).await.unwrap();
    for (topic, outcome) in &differs {
        let TopicOutcome::Differs(found) = outcome else {
            panic!("{topic}: {outcome:?}");
        };
        assert!(
            found.iter().any(|d| d == "partitions is 2, not 4"),
            "{found:?}"
        );
    }
}
