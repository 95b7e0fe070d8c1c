//! `ops provision` (what `make up` runs) on a stack set up by someone else:
//! a local secret that exists keeps its value, so the values docker-compose's
//! init stores for functions in containers are not overwritten with the
//! host's 127.0.0.1 addresses.

use serde_json::Value;
use shared::config::{Secret, TableNames, TopicNames};
use shared::secrets::SecretStore;
use std::process::Command;
use testkit::functions::stack_env;
use testkit::{aws, unique};

/// What docker-compose's init stores as the Discord webhook (as the bootstraps
/// test does): the sandbox by its service name.
const COMPOSE_WEBHOOK: &str = "http://sandbox:8081/api/webhooks/20002/local-sandbox-webhook-token";

#[tokio::test]
async fn provision_keeps_the_value_of_a_local_secret_that_exists() {
    let aws = aws().await;
    let store = SecretStore::new(&aws);
    store
        .put_secret("ticketing/discord-webhook", &Secret::new(COMPOSE_WEBHOOK))
        .await
        .unwrap();
    let prefix = unique("provision");
    let run = Command::new(env!("CARGO_BIN_EXE_ops"))
        .args(["provision", "--without-topics"])
        .envs(stack_env(
            &TableNames::with_prefix(&prefix),
            &TopicNames::with_prefix(&prefix),
        ))
        .env(
            "DISCORD_WEBHOOK_URL",
            "http://127.0.0.1:8081/api/webhooks/20002/local-sandbox-webhook-token",
        )
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let said: Value = serde_json::from_slice(&run.stdout).unwrap();
    let kept = said["secretsKept"].as_array().unwrap();
    assert!(kept.contains(&"ticketing/discord-webhook".into()), "{said}");

    let read = store
        .fetch_in(&["DISCORD_WEBHOOK_URL"], |var| {
            (var == "DISCORD_WEBHOOK_URL_SECRET_ID").then(|| "ticketing/discord-webhook".into())
        })
        .await
        .unwrap();
    assert_eq!(read["DISCORD_WEBHOOK_URL"].expose(), COMPOSE_WEBHOOK);
}
