//! Network interfaces (G045 PH-1-1, the LAN): every interface that is up must be named by the
//! policy. Loopback is never an external interface and is not judged. Interfaces backed by a
//! device (`/sys/class/net/X/device` exists) are rated medium, virtual ones low.

use serde::{Deserialize, Serialize};

use super::{Assessment, Control, Error, Finding, FindingKind, PhysicalPolicy, Result, Severity};
use crate::SysRoot;

/// Where interfaces appear.
pub const NET_CLASS: &str = "/sys/class/net";
/// `IFF_UP`: administratively up.
const IFF_UP: u32 = 0x1;
/// `IFF_LOOPBACK`.
const IFF_LOOPBACK: u32 = 0x8;

/// One network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Interface {
    /// The name.
    pub name: String,
    /// `operstate` (`up`, `down`, `unknown`, ...).
    pub operstate: String,
    /// `flags`.
    pub flags: u32,
    /// Whether a device backs it (not virtual).
    pub physical: bool,
}

impl Interface {
    /// Administratively up.
    pub fn up(&self) -> bool {
        self.flags & IFF_UP != 0
    }

    /// A loopback interface.
    pub fn loopback(&self) -> bool {
        self.flags & IFF_LOOPBACK != 0
    }
}

/// Parses a `flags` file: `0x` and hex digits.
fn parse_flags(text: &str) -> Option<u32> {
    let hex = text.trim().strip_prefix("0x")?;
    (!hex.is_empty() && hex.len() <= 8 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u32::from_str_radix(hex, 16).ok())
        .flatten()
}

/// Every interface under `root`.
pub fn read_interfaces(root: &SysRoot) -> Result<Vec<Interface>> {
    let mut out = Vec::new();
    for name in super::list_dir(root, NET_CLASS)? {
        let base = format!("{NET_CLASS}/{name}");
        let Some(flags_text) = super::read_optional(root, &format!("{base}/flags"))? else {
            continue; // not an interface directory (e.g. bonding_masters)
        };
        let flags = parse_flags(&flags_text).ok_or_else(|| Error::Malformed {
            file: format!("{base}/flags"),
            line: 1,
            reason: "expected 0x and hex digits",
        })?;
        let operstate = super::read_optional(root, &format!("{base}/operstate"))?
            .map(|s| super::printable(s.trim(), 16))
            .unwrap_or_else(|| "unknown".to_owned());
        out.push(Interface {
            physical: std::fs::symlink_metadata(root.path(&format!("{base}/device"))).is_ok(),
            name: super::printable(&name, 32),
            operstate,
            flags,
        });
    }
    Ok(out)
}

pub(super) fn assess(root: &SysRoot, policy: &PhysicalPolicy, a: &mut Assessment) {
    let interfaces = match read_interfaces(root) {
        Ok(i) => i,
        Err(e) => {
            a.error(e);
            return;
        }
    };
    for i in interfaces {
        a.evidence(format!(
            "interface {}: operstate={}, flags=0x{:x}, {}",
            i.name,
            i.operstate,
            i.flags,
            if i.physical { "device" } else { "virtual" }
        ));
        let allowed = policy
            .allowed_interfaces
            .iter()
            .any(|n| n.as_str() == i.name);
        if i.loopback() || !i.up() || allowed {
            continue;
        }
        a.finding(Finding {
            control: Control::Ph11,
            kind: FindingKind::NetworkInterface,
            severity: if i.physical { Severity::Medium } else { Severity::Low },
            subject: i.name.clone(),
            detail: format!(
                "{} interface {} is up (operstate {}) and not in allowed-interfaces",
                if i.physical { "device" } else { "virtual" },
                i.name,
                i.operstate
            ),
            fix: None,
            manual: Some(format!(
                "take {} down and out of the network configuration, or name it in allowed-interfaces",
                i.name
            )),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_strictly() {
        assert_eq!(parse_flags("0x1003\n"), Some(0x1003));
        for bad in ["1003", "0x", "0x+1", "0x123456789", "0xzz"] {
            assert_eq!(parse_flags(bad), None, "{bad}");
        }
    }
}
