//! `kawal run`, `kawal selftest` and `kawal demo`.
//!
//! Start-up order: self-test of the primitives → unseal → open the store → store read-back →
//! audit "daemon.started" → serve → on SIGTERM/SIGINT audit "daemon.stopped" and a final
//! signed checkpoint. Any self-test failure: nothing is served, the reason is logged, exit 70.
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use kawal_audit::{Event, Outcome};
use kawal_crypto::secret::SecretString;
use kawal_platform::selftest::{self, SelfTestReport};

use crate::config::ValidConfig;
use crate::device::{self, Device, tables};
use crate::error::{CliError, Context, Exit, Result};
use crate::output;

/// A failure to inject into the self-test, from `KAWAL_SELFTEST_INJECT`; debug builds only,
/// so tests can watch the refusal. Release builds ignore it.
fn injected_fault() -> Option<String> {
    if cfg!(debug_assertions) {
        std::env::var("KAWAL_SELFTEST_INJECT").ok()
    } else {
        None
    }
}

/// Runs the power-up self-test. The device is opened (unsealed) only inside the store check,
/// after the known-answer tests, RNG health and clock checks have run.
pub fn self_test(open: impl FnOnce() -> Result<Device>) -> (SelfTestReport, Result<Device>) {
    let fault = injected_fault();
    let mut opened = None;
    let report = selftest::run(fault.as_deref(), || {
        let dev = open();
        let result = match &dev {
            Ok(dev) => probe(dev),
            Err(e) => Err(format!("the store could not be opened: {e}")),
        };
        opened = Some(dev);
        result
    });
    let dev =
        opened.unwrap_or_else(|| Err(CliError::new(Exit::SelfTest, "the store check did not run")));
    (report, dev)
}

fn probe(dev: &Device) -> std::result::Result<(), String> {
    let probe = kawal_crypto::rng::array::<16>().map_err(|e| e.to_string())?;
    dev.store
        .put(tables::HEALTH, "selftest-probe", &probe)
        .map_err(|e| e.to_string())?;
    match dev
        .store
        .get(tables::HEALTH, "selftest-probe")
        .map_err(|e| e.to_string())?
    {
        Some(v) if v[..] == probe[..] => Ok(()),
        _ => Err("store read-back did not return what was written".into()),
    }
}

/// Whether the cryptographic checks passed: only then may the device seal, sign or write.
fn crypto_proven(report: &SelfTestReport) -> bool {
    report
        .checks
        .iter()
        .filter(|c| c.name.starts_with("kat:") || c.name == "rng-health")
        .all(|c| c.passed)
}

fn log_failures(report: &SelfTestReport) {
    for c in report.checks.iter().filter(|c| !c.passed) {
        tracing::error!(check = %c.name, detail = %c.detail, "self-test failed");
    }
}

/// Keeps the last self-test in the store, for `kawal audit`.
fn keep_report(dev: &Device, report: &SelfTestReport) -> Result<()> {
    let json = serde_json::to_vec(&StoredSelfTest {
        at: kawal_audit::WallTime::now().to_string(),
        report: report.clone(),
    })
    .or_exit(Exit::Failure, "self-test record")?;
    dev.store
        .put(tables::HEALTH, "selftest", &json)
        .or_exit(Exit::Io, "store")
}

/// The last self-test, as kept in the store.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StoredSelfTest {
    /// When it ran (RFC 3339).
    pub at: String,
    /// Its results.
    pub report: SelfTestReport,
}

fn selftest_event(report: &SelfTestReport) -> Event {
    let failed: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.name.as_str())
        .collect();
    Event::new(
        if report.passed {
            "selftest.passed"
        } else {
            "selftest.failed"
        },
        "kawal",
        if report.passed {
            Outcome::Success
        } else {
            Outcome::Failure
        },
    )
    .with("checks", report.checks.len() as u64)
    .with("failed", failed.join(","))
    .with("micros", report.total_micros)
}

/// Prints each check.
pub fn print_report(report: &SelfTestReport) {
    for c in &report.checks {
        let mark = if c.passed { "pass" } else { "FAIL" };
        output::line(&format!(
            "{mark}  {:<18} {:>8} µs  {}",
            c.name, c.micros, c.detail
        ));
    }
    output::line(&format!(
        "self-test {}: {} checks, {} µs ({} µs without Argon2id)",
        if report.passed { "passed" } else { "FAILED" },
        report.checks.len(),
        report.total_micros,
        report.total_micros_without_argon2
    ));
}

