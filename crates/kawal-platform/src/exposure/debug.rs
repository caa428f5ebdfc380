//! Debug interfaces (G045 PH-1-2): what software can see of them.
//!
//! debugfs (`/proc/mounts`) exposes kernel internals to root; systemd mounts it through
//! `sys-kernel-debug.mount`, which kawal can mask. JTAG and SWD controllers described in the
//! device tree (`/proc/device-tree` or `/sys/firmware/devicetree/base`) are enabled when their
//! `status` is `okay` or absent. Fuses, lock bits and jumpers are invisible to software: they
//! are always listed as manual evidence.

use super::units::UnitName;
use super::{Assessment, Control, Finding, FindingKind, Fix, PhysicalPolicy, Severity};
use crate::SysRoot;

/// Device-tree roots, in order of preference.
const DT_ROOTS: [&str; 2] = ["/proc/device-tree", "/sys/firmware/devicetree/base"];
/// Deepest device-tree level walked.
const DT_MAX_DEPTH: usize = 32;
/// Most device-tree nodes visited (a real tree has a few thousand).
const DT_MAX_NODES: usize = 100_000;
/// The unit systemd mounts debugfs with.
const DEBUGFS_UNIT: &str = "sys-kernel-debug.mount";

/// debugfs mount points from `/proc/mounts` text.
pub fn debugfs_mounts(mounts: &str) -> Vec<String> {
    mounts
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() >= 3 && f[2] == "debugfs").then(|| f[1].replace("\\040", " "))
        })
        .collect()
}

/// Enabled device-tree nodes whose name mentions JTAG or SWD, as paths below the tree root.
pub fn debug_nodes(root: &SysRoot, dt_root: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![(root.path(dt_root), String::new(), 0usize)];
    let mut visited = 0usize;
    while let Some((dir, rel, depth)) = stack.pop() {
        visited += 1;
        if visited > DT_MAX_NODES {
            break;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            // file_type() does not follow links: a link cannot lead the walk out of the tree.
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = format!("{rel}/{name}");
            let lower = name.to_ascii_lowercase();
            if lower.contains("jtag") || lower.contains("swd") {
                let status = std::fs::read(entry.path().join("status"))
                    .map(|b| {
                        String::from_utf8_lossy(&b)
                            .trim_matches(['\0', '\n', ' '])
                            .to_owned()
                    })
                    .ok();
                if matches!(status.as_deref(), None | Some("okay" | "ok")) {
                    found.push(super::printable(&path, 200));
                }
            }
            if depth < DT_MAX_DEPTH {
                stack.push((entry.path(), path, depth + 1));
            }
        }
    }
    found.sort();
    found
}

pub(super) fn assess(root: &SysRoot, policy: &PhysicalPolicy, a: &mut Assessment) {
    match super::read_optional(root, "/proc/mounts") {
        Ok(Some(text)) => {
            for mount in debugfs_mounts(&text) {
                a.evidence(format!("debugfs mounted on {mount}"));
                if !policy.debugfs.forbids() {
                    continue;
                }
                let systemd_mount = mount == "/sys/kernel/debug";
                a.finding(Finding {
                    control: Control::Ph12,
                    kind: FindingKind::Debugfs,
                    severity: Severity::Medium,
                    subject: super::printable(&mount, 64),
                    detail: format!(
                        "debugfs is mounted on {mount}: kernel internals exposed to root"
                    ),
                    fix: systemd_mount
                        .then(|| UnitName::parse(DEBUGFS_UNIT).ok())
                        .flatten()
                        .map(|u| Fix::StopAndMask { units: vec![u] }),
                    manual: (!systemd_mount)
                        .then(|| format!("unmount {mount} and remove it from /etc/fstab")),
                });
            }
        }
        Ok(None) => {}
        Err(e) => a.error(e),
    }

    match DT_ROOTS.iter().find(|r| root.path(r).is_dir()) {
        Some(dt_root) => {
            let nodes = debug_nodes(root, dt_root);
            a.evidence(format!("device tree at {dt_root}: {} enabled JTAG/SWD node(s)", nodes.len()));
            for node in nodes {
                if policy.debug_ports.forbids() {
                    a.finding(Finding {
                        control: Control::Ph12,
                        kind: FindingKind::DebugPort,
                        severity: Severity::High,
                        subject: node.clone(),
                        detail: format!("device-tree node {dt_root}{node} is enabled"),
                        fix: None,
                        manual: Some("set its status to \"disabled\" in the device tree and lock the debug port by fuse".to_owned()),
                    });
                }
            }
        }
        None => a.manual(
            Control::Ph12,
            "no device tree is visible: show the JTAG/SWD state from the board and SoC documentation",
        ),
    }
    a.manual(
        Control::Ph12,
        "JTAG/SWD lock fuses, secure-debug keys and debug jumpers: show their programmed state (programming-tool read-out or factory record)",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_debugfs_in_proc_mounts() {
        let m = "proc /proc proc rw 0 0\ndebugfs /sys/kernel/debug debugfs rw,relatime 0 0\n";
        assert_eq!(debugfs_mounts(m), ["/sys/kernel/debug"]);
        assert!(debugfs_mounts("sysfs /sys sysfs rw 0 0\n").is_empty());
    }
}
