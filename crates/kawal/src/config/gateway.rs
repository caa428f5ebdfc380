//! `[mqtt]`, `[mqtt.acl.<role>]`, `[[mqtt.payload]]`, `[upstream]` and `[sensors]`: the gateway's
//! part of the file.
use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// `[mqtt]`: the sensors' listener. Every limit has a default that suits a small gateway.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawMqtt {
    /// Source networks allowed to connect (CIDR); empty = any.
    #[serde(default)]
    pub allow_sources: Vec<String>,
    /// Largest packet (bytes) a sensor may send.
    #[serde(default = "d_packet")]
    pub max_packet_bytes: usize,
    /// Connections in total.
    #[serde(default = "d_conns")]
    pub max_connections: usize,
    /// Connections per source address.
    #[serde(default = "d_per_source")]
    pub max_per_source: usize,
    /// TLS handshakes per source address and second.
    #[serde(default = "d_hs_rate")]
    pub handshakes_per_source_per_s: u32,
    /// Seconds for the TLS handshake.
    #[serde(default = "d_timeout")]
    pub handshake_timeout_s: u64,
    /// Seconds from the handshake to CONNECT.
    #[serde(default = "d_timeout")]
    pub connect_timeout_s: u64,
    /// Messages per second per sensor (burst: twice that).
    #[serde(default = "d_msg_rate")]
    pub messages_per_s: u32,
    /// Payload bytes per second per sensor (burst: twice that).
    #[serde(default = "d_byte_rate")]
    pub bytes_per_s: u32,
    /// Subscriptions per sensor.
    #[serde(default = "d_subs")]
    pub max_subscriptions: usize,
    /// QoS 1 messages in flight to a sensor.
    #[serde(default = "d_inflight")]
    pub inflight: usize,
    /// Bytes queued for a slow reader before it is disconnected.
    #[serde(default = "d_queued")]
    pub max_queued_bytes: usize,
    /// Longest topic (bytes).
    #[serde(default = "d_topic_len")]
    pub max_topic_length: usize,
    /// Deepest topic (levels).
    #[serde(default = "d_topic_depth")]
    pub max_topic_depth: usize,
    /// Retained messages kept (0 = retain is refused).
    #[serde(default = "d_retained")]
    pub max_retained: usize,
    /// Audit flood control: refusals before authentication written one by one per source
    /// and window; the rest are counted into one summary event.
    #[serde(default = "d_audit_per_source")]
    pub audit_refusals_per_source: u32,
    /// Audit flood control: the window, seconds.
    #[serde(default = "d_audit_window")]
    pub audit_window_s: u64,
    /// Per-role topic rules; the defaults (`sensor`, `reader`) apply when absent.
    #[serde(default)]
    pub acl: BTreeMap<String, RawAclRole>,
    /// Per-topic payload rules, in order: the first whose topic matches decides.
    #[serde(default)]
    pub payload: Vec<RawPayloadRule>,
}

/// `[[mqtt.payload]]`: a rule for the payloads sensors publish to (and leave as wills on) the
/// topics matching `topic` (G045 PL-1-1). Rules are tried in the order written and the
/// **first** whose topic matches decides; a topic no rule matches is not checked. A payload
/// that breaks its rule is refused like an ACL denial: no PUBACK, the connection closed,
/// `mqtt.denied` with `reason = "payload"` in the audit log.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawPayloadRule {
    /// An MQTT topic filter; `{uid}` stands for the publishing sensor's UID.
    pub topic: String,
    /// Largest payload in bytes (1 to `max-packet-bytes`); absent: no limit of its own.
    #[serde(default)]
    pub max_bytes: Option<usize>,
    /// The payload must be one JSON value in UTF-8.
    #[serde(default)]
    pub json: bool,
    /// With `json = true`: the value must be a JSON object.
    #[serde(default)]
    pub json_object: bool,
}

/// `[mqtt.acl.<role>]`: topic filters with `{uid}` standing for the sensor's UID.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawAclRole {
    /// Topics the role may publish to.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Filters the role may subscribe to.
    #[serde(default)]
    pub subscribe: Vec<String>,
}

