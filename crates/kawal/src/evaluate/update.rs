//! Verdicts on secure update, read from the live device: who the route table lets apply and roll
//! back, and with what re-authentication (PL-2-1); the boot state and both slots' contents
//! verified now (PL-2-2); the trusted TUF root installed at provisioning and the trusted
//! metadata in the datastore (PL-2-3). The audit log's `update.*` events are counted for each.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kawal_api::routes::Route;
use kawal_auth::roles::Role;
use kawal_compliance::{Finding, Verdict};
use kawal_update::bundle::MANIFEST_NAME;
use kawal_update::install::verify_slot;
use kawal_update::slots::{BootControl, BootState, EventKind, Slot};
use tough::schema::key::Key;
use tough::schema::{RoleType, Root, Signed};

use super::FindingExt;
use crate::config::update::{UpdateSettings, UpdateSource};

/// The test that drives the update routes with every kind of caller.
pub const ROUTE_TEST: &str =
    "crates/kawal/tests/update_flow.rs::only_an_updater_who_re_authenticates_may_apply";

/// The routes that change what runs: each must be open to exactly admin and updater, and
/// need a fresh re-authentication.
const GUARDED: [(&str, &str); 4] = [
    ("POST", "/api/v1/update/apply"),
    ("POST", "/api/v1/update/rollback"),
    ("POST", "/update/apply"),
    ("POST", "/update/rollback"),
];

/// The roles that may apply and roll back updates.
const UPDATE_ROLES: [Role; 2] = [Role::Admin, Role::Updater];

/// The TUF roles a root must delegate to.
const TUF_ROLES: [RoleType; 4] = [
    RoleType::Root,
    RoleType::Timestamp,
    RoleType::Snapshot,
    RoleType::Targets,
];

/// Metadata files bigger than this are not read (the client's own caps are smaller).
const METADATA_MAX: u64 = 1024 * 1024;

/// One row of the route table, as the report needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRule {
    /// The method.
    pub method: String,
    /// The path.
    pub path: String,
    /// The roles it lets through.
    pub roles: Vec<Role>,
    /// Whether it needs a fresh re-authentication.
    pub reauth: bool,
}

/// The update routes of `routes` (every path under `/api/v1/update` or `/update`).
pub fn route_rules(routes: &[Route]) -> Vec<RouteRule> {
    routes
        .iter()
        .filter(|r| is_update_path(r.path))
        .map(|r| RouteRule {
            method: r.method.as_str().to_owned(),
            path: r.path.to_owned(),
            roles: Role::ALL
                .into_iter()
                .filter(|role| r.allows(*role))
                .collect(),
            reauth: r.reauth,
        })
        .collect()
}

fn is_update_path(path: &str) -> bool {
    path == "/api/v1/update"
        || path.starts_with("/api/v1/update/")
        || path == "/update"
        || path.starts_with("/update/")
}

/// Update-related audit events that the event counts cannot tell apart by name alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateLog {
    /// `access.denied` on an update route.
    pub denied: u64,
    /// `reauth.required` on an update route.
    pub reauth_required: u64,
    /// `update.refused` with outcome denied: the update was refused as untrusted or unfit.
    pub refused_denied: u64,
    /// `update.refused` otherwise (up to date, unreachable, a failure).
    pub refused_other: u64,
}

impl UpdateLog {
    /// Counts `e` if it concerns updates.
    pub fn tally(&mut self, e: &kawal_audit::Entry) {
        let on_update_route = || matches!(e.details.get("route"), Some(kawal_audit::Value::Str(r)) if is_update_path(r));
        match e.event.as_str() {
            "access.denied" if on_update_route() => self.denied += 1,
            "reauth.required" if on_update_route() => self.reauth_required += 1,
            "update.refused" if e.outcome == kawal_audit::Outcome::Denied => {
                self.refused_denied += 1;
            }
            "update.refused" => self.refused_other += 1,
            _ => {}
        }
    }
}

/// What a slot holds, verified now against the bundle manifest in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotContents {
    /// No manifest: nothing installed.
    Empty,
    /// Every file matches the manifest.
    Verified {
        /// The version the manifest names.
        version: String,
        /// Files checked.
        files: usize,
        /// Bytes checked.
        bytes: u64,
    },
    /// The slot does not verify, with why.
    Fails(String),
}

/// One slot, checked now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotCheck {
    /// The slot.
    pub slot: Slot,
    /// Its folder.
    pub path: PathBuf,
    /// What it holds.
    pub contents: SlotContents,
}

