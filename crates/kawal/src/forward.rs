//! The audit log forwarded to a remote collector (G045 PL-4-2): the forwarder of
//! `kawal_audit::forward` set up from `[log-forward]`, its state in the log and in health,
//! and `kawal log verify --remote`.
//!
//! The daemon starts the forwarder before it opens the audit log, and gives the log the
//! forwarder's waker as a sink, so every durable batch leaves at once. It stops the forwarder
//! after the log's final close, so `daemon.stopped` goes out too (the forwarder's stop sends
//! what the log holds and confirms it). [`Tracker`] turns the forwarder's status into audit
//! events on transitions only: `log.forward-connected`, `log.forward-failed`, and
//! `log.forward-backlog` (critical) when the backlog reaches 80 % of the maximum or the
//! maximum, and when it is back below. Nothing is ever dropped: the backlog is the local log.
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use kawal_audit::forward::{BacklogAlarm, ClientIdentity, ForwardConfig, ForwardStatus, Forwarder};
use kawal_audit::{AuditLog, Event, Outcome};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::config::forward::{ClientCert, LogForwardSettings};
use crate::device::{self, Device, tables};
use crate::error::{CliError, Context, Exit, Result};
use crate::output;

/// The health-table record of the forwarder's last transition, for `kawal audit`.
pub const FORWARD_RECORD: &str = "log-forward";

/// The PEM of a PKCS#8 private key, in memory that is wiped on drop.
fn key_pem(der: &[u8]) -> Zeroizing<String> {
    use base64::Engine;
    let b64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(der));
    let mut out = Zeroizing::new(String::with_capacity(b64.len() + 80));
    out.push_str("-----BEGIN PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END PRIVATE KEY-----\n");
    out
}

/// The client identity: the device certificate and its sealed key, or the configured files.
fn identity(dev: &Device, s: &LogForwardSettings) -> Result<ClientIdentity> {
    match &s.client {
        ClientCert::Device => Ok(ClientIdentity {
            cert_chain_pem: crate::serve::device_chain(dev)?,
            key_pem: key_pem(&crate::serve::device_key(dev)?),
        }),
        ClientCert::Files { cert, key } => {
            crate::config::check_permissions(key, "log-forward key file", true)?;
            let cert_chain_pem = std::fs::read_to_string(cert)
                .map_err(|e| CliError::new(Exit::NoInput, format!("{}: {e}", cert.display())))?;
            let key_pem =
                Zeroizing::new(std::fs::read_to_string(key).map_err(|e| {
                    CliError::new(Exit::NoInput, format!("{}: {e}", key.display()))
                })?);
            Ok(ClientIdentity {
                cert_chain_pem,
                key_pem,
            })
        }
    }
}

/// Starts forwarding the log of `dev` as `s` says. Connecting happens on the forwarder's
/// thread; what fails here is the configuration (files, PEM).
pub fn start(dev: &Device, s: &LogForwardSettings) -> Result<Forwarder> {
    let ca = std::fs::read_to_string(&s.ca_file).map_err(|e| {
        CliError::new(
            Exit::NoInput,
            format!("log-forward.ca-file {}: {e}", s.ca_file.display()),
        )
    })?;
    let mut config = ForwardConfig::new(
        s.collector.clone(),
        s.server_name.clone(),
        ca,
        identity(dev, s)?,
        dev.info.uid.clone(),
        s.cursor_file.clone(),
    );
    config.confirm_interval = s.confirm_interval;
    config.confirm_max_entries = s.confirm_max_entries;
    config.max_backlog_entries = s.max_backlog_entries;
    if let Some(ms) = test_backoff_ms() {
        config.backoff_min = std::time::Duration::from_millis(ms);
        config.backoff_max = std::time::Duration::from_millis(ms * 4);
        config.poll_interval = std::time::Duration::from_millis(ms);
    }
    Forwarder::start(&dev.layout.dir, config)
        .map_err(|e| CliError::new(Exit::Config, e.to_string()))
}

/// `KAWAL_FORWARD_BACKOFF_MS` (debug builds only): a short reconnection back-off so tests
/// need not wait a minute after an outage. Release builds ignore it.
fn test_backoff_ms() -> Option<u64> {
    if !cfg!(debug_assertions) {
        return None;
    }
    std::env::var("KAWAL_FORWARD_BACKOFF_MS")
        .ok()?
        .parse()
        .ok()
        .filter(|ms| (10..=60_000).contains(ms))
}

