//! Verdicts on the log's protection against loss (PL-4-2: forwarded to a remote collector)
//! and on tamper response (PH-2-1), from the configuration in force, the forwarder's cursor
//! file and last recorded state, and the tamper inputs' sources checked now.
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use kawal_compliance::{Finding, Verdict};

use super::FindingExt;
use crate::config::forward::{ClientCert, LogForwardSettings};
use crate::forward::ForwardRecord;

/// The collector must have confirmed within this long when entries are waiting.
pub const RECENT: Duration = Duration::from_secs(15 * 60);

/// What PL-4-2 and PH-2-1 are judged on.
#[derive(Debug)]
pub struct ResponseFacts {
    /// `[log-forward]` in force.
    pub forward: Option<LogForwardSettings>,
    /// The cursor file: the seq confirmed delivered, and when it was last written.
    pub cursor: Option<(u64, SystemTime)>,
    /// The daemon's last recorded forwarding state.
    pub record: Option<ForwardRecord>,
    /// The local log's last seq.
    pub local_last_seq: u64,
    /// `[tamper]` in force.
    pub tamper: kawal_platform::tamper::ValidConfig,
    /// Each input and whether its source can be watched now (`None`: yes).
    pub tamper_sources: Vec<(String, Option<String>)>,
    /// When the report is made.
    pub now: SystemTime,
}

fn n(events: &BTreeMap<String, u64>, key: &str) -> u64 {
    events.get(key).copied().unwrap_or(0)
}

/// Checks each input's source: a file that exists, a GPIO chip that exists; a signal always.
pub fn tamper_sources(cfg: &kawal_platform::tamper::ValidConfig) -> Vec<(String, Option<String>)> {
    use kawal_platform::tamper::ValidInput;
    cfg.inputs
        .iter()
        .map(|i| {
            let problem = match i {
                ValidInput::File { path, .. } => std::fs::metadata(path)
                    .err()
                    .map(|e| format!("{}: {e}", path.display())),
                ValidInput::Gpio { chip, .. } => std::fs::metadata(chip)
                    .err()
                    .map(|e| format!("{}: {e}", chip.display())),
                _ => None,
            };
            (crate::tamper::input_name(i), problem)
        })
        .collect()
}

/// PL-4-2: the local protection (`log`) and the forwarding to the collector.
pub fn pl_4_2(
    log: &Result<kawal_audit::VerifyReport, String>,
    r: &ResponseFacts,
    events: &BTreeMap<String, u64>,
) -> Finding {
    let r_log = match log {
        Ok(v) => v,
        Err(e) => {
            return Finding::new("PL-4-2", Verdict::NotMet)
                .reason(format!("the audit log does not verify: {e}"));
        }
    };
    let mut f = Finding::new("PL-4-2", Verdict::NotMet)
        .evidence(
            "local log",
            format!(
                "{} entries, {} signed checkpoints, chain intact; anchor {}",
                r_log.entries,
                r_log.checkpoints,
                if r_log.anchor_checked {
                    "checked against the sealed anchor in the store"
                } else {
                    "none"
                }
            ),
        )
        .evidence("tamper records", r_log.tamper_records.len().to_string());
    let Some(s) = &r.forward else {
        return f.reason(
            "the log is not forwarded off the device ([log-forward] is not configured): it is hash-chained, signed and anchored, but someone who can write the disk can roll the store and the log back together, so loss is not prevented",
        );
    };
    f = f
        .evidence(
            "forwarding",
            format!(
                "syslog (RFC 5424) over mutual TLS (RFC 5425) to {}, the collector verified against the pinned CA {} as {}",
                s.collector,
                s.ca_file.display(),
                s.server_name
            ),
        )
        .evidence(
            "client identity",
            match &s.client {
                ClientCert::Device => "the device certificate and its sealed key".to_owned(),
                ClientCert::Files { cert, .. } => format!("{} (configured)", cert.display()),
            },
        )
        .evidence(
            "delivery",
            format!(
                "durable cursor {}; resumes after outages and restarts from the last confirmed entry: no gap, at most {} entries twice (declared overlap); checkpoint signatures travel with the entries (kawal log verify --remote checks a collector's copy)",
                s.cursor_file.display(),
                s.confirm_max_entries
            ),
        )
        .evidence(
            "backlog policy",
            format!(
                "nothing is dropped: the backlog is the local log; critical log.forward-backlog at 80 % of {} entries and at the maximum",
                s.max_backlog_entries
            ),
        )
        .evidence(
            "logged",
            format!(
                "{} log.forward-connected, {} log.forward-failed, {} log.forward-backlog",
                n(events, "log.forward-connected"),
                n(events, "log.forward-failed"),
                n(events, "log.forward-backlog")
            ),
        );
    if let Some(rec) = &r.record {
        f = f.evidence(
            "last recorded state",
            format!(
                "{} at {} (backlog alarm {}{})",
                rec.state,
                rec.at,
                rec.backlog_alarm,
                rec.last_error
                    .as_ref()
                    .map_or_else(String::new, |e| format!("; last error: {e}"))
            ),
        );
    }
    let Some((seq, at)) = r.cursor else {
        return f.reason(
            "configured, but the collector has not confirmed any entry yet (no cursor file)",
        );
    };
    let backlog = r.local_last_seq.saturating_sub(seq);
    let age = r.now.duration_since(at).unwrap_or_default();
    f = f.evidence(
        "confirmed",
        format!(
            "through seq {seq} of {} ({backlog} waiting), cursor written {} s ago",
            r.local_last_seq,
            age.as_secs()
        ),
    );
    if backlog * 5 >= s.max_backlog_entries * 4 {
        return f.reason(format!(
            "the backlog ({backlog} entries) is at or above 80 % of max-backlog-entries ({})",
            s.max_backlog_entries
        ));
    }
    if backlog > 0 && age > RECENT {
        return f.reason(format!(
            "{backlog} entries wait and the collector has not confirmed any for {} minutes",
            age.as_secs() / 60
        ));
    }
    if r.record.as_ref().is_some_and(|rec| rec.state == "stalled") {
        return f.reason("forwarding is stalled: the local log does not continue what was forwarded (see the last error)");
    }
    f.with_verdict(Verdict::Met)
}

