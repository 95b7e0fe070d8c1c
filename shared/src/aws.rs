//! The AWS configuration every main and tool loads: the environment's, with
//! an HTTPS client that trusts the process's roots (`crate::tls`) and sets
//! itself up once per process.

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::runtime_components::{
    RuntimeComponents, RuntimeComponentsBuilder,
};
use aws_smithy_types::config_bag::ConfigBag;
use std::sync::OnceLock;

/// The AWS configuration from the environment, as `aws_config::load_from_env`
/// gives it, with an HTTPS client that trusts the roots `crate::tls` read once
/// for the whole process (instead of loading the system's store again): every
/// main and tool loads it through here.
pub async fn config() -> aws_config::SdkConfig {
    trusting_our_roots(aws_config::defaults(aws_config::BehaviorVersion::latest()))
        .load()
        .await
}

/// `loader` with the SDK's own HTTPS client (rustls on aws-lc, as its
/// default) trusting the process's roots; unchanged when there are none.
fn trusting_our_roots(loader: aws_config::ConfigLoader) -> aws_config::ConfigLoader {
    use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
    let Some(pem) = crate::tls::roots_pem() else {
        return loader;
    };
    let trust = TrustStore::empty()
        .with_native_roots(false)
        .with_pem_certificate(pem.to_vec());
    let Ok(context) = TlsContext::builder().with_trust_store(trust).build() else {
        return loader;
    };
    let https = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(context)
        .build_https();
    loader.http_client(CheckedOnce::new(https))
}

/// An HTTP client whose set-up check runs once per process, not once per
/// service client. The SDK's client checks itself each time a service client
/// is built (DynamoDB, Secrets Manager, SSM, ...) by building a throw-away TLS
/// connector, which parses every trusted root again: the same answer each
/// time, paid once per client at every cold start. Requests go to the client
/// itself, which keeps its connectors and pools.
#[derive(Debug)]
struct CheckedOnce {
    client: SharedHttpClient,
    checked: OnceLock<Result<(), String>>,
}

impl CheckedOnce {
    fn new(client: SharedHttpClient) -> Self {
        CheckedOnce {
            client,
            checked: OnceLock::new(),
        }
    }
}

impl HttpClient for CheckedOnce {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.client.http_connector(settings, components)
    }

    fn validate_base_client_config(
        &self,
        components: &RuntimeComponentsBuilder,
        cfg: &ConfigBag,
    ) -> Result<(), BoxError> {
        let checked = self.checked.get_or_init(|| {
            HttpClient::validate_base_client_config(&self.client, components, cfg)
                .map_err(|e| e.to_string())
        });
        checked.clone().map_err(BoxError::from)
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

    /// Counts its set-up checks.
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
    fn the_clients_set_up_check_runs_once_however_many_service_clients_are_built() {
        let checks = Arc::new(AtomicUsize::new(0));
        let client = CheckedOnce::new(Counting(checks.clone()).into_shared());
        let components = RuntimeComponentsBuilder::new("test");
        for _ in 0..3 {
            client
                .validate_base_client_config(&components, &ConfigBag::base())
                .unwrap();
        }
        assert_eq!(checks.load(Ordering::SeqCst), 1);
    }
}
