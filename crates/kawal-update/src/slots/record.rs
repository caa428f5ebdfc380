//! The boot-state record: two copies, each with a sequence number and a SHA-256 checksum.
//!
//! Each copy is one file: a header line `kawal-boot-state 1 seq=<n> sha256=<hex>` and the state
//! as JSON. The checksum covers the sequence number and the JSON, so a copy cannot be torn or
//! replayed under another number unnoticed. A write goes to the copy that does *not* hold the
//! newest valid state, with [`write_atomic`]; so at every instant at least one valid copy holds
//! either the old state or the new one. A read takes the valid copy with the highest number.

use std::path::{Path, PathBuf};

use aws_lc_rs::digest;

use super::durable::{Durable, write_atomic};
use super::{BootState, Error, Result};

const MAGIC: &str = "kawal-boot-state 1";

/// The newest valid copy found.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    pub(crate) state: BootState,
    pub(crate) seq: u64,
    pub(crate) index: usize,
}

/// The two copy paths of the record kept in `dir`.
pub(crate) fn paths(dir: &Path) -> [PathBuf; 2] {
    [dir.join("boot-state.0"), dir.join("boot-state.1")]
}

/// Reads both copies. `Ok(None)` when neither exists; [`Error::StateCorrupt`] when copies exist
/// but none is valid (nothing is deleted or rewritten then).
pub(crate) fn load(d: &dyn Durable, paths: &[PathBuf; 2]) -> Result<Option<Loaded>> {
    let mut best: Option<Loaded> = None;
    let mut found = Vec::new();
    for (index, path) in paths.iter().enumerate() {
        let bytes = match d.read(path) {
            Ok(Some(b)) => b,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(?path, error = %e, "boot-state copy unreadable");
                found.push(path.clone());
                continue;
            }
        };
        found.push(path.clone());
        match decode(&bytes) {
            Some((seq, state)) => {
                if best.as_ref().is_none_or(|b| seq > b.seq) {
                    best = Some(Loaded { state, seq, index });
                }
            }
            None => tracing::warn!(?path, "boot-state copy is corrupt; using the other copy"),
        }
    }
    match best {
        Some(l) => Ok(Some(l)),
        None if found.is_empty() => Ok(None),
        None => {
            tracing::error!(paths = ?found, "every boot-state copy is corrupt");
            Err(Error::StateCorrupt { paths: found })
        }
    }
}

/// Writes `state` as the next sequence number into the copy that does not hold `prev`.
pub(crate) fn store(
    d: &dyn Durable,
    paths: &[PathBuf; 2],
    state: &BootState,
    prev: Option<(u64, usize)>,
) -> Result<(u64, usize)> {
    let (seq, index) = match prev {
        Some((seq, index)) => (seq.saturating_add(1), 1 - index.min(1)),
        None => (1, 0),
    };
    let bytes = encode(seq, state)?;
    let path = &paths[index];
    write_atomic(d, path, &bytes).map_err(|e| Error::io(path, e))?;
    Ok((seq, index))
}

fn checksum(seq: u64, body: &[u8]) -> digest::Digest {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&seq.to_le_bytes());
    ctx.update(body);
    ctx.finish()
}

fn encode(seq: u64, state: &BootState) -> Result<Vec<u8>> {
    let body = serde_json::to_vec(state).map_err(|e| {
        Error::io(
            "<boot-state>",
            std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        )
    })?;
    let sum = hex::encode(checksum(seq, &body).as_ref());
    let mut out = format!("{MAGIC} seq={seq} sha256={sum}\n").into_bytes();
    out.extend_from_slice(&body);
    Ok(out)
}

fn decode(bytes: &[u8]) -> Option<(u64, BootState)> {
    let nl = bytes.iter().position(|&b| b == b'\n')?;
    let (header, body) = (std::str::from_utf8(&bytes[..nl]).ok()?, &bytes[nl + 1..]);
    let rest = header.strip_prefix(MAGIC)?.strip_prefix(" seq=")?;
    let (seq, sum) = rest.split_once(" sha256=")?;
    let seq: u64 = seq.parse().ok()?;
    // Compared as text: one canonical spelling (lower-case hex), so no byte of a copy can change
    // unnoticed.
    if sum != hex::encode(checksum(seq, body).as_ref()) {
        return None;
    }
    serde_json::from_slice(body).ok().map(|s| (seq, s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slots::{Committed, Slot};

    fn state() -> BootState {
        BootState::new(
            Committed {
                slot: Slot::A,
                version: "1.0.0".into(),
                security_version: 3,
            },
            100,
        )
    }

    #[test]
    fn round_trips_and_rejects_any_flipped_byte() {
        let bytes = encode(7, &state()).unwrap();
        assert_eq!(decode(&bytes), Some((7, state())));
        for i in 0..bytes.len() {
            for bit in [0x01, 0x20] {
                let mut bad = bytes.clone();
                bad[i] ^= bit;
                assert_eq!(decode(&bad), None, "flip {bit:#x} at {i} accepted");
            }
        }
        assert_eq!(decode(&bytes[..bytes.len() - 1]), None);
    }
}