/// PH-2-1: tamper inputs configured and watchable, and the response.
pub fn ph_2_1(r: &ResponseFacts, events: &BTreeMap<String, u64>) -> Finding {
    let f = Finding::new("PH-2-1", Verdict::NotMet)
        .evidence(
            "response",
            "on tamper: the key hierarchy in memory is released and the sealed root secret overwritten in place and synced (bound: 100 ms from the input), a lock marker written, the blob removed, then device.tamper (critical) logged and forwarded; the daemon stops serving, and the next start refuses to unseal until re-provisioned",
        )
        .evidence(
            "logged",
            format!(
                "{} device.tamper, {} tamper.input-fault",
                n(events, "device.tamper"),
                n(events, "tamper.input-fault")
            ),
        );
    if r.tamper.inputs.is_empty() {
        return f.reason("no tamper inputs are configured ([[tamper.input]])");
    }
    let f = f.evidence(
        "inputs",
        r.tamper_sources
            .iter()
            .map(|(name, p)| match p {
                None => format!("{name}: watchable"),
                Some(p) => format!("{name}: NOT watchable ({p})"),
            })
            .collect::<Vec<_>>()
            .join("; "),
    );
    let broken: Vec<&str> = r
        .tamper_sources
        .iter()
        .filter(|(_, p)| p.is_some())
        .map(|(n, _)| n.as_str())
        .collect();
    if !broken.is_empty() {
        return f.reason(format!(
            "input source(s) cannot be watched now: {}",
            broken.join(", ")
        ));
    }
    f.with_verdict(Verdict::Manual).reason(
        "the software response is armed on every configured input; the enclosure switch, its wiring and its placement are hardware the assessor must inspect",
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn facts(cursor: Option<(u64, SystemTime)>, local: u64) -> ResponseFacts {
        let raw: crate::config::RawConfig = toml::from_str(
            "data-dir = \"/var/lib/kawal\"\n[log-forward]\ncollector = \"logs:6514\"\nca-file = \"/ca.pem\"\nmax-backlog-entries = 100",
        )
        .unwrap();
        let cfg = raw.validate().unwrap();
        ResponseFacts {
            forward: cfg.log_forward,
            cursor,
            record: None,
            local_last_seq: local,
            tamper: cfg.tamper,
            tamper_sources: Vec::new(),
            now: SystemTime::now(),
        }
    }

    fn log() -> Result<kawal_audit::VerifyReport, String> {
        Ok(kawal_audit::VerifyReport::default())
    }

    /// G045: PL-4-2
    #[test]
    fn pl_4_2_needs_forwarding_confirmed_and_a_small_backlog() {
        let events = BTreeMap::new();
        let mut r = facts(None, 10);
        assert_eq!(pl_4_2(&log(), &r, &events).verdict, Verdict::NotMet);
        r.forward = None;
        let f = pl_4_2(&log(), &r, &events);
        assert!(f.reason.unwrap().contains("not configured"));
        let now = SystemTime::now();
        assert_eq!(
            pl_4_2(&log(), &facts(Some((10, now)), 12), &events).verdict,
            Verdict::Met
        );
        let old = now - Duration::from_secs(3600);
        assert_eq!(
            pl_4_2(&log(), &facts(Some((10, old)), 10), &events).verdict,
            Verdict::Met,
            "all forwarded, nothing new"
        );
        assert_eq!(
            pl_4_2(&log(), &facts(Some((10, old)), 12), &events).verdict,
            Verdict::NotMet,
            "waiting and not confirmed for an hour"
        );
        let f = pl_4_2(&log(), &facts(Some((10, now)), 95), &events);
        assert!(f.reason.unwrap().contains("80 %"));
    }

    /// G045: PH-2-1
    #[test]
    fn ph_2_1_is_manual_when_armed_and_not_met_without_inputs() {
        let events = BTreeMap::new();
        let mut r = facts(None, 0);
        assert_eq!(ph_2_1(&r, &events).verdict, Verdict::NotMet);
        r.tamper = kawal_platform::tamper::Config::from_toml(
            "[[input]]\nname = \"lid\"\nkind = \"signal\"\nsignal = \"SIGUSR2\"\n",
        )
        .unwrap()
        .validate()
        .unwrap();
        r.tamper_sources = tamper_sources(&r.tamper);
        assert_eq!(ph_2_1(&r, &events).verdict, Verdict::Manual);
        r.tamper_sources
            .push(("x (file /nope)".into(), Some("missing".into())));
        assert_eq!(ph_2_1(&r, &events).verdict, Verdict::NotMet);
    }
}
