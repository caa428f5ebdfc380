//! The device UID (G045 AU-3-1): unique, fixed, and not a copy of the hardware serial.
//!
//! The UID is derived from the first usable hardware identity source under a vendor
//! namespace: `"kw-"` followed by the first 26 characters (130 bits) of the lowercase,
//! unpadded base32 (RFC 4648 alphabet) of
//! `SHA-256("kawal-uid-v1\0" ‖ vendor_ns ‖ "\0" ‖ source_name ‖ "\0" ‖ raw_value)`.
//! Hashing keeps the raw serial (which may identify the board to its vendor) out of logs,
//! certificates and reports, while the same machine always gets the same UID.

use std::fmt;

use crate::{DMI_PRODUCT_UUID, DT_SERIAL, Error, MACHINE_ID, Result, SysRoot};

/// A validated device UID: 1..=64 chars of `[A-Za-z0-9._:-]`, not starting with `-`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceUid(String);

impl DeviceUid {
    /// Validates `s` as a device UID.
    pub fn parse(s: &str) -> Result<Self> {
        let reason = if s.is_empty() {
            Some("empty")
        } else if s.len() > 64 {
            Some("longer than 64 characters")
        } else if s.starts_with('-') {
            Some("starts with '-'")
        } else if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        {
            Some("characters outside [A-Za-z0-9._:-]")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidUid { reason }),
            None => Ok(Self(s.to_owned())),
        }
    }

    /// The UID as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for DeviceUid {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::parse(&s)
    }
}

impl From<DeviceUid> for String {
    fn from(u: DeviceUid) -> Self {
        u.0
    }
}

/// Where a UID came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UidSource {
    /// Set at the factory (given to kawal at provisioning, not derived here).
    Factory,
    /// `/sys/class/dmi/id/product_uuid`.
    DmiProductUuid,
    /// `/proc/device-tree/serial-number`.
    DeviceTreeSerial,
    /// `/etc/machine-id`.
    MachineId,
}

impl UidSource {
    /// The source's name, as in serde and in the UID derivation: e.g. `"dmi-product-uuid"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Factory => "factory",
            Self::DmiProductUuid => "dmi-product-uuid",
            Self::DeviceTreeSerial => "device-tree-serial",
            Self::MachineId => "machine-id",
        }
    }
}

impl fmt::Display for UidSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Values firmware ships unconfigured; they are the same on many machines.
const PLACEHOLDERS: [&str; 3] = [
    "03000200-0400-0500-0006-000700080009",
    "Not Settable",
    "Default string",
];

/// The hardware sources, in order of preference.
const SOURCES: [(UidSource, &str); 3] = [
    (UidSource::DmiProductUuid, DMI_PRODUCT_UUID),
    (UidSource::DeviceTreeSerial, DT_SERIAL),
    (UidSource::MachineId, MACHINE_ID),
];

/// Derives the UID from hardware identity under a vendor namespace: the first readable,
/// non-empty value that is not all-zero, all-F or a well-known placeholder, of
/// `/sys/class/dmi/id/product_uuid`, `/proc/device-tree/serial-number` (NUL-trimmed) and
/// `/etc/machine-id`. See the [module docs](self) for the derivation; the raw value never
/// appears in the UID.
pub fn derive(root: &SysRoot, vendor_ns: &str) -> Result<(DeviceUid, UidSource)> {
    let mut tried = Vec::new();
    for (source, path) in SOURCES {
        match read_value(root, path) {
            Ok(raw) => return Ok((uid_from(vendor_ns, source, &raw)?, source)),
            Err(why) => tried.push(format!("{path}: {why}")),
        }
    }
    Err(Error::NoHardwareIdentity {
        tried: tried.join("; "),
    })
}

/// Reads one source; `Err` says why it is unusable.
fn read_value(root: &SysRoot, path: &str) -> std::result::Result<String, &'static str> {
    let bytes = std::fs::read(root.path(path)).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "missing",
        std::io::ErrorKind::PermissionDenied => "not readable",
        _ => "read error",
    })?;
    let text = String::from_utf8(bytes).map_err(|_| "not UTF-8")?;
    let value = text.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    if value.is_empty() {
        return Err("empty");
    }
    let digits: Vec<char> = value.chars().filter(|&c| c != '-').collect();
    if digits.iter().all(|&c| c == '0') || digits.iter().all(|&c| c.eq_ignore_ascii_case(&'f')) {
        return Err("all zero or all F");
    }
    if PLACEHOLDERS.iter().any(|p| p.eq_ignore_ascii_case(value)) {
        return Err("firmware placeholder");
    }
    Ok(value.to_owned())
}

fn uid_from(vendor_ns: &str, source: UidSource, raw: &str) -> Result<DeviceUid> {
    let mut input = b"kawal-uid-v1\0".to_vec();
    for (i, part) in [vendor_ns, source.as_str(), raw].iter().enumerate() {
        if i > 0 {
            input.push(0);
        }
        input.extend_from_slice(part.as_bytes());
    }
    let encoded = base32_lower(&kawal_crypto::sha256(&input));
    DeviceUid::parse(&format!("kw-{}", encoded.get(..26).unwrap_or(&encoded)))
}

