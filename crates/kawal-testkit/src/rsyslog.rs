//! A real log collector for the forwarding tests: Debian's rsyslog in the foreground, with its
//! TLS driver (GnuTLS by default, OpenSSL with `KAWAL_RSYSLOG_DRIVER=ossl`), mutual TLS,
//! octet-counted frames, and one raw message per line in a file — as docs/log-forward.md
//! configures it.
#![allow(
    clippy::unwrap_used,
    clippy::print_stderr,
    clippy::disallowed_macros,
    reason = "test helpers: a failure should stop the test loudly"
)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

/// Upper bound on starting or stopping rsyslogd.
const WAIT: Duration = Duration::from_secs(30);

/// rsyslog's TLS driver: `gtls` (GnuTLS, default) or `ossl` (OpenSSL), by `KAWAL_RSYSLOG_DRIVER`.
pub fn driver() -> &'static str {
    match std::env::var("KAWAL_RSYSLOG_DRIVER").as_deref() {
        Ok("ossl") => "ossl",
        _ => "gtls",
    }
}

/// `true` if the test is to be skipped (`KAWAL_SKIP_RSYSLOG=1` and no rsyslog); panics with
/// instructions if rsyslog or its TLS driver is missing otherwise.
pub fn missing() -> bool {
    let has_driver = [
        "/usr/lib/x86_64-linux-gnu/rsyslog",
        "/usr/lib/aarch64-linux-gnu/rsyslog",
    ]
    .iter()
    .any(|d| Path::new(d).join(format!("lmnsd_{}.so", driver())).exists());
    if Path::new(RSYSLOGD).exists() && has_driver {
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

/// The collector's own certificate and key (PEM), and who may send to it.
#[derive(Debug, Clone, Copy)]
pub struct Tls<'a> {
    /// The collector's certificate.
    pub server_cert_pem: &'a str,
    /// Its private key.
    pub server_key_pem: &'a str,
    /// The CA clients must chain to.
    pub client_ca_pem: &'a str,
    /// The name a client's certificate must carry.
    pub peer: &'a str,
}

/// rsyslogd in the foreground on 127.0.0.1:`port`, writing raw messages to `out`.
#[derive(Debug)]
pub struct Collector {
    dir: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The file it writes what it collects to.
    pub out: PathBuf,
    child: Option<Child>,
}

impl Collector {
    /// Writes the configuration into `dir` and starts rsyslogd on `port`.
    pub fn start(dir: &Path, tls: Tls<'_>, port: u16) -> Self {
        std::fs::create_dir_all(dir.join("work")).unwrap();
        std::fs::write(dir.join("ca.pem"), tls.client_ca_pem).unwrap();
        std::fs::write(dir.join("server.pem"), tls.server_cert_pem).unwrap();
        std::fs::write(dir.join("server.key"), tls.server_key_pem).unwrap();
        let out = dir.join("collected.log");
        let d = dir.display();
        let conf = format!(
            r#"global(workDirectory="{d}/work" maxMessageSize="2m"
       DefaultNetstreamDriver="{drv}"
       DefaultNetstreamDriverCAFile="{d}/ca.pem"
       DefaultNetstreamDriverCertFile="{d}/server.pem"
       DefaultNetstreamDriverKeyFile="{d}/server.key")
module(load="imtcp" StreamDriver.Name="{drv}" StreamDriver.Mode="1"
       StreamDriver.AuthMode="x509/name" PermittedPeer=["{peer}"])
template(name="kawal-raw" type="string" string="%rawmsg%\n")
ruleset(name="kawal") {{ action(type="omfile" file="{out}" template="kawal-raw") }}
input(type="imtcp" port="{port}" ruleset="kawal")
"#,
            out = out.display(),
            drv = driver(),
            peer = tls.peer,
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
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!("rsyslogd exited at start ({status}): {}", self.stderr());
            }
            // The probe is a plain TCP connection: rsyslog logs a failed handshake, no more.
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

    /// `127.0.0.1:port`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops rsyslogd gracefully (SIGTERM: it drains its queue and closes its files), or kills
    /// it after a bound.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::stop_gracefully(&mut child, WAIT);
        }
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
