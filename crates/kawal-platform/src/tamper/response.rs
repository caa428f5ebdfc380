//! The tamper response: destroy the keys, lock the device, then record the event.
//!
//! [`TamperResponse::run`] goes through these steps in order, timing each, and carries on past
//! a failed step (a failure to unlink must not keep the alert from being sent):
//!
//! 1. `destroy-keys`: the daemon's [`Destroy`] wipes the key hierarchy in memory (and evicts a
//!    TPM object where one holds the key-encryption key).
//! 2. `overwrite-sealed-blob`: the sealed root's bytes are overwritten in place with random
//!    bytes and synced ([`overwrite_in_place`]).
//! 3. `lock-marker`: the [`LOCK_MARKER`] file, written atomically (new file, sync, rename,
//!    folder sync).
//! 4. `remove-sealed-blob`: the overwritten blob is truncated and unlinked, its folder synced
//!    (steps 2 and 4 together are [`destroy_sealed_blob`]).
//! 5. `alert`: the daemon's [`Alert`] records and forwards the event.
//!
//! After step 2 no copy of the key material is left, in memory or on disk: its end, measured
//! from [`TamperSignal::seen`], is [`ResponseReport::keys_destroyed_after`], the figure bounded
//! at 100 ms. Steps 3–4 record why and clean up, and come before the alert because they are
//! quick and local; the alert is the first thing done after them. If power fails between step
//! 2 and step 3, the next start finds a blob that does not unseal (and no marker): still
//! locked, with a less helpful message.
//!
//! Overwriting in place reaches the same disk blocks on the filesystems kawal runs on (ext4,
//! f2fs without compression). On flash behind a translation layer (eMMC, SD) the old page may
//! survive until it is erased by the device; that is why the sealed blob is bound to the
//! machine and, where the board has one, a TPM-held key-encryption key is evicted by
//! [`Destroy`]: the blob alone is not enough to recover the root.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Error, InputKind, Result, TamperSignal};

/// The lock marker's file name in the data folder.
pub const LOCK_MARKER: &str = "tamper-locked";
/// The lock marker's format tag.
const LOCK_FORMAT: &str = "kawal-tamper-lock/1";

/// Wipes the keys held in memory. Implemented by the daemon.
pub trait Destroy: Send + Sync {
    /// Zeroizes every key in memory (the root, the hierarchy, derived keys it holds) and evicts
    /// any TPM object holding the key-encryption key. Must finish in bounded time: it must not
    /// wait for a lock that a long operation (an update, a store write) may hold. The error
    /// text must not contain key material.
    fn destroy_keys(&self) -> std::result::Result<(), String>;
}

/// Records and forwards the tamper event. Implemented by the daemon.
pub trait Alert: Send + Sync {
    /// Appends the tamper event to the audit log and wakes the log forwarder. Called after the
    /// keys are destroyed: it must not need them (see the module doc of [`super`]).
    fn tamper(&self, report: &ResponseReport) -> std::result::Result<(), String>;

    /// An input cannot watch its source (reported once per distinct fault). Not tamper.
    fn fault(&self, input: &str, error: &Error);
}

/// The lock marker's content: why the device is locked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LockInfo {
    /// `kawal-tamper-lock/1`.
    pub format: String,
    /// When the response ran (UTC, RFC 3339 with microseconds).
    pub when: String,
    /// The input that saw tamper.
    pub input: String,
    /// Its kind; `None` when the marker itself is unreadable.
    pub kind: Option<InputKind>,
    /// What it saw.
    pub reason: String,
}

impl LockInfo {
    fn new(signal: &TamperSignal) -> Self {
        let mut when = Vec::new();
        kawal_audit::WallTime::now().write_rfc3339(&mut when);
        Self {
            format: LOCK_FORMAT.to_owned(),
            when: String::from_utf8_lossy(&when).into_owned(),
            input: signal.input.clone(),
            kind: Some(signal.kind),
            reason: signal.reason.clone(),
        }
    }
}

