//! The bundle manifest (`kawal-bundle.toml`): what the bundle holds and how it proves itself.
//!
//! Parsing is two-stage: strict TOML into a raw struct (`deny_unknown_fields`), then
//! [`Manifest`] by validation, which collects every problem rather than stopping at the first.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::error::BundleError;
use super::path::check_relative;

/// The only manifest format kawal reads.
pub const FORMAT: u32 = 1;

/// Permission bits a payload file may have: no setuid, setgid or sticky bit, nothing writable by
/// group or others.
pub const ALLOWED_MODE: u32 = 0o755;

/// Bounds of `[health] max-boots`.
pub const MAX_BOOTS: std::ops::RangeInclusive<u8> = 1..=5;

/// Bounds of `[health] deadline-s`.
pub const DEADLINE_S: std::ops::RangeInclusive<u32> = 30..=3600;

const MAX_NAME_LEN: usize = 64;
const MAX_HARDWARE: usize = 64;

/// A health check the new slot must pass during its trial boot. The set is fixed: a bundle
/// cannot name a command to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealthCheck {
    /// kawal's power-up self-test passes.
    SelfTest,
    /// The installed files match the integrity manifest.
    Integrity,
    /// The upstream bridge connects.
    Upstream,
}

/// How the new slot proves itself on its trial boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    checks: Vec<HealthCheck>,
    max_boots: u8,
    deadline_s: u32,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            checks: vec![HealthCheck::SelfTest, HealthCheck::Integrity],
            max_boots: 3,
            deadline_s: 300,
        }
    }
}

impl Health {
    /// Health settings; checked when the manifest is built or parsed.
    #[must_use]
    pub fn new(checks: Vec<HealthCheck>, max_boots: u8, deadline_s: u32) -> Self {
        Self {
            checks,
            max_boots,
            deadline_s,
        }
    }

    /// The checks to pass, in the order given.
    #[must_use]
    pub fn checks(&self) -> &[HealthCheck] {
        &self.checks
    }

    /// How many boots the new slot may try before the device falls back.
    #[must_use]
    pub fn max_boots(&self) -> u8 {
        self.max_boots
    }

    /// Seconds after boot by which every check must have passed.
    #[must_use]
    pub fn deadline_s(&self) -> u32 {
        self.deadline_s
    }
}

/// One payload file as the manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    path: String,
    size: u64,
    sha256: [u8; 32],
    mode: u32,
}

impl FileEntry {
    /// Its path inside `payload/`.
    #[must_use]
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Its size in bytes.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Its SHA-256.
    #[must_use]
    pub fn sha256(&self) -> &[u8; 32] {
        &self.sha256
    }

    /// Its permission bits (a subset of [`ALLOWED_MODE`]).
    #[must_use]
    pub fn mode(&self) -> u32 {
        self.mode
    }
}

