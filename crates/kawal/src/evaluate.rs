//! The evidence read from a live device, and the verdict of each of the 44 G045 controls.
//!
//! Evaluators are plain functions of [`Facts`]; the facts come from the device's own files,
//! store, key-ring and log. A control that a later part of kawal brings is "not met" with
//! the reason, never "met".
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use kawal_audit::{ClockState, Filter};
use kawal_auth::accounts::Account;
use kawal_auth::roles::Role;
use kawal_compliance::{Finding, Report, ReportMeta, Verdict};

mod access;
mod elf;
mod gateway;
mod platform;
mod response;
mod update;

use crate::daemon::StoredSelfTest;
use crate::device::{Device, tables};
use crate::error::{CliError, Context, Exit, Result};

/// What the report is made of, as read from the device.
#[derive(Debug)]
pub struct Facts {
    /// `device.json` facts.
    pub info: crate::device::DeviceInfo,
    /// Mode of `root.sealed`.
    pub root_mode: u32,
    /// Key-ring: purpose → (current version, live versions).
    pub keyring: BTreeMap<String, (u32, usize)>,
    /// Records under the data and PII keys.
    pub data_records: u64,
    /// PII records.
    pub pii_records: u64,
    /// Accounts.
    pub accounts: Vec<Account>,
    /// The last self-test.
    pub selftest: Option<StoredSelfTest>,
    /// Result of verifying the audit log against the anchor.
    pub log: std::result::Result<kawal_audit::VerifyReport, String>,
    /// Security events in the log, by name.
    pub events: BTreeMap<String, u64>,
    /// The kernel clock's state now.
    pub clock: ClockState,
    /// Device certificate facts.
    pub cert: Option<kawal_pki::CertFacts>,
    /// Settings, lockouts and the daemon's record, for the access controls.
    pub access: access::AccessFacts,
    /// The MQTT listener's record, the sensors, for the gateway controls.
    pub gateway: gateway::GatewayFacts,
    /// The executable, the integrity manifest and the exposure, checked now.
    pub platform: platform::PlatformFacts,
    /// Log forwarding and tamper response.
    pub response: response::ResponseFacts,
    /// The update routes, the boot state and slots, the trusted root.
    pub update: update::UpdateFacts,
}

/// Reads every fact from the device, judging the access controls by `config` (the file the
/// daemon runs with) or, without one, by the defaults.
pub fn gather(dev: &Device, config: Option<&crate::config::ValidConfig>) -> Result<Facts> {
    let root_mode = std::fs::metadata(dev.layout.root_sealed())
        .map(|m| m.permissions().mode() & 0o777)
        .or_exit(Exit::Io, "root.sealed")?;
    let mut keyring = BTreeMap::new();
    for (label, entry) in dev.store.keyring().or_exit(Exit::DataErr, "key-ring")? {
        keyring.insert(label, (entry.current, entry.versions.len()));
    }
    let stats = dev.store.stats().or_exit(Exit::DataErr, "store")?;
    // Both account tables: admin accounts are kept apart from the others (AU-1-2).
    let accounts = kawal_auth::accounts::read_all(&dev.store).or_exit(Exit::DataErr, "accounts")?;
    let selftest = dev.get_json(tables::HEALTH, "selftest")?;
    let log = dev.verify_log()?;
    let mut events = BTreeMap::new();
    let mut update_log = update::UpdateLog::default();
    if let Ok(entries) = kawal_audit::read_entries(&dev.layout.dir, Filter::default()) {
        for e in entries.flatten() {
            update_log.tally(&e);
            // Refusals and denials are also counted by reason ("mqtt.refused/revoked"), and
            // issuances by how ("sensor.certificate-issued/external-ca-import").
            for field in ["reason", "via"] {
                if let Some(kawal_audit::Value::Str(v)) = e.details.get(field) {
                    *events.entry(format!("{}/{v}", e.event)).or_insert(0) += 1;
                }
            }
            // A flood-control summary stands for `count` events not written one by one.
            if e.event.ends_with(".events-suppressed")
                && let Some(kawal_audit::Value::Int(n)) = e.details.get("count")
            {
                *events.entry(format!("{}/count", e.event)).or_insert(0) +=
                    u64::try_from(*n).unwrap_or(0);
            }
            *events.entry(e.event).or_insert(0) += 1;
        }
    }
    let cert = std::fs::read_to_string(dev.layout.pki().join("device.crt.pem"))
        .ok()
        .and_then(|pem| kawal_pki::cert_facts(&pem).ok());
    let access = access_facts(dev, config, &accounts)?;
    let gateway = gateway_facts(dev, &access, cert.as_ref())?;
    let platform = platform_facts(dev, &access.config)?;
    let response = response_facts(dev, &access.config, log.as_ref().ok())?;
    let update = update::gather(access.config.update.as_ref(), update_log);
    Ok(Facts {
        info: dev.info.clone(),
        root_mode,
        keyring,
        data_records: stats.data_records,
        pii_records: stats.pii_records,
        accounts,
        selftest,
        log,
        events,
        clock: kawal_platform::clock::kernel_sync_state(),
        cert,
        access,
        gateway,
        platform,
        response,
        update,
    })
}

