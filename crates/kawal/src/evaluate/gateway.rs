//! Verdicts on the controls the gateway brings: certificates for sensors and their life cycle,
//! mutual authentication, encrypted and authenticated channels, and the per-device information
//! flow. The evidence is the daemon's record of what its MQTT listener served at its last
//! start, the sensor registry in the store, the settings in force and the logged events.
use std::collections::BTreeMap;

use kawal_compliance::{Finding, Verdict};
use kawal_pki::{ExpiryState, SensorInfo, SensorState};

use super::FindingExt;
use crate::config::ValidConfig;
use crate::gateway::MqttRecord;
use crate::serve::ApiRecord;

/// What the gateway controls are judged on.
#[derive(Debug)]
pub struct GatewayFacts {
    /// The daemon's record of its MQTT listener (none: it never served on this device).
    pub mqtt: Option<MqttRecord>,
    /// The daemon's record of its API listener.
    pub api: Option<ApiRecord>,
    /// Every enrolled sensor.
    pub sensors: Vec<SensorInfo>,
    /// The settings in force.
    pub config: ValidConfig,
    /// The device certificate's end of validity and how close it is.
    pub device_cert: Option<(String, ExpiryState)>,
}

fn n(events: &BTreeMap<String, u64>, key: &str) -> u64 {
    events.get(key).copied().unwrap_or(0)
}

fn by_reason(events: &BTreeMap<String, u64>, event: &str) -> String {
    let prefix = format!("{event}/");
    let parts: Vec<String> = events
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|r| format!("{r}: {v}")))
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

fn not_served(code: &str) -> Finding {
    Finding::new(code, Verdict::NotMet).reason(
        "the daemon has not served sensors on this device yet (no record of its MQTT listener): run `kawal run` once",
    )
}