/// Checks the slot folder `dir` against its manifest.
pub fn check_slot(slot: Slot, dir: &Path) -> SlotCheck {
    let manifest = dir.join(MANIFEST_NAME);
    let contents = match std::fs::symlink_metadata(&manifest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => SlotContents::Empty,
        _ => match verify_slot(dir) {
            Ok(m) => SlotContents::Verified {
                version: m.version().to_owned(),
                files: m.files().len(),
                bytes: m.total_size(),
            },
            Err(why) => SlotContents::Fails(why),
        },
    };
    SlotCheck {
        slot,
        path: dir.to_path_buf(),
        contents,
    }
}

/// One TUF role as the trusted root delegates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleFacts {
    /// The role's name.
    pub role: String,
    /// Signatures required.
    pub threshold: u64,
    /// Key ids listed.
    pub keyids: usize,
    /// The types of the listed keys the root holds (a key id without its key is not counted).
    pub key_types: Vec<String>,
}

/// The trusted root installed at provisioning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootFacts {
    /// Its version.
    pub version: u64,
    /// When it expires (RFC 3339).
    pub expires: String,
    /// Whether that is past now.
    pub expired: bool,
    /// The TUF specification version.
    pub spec_version: String,
    /// Keys it holds.
    pub keys: usize,
    /// Each top-level role it delegates (none: missing).
    pub roles: Vec<(String, Option<RoleFacts>)>,
    /// Whether its own signatures meet the root role's threshold (as the client requires).
    pub self_signed: Result<(), String>,
}

fn key_type(k: &Key) -> &'static str {
    match k {
        Key::Rsa { .. } => "rsa",
        Key::Ed25519 { .. } => "ed25519",
        Key::Ecdsa { .. } => "ecdsa",
        Key::EcdsaOld { .. } => "ecdsa-sha2-nistp256",
    }
}

