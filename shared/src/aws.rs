//! The AWS configuration every main and tool loads: the environment's, with
//! an HTTPS client that trusts the process's roots (`crate::tls`) and builds
//! no connector until a request needs one.

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::runtime_components::{
    RuntimeComponents, RuntimeComponentsBuilder,
};
use aws_smithy_types::config_bag::ConfigBag;

/// The AWS configuration from the environment, as `aws_config::load_from_env`
/// gives it, with an HTTPS client that trusts the roots `crate::tls` read once
/// for the whole process (instead of loading the system's store again): every
/// main and tool loads it through here.
pub async fn config() -> aws_config::SdkConfig {
    let mut loader =
        trusting_our_roots(aws_config::defaults(aws_config::BehaviorVersion::latest()));
    if credentials_in_env(|name| std::env::var(name).ok()) {
        // What the default chain would answer (its first link, the
        // environment, wins whenever it holds keys, as Lambda gives every
        // function), without building the rest of it: its web-identity link
        // alone builds an STS client at every cold start.
        loader = loader.credentials_provider(
            aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
        );
    }
    loader.load().await
}

/// Whether `var` holds an access key and its secret, as the chain's
/// environment link reads them (blank is unset).
fn credentials_in_env(var: impl Fn(&str) -> Option<String>) -> bool {
    let set = |name: &str| var(name).is_some_and(|v| !v.trim().is_empty());
    set("AWS_ACCESS_KEY_ID") && (set("AWS_SECRET_ACCESS_KEY") || set("SECRET_ACCESS_KEY"))
}

/// `loader` with the SDK's own HTTPS client (rustls on aws-lc, as its
/// default) trusting the process's roots; unchanged when there are none.
fn trusting_our_roots(loader: aws_config::ConfigLoader) -> aws_config::ConfigLoader {
    use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
    let Some(pem) = crate::tls::roots().and_then(|roots| roots.pem()) else {
        return loader;
    };
    let trust = TrustStore::empty()
        .with_native_roots(false)
        .with_pem_certificate(pem);
    let Ok(context) = TlsContext::builder().with_trust_store(trust).build() else {
        return loader;
    };
    let https = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(context)
        .build_https();
    loader.http_client(NoWarmUp::new(https))
}

/// The SDK's HTTPS client without its warm-up. Each time a service client is
/// built (DynamoDB, Secrets Manager, SSM, the credentials chain's STS, ...),
/// the SDK's client "checks" itself by building a connector and dropping it,
/// so that the system's roots are loaded (and cached) at init rather than at
/// the first request (aws-smithy-http-client 1.5, `validate_base_client_config`:
/// it always answers Ok). With roots of our own nothing is cached: each check
/// parses the whole bundle again, about 1 ms of every cold start for nothing,
/// since the first request builds its own connector anyway. The bundle is
/// checked once, by `crate::tls` (a bundle that is not valid PEM is not
/// given). Requests go to the client itself, which keeps its connectors and
/// pools.
#[derive(Debug)]
struct NoWarmUp {
    client: SharedHttpClient,
}

impl NoWarmUp {
    fn new(client: SharedHttpClient) -> Self {
        NoWarmUp { client }
    }
}

impl HttpClient for NoWarmUp {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.client.http_connector(settings, components)
    }

    fn validate_base_client_config(
        &self,
        _: &RuntimeComponentsBuilder,
        _: &ConfigBag,
    ) -> Result<(), BoxError> {
        Ok(())
    }

    fn validate_final_config(
        &self,
        components: &RuntimeComponents,
        cfg: &ConfigBag,
    ) -> Result<(), BoxError> {
        HttpClient::validate_final_config(&self.client, components, cfg)
    }

    fn connector_metadata(
        &self,
    ) -> Option<aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata> {
        self.client.connector_metadata()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_runtime_api::shared::IntoShared;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts the SDK's set-up checks of it.
    #[derive(Debug, Default)]
    struct Counting(Arc<AtomicUsize>);

    impl HttpClient for Counting {
        fn http_connector(
            &self,
            _: &HttpConnectorSettings,
            _: &RuntimeComponents,
        ) -> SharedHttpConnector {
            unreachable!("no request is made")
        }

        fn validate_base_client_config(
            &self,
            _: &RuntimeComponentsBuilder,
            _: &ConfigBag,
        ) -> Result<(), BoxError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[test]
    fn the_environments_keys_are_used_only_when_both_are_there() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        const LAMBDA: [(&str, &str); 2] = [
            ("AWS_ACCESS_KEY_ID", "AKIA"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
        ];
        assert!(credentials_in_env(env(&LAMBDA)));
        assert!(credentials_in_env(env(&[
            ("AWS_ACCESS_KEY_ID", "AKIA"),
            ("SECRET_ACCESS_KEY", "s")
        ])));
        // A profile, SSO or a web identity: the whole chain.
        assert!(!credentials_in_env(env(&[("AWS_PROFILE", "ops")])));
        assert!(!credentials_in_env(env(&[("AWS_ACCESS_KEY_ID", "AKIA")])));
        assert!(!credentials_in_env(env(&[
            ("AWS_ACCESS_KEY_ID", " "),
            ("AWS_SECRET_ACCESS_KEY", "s")
        ])));
    }

    #[test]
    fn building_service_clients_builds_no_throw_away_connector() {
        let checks = Arc::new(AtomicUsize::new(0));
        let client = NoWarmUp::new(Counting(checks.clone()).into_shared());
        let components = RuntimeComponentsBuilder::new("test");
        for _ in 0..3 {
            client
                .validate_base_client_config(&components, &ConfigBag::base())
                .unwrap();
        }
        assert_eq!(checks.load(Ordering::SeqCst), 0);
    }
}
