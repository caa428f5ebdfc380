//! Tamper response in the daemon (G045 PH-2-1): the lock at start, the [`Destroy`] and
//! [`Alert`] of `kawal_platform::tamper`, and `kawal tamper status`.
//!
//! **At start**, before anything is unsealed, [`refuse_if_locked`]: a device whose data folder
//! holds the lock marker refuses to start (exit 69) and asks for re-provisioning; a sealed
//! blob still present (power failed mid-response, or a restored backup) is destroyed first.
//! The [`Monitor`](kawal_platform::tamper::Monitor) is started right after, before the
//! self-test unseals anything.
//!
//! **Destroy** ([`Response::destroy_keys`]): sets the kill switch ([`Response::fired`]),
//! drops the daemon's own handle on the device (the store, and through it the key hierarchy)
//! without waiting for any lock, and tells the daemon to stop serving. The library then
//! overwrites the sealed root in place and syncs it: from then on no copy of the root exists
//! on disk, which is the figure PH-2-1 bounds (`keys_destroyed_after`, logged in the event).
//!
//! What stays in memory, honestly: the root secret sits in one `KeyHierarchy` shared (by
//! reference count) with the store handle that the API, the MQTT gateway, the queue and the
//! audit log's anchor hold; derived keys are cached in the store and held by the API (session
//! key), the gateway (the device's TLS key) and the audit log (its checkpoint signer). They
//! cannot be wiped while those services hold them; they are zeroized on drop as the shutdown
//! that the kill switch starts stops each service, and the daemon logs when the hierarchy is
//! gone (`key hierarchy freed`, milliseconds after tamper) just before it exits.
//!
//! **Alert** ([`Response::tamper`]): appends `device.tamper` (critical) and wakes the log
//! forwarder. It uses the audit log's checkpoint signer, already derived and held outside
//! what Destroy drops, so the event is signed like every other; that key is dropped with the
//! log at the end of the shutdown. The forwarder keeps its TLS key until it has sent the event
//! and `daemon.stopped` (its stop confirms delivery), then the process exits.
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Instant;

use kawal_audit::forward::ForwardWaker;
use kawal_audit::{AuditLog, Event, Outcome, Sink};
use kawal_crypto::keys::KeyHierarchy;
use kawal_platform::tamper::{self, Alert, Destroy, LockInfo, ResponseReport};

use crate::device::{Device, Layout};
use crate::error::{CliError, Exit, Result};
use crate::output;

/// The message of a locked device, with why and how to recover.
pub fn locked_error(info: &LockInfo) -> CliError {
    let when = if info.when.is_empty() {
        "an unknown time"
    } else {
        info.when.as_str()
    };
    let by = if info.input.is_empty() {
        format!("an unknown input ({})", info.reason)
    } else {
        format!("{} ({})", info.input, info.reason)
    };
    CliError::new(
        Exit::Locked,
        format!(
            "device locked after tamper at {when} by {by}: its keys were destroyed and it will not unseal; re-provision (kawal reset --secure, then kawal init)"
        ),
    )
}

/// Refuses to go on when the device is locked after tamper; destroys a sealed blob that is
/// still there first.
pub fn refuse_if_locked(layout: &Layout) -> Result<()> {
    let Some(info) = tamper::is_locked(&layout.dir) else {
        return Ok(());
    };
    if layout.root_sealed().exists() {
        match tamper::destroy_sealed_blob(&layout.root_sealed()) {
            Ok(()) => tracing::error!(
                "locked device: the sealed root secret that was still present has been destroyed"
            ),
            Err(e) => {
                tracing::error!(error = %e, "locked device: the sealed root secret could not be destroyed");
            }
        }
    }
    Err(locked_error(&info))
}

