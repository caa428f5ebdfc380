//! The kernel's socket tables, `/proc/net/{tcp,tcp6,udp,udp6}`: which sockets accept traffic.
//!
//! A line reads
//! `sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...`,
//! e.g. `0: 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1234 ...`.
//! Addresses are the in-memory (network order) bytes printed as native-endian 32-bit words
//! (`%08X`, four of them for IPv6); ports are printed in host order. The parser is strict: a
//! line that does not fit gives [`Error::Malformed`] naming the line, and the table is
//! rejected as a whole, since a partly read table could hide a listener.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::{Error, Result};
use crate::SysRoot;

/// `TCP_LISTEN` in the `st` column.
const TCP_LISTEN: u8 = 0x0A;
/// `TCP_CLOSE` in the `st` column: for UDP, a bound socket with no connected peer.
const UDP_UNCONNECTED: u8 = 0x07;

/// A transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        })
    }
}

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4: 8 hex digits an address.
    V4,
    /// IPv6: 32 hex digits an address.
    V6,
}

/// A socket that accepts traffic: TCP in LISTEN, or UDP bound and not connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Socket {
    /// The protocol.
    pub proto: Proto,
    /// The local address (`0.0.0.0` or `::` for all).
    pub addr: IpAddr,
    /// The local port.
    pub port: u16,
    /// The owning user ID.
    pub uid: u32,
    /// The socket inode, as in `/proc/<pid>/fd/* -> socket:[INODE]`.
    pub inode: u64,
}

/// The four tables, with their protocol and family.
pub const TABLES: [(&str, Proto, Family); 4] = [
    ("/proc/net/tcp", Proto::Tcp, Family::V4),
    ("/proc/net/tcp6", Proto::Tcp, Family::V6),
    ("/proc/net/udp", Proto::Udp, Family::V4),
    ("/proc/net/udp6", Proto::Udp, Family::V6),
];

/// Parses one table; `file` names it in errors. Returns the accepting sockets only.
pub fn parse_table(text: &str, file: &str, proto: Proto, family: Family) -> Result<Vec<Socket>> {
    let bad = |line: usize, reason| Error::Malformed {
        file: file.to_owned(),
        line,
        reason,
    };
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    match lines.next() {
        Some((_, header)) if header.trim_start().starts_with("sl ") => {}
        _ => return Err(bad(1, "missing the `sl local_address ...` header")),
    }
    let mut sockets = Vec::new();
    for (n, line) in lines {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            return Err(bad(n, "fewer than 10 columns"));
        }
        f[0].strip_suffix(':')
            .filter(|s| is_digits(s))
            .ok_or_else(|| bad(n, "slot column is not `N:`"))?;
        let (addr, port) = endpoint(f[1], family).ok_or_else(|| bad(n, "bad local address"))?;
        endpoint(f[2], family).ok_or_else(|| bad(n, "bad remote address"))?;
        let state = hex(f[3], 2)
            .and_then(|v| u8::try_from(v).ok())
            .ok_or_else(|| bad(n, "state is not two hex digits"))?;
        let uid = decimal(f[7])
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| bad(n, "uid is not a decimal number"))?;
        let inode = decimal(f[9]).ok_or_else(|| bad(n, "inode is not a decimal number"))?;
        let accepting = match proto {
            Proto::Tcp => state == TCP_LISTEN,
            Proto::Udp => state == UDP_UNCONNECTED,
        };
        if accepting {
            sockets.push(Socket {
                proto,
                addr,
                port,
                uid,
                inode,
            });
        }
    }
    Ok(sockets)
}

/// Reads all four tables under `root`, each on its own: the sockets of the tables that could
/// be read, and an error for each that could not. A missing table (no IPv6 in the kernel) is
/// empty.
pub fn read_all(root: &SysRoot) -> (Vec<Socket>, Vec<Error>) {
    let mut all = Vec::new();
    let mut errors = Vec::new();
    for (file, proto, family) in TABLES {
        match super::read_optional(root, file)
            .and_then(|text| text.map_or(Ok(Vec::new()), |t| parse_table(&t, file, proto, family)))
        {
            Ok(sockets) => all.extend(sockets),
            Err(e) => errors.push(e),
        }
    }
    (all, errors)
}

/// `ADDR:PORT` in the kernel's hex form.
fn endpoint(s: &str, family: Family) -> Option<(IpAddr, u16)> {
    let (a, p) = s.split_once(':')?;
    let port = u16::try_from(hex(p, 4)?).ok()?;
    let addr = match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(word(a)?.to_ne_bytes())),
        Family::V6 => {
            if a.len() != 32 {
                return None;
            }
            let mut octets = [0u8; 16];
            for (i, chunk) in octets.chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&word(a.get(i * 8..i * 8 + 8)?)?.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
    };
    Some((addr, port))
}

/// One 32-bit word of an address: exactly 8 hex digits.
fn word(s: &str) -> Option<u32> {
    u32::try_from(hex(s, 8)?).ok()
}

