//! systemd unit names and the one way kawal stops units: [`UnitControl`].
//!
//! Unit names come from `/proc/<pid>/cgroup` and from directory listings, which other
//! processes can influence; they become part of a path (`/etc/systemd/system/NAME`) and an
//! argument to `systemctl`. [`UnitName`] therefore admits only systemd's own character set,
//! no leading `-` or `.`, and a known suffix, so it can neither leave the directory nor be
//! read as an option.

use std::fmt;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use super::{Error, Result};
use crate::SysRoot;

/// Unit types kawal may mask or stop.
const SUFFIXES: [&str; 4] = [".service", ".socket", ".mount", ".automount"];

/// A validated systemd unit name: 1..=255 characters of `[A-Za-z0-9:_.\\@-]`, not starting
/// with `-` or `.`, ending in `.service`, `.socket`, `.mount` or `.automount`.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct UnitName(String);

impl UnitName {
    /// Validates `s` as a unit name.
    pub fn parse(s: &str) -> Result<Self> {
        let reason = if s.is_empty() || s.len() > 255 {
            Some("must be 1 to 255 characters")
        } else if s.starts_with(['-', '.']) {
            Some("must not start with '-' or '.'")
        } else if !s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'.' | b'\\' | b'@' | b'-')
        }) {
            Some("characters outside [A-Za-z0-9:_.\\@-]")
        } else if !SUFFIXES
            .iter()
            .any(|suffix| s.len() > suffix.len() && s.ends_with(suffix))
        {
            Some("must end in .service, .socket, .mount or .automount")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidPolicy {
                what: "unit name",
                value: s.to_owned(),
                reason,
            }),
            None => Ok(Self(s.to_owned())),
        }
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UnitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for UnitName {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::parse(&s)
    }
}

impl From<UnitName> for String {
    fn from(u: UnitName) -> Self {
        u.0
    }
}

/// Where local unit configuration lives: masks and enablement links.
pub(super) const UNIT_DIR: &str = "/etc/systemd/system";
/// Directories systemd loads unit files from, most local first.
const UNIT_PATHS: [&str; 4] = [
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// Whether `unit` (or, for an instance `a@b.service`, its template `a@.service`) is masked:
/// a link to `/dev/null` in `/etc/systemd/system` or `/run/systemd/system`.
pub(super) fn masked(root: &SysRoot, unit: &str) -> bool {
    let template = unit
        .split_once('@')
        .and_then(|(prefix, rest)| Some(format!("{prefix}@.{}", rest.rsplit_once('.')?.1)));
    [Some(unit.to_owned()), template]
        .into_iter()
        .flatten()
        .any(|name| {
            ["/etc/systemd/system", "/run/systemd/system"]
                .iter()
                .any(|dir| {
                    std::fs::read_link(root.path(&format!("{dir}/{name}")))
                        .is_ok_and(|target| target == Path::new("/dev/null"))
                })
        })
}

/// Whether a unit file for `unit` exists in any unit directory (a mask counts as none).
pub(super) fn installed(root: &SysRoot, unit: &str) -> bool {
    // symlink_metadata: a link is judged by where it points, never followed outside the root.
    UNIT_PATHS.iter().any(|dir| {
        let path = root.path(&format!("{dir}/{unit}"));
        std::fs::symlink_metadata(&path).is_ok()
            && std::fs::read_link(&path).map_or(true, |t| t != Path::new("/dev/null"))
    })
}

/// Every enablement link: `(wants directory, unit)` for each entry of
/// `/etc/systemd/system/*.wants/` and `*.requires/`.
pub(super) fn enabled_links(root: &SysRoot) -> Result<Vec<(String, String)>> {
    let mut links = Vec::new();
    for dir in super::list_dir(root, UNIT_DIR)? {
        if !(dir.ends_with(".wants") || dir.ends_with(".requires")) {
            continue;
        }
        for unit in super::list_dir(root, &format!("{UNIT_DIR}/{dir}"))? {
            links.push((dir.clone(), unit));
        }
    }
    Ok(links)
}

/// Stops units and makes systemd re-read unit files. Masking is a file operation under the
/// root and does not go through this trait.
pub trait UnitControl {
    /// Makes systemd re-read its unit files, so that new masks take effect.
    fn daemon_reload(&self) -> Result<()>;
    /// Stops `unit` now.
    fn stop(&self, unit: &UnitName) -> Result<()>;
}

/// The real [`UnitControl`]: runs `systemctl` directly (an argument vector, no shell).
#[derive(Debug, Clone)]
pub struct Systemctl {
    program: String,
}

impl Default for Systemctl {
    fn default() -> Self {
        Self {
            program: "systemctl".to_owned(),
        }
    }
}

impl Systemctl {
    /// Runs `program` instead of `systemctl` from `PATH` (e.g. an absolute path).
    pub fn with_program(program: impl Into<String>) -> Self {
        Self {
            program: program.into(),
        }
    }

    fn run(&self, args: &[&str]) -> Result<()> {
        let out = Command::new(&self.program)
            .args(args)
            .output()
            .map_err(|source| Error::Spawn {
                program: self.program.clone(),
                source,
            })?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(Error::UnitCommand {
            args: args.join(" "),
            status: out.status.to_string(),
            stderr: super::printable(stderr.lines().next().unwrap_or(""), 200),
        })
    }
}

impl UnitControl for Systemctl {
    fn daemon_reload(&self) -> Result<()> {
        self.run(&["daemon-reload"])
    }

    fn stop(&self, unit: &UnitName) -> Result<()> {
        // "--" as well as the name check: the name can never be taken for an option.
        self.run(&["stop", "--", unit.as_str()])
    }
}

/// One call a [`RecordingUnitControl`] received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitCall {
    /// `daemon_reload()`.
    DaemonReload,
    /// `stop(unit)`.
    Stop(UnitName),
}

