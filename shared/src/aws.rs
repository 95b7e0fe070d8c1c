//! The AWS configuration every main and tool loads: the environment's, with
//! an HTTPS client that trusts the process's roots (`crate::tls`).

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
    loader.http_client(
        aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
            .tls_context(context)
            .build_https(),
    )
}
