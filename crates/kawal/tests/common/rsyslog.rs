//! A real log collector for forwarding tests: Debian's rsyslog with its GnuTLS driver, mutual
//! TLS, octet-counted frames, one raw message per line in a file (as docs/log-forward.md
//! configures it). Its certificate comes from a collector CA made here; the devices it
//! accepts are those whose certificates chain to the CA given at start.
//!
//! rsyslog must be installed (`apt-get install rsyslog rsyslog-gnutls`); without it the tests
//! fail, unless `KAWAL_SKIP_RSYSLOG=1`.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    clippy::disallowed_macros,
    reason = "test helpers"
)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

/// `true` if the test is to be skipped (`KAWAL_SKIP_RSYSLOG=1` and no rsyslog); panics with
/// instructions if rsyslog is missing otherwise.
pub fn missing() -> bool {
    let driver = [
        "/usr/lib/x86_64-linux-gnu/rsyslog",
        "/usr/lib/aarch64-linux-gnu/rsyslog",
    ]
    .iter()
    .any(|d| Path::new(d).join("lmnsd_gtls.so").exists());
    if Path::new(RSYSLOGD).exists() && driver {
        return false;
    }
    if std::env::var("KAWAL_SKIP_RSYSLOG").is_ok_and(|v| v == "1") {
        eprintln!("rsyslog not installed; skipped because KAWAL_SKIP_RSYSLOG=1");
        return true;
    }
    panic!(
        "rsyslog with its TLS driver is required for this test: \
         apt-get install -y rsyslog rsyslog-gnutls (or set KAWAL_SKIP_RSYSLOG=1 to skip)"
    );
}

/// The collector's CA (which devices pin) and its server certificate for `localhost`.
pub struct CollectorPki {
    /// The CA certificate, PEM, written to `ca_file`.
    pub ca_file: PathBuf,
    server_cert: String,
    server_key: String,
}

impl CollectorPki {
    /// Makes the CA and the server certificate; writes the CA to `dir/collector-ca.pem`.
    pub fn new(dir: &Path) -> Self {
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(DnType::CommonName, "kawal test collector CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut leaf =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        leaf.distinguished_name
            .push(DnType::CommonName, "collector");
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let ca_file = dir.join("collector-ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();
        Self {
            ca_file,
            server_cert: cert.pem(),
            server_key: key.serialize_pem(),
        }
    }
}

/// rsyslogd in the foreground on 127.0.0.1:`port`, writing raw messages to `out`.
pub struct Collector {
    dir: PathBuf,
    pub port: u16,
    pub out: PathBuf,
    child: Option<Child>,
}

impl Collector {
    /// Writes the configuration (the collector presents its certificate from `pki`; clients
    /// must chain to `client_ca_pem` and be named `peer`) and starts rsyslogd on `port`.
    pub fn start(
        dir: &Path,
        pki: &CollectorPki,
        client_ca_pem: &str,
        peer: &str,
        port: u16,
    ) -> Self {
        std::fs::create_dir_all(dir.join("work")).unwrap();
        std::fs::write(dir.join("ca.pem"), client_ca_pem).unwrap();
        std::fs::write(dir.join("server.pem"), &pki.server_cert).unwrap();
        std::fs::write(dir.join("server.key"), &pki.server_key).unwrap();
        let out = dir.join("collected.log");
        let d = dir.display();
        let conf = format!(
            r#"global(workDirectory="{d}/work" maxMessageSize="2m"
       DefaultNetstreamDriver="gtls"
       DefaultNetstreamDriverCAFile="{d}/ca.pem"
       DefaultNetstreamDriverCertFile="{d}/server.pem"
       DefaultNetstreamDriverKeyFile="{d}/server.key")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1"
       StreamDriver.AuthMode="x509/name" PermittedPeer=["{peer}"])
template(name="kawal-raw" type="string" string="%rawmsg%\n")
ruleset(name="kawal") {{ action(type="omfile" file="{out}" template="kawal-raw") }}
input(type="imtcp" port="{port}" ruleset="kawal")
"#,
            out = out.display(),
        );
        std::fs::write(dir.join("rsyslog.conf"), conf).unwrap();
        let mut c = Self {
            dir: dir.to_owned(),
            port,
            out,
            child: None,
        };
        c.restart();
        c
    }

    /// Starts rsyslogd (again) and waits until it listens.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "collector already running");
        let d = &self.dir;
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("rsyslogd.stderr"))
            .unwrap();
        let _ = std::fs::remove_file(d.join("rsyslogd.pid"));
        let child = Command::new(RSYSLOGD)
            .arg("-n")
            .arg("-f")
            .arg(d.join("rsyslog.conf"))
            .arg("-i")
            .arg(d.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {RSYSLOGD}: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!("rsyslogd exited at start ({status}): {}", self.stderr());
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "rsyslogd does not listen: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What rsyslogd wrote to stderr.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("rsyslogd.stderr")).unwrap_or_default()
    }

    /// Stops rsyslogd gracefully (SIGTERM: it drains its queue and closes its files).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.wait();
    }

    /// The collected lines so far.
    pub fn collected(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits until the collected file contains `needle`, or `secs` pass.
    pub fn wait_for(&self, needle: &str, secs: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if self.collected().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.collected().contains(needle)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
