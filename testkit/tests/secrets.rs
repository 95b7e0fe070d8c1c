//! Secrets read at cold start from Secrets Manager and SSM Parameter Store, on
//! moto: each source resolves, a value in the environment is left to it, and a
//! missing secret fails with a message that names it.

use shared::config::Secret;
use shared::secrets::SecretStore;
use testkit::{aws, unique};

fn vars(pairs: &[(&str, String)]) -> impl Fn(&str) -> Option<String> {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    move |name| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

#[tokio::test]
async fn secrets_come_from_secrets_manager_and_ssm_and_values_are_left_to_the_environment() {
    let aws = aws().await;
    let store = SecretStore::new(&aws);
    let secret_id = unique("ticketing/jwt");
    store
        .put_secret(&secret_id, &Secret::new("from-secrets-manager"))
        .await
        .unwrap();
    // Putting it again (a second `ops provision`) updates it.
    store
        .put_secret(&secret_id, &Secret::new("from-secrets-manager-2"))
        .await
        .unwrap();
    let parameter = format!("/{}", unique("ticketing/bot"));
    aws_sdk_ssm::Client::new(&aws)
        .put_parameter()
        .name(&parameter)
        .value("from-ssm")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();

    let fetched = store
        .fetch_in(
            &["JWT_SECRET", "TELEGRAM_BOT_TOKEN", "DISCORD_WEBHOOK_URL"],
            vars(&[
                ("JWT_SECRET_SECRET_ID", secret_id),
                ("TELEGRAM_BOT_TOKEN_PARAMETER", parameter),
                ("DISCORD_WEBHOOK_URL", "http://local".into()),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(fetched["JWT_SECRET"].expose(), "from-secrets-manager-2");
    assert_eq!(fetched["TELEGRAM_BOT_TOKEN"].expose(), "from-ssm");
    assert!(
        !fetched.contains_key("DISCORD_WEBHOOK_URL"),
        "a value in the environment is read from there"
    );
}

#[tokio::test]
async fn a_missing_secret_fails_the_cold_start_naming_it() {
    let store = SecretStore::new(&aws().await);
    let missing = unique("ticketing/missing");
    let error = store
        .fetch_in(
            &["JWT_SECRET"],
            vars(&[("JWT_SECRET_SECRET_ID", missing.clone())]),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains(&missing), "{error}");
    let error = store
        .fetch_in(
            &["JWT_SECRET"],
            vars(&[("JWT_SECRET_PARAMETER", "/no/such/parameter".into())]),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("/no/such/parameter"), "{error}");
}
