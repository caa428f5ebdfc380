//! Verdicts on the platform controls, from checks run live when the report is made: the
//! running executable's sections (PL-1-3), the integrity manifest verified now (PL-1-4), and
//! the services and interfaces assessed now (PL-3-1, PH-1-1, PH-1-2).
use std::collections::BTreeMap;
use std::path::PathBuf;

use kawal_compliance::{Finding, Verdict};
use kawal_platform::exposure::{Assessment, Control};

use super::FindingExt;
use super::elf::ElfFacts;
use crate::config::platform::{ExposureSettings, IntegrityMode, IntegritySettings};
use crate::integrity::Verification;

/// The release profile of the workspace's Cargo.toml; a unit test keeps this in step.
pub const RELEASE_PROFILE: &str =
    "lto = \"fat\", strip = true, debug = false, codegen-units = 1, panic = \"abort\"";

/// What the platform controls are judged on.
#[derive(Debug)]
pub struct PlatformFacts {
    /// The running executable.
    pub exe: PathBuf,
    /// Its sections, or why they could not be read.
    pub elf: Result<ElfFacts, String>,
    /// Whether this build has debug assertions (a debug build).
    pub debug_build: bool,
    /// The integrity settings in force.
    pub integrity_settings: IntegritySettings,
    /// The integrity manifest verified now (none when switched off).
    pub integrity: Option<Verification>,
    /// The exposure settings in force.
    pub exposure_settings: ExposureSettings,
    /// Services and interfaces assessed now.
    pub exposure: Assessment,
    /// The daemon's confinement at its last start (none before the first).
    pub confinement: Option<crate::confinement::Confinement>,
}

fn n(events: &BTreeMap<String, u64>, key: &str) -> u64 {
    events.get(key).copied().unwrap_or(0)
}

/// The platform controls' findings: PL-1-3, PL-1-4, PL-3-1, PH-1-1, PH-1-2.
pub fn findings(p: &PlatformFacts, events: &BTreeMap<String, u64>) -> Vec<Finding> {
    vec![
        pl_1_3(p),
        pl_1_4(p, events),
        pl_3_1(p, events),
        physical(p, Control::Ph11, "PH-1-1"),
        physical(p, Control::Ph12, "PH-1-2"),
    ]
}

fn pl_1_3(p: &PlatformFacts) -> Finding {
    let mut f = Finding::new("PL-1-3", Verdict::NotMet)
        .evidence("running executable", p.exe.display().to_string())
        .evidence("release profile (Cargo.toml)", RELEASE_PROFILE)
        .evidence(
            "debug-only hooks",
            "the self-test fault injection (KAWAL_SELFTEST_INJECT) is compiled out of release builds; there is no debug endpoint",
        )
        .evidence(
            "obfuscation",
            "not used, deliberately: kawal is open source, so obfuscating its machine code hides nothing the source does not show; what protects the device is that the binary holds no secret (keys are made per device and sealed) and that it is covered by the signed integrity manifest (PL-1-4)",
        );
    match &p.elf {
        Err(e) => f.reason(format!("the running executable could not be read: {e}")),
        Ok(elf) => {
            let debug = elf.debug_sections();
            f = f.evidence(
                "sections",
                format!(
                    "{} section(s); symbol table (.symtab): {}; debug information: {}",
                    elf.sections.len(),
                    if elf.has_symtab() { "PRESENT" } else { "none" },
                    if debug.is_empty() {
                        "none".to_owned()
                    } else {
                        debug.join(", ")
                    }
                ),
            );
            let mut problems = Vec::new();
            if p.debug_build {
                problems.push("this is a debug build (debug assertions on), not the release build");
            }
            if elf.has_symtab() {
                problems.push("the executable still carries its symbol table");
            }
            if !debug.is_empty() {
                problems.push("the executable carries debug information");
            }
            if problems.is_empty() {
                f.with_verdict(Verdict::Met)
            } else {
                f.reason(problems.join("; "))
            }
        }
    }
}