impl Default for RawMqtt {
    fn default() -> Self {
        Self {
            allow_sources: Vec::new(),
            max_packet_bytes: d_packet(),
            max_connections: d_conns(),
            max_per_source: d_per_source(),
            handshakes_per_source_per_s: d_hs_rate(),
            handshake_timeout_s: d_timeout(),
            connect_timeout_s: d_timeout(),
            messages_per_s: d_msg_rate(),
            bytes_per_s: d_byte_rate(),
            max_subscriptions: d_subs(),
            inflight: d_inflight(),
            max_queued_bytes: d_queued(),
            max_topic_length: d_topic_len(),
            max_topic_depth: d_topic_depth(),
            max_retained: d_retained(),
            audit_refusals_per_source: d_audit_per_source(),
            audit_window_s: d_audit_window(),
            acl: BTreeMap::new(),
            payload: Vec::new(),
        }
    }
}

fn d_packet() -> usize {
    64 * 1024
}
fn d_conns() -> usize {
    20_000
}
fn d_per_source() -> usize {
    64
}
fn d_hs_rate() -> u32 {
    20
}
fn d_timeout() -> u64 {
    10
}
fn d_msg_rate() -> u32 {
    500
}
fn d_byte_rate() -> u32 {
    1024 * 1024
}
fn d_subs() -> usize {
    32
}
fn d_inflight() -> usize {
    32
}
fn d_queued() -> usize {
    1024 * 1024
}
fn d_topic_len() -> usize {
    256
}
fn d_topic_depth() -> usize {
    16
}
fn d_retained() -> usize {
    1000
}
fn d_audit_per_source() -> u32 {
    10
}
fn d_audit_window() -> u64 {
    60
}

/// `[upstream]`: the broker telemetry goes to. Absent: telemetry stays in the queue.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawUpstream {
    /// `host:port` of the upstream broker.
    pub address: String,
    /// The name its certificate must carry (default: the host part of `address`).
    pub server_name: Option<String>,
    /// The CA (PEM) that issued the upstream's certificate: pinned, the system roots are not used.
    pub ca_file: PathBuf,
    /// The gateway's client certificate chain for the upstream (default: the device certificate).
    pub cert_file: Option<PathBuf>,
    /// Topic prefix upstream; `{gateway}` is the gateway's UID.
    #[serde(default = "d_prefix")]
    pub prefix: String,
    /// Seconds between keep-alive pings.
    #[serde(default = "d_keepalive")]
    pub keepalive_s: u16,
    /// QoS 1 messages in flight upstream.
    #[serde(default = "d_inflight")]
    pub inflight: usize,
}

fn d_prefix() -> String {
    "kawal/gw/{gateway}".into()
}
fn d_keepalive() -> u16 {
    30
}

/// `[queue]`: what sensors published, kept sealed in the store until the upstream has it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawQueue {
    /// Bytes kept at most.
    #[serde(default = "d_queue_mib")]
    pub max_mib: u64,
    /// When full: `refuse` new QoS 1 messages (default) or `drop-oldest`.
    #[serde(default = "d_when_full")]
    pub when_full: String,
}

impl Default for RawQueue {
    fn default() -> Self {
        Self {
            max_mib: d_queue_mib(),
            when_full: d_when_full(),
        }
    }
}

fn d_queue_mib() -> u64 {
    64
}
fn d_when_full() -> String {
    "refuse".into()
}

/// `[sensors]`: enrolment and certificates.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawSensors {
    /// Days a sensor certificate is valid.
    #[serde(default = "d_cert_days")]
    pub cert_days: u32,
    /// Hours an enrolment token stays usable.
    #[serde(default = "d_token_hours")]
    pub token_hours: u32,
    /// CA certificates (PEM) of an external CA whose sensor certificates are trusted once
    /// imported (`kawal sensor import`), e.g. the manufacturer's.
    pub external_ca_file: Option<PathBuf>,
}

impl Default for RawSensors {
    fn default() -> Self {
        Self {
            cert_days: d_cert_days(),
            token_hours: d_token_hours(),
            external_ca_file: None,
        }
    }
}

fn d_cert_days() -> u32 {
    365
}
fn d_token_hours() -> u32 {
    24
}