fn unix_s(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn alarm_name(a: BacklogAlarm) -> &'static str {
    match a {
        BacklogAlarm::Normal => "normal",
        BacklogAlarm::High => "high",
        BacklogAlarm::Full => "full",
    }
}

/// Whether the collector is being reached: connected now, or a confirmation since the last
/// error.
fn is_up(st: &ForwardStatus) -> bool {
    st.connected
        || match (st.last_confirmed_at, st.last_error_at) {
            (Some(c), Some(e)) => c >= e,
            (Some(_), None) => true,
            _ => false,
        }
}

/// The forwarder's state as health shows it: `connected`, `failing`, `stalled` or
/// `starting`.
fn state(st: &ForwardStatus) -> &'static str {
    if st.stalled {
        "stalled"
    } else if is_up(st) {
        "connected"
    } else if st.last_error.is_some() {
        "failing"
    } else {
        "starting"
    }
}

/// The `log_forward` object of the health answer.
pub fn health(s: Option<&LogForwardSettings>, st: Option<&ForwardStatus>) -> Value {
    let (Some(s), Some(st)) = (s, st) else {
        return json!({ "state": "disabled" });
    };
    let at = |t: Option<SystemTime>| t.map(|t| crate::devcert::rfc3339(unix_s(t)));
    json!({
        "state": state(st),
        "collector": s.collector,
        "server_name": s.server_name,
        "connected": st.connected,
        "cursor_seq": st.cursor_seq,
        "sent_seq": st.sent_seq,
        "local_seq": st.local_seq,
        "backlog_entries": st.backlog_entries,
        "max_backlog_entries": st.max_backlog_entries,
        "backlog_alarm": alarm_name(st.backlog_alarm),
        "backlog_alarm_percent": 80,
        "declared_overlap": st.declared_overlap,
        "messages_sent": st.messages_sent,
        "messages_resent": st.messages_resent,
        "confirmations": st.confirmations,
        "reconnects": st.reconnects,
        "broken_connections": st.broken_connections,
        "stalled": st.stalled,
        "last_error": st.last_error,
        "last_error_at": at(st.last_error_at),
        "last_confirmed_at": at(st.last_confirmed_at),
    })
}

/// The forwarder's last transition, kept in the store's health table for the report.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ForwardRecord {
    /// When it was written (RFC 3339).
    pub at: String,
    /// `connected`, `failing`, `stalled`, `starting`, `stopped`.
    pub state: String,
    /// The collector.
    pub collector: String,
    /// The last seq confirmed delivered.
    pub cursor_seq: u64,
    /// The backlog then.
    pub backlog_entries: u64,
    /// Its alarm state.
    pub backlog_alarm: String,
    /// The last error, if any.
    pub last_error: Option<String>,
}

/// Turns successive statuses into audit events, on transitions only.
#[derive(Debug, Default)]
pub struct Tracker {
    up: Option<bool>,
    alarm: BacklogAlarm,
}

impl Tracker {
    /// The events `st` calls for, given what was seen before.
    pub fn update(&mut self, collector: &str, st: &ForwardStatus) -> Vec<(&'static str, Event)> {
        let mut out = Vec::new();
        let up = is_up(st);
        let changed = match self.up {
            None => up || st.last_error.is_some(),
            Some(was) => was != up,
        };
        if changed {
            let (name, outcome) = if up {
                ("log.forward-connected", Outcome::Success)
            } else {
                ("log.forward-failed", Outcome::Failure)
            };
            let mut e = Event::new(name, "kawal-log-forward", outcome)
                .with("collector", collector)
                .with("cursor_seq", st.cursor_seq)
                .with("backlog", st.backlog_entries);
            if !up {
                e = e.with("error", st.last_error.clone().unwrap_or_default());
            }
            out.push((name, e));
            self.up = Some(up);
        }
        if st.backlog_alarm != self.alarm {
            let raised = st.backlog_alarm > self.alarm;
            out.push((
                "log.forward-backlog",
                Event::new(
                    "log.forward-backlog",
                    "kawal-log-forward",
                    if st.backlog_alarm == BacklogAlarm::Normal {
                        Outcome::Info
                    } else {
                        Outcome::Failure
                    },
                )
                .with("severity", if raised { "critical" } else { "info" })
                .with("state", alarm_name(st.backlog_alarm))
                .with("backlog", st.backlog_entries)
                .with("max", st.max_backlog_entries)
                .with("collector", collector)
                .with(
                    "meaning",
                    "nothing is dropped: the entries wait in the local log until the collector has them",
                ),
            ));
            self.alarm = st.backlog_alarm;
        }
        out
    }
}

