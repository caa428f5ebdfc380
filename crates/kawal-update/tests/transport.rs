//! The HTTPS transport against a misbehaving repository server (G045 PL-2-3; ST-D-13, ST-D-14).
//!
//! A real HTTPS server on 127.0.0.1 (tokio-rustls, HTTP/1.1 written by hand so it can misbehave
//! exactly as told) serves a repository made by `kawal_update::repo`. Each test makes the server
//! misbehave on one path and checks the refusal, its bound in time or bytes, and that the
//! device's trusted metadata did not change.

#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed expectation is the test failing"
)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kawal_update::Error;
use kawal_update::repo::{self, InitOptions};
use kawal_update::transport::{HttpsSettings, HttpsTransport};
use kawal_update::verify::{self, MetadataLimits, Source, Trust, VerifiedRepository};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tough::{Transport, TransportErrorKind};
use url::Url;

const BUNDLE: &str = "kawal-1.0.0.kup";

/// A test certificate authority.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("ca key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("ca cert");
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for 127.0.0.1 and localhost.
    fn server_config(&self) -> rustls::ServerConfig {
        let key = KeyPair::generate().expect("server key");
        let params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("params");
        let cert = params.signed_by(&key, &self.issuer).expect("server cert");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(cert.der().to_vec())], key)
            .expect("server config")
    }

    fn write_pem(&self, path: &Path) -> PathBuf {
        std::fs::write(path, &self.pem).expect("write ca");
        path.to_path_buf()
    }
}

/// How the server misbehaves on one path.
#[derive(Debug, Clone)]
enum Misbehave {
    /// The real file, one byte per interval.
    Dribble(Duration),
    /// Reads the request and never answers.
    Stall,
    /// No length, zeros until the client hangs up.
    Endless,
    /// Claims this `Content-Length`, then sends zeros.
    ClaimLength(u64),
    /// `302 Found` to this location.
    Redirect(String),
    /// This status, no body.
    Status(u16),
}

/// An HTTPS repository server on loopback, stopped on drop.
struct Server {
    addr: SocketAddr,
    rules: Arc<Mutex<HashMap<String, Misbehave>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every open connection.
        self.task.abort();
    }
}

impl Server {
    async fn start(root: PathBuf, tls: rustls::ServerConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let rules: Arc<Mutex<HashMap<String, Misbehave>>> = Arc::default();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let shared = Arc::clone(&rules);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            // Bounded: no test makes more than a few dozen requests.
            for _ in 0..1000 {
                let Ok((tcp, _)) = listener.accept().await else {
                    break;
                };
                let acceptor = acceptor.clone();
                let root = root.clone();
                let rules = Arc::clone(&shared);
                connections.spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = handle(tls, &root, &rules).await;
                    }
                });
            }
        });
        Self { addr, rules, task }
    }

    fn url(&self) -> Url {
        Url::parse(&format!("https://127.0.0.1:{}/", self.addr.port())).expect("url")
    }

    fn misbehave(&self, path: &str, how: Misbehave) {
        self.rules
            .lock()
            .expect("rules")
            .insert(path.to_owned(), how);
    }
}

