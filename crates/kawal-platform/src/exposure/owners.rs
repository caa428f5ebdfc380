//! Which processes hold a socket: `/proc/<pid>/fd/*` links of the form `socket:[INODE]`, with
//! the process's `comm`, `cmdline` and systemd unit (from `/proc/<pid>/cgroup`).
//!
//! Processes whose descriptors cannot be read (another user's, without privilege) are counted,
//! not fatal: a socket found in no readable process has an [`Owner::Unknown`] owner.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::units::UnitName;
use crate::SysRoot;

/// Longest `cmdline` kept, in characters.
const CMDLINE_MAX: usize = 256;

/// A process holding a socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Process {
    /// The process ID.
    pub pid: u32,
    /// `/proc/<pid>/comm`, made printable (`?` if unreadable).
    pub comm: String,
    /// `/proc/<pid>/cmdline` with NULs as spaces, made printable and cut to 256 characters.
    pub cmdline: String,
    /// The system unit it runs in, from `/proc/<pid>/cgroup` (`.../system.slice/NAME.service`).
    pub unit: Option<UnitName>,
}

/// Who holds a socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "owner")]
pub enum Owner {
    /// These processes hold it (more than one after `fork`).
    Known {
        /// The processes, by PID.
        processes: Vec<Process>,
    },
    /// No readable process holds it.
    Unknown {
        /// Why it could not be told.
        reason: String,
    },
}

impl Owner {
    /// The processes, if known.
    pub fn processes(&self) -> &[Process] {
        match self {
            Self::Known { processes } => processes,
            Self::Unknown { .. } => &[],
        }
    }

    /// The distinct units of the processes, sorted.
    pub fn units(&self) -> Vec<UnitName> {
        let set: BTreeSet<UnitName> = self
            .processes()
            .iter()
            .filter_map(|p| p.unit.clone())
            .collect();
        set.into_iter().collect()
    }
}

/// The result of one scan of `/proc`.
#[derive(Debug, Default)]
pub struct Scan {
    by_inode: BTreeMap<u64, Vec<Process>>,
    /// PIDs whose descriptors could not be read.
    pub unreadable: Vec<u32>,
}

impl Scan {
    /// Who holds the socket with `inode`.
    pub fn owner(&self, inode: u64) -> Owner {
        match self.by_inode.get(&inode) {
            Some(processes) => Owner::Known {
                processes: processes.clone(),
            },
            None if !self.unreadable.is_empty() => Owner::Unknown {
                reason: format!(
                    "owner unknown: the descriptors of {} process(es) could not be read",
                    self.unreadable.len()
                ),
            },
            None => Owner::Unknown {
                reason: "owner unknown: no process in this PID namespace holds it".to_owned(),
            },
        }
    }
}

/// Scans `/proc/<pid>/fd` for the sockets in `inodes`. Fails only if `/proc` itself cannot be
/// listed.
pub fn scan(root: &SysRoot, inodes: &BTreeSet<u64>) -> super::Result<Scan> {
    let mut result = Scan::default();
    for name in super::list_dir(root, "/proc")? {
        let Ok(pid) = name.parse::<u32>() else {
            continue;
        };
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let fd_dir = root.path(&format!("/proc/{pid}/fd"));
        let entries = match std::fs::read_dir(&fd_dir) {
            Ok(entries) => entries,
            // The process exited between the two reads.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(_) => {
                result.unreadable.push(pid);
                continue;
            }
        };
        let mut held = BTreeSet::new();
        let mut unreadable = false;
        for entry in entries {
            let Ok(entry) = entry else {
                unreadable = true;
                continue;
            };
            match std::fs::read_link(entry.path()) {
                Ok(target) => {
                    if let Some(inode) = socket_inode(&target.to_string_lossy())
                        && inodes.contains(&inode)
                    {
                        held.insert(inode);
                    }
                }
                // The descriptor was closed meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(_) => unreadable = true,
            }
        }
        if unreadable {
            result.unreadable.push(pid);
        }
        if held.is_empty() {
            continue;
        }
        let process = describe(root, pid);
        for inode in held {
            result
                .by_inode
                .entry(inode)
                .or_default()
                .push(process.clone());
        }
    }
    Ok(result)
}

/// `socket:[12345]` → 12345.
fn socket_inode(link: &str) -> Option<u64> {
    let digits = link.strip_prefix("socket:[")?.strip_suffix(']')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn describe(root: &SysRoot, pid: u32) -> Process {
    let read = |what: &str| std::fs::read(root.path(&format!("/proc/{pid}/{what}"))).ok();
    let comm = read("comm")
        .map(|b| super::printable(String::from_utf8_lossy(&b).trim_end_matches('\n'), 64))
        .unwrap_or_else(|| "?".to_owned());
    let cmdline = read("cmdline")
        .map(|b| {
            let text = String::from_utf8_lossy(&b).replace('\0', " ");
            super::printable(text.trim_end(), CMDLINE_MAX)
        })
        .unwrap_or_default();
    let unit = read("cgroup").and_then(|b| unit_from_cgroup(&String::from_utf8_lossy(&b)));
    Process {
        pid,
        comm,
        cmdline,
        unit,
    }
}

/// The system service a process runs in, from `/proc/<pid>/cgroup`: the first `*.service`
/// component below `/system.slice/` on the unified (`0::`) or `name=systemd` hierarchy. The
/// outermost service is the one systemd on this host manages (an inner one belongs to a
/// container). User services (`/user.slice/...`) are not system units and give `None`.
pub fn unit_from_cgroup(text: &str) -> Option<UnitName> {
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if !(controllers.is_empty() || controllers == "name=systemd") {
            return None;
        }
        let rest = path.strip_prefix("/system.slice/")?;
        rest.split('/')
            .find(|c| c.ends_with(".service"))
            .and_then(|c| UnitName::parse(c).ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_links_parse_strictly() {
        assert_eq!(socket_inode("socket:[4242]"), Some(4242));
        for bad in [
            "socket:[]",
            "socket:[+1]",
            "pipe:[5]",
            "/dev/null",
            "socket:[1",
        ] {
            assert_eq!(socket_inode(bad), None, "{bad}");
        }
    }

    /// G045: PL-3-1
    #[test]
    fn units_come_from_the_system_slice_only() {
        let v2 = "0::/system.slice/inetutils-telnetd.service\n";
        assert_eq!(
            unit_from_cgroup(v2).unwrap().as_str(),
            "inetutils-telnetd.service"
        );
        let nested = "0::/system.slice/system-serial\\x2dgetty.slice/serial-getty@ttyS0.service\n";
        assert_eq!(
            unit_from_cgroup(nested).unwrap().as_str(),
            "serial-getty@ttyS0.service"
        );
        let v1 = "12:cpu,cpuacct:/\n1:name=systemd:/system.slice/snmpd.service\n";
        assert_eq!(unit_from_cgroup(v1).unwrap().as_str(), "snmpd.service");
        assert_eq!(
            unit_from_cgroup(
                "0::/user.slice/user-1000.slice/user@1000.service/app.slice/x.service\n"
            ),
            None
        );
        assert_eq!(unit_from_cgroup("0::/init.scope\n"), None);
        assert_eq!(unit_from_cgroup("0::/system.slice/..service\n"), None);
        assert_eq!(unit_from_cgroup("garbage"), None);
    }
}