fn response_facts(
    dev: &Device,
    config: &crate::config::ValidConfig,
    log: Option<&kawal_audit::VerifyReport>,
) -> Result<response::ResponseFacts> {
    let forward = config.log_forward.clone();
    Ok(response::ResponseFacts {
        cursor: forward
            .as_ref()
            .and_then(|s| crate::forward::cursor_facts(&s.cursor_file)),
        record: dev.get_json(tables::HEALTH, crate::forward::FORWARD_RECORD)?,
        local_last_seq: log.map_or(0, |r| r.last_seq),
        forward,
        tamper_sources: response::tamper_sources(&config.tamper),
        tamper: config.tamper.clone(),
        now: std::time::SystemTime::now(),
    })
}

fn platform_facts(
    dev: &Device,
    config: &crate::config::ValidConfig,
) -> Result<platform::PlatformFacts> {
    use crate::config::platform::IntegrityMode;
    let exe = std::fs::read_link("/proc/self/exe").unwrap_or_else(|_| "/proc/self/exe".into());
    let integrity = if config.integrity.mode == IntegrityMode::Off {
        None
    } else {
        let key = crate::integrity::config_public_key(dev)?;
        Some(crate::integrity::verify(
            &config.integrity,
            Some(&key),
            "report",
        ))
    };
    Ok(platform::PlatformFacts {
        elf: elf::read(std::path::Path::new("/proc/self/exe")),
        exe,
        debug_build: cfg!(debug_assertions),
        integrity_settings: config.integrity.clone(),
        integrity,
        exposure_settings: config.exposure.clone(),
        exposure: crate::exposure::assess(&config.exposure),
        confinement: dev.get_json(tables::HEALTH, crate::daemon::CONFINEMENT_RECORD)?,
    })
}

fn gateway_facts(
    dev: &Device,
    access: &access::AccessFacts,
    cert: Option<&kawal_pki::CertFacts>,
) -> Result<gateway::GatewayFacts> {
    let sensors = match kawal_pki::SensorCa::load(&dev.store).or_exit(Exit::DataErr, "sensor CA")? {
        Some(ca) => {
            kawal_pki::Sensors::new(std::sync::Arc::clone(&dev.store), std::sync::Arc::new(ca))
                .list()
                .or_exit(Exit::DataErr, "sensor registry")?
        }
        None => Vec::new(),
    };
    let now = kawal_audit::WallTime::now().unix_micros() / 1_000_000;
    // The end of validity as a number, from the certificate itself (the facts' text form is
    // not the audit log's time format).
    let device_cert = std::fs::read_to_string(dev.layout.pki().join("device.crt.pem"))
        .ok()
        .and_then(|pem| crate::devcert::read_chain(&pem).ok())
        .map(|(f, _)| {
            (
                cert.map_or_else(
                    || crate::devcert::rfc3339(f.not_after),
                    |c| c.not_after.clone(),
                ),
                kawal_pki::expiry_state(f.not_after, now),
            )
        });
    Ok(gateway::GatewayFacts {
        mqtt: dev.get_json(tables::HEALTH, crate::gateway::MQTT_RECORD)?,
        api: access.api.clone(),
        sensors,
        config: access.config.clone(),
        device_cert,
    })
}