/// A parsed and validated bundle manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    product: String,
    version: String,
    security_version: u64,
    hardware: Vec<String>,
    files: BTreeMap<String, FileEntry>,
    health: Health,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawManifest {
    format: u32,
    product: String,
    version: String,
    security_version: u64,
    hardware: Vec<String>,
    #[serde(default, rename = "file")]
    files: Vec<RawFile>,
    #[serde(default)]
    health: Option<RawHealth>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawFile {
    path: String,
    size: u64,
    sha256: String,
    mode: RawMode,
}

/// `mode = 0o755` (a TOML integer) or `mode = "0755"` (an octal string).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawMode {
    Int(i64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawHealth {
    checks: Vec<HealthCheck>,
    #[serde(default = "default_max_boots")]
    max_boots: i64,
    #[serde(default = "default_deadline_s")]
    deadline_s: i64,
}

fn default_max_boots() -> i64 {
    3
}

fn default_deadline_s() -> i64 {
    300
}

impl Manifest {
    /// Parses and validates a manifest. Size limits are the caller's business (the unpacker
    /// checks them before reading the bytes).
    pub fn parse(bytes: &[u8]) -> Result<Self, BundleError> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| BundleError::invalid("the manifest is not UTF-8"))?;
        let raw: RawManifest = toml::from_str(text).map_err(|e| {
            // The message alone, with its line: the full rendering quotes the (untrusted) text.
            let line = e
                .span()
                .and_then(|span| text.get(..span.start))
                .map_or(0, |before| before.matches('\n').count() + 1);
            BundleError::invalid(format!("line {line}: {}", e.message().trim_end()))
        })?;
        raw.validate()
    }

    /// The product this bundle is for.
    #[must_use]
    pub fn product(&self) -> &str {
        &self.product
    }

    /// The release version (shown to people; ordering is by security version).
    #[must_use]
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The anti-rollback counter: a device refuses a bundle below its installed one.
    #[must_use]
    pub fn security_version(&self) -> u64 {
        self.security_version
    }

    /// The hardware ids the bundle runs on.
    #[must_use]
    pub fn hardware(&self) -> &[String] {
        &self.hardware
    }

    /// The payload files, sorted by path.
    pub fn files(&self) -> impl ExactSizeIterator<Item = &FileEntry> {
        self.files.values()
    }

    /// The payload file at `path` (inside `payload/`), if listed.
    #[must_use]
    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files.get(path)
    }

    /// The trial-boot settings.
    #[must_use]
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The sum of the listed file sizes (saturating).
    #[must_use]
    pub fn total_size(&self) -> u64 {
        self.files
            .values()
            .fold(0u64, |sum, f| sum.saturating_add(f.size))
    }

    /// The manifest as TOML, in the form [`Manifest::parse`] reads back to an equal value.
    pub fn to_toml(&self) -> Result<String, BundleError> {
        #[derive(Serialize)]
        #[serde(rename_all = "kebab-case")]
        struct OutFile<'a> {
            path: &'a str,
            size: u64,
            sha256: String,
            mode: String,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "kebab-case")]
        struct OutHealth<'a> {
            checks: &'a [HealthCheck],
            max_boots: u8,
            deadline_s: u32,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "kebab-case")]
        struct Out<'a> {
            format: u32,
            product: &'a str,
            version: &'a str,
            security_version: u64,
            hardware: &'a [String],
            health: OutHealth<'a>,
            file: Vec<OutFile<'a>>,
        }
        let out = Out {
            format: FORMAT,
            product: &self.product,
            version: &self.version,
            security_version: self.security_version,
            hardware: &self.hardware,
            health: OutHealth {
                checks: &self.health.checks,
                max_boots: self.health.max_boots,
                deadline_s: self.health.deadline_s,
            },
            file: self
                .files
                .values()
                .map(|f| OutFile {
                    path: &f.path,
                    size: f.size,
                    sha256: hex::encode(f.sha256),
                    mode: format!("{:04o}", f.mode),
                })
                .collect(),
        };
        toml::to_string(&out).map_err(|e| BundleError::invalid(e.to_string()))
    }

    /// Builds a manifest from parts, with the same checks as [`Manifest::parse`].
    pub(crate) fn from_parts(
        product: String,
        version: String,
        security_version: u64,
        hardware: Vec<String>,
        files: Vec<(String, u64, [u8; 32], u32)>,
        health: Health,
    ) -> Result<Self, BundleError> {
        let raw = RawManifest {
            format: FORMAT,
            product,
            version,
            security_version,
            hardware,
            files: files
                .into_iter()
                .map(|(path, size, sha, mode)| RawFile {
                    path,
                    size,
                    sha256: hex::encode(sha),
                    mode: RawMode::Int(i64::from(mode)),
                })
                .collect(),
            health: Some(RawHealth {
                checks: health.checks,
                max_boots: i64::from(health.max_boots),
                deadline_s: i64::from(health.deadline_s),
            }),
        };
        raw.validate()
    }
}

