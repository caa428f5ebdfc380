//! How confined the daemon runs (evidence for G045 PL-3-1): its user, capabilities,
//! `no_new_privs`, seccomp filter and systemd unit, read from `/proc/self` at start and kept
//! in the store, so that `kawal audit` (another process) reports the daemon's own state.
//! The shipped unit (`packaging/systemd/kawal.service`) gives all of it; a daemon started
//! by hand as root has none, and the report says so.

use serde::{Deserialize, Serialize};

/// The daemon's confinement as read from `/proc/self/status` and `/proc/self/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confinement {
    /// Real, effective, saved and filesystem user IDs.
    pub uids: Vec<u32>,
    /// Whether `no_new_privs` is set (no privilege gain through exec).
    pub no_new_privs: bool,
    /// Effective, permitted, bounding and ambient capability sets (hex masks).
    pub cap_eff: u64,
    /// Permitted capabilities.
    pub cap_prm: u64,
    /// Bounding set.
    pub cap_bnd: u64,
    /// Ambient capabilities.
    pub cap_amb: u64,
    /// Seccomp mode: 0 none, 1 strict, 2 filter.
    pub seccomp: u8,
    /// The systemd unit the process runs in, if any.
    pub unit: Option<String>,
}

impl Confinement {
    /// Reads the running process's confinement.
    ///
    /// # Errors
    /// What could not be read or parsed.
    pub fn of_self() -> Result<Self, String> {
        let status = std::fs::read_to_string("/proc/self/status")
            .map_err(|e| format!("/proc/self/status: {e}"))?;
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        Self::parse(&status, &cgroup)
    }

    /// Parses the text of `/proc/<pid>/status` and `/proc/<pid>/cgroup`.
    ///
    /// # Errors
    /// A missing or malformed field.
    pub fn parse(status: &str, cgroup: &str) -> Result<Self, String> {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
                .ok_or_else(|| format!("/proc/self/status has no {name}"))
        };
        let hex = |name: &str| {
            let v = field(name)?;
            u64::from_str_radix(v, 16).map_err(|_| format!("{name}: not a hex mask"))
        };
        let uids = field("Uid")?
            .split_whitespace()
            .map(|u| u.parse::<u32>().map_err(|_| "Uid: not a number".to_owned()))
            .collect::<Result<Vec<_>, _>>()?;
        if uids.len() != 4 {
            return Err("Uid: not four IDs".into());
        }
        Ok(Self {
            uids,
            no_new_privs: field("NoNewPrivs")? == "1",
            cap_eff: hex("CapEff")?,
            cap_prm: hex("CapPrm")?,
            cap_bnd: hex("CapBnd")?,
            cap_amb: hex("CapAmb")?,
            seccomp: field("Seccomp")?
                .parse()
                .map_err(|_| "Seccomp: not a number".to_owned())?,
            unit: unit_of(cgroup),
        })
    }

    /// Whether it runs as the shipped unit confines it: not root, no capabilities,
    /// `no_new_privs`, a seccomp filter.
    pub fn confined(&self) -> bool {
        self.problems().is_empty()
    }

    /// What falls short of that, one phrase each.
    pub fn problems(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.uids.contains(&0) {
            out.push("runs as root");
        }
        if self.cap_eff != 0 || self.cap_prm != 0 || self.cap_amb != 0 {
            out.push("holds capabilities");
        }
        if !self.no_new_privs {
            out.push("no_new_privs not set");
        }
        if self.seccomp != 2 {
            out.push("no seccomp filter");
        }
        out
    }

    /// One line for the report.
    pub fn summary(&self) -> String {
        format!(
            "uid {}, capabilities effective {:#x} bounding {:#x}, no_new_privs {}, seccomp {}, unit {}",
            self.uids.first().copied().unwrap_or(0),
            self.cap_eff,
            self.cap_bnd,
            if self.no_new_privs { "set" } else { "not set" },
            match self.seccomp {
                2 => "filter",
                1 => "strict",
                _ => "none",
            },
            self.unit.as_deref().unwrap_or("none")
        )
    }
}

/// The systemd unit named in a cgroup file (`0::/system.slice/kawal.service`).
fn unit_of(cgroup: &str) -> Option<String> {
    cgroup.lines().find_map(|l| {
        let path = l.rsplit(':').next()?;
        path.split('/')
            .rev()
            .find(|c| c.ends_with(".service"))
            .map(str::to_owned)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFINED: &str = "Name:\tkawal\nUid:\t998\t998\t998\t998\nGid:\t998\t998\t998\t998\n\
        CapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n\
        CapBnd:\t0000000000000000\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\n";

    /// G045: PL-3-1
    #[test]
    fn the_shipped_unit_s_confinement_is_recognised() {
        let c = Confinement::parse(CONFINED, "0::/system.slice/kawal.service\n").unwrap();
        assert!(c.confined(), "{:?}", c.problems());
        assert_eq!(c.unit.as_deref(), Some("kawal.service"));
        assert!(c.summary().contains("uid 998"));
    }

    /// G045: PL-3-1
    #[test]
    fn root_with_capabilities_is_not_confined() {
        let status = CONFINED
            .replace("998\t998\t998\t998", "0\t0\t0\t0")
            .replace("CapEff:\t0000000000000000", "CapEff:\t000001ffffffffff")
            .replace("NoNewPrivs:\t1", "NoNewPrivs:\t0")
            .replace("Seccomp:\t2", "Seccomp:\t0");
        let c = Confinement::parse(&status, "").unwrap();
        assert_eq!(
            c.problems(),
            [
                "runs as root",
                "holds capabilities",
                "no_new_privs not set",
                "no seccomp filter"
            ]
        );
        assert_eq!(c.unit, None);
    }

    #[test]
    fn malformed_status_is_an_error_not_a_panic() {
        assert!(Confinement::parse("", "").is_err());
        assert!(Confinement::parse(&CONFINED.replace("CapEff:\t0000", "CapEff:\tzz"), "").is_err());
        assert!(Confinement::parse(&CONFINED.replace("\t998\t998\t998\t998", "\t1"), "").is_err());
        // The host's own file parses.
        assert!(Confinement::of_self().is_ok());
    }
}
