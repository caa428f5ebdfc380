//! Enforcement: the fixes kawal makes itself, and a record of each.
//!
//! Order matters. Units are masked first (a masked unit cannot be started again, by socket
//! activation or a dependency), then systemd re-reads its unit files, then the units are
//! stopped. USB buses stop authorising new devices before attached devices are judged, and
//! devices are handled deepest first, so a hub is deauthorised after what hangs off it.
//! kawal's own unit, the unit kawal's process runs in and the protected units are never
//! touched.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::units::{self, UnitControl, UnitName};
use super::usb::{self, USB_DEVICES};
use super::{Control, Fix, Policy, assess, owners};
use crate::SysRoot;

/// What an action did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionKind {
    /// Linked a unit to `/dev/null` under `/etc/systemd/system`.
    MaskUnit,
    /// Made systemd re-read unit files.
    DaemonReload,
    /// Stopped a unit.
    StopUnit,
    /// Wrote `/etc/modprobe.d/kawal.conf`.
    WriteBlacklist,
    /// Wrote 0 to a bus's `authorized_default`.
    DisableAutoAuthorise,
    /// Wrote 1 to a listed device's `authorized`.
    AuthoriseDevice,
    /// Wrote 0 to an unlisted device's `authorized`.
    DeauthoriseDevice,
}

/// How an action ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "result")]
pub enum Outcome {
    /// The change was made.
    Done,
    /// Already so; nothing changed.
    Unchanged,
    /// Deliberately not done.
    Skipped {
        /// Why.
        reason: String,
    },
    /// Tried and failed.
    Failed {
        /// Why.
        reason: String,
    },
}

impl Outcome {
    fn from_io(r: std::io::Result<()>) -> Self {
        match r {
            Ok(()) => Self::Done,
            Err(e) => Self::Failed {
                reason: e.to_string(),
            },
        }
    }
}

/// One thing [`enforce`] did or declined to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Action {
    /// The control it serves.
    pub control: Control,
    /// What kind of change.
    pub kind: ActionKind,
    /// What it was applied to: a unit, a path, a device.
    pub target: String,
    /// How it ended.
    pub outcome: Outcome,
}

/// Applies the fixes of [`assess`]'s findings when `policy.enforce` is set (otherwise does
/// nothing and returns no actions): masks and stops units, writes the modprobe blacklist, and
/// restricts USB authorisation. Findings without a fix (the boot loader's `console=`, inittab,
/// fuses) are left to the operator, as the assessment says.
pub fn enforce(root: &SysRoot, policy: &Policy, control: &dyn UnitControl) -> Vec<Action> {
    if !policy.enforce {
        return Vec::new();
    }
    let assessment = assess(root, policy);
    let mut units: Vec<(Control, UnitName)> = Vec::new();
    let mut block_modules = false;
    let mut usb_authorisation = false;
    for f in &assessment.findings {
        match &f.fix {
            Some(Fix::StopAndMask { units: list }) => {
                for u in list {
                    if !units.iter().any(|(_, seen)| seen == u) {
                        units.push((f.control, u.clone()));
                    }
                }
            }
            Some(Fix::BlockModules) => block_modules = true,
            Some(Fix::UsbAuthorisation) => usb_authorisation = true,
            None => {}
        }
    }

    let mut actions = Vec::new();
    stop_and_mask(root, policy, control, &units, &mut actions);
    if block_modules {
        actions.push(Action {
            control: Control::Ph11,
            kind: ActionKind::WriteBlacklist,
            target: usb::BLACKLIST.to_owned(),
            outcome: write_blacklist(root, &usb::blacklist_content(&policy.physical)),
        });
    }
    if usb_authorisation {
        restrict_usb(root, policy, &mut actions);
    }
    actions
}

fn stop_and_mask(
    root: &SysRoot,
    policy: &Policy,
    control: &dyn UnitControl,
    units: &[(Control, UnitName)],
    actions: &mut Vec<Action>,
) {
    let own_pid = std::process::id();
    let running_in = std::fs::read_to_string(root.path(&format!("/proc/{own_pid}/cgroup")))
        .ok()
        .and_then(|text| owners::unit_from_cgroup(&text));
    let mut to_stop = Vec::new();
    let mut masked_any = false;
    for (ctl, unit) in units {
        let skip = if *unit == policy.own_unit || running_in.as_ref() == Some(unit) {
            Some("kawal's own unit")
        } else if policy.protected_units.contains(unit) {
            Some("a protected unit (protected-units)")
        } else {
            None
        };
        if let Some(reason) = skip {
            for kind in [ActionKind::MaskUnit, ActionKind::StopUnit] {
                actions.push(Action {
                    control: *ctl,
                    kind,
                    target: unit.to_string(),
                    outcome: Outcome::Skipped {
                        reason: reason.to_owned(),
                    },
                });
            }
            continue;
        }
        let outcome = mask(root, unit);
        masked_any |= outcome == Outcome::Done;
        if matches!(outcome, Outcome::Done | Outcome::Unchanged) {
            to_stop.push((*ctl, unit.clone()));
        }
        actions.push(Action {
            control: *ctl,
            kind: ActionKind::MaskUnit,
            target: unit.to_string(),
            outcome,
        });
    }
    if masked_any {
        actions.push(Action {
            control: to_stop.first().map_or(Control::Pl31, |(c, _)| *c),
            kind: ActionKind::DaemonReload,
            target: "systemd".to_owned(),
            outcome: unit_outcome(control.daemon_reload()),
        });
    }
    for (ctl, unit) in to_stop {
        actions.push(Action {
            control: ctl,
            kind: ActionKind::StopUnit,
            target: unit.to_string(),
            outcome: unit_outcome(control.stop(&unit)),
        });
    }
}