impl RawManifest {
    fn validate(self) -> Result<Manifest, BundleError> {
        let mut problems = Vec::new();
        if self.format != FORMAT {
            problems.push(format!(
                "format {} is not supported (kawal reads {FORMAT})",
                self.format
            ));
        }
        if let Err(why) = check_name(&self.product) {
            problems.push(format!("product {why}"));
        }
        if let Err(why) = check_version(&self.version) {
            problems.push(format!("version {why}"));
        }
        if let Err(why) = check_hardware(&self.hardware) {
            problems.push(format!("hardware {why}"));
        }
        if self.files.is_empty() {
            problems.push("no [[file]] is listed".to_owned());
        }
        let mut files = BTreeMap::new();
        for raw in self.files {
            match raw.validate() {
                Ok(file) => {
                    if files.contains_key(&file.path) {
                        problems.push(format!("file '{}' is listed twice", file.path));
                    }
                    files.insert(file.path.clone(), file);
                }
                Err(why) => problems.push(why),
            }
        }
        // A listed file cannot also be a folder on the way to another listed file.
        for path in files.keys() {
            let mut prefix = path.as_str();
            while let Some((parent, _)) = prefix.rsplit_once('/') {
                if files.contains_key(parent) {
                    problems.push(format!("file '{parent}' is also a folder of '{path}'"));
                }
                prefix = parent;
            }
        }
        let health = match self.health {
            None => Health::default(),
            Some(raw) => match raw.validate() {
                Ok(h) => h,
                Err(mut why) => {
                    problems.append(&mut why);
                    Health::default()
                }
            },
        };
        if !problems.is_empty() {
            return Err(BundleError::ManifestInvalid { problems });
        }
        Ok(Manifest {
            product: self.product,
            version: self.version,
            security_version: self.security_version,
            hardware: self.hardware,
            files,
            health,
        })
    }
}

impl RawFile {
    fn validate(self) -> Result<FileEntry, String> {
        let shown = super::error::shown(self.path.as_bytes());
        check_relative(&self.path).map_err(|p| format!("file path '{shown}' {p}"))?;
        let sha256 = decode_sha256(&self.sha256)
            .ok_or_else(|| format!("file '{shown}': sha256 is not 64 hex digits"))?;
        let mode = match self.mode {
            RawMode::Int(m) => u32::try_from(m).ok(),
            RawMode::Text(t) => parse_octal(&t),
        }
        .ok_or_else(|| format!("file '{shown}': mode is not an octal permission"))?;
        if mode & !ALLOWED_MODE != 0 {
            return Err(format!(
                "file '{shown}': mode {mode:04o} is not allowed (at most {ALLOWED_MODE:04o}: \
                 no setuid, setgid, sticky, group- or world-writable bits)"
            ));
        }
        Ok(FileEntry {
            path: self.path,
            size: self.size,
            sha256,
            mode,
        })
    }
}

impl RawHealth {
    fn validate(self) -> Result<Health, Vec<String>> {
        let mut problems = Vec::new();
        if self.checks.is_empty() {
            problems.push("[health] checks is empty".to_owned());
        }
        let unique: BTreeSet<_> = self.checks.iter().collect();
        if unique.len() != self.checks.len() {
            problems.push("[health] checks lists a check twice".to_owned());
        }
        let max_boots = u8::try_from(self.max_boots)
            .ok()
            .filter(|b| MAX_BOOTS.contains(b));
        if max_boots.is_none() {
            problems.push(format!(
                "[health] max-boots {} is outside {}..={}",
                self.max_boots,
                MAX_BOOTS.start(),
                MAX_BOOTS.end()
            ));
        }
        let deadline_s = u32::try_from(self.deadline_s)
            .ok()
            .filter(|d| DEADLINE_S.contains(d));
        if deadline_s.is_none() {
            problems.push(format!(
                "[health] deadline-s {} is outside {}..={}",
                self.deadline_s,
                DEADLINE_S.start(),
                DEADLINE_S.end()
            ));
        }
        match (max_boots, deadline_s) {
            (Some(max_boots), Some(deadline_s)) if problems.is_empty() => Ok(Health {
                checks: self.checks,
                max_boots,
                deadline_s,
            }),
            _ => Err(problems),
        }
    }
}

fn decode_sha256(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok().map(|()| out)
}