fn pl_1_4(p: &PlatformFacts, events: &BTreeMap<String, u64>) -> Finding {
    let s = &p.integrity_settings;
    let mut f = Finding::new("PL-1-4", Verdict::NotMet)
        .evidence(
            "checks",
            format!(
                "before serving (a mismatch: the daemon does not serve), every {} s while running (on mismatch: {}), and on demand (kawal integrity verify)",
                s.period.as_secs(),
                s.on_mismatch.as_str()
            ),
        )
        .evidence("manifest", s.manifest.display().to_string())
        .evidence("vendor key", s.vendor_key.display().to_string())
        .evidence(
            "logged",
            format!(
                "{} integrity.verified, {} integrity.failed, {} configuration(s) accepted",
                n(events, "integrity.verified"),
                n(events, "integrity.failed"),
                n(events, "integrity.config-accepted")
            ),
        );
    let Some(v) = &p.integrity else {
        return f.reason("integrity checks are switched off ([integrity] enabled = false)");
    };
    if !v.manifest_present {
        return f.reason(format!(
            "no integrity manifest is installed at {} (the vendor makes one with kawal integrity manifest)",
            s.manifest.display()
        ));
    }
    if let Some(product) = &v.product {
        f = f.evidence("product", product.clone());
    }
    if let Some(k) = &v.key_id {
        f = f.evidence("signed by", format!("vendor key {k} (Ed25519)"));
    }
    f = f
        .evidence(
            "verified now",
            format!(
                "{} file(s) in {} ms: {}",
                v.files_checked,
                v.millis,
                v.roles
                    .iter()
                    .map(|(r, c)| format!("{r} {c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .evidence("files", v.files.join("; "));
    let exe = std::fs::canonicalize(&p.exe).unwrap_or_else(|_| p.exe.clone());
    let exe_listed = v
        .files
        .iter()
        .any(|l| l.starts_with(&format!("{} (", exe.display())));
    f = f.evidence(
        "this executable",
        if exe_listed {
            format!("{} is listed", exe.display())
        } else {
            format!("{} is not listed by the manifest", exe.display())
        },
    );
    if s.mode == IntegrityMode::IfPresent {
        f = f.evidence(
            "required",
            "no: [integrity] enabled = true would refuse to serve without a manifest",
        );
    }
    if !v.ok {
        let mut shown: Vec<String> = v.problems.iter().take(5).cloned().collect();
        if v.problems.len() > 5 {
            shown.push(format!("and {} more", v.problems.len() - 5));
        }
        return f.reason(format!("the integrity check fails: {}", shown.join("; ")));
    }
    let missing: Vec<&str> = ["binary", "config", "trust-store"]
        .into_iter()
        .filter(|r| !v.roles.contains_key(*r))
        .collect();
    if !missing.is_empty() {
        return f.reason(format!(
            "the manifest verifies but lists no {}",
            missing.join(", no ")
        ));
    }
    f.with_verdict(Verdict::Met)
}

fn listener_line(l: &str) -> bool {
    l.starts_with("tcp ") || l.starts_with("udp ") || l.starts_with("descriptors")
}

fn pl_3_1(p: &PlatformFacts, events: &BTreeMap<String, u64>) -> Finding {
    let a = &p.exposure;
    let policy = &p.exposure_settings.policy;
    let findings: Vec<String> = a
        .findings_for(Control::Pl31)
        .map(|f| format!("{}: {}", f.subject, f.detail))
        .collect();
    let mut f = Finding::new("PL-3-1", Verdict::NotMet)
        .evidence(
            "declared listeners",
            policy
                .allowed_listeners
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        )
        .evidence(
            "loopback listeners",
            if policy.loopback_listeners.forbids() {
                "forbidden (reported)"
            } else {
                "allowed"
            },
        )
        .evidence(
            "listening now",
            format!(
                "{} socket(s) (/proc/net/tcp, tcp6, udp, udp6), each traced to its process and unit",
                a.listeners.len()
            ),
        )
        .evidence(
            "enforcement",
            if policy.enforce {
                "on: the units owning other listeners are masked and stopped"
            } else {
                "off (report only; [exposure] enforce = true masks and stops their units)"
            },
        )
        .evidence(
            "logged",
            format!(
                "{} exposure.finding, {} exposure.enforced",
                n(events, "exposure.finding"),
                n(events, "exposure.enforced")
            ),
        );
    f = f.evidence(
        "daemon confinement (its last start)",
        match &p.confinement {
            None => "not recorded (the daemon has not run)".to_owned(),
            Some(c) if c.confined() => format!("{} (as the shipped unit sets it)", c.summary()),
            Some(c) => format!(
                "{}: {} (packaging/systemd/kawal.service confines it)",
                c.summary(),
                c.problems().join(", ")
            ),
        },
    );
    let seen: Vec<&str> = a
        .evidence
        .iter()
        .filter(|l| listener_line(l))
        .map(String::as_str)
        .collect();
    if !seen.is_empty() {
        f = f.evidence("declared listeners seen", seen.join("; "));
    }
    if !findings.is_empty() {
        let mut shown: Vec<String> = findings.iter().take(20).cloned().collect();
        if findings.len() > 20 {
            shown.push(format!("and {} more", findings.len() - 20));
        }
        return f
            .evidence("other listeners", shown.join("; "))
            .reason(format!(
                "{} listener(s) outside the declared set",
                findings.len()
            ));
    }
    let net_errors: Vec<&String> = a
        .errors
        .iter()
        .filter(|e| e.contains("/proc/net"))
        .collect();
    if !net_errors.is_empty() {
        return f.reason(format!(
            "the socket tables could not be read: {}",
            net_errors
                .iter()
                .map(|e| e.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    f.with_verdict(Verdict::Met)
}

fn physical(p: &PlatformFacts, control: Control, code: &str) -> Finding {
    let a = &p.exposure;
    let findings: Vec<String> = a
        .findings_for(control)
        .map(|f| {
            let mut s = format!("{}: {}", f.subject, f.detail);
            if let Some(m) = &f.manual {
                s.push_str(&format!(" (to do: {m})"));
            }
            s
        })
        .collect();
    let manual: Vec<&str> = a
        .manual
        .iter()
        .filter(|m| m.control == control)
        .map(|m| m.what.as_str())
        .collect();
    let seen: Vec<&str> = a
        .evidence
        .iter()
        .filter(|l| !listener_line(l))
        .map(String::as_str)
        .collect();
    let mut f = Finding::new(code, Verdict::NotMet).evidence(
        "read from the system",
        if seen.is_empty() {
            "nothing to report".to_owned()
        } else {
            seen.join("; ")
        },
    );
    if !a.errors.is_empty() {
        f = f.evidence("could not be read", a.errors.join("; "));
    }
    if !manual.is_empty() {
        f = f.evidence("manual evidence needed", manual.join("; "));
    }
    if !findings.is_empty() {
        return f
            .evidence("findings", findings.join("; "))
            .reason(format!("{} finding(s) against the policy", findings.len()));
    }
    if !manual.is_empty() || !a.errors.is_empty() {
        return f.with_verdict(Verdict::Manual).reason(
            "what software can see passes the policy; the rest needs the assessor's evidence (listed above)",
        );
    }
    f.with_verdict(Verdict::Met)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    /// G045: PL-1-3
    #[test]
    fn the_release_profile_strips_symbols_and_debug_information() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml"))
                .unwrap();
        let doc: toml::Table = text.parse().unwrap();
        let r = doc["profile"]["release"].as_table().unwrap();
        assert_eq!(r["strip"].as_bool(), Some(true));
        assert_eq!(r["debug"].as_bool(), Some(false));
        assert_eq!(r["lto"].as_str(), Some("fat"));
        assert_eq!(r["panic"].as_str(), Some("abort"));
        assert_eq!(r["codegen-units"].as_integer(), Some(1));
        for part in [
            "lto = \"fat\"",
            "strip = true",
            "debug = false",
            "codegen-units = 1",
            "panic = \"abort\"",
        ] {
            assert!(RELEASE_PROFILE.contains(part), "{part}");
        }
    }

    fn facts(elf: ElfFacts, debug_build: bool) -> PlatformFacts {
        let cfg = crate::config::defaults_for(std::path::Path::new("/nonexistent")).unwrap();
        PlatformFacts {
            exe: "/usr/bin/kawal".into(),
            elf: Ok(elf),
            debug_build,
            integrity_settings: cfg.integrity,
            integrity: None,
            exposure_settings: cfg.exposure,
            exposure: Assessment::default(),
            confinement: None,
        }
    }

    /// G045: PL-1-3
    #[test]
    fn symbols_or_debug_information_fail_pl_1_3() {
        let stripped = ElfFacts {
            sections: vec![".text".into(), ".rodata".into(), ".shstrtab".into()],
        };
        assert_eq!(
            pl_1_3(&facts(stripped.clone(), false)).verdict,
            Verdict::Met
        );
        assert_eq!(pl_1_3(&facts(stripped, true)).verdict, Verdict::NotMet);
        let symbols = ElfFacts {
            sections: vec![".text".into(), ".symtab".into(), ".debug_line".into()],
        };
        let f = pl_1_3(&facts(symbols, false));
        assert_eq!(f.verdict, Verdict::NotMet);
        let reason = f.reason.unwrap();
        assert!(
            reason.contains("symbol table") && reason.contains("debug information"),
            "{reason}"
        );
    }

    /// G045: PH-1-2
    #[test]
    fn what_software_cannot_see_makes_a_physical_control_manual_not_met() {
        let mut p = facts(
            ElfFacts {
                sections: Vec::new(),
            },
            false,
        );
        p.exposure
            .manual
            .push(kawal_platform::exposure::ManualItem {
                control: Control::Ph12,
                what: "JTAG fuses: check the board".into(),
            });
        assert_eq!(
            physical(&p, Control::Ph12, "PH-1-2").verdict,
            Verdict::Manual
        );
        assert_eq!(physical(&p, Control::Ph11, "PH-1-1").verdict, Verdict::Met);
    }
}
