//! The bridge's settings: where the upstream is, who the gateway is towards it, and the
//! limits of a session; with their defaults and the check run before the bridge starts.

use std::time::Duration;

use mqtt_proto::{TopicFilter, TopicName};
use rustls::pki_types::ServerName;

use super::ClientIdentity;

/// Where and how to reach the upstream.
#[derive(Debug)]
pub struct BridgeSettings {
    /// Host name or address to connect to.
    pub host: String,
    /// TCP port (default 8883).
    pub port: u16,
    /// The name the upstream's certificate must carry (DNS name or IP address); also sent
    /// as SNI when it is a DNS name.
    pub server_name: String,
    /// PEM `CERTIFICATE` blocks: the only CAs trusted for the upstream (pinned).
    pub ca_roots_pem: String,
    /// The gateway's device certificate and key.
    pub identity: ClientIdentity,
    /// The gateway's UID: the default client ID and `{gateway}` in [`Self::up_prefix`].
    pub gateway_uid: String,
    /// MQTT client ID; `None` means [`Self::gateway_uid`].
    pub client_id: Option<String>,
    /// MQTT keep-alive (default 60 s; whole seconds, at most 65,535; zero turns it off).
    pub keepalive: Duration,
    /// Upstream topic prefix, `{gateway}` replaced by the gateway UID
    /// (default `kawal/gw/{gateway}`).
    pub up_prefix: String,
    /// The filter subscribed for commands; `None` means `<prefix>/+/down/#`.
    pub down_filter: Option<String>,
    /// Most QoS 1 messages sent and not yet acknowledged (default 32).
    pub inflight: usize,
    /// Shortest wait before reconnecting (default 1 s).
    pub backoff_min: Duration,
    /// Longest wait before reconnecting (default 60 s); waits are drawn uniformly between
    /// the minimum and an exponentially growing cap (full jitter).
    pub backoff_max: Duration,
    /// MQTT clean-session flag (default false: see the module docs).
    pub clean_session: bool,
    /// Largest packet accepted from the upstream, in bytes (default 1 MiB).
    pub max_packet: usize,
    /// Limit for TCP connect, TLS handshake and CONNACK each, and for one write
    /// (default 10 s).
    pub io_timeout: Duration,
}

impl BridgeSettings {
    /// Settings with every default, for the upstream at `host:8883`.
    pub fn new(
        host: impl Into<String>,
        server_name: impl Into<String>,
        ca_roots_pem: impl Into<String>,
        identity: ClientIdentity,
        gateway_uid: impl Into<String>,
    ) -> Self {
        Self {
            host: host.into(),
            port: 8883,
            server_name: server_name.into(),
            ca_roots_pem: ca_roots_pem.into(),
            identity,
            gateway_uid: gateway_uid.into(),
            client_id: None,
            keepalive: Duration::from_secs(60),
            up_prefix: "kawal/gw/{gateway}".into(),
            down_filter: None,
            inflight: 32,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            clean_session: false,
            max_packet: 1 << 20,
            io_timeout: Duration::from_secs(10),
        }
    }

    /// The upstream prefix with `{gateway}` filled in.
    pub fn prefix(&self) -> String {
        self.up_prefix.replace("{gateway}", &self.gateway_uid)
    }

    /// The subscribed command filter.
    pub fn down_filter(&self) -> String {
        self.down_filter
            .clone()
            .unwrap_or_else(|| format!("{}/+/down/#", self.prefix()))
    }

    /// Every problem with these settings (empty when usable).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.host.is_empty() {
            out.push("host is empty".to_owned());
        }
        if ServerName::try_from(self.server_name.as_str()).is_err() {
            out.push(format!(
                "server-name {:?} is not a DNS name or IP address",
                self.server_name
            ));
        }
        let prefix = self.prefix();
        if prefix.is_empty()
            || prefix.ends_with('/')
            || prefix.split('/').any(str::is_empty)
            || TopicName::is_invalid(&prefix)
        {
            out.push(format!("up-prefix {prefix:?} is not a valid topic prefix"));
        }
        if TopicFilter::try_from(self.down_filter().as_str()).is_err() {
            out.push("down-filter is not a valid topic filter".to_owned());
        }
        if self
            .client_id
            .as_deref()
            .unwrap_or(&self.gateway_uid)
            .is_empty()
        {
            out.push("client-id (or the gateway UID) is empty".to_owned());
        }
        if self.keepalive.as_secs() > u64::from(u16::MAX) {
            out.push("keepalive is over 65535 s".to_owned());
        }
        if !(1..=u16::MAX as usize - 1).contains(&self.inflight) {
            out.push("inflight must be 1-65534".to_owned());
        }
        if self.backoff_min.is_zero() || self.backoff_min > self.backoff_max {
            out.push("backoff-min must be above 0 and at most backoff-max".to_owned());
        }
        if self.max_packet < 64 || self.max_packet > 268_435_455 {
            out.push("max-packet must be 64 B - 256 MiB".to_owned());
        }
        if self.io_timeout.is_zero() {
            out.push("io-timeout must be above 0".to_owned());
        }
        out
    }
}