/// `kawal selftest`: the same checks as start-up, printed; exit 70 on failure.
pub fn selftest_cmd(dir: &Path, passphrase: Option<&SecretString>) -> Result<()> {
    let (report, dev) = self_test(|| Device::open(dir, passphrase));
    print_report(&report);
    if !crypto_proven(&report) {
        // A primitive that failed its known answer must not seal or sign: nothing is written.
        log_failures(&report);
        return Err(CliError::new(
            Exit::SelfTest,
            "self-test failed: cryptography not proven, nothing written",
        ));
    }
    let dev = dev?;
    keep_report(&dev, &report)?;
    let log = dev.audit_log(device::ANCHOR_EVERY)?;
    device::record(&log, selftest_event(&report).with("trigger", "operator"))?;
    log.close().or_exit(Exit::Io, "audit log")?;
    if report.passed {
        Ok(())
    } else {
        Err(CliError::new(Exit::SelfTest, "self-test failed"))
    }
}

/// Binds the listening addresses now, so a busy port is a clear error at start.
fn check_ports(addrs: &[(&str, SocketAddr)]) -> Result<()> {
    for (name, addr) in addrs {
        TcpListener::bind(addr).map_err(|e| {
            CliError::new(Exit::NoPerm, format!("cannot listen on {addr} for the {name}: {e} (is another kawal or service using it?)"))
        })?;
    }
    Ok(())
}

/// `kawal run`: serve until SIGTERM or SIGINT.
pub fn run(config: &ValidConfig, passphrase: Option<&SecretString>) -> Result<()> {
    serve(config, passphrase, false)
}

/// Closes the log: its final checkpoint and anchor. Other holders left (none after a clean
/// shutdown) get a checkpoint instead.
fn close_log(log: std::sync::Arc<kawal_audit::AuditLog>) -> Result<()> {
    match std::sync::Arc::try_unwrap(log) {
        Ok(log) => log.close().or_exit(Exit::Io, "audit log"),
        Err(log) => log.checkpoint().map(|_| ()).or_exit(Exit::Io, "audit log"),
    }
}

/// Stops the forwarder after the log's final close: its stop sends what the log holds
/// (`daemon.stopped` included) and confirms it.
fn stop_forwarder(forwarder: Option<std::sync::Arc<kawal_audit::Forwarder>>) {
    let Some(fwd) = forwarder else { return };
    match std::sync::Arc::try_unwrap(fwd) {
        Ok(fwd) => {
            let st = fwd.stop();
            tracing::info!(
                cursor_seq = st.cursor_seq,
                local_seq = st.local_seq,
                backlog = st.backlog_entries,
                "log forwarding stopped"
            );
        }
        // Dropping the last handle stops it the same way.
        Err(fwd) => drop(fwd),
    }
}

