//! `kawal reset --secure`: crypto-erase (DS-1-4, DS-1-5).
//!
//! Every record, key and log entry is sealed under keys derived from the root secret, so
//! destroying the one sealed root blob makes every copy of the data unreadable, including
//! copies taken before the reset and blocks that flash wear-levelling keeps out of reach.
//! The remaining files are then removed. A signed final record is written first, and a receipt
//! holding only public facts (UID, time, the final signed checkpoint) is left behind.
use std::fs::{self, OpenOptions};
use std::io::{BufRead, Write};
use std::path::Path;

use kawal_audit::{Event, Outcome, WallTime};
use kawal_crypto::secret::SecretString;
use serde::Serialize;

use crate::device::{self, Device, Layout};
use crate::error::{CliError, Context, Exit, Result};
use crate::output;

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Receipt {
    uid: String,
    reset_at: String,
    final_record_signed: bool,
    final_checkpoint_seq: Option<u64>,
    final_checkpoint_head: Option<String>,
    audit_public_key: Option<String>,
    method: &'static str,
}

/// Overwrites a file with random bytes, syncs, then unlinks it.
fn shred(path: &Path) -> Result<()> {
    let len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if let Ok(mut f) = OpenOptions::new().write(true).open(path) {
        let mut left = len;
        let mut buf = [0u8; 4096];
        while left > 0 {
            kawal_crypto::rng::fill(&mut buf).or_exit(Exit::Failure, "random")?;
            let n = usize::try_from(left.min(4096)).unwrap_or(4096);
            f.write_all(&buf[..n]).or_exit(Exit::Io, "overwrite")?;
            left -= n as u64;
        }
        f.sync_all().or_exit(Exit::Io, "fsync")?;
    }
    fs::remove_file(path).or_exit(Exit::Io, &format!("cannot remove {}", path.display()))
}

/// Runs the reset. Without `yes`, the operator must type the device UID.
pub fn reset_secure(dir: &Path, yes: bool, passphrase: Option<&SecretString>) -> Result<()> {
    let layout = Layout::new(dir);
    // A folder whose device.json is missing (an interrupted init) can still be erased.
    let info = match device::read_info(&layout) {
        Ok(info) => info,
        Err(_) if layout.root_sealed().exists() || layout.store().exists() => device::DeviceInfo {
            uid: "unknown".into(),
            ..device::DeviceInfo::placeholder()
        },
        Err(e) => return Err(e),
    };
    let _lock = device::lock_daemon(&layout, "erasing the device")?;
    if !yes {
        output::err(&format!(
            "This destroys every key and all data of device {} in {}. Type the device UID to confirm:",
            info.uid,
            dir.display()
        ));
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .or_exit(Exit::Io, "stdin")?;
        if answer.trim() != info.uid {
            return Err(CliError::new(
                Exit::NoPerm,
                "not confirmed; nothing was changed",
            ));
        }
    }
    // The final signed record, when the device still opens.
    let mut receipt = Receipt {
        uid: info.uid.clone(),
        reset_at: WallTime::now().to_string(),
        final_record_signed: false,
        final_checkpoint_seq: None,
        final_checkpoint_head: None,
        audit_public_key: None,
        method: "crypto-erase: sealed root secret overwritten and removed, then all data files removed",
    };
    match Device::open(dir, passphrase) {
        Ok(dev) => {
            let log = dev.audit_log(device::ANCHOR_EVERY)?;
            device::record(
                &log,
                Event::new("device.reset", "kawal-reset", Outcome::Success)
                    .with("uid", info.uid.as_str()),
            )?;
            log.checkpoint().or_exit(Exit::Io, "final checkpoint")?;
            log.close().or_exit(Exit::Io, "audit log")?;
            use kawal_audit::AnchorStore;
            if let Ok(Some(a)) = device::StoreAnchor(dev.store.clone()).load() {
                receipt.final_checkpoint_seq = Some(a.seq);
                receipt.final_checkpoint_head = Some(a.head.to_hex());
            }
            receipt.audit_public_key = Some(hex::encode(dev.audit_signer()?.public_key()));
            receipt.final_record_signed = true;
        }
        Err(e) => output::err(&format!(
            "warning: the device does not open ({e}); erasing without a final signed record"
        )),
    }
    // Crypto-erase first: without the root, nothing left anywhere can be opened.
    // (Already gone on a device locked after tamper.)
    if layout.root_sealed().exists() {
        shred(&layout.root_sealed())?;
    }
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .or_exit(Exit::Io, "fsync folder")?;
    for entry in fs::read_dir(dir).or_exit(Exit::Io, "data folder")? {
        let path = entry.or_exit(Exit::Io, "data folder")?.path();
        if path.is_dir() {
            for f in walk(&path)? {
                shred(&f)?;
            }
            fs::remove_dir_all(&path)
                .or_exit(Exit::Io, &format!("cannot remove {}", path.display()))?;
        } else {
            shred(&path)?;
        }
    }
    let json = serde_json::to_vec_pretty(&receipt).or_exit(Exit::Failure, "receipt")?;
    device::write_atomic(&layout.reset_receipt(), &json, 0o644)?;
    output::line(&format!(
        "device {} erased; receipt in {}",
        info.uid,
        layout.reset_receipt().display()
    ));
    Ok(())
}

fn walk(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).or_exit(Exit::Io, "walk")? {
        let p = entry.or_exit(Exit::Io, "walk")?.path();
        if p.is_dir() {
            out.extend(walk(&p)?);
        } else {
            out.push(p);
        }
    }
    Ok(out)
}