/// The gateway controls' findings.
pub fn findings(g: &GatewayFacts, events: &BTreeMap<String, u64>) -> Vec<Finding> {
    let Some(m) = &g.mqtt else {
        return ["AU-1-9", "AU-1-10", "AU-3-2", "DS-1-1", "DS-1-2", "DS-2-1"]
            .into_iter()
            .map(not_served)
            .collect();
    };
    let active: Vec<&SensorInfo> = g
        .sensors
        .iter()
        .filter(|s| s.state == SensorState::Active)
        .collect();
    let revoked = g
        .sensors
        .iter()
        .filter(|s| s.state == SensorState::Revoked)
        .count();
    let superseded: usize = g.sensors.iter().map(|s| s.previous.len()).sum();
    let ca = &m.sensor_ca;
    let mut out = Vec::new();

    out.push(
        Finding::new(
            "AU-1-9",
            if m.client_cert_required && !m.plain_listener {
                Verdict::Met
            } else {
                Verdict::NotMet
            },
        )
        .evidence(
            "sensors",
            format!(
                "MQTT on {} accepts only client certificates from the sensor CA; no anonymous, password-only or plain-TCP access",
                m.listen
            ),
        )
        .evidence(
            "sensor CA",
            format!(
                "{} (ECDSA P-256, key sealed in the store), valid until {}, SHA-256 {}",
                ca.subject, ca.not_after, ca.sha256
            ),
        )
        .evidence(
            "identity",
            "the UID in the verified certificate (urn:kawal:sensor:<uid>); the MQTT client id must equal it",
        )
        .evidence(
            "enrolled",
            format!(
                "{} sensor(s): {} active, {} revoked; keys made on the sensors, certificates by EST",
                g.sensors.len(),
                active.len(),
                revoked
            ),
        )
        .evidence(
            "refused at the listener",
            by_reason(events, "mqtt.refused"),
        )
        .evidence(
            "external sensor CA",
            g.config.gateway.external_ca_file.as_ref().map_or_else(
                || "none configured: only the gateway's own sensor CA".to_owned(),
                |f| {
                    format!(
                        "{} trusted for imported sensors only (kawal sensor import; the registry refuses the rest): {} certificate(s) imported",
                        f.display(),
                        n(events, "sensor.certificate-issued/external-ca-import")
                    )
                },
            ),
        )
        .evidence(
            "validity and the clock",
            format!(
                "certificates are checked at the clock floor (the latest time the device has lived through) when the clock reads earlier: {} clock.behind event(s)",
                n(events, "clock.behind")
            ),
        )
        .reason_if(
            !m.client_cert_required || m.plain_listener,
            "the MQTT listener accepted connections without a client certificate",
        ),
    );

    // One certificate per device: no serial twice, nothing expired still counted as active.
    let mut serials = BTreeMap::new();
    for s in &active {
        if let Some(serial) = &s.serial {
            *serials.entry(serial.clone()).or_insert(0u32) += 1;
        }
    }
    let shared = serials.values().filter(|c| **c > 1).count();
    let mut expiry = BTreeMap::new();
    for s in &active {
        let k = s.expiry.map_or("unknown", |e| match e {
            ExpiryState::Ok => "valid",
            ExpiryState::Warn30 => "expires within 30 days",
            ExpiryState::Warn7 => "expires within 7 days",
            ExpiryState::Expired => "expired",
        });
        *expiry.entry(k).or_insert(0u32) += 1;
    }
    let expired = expiry.get("expired").copied().unwrap_or(0);
    let expiry_text = if expiry.is_empty() {
        "no active sensor certificates".to_owned()
    } else {
        expiry
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let device = g.device_cert.as_ref().map_or_else(
        || "no device certificate found".to_owned(),
        |(until, state)| match state {
            ExpiryState::Ok => format!("valid until {until} (more than 30 days left)"),
            ExpiryState::Warn30 => {
                format!("valid until {until}: EXPIRES within 30 days (warn-30d)")
            }
            ExpiryState::Warn7 => format!("valid until {until}: EXPIRES within 7 days (warn-7d)"),
            ExpiryState::Expired => {
                format!("EXPIRED at {until}: the gateway presents an expired certificate")
            }
        },
    );
    let device_expired = matches!(g.device_cert, Some((_, ExpiryState::Expired)));
    let mut failures = Vec::new();
    if shared > 0 {
        failures.push("a certificate is shared by sensors");
    }
    if expired > 0 {
        failures.push("an active sensor certificate has expired");
    }
    if device_expired {
        failures.push(
            "the gateway's own device certificate has expired (renew it: kawal cert install)",
        );
    }
    let mut f = Finding::new("AU-1-10", Verdict::Manual)
        .evidence(
            "one certificate per device",
            format!(
                "{} active sensor certificate(s), {} serial(s) shared (issuing a new certificate revokes the previous one)",
                active.len(),
                shared
            ),
        )
        .evidence("sensor certificates", expiry_text)
        .evidence(
            "renewal",
            "sensors re-enrol with their current certificate (EST simplereenroll) from two thirds of their lifetime; the old certificate is superseded at once",
        )
        .evidence(
            "revocation",
            format!(
                "{revoked} sensor(s) revoked, {superseded} certificate(s) superseded; the CRL is re-signed and the listener reloaded at once, live connections dropped ({} revocation events)",
                n(events, "sensor.revoked")
            ),
        )
        .evidence(
            "clones",
            format!(
                "the same certificate on two live connections drops both: {} detected",
                n(events, "mqtt.clone-detected")
            ),
        )
        .evidence("gateway's own certificate", device)
        .evidence(
            "gateway certificate renewal",
            format!(
                "kawal cert install checks a new certificate (device key, validity) and the daemon puts it in force on the API and MQTT listeners and the upstream bridge without a restart: {} renewal(s) in force, {} refused; expiry warnings at 30 and 7 days and on expiry: {} event(s)",
                n(events, "certificate.renewed"),
                n(events, "certificate.refused"),
                n(events, "certificate.expiring")
            ),
        );
    let automatic = g.config.renewal.as_ref();
    f = f.evidence(
        "automatic renewal",
        automatic.map_or_else(
            || "not configured ([device.renewal]): the operator installs renewed certificates".to_owned(),
            |r| {
                format!(
                    "over EST simplereenroll from {} (server CA pinned: {}) from {} % of the lifetime, retried with back-off {}-{} s while the CA is away: {} failed attempt(s) recorded",
                    r.est_url,
                    r.ca_file.display(),
                    r.at_percent,
                    r.retry_min.as_secs(),
                    r.retry_max.as_secs(),
                    n(events, "certificate.renewal-failed")
                )
            },
        ),
    );
    f = if failures.is_empty() && automatic.is_some() {
        f.with_verdict(Verdict::Met).reason(
            "one certificate per device (a new one supersedes the old at once; clones are dropped), sensors renew over EST before expiry, and the gateway renews its own certificate and chain over EST before expiry without a restart",
        )
    } else if failures.is_empty() {
        f.reason(
            "the gateway's own device certificate is renewed by installing a certificate issued for its key (kawal cert install; in force within a minute, no restart) and its expiry is warned of; automatic renewal ([device.renewal], EST) is not configured, so the assessor judges the renewal process",
        )
    } else {
        f.with_verdict(Verdict::NotMet).reason(failures.join("; "))
    };
    out.push(f);

    let upstream = m.upstream.as_ref().map_or_else(
        || "none configured (telemetry stays in the sealed queue)".to_owned(),
        |u| {
            format!(
                "{} verified as {} against the pinned CA {}; the gateway presents its device certificate",
                u.address,
                u.server_name,
                u.ca
                    .as_ref()
                    .map_or("(unreadable)".to_owned(), |c| format!("{} ({})", c.subject, c.sha256))
            )
        },
    );
    let upstream_ok = m.upstream.as_ref().is_none_or(|u| u.ca.is_some());
    out.push(
        Finding::new(
            "AU-3-2",
            if m.client_cert_required && upstream_ok {
                Verdict::Met
            } else {
                Verdict::NotMet
            },
        )
        .evidence(
            "sensor ↔ gateway",
            "TLS with a required client certificate (sensor) and the device certificate (gateway); the sensor verifies the gateway against the device CA",
        )
        .evidence("gateway ↔ upstream", upstream)
        .evidence(
            "refusals",
            format!(
                "{} refused connection(s), {} client-id mismatches, {} clones, {} upstream refusals",
                n(events, "mqtt.refused"),
                n(events, "mqtt.refused/client-id-mismatch"),
                n(events, "mqtt.clone-detected"),
                n(events, "bridge.refused")
            ),
        )
        .reason_if(!upstream_ok, "the upstream's pinned CA could not be read"),
    );

    let api_tls = g.api.as_ref().map_or_else(
        || "no record of the API listener".to_owned(),
        |a| {
            format!(
                "{}: {}; suites {}",
                a.listen,
                a.tls_versions.join(", "),
                a.tls_suites.join(", ")
            )
        },
    );
    out.push(
        Finding::new(
            "DS-1-1",
            if m.plain_listener || g.api.is_none() {
                Verdict::NotMet
            } else {
                Verdict::Met
            },
        )
        .evidence("management API", api_tls)
        .evidence(
            "MQTT",
            format!(
                "{}: {}; no plain-TCP listener",
                m.listen,
                m.tls_versions.join(", ")
            ),
        )
        .evidence(
            "upstream",
            if m.upstream.is_some() {
                "TLS 1.3/1.2 ECDHE+AEAD only"
            } else {
                "none configured"
            },
        )
        .reason_if(g.api.is_none(), "no record of the API listener"),
    );

    out.push(
        Finding::new(
            "DS-1-2",
            if m.client_cert_required && upstream_ok {
                Verdict::Met
            } else {
                Verdict::NotMet
            },
        )
        .evidence(
            "data channel",
            "sensors publish only over mutually authenticated TLS; a QoS 1 message is sealed in the store before its PUBACK and leaves the queue only on the upstream's PUBACK",
        )
        .evidence(
            "control channel",
            "commands sent down carry a sequence number and an expiry; the reference sensor client refuses replays and stale commands (docs/sensors.md states the rule for other sensors)",
        )
        .evidence("queue", m.queue.clone())
        .evidence(
            "upstream events",
            format!(
                "connected {}, disconnected {}, refused {}",
                n(events, "bridge.connected"),
                n(events, "bridge.disconnected"),
                n(events, "bridge.refused")
            ),
        ),
    );

    // Every role's publish rules must be in its own lane ({uid}), or say why not.
    let open: Vec<String> = m
        .acl
        .iter()
        .flat_map(|(role, (publish, _))| {
            publish
                .iter()
                .filter(|t| !t.contains("{uid}"))
                .map(move |t| format!("{role}: {t}"))
        })
        .collect();
    let sources = if m.allow_sources.is_empty() {
        "any source address (restrict with [mqtt] allow-sources)".to_owned()
    } else {
        m.allow_sources.join(", ")
    };
    let rules = m
        .acl
        .iter()
        .map(|(role, (p, s))| {
            format!(
                "{role}: publish [{}] subscribe [{}]",
                p.join(", "),
                s.join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    out.push(
        Finding::new(
            "DS-2-1",
            if open.is_empty() {
                Verdict::Met
            } else {
                Verdict::NotMet
            },
        )
        .evidence("topic rules (default deny)", rules)
        .evidence("source networks", sources)
        .evidence(
            "denied",
            format!(
                "{} publish/subscribe attempts outside a sensor's lane",
                n(events, "mqtt.denied")
            ),
        )
        .reason_if(
            !open.is_empty(),
            &format!(
                "publish rules without {{uid}} let every sensor of the role write there: {}",
                open.join(", ")
            ),
        ),
    );
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use crate::gateway::CaRecord;

    fn facts(device_cert: Option<(String, ExpiryState)>) -> GatewayFacts {
        GatewayFacts {
            mqtt: Some(MqttRecord {
                started_at: "2030-01-01T00:00:00.000000Z".into(),
                listen: "127.0.0.1:8883".into(),
                client_cert_required: true,
                plain_listener: false,
                tls_versions: vec!["TLSv1.3".into()],
                acl: BTreeMap::new(),
                allow_sources: Vec::new(),
                sensor_ca: CaRecord {
                    subject: "sensor CA".into(),
                    not_after: "2040-01-01T00:00:00Z".into(),
                    sha256: "00".into(),
                },
                upstream: None,
                queue: "64 MiB".into(),
            }),
            api: None,
            sensors: Vec::new(),
            config: crate::config::defaults_for(std::path::Path::new("/nonexistent")).unwrap(),
            device_cert,
        }
    }

    fn au_1_10(device_cert: Option<(String, ExpiryState)>) -> Finding {
        findings(&facts(device_cert), &BTreeMap::new())
            .into_iter()
            .find(|f| f.code == "AU-1-10")
            .unwrap()
    }

    fn shown(f: &Finding) -> String {
        f.evidence
            .iter()
            .map(|e| format!("{}: {}", e.label, e.value))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// G045: AU-1-10
    #[test]
    fn an_expired_device_certificate_fails_the_lifecycle_control() {
        let f = au_1_10(Some(("2020-01-01T00:00:00Z".into(), ExpiryState::Expired)));
        assert_eq!(f.verdict, Verdict::NotMet);
        assert!(shown(&f).contains("EXPIRED at 2020-01-01"), "{}", shown(&f));
        assert!(f.reason.unwrap().contains("device certificate has expired"));
    }

    /// G045: AU-1-10
    #[test]
    fn a_device_certificate_close_to_its_end_is_shown_as_such() {
        for (state, text) in [
            (ExpiryState::Warn30, "EXPIRES within 30 days"),
            (ExpiryState::Warn7, "EXPIRES within 7 days"),
            (ExpiryState::Ok, "more than 30 days left"),
        ] {
            let f = au_1_10(Some(("2031-01-01T00:00:00Z".into(), state)));
            assert_eq!(f.verdict, Verdict::Manual, "{state:?}");
            assert!(shown(&f).contains(text), "{}", shown(&f));
        }
    }

    /// G045: AU-1-10
    /// With automatic renewal over EST configured the control is met, and the evidence names
    /// the EST server, the pinned CA and the failed attempts; an expired certificate still
    /// fails it.
    #[test]
    fn automatic_renewal_over_est_meets_the_lifecycle_control() {
        let mut fx = facts(Some(("2031-01-01T00:00:00Z".into(), ExpiryState::Ok)));
        fx.config.renewal = Some(crate::devcert::renew::Settings {
            est_url: "https://ca.example:8443".into(),
            ca_file: "/etc/kawal/fleet-ca.pem".into(),
            at_percent: 67,
            retry_min: std::time::Duration::from_secs(60),
            retry_max: std::time::Duration::from_secs(21_600),
        });
        let events = BTreeMap::from([("certificate.renewal-failed".to_owned(), 3)]);
        let f = findings(&fx, &events)
            .into_iter()
            .find(|f| f.code == "AU-1-10")
            .unwrap();
        assert_eq!(f.verdict, Verdict::Met, "{}", shown(&f));
        let text = shown(&f);
        for part in [
            "https://ca.example:8443",
            "/etc/kawal/fleet-ca.pem",
            "3 failed attempt",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }
        fx.device_cert = Some(("2020-01-01T00:00:00Z".into(), ExpiryState::Expired));
        let f = findings(&fx, &events)
            .into_iter()
            .find(|f| f.code == "AU-1-10")
            .unwrap();
        assert_eq!(f.verdict, Verdict::NotMet);
    }
}