fn read_small(path: &Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() || meta.len() > METADATA_MAX {
        return Err(format!(
            "{}: not a regular file of at most {METADATA_MAX} bytes",
            path.display()
        ));
    }
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads and checks the trusted root at `path`; `now` is Unix seconds.
pub fn read_root(path: &Path, now: i64) -> Result<RootFacts, String> {
    let bytes = read_small(path)?;
    let root: Signed<Root> = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{}: not a TUF root: {e}", path.display()))?;
    let r = &root.signed;
    let roles = TUF_ROLES
        .into_iter()
        .map(|role| {
            let facts = r.roles.get(&role).map(|keys| RoleFacts {
                role: role.to_string(),
                threshold: keys.threshold.get(),
                keyids: keys.keyids.len(),
                key_types: r.keys(role).map(|k| key_type(k).to_owned()).collect(),
            });
            (role.to_string(), facts)
        })
        .collect();
    Ok(RootFacts {
        version: r.version.get(),
        expires: r.expires.to_string(),
        expired: r.expires.as_second() < now,
        spec_version: r.spec_version.clone(),
        keys: r.keys.len(),
        roles,
        self_signed: r.verify_role(&root).map_err(|e| e.to_string()),
    })
}

/// The trusted metadata in the datastore: (role file, its `signed.version`) or why not.
pub fn read_datastore(dir: &Path) -> Vec<(String, Result<u64, String>)> {
    ["root", "timestamp", "snapshot", "targets"]
        .into_iter()
        .filter_map(|role| {
            let path = dir.join(format!("{role}.json"));
            if !path.exists() {
                return None;
            }
            let version = read_small(&path).and_then(|b| {
                serde_json::from_slice::<serde_json::Value>(&b)
                    .ok()
                    .and_then(|v| v["signed"]["version"].as_u64())
                    .ok_or_else(|| "no signed.version".to_owned())
            });
            Some((role.to_owned(), version))
        })
        .collect()
}

/// What the update controls are judged on when `[update]` is configured.
#[derive(Debug, Clone)]
pub struct Configured {
    /// `[update]` in force.
    pub settings: UpdateSettings,
    /// The boot state read now, or why it could not be.
    pub state: Result<BootState, String>,
    /// Both slots, verified now.
    pub slots: Vec<SlotCheck>,
    /// The trusted root, or why it is not usable.
    pub root: Result<RootFacts, String>,
    /// The trusted metadata in the datastore.
    pub datastore: Vec<(String, Result<u64, String>)>,
    /// Whether the source folder, or the pinned CA file of an https source, exists now.
    pub source_present: bool,
}

/// What PL-2-1, PL-2-2 and PL-2-3 are judged on.
#[derive(Debug, Clone)]
pub struct UpdateFacts {
    /// The update routes of the route table compiled into this binary.
    pub routes: Vec<RouteRule>,
    /// Update events in the log that need their details to tell apart.
    pub log: UpdateLog,
    /// Everything read from `[update]`'s folders (none: updates are not configured).
    pub configured: Option<Configured>,
}

/// Reads the update facts for `settings` (none: not configured).
pub fn gather(settings: Option<&UpdateSettings>, log: UpdateLog) -> UpdateFacts {
    let configured = settings.map(|s| {
        let slots = crate::update::slots(s);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        Configured {
            state: slots.state().map_err(|e| e.to_string()),
            slots: [Slot::A, Slot::B]
                .into_iter()
                .map(|slot| check_slot(slot, &slots.slot_path(slot)))
                .collect(),
            root: read_root(&s.root, now),
            datastore: read_datastore(&s.datastore),
            source_present: match &s.source {
                UpdateSource::Dir(d) => d.is_dir(),
                UpdateSource::Https { ca_file, .. } => ca_file.is_file(),
            },
            settings: s.clone(),
        }
    });
    UpdateFacts {
        routes: route_rules(kawal_api::ROUTES),
        log,
        configured,
    }
}

fn n(events: &BTreeMap<String, u64>, key: &str) -> u64 {
    events.get(key).copied().unwrap_or(0)
}

const NOT_CONFIGURED: &str = "updates are not configured ([update])";

/// The update controls' findings: PL-2-1, PL-2-2, PL-2-3.
pub fn findings(u: &UpdateFacts, events: &BTreeMap<String, u64>) -> Vec<Finding> {
    vec![pl_2_1(u, events), pl_2_2(u, events), pl_2_3(u, events)]
}

fn role_names(roles: &[Role]) -> String {
    if roles.is_empty() {
        return "nobody".to_owned();
    }
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where the route table breaks the update rule (empty: it holds).
pub fn route_problems(routes: &[RouteRule]) -> Vec<String> {
    let mut problems = Vec::new();
    for (method, path) in GUARDED {
        let Some(r) = routes.iter().find(|r| r.method == method && r.path == path) else {
            problems.push(format!("{method} {path} is not in the route table"));
            continue;
        };
        if r.roles != UPDATE_ROLES {
            problems.push(format!(
                "{method} {path} is open to {} (must be exactly {})",
                role_names(&r.roles),
                role_names(&UPDATE_ROLES)
            ));
        }
        if !r.reauth {
            problems.push(format!(
                "{method} {path} does not ask for re-authentication"
            ));
        }
    }
    problems
}

fn pl_2_1(u: &UpdateFacts, events: &BTreeMap<String, u64>) -> Finding {
    let mut f = Finding::new("PL-2-1", Verdict::NotMet);
    for (method, path) in GUARDED {
        if let Some(r) = u
            .routes
            .iter()
            .find(|r| r.method == method && r.path == path)
        {
            f = f.evidence(
                format!("{method} {path}"),
                format!(
                    "roles: {}; re-authentication right before: {}",
                    role_names(&r.roles),
                    if r.reauth {
                        if path.starts_with("/api/") {
                            "yes (a single-use proof from POST /api/v1/reauth in X-Kawal-Reauth)"
                        } else {
                            "yes (the password typed into the form)"
                        }
                    } else {
                        "NO"
                    }
                ),
            );
        }
    }
    f = f
        .evidence(
            "enforced by",
            format!(
                "the API guard, built from the route table (kawal_api::ROUTES) in this binary, runs before every handler: a role without the updates-apply privilege is refused (403, access.denied), a missing or spent re-authentication is refused (reauth.required); exercised with every kind of caller by the test {ROUTE_TEST}"
            ),
        )
        .evidence(
            "logged",
            format!(
                "{} update.trial-started (applies), {} update.rolled-back, {} update.refused, {} reauth.required on update routes, {} access.denied on update routes",
                n(events, "update.trial-started"),
                n(events, "update.rolled-back"),
                n(events, "update.refused"),
                u.log.reauth_required,
                u.log.denied
            ),
        )
        .evidence(
            "updates configured",
            if u.configured.is_some() {
                "yes ([update])"
            } else {
                "no: the update routes answer 503"
            },
        );
    let problems = route_problems(&u.routes);
    if !problems.is_empty() {
        return f.reason(format!(
            "the route table does not restrict updates as required: {}",
            problems.join("; ")
        ));
    }
    if u.configured.is_none() {
        return f.reason(NOT_CONFIGURED);
    }
    f.with_verdict(Verdict::Met)
}

fn slot_line(c: &SlotCheck) -> String {
    match &c.contents {
        SlotContents::Empty => format!("{}: empty", c.path.display()),
        SlotContents::Verified {
            version,
            files,
            bytes,
        } => format!(
            "verifies: version {version}, {files} file(s), {bytes} bytes match its manifest ({})",
            c.path.display()
        ),
        SlotContents::Fails(why) => format!("DOES NOT VERIFY: {why} ({})", c.path.display()),
    }
}

fn pl_2_2(u: &UpdateFacts, events: &BTreeMap<String, u64>) -> Finding {
    let mut f = Finding::new("PL-2-2", Verdict::NotMet).evidence(
        "mechanism",
        "A/B slots: an update is installed into the inactive slot and started on trial; kawal boot counts each trial boot before it runs and goes back to the committed slot by itself when the health checks do not pass within the bundle's boots and deadline (or an operator rolls back); the failed version is remembered and not offered again",
    );
    let Some(c) = &u.configured else {
        return f.reason(NOT_CONFIGURED);
    };
    f = f
        .evidence("slots", c.settings.slots.display().to_string())
        .evidence(
            "logged",
            format!(
                "{} update.committed, {} update.rolled-back, {} update.trial-boot, {} update.degraded-boot",
                n(events, "update.committed"),
                n(events, "update.rolled-back"),
                n(events, "update.trial-boot"),
                n(events, "update.degraded-boot")
            ),
        );
    let state = match &c.state {
        Ok(s) => s,
        Err(e) => {
            return f.reason(format!(
                "the boot state cannot be read ({e}): without it nothing can roll back; kawal boot creates it at the device's first start under the launcher"
            ));
        }
    };
    let kinds = |k: EventKind| state.events.iter().filter(|e| e.kind == k).count();
    f = f
        .evidence(
            "committed",
            format!(
                "slot {}, version {}, security version floor {}",
                state.committed.slot.dir_name(),
                state.committed.version,
                state.security_floor
            ),
        )
        .evidence(
            "trial in progress",
            match &state.trial {
                None => "none".to_owned(),
                Some(t) => format!(
                    "version {} in slot {}: {} of {} boot(s) used, {} s to pass its health checks",
                    t.version,
                    t.slot.dir_name(),
                    t.boots_used,
                    t.max_boots,
                    t.deadline_s
                ),
            },
        )
        .evidence(
            "failed versions",
            if state.failed.is_empty() {
                "none".to_owned()
            } else {
                state.failed.join(", ")
            },
        )
        .evidence(
            "boot-state history",
            format!(
                "{} committed, {} rolled back, {} degraded boot(s) in the last {} event(s)",
                kinds(EventKind::Committed),
                kinds(EventKind::RolledBack),
                kinds(EventKind::Degraded),
                state.events.len()
            ),
        );
    for s in &c.slots {
        let role = if s.slot == state.committed.slot {
            "committed"
        } else if state.trial.as_ref().is_some_and(|t| t.slot == s.slot) {
            "on trial"
        } else {
            "inactive"
        };
        f = f.evidence(
            format!("slot {} ({role}), verified now", s.slot.dir_name()),
            slot_line(s),
        );
    }
    let committed = state.committed.slot.dir_name();
    match c.slots.iter().find(|s| s.slot == state.committed.slot) {
        None => f.reason(format!("the committed slot {committed} was not checked")),
        Some(s) => match &s.contents {
            SlotContents::Empty => f.reason(format!(
                "the committed slot {committed} is empty: there is no known-good installation to run or to go back to"
            )),
            SlotContents::Fails(why) => f.reason(format!(
                "the committed slot {committed} does not verify ({why}): there is no known-good installation to run or to go back to"
            )),
            SlotContents::Verified { version, .. } if *version != state.committed.version => f
                .reason(format!(
                    "the committed slot {committed} holds version {version}, but the boot state says {}",
                    state.committed.version
                )),
            SlotContents::Verified { .. } => f.with_verdict(Verdict::Met),
        },
    }
}

fn root_problems(r: &RootFacts) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, role) in &r.roles {
        match role {
            None => problems.push(format!("it delegates no keys to the {name} role")),
            Some(k) if k.threshold == 0 => {
                problems.push(format!("the {name} role's threshold is 0"));
            }
            Some(k) if u64::try_from(k.key_types.len()).unwrap_or(u64::MAX) < k.threshold => {
                problems.push(format!(
                    "the {name} role needs {} signature(s) but the root holds only {} of its keys",
                    k.threshold,
                    k.key_types.len()
                ));
            }
            Some(_) => {}
        }
    }
    if let Err(e) = &r.self_signed {
        problems.push(format!("its own signatures do not verify: {e}"));
    }
    problems
}

