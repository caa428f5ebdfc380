//! What the device exposes, and what kawal switches off: network services (G045 PL-3-1),
//! external interfaces (PH-1-1) and internal debug interfaces (PH-1-2).
//!
//! [`assess`] reads the machine under a [`SysRoot`] and compares it with a [`Policy`]:
//!
//! - listening sockets from `/proc/net/{tcp,tcp6,udp,udp6}` ([`procnet`]), each mapped to the
//!   processes holding it and their systemd unit ([`owners`]), judged against the allowed
//!   listeners ([`services`]);
//! - serial logins and kernel consoles ([`serial`]); USB authorisation, mass-storage and gadget
//!   modules ([`usb`]); removable-media auto-mount ([`removable`]); network interfaces that are
//!   up ([`netif`]); debugfs and JTAG/SWD device-tree nodes ([`debug`]).
//!
//! The result is an [`Assessment`]: findings (each with a severity, the control it fails, what
//! kawal can fix and what an operator must do), evidence lines, items software cannot see
//! ("manual evidence needed") and anything that could not be read. It serialises to JSON for
//! the API and the compliance report.
//!
//! [`enforce`] applies the fixes kawal can make itself: masking and stopping systemd units
//! through [`UnitControl`], USB authorisation in sysfs, and a modprobe blacklist. Every write goes through the root, so tests run on a scratch tree.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::SysRoot;

mod cfg;
pub mod debug;
mod enforce;
pub mod netif;
pub mod owners;
pub mod procnet;
pub mod removable;
pub mod serial;
pub mod services;
mod units;
pub mod usb;

pub use cfg::{IfName, ListenerSpec, PhysicalPolicy, Policy, Rule, UsbId};
pub use enforce::{Action, ActionKind, Outcome, enforce};
pub use units::{RecordingUnitControl, Systemctl, UnitCall, UnitControl, UnitName};

/// Errors of the exposure checks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A line of a kernel table (`/proc/net/tcp`, `/proc/modules`, ...) is not in the expected
    /// format. The whole table is rejected: a partly read table could hide a listener.
    #[error("{file} line {line}: {reason}")]
    Malformed {
        /// The file, as an absolute path on the assessed system.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        reason: &'static str,
    },
    /// A file that must exist could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path under the root.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A policy value is invalid (operator misconfiguration).
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidPolicy {
        /// Which kind of value (listener, USB ID, unit name, interface name).
        what: &'static str,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `systemctl` could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `systemctl` ran and failed.
    #[error("systemctl {args} failed ({status}): {stderr}")]
    UnitCommand {
        /// The arguments, space-separated.
        args: String,
        /// Exit status as reported by the OS.
        status: String,
        /// The first line of its standard error.
        stderr: String,
    },
}

/// Result of the exposure checks.
pub type Result<T> = std::result::Result<T, Error>;

/// The G045 control a finding or action belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Control {
    /// Unnecessary services should be disabled.
    #[serde(rename = "PL-3-1")]
    Pl31,
    /// Any unnecessary external interface should be deactivated.
    #[serde(rename = "PH-1-1")]
    Ph11,
    /// Unauthorised access to the internal interface shall be prevented.
    #[serde(rename = "PH-1-2")]
    Ph12,
}

impl Control {
    /// The control code, e.g. `"PL-3-1"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pl31 => "PL-3-1",
            Self::Ph11 => "PH-1-1",
            Self::Ph12 => "PH-1-2",
        }
    }
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// Reachable only from the device itself, or informational.
    Low,
    /// Unexpected exposure.
    Medium,
    /// A well-known insecure service or an open login/debug path.
    High,
}

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    /// A network listener of a well-known insecure service (Telnet, FTP, SNMP, ...).
    InsecureService,
    /// A network listener that the policy does not allow.
    UnexpectedListener,
    /// A listener bound to loopback only, and loopback listeners are not allowed.
    LoopbackListener,
    /// A login prompt on a serial line.
    SerialLogin,
    /// The kernel console on a serial line (`console=` on the kernel command line).
    SerialConsole,
    /// A USB bus authorises new devices automatically.
    UsbAutoAuthorise,
    /// An authorised USB device that the policy does not list.
    UsbDeviceNotListed,
    /// USB mass storage is loaded, or could be loaded when a device is plugged in.
    UsbStorage,
    /// The device can act as a USB gadget (serial, Ethernet, mass storage).
    UsbGadget,
    /// Removable media can be mounted automatically.
    Automount,
    /// A network interface is up that the policy does not name.
    NetworkInterface,
    /// debugfs is mounted.
    Debugfs,
    /// A JTAG or SWD port is enabled in the device tree.
    DebugPort,
}

