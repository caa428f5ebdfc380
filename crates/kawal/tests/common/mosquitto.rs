//! A real Mosquitto as the peer of kawal's MQTT listener in the benchmarks: mutual TLS with a
//! server certificate from a throw-away test CA (made with `openssl`), sensor certificates
//! from kawal's sensor CA, the user name taken from the certificate, the same topic lanes as
//! kawal's default ACL, and its queue limits lifted so that it never drops silently. Killed
//! (SIGKILL) on drop.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers"
)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::d;
use super::sensors::{issue, test_ca};

/// Where Debian installs the broker.
pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// A test CA and a server certificate it issued for `localhost` and `127.0.0.1`.
pub struct ServerPki {
    /// The test CA (PEM): clients trust it to verify Mosquitto.
    pub ca_pem: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Makes a P-256 test CA and a server certificate for `localhost`/`127.0.0.1` in `dir`.
pub fn server_pki(dir: &Path) -> ServerPki {
    let (ca, ca_key) = test_ca(dir, "mosquitto test CA");
    let (cert, key) = issue(
        dir,
        (&ca, &ca_key),
        "localhost",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n\
         keyUsage=digitalSignature\n",
    );
    ServerPki {
        ca_pem: std::fs::read_to_string(&ca).unwrap(),
        cert,
        key,
    }
}

/// A running Mosquitto.
pub struct Mosquitto {
    pub port: u16,
    pub dir: PathBuf,
    conf: PathBuf,
    child: Option<Child>,
}

impl Mosquitto {
    /// Writes the configuration into `dir` and starts the broker on 127.0.0.1:`port`.
    ///
    /// - mutual TLS: `require_certificate true` against `sensor_ca_pem` (kawal's sensor CA),
    ///   `use_identity_as_username true` (the certificate's CN, which kawal sets to the UID),
    ///   no anonymous clients;
    /// - the lanes of kawal's default ACL: a sensor writes `kawal/<its name>/up/#` and reads
    ///   `kawal/<its name>/down/#`; each of `readers` reads `kawal/+/up/#`;
    /// - no limits on queued or in-flight messages (`max_queued_messages 0`,
    ///   `max_inflight_messages 0`, `max_queued_bytes 0`), so nothing is dropped silently;
    /// - `set_tcp_nodelay true`, as kawal's listener and the clients (without it a CONNACK after
    ///   the TLS 1.3 session tickets waits ~40 ms for a delayed ACK);
    /// - `persistence true` with the default `autosave_interval` (1800 s): Mosquitto writes
    ///   its in-memory store only at shutdown and every 30 minutes, never per message.
    pub fn start(
        dir: &Path,
        port: u16,
        sensor_ca_pem: &str,
        server: &ServerPki,
        readers: &[&str],
    ) -> Self {
        let conf = sensor_facing_conf(dir, port, sensor_ca_pem, server, readers);
        Self::launch(dir, port, &conf)
    }

    /// As [`Mosquitto::start`], plus a bridge to `to` (what gateways built on Mosquitto do):
    /// every `kawal/<name>/up/...` a sensor publishes goes to the upstream as
    /// `<to.remote_prefix><name>/up/...` at QoS 1 over mutual TLS, in a persistent session.
    /// The listener's `max_inflight_messages 0` and `max_queued_messages 0` apply to the
    /// bridge too: it has no in-flight cap and queues without limit while the upstream is
    /// away or slow.
    pub fn start_bridged(
        dir: &Path,
        port: u16,
        sensor_ca_pem: &str,
        server: &ServerPki,
        readers: &[&str],
        to: &BridgeTo<'_>,
    ) -> Self {
        let mut conf = sensor_facing_conf(dir, port, sensor_ca_pem, server, readers);
        conf.push_str(&bridge_conf(to));
        Self::launch(dir, port, &conf)
    }

    /// An upstream broker on 127.0.0.1:`port`: mutual TLS with a required client certificate
    /// from any CA in `client_cas_pem`, the user name from the certificate, no ACL (every
    /// authenticated client may publish and subscribe anywhere), no queue or in-flight limits
    /// and `set_tcp_nodelay true`, as the sensor-facing broker.
    pub fn start_upstream(dir: &Path, port: u16, client_cas_pem: &str, server: &ServerPki) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let ca = dir.join("clients-ca.pem");
        std::fs::write(&ca, client_cas_pem).unwrap();
        let conf = mtls_conf(dir, port, &ca, server, None);
        Self::launch(dir, port, &conf)
    }

