//! Serial lines (G045 PH-1-2, the UART): login prompts and the kernel console.
//!
//! A login can come from an enabled getty unit (`/etc/systemd/system/*.wants/
//! serial-getty@ttyS0.service`), from systemd's getty generator, which starts
//! `serial-getty@<tty>.service` on the kernel console named by `console=` on the kernel command
//! line, or from a getty line in `/etc/inittab`. Masking the unit stops the first two; the
//! inittab line and the `console=` argument need an operator (kawal does not edit the boot
//! loader or inittab).

use std::collections::BTreeMap;

use super::units::{self, UnitName};
use super::{Assessment, Control, Finding, FindingKind, Fix, PhysicalPolicy, Severity};
use crate::SysRoot;

/// Name prefixes of serial TTYs: 8250/16550, PL011, USB serial adapters, USB gadget serial,
/// USB CDC ACM, and common SoC UARTs (i.MX, OMAP, Zynq, Samsung, LPUART, Qualcomm, Tegra).
const SERIAL_PREFIXES: [&str; 13] = [
    "ttyS", "ttyAMA", "ttyUSB", "ttyGS", "ttyACM", "ttymxc", "ttyO", "ttyPS", "ttySAC", "ttyLP",
    "ttyMSM", "ttyHS", "ttyTHS",
];