fn unit_outcome(r: super::Result<()>) -> Outcome {
    match r {
        Ok(()) => Outcome::Done,
        Err(e) => Outcome::Failed {
            reason: e.to_string(),
        },
    }
}

/// What `systemctl mask` does: `/etc/systemd/system/NAME -> /dev/null`. An existing link is
/// replaced; a unit file there is not (systemctl refuses that too).
pub(super) fn mask(root: &SysRoot, unit: &UnitName) -> Outcome {
    let dir = root.path(units::UNIT_DIR);
    let link = dir.join(unit.as_str());
    let dev_null = Path::new("/dev/null");
    match std::fs::symlink_metadata(&link) {
        Ok(meta) if meta.file_type().is_symlink() => {
            if std::fs::read_link(&link).is_ok_and(|t| t == dev_null) {
                return Outcome::Unchanged;
            }
            if let Err(e) = std::fs::remove_file(&link) {
                return Outcome::Failed {
                    reason: format!("cannot replace the existing link: {e}"),
                };
            }
        }
        Ok(_) => {
            return Outcome::Failed {
                reason: format!(
                    "a unit file exists at {}/{unit}; it is not replaced",
                    units::UNIT_DIR
                ),
            };
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Outcome::Failed {
                reason: e.to_string(),
            };
        }
    }
    Outcome::from_io(
        std::fs::create_dir_all(&dir).and_then(|()| std::os::unix::fs::symlink(dev_null, &link)),
    )
}

/// Writes the blacklist atomically (temporary file, then rename).
fn write_blacklist(root: &SysRoot, content: &str) -> Outcome {
    let path = root.path(usb::BLACKLIST);
    if std::fs::read_to_string(&path).is_ok_and(|old| old == content) {
        return Outcome::Unchanged;
    }
    let tmp = path.with_extension("conf.kawal-tmp");
    let result = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(content.as_bytes())?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, &path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    Outcome::from_io(result)
}

/// Writes a sysfs attribute that must already exist (never creates files in sysfs).
fn write_attr(root: &SysRoot, abs: &str, value: &str) -> Outcome {
    let result = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(root.path(abs))
        .and_then(|mut f| f.write_all(value.as_bytes()));
    Outcome::from_io(result)
}

fn restrict_usb(root: &SysRoot, policy: &Policy, actions: &mut Vec<Action>) {
    let (buses, mut devices) = match usb::read_usb(root) {
        Ok(found) => found,
        Err(e) => {
            actions.push(Action {
                control: Control::Ph11,
                kind: ActionKind::DisableAutoAuthorise,
                target: USB_DEVICES.to_owned(),
                outcome: Outcome::Failed {
                    reason: e.to_string(),
                },
            });
            return;
        }
    };
    if policy.physical.usb_auto_authorise.forbids() {
        for bus in &buses {
            let target = format!("{USB_DEVICES}/{}/authorized_default", bus.name);
            let outcome = if bus.authorized_default == Some(0) {
                Outcome::Unchanged
            } else {
                write_attr(root, &target, "0")
            };
            actions.push(Action {
                control: Control::Ph11,
                kind: ActionKind::DisableAutoAuthorise,
                target,
                outcome,
            });
        }
    }
    // Deepest first: children before the hub they hang off.
    devices.sort_by_key(|d| std::cmp::Reverse(d.name.matches('.').count()));
    let allowed = &policy.physical.allowed_usb_devices;
    for dev in devices {
        let listed = dev.id.as_ref().is_some_and(|id| allowed.contains(id));
        let target = format!("{USB_DEVICES}/{}/authorized", dev.name);
        let (kind, outcome) = match (listed, dev.authorized) {
            (true, true) | (false, false) => continue,
            (true, false) => (ActionKind::AuthoriseDevice, write_attr(root, &target, "1")),
            (false, true) => (
                ActionKind::DeauthoriseDevice,
                write_attr(root, &target, "0"),
            ),
        };
        let outcome = match outcome {
            // Deauthorising a hub removes what hangs off it.
            Outcome::Failed { .. }
                if !root.path(&format!("{USB_DEVICES}/{}", dev.name)).exists() =>
            {
                Outcome::Skipped {
                    reason: "gone: its hub was deauthorised".to_owned(),
                }
            }
            other => other,
        };
        actions.push(Action {
            control: Control::Ph11,
            kind,
            target,
            outcome,
        });
    }
}