/// The latest status, shared with the health answer.
pub type Shared = Arc<Mutex<Option<ForwardStatus>>>;

/// Follows the forwarder every second: keeps its status for health, logs transitions and
/// keeps the last one in the store for the report.
pub async fn watch_loop(
    fwd: Arc<Forwarder>,
    collector: String,
    shared: Shared,
    log: Arc<AuditLog>,
    dev: Arc<Device>,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tracker = Tracker::default();
    loop {
        tick.tick().await;
        let st = fwd.status();
        *shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(st.clone());
        let events = tracker.update(&collector, &st);
        if events.is_empty() {
            continue;
        }
        for (name, _) in &events {
            match *name {
                "log.forward-failed" => {
                    tracing::warn!(collector = %collector, error = ?st.last_error, "log forwarding failing");
                }
                "log.forward-backlog" => {
                    tracing::error!(
                        backlog = st.backlog_entries,
                        max = st.max_backlog_entries,
                        alarm = alarm_name(st.backlog_alarm),
                        "log forwarding backlog"
                    );
                }
                _ => tracing::info!(collector = %collector, "log forwarding connected"),
            }
        }
        let (log, dev, collector) = (Arc::clone(&log), Arc::clone(&dev), collector.clone());
        let _ = tokio::task::spawn_blocking(move || {
            for (_, e) in events {
                if let Err(e) = device::record(&log, e) {
                    tracing::error!(error = %e, "could not log a forwarding transition");
                }
            }
            if let Err(e) = keep_record(&dev, &collector, &st, state(&st)) {
                tracing::error!(error = %e, "could not keep the forwarding state");
            }
        })
        .await;
    }
}

/// Keeps the forwarder's state in the store's health table.
pub fn keep_record(dev: &Device, collector: &str, st: &ForwardStatus, state: &str) -> Result<()> {
    let record = ForwardRecord {
        at: kawal_audit::WallTime::now().to_string(),
        state: state.to_owned(),
        collector: collector.to_owned(),
        cursor_seq: st.cursor_seq,
        backlog_entries: st.backlog_entries,
        backlog_alarm: alarm_name(st.backlog_alarm).to_owned(),
        last_error: st.last_error.clone(),
    };
    let json = serde_json::to_vec(&record).or_exit(Exit::Failure, "forwarding record")?;
    dev.store
        .put(tables::HEALTH, FORWARD_RECORD, &json)
        .or_exit(Exit::Io, "store")
}

/// The cursor file's facts for the report: the seq confirmed delivered and when.
pub fn cursor_facts(path: &Path) -> Option<(u64, SystemTime)> {
    let cursor = kawal_audit::forward::CursorFileStore::new(path)
        .load()
        .ok()
        .flatten()?;
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok()?;
    Some((cursor.seq, modified))
}