    /// Writes `conf` as `dir/unsafe.mosquitto.conf`, starts the broker and waits (at most
    /// 10 s) until it listens on 127.0.0.1:`port`.
    fn launch(dir: &Path, port: u16, text: &str) -> Self {
        let conf = dir.join("unsafe.mosquitto.conf");
        std::fs::write(&conf, text).unwrap();
        let child = Command::new(MOSQUITTO)
            .args(["-c", d(&conf)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (Debian package mosquitto) is needed");
        let mut m = Self {
            port,
            dir: dir.to_owned(),
            conf,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(c) = m.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("mosquitto exited with {status}: {}", m.log());
            }
            assert!(Instant::now() < deadline, "mosquitto did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }

    /// The configuration the broker runs with.
    pub fn config(&self) -> String {
        std::fs::read_to_string(&self.conf).unwrap_or_default()
    }

    /// The broker's process ID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// What the broker logged (errors and warnings).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The configuration of [`Mosquitto::start`] (see there); writes the sensor CA and the ACL
/// into `dir`.
fn sensor_facing_conf(
    dir: &Path,
    port: u16,
    sensor_ca_pem: &str,
    server: &ServerPki,
    readers: &[&str],
) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let ca = dir.join("sensor-ca.pem");
    std::fs::write(&ca, sensor_ca_pem).unwrap();
    let acl = dir.join("acl");
    let mut rules = String::from(
        "# kawal's default lanes\npattern write kawal/%u/up/#\npattern read kawal/%u/down/#\n",
    );
    for r in readers {
        rules.push_str(&format!("user {r}\ntopic read kawal/+/up/#\n"));
    }
    std::fs::write(&acl, rules).unwrap();
    mtls_conf(dir, port, &ca, server, Some(&acl))
}

/// A mutual-TLS listener on 127.0.0.1:`port` for clients of the CAs in `client_ca`, the user
/// name from the certificate, no queue or in-flight limits, no Nagle delay, persistence in
/// `dir`; with `acl`, that ACL file.
fn mtls_conf(
    dir: &Path,
    port: u16,
    client_ca: &Path,
    server: &ServerPki,
    acl: Option<&Path>,
) -> String {
    let acl = acl.map_or(String::new(), |a| format!("acl_file {}\n", d(a)));
    format!(
        "# Benchmark-only configuration (loopback, throw-away server PKI).\n\
         # Tests may run as root: stay root so the files in the temp folder stay readable.\n\
         user root\n\
         per_listener_settings false\n\
         allow_anonymous false\n\
         {acl}\
         persistence true\n\
         persistence_location {d}/\n\
         max_queued_messages 0\n\
         max_queued_bytes 0\n\
         max_inflight_messages 0\n\
         # As kawal (and the clients): no Nagle delay on small packets such as CONNACK.\n\
         set_tcp_nodelay true\n\
         log_dest file {d}/mosquitto.log\n\
         log_type error\n\
         log_type warning\n\
         listener {port} 127.0.0.1\n\
         cafile {ca}\n\
         certfile {cert}\n\
         keyfile {key}\n\
         require_certificate true\n\
         use_identity_as_username true\n",
        d = d(dir),
        ca = d(client_ca),
        cert = d(&server.cert),
        key = d(&server.key),
    )
}

/// Where a bridged Mosquitto forwards its sensors' telemetry.
pub struct BridgeTo<'a> {
    /// The upstream's port on 127.0.0.1.
    pub port: u16,
    /// The CA that issued the upstream's certificate (verified, with its host name).
    pub ca: &'a Path,
    /// The bridge's client certificate and key for the upstream.
    pub cert: &'a Path,
    pub key: &'a Path,
    /// The bridge's client ID at the upstream.
    pub client_id: &'a str,
    /// Upstream prefix that replaces `kawal/`, ending in `/` (e.g. `kawal/gw/<name>/`).
    pub remote_prefix: &'a str,
}

/// The `connection` section of [`Mosquitto::start_bridged`].
fn bridge_conf(to: &BridgeTo<'_>) -> String {
    format!(
        "# A bridge to the upstream, as gateways built on Mosquitto forward telemetry.\n\
         connection upstream\n\
         address 127.0.0.1:{port}\n\
         bridge_protocol_version mqttv311\n\
         remote_clientid {id}\n\
         cleansession false\n\
         keepalive_interval 30\n\
         bridge_cafile {ca}\n\
         bridge_certfile {cert}\n\
         bridge_keyfile {key}\n\
         bridge_insecure false\n\
         # kawal/<name>/up/... goes up as <prefix><name>/up/..., at QoS 1.\n\
         topic +/up/# out 1 kawal/ {prefix}\n",
        port = to.port,
        id = to.client_id,
        ca = d(to.ca),
        cert = d(to.cert),
        key = d(to.key),
        prefix = to.remote_prefix,
    )
}

/// An upstream's PKI: one throw-away test CA that issued the upstream's server certificate
/// (for `localhost`/`127.0.0.1`) and client certificates.
pub struct UpstreamPki {
    /// The server side: the CA (clients pin it) and the broker's certificate.
    pub server: ServerPki,
    /// The CA certificate as a file (for `bridge_cafile` and kawal's `[upstream] ca-file`).
    pub ca: PathBuf,
    /// (certificate, key) for each client name asked for, in order; the CN is the name.
    pub clients: Vec<(PathBuf, PathBuf)>,
}

/// Makes a P-256 test CA in `dir`, a server certificate for `localhost`/`127.0.0.1` and a
/// client certificate for each of `clients`.
pub fn upstream_pki(dir: &Path, clients: &[&str]) -> UpstreamPki {
    let (ca, ca_key) = test_ca(dir, "upstream-test-ca");
    let (cert, key) = issue(
        dir,
        (&ca, &ca_key),
        "localhost",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n\
         keyUsage=digitalSignature\n",
    );
    let clients = clients
        .iter()
        .map(|cn| {
            issue(
                dir,
                (&ca, &ca_key),
                cn,
                "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n",
            )
        })
        .collect();
    UpstreamPki {
        server: ServerPki {
            ca_pem: std::fs::read_to_string(&ca).unwrap(),
            cert,
            key,
        },
        ca,
        clients,
    }
}
