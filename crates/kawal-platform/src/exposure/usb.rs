//! USB (G045 PH-1-1): device authorisation, mass storage and gadget mode.
//!
//! - `/sys/bus/usb/devices/usbN/authorized_default`: 1 (or -1, the kernel default) authorises
//!   every new device automatically; 0 authorises none; 2 only internal (hard-wired) ones.
//! - `/sys/bus/usb/devices/B-P[.P...]`: attached devices, with `idVendor`, `idProduct`,
//!   `authorized` and `product`.
//! - `/proc/modules`: whether mass storage (`usb_storage`, `uas`) or gadget modules are loaded;
//!   `/etc/modprobe.d/*.conf` (and the other modprobe directories): whether they are blocked.
//!   Mass storage loads by itself when a stick is plugged in, so being unblocked is a finding
//!   too; gadget modules are only loaded on purpose.

use std::collections::BTreeMap;

use super::{
    Assessment, Control, Error, Finding, FindingKind, Fix, PhysicalPolicy, Result, Severity, UsbId,
};
use crate::SysRoot;

/// Where USB devices and buses appear.
pub const USB_DEVICES: &str = "/sys/bus/usb/devices";
/// The blacklist kawal writes on enforce.
pub const BLACKLIST: &str = "/etc/modprobe.d/kawal.conf";
/// Directories modprobe reads configuration from.
const MODPROBE_DIRS: [&str; 4] = [
    "/etc/modprobe.d",
    "/run/modprobe.d",
    "/usr/lib/modprobe.d",
    "/lib/modprobe.d",
];

/// Mass-storage modules.
pub const STORAGE_MODULES: [&str; 2] = ["usb_storage", "uas"];
/// Gadget modules (legacy gadgets and the configfs framework). `usb_f_*` functions depend on
/// `libcomposite`, so blocking it blocks them too.
pub const GADGET_MODULES: [&str; 11] = [
    "libcomposite",
    "g_serial",
    "g_ether",
    "g_mass_storage",
    "g_multi",
    "g_cdc",
    "g_acm_ms",
    "g_hid",
    "g_ffs",
    "g_zero",
    "g_webcam",
];

/// Whether a module name is a gadget module.
pub fn is_gadget_module(name: &str) -> bool {
    GADGET_MODULES.contains(&name) || name.starts_with("usb_f_")
}

/// A USB bus (root hub) and its authorisation default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bus {
    /// `usb1`, ...
    pub name: String,
    /// `authorized_default`, if readable.
    pub authorized_default: Option<i32>,
}

/// An attached USB device (not a root hub).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The sysfs name, `1-1.2`.
    pub name: String,
    /// `idVendor:idProduct`, if readable.
    pub id: Option<UsbId>,
    /// `authorized`.
    pub authorized: bool,
    /// `product`, made printable.
    pub product: String,
}

/// Root hubs are `usbN`.
fn is_bus(name: &str) -> bool {
    name.strip_prefix("usb")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Devices are `B-P[.P...]`; interfaces (`1-1:1.0`) are not devices.
fn is_device(name: &str) -> bool {
    let Some((bus, ports)) = name.split_once('-') else {
        return false;
    };
    !bus.is_empty()
        && bus.bytes().all(|b| b.is_ascii_digit())
        && !ports.is_empty()
        && ports.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

fn read_attr(root: &SysRoot, dev: &str, attr: &str) -> Result<Option<String>> {
    Ok(
        super::read_optional(root, &format!("{USB_DEVICES}/{dev}/{attr}"))?
            .map(|s| s.trim().to_owned()),
    )
}

/// The buses and attached devices.
pub fn read_usb(root: &SysRoot) -> Result<(Vec<Bus>, Vec<Device>)> {
    let mut buses = Vec::new();
    let mut devices = Vec::new();
    for name in super::list_dir(root, USB_DEVICES)? {
        if is_bus(&name) {
            let authorized_default =
                read_attr(root, &name, "authorized_default")?.and_then(|v| v.parse().ok());
            buses.push(Bus {
                name,
                authorized_default,
            });
        } else if is_device(&name) {
            let vendor = read_attr(root, &name, "idVendor")?;
            let product_id = read_attr(root, &name, "idProduct")?;
            let id = match (vendor, product_id) {
                (Some(v), Some(p)) => UsbId::parse(&format!("{v}:{p}")).ok(),
                _ => None,
            };
            let authorized = read_attr(root, &name, "authorized")?.as_deref() != Some("0");
            let product = read_attr(root, &name, "product")?
                .map(|p| super::printable(&p, 64))
                .unwrap_or_default();
            devices.push(Device {
                name,
                id,
                authorized,
                product,
            });
        }
    }
    Ok((buses, devices))
}

/// Loaded module names from `/proc/modules` (`name size refcount deps state address`).
pub fn parse_modules(text: &str) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let valid = fields.len() >= 3
            && fields[0]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            && !fields[0].is_empty()
            && fields[1].bytes().all(|b| b.is_ascii_digit());
        if !valid {
            return Err(Error::Malformed {
                file: "/proc/modules".to_owned(),
                line: i + 1,
                reason: "expected `name size refcount ...`",
            });
        }
        names.push(fields[0].replace('-', "_"));
    }
    Ok(names)
}