/// The daemon; `demo` adds three simulated sensors.
fn serve(config: &ValidConfig, passphrase: Option<&SecretString>, demo: bool) -> Result<()> {
    use std::sync::Arc;
    for item in &config.insecure {
        tracing::warn!(setting = %item, "insecure setting in force");
    }
    let layout = device::Layout::new(&config.data_dir);
    // The lock first: a second daemon on the same folder is told so, not "port in use".
    let _running = device::lock_daemon(&layout, "starting another daemon")?;
    // A device locked after tamper never unseals again.
    crate::tamper::refuse_if_locked(&layout)?;
    check_ports(&[
        ("management API", config.api),
        ("MQTT listener", config.mqtt),
    ])?;
    // The tamper inputs are watched before anything is unsealed.
    let tamper = crate::tamper::Response::new();
    let monitor = crate::tamper::start_monitor(&layout, &config.tamper, &tamper)?;
    let (report, dev) = self_test(|| Device::open(&config.data_dir, passphrase));
    if !crypto_proven(&report) {
        log_failures(&report);
        return Err(CliError::new(
            Exit::SelfTest,
            "power-up self-test failed (cryptography): not serving, nothing written",
        ));
    }
    let locked = || kawal_platform::tamper::is_locked(&config.data_dir);
    let dev = match dev {
        Ok(dev) => Arc::new(dev),
        Err(e) => {
            if let Some(info) = locked() {
                return Err(crate::tamper::locked_error(&info));
            }
            // A device that does not open may have been tampered with: say so if the
            // manifest shows it (checked without the configuration key, which needs the
            // device).
            return Err(integrity_unopened(config).unwrap_or(e));
        }
    };
    if !tamper.hold_device(&dev) {
        drop(dev);
        return Err(locked().map_or_else(
            || CliError::new(Exit::Locked, "tamper during start-up: not serving"),
            |i| crate::tamper::locked_error(&i),
        ));
    }
    keep_report(&dev, &report)?;
    // The forwarder before the log: every durable batch wakes it, from the first one on.
    let forwarder = config
        .log_forward
        .as_ref()
        .map(|s| crate::forward::start(&dev, s))
        .transpose()?
        .map(Arc::new);
    let sinks: Vec<Box<dyn kawal_audit::Sink>> = forwarder
        .iter()
        .map(|f| Box::new(f.waker()) as Box<dyn kawal_audit::Sink>)
        .collect();
    let log = Arc::new(dev.audit_log_with(config.checkpoint_every, sinks)?);
    tamper.attach(&log, forwarder.as_ref().map(|f| f.waker()));
    let fail = |log: Arc<kawal_audit::AuditLog>, forwarder, e: CliError| -> Result<()> {
        close_log(log)?;
        stop_forwarder(forwarder);
        Err(e)
    };
    device::record(&log, selftest_event(&report).with("trigger", "power-up"))?;
    if !report.passed {
        log_failures(&report);
        return fail(
            log,
            forwarder,
            CliError::new(Exit::SelfTest, "power-up self-test failed: not serving"),
        );
    }
    // A configuration that differs from the one of the last start is a security event.
    let last: Option<String> = dev.get_json(tables::HEALTH, "config-sha256")?;
    if last.as_deref() != Some(config.sha256.as_str()) {
        let mut changed = Event::new("config.changed", "kawal", Outcome::Info)
            .with("sha256", config.sha256.as_str());
        if let Some(old) = &last {
            changed = changed.with("previous_sha256", old.as_str());
        }
        device::record(&log, changed)?;
        let json = serde_json::to_vec(&config.sha256).or_exit(Exit::Failure, "config hash")?;
        dev.store
            .put(tables::HEALTH, "config-sha256", &json)
            .or_exit(Exit::Io, "store")?;
    }
    // How confined this process runs, for the report (another process): PL-3-1 evidence.
    match crate::confinement::Confinement::of_self() {
        Ok(c) => {
            if !c.confined() {
                tracing::warn!(problems = ?c.problems(), "the daemon runs unconfined (packaging/systemd/kawal.service confines it)");
            }
            let json = serde_json::to_vec(&c).or_exit(Exit::Failure, "confinement")?;
            dev.store
                .put(tables::HEALTH, CONFINEMENT_RECORD, &json)
                .or_exit(Exit::Io, "store")?;
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the daemon's confinement"),
    }
    // The installed files against the signed manifest, before anything is served.
    let status = crate::watch::Status::new(config, Arc::clone(&tamper));
    let config_key = crate::integrity::config_public_key(&dev)?;
    let watch_integrity = match power_up_integrity(config, &log, &status, &config_key) {
        Ok(watch) => watch,
        Err(e) => return fail(log, forwarder, e),
    };
    // What the launcher did since the last start (trial boots, rollbacks) goes into the log.
    if let Some(u) = &config.update {
        crate::update::log_boot_events(&dev, &log, u)?;
    }
    let api = crate::serve::prepare(&dev, config, Arc::clone(&log), Arc::clone(&status))?;
    crate::serve::record_api(&dev, config)?;
    let gateway = crate::gateway::prepare(&dev, config, Arc::clone(&log))?;
    let mut started = Event::new("daemon.started", "kawal", Outcome::Success)
        .with("version", crate::PRODUCT)
        .with("config_sha256", config.sha256.as_str())
        .with("uid", dev.info.uid.as_str())
        .with("pid", u64::from(std::process::id()))
        .with("api", config.api.to_string())
        .with("mqtt", config.mqtt.to_string())
        .with("tamper_inputs", config.tamper.inputs.len() as u64);
    if let Some(f) = &config.log_forward {
        started = started.with("log_forward", f.collector.as_str());
    }
    if !config.insecure.is_empty() {
        started = started.with("insecure_settings", config.insecure.join("; "));
    }
    device::record(&log, started)?;
    tracing::info!(uid = %dev.info.uid, api = %config.api, "kawal started");
    let watch = Watch {
        status,
        integrity: watch_integrity.then_some(config_key),
        forwarder: forwarder.clone(),
        tamper: Arc::clone(&tamper),
    };
    let signal = if tamper.fired() {
        TAMPER_STOP
    } else {
        serve_until_signal(api, gateway, &dev, config, demo, watch)?
    };
    let stopped = match signal {
        UPDATE_RESTART => Event::new("daemon.stopped", "kawal", Outcome::Success).with(
            "reason",
            "restart into the slot the update boot state chooses",
        ),
        INTEGRITY_STOP => Event::new("daemon.stopped", "kawal", Outcome::Failure)
            .with("reason", "integrity mismatch (on-mismatch = stop-serving)"),
        TAMPER_STOP => Event::new("daemon.stopped", "kawal", Outcome::Failure)
            .with("reason", "tamper: keys destroyed, device locked"),
        _ => Event::new("daemon.stopped", "kawal", Outcome::Success).with("signal", signal),
    };
    device::record(&log, stopped)?;
    // The API's state held the other references; it is gone once the server has stopped.
    close_log(log)?;
    stop_forwarder(forwarder);
    if let Some(m) = monitor {
        m.stop();
    }
    tracing::info!(signal, "kawal stopped");
    match signal {
        UPDATE_RESTART => Err(CliError::new(
            Exit::Restart,
            "stopped to restart into the slot the update boot state chooses",
        )),
        INTEGRITY_STOP => Err(CliError::new(
            Exit::DataErr,
            "integrity mismatch at run time (on-mismatch = stop-serving): stopped serving; see integrity.failed in the audit log",
        )),
        TAMPER_STOP => {
            drop(dev);
            match tamper.keys_freed() {
                Some((true, ms)) => tracing::error!(
                    after_ms = ms,
                    "key hierarchy freed: the root secret and the keys derived from it are zeroized"
                ),
                Some((false, ms)) => tracing::error!(
                    after_ms = ms,
                    "key hierarchy still referenced at exit; the process exit releases it"
                ),
                None => {}
            }
            Err(locked().map_or_else(
                || CliError::new(Exit::Locked, "tamper detected: stopped serving"),
                |i| {
                    let mut e = crate::tamper::locked_error(&i);
                    e.message = format!("tamper detected, stopped serving; {}", e.message);
                    e
                },
            ))
        }
        _ => Ok(()),
    }
}

/// How often freed heap pages are handed back to the kernel (`kawal_platform::memory::trim`).
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// What `serve_until_signal` returns when the tamper response stopped the daemon.
const TAMPER_STOP: &str = "tamper";

/// The store record (table `health`) of the daemon's confinement at its last start.
pub const CONFINEMENT_RECORD: &str = "confinement";

/// What `serve_until_signal` returns when an update or rollback asked for a restart.
const UPDATE_RESTART: &str = "update-restart";

/// What `serve_until_signal` returns when an integrity mismatch stopped the daemon.
const INTEGRITY_STOP: &str = "integrity-mismatch";

/// The platform watchers' shared state, and the configuration key when the integrity
/// manifest is checked on its period.
struct Watch {
    status: std::sync::Arc<crate::watch::Status>,
    integrity: Option<kawal_platform::integrity::PublicKey>,
    forwarder: Option<std::sync::Arc<kawal_audit::Forwarder>>,
    tamper: std::sync::Arc<crate::tamper::Response>,
}

/// The integrity check of a device that could not be opened: the error to exit with when
/// the installed files do not match the manifest (nothing can be logged: the log's key is
/// sealed in the device).
fn integrity_unopened(config: &ValidConfig) -> Option<CliError> {
    use crate::config::platform::IntegrityMode;
    let s = &config.integrity;
    if s.mode == IntegrityMode::Off || !s.manifest.exists() {
        return None;
    }
    let v = crate::integrity::verify(s, None, "power-up");
    if v.files_failed == 0 && v.files_checked > 0 {
        return None;
    }
    for p in &v.problems {
        tracing::error!(problem = %p, "integrity check failed");
    }
    Some(crate::integrity::failed(
        &v,
        "integrity check failed: not serving (the device could not be opened)",
    ))
}

/// The integrity check before serving. `Ok(true)`: a manifest verified, check it on its
/// period; `Ok(false)`: nothing to check (no manifest and none required, or switched off);
/// `Err`: a mismatch or a required manifest missing, logged; the daemon must not serve.
fn power_up_integrity(
    config: &ValidConfig,
    log: &kawal_audit::AuditLog,
    status: &crate::watch::Status,
    key: &kawal_platform::integrity::PublicKey,
) -> Result<bool> {
    use crate::config::platform::IntegrityMode;
    let s = &config.integrity;
    if s.mode == IntegrityMode::Off {
        tracing::warn!("integrity checks are switched off ([integrity] enabled = false)");
        return Ok(false);
    }
    let v = crate::integrity::verify(s, Some(key), "power-up");
    if !v.manifest_present && s.mode == IntegrityMode::IfPresent {
        tracing::warn!(
            manifest = %s.manifest.display(),
            "no integrity manifest: the installed files are not checked (set [integrity] enabled = true to require one)"
        );
        status.set_integrity(v);
        return Ok(false);
    }
    device::record(log, v.event())?;
    if v.ok {
        tracing::info!(summary = %v.summary(), "integrity verified");
        status.set_integrity(v);
        return Ok(true);
    }
    for p in &v.problems {
        tracing::error!(problem = %p, "integrity check failed");
    }
    Err(crate::integrity::failed(
        &v,
        "integrity check failed: not serving (recovery: kawal integrity verify shows the files; kawal integrity accept-config vouches for a configuration)",
    ))
}

/// Serves the API and the gateway until SIGTERM or SIGINT; returns the signal's name.
fn serve_until_signal(
    api: crate::serve::Prepared,
    gateway: crate::gateway::Prepared,
    dev: &std::sync::Arc<Device>,
    config: &ValidConfig,
    demo: bool,
    watch: Watch,
) -> Result<&'static str> {
    let workers = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.clamp(2, 4))
        .max_blocking_threads(api.state.settings.verify_workers.max(1) + 8)
        .thread_name("kawal")
        .enable_all()
        .build()
        .or_exit(Exit::Failure, "runtime")?;
    rt.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let std_listener = TcpListener::bind(api.addr).map_err(|e| {
            CliError::new(Exit::NoPerm, format!("cannot listen on {}: {e}", api.addr))
        })?;
        std_listener
            .set_nonblocking(true)
            .or_exit(Exit::Io, "listener")?;
        let listener =
            tokio::net::TcpListener::from_std(std_listener).or_exit(Exit::Io, "listener")?;
        let mut term = signal(SignalKind::terminate()).or_exit(Exit::Failure, "SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).or_exit(Exit::Failure, "SIGINT handler")?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        // Flood-control summaries of the API's refusals, written when their window ends.
        let flood = std::sync::Arc::clone(&api.state);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tick.tick().await;
                flood.roll_flood(std::time::Instant::now());
            }
        });
        // Freed heap pages go back to the kernel every TRIM_EVERY: thousands of sensor
        // handshakes, or a burst of API requests, leave free pages between the few KiB each
        // connection keeps (docs/BENCHMARKS.md, memory per idle connection).
        tokio::spawn(async {
            let mut tick = tokio::time::interval(TRIM_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let started = std::time::Instant::now();
                let released = tokio::task::spawn_blocking(kawal_platform::memory::trim).await;
                tracing::debug!(?released, took = ?started.elapsed(), "heap trimmed");
            }
        });
        let router = kawal_api::router(std::sync::Arc::clone(&api.state));
        let server = tokio::spawn(kawal_api::server::serve(
            listener,
            api.tls.clone(),
            router,
            api.limits,
            async move {
                let _ = rx.await;
            },
        ));
        let running = crate::gateway::start(gateway, &api.state).await?;
        crate::gateway::record_mqtt(dev, config, &running)?;
        tracing::info!(mqtt = %running.server.local_addr(), "MQTT listener (mutual TLS) serving sensors");
        let certs = tokio::spawn(crate::devcert::Watch::new(dev, config, &api, &running)?.run());
        if demo {
            let ca = std::fs::read_to_string(dev.layout.pki().join("dev-ca.crt.pem"))
                .or_exit(Exit::NoInput, "dev CA")?;
            crate::gateway::demo_sensors(&running, &ca, running.server.local_addr());
        }
        // The platform watchers: integrity on its period, services and interfaces now and on
        // theirs (kawal's own listeners are all up by now).
        let (stop_tx, mut stop_rx) = tokio::sync::mpsc::channel::<()>(1);
        // A restart into the slot the boot state chooses: after an update, a rollback, or the
        // integrity response "reboot".
        let (restart_tx, mut restart_rx) = tokio::sync::mpsc::channel::<()>(1);
        let audit = std::sync::Arc::clone(&api.state.audit);
        let reboot = config.update.as_ref().map(|u| crate::watch::Reboot {
            settings: u.clone(),
            restart: restart_tx.clone(),
        });
        let integrity = watch.integrity.map(|key| {
            tokio::spawn(crate::watch::integrity_loop(
                std::sync::Arc::clone(&watch.status),
                config.integrity.clone(),
                key,
                std::sync::Arc::clone(&audit),
                stop_tx.clone(),
                reboot,
            ))
        });
        let forward = match (&watch.forwarder, &config.log_forward) {
            (Some(fwd), Some(s)) => Some(tokio::spawn(crate::forward::watch_loop(
                std::sync::Arc::clone(fwd),
                s.collector.clone(),
                watch.status.forward(),
                std::sync::Arc::clone(&audit),
                std::sync::Arc::clone(dev),
            ))),
            _ => None,
        };
        drop(watch.forwarder);
        let exposure = tokio::spawn(crate::watch::exposure_loop(
            std::sync::Arc::clone(&watch.status),
            config.exposure.clone(),
            audit,
        ));
        // Signed updates: the API's operations and the trial of this slot, if it is on trial.
        let trial = match &config.update {
            Some(u) => {
                let backend = crate::update::DaemonUpdates::new(
                    u,
                    std::sync::Arc::clone(&api.state.audit),
                    tokio::runtime::Handle::current(),
                    restart_tx.clone(),
                )?;
                let _ = api.state.updates.set(std::sync::Arc::new(backend));
                let probe = trial_probe(dev, config, &running)?;
                Some(tokio::spawn(crate::update::run_trial(
                    u.clone(),
                    std::sync::Arc::clone(&api.state.audit),
                    probe,
                    restart_tx,
                )))
            }
            None => None,
        };
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            Some(()) = restart_rx.recv() => UPDATE_RESTART,
            Some(()) = stop_rx.recv() => INTEGRITY_STOP,
            () = watch.tamper.stopped() => TAMPER_STOP,
        };
        if name == TAMPER_STOP {
            // The tamper event goes into the log before the shutdown's own records.
            watch.tamper.alerted(std::time::Duration::from_secs(2)).await;
        }
        drop(stop_tx);
        if let Some(t) = forward {
            t.abort();
            let _ = t.await;
        }
        if let Some(t) = integrity {
            t.abort();
        }
        exposure.abort();
        certs.abort();
        if let Some(t) = trial {
            t.abort();
        }
        running.shutdown().await;
        let _ = tx.send(());
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "API server stopped with an error"),
            Err(e) => tracing::error!(error = %e, "API server task failed"),
        }
        drop(api.state);
        Ok(name)
    })
}

