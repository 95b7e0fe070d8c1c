//! A Kafka broker that accepts only clients signed in with SASL/SCRAM-SHA-512, and
//! optionally a TLS front for it: what Amazon MSK's port 9096 asks of a client,
//! on this machine.
//!
//! The broker is tansu in a process of its own, on a free port, with its own
//! sqlite file: users are created while authentication is off (tansu creates them
//! through the Kafka protocol), then the broker restarts with `--authentication`.
//! tansu 0.6.0 cannot serve TLS itself (its `--cert` and `--key` flags exclude each
//! other), so TLS ends in a proxy here, with a certificate from a CA of the test's
//! own; the broker advertises the proxy, so every connection goes through it.

use crate::{KillOnDrop, unique};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
};
use shared::config::Secret;
use shared::kafka::{KafkaSettings, SaslCredentials, SecurityProtocol, create_topics};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub const USERNAME: &str = "pipeline";

/// The tansu binary: `$TANSU_BIN` (set by scripts/local-env.sh), else the cache.
fn tansu() -> PathBuf {
    let path = std::env::var("TANSU_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/ticket-pipeline/tansu-0.6.0/bin/tansu")
        });
    assert!(
        path.exists(),
        "{path:?} is missing: `scripts/local-stack.sh install` (or `make test`) builds tansu"
    );
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn wait_listening(port: u16) {
    let what = format!("tansu listening on 127.0.0.1:{port}");
    crate::eventually(Duration::from_secs(15), &what, || async {
        TcpStream::connect(("127.0.0.1", port)).await.ok().map(drop)
    })
    .await;
}

/// A tansu process on `port`, advertising `advertised`, killed when dropped.
async fn start_broker(
    dir: &PathBuf,
    port: u16,
    advertised: u16,
    authentication: bool,
) -> KillOnDrop {
    let mut command = Command::new(tansu());
    command
        .current_dir(dir)
        .arg("broker")
        .arg(format!("--listener-url=tcp://127.0.0.1:{port}"))
        .arg(format!(
            "--advertised-listener-url=tcp://127.0.0.1:{advertised}"
        ))
        // Relative: tansu 0.6.0 reads the path of a sqlite URL from the cwd.
        .arg("--storage-engine=sqlite://tansu.db")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if authentication {
        command.arg("--authentication");
    }
    let broker = KillOnDrop(command.spawn().expect("tansu starts"));
    wait_listening(port).await;
    broker
}

/// A TLS-terminating proxy in front of 127.0.0.1:`upstream`, stopped when dropped.
struct TlsFront {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsFront {
    async fn start(
        upstream: u16,
        certificate: CertificateDer<'static>,
        key: &KeyPair,
    ) -> (Self, u16) {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![certificate], key)
            .expect("a valid certificate and key");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that does not trust the certificate fails here.
                    let Ok(mut tls) = acceptor.accept(client).await else {
                        return;
                    };
                    let Ok(mut broker) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut broker).await;
                });
            }
        });
        (TlsFront { task }, port)
    }
}

fn named(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

/// A CA of the test's own and a certificate for 127.0.0.1 signed by it.
fn certificates() -> (String, CertificateDer<'static>, KeyPair) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct names: a leaf named like its issuer would look self-signed.
    ca_params.distinguished_name = named("ticket-pipeline test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let broker_key = KeyPair::generate().unwrap();
    let mut broker_params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    broker_params.distinguished_name = named("127.0.0.1");
    let broker = broker_params.signed_by(&broker_key, &issuer).unwrap();
    (ca.pem(), broker.der().clone(), broker_key)
}

/// The broker, its users' password, and (with TLS) the proxy and the CA file.
pub struct SecuredKafka {
    dir: PathBuf,
    password: String,
    /// Where clients connect: the broker itself, or the TLS proxy.
    pub bootstrap: SocketAddr,
    /// The CA's PEM file, with TLS.
    pub ca_file: Option<PathBuf>,
    _broker: KillOnDrop,
    _tls: Option<TlsFront>,
}

impl Drop for SecuredKafka {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl SecuredKafka {
    /// SASL/SCRAM over plaintext (`tls` false) or over TLS, with `topics` created.
    pub async fn start(topics: &[&str], tls: bool) -> SecuredKafka {
        let dir = std::env::temp_dir().join(unique("secured-kafka"));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let password = unique("pw");

        // Users and topics, while authentication is off.
        let setup = start_broker(&dir, port, port, false).await;
        let created = Command::new(tansu())
            .args(["user", "create", "--mechanism", "scram512"])
            .arg(format!("--broker=tcp://127.0.0.1:{port}"))
            .args([USERNAME, &password])
            .output()
            .expect("tansu user create runs");
        assert!(
            created.status.success(),
            "tansu user create: {}",
            String::from_utf8_lossy(&created.stderr)
        );
        create_topics(&KafkaSettings::new(format!("127.0.0.1:{port}")), topics, 1)
            .await
            .unwrap();
        drop(setup);

        let (tls, ca_file, advertised) = if tls {
            let (ca_pem, certificate, key) = certificates();
            let ca_file = dir.join("ca.pem");
            std::fs::write(&ca_file, ca_pem).unwrap();
            let (front, front_port) = TlsFront::start(port, certificate, &key).await;
            (Some(front), Some(ca_file), front_port)
        } else {
            (None, None, port)
        };
        let broker = start_broker(&dir, port, advertised, true).await;
        SecuredKafka {
            dir,
            password,
            bootstrap: SocketAddr::from(([127, 0, 0, 1], advertised)),
            ca_file,
            _broker: broker,
            _tls: tls,
        }
    }

    /// The credentials as an MSK SCRAM secret holds them.
    pub fn secret_json(&self) -> Secret {
        Secret::new(
            serde_json::json!({"username": USERNAME, "password": self.password}).to_string(),
        )
    }

    pub fn protocol(&self) -> SecurityProtocol {
        if self.ca_file.is_some() {
            SecurityProtocol::SaslSsl
        } else {
            SecurityProtocol::SaslPlaintext
        }
    }

    /// A client's settings: signed in, and trusting the test CA with TLS.
    pub fn settings(&self) -> KafkaSettings {
        let credentials =
            SaslCredentials::from_secret_json("SCRAM-SHA-512", &self.secret_json()).unwrap();
        let settings = KafkaSettings::new(self.bootstrap.to_string())
            .secured(self.protocol(), Some(credentials))
            .unwrap();
        match &self.ca_file {
            Some(ca) => settings.trusting(ca.to_string_lossy()),
            None => settings,
        }
    }
}
