//! The daemon's platform watchers: the integrity check on its period (PL-1-4) and the
//! services and interfaces assessment on its period (PL-3-1, PH-1-1, PH-1-2). Both run on the
//! blocking pool (they hash files and read `/proc`), log to the audit log, and keep their last
//! result for the health answer.
use std::sync::{Arc, Mutex, MutexGuard};

use kawal_audit::AuditLog;
use kawal_platform::integrity::PublicKey;

use crate::config::ValidConfig;
use crate::config::platform::{ExposureSettings, IntegrityMode, IntegritySettings, OnMismatch};
use crate::device;
use crate::exposure::Tracker;
use crate::integrity::Verification;

/// What the watchers found last.
#[derive(Debug)]
pub struct Status {
    integrity_settings: IntegritySettings,
    integrity: Mutex<Option<Verification>>,
    exposure: Mutex<Tracker>,
    /// Every finding of the last assessment, for the platform page (health shows a summary).
    findings: Mutex<Vec<serde_json::Value>>,
    forward_settings: Option<crate::config::forward::LogForwardSettings>,
    forward: crate::forward::Shared,
    tamper_settings: kawal_platform::tamper::ValidConfig,
    tamper: Arc<crate::tamper::Response>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Status {
    /// Nothing checked yet.
    pub fn new(config: &ValidConfig, tamper: Arc<crate::tamper::Response>) -> Arc<Self> {
        Arc::new(Self {
            integrity_settings: config.integrity.clone(),
            integrity: Mutex::new(None),
            exposure: Mutex::new(Tracker::default()),
            findings: Mutex::new(Vec::new()),
            forward_settings: config.log_forward.clone(),
            forward: crate::forward::Shared::default(),
            tamper_settings: config.tamper.clone(),
            tamper,
        })
    }

    /// Where the forwarder's watcher keeps its latest status.
    pub fn forward(&self) -> crate::forward::Shared {
        Arc::clone(&self.forward)
    }

    /// The kill switch of the tamper response: set, nothing may use the keys any more.
    pub fn tampered(&self) -> bool {
        self.tamper.fired()
    }

    /// The `log_forward` and `tamper` parts of the health answer.
    pub fn response_health(&self) -> (serde_json::Value, serde_json::Value) {
        let st = lock(&self.forward).clone();
        let forward = match (&self.forward_settings, st) {
            (Some(s), None) => {
                serde_json::json!({ "state": "starting", "collector": s.collector })
            }
            (s, st) => crate::forward::health(s.as_ref(), st.as_ref()),
        };
        (
            forward,
            crate::tamper::health(&self.tamper_settings, &self.tamper),
        )
    }

    /// Keeps the latest integrity check.
    pub fn set_integrity(&self, v: Verification) {
        *lock(&self.integrity) = Some(v);
    }

    /// The integrity settings the checks run under.
    pub fn integrity_settings(&self) -> &IntegritySettings {
        &self.integrity_settings
    }

    /// Everything the watchers found, in full, for the platform page and
    /// `GET /api/v1/platform`: the integrity check with every problem and file, the exposure
    /// summary with every finding and what to do about it, tamper and log forwarding.
    pub fn platform(&self) -> serde_json::Value {
        let (integrity, mut exposure) = self.health();
        let integrity = match &*lock(&self.integrity) {
            Some(v) if self.integrity_settings.mode != IntegrityMode::Off => {
                v.platform(&self.integrity_settings)
            }
            _ => integrity,
        };
        if let Some(obj) = exposure.as_object_mut()
            && obj.contains_key("last_check")
        {
            obj.insert("list".into(), lock(&self.findings).clone().into());
        }
        let (log_forward, tamper) = self.response_health();
        serde_json::json!({
            "integrity": integrity,
            "exposure": exposure,
            "tamper": tamper,
            "log_forward": log_forward,
        })
    }

    /// The `integrity` and `exposure` parts of the health answer.
    pub fn health(&self) -> (serde_json::Value, serde_json::Value) {
        let integrity = match (&*lock(&self.integrity), self.integrity_settings.mode) {
            (_, IntegrityMode::Off) => {
                serde_json::json!({ "state": "disabled" })
            }
            (Some(v), _) => v.health(&self.integrity_settings),
            (None, _) => serde_json::json!({ "state": "not-checked" }),
        };
        let exposure = lock(&self.exposure)
            .last
            .clone()
            .unwrap_or_else(|| serde_json::json!({ "state": "not-checked" }));
        (integrity, exposure)
    }
}

/// What `on-mismatch = "reboot"` needs: the update slots, and the daemon's restart request.
#[derive(Debug, Clone)]
pub struct Reboot {
    /// `[update]`.
    pub settings: crate::config::update::UpdateSettings,
    /// Stops the daemon for a restart into the slot the boot state now chooses.
    pub restart: tokio::sync::mpsc::Sender<()>,
}

/// Checks the integrity manifest every period. A mismatch is logged when it first appears or
/// changes (and the recovery when it goes away); with `stop-serving`, `stop` is told and the
/// loop ends; with `reboot`, the daemon leaves its slot and `reboot.restart` is told. A failed check is repeated once after a moment before it counts, so a overlay
/// being rewritten (two renames) is not taken for tampering.
pub async fn integrity_loop(
    status: Arc<Status>,
    settings: IntegritySettings,
    device_key: PublicKey,
    log: Arc<AuditLog>,
    stop: tokio::sync::mpsc::Sender<()>,
    reboot: Option<Reboot>,
) {
    let mut tick = tokio::time::interval(settings.period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is now: the check before serving has just run.
    tick.tick().await;
    let mut last_problems: Vec<String> = Vec::new();
    loop {
        tick.tick().await;
        let s = settings.clone();
        let v = tokio::task::spawn_blocking(move || {
            let v = crate::integrity::verify(&s, Some(&device_key), "periodic");
            if v.ok {
                return v;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
            crate::integrity::verify(&s, Some(&device_key), "periodic")
        })
        .await;
        let v = match v {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "integrity check task failed");
                continue;
            }
        };
        let changed = v.problems != last_problems;
        let event = changed.then(|| v.event());
        if v.ok {
            tracing::debug!(summary = %v.summary(), "periodic integrity check");
        } else {
            tracing::error!(summary = %v.summary(), "integrity check FAILED");
        }
        last_problems.clone_from(&v.problems);
        let failed = !v.ok;
        // Health shows the result before the event is in the log: whoever reads the event can
        // rely on health saying the same.
        status.set_integrity(v);
        if let Some(event) = event {
            let log = Arc::clone(&log);
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(e) = device::record(&log, event) {
                    tracing::error!(error = %e, "could not log the integrity check");
                }
            })
            .await;
        }
        if failed && settings.on_mismatch == OnMismatch::Reboot {
            if let Some(r) = &reboot {
                let (update, log) = (r.settings.clone(), Arc::clone(&log));
                let switched =
                    tokio::task::spawn_blocking(move || crate::update::leave_slot(&update, &log))
                        .await
                        .unwrap_or(false);
                if switched {
                    tracing::error!(
                        "integrity mismatch: on-mismatch = reboot, restarting into the other slot"
                    );
                    let _ = r.restart.send(()).await;
                    return;
                }
            }
            tracing::error!(
                "integrity mismatch: on-mismatch = reboot, but no slot to go back to: shutting down"
            );
            let _ = stop.send(()).await;
            return;
        }
        if failed && settings.on_mismatch == OnMismatch::StopServing {
            tracing::error!("integrity mismatch: on-mismatch = stop-serving, shutting down");
            let _ = stop.send(()).await;
            return;
        }
    }
}