/// What a trial's health checks read of the running daemon: the integrity check, run now,
/// and the upstream bridge's connection.
fn trial_probe(
    dev: &std::sync::Arc<Device>,
    config: &ValidConfig,
    running: &crate::gateway::Running,
) -> Result<crate::update::TrialProbe> {
    use crate::config::platform::IntegrityMode;
    let key = crate::integrity::config_public_key(dev)?;
    let settings = config.integrity.clone();
    let integrity = Box::new(move || {
        if settings.mode == IntegrityMode::Off
            || (settings.mode == IntegrityMode::IfPresent && !settings.manifest.exists())
        {
            return Ok(());
        }
        let v = crate::integrity::verify(&settings, Some(&key), "update-trial");
        if v.ok {
            Ok(())
        } else {
            Err(format!(
                "{} of {} file(s) failed the integrity manifest",
                v.files_failed, v.files_checked
            ))
        }
    });
    let upstream = running.bridge.as_ref().map(|b| {
        let b = std::sync::Arc::clone(b);
        Box::new(move || b.status().connected) as Box<dyn Fn() -> bool + Send + Sync>
    });
    Ok(crate::update::TrialProbe {
        integrity,
        upstream,
    })
}

/// The upstream broker the demo forwards to (`kawal demo --upstream`).
#[derive(Debug, Clone)]
pub struct DemoUpstream {
    /// `host:port`.
    pub address: String,
    /// The broker's CA (PEM), pinned.
    pub ca: PathBuf,
    /// The name its certificate must carry.
    pub server_name: Option<String>,
}