/// Exactly `len` hex digits (no sign, no prefix).
fn hex(s: &str, len: usize) -> Option<u64> {
    (s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u64::from_str_radix(s, 16).ok())
        .flatten()
}

/// A decimal number (digits only, no sign).
fn decimal(s: &str) -> Option<u64> {
    is_digits(s).then(|| s.parse().ok()).flatten()
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";

    fn table(rows: &[&str]) -> String {
        let mut t = HEADER.to_owned();
        for r in rows {
            t.push_str(r);
            t.push('\n');
        }
        t
    }

    /// G045: PL-3-1
    #[cfg(target_endian = "little")]
    #[test]
    fn parses_listening_tcp_and_skips_connections() {
        let t = table(&[
            "   0: 00000000:0017 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0",
            "   1: 0100007F:075B 00000000:0000 0A 00000000:00000000 00:00000000 00000000   107        0 99 1 0000000000000000 100 0 0 10 0",
            "   2: 020200C0:D842 507100CB:0050 01 00000000:00000000 03:000011FE 00000000     0        0 0 3 0000000000000000",
        ]);
        let s = parse_table(&t, "/proc/net/tcp", Proto::Tcp, Family::V4).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].addr, s[0].port, s[0].inode),
            ("0.0.0.0".parse().unwrap(), 23, 4242)
        );
        assert_eq!(
            (s[1].addr, s[1].port, s[1].uid),
            ("127.0.0.1".parse().unwrap(), 1883, 107)
        );
    }

    /// G045: PL-3-1
    #[cfg(target_endian = "little")]
    #[test]
    fn parses_ipv6_addresses_word_by_word() {
        let t = table(&[
            "   0: 00000000000000000000000001000000:20FB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 7 1 0000000000000000 100 0 0 10 0",
            "   1: 0000000000000000FFFF00000100007F:0035 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 8 1 0000000000000000 100 0 0 10 0",
        ]);
        let s = parse_table(&t, "/proc/net/tcp6", Proto::Tcp, Family::V6).unwrap();
        assert_eq!((s[0].addr, s[0].port), ("::1".parse().unwrap(), 8443));
        assert_eq!(s[1].addr, "::ffff:127.0.0.1".parse::<IpAddr>().unwrap());
    }

    /// G045: PL-3-1
    #[test]
    fn udp_counts_only_unconnected_sockets() {
        let t = table(&[
            "  10: 00000000:00A1 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 55 2 0000000000000000 0",
            "  11: 00000000:D000 08080808:0035 01 00000000:00000000 00:00000000 00000000     0        0 56 2 0000000000000000 0",
        ]);
        let s = parse_table(&t, "/proc/net/udp", Proto::Udp, Family::V4).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].port, s[0].inode), (161, 55));
    }

    /// G045: PL-3-1
    #[test]
    fn malformed_lines_name_the_line_and_never_panic() {
        let good = "   0: 00000000:0017 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0";
        let cases = [
            ("garbage", "fewer than 10 columns"),
            (
                "0 00000000:0017 00000000:0000 0A 0:0 0:0 0 0 0 1",
                "slot column is not `N:`",
            ),
            (
                "0: 0000000:0017 00000000:0000 0A 0:0 0:0 0 0 0 1",
                "bad local address",
            ),
            (
                "0: 00000000:17 00000000:0000 0A 0:0 0:0 0 0 0 1",
                "bad local address",
            ),
            (
                "0: 00000000:0017 00000000 0A 0:0 0:0 0 0 0 1",
                "bad remote address",
            ),
            (
                "0: 00000000:0017 00000000:0000 XZ 0:0 0:0 0 0 0 1",
                "state is not two hex digits",
            ),
            (
                "0: 00000000:0017 00000000:0000 0A 0:0 0:0 0 -1 0 1",
                "uid is not a decimal number",
            ),
            (
                "0: 00000000:0017 00000000:0000 0A 0:0 0:0 0 0 0 +1",
                "inode is not a decimal number",
            ),
            (
                "0: 00000000:0017 00000000:0000 0A 0:0 0:0 0 0 0 99999999999999999999999",
                "inode is not a decimal number",
            ),
            (
                "0: é0000000:0017 00000000:0000 0A 0:0 0:0 0 0 0 1",
                "bad local address",
            ),
        ];
        for (line, want) in cases {
            let t = table(&[good, line]);
            match parse_table(&t, "/proc/net/tcp", Proto::Tcp, Family::V4) {
                Err(Error::Malformed {
                    line: 3,
                    reason,
                    ref file,
                }) => {
                    assert_eq!(reason, want, "{line}");
                    assert_eq!(file, "/proc/net/tcp");
                }
                other => panic!("{line}: {other:?}"),
            }
        }
        let err = parse_table("", "/proc/net/udp", Proto::Udp, Family::V4).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/proc/net/udp line 1: missing the `sl local_address ...` header"
        );
        // IPv6 table with an IPv4-length address.
        let t = table(&[good]);
        assert!(parse_table(&t, "/proc/net/tcp6", Proto::Tcp, Family::V6).is_err());
    }
}
