//! Small shared pieces: the UID rule, names, serial numbers, times.
use rcgen::{DistinguishedName, DnType, SerialNumber};
use time::OffsetDateTime;

use crate::{Error, Result};

/// The same character rules as kawal-platform's `DeviceUid`: `[A-Za-z0-9._:-]`, 1..=64 bytes,
/// not starting with `-`.
pub(crate) fn check_uid(uid: &str) -> Result<()> {
    let reason = if uid.is_empty() || uid.len() > 64 {
        "length outside 1..=64"
    } else if uid.starts_with('-') {
        "starts with '-'"
    } else if !uid
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        "characters outside [A-Za-z0-9._:-]"
    } else {
        return Ok(());
    };
    Err(Error::InvalidUid { reason })
}

/// A distinguished name with only a common name.
pub(crate) fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// A random positive 128-bit serial number.
pub(crate) fn random_serial() -> Result<SerialNumber> {
    let mut bytes = kawal_crypto::rng::array::<16>()?;
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

/// A certificate serial number as text: lowercase hex of its big-endian bytes without
/// leading zeros (`00 0a ff` → `aff`; zero → `0`). The same text as `format!("{:x}", serial)`
/// of x509-parser's `BigUint`, which the gateway uses.
pub fn serial_hex(der_serial_bytes: &[u8]) -> String {
    let full = hex::encode(der_serial_bytes);
    let trimmed = full.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// The current time as Unix seconds.
pub(crate) fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Unix seconds as a date for rcgen; out-of-range values are an error, not a panic.
pub(crate) fn datetime(unix: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(unix).map_err(|_| Error::Parse("time out of range".into()))
}

/// RFC 3339 UTC (`YYYY-MM-DDTHH:MM:SSZ`).
pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_text_drops_leading_zeros() {
        assert_eq!(serial_hex(&[0x00, 0x0a, 0xff]), "aff");
        assert_eq!(serial_hex(&[0x7f, 0x01]), "7f01");
        assert_eq!(serial_hex(&[0x00]), "0");
        assert_eq!(serial_hex(&[]), "0");
        assert_eq!(serial_hex(&[0x01, 0x00]), "100");
    }

    #[test]
    fn uid_rules() {
        for good in ["a", "kw-1", "A.b_c:d-e", &"x".repeat(64)] {
            assert!(check_uid(good).is_ok(), "{good}");
        }
        for bad in ["", "-x", "a b", "é", "a/b", &"x".repeat(65)] {
            assert!(check_uid(bad).is_err(), "{bad}");
        }
    }
}
