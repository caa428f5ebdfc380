//! kawal platform: the facts kawal reads from the machine it runs on.
//!
//! - [`uid`]: the device UID (G045 AU-3-1), derived from hardware identity, never the raw value.
//! - [`machine_binding`]: the facts that bind the sealed root secret to this machine.
//! - [`clock`]: the kernel clock and its synchronisation state (G045 PL-4-3).
//! - [`selftest`]: the power-up self-test (G045 PL-3-4).
//! - [`memory`]: large freed blocks go back to the kernel (an idle daemon stays small).
//! - [`exposure`]: listening services and physical/debug interfaces, judged against a policy
//!   and switched off on enforce (G045 PL-3-1, PH-1-1, PH-1-2).
//! - [`integrity`]: the signed integrity manifest and its check of installed files (G045 PL-1-4).
//! - [`tamper`]: tamper inputs (GPIO line, file or sysfs attribute, signal) and the response
//!   that destroys the keys and locks the device (G045 PH-2-1).
//!
//! Files are read under a [`SysRoot`], so tests run against a fake `/sys`, `/proc` and `/etc`.
//!
//! This is the one kawal crate that may hold `unsafe` (ADR 0002): only [`clock`] uses it, to
//! call `adjtimex(2)` and `clock_gettime(2)`, and [`memory`], to call `mallopt(3)` and
//! `malloc_trim(3)`. Everything else is safe code.
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]

use std::path::PathBuf;

pub mod clock;
pub mod exposure;
pub mod integrity;
pub mod memory;
pub mod selftest;
pub mod tamper;
pub mod uid;

/// Errors of the platform crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// None of the hardware identity sources gave a usable value.
    #[error("no usable hardware identity: {tried}")]
    NoHardwareIdentity {
        /// Each source tried and why it was skipped.
        tried: String,
    },
    /// A string offered as a device UID is not one.
    #[error("invalid device UID: {reason}")]
    InvalidUid {
        /// What is wrong with it (the value itself is not repeated).
        reason: &'static str,
    },
}

/// Result of platform operations.
pub type Result<T> = std::result::Result<T, Error>;

/// Root of the filesystem facts are read from (`/` in production; a fake tree in tests).
#[derive(Debug, Clone)]
pub struct SysRoot(pub PathBuf);

impl SysRoot {
    /// The real root, `/`.
    pub fn host() -> Self {
        Self(PathBuf::from("/"))
    }

    /// The absolute path `abs` under this root (joined without its leading `/`).
    pub fn path(&self, abs: &str) -> PathBuf {
        self.0.join(abs.trim_start_matches('/'))
    }
}

/// Where machine-id lives.
pub(crate) const MACHINE_ID: &str = "/etc/machine-id";
/// Where the DMI product UUID lives (readable by root only on most systems).
pub(crate) const DMI_PRODUCT_UUID: &str = "/sys/class/dmi/id/product_uuid";
/// Where the device-tree serial number lives (ARM boards).
pub(crate) const DT_SERIAL: &str = "/proc/device-tree/serial-number";

/// Facts that bind the sealed root secret to this machine: SHA-256 over the length-prefixed
/// contents of `/etc/machine-id`, `/sys/class/dmi/id/product_uuid` and
/// `/proc/device-tree/serial-number` (missing, unreadable or empty ones contribute a fixed
/// "absent" marker). Returns the 32 bytes and the names of the sources used, for the report.
///
/// The DMI UUID is readable by root only: a daemon running as its own user reads the copy
/// that systemd hands it as the credential `dmi-product-uuid` (in `$CREDENTIALS_DIRECTORY`,
/// `packaging/systemd/kawal.service.d/dmi.conf.example`), so it binds as `kawal init` run as
/// root did.
pub fn machine_binding(root: &SysRoot) -> (Vec<u8>, Vec<&'static str>) {
    let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    machine_binding_with(root, credentials.as_deref())
}

/// [`machine_binding`] with the credentials folder given (tests).
pub fn machine_binding_with(
    root: &SysRoot,
    credentials: Option<&std::path::Path>,
) -> (Vec<u8>, Vec<&'static str>) {
    let sources: [(&'static str, &str); 3] = [
        ("machine-id", MACHINE_ID),
        ("dmi-product-uuid", DMI_PRODUCT_UUID),
        ("device-tree-serial", DT_SERIAL),
    ];
    let mut input = b"kawal-binding-v1\0".to_vec();
    let mut used = Vec::new();
    for (name, path) in sources {
        input.extend_from_slice(name.as_bytes());
        input.push(0);
        let read = std::fs::read(root.path(path)).or_else(|e| match credentials {
            Some(dir) if path == DMI_PRODUCT_UUID => std::fs::read(dir.join(name)),
            _ => Err(e),
        });
        match read {
            Ok(bytes) if !bytes.is_empty() => {
                input.push(1);
                input.extend_from_slice(
                    &u64::try_from(bytes.len()).unwrap_or(u64::MAX).to_be_bytes(),
                );
                input.extend_from_slice(&bytes);
                used.push(name);
            }
            _ => input.extend_from_slice(b"\x00absent"),
        }
    }
    (kawal_crypto::sha256(&input).to_vec(), used)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysroot_joins_without_leading_slash() {
        let r = SysRoot(PathBuf::from("/tmp/x"));
        assert_eq!(
            r.path("/etc/machine-id"),
            PathBuf::from("/tmp/x/etc/machine-id")
        );
        assert_eq!(SysRoot::host().path("/etc/a"), PathBuf::from("/etc/a"));
    }

    /// G045: AU-3-1 — a daemon that cannot read the DMI UUID (not root) binds the same as
    /// root through the credential systemd hands it.
    #[test]
    fn the_dmi_credential_stands_in_for_the_root_only_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = SysRoot(dir.path().join("root"));
        std::fs::create_dir_all(root.path("/sys/class/dmi/id")).unwrap();
        std::fs::write(root.path(DMI_PRODUCT_UUID), "4c4c4544-0042\n").unwrap();
        let as_root = machine_binding_with(&root, None);
        let creds = dir.path().join("creds");
        std::fs::create_dir_all(&creds).unwrap();
        std::fs::write(creds.join("dmi-product-uuid"), "4c4c4544-0042\n").unwrap();
        std::fs::remove_file(root.path(DMI_PRODUCT_UUID)).unwrap();
        let without = machine_binding_with(&root, None);
        assert_ne!(without.0, as_root.0);
        let with_credential = machine_binding_with(&root, Some(&creds));
        assert_eq!(with_credential, as_root);
        assert!(with_credential.1.contains(&"dmi-product-uuid"));
    }

    /// G045: AU-3-1
    #[test]
    fn machine_binding_changes_when_machine_id_changes() {
        let dir = tempfile::tempdir().unwrap();
        let root = SysRoot(dir.path().to_path_buf());
        let (empty, used) = machine_binding(&root);
        assert_eq!(empty.len(), 32);
        assert!(used.is_empty());
        std::fs::create_dir_all(root.path("/etc")).unwrap();
        std::fs::write(root.path(MACHINE_ID), "0123456789abcdef0123456789abcdef\n").unwrap();
        let (a, used) = machine_binding(&root);
        assert_eq!(used, vec!["machine-id"]);
        assert_ne!(a, empty);
        assert_eq!(machine_binding(&root).0, a, "stable across calls");
        std::fs::write(root.path(MACHINE_ID), "fedcba9876543210fedcba9876543210\n").unwrap();
        assert_ne!(machine_binding(&root).0, a);
    }
}
