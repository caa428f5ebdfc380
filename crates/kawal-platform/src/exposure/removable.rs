//! Removable media (G045 PH-1-1, SD card and USB storage): what would mount them by itself.
//!
//! udisks2 mounts removable media on request of any permitted local user (desktop sessions do
//! so on insertion); autofs and `.automount` units mount on first access; `x-systemd.automount`
//! in `/etc/fstab` does the same. Units kawal can mask; fstab lines need an operator.

use super::units::{self, UnitName};
use super::{Assessment, Control, Finding, FindingKind, Fix, PhysicalPolicy, Severity};
use crate::SysRoot;

/// Services that mount removable media.
pub const MOUNT_SERVICES: [&str; 2] = ["udisks2.service", "autofs.service"];

pub(super) fn assess(root: &SysRoot, policy: &PhysicalPolicy, a: &mut Assessment) {
    let links = units::enabled_links(root).unwrap_or_else(|e| {
        a.error(e);
        Vec::new()
    });
    let enabled = |unit: &str| links.iter().any(|(_, u)| u == unit);

    for service in MOUNT_SERVICES {
        let installed = units::installed(root, service);
        let masked = units::masked(root, service);
        if !installed && !enabled(service) {
            continue;
        }
        a.evidence(format!(
            "{service}: installed={installed}, enabled={}, masked={masked}",
            enabled(service)
        ));
        if masked || !policy.automount.forbids() {
            continue;
        }
        a.finding(Finding {
            control: Control::Ph11,
            kind: FindingKind::Automount,
            severity: if enabled(service) {
                Severity::Medium
            } else {
                Severity::Low
            },
            subject: service.to_owned(),
            detail: format!(
                "{service} is {} and can mount removable media (SD card, USB storage)",
                if enabled(service) {
                    "enabled"
                } else {
                    "installed (started on demand)"
                }
            ),
            fix: UnitName::parse(service)
                .ok()
                .map(|u| Fix::StopAndMask { units: vec![u] }),
            manual: None,
        });
    }

    for (dir, unit) in &links {
        if !unit.ends_with(".automount") || units::masked(root, unit) {
            continue;
        }
        a.evidence(format!("{unit} enabled in {dir}"));
        if policy.automount.forbids() {
            a.finding(Finding {
                control: Control::Ph11,
                kind: FindingKind::Automount,
                severity: Severity::Medium,
                subject: unit.clone(),
                detail: format!("{unit} mounts a file system on first access"),
                fix: UnitName::parse(unit)
                    .ok()
                    .map(|u| Fix::StopAndMask { units: vec![u] }),
                manual: None,
            });
        }
    }

    match super::read_optional(root, "/etc/fstab") {
        Ok(Some(text)) => {
            for (i, line) in text.lines().enumerate() {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if line.trim_start().starts_with('#') || fields.len() < 4 {
                    continue;
                }
                if !fields[3].split(',').any(|o| o == "x-systemd.automount") {
                    continue;
                }
                a.evidence(format!(
                    "/etc/fstab line {}: automount of {}",
                    i + 1,
                    fields[1]
                ));
                if policy.automount.forbids() {
                    a.finding(Finding {
                        control: Control::Ph11,
                        kind: FindingKind::Automount,
                        severity: Severity::Medium,
                        subject: super::printable(fields[1], 64),
                        detail: format!(
                            "/etc/fstab line {} mounts {} on first access",
                            i + 1,
                            super::printable(fields[0], 64)
                        ),
                        fix: None,
                        manual: Some(format!(
                            "remove x-systemd.automount from line {} of /etc/fstab",
                            i + 1
                        )),
                    });
                }
            }
        }
        Ok(None) => {}
        Err(e) => a.error(e),
    }

    a.manual(
        Control::Ph11,
        "SD card slot and other removable-media slots: state whether they are reachable from outside the enclosure and whether the boot ROM boots from them",
    );
}