/// How modprobe configuration treats a module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Block {
    /// `blacklist NAME`: not loaded by alias (plugging a device in), still by name.
    Blacklisted,
    /// `install NAME /bin/false` (or `true`): never loaded.
    InstallDisabled,
}

/// Blocked modules from modprobe configuration text, with how.
pub fn parse_modprobe(text: &str) -> Vec<(String, Block)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("blacklist"), Some(name), _) => {
                out.push((name.replace('-', "_"), Block::Blacklisted));
            }
            (
                Some("install"),
                Some(name),
                Some("/bin/false" | "/bin/true" | "/usr/bin/false" | "/usr/bin/true"),
            ) => {
                out.push((name.replace('-', "_"), Block::InstallDisabled));
            }
            _ => {}
        }
    }
    out
}

/// Every block in the modprobe directories: module → strongest block.
pub fn read_blocks(root: &SysRoot) -> Result<BTreeMap<String, Block>> {
    let mut blocks: BTreeMap<String, Block> = BTreeMap::new();
    for dir in MODPROBE_DIRS {
        for file in super::list_dir(root, dir)? {
            if !file.ends_with(".conf") {
                continue;
            }
            if let Some(text) = super::read_optional(root, &format!("{dir}/{file}"))? {
                for (name, block) in parse_modprobe(&text) {
                    let entry = blocks.entry(name).or_insert(block);
                    *entry = (*entry).max(block);
                }
            }
        }
    }
    Ok(blocks)
}

/// The content of [`BLACKLIST`] for a policy: every module of each forbidden class is both
/// blacklisted and given a failing install command.
pub fn blacklist_content(policy: &PhysicalPolicy) -> String {
    let mut text = String::from(
        "# Written by kawal (G045 PH-1-1): USB modules the exposure policy forbids.\n\
         # Rewritten on every enforce; edit kawal's policy instead.\n",
    );
    let mut classes: Vec<&[&str]> = Vec::new();
    if policy.usb_storage.forbids() {
        classes.push(&STORAGE_MODULES);
    }
    if policy.usb_gadget.forbids() {
        classes.push(&GADGET_MODULES);
    }
    for module in classes.into_iter().flatten() {
        text.push_str(&format!(
            "blacklist {module}\ninstall {module} /bin/false\n"
        ));
    }
    text
}

pub(super) fn assess(root: &SysRoot, policy: &PhysicalPolicy, a: &mut Assessment) {
    match read_usb(root) {
        Ok((buses, devices)) => assess_authorisation(policy, &buses, &devices, a),
        Err(e) => a.error(e),
    }
    let loaded = match super::read_optional(root, "/proc/modules") {
        Ok(Some(text)) => match parse_modules(&text) {
            Ok(names) => names,
            Err(e) => {
                a.error(e);
                Vec::new()
            }
        },
        Ok(None) => {
            a.evidence("/proc/modules absent: no loadable modules");
            Vec::new()
        }
        Err(e) => {
            a.error(e);
            Vec::new()
        }
    };
    let blocks = read_blocks(root).unwrap_or_else(|e| {
        a.error(e);
        BTreeMap::new()
    });
    assess_storage(policy, &loaded, &blocks, a);
    assess_gadget(root, policy, &loaded, a);
}

fn assess_authorisation(
    policy: &PhysicalPolicy,
    buses: &[Bus],
    devices: &[Device],
    a: &mut Assessment,
) {
    for bus in buses {
        let value = bus.authorized_default;
        a.evidence(format!(
            "{USB_DEVICES}/{}/authorized_default = {}",
            bus.name,
            value.map_or("unreadable".to_owned(), |v| v.to_string())
        ));
        let auto = !matches!(value, Some(0 | 2));
        if auto && policy.usb_auto_authorise.forbids() {
            a.finding(Finding {
                control: Control::Ph11,
                kind: FindingKind::UsbAutoAuthorise,
                severity: Severity::Medium,
                subject: bus.name.clone(),
                detail: format!(
                    "authorized_default is {}: any device plugged into this bus is authorised",
                    value.map_or("unreadable".to_owned(), |v| v.to_string())
                ),
                fix: Some(Fix::UsbAuthorisation),
                manual: None,
            });
        }
    }
    for dev in devices {
        let id = dev.id.map_or("unknown".to_owned(), |id| id.to_string());
        a.evidence(format!(
            "USB device {} {id} \"{}\" authorized={}",
            dev.name,
            dev.product,
            u8::from(dev.authorized)
        ));
        let listed = dev
            .id
            .is_some_and(|id| policy.allowed_usb_devices.contains(&id));
        if dev.authorized && !listed {
            a.finding(Finding {
                control: Control::Ph11,
                kind: FindingKind::UsbDeviceNotListed,
                severity: Severity::Medium,
                subject: dev.name.clone(),
                detail: format!(
                    "authorised USB device {id} \"{}\" is not in allowed-usb-devices",
                    dev.product
                ),
                fix: Some(Fix::UsbAuthorisation),
                manual: None,
            });
        }
    }
}