fn role_line(k: &RoleFacts) -> String {
    let mut types: BTreeMap<&str, usize> = BTreeMap::new();
    for t in &k.key_types {
        *types.entry(t.as_str()).or_insert(0) += 1;
    }
    format!(
        "{}: threshold {} of {} key(s) ({})",
        k.role,
        k.threshold,
        k.keyids,
        types
            .iter()
            .map(|(t, n)| format!("{n} {t}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn pl_2_3(u: &UpdateFacts, events: &BTreeMap<String, u64>) -> Finding {
    let mut f = Finding::new("PL-2-3", Verdict::NotMet).evidence(
        "checked before anything is installed",
        "the repository's TUF metadata (root, timestamp, snapshot, targets), each signed by its role's threshold of keys from the trusted root, never older than the trusted versions and not expired; then the bundle's signed product, hardware and security version; then, while it streams into the inactive slot, its signed length and SHA-256 (which covers every file) and every entry's path, type and size against its manifest; only then the trial switch; and before the slot runs, at every boot, each file's SHA-256 against the manifest",
    );
    let Some(c) = &u.configured else {
        return f.reason(NOT_CONFIGURED);
    };
    f = f
        .evidence(
            "transport",
            match &c.settings.source {
                UpdateSource::Dir(d) => format!(
                    "folder {} ({}); integrity does not depend on the transport",
                    d.display(),
                    if c.source_present {
                        "present now"
                    } else {
                        "not present now"
                    }
                ),
                UpdateSource::Https { url, ca_file } => format!(
                    "{url}, the server verified against the pinned CA {} ({}) only, no system roots",
                    ca_file.display(),
                    if c.source_present {
                        "present"
                    } else {
                        "MISSING: the server cannot be reached"
                    }
                ),
            },
        )
        .evidence(
            "trusted metadata (datastore)",
            if c.datastore.is_empty() {
                format!(
                    "none yet in {} (no update has been checked)",
                    c.settings.datastore.display()
                )
            } else {
                c.datastore
                    .iter()
                    .map(|(role, v)| match v {
                        Ok(v) => format!("{role} v{v}"),
                        Err(e) => format!("{role}: {e}"),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        )
        .evidence(
            "logged",
            format!(
                "{} update.metadata-verified, {} update.refused as untrusted or unfit (denied), {} update.refused otherwise",
                n(events, "update.metadata-verified"),
                u.log.refused_denied,
                u.log.refused_other
            ),
        );
    let root_path = c.settings.root.display().to_string();
    let r = match &c.root {
        Ok(r) => r,
        Err(e) => {
            return f
                .evidence("trusted root", root_path)
                .reason(format!("no usable trusted root is installed: {e}"));
        }
    };
    f = f
        .evidence(
            "trusted root",
            format!(
                "{root_path}: version {}, expires {}{}, TUF {}, {} key(s)",
                r.version,
                r.expires,
                if r.expired {
                    " (expired: the client needs a newer root from the repository)"
                } else {
                    ""
                },
                r.spec_version,
                r.keys
            ),
        )
        .evidence(
            "roles",
            r.roles
                .iter()
                .map(|(name, k)| {
                    k.as_ref()
                        .map_or_else(|| format!("{name}: MISSING"), role_line)
                })
                .collect::<Vec<_>>()
                .join("; "),
        )
        .evidence(
            "root's own signatures",
            match &r.self_signed {
                Ok(()) => "meet the root role's threshold".to_owned(),
                Err(e) => format!("DO NOT VERIFY: {e}"),
            },
        );
    let problems = root_problems(r);
    if problems.is_empty() {
        f.with_verdict(Verdict::Met)
    } else {
        f.reason(format!(
            "the trusted root at {root_path} cannot anchor verification: {}",
            problems.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests;