fn access_facts(
    dev: &Device,
    config: Option<&crate::config::ValidConfig>,
    accounts: &[Account],
) -> Result<access::AccessFacts> {
    let (source, config) = match config {
        Some(c) => (
            format!("the configuration file in force (SHA-256 {})", c.sha256),
            c.clone(),
        ),
        None => (
            "the defaults (no configuration file given; pass --config to judge the one in force)"
                .to_owned(),
            crate::config::defaults_for(&dev.layout.dir)?,
        ),
    };
    let directory = crate::serve::directory(dev, &config);
    let now = u64::try_from(kawal_audit::WallTime::now().unix_micros() / 1_000_000).unwrap_or(0);
    let mut locked = Vec::new();
    for a in accounts {
        let tally = directory
            .tally(&a.username)
            .or_exit(Exit::DataErr, "login tally")?;
        if matches!(tally.gate(now), kawal_auth::lockout::Gate::LockedUntil(_)) {
            locked.push(a.username.clone());
        }
    }
    Ok(access::AccessFacts {
        source,
        api: dev.get_json(tables::HEALTH, crate::serve::API_RECORD)?,
        config,
        locked,
    })
}

/// How well the root secret is protected at rest, which bounds every data-at-rest control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KekStrength {
    /// An operator passphrase (Argon2id) is part of the key-encryption key.
    Passphrase,
    /// Bound to hardware identity (DMI UUID or device-tree serial) the disk does not hold.
    Hardware,
    /// Only facts stored on the same disk (/etc/machine-id): the disk alone unseals it.
    DiskOnly,
}

fn kek_strength(info: &crate::device::DeviceInfo) -> KekStrength {
    if info.passphrase {
        KekStrength::Passphrase
    } else if info.binding_sources.iter().any(|s| s != "machine-id") {
        KekStrength::Hardware
    } else {
        KekStrength::DiskOnly
    }
}

/// The verdict a data-at-rest control can reach given the key-encryption key, and why not more.
fn at_rest(kek: KekStrength, finding: Finding) -> Finding {
    match kek {
        KekStrength::Passphrase => finding,
        KekStrength::Hardware => finding.with_verdict(Verdict::Manual).reason(
            "the root secret is sealed to this machine's hardware identity only (no passphrase, no TPM): the disk alone does not open it, but the disk together with the board does; assess the physical risk or provision with a passphrase",
        ),
        KekStrength::DiskOnly => finding.with_verdict(Verdict::NotMet).reason(
            "the root secret is sealed under facts stored on the same disk (/etc/machine-id only: no hardware identity, passphrase or TPM), so whoever holds the disk can unseal it; provision with a passphrase (--passphrase-file or KAWAL_PASSPHRASE)",
        ),
    }
}

/// The audit events of the update flow, for PL-4-1's evidence (sensor connections are logged
/// as `mqtt.*`).
const UPDATE_EVENTS: [&str; 16] = [
    "update.checked",
    "update.apply-started",
    "update.metadata-verified",
    "update.downloading",
    "update.installed",
    "update.trial-started",
    "update.trial-boot",
    "update.health-checked",
    "update.committed",
    "update.commit-failed",
    "update.rolled-back",
    "update.reverted",
    "update.revert-refused",
    "update.degraded-boot",
    "update.refused",
    "update.slots-initialised",
];