fn assess_storage(
    policy: &PhysicalPolicy,
    loaded: &[String],
    blocks: &BTreeMap<String, Block>,
    a: &mut Assessment,
) {
    for module in STORAGE_MODULES {
        let is_loaded = loaded.iter().any(|m| m == module);
        let block = blocks.get(module).copied();
        a.evidence(format!(
            "module {module}: loaded={is_loaded}, blocked={block:?}"
        ));
        if !policy.usb_storage.forbids() {
            continue;
        }
        if is_loaded {
            a.finding(Finding {
                control: Control::Ph11,
                kind: FindingKind::UsbStorage,
                severity: Severity::Medium,
                subject: module.to_owned(),
                detail: format!("USB mass-storage module {module} is loaded"),
                fix: Some(Fix::BlockModules),
                manual: Some(format!(
                    "unload it (modprobe -r {module}) or reboot after the blacklist is written"
                )),
            });
        } else if block != Some(Block::InstallDisabled) {
            a.finding(Finding {
                control: Control::Ph11,
                kind: FindingKind::UsbStorage,
                severity: Severity::Low,
                subject: module.to_owned(),
                detail: format!(
                    "{module} is not loaded, but not blocked either ({}): it can be loaded when a device is plugged in or by name",
                    if block.is_some() { "blacklisted only" } else { "no modprobe rule" }
                ),
                fix: Some(Fix::BlockModules),
                manual: None,
            });
        }
    }
}

fn assess_gadget(root: &SysRoot, policy: &PhysicalPolicy, loaded: &[String], a: &mut Assessment) {
    let gadgets: Vec<&String> = loaded.iter().filter(|m| is_gadget_module(m)).collect();
    let configured = super::list_dir(root, "/sys/kernel/config/usb_gadget").unwrap_or_else(|e| {
        a.error(e);
        Vec::new()
    });
    for g in &configured {
        a.evidence(format!(
            "USB gadget configured: /sys/kernel/config/usb_gadget/{g}"
        ));
    }
    if !policy.usb_gadget.forbids() || (gadgets.is_empty() && configured.is_empty()) {
        return;
    }
    let names: Vec<&str> = gadgets.iter().map(|s| s.as_str()).collect();
    a.finding(Finding {
        control: Control::Ph11,
        kind: FindingKind::UsbGadget,
        severity: Severity::Medium,
        subject: if names.is_empty() {
            "configfs".to_owned()
        } else {
            names.join(",")
        },
        detail: format!(
            "the device can act as a USB gadget: modules loaded [{}], configfs gadgets [{}]",
            names.join(", "),
            configured.join(", ")
        ),
        fix: Some(Fix::BlockModules),
        manual: Some(
            "remove the gadget configuration and reboot after the blacklist is written".to_owned(),
        ),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysfs_names_tell_buses_devices_and_interfaces_apart() {
        assert!(is_bus("usb1") && !is_bus("usb") && !is_bus("1-1"));
        assert!(is_device("1-1") && is_device("3-1.4.2"));
        assert!(!is_device("1-1:1.0") && !is_device("usb1") && !is_device("-1"));
    }

    /// G045: PH-1-1
    #[test]
    fn modules_and_modprobe_rules_parse() {
        let m = "usb_storage 81920 0 - Live 0x0000000000000000\nuas 32768 0 - Live 0x0\n";
        assert_eq!(parse_modules(m).unwrap(), ["usb_storage", "uas"]);
        let err = parse_modules("usb_storage 81920 0\nbad\n").unwrap_err();
        assert!(err.to_string().contains("/proc/modules line 2"), "{err}");
        let rules = parse_modprobe(
            "# x\nblacklist usb-storage\ninstall uas /bin/false\ninstall x /sbin/modprobe y\n",
        );
        assert_eq!(
            rules,
            [
                ("usb_storage".to_owned(), Block::Blacklisted),
                ("uas".to_owned(), Block::InstallDisabled)
            ]
        );
    }
}