/// Whether `name` (with or without `/dev/`) is a serial TTY: a known prefix and digits.
pub fn is_serial_tty(name: &str) -> bool {
    let name = name.strip_prefix("/dev/").unwrap_or(name);
    SERIAL_PREFIXES.iter().any(|prefix| {
        name.strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// The serial TTYs named by `console=` on a kernel command line, in order.
pub fn cmdline_consoles(cmdline: &str) -> Vec<String> {
    cmdline
        .split_whitespace()
        .filter_map(|arg| arg.strip_prefix("console="))
        .map(|v| v.split(',').next().unwrap_or(v))
        .filter(|tty| is_serial_tty(tty))
        .map(str::to_owned)
        .collect()
}

/// The getty unit on a serial TTY, `serial-getty@<tty>.service`.
pub fn getty_unit(tty: &str) -> Option<UnitName> {
    UnitName::parse(&format!("serial-getty@{tty}.service")).ok()
}

/// The TTY of an enabled getty unit name (`serial-getty@ttyS0.service`, `getty@ttyAMA0.service`).
fn getty_tty(unit: &str) -> Option<&str> {
    let instance = unit
        .strip_prefix("serial-getty@")
        .or_else(|| unit.strip_prefix("getty@"))?
        .strip_suffix(".service")?;
    is_serial_tty(instance).then_some(instance)
}

pub(super) fn assess(root: &SysRoot, policy: &PhysicalPolicy, a: &mut Assessment) {
    // Logins from enabled units, and the units that would start them.
    // (tty, unit) -> why it starts.
    let mut login_units: BTreeMap<(String, String), String> = BTreeMap::new();
    match units::enabled_links(root) {
        Ok(links) => {
            for (dir, unit) in links {
                if let Some(tty) = getty_tty(&unit) {
                    if units::masked(root, &unit) {
                        a.evidence(format!("{unit} enabled in {dir} but masked"));
                    } else {
                        a.evidence(format!("{unit} enabled in {dir}"));
                        login_units.insert(
                            (tty.to_owned(), unit.clone()),
                            format!("{unit} is enabled ({dir}) and starts a login prompt on {tty}"),
                        );
                    }
                }
            }
        }
        Err(e) => a.error(e),
    }

    // The kernel console, and the login the getty generator starts on it.
    let consoles = match super::read_optional(root, "/proc/cmdline") {
        Ok(Some(cmdline)) => cmdline_consoles(&cmdline),
        Ok(None) => Vec::new(),
        Err(e) => {
            a.error(e);
            Vec::new()
        }
    };
    for tty in &consoles {
        a.evidence(format!(
            "kernel console on {tty} (console= on /proc/cmdline)"
        ));
        if policy.serial_console.forbids() {
            a.finding(Finding {
                control: Control::Ph12,
                kind: FindingKind::SerialConsole,
                severity: Severity::Medium,
                subject: tty.clone(),
                detail: format!(
                    "the kernel console is on {tty}: boot messages and, where enabled, magic SysRq reach the serial line"
                ),
                fix: None,
                manual: Some(format!(
                    "remove console={tty} from the kernel command line in the boot loader configuration"
                )),
            });
        }
        let unit = format!("serial-getty@{tty}.service");
        if !units::masked(root, &unit) {
            let why = format!(
                "systemd's getty generator starts {unit}, a login prompt, on the kernel console {tty}"
            );
            login_units.entry((tty.clone(), unit)).or_insert(why);
        }
    }

    if policy.serial_login.forbids() {
        for ((tty, unit), why) in &login_units {
            let fix = UnitName::parse(unit)
                .ok()
                .map(|u| Fix::StopAndMask { units: vec![u] });
            a.finding(Finding {
                control: Control::Ph12,
                kind: FindingKind::SerialLogin,
                severity: Severity::High,
                subject: tty.clone(),
                detail: why.clone(),
                fix,
                manual: None,
            });
        }
    }

    // SysV/busybox init.
    match super::read_optional(root, "/etc/inittab") {
        Ok(Some(text)) => {
            for (n, tty, line) in inittab_gettys(&text) {
                a.evidence(format!("/etc/inittab line {n}: getty on {tty}"));
                if policy.serial_login.forbids() {
                    a.finding(Finding {
                        control: Control::Ph12,
                        kind: FindingKind::SerialLogin,
                        severity: Severity::High,
                        subject: tty.clone(),
                        detail: format!("/etc/inittab line {n} starts a login on {tty}: {line}"),
                        fix: None,
                        manual: Some(format!("remove or comment out line {n} of /etc/inittab")),
                    });
                }
            }
        }
        Ok(None) => {}
        Err(e) => a.error(e),
    }

    a.manual(
        Control::Ph12,
        "UART headers and test pads on the board: state whether they are populated, covered or disabled (photograph or board documentation)",
    );
}

/// Getty lines on serial TTYs in an inittab (`id:runlevels:action:process`; busybox uses the
/// TTY as the id): `(line number, tty, printable line)`. Lines whose action is `off` are
/// ignored.
fn inittab_gettys(text: &str) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = trimmed.splitn(4, ':').collect();
        let [id, _runlevels, action, process] = fields[..] else {
            continue;
        };
        if action == "off" || !process.contains("getty") {
            continue;
        }
        let tty = process
            .split_whitespace()
            .chain(std::iter::once(id))
            .find(|t| is_serial_tty(t));
        if let Some(tty) = tty {
            let tty = tty.strip_prefix("/dev/").unwrap_or(tty);
            out.push((i + 1, tty.to_owned(), super::printable(trimmed, 160)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// G045: PH-1-2
    #[test]
    fn recognises_serial_ttys_and_consoles() {
        for tty in ["ttyS0", "/dev/ttyAMA0", "ttyUSB1", "ttyGS0", "ttymxc2"] {
            assert!(is_serial_tty(tty), "{tty}");
        }
        for tty in ["tty1", "ttyS", "ttySx", "console", "pts/0"] {
            assert!(!is_serial_tty(tty), "{tty}");
        }
        assert_eq!(
            cmdline_consoles("root=/dev/mmcblk0p2 console=tty1 console=ttyS0,115200n8 quiet"),
            ["ttyS0"]
        );
    }

    /// G045: PH-1-2
    #[test]
    fn finds_getty_lines_in_inittab() {
        let text = "# comment\n::sysinit:/etc/init.d/rcS\nttyS0::respawn:/sbin/getty -L ttyS0 115200 vt100\nT1:23:off:/sbin/getty -L ttyS1 9600\ntty1::respawn:/sbin/getty 38400 tty1\nT2:23:respawn:/sbin/agetty -L 115200 /dev/ttyAMA0\n";
        let found: Vec<(usize, String)> = inittab_gettys(text)
            .into_iter()
            .map(|(n, t, _)| (n, t))
            .collect();
        assert_eq!(found, [(3, "ttyS0".to_owned()), (6, "ttyAMA0".to_owned())]);
    }
}