/// The demo's configuration: its data folder and listeners, and the upstream if one is given.
/// Written at every start, so `--upstream` can be added to or left off a reused demo.
fn demo_config(
    data: &Path,
    api: SocketAddr,
    mqtt: SocketAddr,
    upstream: Option<&DemoUpstream>,
) -> Result<String> {
    let mut doc = toml::Table::new();
    doc.insert("data-dir".into(), data.display().to_string().into());
    let mut listen = toml::Table::new();
    listen.insert("api".into(), api.to_string().into());
    listen.insert("mqtt".into(), mqtt.to_string().into());
    doc.insert("listen".into(), listen.into());
    if let Some(u) = upstream {
        let ca = crate::provision::absolute(&u.ca)?;
        let mut t = toml::Table::new();
        t.insert("address".into(), u.address.clone().into());
        t.insert("ca-file".into(), ca.display().to_string().into());
        if let Some(n) = &u.server_name {
            t.insert("server-name".into(), n.clone().into());
        }
        doc.insert("upstream".into(), t.into());
    }
    let body = toml::to_string(&doc).or_exit(Exit::Failure, "demo configuration")?;
    Ok(format!(
        "# kawal demo configuration (written by `kawal demo` at every start)\n{body}"
    ))
}

/// `kawal demo`: a dev device in its own folder, then the daemon on 127.0.0.1, forwarding to
/// `upstream` if given.
pub fn demo(dir: &Path, upstream: Option<&DemoUpstream>) -> Result<()> {
    let dir = crate::provision::absolute(dir)?;
    let data = dir.join("data");
    let config_path = dir.join("kawal.toml");
    let api: SocketAddr = "127.0.0.1:8443".parse().or_exit(Exit::Failure, "address")?;
    let mqtt: SocketAddr = "127.0.0.1:8883".parse().or_exit(Exit::Failure, "address")?;
    check_ports(&[("management API", api), ("MQTT listener", mqtt)])?;
    let fresh = !device::Layout::new(&data).is_provisioned();
    if fresh {
        std::fs::create_dir_all(&dir).or_exit(Exit::Io, "demo folder")?;
        let p = crate::provision::init(&crate::provision::InitOptions {
            data_dir: data.clone(),
            dev: true,
            uid: None,
            vendor_namespace: "kawal-demo".into(),
            csr_out: None,
            label_out: None,
            passphrase: None,
            argon2: kawal_crypto::password::Argon2Params::OWASP,
        })?;
        output::line(&format!(
            "demo device {} provisioned in {}",
            p.uid,
            dir.display()
        ));
        if let Some(pw) = p.admin_password {
            output::line(&zeroize::Zeroizing::new(format!(
                "admin password (shown once, change at first login): {}",
                pw.expose()
            )));
        }
    } else {
        output::line(&format!(
            "reusing the demo device in {} (its admin password was shown when it was made; delete the folder for a new one)",
            dir.display()
        ));
    }
    let config = demo_config(&data, api, mqtt, upstream)?;
    device::write_atomic(&config_path, config.as_bytes(), 0o644)?;
    output::line(&format!(
        "console: https://localhost:{}/ (dev certificate: trust {}/pki/dev-ca.crt.pem or accept the warning)",
        api.port(),
        data.display()
    ));
    output::line(&format!(
        "CLI:     kawal login --config {} --user admin   (then: kawal user list)",
        config_path.display()
    ));
    output::line(&format!(
        "report:  kawal audit --config {} --format html --out report.html",
        config_path.display()
    ));
    output::line("stop with Ctrl-C");
    output::line(
        "sensors: three simulated sensors connect over mutual TLS and publish every 2 s (see the console's Sensors page, or kawal sensor list)",
    );
    match upstream {
        Some(u) => output::line(&format!(
            "upstream: telemetry is forwarded to {} under kawal/gw/<device uid>/<sensor>/up/... (mutual TLS: the broker must trust {}/pki/dev-ca.crt.pem)",
            u.address,
            data.display()
        )),
        None => output::line(
            "upstream: none (kawal demo --upstream HOST:PORT --upstream-ca CA.pem forwards to a broker); the queue keeps the telemetry",
        ),
    }
    let config = crate::config::load(&config_path)?;
    serve(&config, None, true)
}

/// The demo folder by default.
pub fn default_demo_dir() -> PathBuf {
    PathBuf::from("kawal-demo")
}