/// A default ACL role: `(publish, subscribe)` templates.
pub fn default_acl() -> BTreeMap<String, RawAclRole> {
    let mut m = BTreeMap::new();
    m.insert(
        "sensor".to_owned(),
        RawAclRole {
            publish: vec!["kawal/{uid}/up/#".into()],
            subscribe: vec!["kawal/{uid}/down/#".into()],
        },
    );
    m.insert(
        "reader".to_owned(),
        RawAclRole {
            publish: Vec::new(),
            subscribe: vec!["kawal/+/up/#".into()],
        },
    );
    m
}

/// The gateway's settings after validation.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// Source networks allowed (empty = any).
    pub allow_sources: Vec<ipnet::IpNet>,
    /// The listener limits as written (checked for range).
    pub mqtt: MqttLimits,
    /// Per-role topic rules (defaults merged).
    pub acl: BTreeMap<String, (Vec<String>, Vec<String>)>,
    /// Payload rules in the order written (the first matching one decides).
    pub payload: Vec<PayloadRule>,
    /// The upstream, if any.
    pub upstream: Option<Upstream>,
    /// Queue bound in bytes.
    pub queue_max_bytes: u64,
    /// Drop the oldest when full instead of refusing.
    pub queue_drop_oldest: bool,
    /// Days a sensor certificate is valid.
    pub cert_days: u32,
    /// Seconds an enrolment token stays usable.
    pub token_ttl_s: u64,
    /// The external sensor CA file, if any.
    pub external_ca_file: Option<PathBuf>,
}

/// The `[mqtt]` numbers.
#[derive(Debug, Clone)]
pub struct MqttLimits {
    /// See [`RawMqtt`].
    pub max_packet_bytes: usize,
    /// See [`RawMqtt`].
    pub max_connections: usize,
    /// See [`RawMqtt`].
    pub max_per_source: usize,
    /// See [`RawMqtt`].
    pub handshakes_per_source_per_s: u32,
    /// See [`RawMqtt`].
    pub handshake_timeout_s: u64,
    /// See [`RawMqtt`].
    pub connect_timeout_s: u64,
    /// See [`RawMqtt`].
    pub messages_per_s: u32,
    /// See [`RawMqtt`].
    pub bytes_per_s: u32,
    /// See [`RawMqtt`].
    pub max_subscriptions: usize,
    /// See [`RawMqtt`].
    pub inflight: usize,
    /// See [`RawMqtt`].
    pub max_queued_bytes: usize,
    /// See [`RawMqtt`].
    pub max_topic_length: usize,
    /// See [`RawMqtt`].
    pub max_topic_depth: usize,
    /// See [`RawMqtt`].
    pub max_retained: usize,
    /// See [`RawMqtt`].
    pub audit_refusals_per_source: u32,
    /// See [`RawMqtt`].
    pub audit_window_s: u64,
}

/// A validated `[[mqtt.payload]]` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadRule {
    /// The topic filter, `{uid}` allowed.
    pub topic: String,
    /// Largest payload in bytes.
    pub max_bytes: Option<usize>,
    /// The payload must be JSON.
    pub json: bool,
    /// The payload must be a JSON object (only with `json`).
    pub json_object: bool,
}

/// Checks the `[[mqtt.payload]]` rules against the (already read) limits.
fn validate_payload(
    rules: &[RawPayloadRule],
    limits: &MqttLimits,
    errors: &mut Vec<String>,
) -> Vec<PayloadRule> {
    let mut out = Vec::with_capacity(rules.len());
    for (i, r) in rules.iter().enumerate() {
        let key = format!("mqtt.payload[{i}]");
        let before = errors.len();
        check_template(&format!("{key}.topic"), &r.topic, errors);
        // The same sample UID as the gateway uses: the limits are checked on real topics later.
        let sample = r.topic.replace("{uid}", "u");
        if errors.len() == before
            && (sample.len() > limits.max_topic_length
                || sample.split('/').count() > limits.max_topic_depth)
        {
            errors.push(format!(
                "{key}.topic: '{}' is longer or deeper than mqtt.max-topic-length/-depth allow",
                r.topic
            ));
        }
        match r.max_bytes {
            Some(n) if n == 0 || n > limits.max_packet_bytes => errors.push(format!(
                "{key}.max-bytes: {n} is outside 1..={} (mqtt.max-packet-bytes)",
                limits.max_packet_bytes
            )),
            None if !r.json => errors.push(format!(
                "{key}: sets neither max-bytes nor json = true, so it would check nothing"
            )),
            _ => {}
        }
        if r.json_object && !r.json {
            errors.push(format!("{key}.json-object: needs json = true"));
        }
        out.push(PayloadRule {
            topic: r.topic.clone(),
            max_bytes: r.max_bytes,
            json: r.json,
            json_object: r.json_object,
        });
    }
    out
}