/// `kawal tamper status`: the lock marker, if any.
pub fn status_cmd(data_dir: &Path) -> Result<()> {
    match tamper::is_locked(data_dir) {
        None => {
            output::line(&format!(
                "{}: not locked (no tamper lock marker)",
                data_dir.display()
            ));
            Ok(())
        }
        Some(info) => {
            output::line(&format!(
                "{}: LOCKED after tamper\n  when:   {}\n  input:  {} ({})\n  reason: {}\n  sealed root secret: {}",
                data_dir.display(),
                info.when,
                info.input,
                info.kind.map_or("unknown", |k| k.as_str()),
                info.reason,
                if Layout::new(data_dir).root_sealed().exists() {
                    "still present (destroyed at the next start)"
                } else {
                    "destroyed"
                }
            ));
            Err(locked_error(&info))
        }
    }
}

/// The daemon's side of the tamper response, shared by the monitor's threads and the daemon.
#[derive(Default)]
pub struct Response {
    fired: AtomicBool,
    fired_at: OnceLock<Instant>,
    device: Mutex<Option<Arc<Device>>>,
    keys: Mutex<Option<Weak<KeyHierarchy>>>,
    /// Weak: the daemon's final close of the log must not find it held here.
    log: OnceLock<Weak<AuditLog>>,
    waker: Mutex<Option<ForwardWaker>>,
    pending: Mutex<Option<ResponseReport>>,
    stop: tokio::sync::Notify,
    alert_done: AtomicBool,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("fired", &self.fired())
            .finish_non_exhaustive()
    }
}

impl Response {
    /// Nothing held yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The kill switch: the response has started; nothing new may use the keys.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    /// Holds the daemon's handle on the opened device (dropped by Destroy). Returns `false`
    /// if the response already ran: the caller must not go on.
    pub fn hold_device(&self, dev: &Arc<Device>) -> bool {
        *self.keys.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(Arc::downgrade(dev.store.keys()));
        *self.device.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(dev));
        !self.fired()
    }

    /// The log the alert appends to, and the forwarder it wakes. A response that ran before
    /// the log was open is recorded now.
    pub fn attach(&self, log: &Arc<AuditLog>, waker: Option<ForwardWaker>) {
        *self.waker.lock().unwrap_or_else(PoisonError::into_inner) = waker;
        let _ = self.log.set(Arc::downgrade(log));
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(report) = pending
            && let Err(e) = self.record(&report)
        {
            tracing::error!(error = %e, "could not log the tamper event");
        }
    }

    /// Resolves when the response has started (at once if it already has).
    pub async fn stopped(&self) {
        if self.fired() {
            return;
        }
        self.stop.notified().await;
    }

    /// Resolves when the alert has run (the tamper event is in the log), or after `limit`.
    pub async fn alerted(&self, limit: std::time::Duration) {
        let wait = async {
            // The alert takes milliseconds; polling keeps this free of lost wake-ups.
            while !self.alert_done.load(Ordering::SeqCst) {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
    }

    /// After the shutdown: whether the key hierarchy is gone (its last holder dropped, the
    /// root zeroized), and how long after tamper that was known.
    pub fn keys_freed(&self) -> Option<(bool, u128)> {
        let at = self.fired_at.get()?;
        let freed = self
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_none_or(|w| w.strong_count() == 0);
        Some((freed, at.elapsed().as_millis()))
    }

    fn wake_forwarder(&self) {
        if let Some(w) = self
            .waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            let _ = w.deliver(&[]);
        }
    }

    fn record(&self, report: &ResponseReport) -> std::result::Result<(), String> {
        let Some(log) = self.log.get().and_then(Weak::upgrade) else {
            *self.pending.lock().unwrap_or_else(PoisonError::into_inner) = Some(report.clone());
            return Err(
                "the audit log is not open yet; the event is recorded when it opens".into(),
            );
        };
        log.append(event(report)).map_err(|e| e.to_string())?;
        self.wake_forwarder();
        Ok(())
    }
}