/// One timed step of the response.
#[derive(Debug, Clone)]
pub struct StepTiming {
    /// `destroy-keys`, `overwrite-sealed-blob`, `lock-marker`, `remove-sealed-blob` or
    /// `alert`.
    pub step: &'static str,
    /// How long it took.
    pub took: Duration,
    /// Its error, if it failed.
    pub error: Option<String>,
}

/// What the response did.
#[derive(Debug, Clone)]
pub struct ResponseReport {
    /// Why the device is locked (also the lock marker's content).
    pub lock: LockInfo,
    /// The steps run so far, in order.
    pub steps: Vec<StepTiming>,
    /// From the input seeing tamper to the end of the key destruction (steps 1–2: keys in
    /// memory wiped, sealed blob overwritten and synced).
    pub keys_destroyed_after: Duration,
    /// From the input seeing tamper to the end of the alert; `None` while it has not run.
    pub alerted_after: Option<Duration>,
}

impl ResponseReport {
    /// Whether every step succeeded.
    pub fn complete(&self) -> bool {
        self.alerted_after.is_some() && self.steps.iter().all(|s| s.error.is_none())
    }
}

/// The response to run on tamper.
#[derive(Clone)]
pub struct TamperResponse {
    data_dir: PathBuf,
    sealed_blob: PathBuf,
    destroy: Arc<dyn Destroy>,
    alert: Arc<dyn Alert>,
}

impl std::fmt::Debug for TamperResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TamperResponse")
            .field("data_dir", &self.data_dir)
            .field("sealed_blob", &self.sealed_blob)
            .finish_non_exhaustive()
    }
}

impl TamperResponse {
    /// A response for the device whose data folder is `data_dir` and sealed root is
    /// `sealed_blob` (the daemon's `root.sealed`).
    pub fn new(
        data_dir: &Path,
        sealed_blob: &Path,
        destroy: Arc<dyn Destroy>,
        alert: Arc<dyn Alert>,
    ) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            sealed_blob: sealed_blob.to_path_buf(),
            destroy,
            alert,
        }
    }

    /// The alert, for reporting input faults.
    pub(crate) fn alert(&self) -> &dyn Alert {
        &*self.alert
    }

    /// Runs every step, in order, and reports each.
    pub fn run(&self, signal: &TamperSignal) -> ResponseReport {
        let lock = LockInfo::new(signal);
        let mut steps = Vec::with_capacity(5);
        let mut step =
            |name: &'static str, f: &mut dyn FnMut() -> std::result::Result<(), String>| {
                let start = Instant::now();
                let error = f().err();
                steps.push(StepTiming {
                    step: name,
                    took: start.elapsed(),
                    error,
                });
            };
        step("destroy-keys", &mut || self.destroy.destroy_keys());
        step("overwrite-sealed-blob", &mut || {
            overwrite_in_place(&self.sealed_blob).map_err(|e| e.to_string())
        });
        // Every copy of the key material is gone: in memory, and on disk once the random
        // bytes are synced. What follows records why and cleans up.
        let keys_destroyed_after = signal.seen.elapsed();
        step("lock-marker", &mut || {
            write_lock_marker(&self.data_dir, &lock).map_err(|e| e.to_string())
        });
        step("remove-sealed-blob", &mut || {
            remove_blob(&self.sealed_blob).map_err(|e| e.to_string())
        });
        let mut report = ResponseReport {
            lock,
            steps,
            keys_destroyed_after,
            alerted_after: None,
        };
        let start = Instant::now();
        let error = self.alert.tamper(&report).err();
        report.steps.push(StepTiming {
            step: "alert",
            took: start.elapsed(),
            error,
        });
        report.alerted_after = Some(signal.seen.elapsed());
        report
    }
}