/// The validated `[upstream]`.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// The name the upstream's certificate must carry.
    pub server_name: String,
    /// Pinned CA file.
    pub ca_file: PathBuf,
    /// Client certificate chain file (None: the device certificate).
    pub cert_file: Option<PathBuf>,
    /// Topic prefix with `{gateway}`.
    pub prefix: String,
    /// Keep-alive seconds.
    pub keepalive_s: u16,
    /// In-flight window.
    pub inflight: usize,
}

fn range<T: PartialOrd + std::fmt::Display + Copy>(
    key: &str,
    v: T,
    lo: T,
    hi: T,
    errors: &mut Vec<String>,
) -> T {
    if v < lo || v > hi {
        errors.push(format!("{key}: {v} is outside {lo}..={hi}"));
    }
    v
}

/// A topic template: a valid MQTT filter once `{uid}` is replaced, and no other placeholder.
fn check_template(key: &str, t: &str, errors: &mut Vec<String>) {
    let concrete = t.replace("{uid}", "x");
    let bad_placeholder = concrete.contains('{') || concrete.contains('}');
    let levels: Vec<&str> = concrete.split('/').collect();
    let bad_wildcards = levels.iter().enumerate().any(|(i, l)| {
        (l.contains('#') && (*l != "#" || i + 1 != levels.len())) || (l.contains('+') && *l != "+")
    });
    if t.is_empty() || t.len() > 256 || concrete.contains('\0') || bad_placeholder || bad_wildcards
    {
        errors.push(format!(
            "{key}: '{t}' is not a topic filter ({{uid}} is the only placeholder; '#' only as the last level, '+' only as a whole level)"
        ));
    }
}