/// The `device.tamper` event: what was seen, and each step of the response with its time.
pub fn event(report: &ResponseReport) -> Event {
    let steps: Vec<String> = report
        .steps
        .iter()
        .map(|s| {
            format!(
                "{} {} µs{}",
                s.step,
                s.took.as_micros(),
                s.error
                    .as_ref()
                    .map_or_else(String::new, |e| format!(" FAILED: {e}"))
            )
        })
        .collect();
    let failed = report.steps.iter().filter(|s| s.error.is_some()).count();
    Event::new("device.tamper", "kawal-tamper", Outcome::Failure)
        .with("severity", "critical")
        .with("input", report.lock.input.as_str())
        .with(
            "kind",
            report
                .lock
                .kind
                .map_or("unknown", tamper::InputKind::as_str),
        )
        .with("reason", report.lock.reason.as_str())
        .with("at", report.lock.when.as_str())
        .with(
            "keys_destroyed_us",
            u64::try_from(report.keys_destroyed_after.as_micros()).unwrap_or(u64::MAX),
        )
        .with("steps", steps.join("; "))
        .with("failed_steps", failed as u64)
        .with(
            "next",
            "the daemon stops serving and exits; the device stays locked until re-provisioned",
        )
}

impl Destroy for Response {
    fn destroy_keys(&self) -> std::result::Result<(), String> {
        self.fired.store(true, Ordering::SeqCst);
        let _ = self.fired_at.set(Instant::now());
        // Never wait: a holder busy elsewhere is left to the shutdown.
        let dropped = match self.device.try_lock() {
            Ok(mut g) => g.take().is_some(),
            Err(_) => false,
        };
        self.stop.notify_one();
        tracing::error!(
            handle_dropped = dropped,
            "TAMPER: keys being destroyed, the daemon stops serving"
        );
        Ok(())
    }
}

impl Alert for Response {
    fn tamper(&self, report: &ResponseReport) -> std::result::Result<(), String> {
        tracing::error!(
            input = %report.lock.input,
            keys_destroyed_us = report.keys_destroyed_after.as_micros(),
            "TAMPER response: keys destroyed, sealed root secret overwritten and removed, device locked"
        );
        let r = self.record(report);
        self.alert_done.store(true, Ordering::SeqCst);
        r
    }

    fn fault(&self, input: &str, error: &tamper::Error) {
        tracing::error!(input, error = %error, "tamper input cannot watch its source");
        if let Some(log) = self.log.get().and_then(Weak::upgrade) {
            let _ = log.append(
                Event::new("tamper.input-fault", "kawal-tamper", Outcome::Failure)
                    .with("input", input)
                    .with("error", error.to_string()),
            );
        }
    }
}

/// Starts the monitor on the configured inputs, before anything is unsealed.
pub fn start_monitor(
    layout: &Layout,
    config: &tamper::ValidConfig,
    response: &Arc<Response>,
) -> Result<Option<tamper::Monitor>> {
    if config.inputs.is_empty() {
        return Ok(None);
    }
    let r = tamper::TamperResponse::new(
        &layout.dir,
        &layout.root_sealed(),
        Arc::clone(response) as Arc<dyn Destroy>,
        Arc::clone(response) as Arc<dyn Alert>,
    );
    let monitor = tamper::Monitor::start(config.build(), r)
        .map_err(|e| CliError::new(Exit::Failure, format!("tamper monitor: {e}")))?;
    tracing::info!(inputs = config.inputs.len(), "tamper monitor armed");
    Ok(Some(monitor))
}

/// The tamper settings for health: inputs, armed, fired.
pub fn health(config: &tamper::ValidConfig, response: &Response) -> serde_json::Value {
    serde_json::json!({
        "state": if response.fired() { "tampered" } else if config.inputs.is_empty() { "disabled" } else { "armed" },
        "inputs": config.inputs.iter().map(input_name).collect::<Vec<_>>(),
    })
}

/// `name (kind)` of an input.
pub fn input_name(i: &tamper::ValidInput) -> String {
    match i {
        tamper::ValidInput::Gpio {
            name, chip, line, ..
        } => format!("{name} (gpio {} line {line})", chip.display()),
        tamper::ValidInput::File { name, path, .. } => {
            format!("{name} (file {})", path.display())
        }
        tamper::ValidInput::Signal { name, signal } => {
            format!("{name} (signal {})", signal.name())
        }
        other => format!("{other:?}"),
    }
}