/// `kawal log verify --remote FILE`: the collector's copy against the device's trusted keys
/// and its local log. Prints what it found; fails when the copy is not intact or the local
/// log does not hold what the copy holds.
pub fn verify_remote_cmd(dev: &Device, copy: &Path) -> Result<()> {
    let keys = dev.trusted_audit_keys()?;
    let v = kawal_audit::forward::verify_remote(copy, &dev.info.uid, &keys, Some(&dev.layout.dir))
        .or_exit(Exit::NoInput, "remote copy")?;
    let r = &v.report;
    let range = match (r.first_seq, r.last_seq) {
        (Some(a), Some(b)) => format!("seq {a}..{b}"),
        _ => "none".to_owned(),
    };
    output::line(&format!(
        "remote copy {}: device {}",
        copy.display(),
        dev.info.uid
    ));
    output::line(&format!(
        "  lines {}, entries {} ({range}), duplicates {}, foreign lines {}",
        r.lines, r.entries, r.duplicates, r.foreign_lines
    ));
    let list = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
    output::line(&format!(
        "  gaps {} ({} missing{}), chain breaks {}{}, bad lines {}, conflicts {}{}",
        r.gaps.len(),
        r.missing_entries,
        if r.gaps.is_empty() {
            String::new()
        } else {
            format!(
                ": {}",
                r.gaps
                    .iter()
                    .map(|(a, b)| format!("{a}-{b}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
        r.chain_breaks,
        if r.chain_break_seqs.is_empty() {
            String::new()
        } else {
            format!(" at {}", list(&r.chain_break_seqs))
        },
        r.bad_lines,
        r.conflicts,
        if r.conflict_seqs.is_empty() {
            String::new()
        } else {
            format!(" at {}", list(&r.conflict_seqs))
        },
    ));
    output::line(&format!(
        "  checkpoints {} valid, {} bad; signed through {}; unsigned tail {}",
        r.checkpoints,
        r.bad_checkpoints,
        r.signed_through
            .map_or_else(|| "nothing".to_owned(), |s| format!("seq {s}")),
        r.unsigned_tail
    ));
    if let Some(l) = &v.local {
        output::line(&format!(
            "  local log: last seq {} (copy: {}); local log shorter than the copy: {}; mismatches {}{}; missing locally {}; not forwarded yet {}",
            l.local_last_seq,
            l.remote_last_seq,
            if l.local_shorter {
                "YES (truncated or replaced on the device)"
            } else {
                "no"
            },
            l.mismatches,
            if l.mismatch_seqs.is_empty() {
                String::new()
            } else {
                format!(" at {}", list(&l.mismatch_seqs))
            },
            l.missing_locally,
            l.not_forwarded
        ));
    }
    if v.passed() {
        output::line("remote copy OK: intact, and the local log holds it unchanged");
        Ok(())
    } else {
        let mut why = Vec::new();
        if !r.is_intact() {
            why.push("the copy is not intact (gaps, chain breaks, bad lines, conflicts or bad checkpoints)");
        }
        if let Some(l) = &v.local
            && !l.is_consistent()
        {
            why.push(if l.local_shorter {
                "the local log is shorter than the copy: entries were deleted or truncated on the device"
            } else {
                "the local log differs from the copy"
            });
        }
        Err(CliError::new(
            Exit::DataErr,
            format!("remote copy does NOT verify: {}", why.join("; ")),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn names(events: &[(&'static str, Event)]) -> Vec<&'static str> {
        events.iter().map(|(n, _)| *n).collect()
    }

    /// G045: PL-4-2
    #[test]
    fn transitions_only_are_logged() {
        let mut t = Tracker::default();
        let mut st = ForwardStatus {
            max_backlog_entries: 100,
            ..ForwardStatus::default()
        };
        assert!(t.update("c:1", &st).is_empty(), "nothing happened yet");
        st.last_error = Some("refused".into());
        st.last_error_at = Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(10));
        assert_eq!(names(&t.update("c:1", &st)), ["log.forward-failed"]);
        assert!(t.update("c:1", &st).is_empty(), "no repeat while failing");
        st.connected = true;
        assert_eq!(names(&t.update("c:1", &st)), ["log.forward-connected"]);
        st.connected = false;
        st.last_confirmed_at = Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(20));
        assert!(t.update("c:1", &st).is_empty(), "confirmed: still up");
        st.backlog_entries = 80;
        st.backlog_alarm = BacklogAlarm::High;
        let e = t.update("c:1", &st);
        assert_eq!(names(&e), ["log.forward-backlog"]);
        assert!(format!("{:?}", e[0].1).contains("critical"));
        st.backlog_alarm = BacklogAlarm::Full;
        assert_eq!(names(&t.update("c:1", &st)), ["log.forward-backlog"]);
        st.backlog_alarm = BacklogAlarm::Normal;
        assert_eq!(names(&t.update("c:1", &st)), ["log.forward-backlog"]);
        assert!(t.update("c:1", &st).is_empty());
    }

    #[test]
    fn the_key_pem_is_a_pkcs8_block() {
        let pem = key_pem(&[1u8; 100]);
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(pem.ends_with("-----END PRIVATE KEY-----\n"));
        assert!(pem.lines().all(|l| l.len() <= 64));
    }
}
