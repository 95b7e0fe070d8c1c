//! The machine's trusted root certificates, read and decoded once per process
//! from its CA bundle and shared by every TLS client (the AWS SDK's and the
//! channels').
//!
//! Left to themselves, each client loads the system's store through
//! `rustls-native-certs`, which reads the bundle file AND every file of the
//! certificate folder (a few hundred on Debian): 2 to 3 ms of a cold start,
//! once per client. One read of the bundle is what they need, and one decode
//! of its PEM (base64: about 0.6 ms for the 140 roots of a usual bundle with
//! rustls-pki-types' reader, 0.25 ms with the `base64` crate's, a few tens of
//! microseconds with SIMD): the channels' client takes
//! the decoded certificates; the SDK's takes PEM (its only form) and keeps its
//! own copy, so the PEM is not kept here but read again for it (tens of
//! microseconds from the page cache, against 200 KB held for the process). A
//! bundle that is not valid PEM is refused here, once, so that no client
//! trusts half of it. `SSL_CERT_FILE` names another bundle; a machine with
//! none of the usual bundles leaves the clients to their own loading.

use rustls_pki_types::CertificateDer;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

/// Where the usual systems keep their bundle: Amazon Linux 2023 (Lambda's
/// `provided.al2023`) and RHEL, Debian and Ubuntu, Alpine and macOS.
const BUNDLES: [&str; 3] = [
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/ssl/cert.pem",
];

/// The bundle's path and its roots, decoded (one DER certificate per root).
pub struct Roots {
    path: PathBuf,
    der: Vec<CertificateDer<'static>>,
}

impl Roots {
    /// The bundle at `path`, read and decoded, or why it cannot be used.
    fn read(path: PathBuf) -> Result<Roots, String> {
        let pem = std::fs::read(&path).map_err(|e| e.to_string())?;
        let der = decode(&pem)?;
        Ok(Roots { path, der })
    }

    /// The bundle's PEM, read again, for the clients that decode it
    /// themselves and keep their own copy (the AWS SDK's); `None`, with a
    /// warning, if it can no longer be read.
    pub fn pem(&self) -> Option<Vec<u8>> {
        std::fs::read(&self.path)
            .inspect_err(|e| {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot read the CA bundle again; the AWS SDK loads the system's roots itself");
            })
            .ok()
    }

    /// Each root, decoded.
    pub fn der(&self) -> &[CertificateDer<'static>] {
        &self.der
    }
}

/// The roots in `pem`, or why it is not a bundle of them.
fn decode(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let der = certificates_in(pem)?;
    if der.is_empty() {
        return Err("no certificate in it".into());
    }
    Ok(der)
}

/// Each `CERTIFICATE` block of `pem`, decoded; text around the blocks (the
/// comments of Amazon Linux's bundle) is skipped. rustls-pki-types' own PEM
/// reader decodes base64 a byte at a time, written for secret keys: 0.6 ms
/// for a bundle's 140 roots, a tenth of a cold start. The roots are public,
/// so the markers and line ends are found with memchr and the base64 decoded
/// with SIMD (the tests check this and pki-types' reader agree).
fn certificates_in(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
    const END: &[u8] = b"-----END CERTIFICATE-----";
    let mut certificates = Vec::new();
    let mut base64 = Vec::with_capacity(4096);
    let mut rest = pem;
    while let Some(begin) = memchr::memmem::find(rest, BEGIN) {
        let root = certificates.len() + 1;
        let block = &rest[begin + BEGIN.len()..];
        let end = memchr::memmem::find(block, END).ok_or_else(|| {
            format!("not a PEM bundle of certificates: root {root} has no END line")
        })?;
        base64.clear();
        for line in lines(&block[..end]) {
            base64.extend_from_slice(line.trim_ascii());
        }
        let der = base64_simd::STANDARD.decode_to_vec(&base64).map_err(|_| {
            format!("not a PEM bundle of certificates: root {root} is not valid base64")
        })?;
        certificates.push(CertificateDer::from(der));
        rest = &block[end + END.len()..];
    }
    Ok(certificates)
}

/// The lines of `text`, found with memchr (a byte-at-a-time split is most of
/// the decode's time).
fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', text)
        .chain(std::iter::once(text.len()))
        .map(move |end| {
            let line = &text[start..end];
            start = end + 1;
            line
        })
}

static ROOTS: LazyLock<Option<Roots>> = LazyLock::new(|| {
    let path = bundle_path(std::env::var_os("SSL_CERT_FILE").map(PathBuf::from), |p| {
        p.is_file()
    })?;
    let roots = Roots::read(path.clone());
    match roots {
        Ok(roots) => Some(roots),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot use the CA bundle; each TLS client loads the system's roots itself");
            None
        }
    }
});

/// The bundle to read: `SSL_CERT_FILE` when set, else the first usual one
/// that `exists`.
fn bundle_path(ssl_cert_file: Option<PathBuf>, exists: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    ssl_cert_file.or_else(|| BUNDLES.iter().map(PathBuf::from).find(|path| exists(path)))
}

/// The trusted roots, or `None` when the clients must load the system's
/// store themselves.
pub fn roots() -> Option<&'static Roots> {
    ROOTS.as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;

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

    #[test]
    fn the_machines_bundle_is_decoded_into_one_certificate_per_root() {
        let roots = roots().expect("this machine has a CA bundle (ca-certificates)");
        let pem = roots.pem().expect("the bundle is read again");
        let in_pem = String::from_utf8_lossy(&pem)
            .matches("-----BEGIN CERTIFICATE-----")
            .count();
        assert!(in_pem > 50, "{in_pem} roots in the bundle");
        assert_eq!(roots.der().len(), in_pem);
        let by_pki_types = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        assert_eq!(roots.der(), by_pki_types.as_slice());
    }

    #[test]
    fn a_bundle_gone_since_it_was_decoded_leaves_the_sdk_to_load_the_systems_roots() {
        let gone = Roots {
            path: PathBuf::from("/nonexistent/ca-bundle.crt"),
            der: Vec::new(),
        };
        assert_eq!(gone.pem(), None);
    }

    #[test]
    fn text_around_the_certificates_is_skipped_as_amazon_linuxs_comments_are() {
        let pem = "# ACCVRAIZ1\n-----BEGIN CERTIFICATE-----\r\nAAEC\r\nAw==\r\n-----END CERTIFICATE-----\n\n\
                   # Second\n-----BEGIN CERTIFICATE-----\nBAUG\n-----END CERTIFICATE-----\n";
        let der = decode(pem.as_bytes()).unwrap();
        let der: Vec<&[u8]> = der.iter().map(|d| d.as_ref()).collect();
        assert_eq!(der, [&[0u8, 1, 2, 3][..], &[4, 5, 6]]);
    }

    #[test]
    fn a_bundle_that_is_not_pem_or_holds_no_certificate_is_refused_with_the_reason() {
        let broken = b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
        let e = decode(broken).expect_err("refused");
        assert!(
            e.starts_with("not a PEM bundle of certificates: root 1"),
            "{e}"
        );
        let unended = b"-----BEGIN CERTIFICATE-----\nAAEC\n";
        let e = decode(unended).expect_err("refused");
        assert!(e.ends_with("root 1 has no END line"), "{e}");
        let e = decode(b"just text\n").expect_err("refused");
        assert_eq!(e, "no certificate in it");
    }
}
