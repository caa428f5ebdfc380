//! The forwarder's settings and their check.

use std::path::PathBuf;
use std::time::Duration;

use super::ForwardError;
use super::syslog::is_valid_hostname;
use super::tls::ClientIdentity;

/// Settings of a [`Forwarder`](super::Forwarder). Build with [`ForwardConfig::new`], then set
/// the tuning fields as needed.
#[derive(Debug)]
pub struct ForwardConfig {
    /// The collector, `host:port` (e.g. `logs.example.net:6514`).
    pub collector: String,
    /// The name the collector's certificate must carry: a DNS name or IP address.
    pub server_name: String,
    /// The pinned CA certificate(s), PEM: the only roots the collector is verified against.
    pub ca_pem: String,
    /// The device's client certificate and key.
    pub identity: ClientIdentity,
    /// HOSTNAME of every message: the device UID (1–255 printable ASCII, no space).
    pub hostname: String,
    /// The cursor file (last entry known delivered). Keep it next to the log.
    pub cursor_path: PathBuf,
    /// Entries are confirmed (see the module docs) at the latest this long after the first
    /// unconfirmed one was sent. Default 2 s.
    pub confirm_interval: Duration,
    /// ... and at the latest after this many unconfirmed entries (at least 1). This is the
    /// declared overlap: after a broken connection or a restart, at most this many entries
    /// are sent again. Default 1000.
    pub confirm_max_entries: u64,
    /// The backlog (local entries after the cursor) the collector may fall behind by before
    /// [`BacklogAlarm::Full`](super::BacklogAlarm::Full); the alarm is raised at 80 %.
    /// Nothing is dropped either way: the backlog is the local log. Default 1,000,000.
    pub max_backlog_entries: u64,
    /// How often the log is checked for new entries when nothing wakes the forwarder.
    /// Default 1 s.
    pub poll_interval: Duration,
    /// TCP connect time-out, per address. Default 5 s.
    pub connect_timeout: Duration,
    /// Time-out of the whole TLS handshake, of each write, and of the confirming close.
    /// Default 10 s.
    pub io_timeout: Duration,
    /// First wait before reconnecting after a failure (doubling up to `backoff_max`, with
    /// jitter). Default 500 ms.
    pub backoff_min: Duration,
    /// Longest wait between reconnection attempts. Default 60 s.
    pub backoff_max: Duration,
}

impl ForwardConfig {
    /// Settings with the defaults above.
    pub fn new(
        collector: impl Into<String>,
        server_name: impl Into<String>,
        ca_pem: impl Into<String>,
        identity: ClientIdentity,
        hostname: impl Into<String>,
        cursor_path: impl Into<PathBuf>,
    ) -> Self {
        Self {
            collector: collector.into(),
            server_name: server_name.into(),
            ca_pem: ca_pem.into(),
            identity,
            hostname: hostname.into(),
            cursor_path: cursor_path.into(),
            confirm_interval: Duration::from_secs(2),
            confirm_max_entries: 1000,
            max_backlog_entries: 1_000_000,
            poll_interval: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
        }
    }

    /// Every problem with the settings that can be seen without the network (PEM contents
    /// are checked when the TLS configuration is built, in [`Forwarder::start`]).
    ///
    /// [`Forwarder::start`]: super::Forwarder::start
    pub fn problems(&self) -> Vec<ForwardError> {
        let mut out = Vec::new();
        let mut bad = |field: &'static str, reason: &str| {
            out.push(ForwardError::Config {
                field,
                reason: reason.to_owned(),
            });
        };
        match self.collector.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
            _ => bad("collector", "must be host:port"),
        }
        if super::tls::server_name(&self.server_name).is_err() {
            bad("server-name", "must be a DNS name or IP address");
        }
        if !is_valid_hostname(&self.hostname) {
            bad(
                "hostname",
                "must be 1-255 printable ASCII characters without space",
            );
        }
        if self.cursor_path.file_name().is_none() {
            bad("cursor-path", "must name a file");
        }
        if self.confirm_max_entries == 0 {
            bad("confirm-max-entries", "must be at least 1");
        }
        if self.max_backlog_entries == 0 {
            bad("max-backlog-entries", "must be at least 1");
        }
        for (field, d) in [
            ("confirm-interval", self.confirm_interval),
            ("poll-interval", self.poll_interval),
            ("connect-timeout", self.connect_timeout),
            ("io-timeout", self.io_timeout),
            ("backoff-min", self.backoff_min),
        ] {
            if d.is_zero() || d > Duration::from_secs(3600) {
                bad(field, "must be between 1 ms and 1 h");
            }
        }
        if self.backoff_max < self.backoff_min || self.backoff_max > Duration::from_secs(3600) {
            bad("backoff-max", "must be between backoff-min and 1 h");
        }
        out
    }
}
