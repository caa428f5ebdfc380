//! Helpers for the HTTPS server tests: a throw-away PKI, a server on 127.0.0.1:0 serving a tiny
//! router, a rustls client speaking raw HTTP/1.1, and the `openssl s_client` command.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers: a failure should stop the test loudly"
)]

use std::io;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::routing;
use axum::{Extension, Router};
use kawal_api::server::{self, ConnInfo, Limits, ServerStats};
use kawal_api::tls::{self, ClientAuth, TlsHandle, TlsIdentity};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use zeroize::Zeroizing;

/// Upper bound on any single network wait in these tests.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A test certificate authority (ECDSA P-256).
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
}

/// A certificate issued by a [`Ca`], with its PKCS#8 key.
pub struct Leaf {
    pub cert_pem: String,
    pub cert_der: CertificateDer<'static>,
    pub key_der: Vec<u8>,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn issue(&self, name: &str, sans: &[&str], purpose: ExtendedKeyUsagePurpose) -> Leaf {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![purpose];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    /// A server certificate for 127.0.0.1 and localhost.
    pub fn server_identity(&self) -> TlsIdentity {
        let leaf = self.issue(
            "kawal test device",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        TlsIdentity {
            cert_chain_pem: leaf.cert_pem,
            key_pkcs8_der: Zeroizing::new(leaf.key_der),
        }
    }

    /// A client certificate for automation.
    pub fn client_leaf(&self, name: &str) -> Leaf {
        self.issue(name, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// Says who asked and whether a verified client certificate came with the connection.
async fn ping(Extension(info): Extension<ConnInfo>) -> String {
    format!(
        "peer={} client_cert={}",
        info.peer,
        info.client_cert_der.is_some()
    )
}

/// Reads the whole body, as a real handler would.
async fn echo(body: Bytes) -> String {
    format!("len={}", body.len())
}

/// Reads the body with no limit of its own, as a careless handler might: only the server's
/// cap on the body stream protects it.
async fn raw(body: Body) -> (StatusCode, String) {
    match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => (StatusCode::OK, format!("len={}", bytes.len())),
        Err(e) => (StatusCode::PAYLOAD_TOO_LARGE, format!("cut off: {e}")),
    }
}

/// A request that takes a while, to see shutdown let it finish.
async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_millis(500)).await;
    "slow done"
}

fn app() -> Router {
    Router::new()
        .route("/ping", routing::get(ping))
        .route("/echo", routing::post(echo))
        .route("/raw", routing::post(raw))
        .route("/slow", routing::get(slow))
}

/// A running server and the means to stop it.
pub struct TestServer {
    pub addr: SocketAddr,
    pub ca: Ca,
    pub stats: Arc<ServerStats>,
    /// The configuration in force; replace it to renew the server's certificate.
    pub tls: TlsHandle,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<io::Result<()>>,
}

impl TestServer {
    pub async fn start(limits: Limits) -> Self {
        Self::start_with(limits, None).await
    }

    pub async fn start_with(limits: Limits, client_auth: Option<&ClientAuth>) -> Self {
        let ca = Ca::new("kawal test server CA");
        let tls = TlsHandle::new(tls::server_config(&ca.server_identity(), client_auth).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(ServerStats::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::serve_with_stats(
            listener,
            tls.clone(),
            app(),
            limits,
            Arc::clone(&stats),
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            ca,
            stats,
            tls,
            stop: Some(stop),
            task,
        }
    }

    /// Resolves the shutdown future; returns how long `serve` took to return.
    pub async fn stop(mut self) -> Duration {
        let started = Instant::now();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(IO_TIMEOUT, &mut self.task)
            .await
            .expect("serve did not return after shutdown")
            .unwrap()
            .unwrap();
        started.elapsed()
    }

    pub fn client(&self) -> Arc<rustls::ClientConfig> {
        client_config(&self.ca.cert_pem, None)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // A failed test must not leave the server running in the shared runtime.
        self.task.abort();
    }
}

/// A rustls client trusting `ca_pem`, optionally presenting `client_cert`.
pub fn client_config(ca_pem: &str, client_cert: Option<&Leaf>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = rustls::pki_types::pem::PemObject::from_pem_slice(ca_pem.as_bytes()).unwrap();
    roots.add(ca).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client_cert {
        None => builder.with_no_client_auth(),
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![leaf.cert_der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der.clone())),
            )
            .unwrap(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Connects and completes the TLS handshake (as far as the client can tell).
pub async fn connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(IO_TIMEOUT, TlsConnector::from(config).connect(name, tcp))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// Sends `raw` and reads one response (headers, then a Content-Length body), leaving the
/// connection open for the next request.
pub async fn exchange(stream: &mut TlsStream<TcpStream>, raw: &[u8]) -> io::Result<Reply> {
    stream.write_all(raw).await?;
    stream.flush().await?;
    tokio::time::timeout(IO_TIMEOUT, read_reply(stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no response"))?
}

/// A GET for `path` on a keep-alive connection.
pub async fn get(stream: &mut TlsStream<TcpStream>, path: &str) -> io::Result<Reply> {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    exchange(stream, raw.as_bytes()).await
}

pub async fn read_reply<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<Reply> {
    let mut buf = Vec::new();
    let mut chunk = [0_u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("closed after {} bytes", buf.len()),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, head.clone()))?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(Reply {
        status,
        head,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Reads until the peer closes (EOF or error) or `limit` passes. Returns what was read and
/// whether the connection was closed.
pub async fn read_until_closed<S: AsyncRead + Unpin>(
    stream: &mut S,
    limit: Duration,
) -> (Vec<u8>, bool) {
    let mut seen = Vec::new();
    let mut chunk = [0_u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return (seen, false),
            Ok(Ok(0) | Err(_)) => return (seen, true),
            Ok(Ok(n)) => seen.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Whether `bytes` hold anything that looks like an HTTP response.
pub fn has_http_response(bytes: &[u8]) -> bool {
    bytes.windows(5).any(|w| w == b"HTTP/")
}

/// What `openssl s_client` did.
#[derive(Debug)]
pub struct OpensslRun {
    pub success: bool,
    /// stdout and stderr together.
    pub output: String,
}

/// Runs `openssl s_client` against `addr` with `args`, feeding it `stdin`, under a time-out.
pub async fn s_client(addr: SocketAddr, args: &[&str], stdin: &[u8]) -> OpensslRun {
    let mut child = tokio::process::Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the `openssl` command is needed (Debian package openssl)");
    let mut input = child.stdin.take().unwrap();
    // A refused handshake may close the pipe before we finish writing; that is fine.
    let _ = input.write_all(stdin).await;
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("openssl s_client hung")
        .unwrap();
    OpensslRun {
        success: out.status.success(),
        output: format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Polls `cond` every 20 ms for up to `limit`.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}
