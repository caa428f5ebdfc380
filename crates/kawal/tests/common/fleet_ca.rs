//! A fleet CA with an EST server, as a gateway vendor or operator runs one for its devices
//! (RFC 7030 `simplereenroll` over mutual TLS): the client must present a certificate this
//! CA issued, and gets its CSR's key certified as a device certificate (server and client
//! authentication, `localhost` and the loopback addresses). It can be told to be away (every
//! connection dropped) and to come back, and counts what it issued.
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer};
use time::OffsetDateTime;

/// What the server does with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answers: a certificate for the CSR.
    Serve,
    /// Drops every connection at once (the CA is away).
    Away,
}

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// Validity of what it issues, from now: (start, end) in seconds.
    validity: (i64, i64),
}

impl Ca {
    fn issue(&self, csr_der: &[u8]) -> Result<Vec<u8>, String> {
        let der = CertificateSigningRequestDer::from(csr_der.to_vec());
        let mut csr = CertificateSigningRequestParams::from_der(&der).map_err(|e| e.to_string())?;
        let now = OffsetDateTime::now_utc();
        let p = &mut csr.params;
        p.not_before = now + time::Duration::seconds(self.validity.0);
        p.not_after = now + time::Duration::seconds(self.validity.1);
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.subject_alt_names.extend([
            SanType::DnsName("localhost".try_into().unwrap()),
            SanType::IpAddress(Ipv4Addr::LOCALHOST.into()),
        ]);
        p.use_authority_key_identifier_extension = true;
        let cert = csr.signed_by(&self.issuer).map_err(|e| e.to_string())?;
        Ok(cert.der().to_vec())
    }
}

/// The fleet CA and its EST server on a loopback port.
pub struct FleetCa {
    /// The CA certificate, PEM (what the gateway pins as `device.renewal.ca-file`).
    pub ca_file: PathBuf,
    /// The EST server's address.
    pub addr: SocketAddr,
    ca: Arc<Mutex<Ca>>,
    mode: Arc<Mutex<Mode>>,
    issued: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FleetCa {
    /// A new CA in `dir`, its EST server listening.
    pub fn start(dir: &std::path::Path) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "kawal test fleet CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = params.self_signed(&key).unwrap();
        let ca_file = dir.join("fleet-ca.crt.pem");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();
        let ca_der = ca_cert.der().clone();

        // The EST server's own certificate, from the same CA.
        let server_key = KeyPair::generate().unwrap();
        let mut sp = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        sp.subject_alt_names
            .push(SanType::IpAddress(Ipv4Addr::LOCALHOST.into()));
        sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let issuer = Issuer::new(params, key);
        let server_cert = sp.signed_by(&server_key, &issuer).unwrap();

        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_der.clone()).unwrap();
        let provider = kawal_crypto::tls::provider();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.into(),
            provider.clone(),
        )
        .build()
        .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![server_cert.der().clone(), ca_der],
                PrivateKeyDer::try_from(server_key.serialize_der()).unwrap(),
            )
            .unwrap();
        let config = Arc::new(config);

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let ca = Arc::new(Mutex::new(Ca {
            issuer,
            validity: (-60, 2 * 86_400),
        }));
        let mode = Arc::new(Mutex::new(Mode::Serve));
        let issued = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (ca, mode, issued, stop) = (
                Arc::clone(&ca),
                Arc::clone(&mode),
                Arc::clone(&issued),
                Arc::clone(&stop),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((tcp, _)) => {
                            if *mode.lock().unwrap() == Mode::Away {
                                drop(tcp);
                                continue;
                            }
                            serve(tcp, &config, &ca, &issued);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })
        };
        Self {
            ca_file,
            addr,
            ca,
            mode,
            issued,
            stop,
            thread: Some(thread),
        }
    }

    /// The EST base URL.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// Away or serving.
    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Certificates issued over EST so far.
    pub fn issued(&self) -> usize {
        self.issued.load(Ordering::Relaxed)
    }

    /// Issues a certificate for a CSR (PEM) directly, valid from `start` to `end` seconds
    /// from now (the first certificate, which the operator installs): PEM.
    pub fn issue_pem(&self, csr_pem: &str, start: i64, end: i64) -> String {
        let body: String = csr_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap();
        let mut ca = self.ca.lock().unwrap();
        let saved = ca.validity;
        ca.validity = (start, end);
        let cert = ca.issue(&der);
        ca.validity = saved;
        pem(&cert.unwrap())
    }
}

impl Drop for FleetCa {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = "-----BEGIN CERTIFICATE-----\n".to_owned();
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out + "-----END CERTIFICATE-----\n"
}

/// One request on one connection: `POST /.well-known/est/simplereenroll` with a base64 CSR.
fn serve(
    tcp: std::net::TcpStream,
    config: &Arc<rustls::ServerConfig>,
    ca: &Mutex<Ca>,
    issued: &AtomicUsize,
) {
    tcp.set_nonblocking(false).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let conn = rustls::ServerConnection::new(Arc::clone(config)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head_end, length) = loop {
        let Ok(n) = tls.read(&mut chunk) else { return };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (i + 4, length);
        }
        if buf.len() > 64 * 1024 {
            return;
        }
    };
    while buf.len() < head_end + length {
        let Ok(n) = tls.read(&mut chunk) else { return };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let body: Vec<u8> = buf[head_end..head_end + length]
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let answer = if !head.starts_with("POST /.well-known/est/simplereenroll ") {
        Err((404, "not found".to_owned()))
    } else if tls
        .conn
        .peer_certificates()
        .is_none_or(<[CertificateDer<'_>]>::is_empty)
    {
        Err((401, "a client certificate is required".to_owned()))
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(&body)
            .map_err(|e| (400, e.to_string()))
            .and_then(|csr| ca.lock().unwrap().issue(&csr).map_err(|e| (400, e)))
    };
    let response = match answer {
        Ok(der) => {
            issued.fetch_add(1, Ordering::Relaxed);
            let p7 = kawal_pki::pkcs7_certs_only(std::slice::from_ref(&der));
            let b64 = base64::engine::general_purpose::STANDARD.encode(p7);
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/pkcs7-mime; smime-type=certs-only\r\n\
                 Content-Transfer-Encoding: base64\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b64}",
                b64.len()
            )
        }
        Err((status, why)) => format!(
            "HTTP/1.1 {status} Refused\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{why}",
            why.len()
        ),
    };
    let _ = tls.write_all(response.as_bytes());
    let _ = tls.flush();
    tls.conn.send_close_notify();
    let _ = tls.flush();
}