/// A [`UnitControl`] that changes nothing and records every call: for tests and dry runs.
#[derive(Debug, Default)]
pub struct RecordingUnitControl {
    calls: Mutex<Vec<UnitCall>>,
}

impl RecordingUnitControl {
    /// The calls so far, in order.
    pub fn calls(&self) -> Vec<UnitCall> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// The units stopped so far, in order.
    pub fn stopped(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                UnitCall::Stop(u) => Some(u.0),
                UnitCall::DaemonReload => None,
            })
            .collect()
    }

    fn record(&self, call: UnitCall) {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(call);
        }
    }
}

impl UnitControl for RecordingUnitControl {
    fn daemon_reload(&self) -> Result<()> {
        self.record(UnitCall::DaemonReload);
        Ok(())
    }

    fn stop(&self, unit: &UnitName) -> Result<()> {
        self.record(UnitCall::Stop(unit.clone()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// G045: PL-3-1
    #[test]
    fn unit_names_cannot_escape_the_unit_directory_or_look_like_options() {
        for good in [
            "inetutils-telnetd.service",
            "serial-getty@ttyS0.service",
            "sys-kernel-debug.mount",
            "system-serial\\x2dgetty.slice.service",
        ] {
            assert!(UnitName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".service",
            "../../etc/passwd.service",
            "a/b.service",
            "--now.service",
            ".hidden.service",
            "telnetd",
            "x.slice",
            "a b.service",
        ] {
            assert!(UnitName::parse(bad).is_err(), "{bad}");
        }
    }

    /// G045: PL-3-1
    #[test]
    fn systemctl_reports_a_missing_program() {
        let ctl = Systemctl::with_program("/nonexistent/kawal-test-systemctl");
        let unit = UnitName::parse("x.service").unwrap();
        assert!(matches!(ctl.stop(&unit), Err(Error::Spawn { .. })));
    }

    #[test]
    fn systemctl_reports_failure_with_arguments() {
        // `false` ignores its arguments and fails: the error names what was asked.
        let ctl = Systemctl::with_program("false");
        let unit = UnitName::parse("x.service").unwrap();
        match ctl.stop(&unit) {
            Err(Error::UnitCommand { args, .. }) => assert_eq!(args, "stop -- x.service"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
