//! The machine's trusted root certificates, read once per process from its CA
//! bundle and shared by every TLS client (the AWS SDK's and the channels').
//!
//! Left to themselves, each client loads the system's store through
//! `rustls-native-certs`, which reads the bundle file AND every file of the
//! certificate folder (a few hundred on Debian): 2 to 3 ms of a cold start,
//! once per client. One read of the bundle, parsed by each client, is what
//! they need. `SSL_CERT_FILE` names another bundle; a machine with none of the
//! usual bundles leaves the clients to their own loading.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

/// Where the usual systems keep their bundle: Amazon Linux 2023 (Lambda's
/// `provided.al2023`) and RHEL, Debian and Ubuntu, Alpine and macOS.
const BUNDLES: [&str; 3] = [
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/ssl/cert.pem",
];

static ROOTS: LazyLock<Option<Vec<u8>>> = LazyLock::new(|| {
    let path = bundle_path(std::env::var_os("SSL_CERT_FILE").map(PathBuf::from), |p| {
        p.is_file()
    })?;
    match std::fs::read(&path) {
        Ok(pem) => Some(pem),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the CA bundle; each TLS client loads the system's roots itself");
            None
        }
    }
});

/// The bundle to read: `SSL_CERT_FILE` when set, else the first usual one
/// that `exists`.
fn bundle_path(ssl_cert_file: Option<PathBuf>, exists: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    ssl_cert_file.or_else(|| BUNDLES.iter().map(PathBuf::from).find(|path| exists(path)))
}

/// The trusted roots as PEM (the bundle's bytes), or `None` when the clients
/// must load the system's store themselves.
pub fn roots_pem() -> Option<&'static [u8]> {
    ROOTS.as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_cert_file_wins_over_the_usual_bundles() {
        let chosen = bundle_path(Some(PathBuf::from("/mine.pem")), |_| true);
        assert_eq!(chosen, Some(PathBuf::from("/mine.pem")));
    }

    #[test]
    fn the_first_usual_bundle_that_exists_is_read_and_none_leaves_it_to_the_clients() {
        let debian = bundle_path(None, |p| p.starts_with("/etc/ssl/certs"));
        assert_eq!(
            debian,
            Some(PathBuf::from("/etc/ssl/certs/ca-certificates.crt"))
        );
        let al2023 = bundle_path(None, |_| true);
        assert_eq!(
            al2023,
            Some(PathBuf::from("/etc/pki/tls/certs/ca-bundle.crt"))
        );
        assert_eq!(bundle_path(None, |_| false), None);
    }
}