async fn handle<S: AsyncReadExt + AsyncWriteExt + Unpin>(
    mut stream: S,
    root: &Path,
    rules: &Mutex<HashMap<String, Misbehave>>,
) -> std::io::Result<()> {
    let mut request = Vec::new();
    let mut buf = [0_u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    let request = String::from_utf8_lossy(&request);
    let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let rule = rules.lock().expect("rules").get(&path).cloned();
    // `/mirror/...` serves the same files, as a same-origin redirect target.
    let file_path = path.strip_prefix("/mirror").unwrap_or(&path);
    let file = (!file_path.contains(".."))
        .then(|| std::fs::read(root.join(file_path.trim_start_matches('/'))).ok())
        .flatten();
    let head = |status: &str, extra: &str| {
        format!("HTTP/1.1 {status}\r\nConnection: close\r\n{extra}\r\n").into_bytes()
    };
    match (rule, file) {
        (None, Some(body)) => {
            let len = format!("Content-Length: {}\r\n", body.len());
            stream.write_all(&head("200 OK", &len)).await?;
            stream.write_all(&body).await?;
        }
        (None, None) => {
            stream
                .write_all(&head("404 Not Found", "Content-Length: 0\r\n"))
                .await?;
        }
        (Some(Misbehave::Dribble(interval)), body) => {
            let body = body.unwrap_or_default();
            let len = format!("Content-Length: {}\r\n", body.len());
            stream.write_all(&head("200 OK", &len)).await?;
            for byte in body {
                stream.write_all(&[byte]).await?;
                stream.flush().await?;
                tokio::time::sleep(interval).await;
            }
        }
        (Some(Misbehave::Stall), _) => tokio::time::sleep(Duration::from_secs(60)).await,
        (Some(Misbehave::Endless), _) => {
            stream.write_all(&head("200 OK", "")).await?;
            // Bounded at 1.6 GB; the client is expected to hang up long before.
            for _ in 0..100_000 {
                stream.write_all(&[0_u8; 16 * 1024]).await?;
            }
        }
        (Some(Misbehave::ClaimLength(n)), _) => {
            let len = format!("Content-Length: {n}\r\n");
            stream.write_all(&head("200 OK", &len)).await?;
            for _ in 0..100_000 {
                stream.write_all(&[0_u8; 16 * 1024]).await?;
            }
        }
        (Some(Misbehave::Redirect(to)), _) => {
            let location = format!("Location: {to}\r\nContent-Length: 0\r\n");
            stream.write_all(&head("302 Found", &location)).await?;
        }
        (Some(Misbehave::Status(code)), _) => {
            let status = format!("{code} Refused");
            stream
                .write_all(&head(&status, "Content-Length: 0\r\n"))
                .await?;
        }
    }
    stream.flush().await?;
    stream.shutdown().await
}

/// A vendor repository, its pinned CA, a device that trusts its first root, and a server.
struct World {
    tmp: tempfile::TempDir,
    ca: Ca,
    trust: Trust,
    server: Server,
}

impl World {
    async fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let vendor = tmp.path().join("vendor");
        repo::init(&vendor, &InitOptions::default())
            .await
            .expect("init");
        let bundle = tmp.path().join(BUNDLE);
        std::fs::write(&bundle, b"kawal bundle 1.0.0 ".repeat(2000)).expect("bundle");
        let custom = BTreeMap::from([("version".to_owned(), "1.0.0".into())]);
        repo::add(&vendor, &bundle, custom).await.expect("add");
        let www = tmp.path().join("www");
        repo::publish(&vendor, &www).await.expect("publish");

        let trusted_root = tmp.path().join("trusted-root.json");
        std::fs::copy(vendor.join("metadata/1.root.json"), &trusted_root).expect("root");
        let trust = Trust {
            trusted_root,
            datastore: tmp.path().join("device-trust"),
            limits: MetadataLimits::default(),
        };
        let ca = Ca::new("kawal test vendor CA");
        let server = Server::start(www, ca.server_config()).await;
        Self {
            tmp,
            ca,
            trust,
            server,
        }
    }

    /// Settings pinning this world's CA, with short time-outs for the tests.
    fn settings(&self) -> HttpsSettings {
        let ca = self.ca.write_pem(&self.tmp.path().join("vendor-ca.pem"));
        let mut s = HttpsSettings::new(vec![ca]);
        s.connect_timeout = Duration::from_secs(2);
        s.header_timeout = Duration::from_secs(2);
        s.file_timeout = Duration::from_secs(10);
        s.progress_window = Duration::from_secs(1);
        s.min_progress_bytes = 1;
        s
    }

    fn source(&self, settings: &HttpsSettings) -> Source {
        Source::https(self.server.url(), settings).expect("source")
    }

    async fn load(&self, settings: &HttpsSettings) -> Result<VerifiedRepository, Error> {
        verify::load(&self.trust, &self.source(settings)).await
    }

    fn datastore(&self) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<_> = std::fs::read_dir(&self.trust.datastore)
            .map(|rd| {
                rd.map(|e| {
                    let e = e.expect("entry");
                    let name = e.file_name().to_string_lossy().into_owned();
                    (name, std::fs::read(e.path()).expect("read"))
                })
                .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    /// Loads with `settings`, expecting a refusal that leaves the trusted state unchanged.
    async fn refused(&self, settings: &HttpsSettings) -> Error {
        let before = self.datastore();
        let err = self.load(settings).await.expect_err("must be refused");
        assert!(err.is_rejection(), "{err:?}");
        assert_eq!(before, self.datastore(), "trusted state changed: {err}");
        err
    }
}

async fn read_target(repo: &VerifiedRepository) -> Result<Vec<u8>, Error> {
    let target = repo.target(BUNDLE)?;
    let mut out = Vec::new();
    repo.open(&target).await?.copy_to(&mut out).await?;
    Ok(out)
}

/// G045: PL-2-3
#[tokio::test]
async fn loads_a_good_update_over_https() {
    let w = World::new().await;
    let repo = w.load(&w.settings()).await.expect("load over https");
    assert_eq!(repo.versions(), [1, 2, 2, 2]);
    assert_eq!(
        repo.target(BUNDLE).expect("target").custom["version"],
        "1.0.0"
    );
    let bytes = read_target(&repo).await.expect("read target");
    assert_eq!(bytes, b"kawal bundle 1.0.0 ".repeat(2000));
}

/// G045: PL-2-3
#[tokio::test]
async fn refuses_a_server_not_under_the_pinned_root() {
    let w = World::new().await;
    w.load(&w.settings()).await.expect("trusted once");
    // The same repository, served with a certificate from another CA (a man in the middle, or
    // a server under a public CA): refused although the metadata itself would verify.
    let rogue = Ca::new("rogue CA");
    let www = w.tmp.path().join("www");
    let impostor = Server::start(www, rogue.server_config()).await;
    let before = w.datastore();
    let source = Source::https(impostor.url(), &w.settings()).expect("source");
    let err = verify::load(&w.trust, &source)
        .await
        .expect_err("untrusted server");
    assert!(
        matches!(err, Error::RejectedServerCertificate { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("pinned"), "{err}");
    assert_eq!(before, w.datastore());
}

/// G045: PL-2-3
#[tokio::test]
async fn refuses_plain_http() {
    let w = World::new().await;
    let plain = Url::parse(&format!("http://127.0.0.1:{}/", w.server.addr.port())).expect("url");
    let err = Source::https(plain.clone(), &w.settings()).expect_err("http base");
    assert!(matches!(err, Error::InsecureUrl { .. }), "{err:?}");
    // The transport itself refuses too, whatever URL tough hands it.
    let transport = HttpsTransport::new(&w.settings()).expect("transport");
    let url = plain.join("metadata/timestamp.json").expect("url");
    let Err(err) = transport.fetch(url).await else {
        panic!("http fetch must be refused");
    };
    assert_eq!(err.kind(), TransportErrorKind::UnsupportedUrlScheme);
}

/// G045: PL-2-3
#[tokio::test]
async fn aborts_slow_metadata_by_the_progress_rule() {
    let w = World::new().await;
    w.server.misbehave(
        "/metadata/timestamp.json",
        Misbehave::Dribble(Duration::from_millis(50)),
    );
    let mut s = w.settings();
    s.progress_window = Duration::from_millis(300);
    s.min_progress_bytes = 256; // the dribble manages about 6 bytes per window
    let started = Instant::now();
    let err = w.refused(&s).await;
    let took = started.elapsed();
    assert!(
        matches!(err, Error::RejectedSlowRetrieval { min_bytes: 256, .. }),
        "{err:?}"
    );
    assert!(took < Duration::from_secs(3), "aborted only after {took:?}");
}

/// G045: PL-2-3
#[tokio::test]
async fn aborts_a_slow_target_at_the_file_time_out() {
    let w = World::new().await;
    let mut s = w.settings();
    let repo = w.load(&s).await.expect("metadata loads");
    // Fast enough for the progress rule (100 bytes/s against 1 byte/s), too slow for the file.
    let hash_prefixed = std::fs::read_dir(w.tmp.path().join("www/targets"))
        .expect("targets")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with(BUNDLE))
        .expect("published target");
    w.server.misbehave(
        &format!("/targets/{hash_prefixed}"),
        Misbehave::Dribble(Duration::from_millis(10)),
    );
    s.file_timeout = Duration::from_secs(1);
    let repo_slow = w.load(&s).await.expect("metadata again");
    drop(repo);
    let started = Instant::now();
    let err = read_target(&repo_slow).await.expect_err("slow target");
    let took = started.elapsed();
    assert!(matches!(err, Error::RejectedTimeout { .. }), "{err:?}");
    assert!(took < Duration::from_secs(4), "aborted only after {took:?}");
}

/// G045: PL-2-3
#[tokio::test]
async fn aborts_a_server_that_never_answers() {
    let w = World::new().await;
    w.server
        .misbehave("/metadata/timestamp.json", Misbehave::Stall);
    let mut s = w.settings();
    s.header_timeout = Duration::from_millis(500);
    let started = Instant::now();
    let err = w.refused(&s).await;
    assert!(matches!(err, Error::RejectedTimeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// G045: PL-2-3
#[tokio::test]
async fn aborts_an_endless_target_at_the_signed_length() {
    let w = World::new().await;
    let s = w.settings();
    let repo = w.load(&s).await.expect("metadata loads");
    let signed = repo.target(BUNDLE).expect("target").length;
    for entry in std::fs::read_dir(w.tmp.path().join("www/targets")).expect("targets") {
        let name = entry.expect("entry").file_name();
        w.server.misbehave(
            &format!("/targets/{}", name.to_string_lossy()),
            Misbehave::Endless,
        );
    }
    let err = read_target(&repo).await.expect_err("endless target");
    assert!(
        matches!(err, Error::RejectedTooLarge { max_size, .. } if max_size == signed),
        "{err:?}"
    );
}

/// G045: PL-2-3
#[tokio::test]
async fn aborts_endless_metadata_at_the_size_cap() {
    let w = World::new().await;
    w.server
        .misbehave("/metadata/timestamp.json", Misbehave::Endless);
    let err = w.refused(&w.settings()).await;
    assert!(
        matches!(err, Error::RejectedTooLarge { max_size, .. }
            if max_size == MetadataLimits::default().max_timestamp_size),
        "{err:?}"
    );
}

/// G045: PL-2-3
#[tokio::test]
async fn refuses_a_content_length_above_the_cap_before_reading() {
    let w = World::new().await;
    w.server.misbehave(
        "/metadata/timestamp.json",
        Misbehave::ClaimLength(50 * 1024 * 1024 * 1024),
    );
    let mut s = w.settings();
    s.max_file_size = 1024 * 1024;
    let err = w.refused(&s).await;
    assert!(
        matches!(err, Error::RejectedTooLarge { max_size, .. } if max_size == 1024 * 1024),
        "{err:?}"
    );
}

/// G045: PL-2-3
#[tokio::test]
async fn refuses_redirects_off_the_origin_and_follows_one_on_it() {
    let w = World::new().await;
    let port = w.server.addr.port();
    let path = "/metadata/timestamp.json";
    // Same server, same certificate, but another origin (host name): refused.
    w.server.misbehave(
        path,
        Misbehave::Redirect(format!("https://localhost:{port}{path}")),
    );
    let err = w.refused(&w.settings()).await;
    assert!(
        matches!(err, Error::RejectedRedirect { why, .. } if why.contains("origin")),
        "{err:?}"
    );
    // Down to plain HTTP: refused.
    w.server.misbehave(
        path,
        Misbehave::Redirect(format!("http://127.0.0.1:{port}{path}")),
    );
    let err = w.refused(&w.settings()).await;
    assert!(
        matches!(err, Error::RejectedRedirect { why, .. } if why.contains("https")),
        "{err:?}"
    );
    // Within the origin, over HTTPS: followed.
    w.server
        .misbehave(path, Misbehave::Redirect(format!("/mirror{path}")));
    w.load(&w.settings()).await.expect("same-origin redirect");
}

/// G045: PL-2-3
#[tokio::test]
async fn not_found_and_server_errors_are_clear() {
    let w = World::new().await;
    for code in [404_u16, 500] {
        w.server
            .misbehave("/metadata/timestamp.json", Misbehave::Status(code));
        let err = w.refused(&w.settings()).await;
        assert!(
            matches!(err, Error::HttpStatus { status, .. } if status == code),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains(&format!("HTTP status {code}")) && text.contains("timestamp.json"),
            "{text}"
        );
    }
}