/// `"755"`, `"0755"` or `"0o755"`; at most four octal digits.
fn parse_octal(text: &str) -> Option<u32> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return None;
    }
    u32::from_str_radix(digits, 8).ok()
}

/// Product and hardware ids: 1 to 64 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    check_charset(name, |c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// Versions: as names, plus `+` and `~` (`1.4.2`, `2.0.0-rc.1+build.7`).
pub(crate) fn check_version(version: &str) -> Result<(), String> {
    check_charset(version, |c| {
        c.is_ascii_alphanumeric() || "._-+~".contains(c)
    })
}

fn check_charset(text: &str, allowed: impl Fn(char) -> bool) -> Result<(), String> {
    if text.is_empty() || text.len() > MAX_NAME_LEN {
        return Err(format!("must be 1 to {MAX_NAME_LEN} characters long"));
    }
    if !text.starts_with(|c: char| c.is_ascii_alphanumeric()) || !text.chars().all(allowed) {
        return Err(format!(
            "'{}' has a character that is not allowed",
            super::error::shown(text.as_bytes())
        ));
    }
    Ok(())
}

pub(crate) fn check_hardware(ids: &[String]) -> Result<(), String> {
    if ids.is_empty() || ids.len() > MAX_HARDWARE {
        return Err(format!("must list 1 to {MAX_HARDWARE} ids"));
    }
    for id in ids {
        check_name(id)?;
    }
    let unique: BTreeSet<_> = ids.iter().collect();
    if unique.len() != ids.len() {
        return Err("lists an id twice".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
format = 1
product = "kawal-gw"
version = "1.4.2"
security-version = 7
hardware = ["rpi4", "imx8"]

[[file]]
path = "bin/kawal"
size = 3
sha256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
mode = "0755"

[[file]]
path = "etc/kawal.toml"
size = 0
sha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
mode = 0o644

[health]
checks = ["self-test", "upstream"]
max-boots = 2
"#;

    #[test]
    fn parses_a_good_manifest_and_round_trips() {
        let m = Manifest::parse(GOOD.as_bytes()).expect("good manifest");
        assert_eq!(m.product(), "kawal-gw");
        assert_eq!(m.security_version(), 7);
        assert_eq!(m.files().len(), 2);
        assert_eq!(m.file("bin/kawal").map(FileEntry::mode), Some(0o755));
        assert_eq!(m.file("etc/kawal.toml").map(FileEntry::mode), Some(0o644));
        assert_eq!(m.health().max_boots(), 2);
        assert_eq!(m.health().deadline_s(), 300);
        let again = Manifest::parse(m.to_toml().expect("toml").as_bytes()).expect("reparse");
        assert_eq!(again, m);
    }

    fn problems(text: &str) -> Vec<String> {
        match Manifest::parse(text.as_bytes()) {
            Err(BundleError::ManifestInvalid { problems }) => problems,
            other => panic!("expected an invalid manifest, got {other:?}"),
        }
    }

    #[test]
    fn refuses_bad_fields_and_reports_all_of_them() {
        let bad = GOOD
            .replace("format = 1", "format = 2")
            .replace("\"0755\"", "\"4755\"")
            .replace("max-boots = 2", "max-boots = 9");
        let p = problems(&bad);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(problems(&GOOD.replace("\"upstream\"", "\"command:reboot\"")).len() == 1);
        assert!(problems(&GOOD.replace("mode = 0o644", "mode = 0o666")).len() == 1);
        assert!(problems(&GOOD.replace("\"1.4.2\"", "\"1.4 2\"")).len() == 1);
        assert!(
            problems(&GOOD.replace("hardware = [\"rpi4\", \"imx8\"]", "hardware = []")).len() == 1
        );
        assert!(problems(&GOOD.replace("bin/kawal", "../kawal")).len() == 1);
        assert!(problems(&GOOD.replace("etc/kawal.toml", "bin/kawal/x")).len() == 1);
        assert!(problems(&format!("{GOOD}\nextra = 1\n")).len() == 1);
        let syntax = problems("format = 1\nproduct = \n");
        assert!(syntax[0].starts_with("line 2: "), "{syntax:?}");
    }
}