/// Validates the gateway's sections, pushing every problem into `errors`.
pub fn validate(
    mqtt: &RawMqtt,
    upstream: Option<&RawUpstream>,
    queue: &RawQueue,
    sensors: &RawSensors,
    errors: &mut Vec<String>,
    insecure: &mut Vec<String>,
) -> GatewaySettings {
    let mut allow_sources = Vec::new();
    for net in &mqtt.allow_sources {
        match net.parse::<ipnet::IpNet>() {
            Ok(n) => allow_sources.push(n),
            Err(_) => errors.push(format!("mqtt.allow-sources: '{net}' is not a CIDR network")),
        }
    }
    let limits = MqttLimits {
        max_packet_bytes: range(
            "mqtt.max-packet-bytes",
            mqtt.max_packet_bytes,
            128,
            16 * 1024 * 1024,
            errors,
        ),
        max_connections: range(
            "mqtt.max-connections",
            mqtt.max_connections,
            1,
            1_000_000,
            errors,
        ),
        max_per_source: range(
            "mqtt.max-per-source",
            mqtt.max_per_source,
            1,
            1_000_000,
            errors,
        ),
        handshakes_per_source_per_s: range(
            "mqtt.handshakes-per-source-per-s",
            mqtt.handshakes_per_source_per_s,
            1,
            100_000,
            errors,
        ),
        handshake_timeout_s: range(
            "mqtt.handshake-timeout-s",
            mqtt.handshake_timeout_s,
            1,
            120,
            errors,
        ),
        connect_timeout_s: range(
            "mqtt.connect-timeout-s",
            mqtt.connect_timeout_s,
            1,
            120,
            errors,
        ),
        messages_per_s: range(
            "mqtt.messages-per-s",
            mqtt.messages_per_s,
            1,
            1_000_000,
            errors,
        ),
        bytes_per_s: range("mqtt.bytes-per-s", mqtt.bytes_per_s, 1024, u32::MAX, errors),
        max_subscriptions: range(
            "mqtt.max-subscriptions",
            mqtt.max_subscriptions,
            1,
            1024,
            errors,
        ),
        inflight: range("mqtt.inflight", mqtt.inflight, 1, 65_535, errors),
        max_queued_bytes: range(
            "mqtt.max-queued-bytes",
            mqtt.max_queued_bytes,
            4096,
            1024 * 1024 * 1024,
            errors,
        ),
        max_topic_length: range(
            "mqtt.max-topic-length",
            mqtt.max_topic_length,
            16,
            65_535,
            errors,
        ),
        max_topic_depth: range("mqtt.max-topic-depth", mqtt.max_topic_depth, 2, 128, errors),
        max_retained: range("mqtt.max-retained", mqtt.max_retained, 0, 100_000, errors),
        audit_refusals_per_source: range(
            "mqtt.audit-refusals-per-source",
            mqtt.audit_refusals_per_source,
            1,
            1000,
            errors,
        ),
        audit_window_s: range(
            "mqtt.audit-window-s",
            mqtt.audit_window_s,
            1,
            86_400,
            errors,
        ),
    };
    let mut acl = BTreeMap::new();
    let roles = if mqtt.acl.is_empty() {
        default_acl()
    } else {
        let mut merged = default_acl();
        merged.extend(mqtt.acl.clone());
        merged
    };
    for (role, rules) in roles {
        if role.is_empty()
            || role.len() > 32
            || !role
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            errors.push(format!("mqtt.acl.{role}: role names are 1-32 of [a-z0-9-]"));
        }
        for t in &rules.publish {
            check_template(&format!("mqtt.acl.{role}.publish"), t, errors);
            if !t.contains("{uid}") {
                insecure.push(format!(
                    "mqtt.acl.{role}.publish: '{t}' does not contain {{uid}}: every sensor of the role may publish there"
                ));
            }
        }
        for t in &rules.subscribe {
            check_template(&format!("mqtt.acl.{role}.subscribe"), t, errors);
        }
        acl.insert(role, (rules.publish, rules.subscribe));
    }
    let payload = validate_payload(&mqtt.payload, &limits, errors);
    let upstream = upstream.and_then(|u| validate_upstream(u, errors));
    let queue_drop_oldest = match queue.when_full.as_str() {
        "refuse" => false,
        "drop-oldest" => {
            insecure.push(
                "queue.when-full = \"drop-oldest\": acknowledged messages are lost when the queue is full".into(),
            );
            true
        }
        other => {
            errors.push(format!(
                "queue.when-full: '{other}' is not \"refuse\" or \"drop-oldest\""
            ));
            false
        }
    };
    GatewaySettings {
        allow_sources,
        mqtt: limits,
        acl,
        payload,
        upstream,
        queue_max_bytes: range("queue.max-mib", queue.max_mib, 1, 64 * 1024, errors) * 1024 * 1024,
        queue_drop_oldest,
        cert_days: range("sensors.cert-days", sensors.cert_days, 1, 3650, errors),
        token_ttl_s: u64::from(range(
            "sensors.token-hours",
            sensors.token_hours,
            1,
            24 * 30,
            errors,
        )) * 3600,
        external_ca_file: match &sensors.external_ca_file {
            Some(p) if !p.is_absolute() => {
                errors.push("sensors.external-ca-file: must be an absolute path".into());
                None
            }
            other => other.clone(),
        },
    }
}