/// Assesses services and interfaces now and every period; logs each new finding once and each
/// enforcement action that changed something.
pub async fn exposure_loop(status: Arc<Status>, settings: ExposureSettings, log: Arc<AuditLog>) {
    let mut tick = tokio::time::interval(settings.period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (s, st, log) = (settings.clone(), Arc::clone(&status), Arc::clone(&log));
        let r = tokio::task::spawn_blocking(move || {
            let a = crate::exposure::assess(&s);
            let actions = kawal_platform::exposure::enforce(
                &kawal_platform::SysRoot::host(),
                &s.policy,
                &kawal_platform::exposure::Systemctl::default(),
            );
            let at = kawal_audit::WallTime::now().to_string();
            let events = lock(&st.exposure).update(&a, &at, &actions);
            *lock(&st.findings) = a.findings.iter().map(finding_view).collect();
            for e in events {
                if let Err(e) = device::record(&log, e) {
                    tracing::error!(error = %e, "could not log an exposure finding");
                }
            }
            if !a.findings.is_empty() {
                tracing::warn!(
                    findings = a.findings.len(),
                    "services and interfaces: findings (see health or kawal exposure check)"
                );
            }
        })
        .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "exposure assessment task failed");
        }
    }
}

/// One finding as the platform page shows it: what, where, who owns it, and what to do.
fn finding_view(f: &kawal_platform::exposure::Finding) -> serde_json::Value {
    let name = |v: serde_json::Result<serde_json::Value>| {
        v.ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let fix = f.fix.as_ref().map(|fix| match fix {
        kawal_platform::exposure::Fix::StopAndMask { units } => format!(
            "kawal can stop and mask {} ([exposure] enforce = true)",
            units
                .iter()
                .map(|u| u.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        kawal_platform::exposure::Fix::BlockModules => {
            "kawal can block the module classes ([exposure] enforce = true)".to_owned()
        }
        kawal_platform::exposure::Fix::UsbAuthorisation => {
            "kawal can authorise only the listed USB devices ([exposure] enforce = true)".to_owned()
        }
    });
    // What to do: the operator's part when kawal cannot fix it, else what kawal can do.
    let what_to_do = f.manual.clone().or_else(|| fix.clone()).unwrap_or_else(|| {
        "remove or stop it, or allow it in the [exposure] policy if it is needed".to_owned()
    });
    serde_json::json!({
        "control": f.control.as_str(),
        "kind": name(serde_json::to_value(f.kind)),
        "severity": name(serde_json::to_value(f.severity)),
        "subject": f.subject,
        "owner": f.detail,
        "operator_action": f.manual,
        "fix": fix,
        "what_to_do": what_to_do,
    })
}