/// Overwrites a file's bytes in place with random bytes and syncs them to disk, keeping its
/// length. A missing file is not an error.
pub fn overwrite_in_place(path: &Path) -> Result<()> {
    let io = |step: &'static str| {
        move |source| Error::Io {
            step,
            path: path.to_path_buf(),
            source,
        }
    };
    let file = match OpenOptions::new().write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("open for overwrite")(e)),
    };
    let len = file.metadata().map_err(io("stat"))?.len();
    let mut noise = zeroize::Zeroizing::new(vec![0u8; 4096]);
    let mut offset = 0u64;
    while offset < len {
        let n = usize::try_from((len - offset).min(4096)).unwrap_or(4096);
        kawal_crypto::rng::fill(&mut noise[..n]).map_err(Error::Random)?;
        file.write_all_at(&noise[..n], offset)
            .map_err(io("overwrite"))?;
        offset += n as u64;
    }
    // The data is what matters; the inode's times need not reach the disk first.
    file.sync_data().map_err(io("sync"))
}

/// Destroys the sealed root blob: overwrites its bytes in place with random bytes, syncs them,
/// truncates and unlinks it, and syncs its folder. A missing blob is not an error (a second
/// run, or a device never provisioned).
pub fn destroy_sealed_blob(path: &Path) -> Result<()> {
    overwrite_in_place(path)?;
    remove_blob(path)
}

/// Truncates and unlinks an (overwritten) blob and syncs its folder. The random bytes are
/// already on disk: truncating and unlinking only free the blocks, and the folder sync makes
/// the unlink durable, so the truncation itself is not synced.
fn remove_blob(path: &Path) -> Result<()> {
    let io = |step: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io {
            step,
            path: p,
            source,
        }
    };
    match OpenOptions::new().write(true).open(path) {
        Ok(f) => f.set_len(0).map_err(io("truncate", path))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("open for truncate", path)(e)),
    }
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("unlink", path)(e)),
    }
    sync_dir(parent(path))
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| Error::Io {
            step: "sync folder",
            path: dir.to_path_buf(),
            source,
        })
}

/// Writes the lock marker atomically: a new file, synced, renamed over, folder synced.
fn write_lock_marker(data_dir: &Path, info: &LockInfo) -> Result<()> {
    let path = data_dir.join(LOCK_MARKER);
    let tmp = data_dir.join(format!("{LOCK_MARKER}.new"));
    let io = |step: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io {
            step,
            path: p,
            source,
        }
    };
    let mut body = serde_json::to_vec_pretty(info).map_err(|e| Error::BadLockMarker {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    body.push(b'\n');
    // A leftover from an interrupted earlier run: replace it.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("remove", &tmp)(e)),
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    f.write_all(&body).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("sync", &tmp))?;
    drop(f);
    fs::rename(&tmp, &path).map_err(io("rename", &path))?;
    sync_dir(data_dir)
}

/// Whether the device in `data_dir` is locked after tamper, and why. The next start calls it
/// before unsealing and refuses to unseal when it returns `Some`.
///
/// Fails closed: a marker that exists but cannot be read or parsed, or a data folder whose
/// marker cannot be checked, still locks (the `reason` says so).
pub fn is_locked(data_dir: &Path) -> Option<LockInfo> {
    let path = data_dir.join(LOCK_MARKER);
    let unreadable = |reason: String| LockInfo {
        format: LOCK_FORMAT.to_owned(),
        when: String::new(),
        input: String::new(),
        kind: None,
        reason: format!("lock marker {} is unreadable: {reason}", path.display()),
    };
    match fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some(unreadable(e.to_string())),
        Ok(_) => {}
    }
    let text = match fs::read(&path) {
        Ok(t) => t,
        Err(e) => return Some(unreadable(e.to_string())),
    };
    match serde_json::from_slice::<LockInfo>(&text) {
        Ok(info) if info.format == LOCK_FORMAT => Some(info),
        Ok(info) => Some(unreadable(format!("unknown format {:?}", info.format))),
        Err(e) => Some(unreadable(e.to_string())),
    }
}