/// Lowercase RFC 4648 base32 without padding.
fn base32_lower(data: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for &b in data {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((acc >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const NS: &str = "example.com";
    const UUID: &str = "4c4c4544-0042-3510-8052-b4c04f4e3732";
    const DT: &str = "1000000012345678";
    const MID: &str = "b08dfa6083e7567a1921a715000001fb";

    fn tree() -> (tempfile::TempDir, SysRoot) {
        let dir = tempfile::tempdir().unwrap();
        let root = SysRoot(dir.path().to_path_buf());
        (dir, root)
    }

    fn put(root: &SysRoot, path: &str, content: &[u8]) {
        let p = root.path(path);
        std::fs::create_dir_all(p.parent().unwrap_or(Path::new("/"))).unwrap();
        std::fs::write(p, content).unwrap();
    }

    #[test]
    fn base32_matches_rfc4648_vectors() {
        assert_eq!(base32_lower(b""), "");
        assert_eq!(base32_lower(b"f"), "my");
        assert_eq!(base32_lower(b"fo"), "mzxq");
        assert_eq!(base32_lower(b"foobar"), "mzxw6ytboi");
    }

    /// G045: AU-3-1
    #[test]
    fn derives_from_each_source_in_order_of_preference() {
        let (_d, root) = tree();
        put(&root, MACHINE_ID, format!("{MID}\n").as_bytes());
        let (mid, src) = derive(&root, NS).unwrap();
        assert_eq!(src, UidSource::MachineId);

        put(&root, DT_SERIAL, format!("{DT}\0").as_bytes());
        let (dt, src) = derive(&root, NS).unwrap();
        assert_eq!(src, UidSource::DeviceTreeSerial);

        put(&root, DMI_PRODUCT_UUID, format!("{UUID}\n").as_bytes());
        let (dmi, src) = derive(&root, NS).unwrap();
        assert_eq!(src, UidSource::DmiProductUuid);

        assert_ne!(mid, dt);
        assert_ne!(dt, dmi);
        for uid in [&mid, &dt, &dmi] {
            let s = uid.as_str();
            assert!(s.starts_with("kw-"));
            assert_eq!(s.len(), 29);
            assert_eq!(DeviceUid::parse(s).unwrap(), *uid);
        }
    }

    /// G045: AU-3-1
    #[test]
    fn uid_is_stable_and_never_contains_the_raw_value() {
        let (_d, root) = tree();
        put(&root, DMI_PRODUCT_UUID, format!("{UUID}\n").as_bytes());
        let (a, _) = derive(&root, NS).unwrap();
        let (b, _) = derive(&root, NS).unwrap();
        assert_eq!(a, b);
        let s = a.as_str().to_ascii_lowercase();
        for part in UUID.split('-') {
            assert!(!s.contains(part), "{s} contains raw fragment {part}");
        }
        // Known answer, so the derivation cannot drift silently between releases.
        let mut input = b"kawal-uid-v1\0example.com\0dmi-product-uuid\0".to_vec();
        input.extend_from_slice(UUID.as_bytes());
        let full = base32_lower(&kawal_crypto::sha256(&input));
        let want = format!("kw-{}", full.get(..26).unwrap());
        assert_eq!(a.as_str(), want);
    }

    /// G045: AU-3-1
    #[test]
    fn vendor_namespace_changes_the_uid() {
        let (_d, root) = tree();
        put(&root, MACHINE_ID, MID.as_bytes());
        let (a, _) = derive(&root, "vendor-a").unwrap();
        let (b, _) = derive(&root, "vendor-b").unwrap();
        assert_ne!(a, b);
    }

    /// G045: AU-3-1
    #[test]
    fn placeholders_and_blank_values_are_skipped() {
        let (_d, root) = tree();
        put(&root, MACHINE_ID, MID.as_bytes());
        for bad in [
            "03000200-0400-0500-0006-000700080009\n",
            "00000000-0000-0000-0000-000000000000\n",
            "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF\n",
            "Not Settable\n",
            "default STRING",
            "\n",
            "",
        ] {
            put(&root, DMI_PRODUCT_UUID, bad.as_bytes());
            put(&root, DT_SERIAL, b"\0\0");
            let (_, src) = derive(&root, NS).unwrap();
            assert_eq!(src, UidSource::MachineId, "{bad:?} was not skipped");
        }
    }

    /// G045: AU-3-1
    #[test]
    fn no_source_is_a_clear_error() {
        let (_d, root) = tree();
        let err = derive(&root, NS).unwrap_err().to_string();
        assert!(err.contains("no usable hardware identity"), "{err}");
        assert!(err.contains("/etc/machine-id: missing"), "{err}");
        put(&root, MACHINE_ID, b"00000000000000000000000000000000\n");
        let err = derive(&root, NS).unwrap_err().to_string();
        assert!(err.contains("all zero"), "{err}");
    }

    /// G045: AU-3-1
    #[test]
    fn parse_rejects_bad_uids() {
        for bad in [
            "",
            "-leading-dash",
            "has space",
            "slash/inside",
            "ünïcode",
            "semi;colon",
            "new\nline",
            &"a".repeat(65),
        ] {
            assert!(DeviceUid::parse(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["a", "kw-abc", "GW_01.site:3", &"a".repeat(64)] {
            assert_eq!(DeviceUid::parse(good).unwrap().to_string(), good);
        }
        assert!(serde_json::from_str::<DeviceUid>("\"-x\"").is_err());
        let u: DeviceUid = serde_json::from_str("\"kw-x\"").unwrap();
        assert_eq!(serde_json::to_string(&u).unwrap(), "\"kw-x\"");
        assert_eq!(
            serde_json::to_string(&UidSource::DmiProductUuid).unwrap(),
            "\"dmi-product-uuid\""
        );
    }
}