/// Every control's finding.
pub fn findings(f: &Facts) -> Vec<Finding> {
    let admin = f.accounts.iter().find(|a| a.role == Role::Admin);
    let selftest_ok = f.selftest.as_ref().is_some_and(|s| s.report.passed);
    let kat_names: Vec<String> = f
        .selftest
        .as_ref()
        .map(|s| {
            s.report
                .checks
                .iter()
                .filter(|c| c.name.starts_with("kat:") && c.passed)
                .map(|c| c.name.clone())
                .collect()
        })
        .unwrap_or_default();
    let purposes = f.keyring.keys().cloned().collect::<Vec<_>>().join(", ");
    let mut out = Vec::new();

    // Authentication.
    let rng_proven = f.selftest.as_ref().map(|s| {
        s.report
            .checks
            .iter()
            .any(|c| c.name == "rng-health" && c.passed)
    });
    let mut access: BTreeMap<String, Finding> =
        access::findings(&f.accounts, &f.events, rng_proven, &f.access)
            .into_iter()
            .map(|x| (x.code.clone(), x))
            .collect();
    let mut take = |code: &str| {
        access
            .remove(code)
            .unwrap_or_else(|| Finding::new(code, Verdict::NotMet).reason("no evaluator"))
    };
    for code in [
        "AU-1-1", "AU-1-2", "AU-1-3", "AU-1-5", "AU-1-6", "AU-1-7", "AU-1-8", "AU-2-2", "AU-2-3",
    ] {
        out.push(take(code));
    }
    out.push(match admin {
        Some(a)
            if a.generated
                && a.password.algorithm == "argon2id"
                && a.generated_bits.unwrap_or(0) >= 80 =>
        {
            Finding::new("AU-1-4", Verdict::Met)
                .evidence(
                    "pre-installed admin password",
                    format!(
                        "generated on this device at provisioning, at least {} bits of entropy",
                        a.generated_bits.unwrap_or(0)
                    ),
                )
                .evidence(
                    "stored as",
                    format!(
                        "Argon2id m={} KiB t={} p={}, unique salt",
                        a.password.params.m_kib, a.password.params.t, a.password.params.p
                    ),
                )
                .evidence("must change at first login", a.must_change.to_string())
        }
        Some(_) => Finding::new("AU-1-4", Verdict::NotMet)
            .reason("the admin password was not generated by the device"),
        None => Finding::new("AU-1-4", Verdict::NotMet).reason("no admin account"),
    });
    out.push(if f.accounts.iter().all(|a| a.password.algorithm == "argon2id") && admin.is_some() {
        Finding::new("AU-2-1", Verdict::Met)
            .evidence("credentials in the binary", "none: the only pre-installed credential is generated per device at provisioning")
            .evidence("accounts", format!("{} account(s), all verifiers Argon2id", f.accounts.len()))
            .evidence("root secret", "random per device, sealed; never in the binary or the repository")
    } else {
        Finding::new("AU-2-1", Verdict::NotMet).reason("an account without an Argon2id verifier")
    });
    let mut gw: BTreeMap<String, Finding> = gateway::findings(&f.gateway, &f.events)
        .into_iter()
        .map(|x| (x.code.clone(), x))
        .collect();
    let mut gw_take = |code: &str| {
        gw.remove(code)
            .unwrap_or_else(|| Finding::new(code, Verdict::NotMet).reason("no evaluator"))
    };
    out.push(gw_take("AU-1-9"));
    out.push(gw_take("AU-1-10"));
    out.push(
        Finding::new("AU-3-1", Verdict::Met)
            .evidence("device UID", f.info.uid.clone())
            .evidence("source", f.info.uid_source.to_string())
            .evidence("binding", "the UID is the associated data of the sealed root secret: a changed UID makes the device refuse to start")
            .evidence("provisioned", f.info.provisioned_at.clone())
            .evidence(
                "sensor identities",
                format!(
                    "{} sensor UID(s), each fixed in its certificate (urn:kawal:sensor:<uid>); a name is never enrolled twice",
                    f.gateway.sensors.len()
                ),
            ),
    );
    out.push(gw_take("AU-3-2"));

    // Cryptography.
    out.push(if selftest_ok {
        Finding::new("CR-1-1", Verdict::Met)
            .evidence("algorithms", "AES-256-GCM, HKDF-SHA256, HMAC-SHA256, Ed25519, ECDSA P-256, Argon2id (aws-lc-rs, argon2)")
            .evidence("known-answer tests passed", kat_names.join(", "))
    } else {
        Finding::new("CR-1-1", Verdict::NotMet).reason("no passing power-up self-test on record: the primitives are not proven on this device")
    });
    let kek = kek_strength(&f.info);
    let kek_text = match kek {
        KekStrength::Passphrase => "machine binding + Argon2id-stretched passphrase",
        KekStrength::Hardware => "machine binding only (hardware identity)",
        KekStrength::DiskOnly => "machine binding only (/etc/machine-id, on the same disk)",
    };
    let cr12 = Finding::new("CR-1-2", Verdict::Met)
        .evidence(
            "root secret",
            format!("256-bit, sealed AES-256-GCM, file mode {:o}", f.root_mode),
        )
        .evidence(
            "key-encryption key",
            format!("{kek_text}; bound to {}", f.info.binding_sources.join(", ")),
        )
        .evidence(
            "key versions",
            f.keyring
                .iter()
                .map(|(p, (c, n))| format!("{p} v{c} ({n} live)"))
                .collect::<Vec<_>>()
                .join("; "),
        )
        .evidence(
            "rotation",
            "kawal keys rotate PURPOSE: new version, records re-sealed, old version destroyed",
        );
    out.push(if f.root_mode & 0o077 != 0 {
        cr12.with_verdict(Verdict::NotMet)
            .reason("root.sealed is accessible to other users")
    } else {
        at_rest(kek, cr12)
    });
    out.push(
        Finding::new("CR-1-3", if f.keyring.len() >= 3 { Verdict::Met } else { Verdict::NotMet })
            .evidence("purposes with their own key", purposes)
            .evidence("derivation", "HKDF-SHA256 with a label per purpose and a salt per version; distinct key types per purpose")
            .reason_if(f.keyring.len() < 3, "key-ring incomplete"),
    );

    // Data security.
    out.push(gw_take("DS-1-1"));
    out.push(gw_take("DS-1-2"));
    out.push(at_rest(
        kek,
        Finding::new("DS-1-3", Verdict::Met)
            .evidence("store", format!("{} record(s) sealed AES-256-GCM, table and keyed-hash key bound as associated data", f.data_records + f.pii_records))
            .evidence("record names", "stored as HMAC-SHA256 keyed hashes")
            .evidence("key-encryption key", kek_text)
            .evidence("audit log", "hash-chained and signed, not encrypted: it holds no secrets (redacted) but names users and devices"),
    ));
    out.push(
        Finding::new("DS-1-4", Verdict::Manual)
            .evidence("secure erase", "kawal reset --secure destroys the root secret (crypto-erase): nothing deleted before it can be restored")
            .evidence("single records", "a deleted record leaves its ciphertext in the store's free pages until they are reused; rotating the class key (kawal keys rotate store-data|pii) makes it unreadable")
            .reason("deleting one record does not by itself make it unrecoverable while its key version lives: an operator must rotate the key after deleting sensitive records (not automatic yet)"),
    );
    out.push(at_rest(
        kek,
        Finding::new("DS-1-5", Verdict::Met)
            .evidence("secure reset", "kawal reset --secure: overwrites and removes the sealed root secret, then every data file; a receipt with the final signed checkpoint remains")
            .evidence("limits", "docs/crypto-erase.md: old flash blocks of the sealed root are only as safe as the key-encryption key"),
    ));
    out.push(gw_take("DS-2-1"));
    out.push(take("DS-3-1"));
    out.push(take("DS-3-2"));
    out.push(at_rest(
        kek,
        Finding::new("DS-4-1", Verdict::Met)
            .evidence(
                "PII encryption",
                format!(
                    "{} PII record(s) (accounts, login tallies) sealed under their own key (pii v{})",
                    f.pii_records,
                    f.keyring.get("pii").map_or(0, |v| v.0)
                ),
            )
            .evidence(
                "access",
                "only through the authenticated API: listing accounts needs the accounts-read privilege, changing them accounts-manage with a fresh re-authentication",
            ),
    ));

    // Device platform security.
    out.push(
        Finding::new("PL-1-1", Verdict::Manual)
            .evidence("practices", "unsafe code forbidden outside one reviewed module; clippy -D warnings; cargo deny; fault-injection and tamper tests in CI")
            .reason("secure development is a process: the assessor reviews the repository, its CI and its tests"),
    );
    out.push(
        Finding::new("PL-1-2", Verdict::Manual)
            .evidence("check", "cargo deny check against the RustSec advisory database runs in the test suite")
            .reason("the on-device SBOM and vulnerability check is not built yet; the assessor reads the CI result"),
    );
    let mut plat: BTreeMap<String, Finding> = platform::findings(&f.platform, &f.events)
        .into_iter()
        .map(|x| (x.code.clone(), x))
        .collect();
    let mut plat_take = |code: &str| {
        plat.remove(code)
            .unwrap_or_else(|| Finding::new(code, Verdict::NotMet).reason("no evaluator"))
    };
    out.push(plat_take("PL-1-3"));
    out.push(plat_take("PL-1-4"));
    out.extend(update::findings(&f.update, &f.events));
    out.push(plat_take("PL-3-1"));
    out.push(take("PL-3-2"));
    out.push(
        Finding::new("PL-3-3", Verdict::Manual)
            .evidence("check", "cargo deny check (advisories, licences, bans, sources) in the test suite")
            .reason("dependency currency is checked in CI, not on the device; the assessor reads the CI result"),
    );
    out.push(match &f.selftest {
        Some(s) if s.report.passed => Finding::new("PL-3-4", Verdict::Met)
            .evidence(
                "last power-up self-test",
                format!(
                    "{} — {} checks passed in {} µs",
                    s.at,
                    s.report.checks.len(),
                    s.report.total_micros
                ),
            )
            .evidence(
                "checks",
                s.report
                    .checks
                    .iter()
                    .map(|c| c.name.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            )
            .evidence("on failure", "the daemon does not serve and exits 70"),
        Some(s) => Finding::new("PL-3-4", Verdict::NotMet).reason(format!(
            "the last self-test ({}) failed: {}",
            s.at,
            s.report
                .checks
                .iter()
                .filter(|c| !c.passed)
                .map(|c| c.name.clone())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        None => Finding::new("PL-3-4", Verdict::NotMet).reason(
            "no self-test has run on this device yet (start the daemon or run kawal selftest)",
        ),
    });
    let total: u64 = f.events.values().sum();
    let log_ok = f.log.is_ok();
    out.push(
        Finding::new(
            "PL-4-1",
            if total > 0 && log_ok {
                Verdict::Met
            } else {
                Verdict::NotMet
            },
        )
        .evidence(
            "events logged",
            f.events
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", "),
        )
        .evidence("updates logged as", UPDATE_EVENTS.join(", "))
        .reason_if(total == 0, "the audit log is empty")
        .reason_if(
            total > 0 && !log_ok,
            "the audit log does not verify, so its events cannot be relied on",
        ),
    );
    out.push(response::pl_4_2(&f.log, &f.response, &f.events));
    out.push(match f.clock {
        ClockState::Synchronised => Finding::new("PL-4-3", Verdict::Met)
            .evidence("kernel clock", "synchronised (adjtimex STA_UNSYNC clear)")
            .evidence("entries carry", "wall time, sync state, boot-time monotonic clock, boot id"),
        other => Finding::new("PL-4-3", Verdict::NotMet)
            .evidence("entries carry", "wall time, sync state, boot-time monotonic clock, boot id")
            .reason(format!("the kernel clock is {other}: configure NTP (e.g. chrony or systemd-timesyncd) for a reliable time source")),
    });

    // Physical security.
    out.push(plat_take("PH-1-1"));
    out.push(plat_take("PH-1-2"));
    out.push(response::ph_2_1(&f.response, &f.events));
    out
}

trait FindingExt {
    fn reason_if(self, cond: bool, why: &str) -> Self;
    fn with_verdict(self, v: Verdict) -> Self;
}

impl FindingExt for Finding {
    fn reason_if(self, cond: bool, why: &str) -> Self {
        if cond { self.reason(why) } else { self }
    }
    fn with_verdict(mut self, v: Verdict) -> Self {
        self.verdict = v;
        self
    }
}

/// Builds the report of a device under the default settings.
pub fn report(dev: &Device) -> Result<Report> {
    report_with(dev, None)
}

/// Builds the report of a device, with the running configuration when there is one.
pub fn report_with(dev: &Device, config: Option<&crate::config::ValidConfig>) -> Result<Report> {
    let facts = gather(dev, config)?;
    let meta = ReportMeta {
        product: crate::PRODUCT.into(),
        device_uid: facts.info.uid.clone(),
        dev_device: facts.info.dev || facts.cert.as_ref().is_some_and(|c| c.is_dev),
        generated_at: kawal_audit::WallTime::now().to_string(),
        clock_synchronised: match facts.clock {
            ClockState::Synchronised => Some(true),
            ClockState::Unsynchronised => Some(false),
            ClockState::Unknown => None,
        },
    };
    Report::build(meta, findings(&facts))
        .map_err(|e| CliError::new(Exit::Failure, format!("report: {e}")))
}