/// One thing that fails the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Finding {
    /// The control it fails.
    pub control: Control,
    /// What it is about.
    pub kind: FindingKind,
    /// How bad it is.
    pub severity: Severity,
    /// The thing itself: `"tcp 0.0.0.0:23"`, `"ttyS0"`, `"usb1"`, `"eth1"`.
    pub subject: String,
    /// What kawal saw, in words (service name, owner, file and line).
    pub detail: String,
    /// What [`enforce`] does about it, if anything.
    pub fix: Option<Fix>,
    /// What an operator must do, when kawal cannot (or cannot fully) fix it.
    pub manual: Option<String>,
}

/// A change [`enforce`] can make.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Fix {
    /// Mask the units (symlink to `/dev/null` under `/etc/systemd/system`), then stop them.
    StopAndMask {
        /// The units.
        units: Vec<UnitName>,
    },
    /// Write `/etc/modprobe.d/kawal.conf`, which blocks the forbidden module classes.
    BlockModules,
    /// Set `authorized_default` to 0 on every bus and authorise only the listed devices.
    UsbAuthorisation,
}

/// Something the policy needs that software cannot see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ManualItem {
    /// The control it belongs to.
    pub control: Control,
    /// What evidence is needed, and how to get it.
    pub what: String,
}

/// The outcome of [`assess`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Assessment {
    /// Every listening socket seen, with its owner and verdict.
    pub listeners: Vec<services::Listener>,
    /// What fails the policy, most severe first.
    pub findings: Vec<Finding>,
    /// What was looked at and what it showed, one fact a line.
    pub evidence: Vec<String>,
    /// What software cannot see ("manual evidence needed").
    pub manual: Vec<ManualItem>,
    /// Facts that could not be read; the assessment is incomplete while this is not empty.
    pub errors: Vec<String>,
}

impl Assessment {
    /// Whether nothing fails the policy and everything could be read.
    pub fn passed(&self) -> bool {
        self.findings.is_empty() && self.errors.is_empty()
    }

    /// The findings of one control.
    pub fn findings_for(&self, control: Control) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.control == control)
    }

    fn finding(&mut self, finding: Finding) {
        self.findings.push(finding);
    }

    fn evidence(&mut self, line: impl Into<String>) {
        self.evidence.push(line.into());
    }

    fn error(&mut self, err: impl std::fmt::Display) {
        self.errors.push(err.to_string());
    }

    fn manual(&mut self, control: Control, what: impl Into<String>) {
        self.manual.push(ManualItem {
            control,
            what: what.into(),
        });
    }
}

/// Reads the machine under `root` and judges it against `policy`. Never fails: what cannot be
/// read is listed in [`Assessment::errors`].
pub fn assess(root: &SysRoot, policy: &Policy) -> Assessment {
    let mut a = Assessment::default();
    services::assess(root, policy, &mut a);
    serial::assess(root, &policy.physical, &mut a);
    usb::assess(root, &policy.physical, &mut a);
    removable::assess(root, &policy.physical, &mut a);
    netif::assess(root, &policy.physical, &mut a);
    debug::assess(root, &policy.physical, &mut a);
    // Stable order for reports: most severe first, then by control and subject.
    a.findings.sort_by(|x, y| {
        y.severity
            .cmp(&x.severity)
            .then_with(|| x.control.as_str().cmp(y.control.as_str()))
            .then_with(|| x.subject.cmp(&y.subject))
    });
    a
}

/// Reads a small text file under the root: `Ok(None)` when it does not exist.
fn read_optional(root: &SysRoot, abs: &str) -> Result<Option<String>> {
    let path = root.path(abs);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Read { path, source }),
    }
}

/// The names in a directory under the root, sorted; empty when it does not exist.
fn list_dir(root: &SysRoot, abs: &str) -> Result<Vec<String>> {
    let path = root.path(abs);
    let entries = match std::fs::read_dir(&path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(Error::Read { path, source }),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// Text that came from the assessed system, made safe to show: control characters become
/// `?` and it is cut to `max` characters.
fn printable(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_replaces_control_characters_and_cuts() {
        assert_eq!(printable("a\x1b[31mb", 10), "a?[31mb");
        assert_eq!(printable("abcdef", 3), "abc…");
    }

    #[test]
    fn controls_serialise_as_their_codes() {
        let json = serde_json::to_string(&[Control::Pl31, Control::Ph11, Control::Ph12]).unwrap();
        assert_eq!(json, r#"["PL-3-1","PH-1-1","PH-1-2"]"#);
        assert!(Severity::High > Severity::Medium && Severity::Medium > Severity::Low);
    }
}