fn validate_upstream(u: &RawUpstream, errors: &mut Vec<String>) -> Option<Upstream> {
    let Some((host, port)) = u.address.rsplit_once(':') else {
        errors.push(format!(
            "upstream.address: '{}' is not host:port",
            u.address
        ));
        return None;
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let Ok(port) = port.parse::<u16>() else {
        errors.push(format!("upstream.address: '{port}' is not a port"));
        return None;
    };
    if host.is_empty() || port == 0 {
        errors.push("upstream.address: host and a non-zero port are needed".into());
        return None;
    }
    if !u.ca_file.is_absolute() {
        errors.push("upstream.ca-file: must be an absolute path".into());
    }
    if let Some(c) = &u.cert_file
        && !c.is_absolute()
    {
        errors.push("upstream.cert-file: must be an absolute path".into());
    }
    if u.prefix.is_empty()
        || u.prefix.contains(['#', '+', '\0'])
        || u.prefix.ends_with('/')
        || u.prefix.replace("{gateway}", "x").contains(['{', '}'])
    {
        errors.push(format!(
            "upstream.prefix: '{}' must be a topic without wildcards or a trailing '/' ({{gateway}} is the only placeholder)",
            u.prefix
        ));
    }
    if u.keepalive_s < 5 {
        errors.push("upstream.keepalive-s: at least 5".into());
    }
    if u.inflight == 0 || u.inflight > 65_535 {
        errors.push("upstream.inflight: 1..=65535".into());
    }
    Some(Upstream {
        server_name: u.server_name.clone().unwrap_or_else(|| host.clone()),
        host,
        port,
        ca_file: u.ca_file.clone(),
        cert_file: u.cert_file.clone(),
        prefix: u.prefix.clone(),
        keepalive_s: u.keepalive_s,
        inflight: u.inflight,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Doc {
        mqtt: RawMqtt,
    }

    fn check(text: &str) -> (GatewaySettings, Vec<String>) {
        let doc: Doc = toml::from_str(text).unwrap();
        let mut errors = Vec::new();
        let mut insecure = Vec::new();
        let s = validate(
            &doc.mqtt,
            None,
            &RawQueue::default(),
            &RawSensors::default(),
            &mut errors,
            &mut insecure,
        );
        (s, errors)
    }

    /// G045: PL-1-1
    /// threat ST-D-10
    #[test]
    fn payload_rules_are_read_in_order() {
        let (s, errors) = check(
            r#"
[mqtt]
max-packet-bytes = 4096
[[mqtt.payload]]
topic = "kawal/{uid}/up/telemetry"
max-bytes = 1024
json = true
json-object = true
[[mqtt.payload]]
topic = "kawal/+/up/#"
max-bytes = 4096
"#,
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            s.payload,
            [
                PayloadRule {
                    topic: "kawal/{uid}/up/telemetry".into(),
                    max_bytes: Some(1024),
                    json: true,
                    json_object: true,
                },
                PayloadRule {
                    topic: "kawal/+/up/#".into(),
                    max_bytes: Some(4096),
                    json: false,
                    json_object: false,
                },
            ]
        );
        let (s, errors) = check("[mqtt]\n");
        assert!(errors.is_empty() && s.payload.is_empty(), "{errors:?}");
    }

    /// G045: PL-1-1
    /// threat ST-D-10
    #[test]
    fn bad_payload_rules_are_refused_naming_the_key() {
        let (_, errors) = check(
            r#"
[mqtt]
max-packet-bytes = 4096
max-topic-depth = 4
[[mqtt.payload]]
topic = "kawal/#/up"
json = true
[[mqtt.payload]]
topic = "kawal/{device}/up"
max-bytes = 10
[[mqtt.payload]]
topic = "a"
max-bytes = 0
[[mqtt.payload]]
topic = "a"
max-bytes = 4097
[[mqtt.payload]]
topic = "a"
[[mqtt.payload]]
topic = "a"
max-bytes = 10
json-object = true
[[mqtt.payload]]
topic = "a/b/c/d/e"
json = true
"#,
        );
        let expect = [
            "mqtt.payload[0].topic",
            "mqtt.payload[1].topic",
            "mqtt.payload[2].max-bytes: 0",
            "mqtt.payload[3].max-bytes: 4097",
            "mqtt.payload[4]: sets neither",
            "mqtt.payload[5].json-object",
            "mqtt.payload[6].topic",
        ];
        assert_eq!(errors.len(), expect.len(), "{errors:#?}");
        for (e, want) in errors.iter().zip(expect) {
            assert!(e.starts_with(want), "{e} should start with {want}");
        }
        // Unknown keys in a rule are refused by the parser.
        let doc = toml::from_str::<Doc>("[[mqtt.payload]]\ntopic = \"a\"\nmax-size = 1\n");
        assert!(doc.is_err_and(|e| e.to_string().contains("max-size")));
    }
}
