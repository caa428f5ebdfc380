//! The GRUB environment block format (`grubenv`, as `grub-editenv` writes it).
//!
//! Exactly [`GRUBENV_SIZE`] bytes: the line `# GRUB Environment Block`, then `name=value` lines,
//! padded with `#` to the size. In a value, a backslash and a newline are each written after a
//! backslash. GRUB writes the block in place by its disk blocks (`save_env`), so its size never
//! changes. Only the format is here; a GRUB back end of [`super::BootControl`] would keep the
//! same variables as [`super::UbootEnv`] and needs a GRUB script that counts only trial boots.

use std::collections::BTreeMap;
use std::path::Path;

use super::durable::{Durable, write_atomic};
use super::error::EnvProblem;
use super::{Error, Result};

/// The size of a GRUB environment block.
pub const GRUBENV_SIZE: usize = 1024;

/// The first line of a GRUB environment block.
pub const GRUBENV_HEADER: &str = "# GRUB Environment Block\n";

/// Parses a GRUB environment block.
pub fn parse(bytes: &[u8]) -> std::result::Result<BTreeMap<String, String>, EnvProblem> {
    if bytes.len() != GRUBENV_SIZE {
        return Err(EnvProblem::Size {
            expected: GRUBENV_SIZE,
            found: bytes.len(),
        });
    }
    let body = bytes
        .strip_prefix(GRUBENV_HEADER.as_bytes())
        .ok_or(EnvProblem::Malformed { offset: 0 })?;
    let base = GRUBENV_HEADER.len();
    let mut vars = BTreeMap::new();
    let mut i = 0;
    while i < body.len() {
        let start = i;
        if body[i] == b'#' {
            // A comment line, or the padding up to the end.
            while i < body.len() && body[i] != b'\n' {
                i += 1;
            }
            i += 1;
            continue;
        }
        let malformed = EnvProblem::Malformed {
            offset: base + start,
        };
        let eq = body[i..]
            .iter()
            .position(|&b| b == b'=' || b == b'\n')
            .filter(|&p| body[i + p] == b'=' && p > 0)
            .ok_or_else(|| malformed.clone())?;
        let name = &body[i..i + eq];
        i += eq + 1;
        let mut value = Vec::new();
        loop {
            match body.get(i) {
                None => return Err(malformed),
                Some(b'\n') => break,
                Some(b'\\') => {
                    let escaped = body.get(i + 1).ok_or_else(|| malformed.clone())?;
                    value.push(*escaped);
                    i += 2;
                }
                Some(&b) => {
                    value.push(b);
                    i += 1;
                }
            }
        }
        i += 1;
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| malformed.clone());
        vars.insert(text(name)?, text(&value)?);
    }
    Ok(vars)
}

/// Writes `vars` as a GRUB environment block.
pub fn serialise(vars: &BTreeMap<String, String>) -> std::result::Result<Vec<u8>, EnvProblem> {
    let mut out = GRUBENV_HEADER.as_bytes().to_vec();
    for (name, value) in vars {
        if name.is_empty() || name.starts_with('#') || name.contains(['=', '\n', '\\']) {
            return Err(EnvProblem::BadVariable { name: name.clone() });
        }
        out.extend_from_slice(name.as_bytes());
        out.push(b'=');
        for &b in value.as_bytes() {
            if b == b'\\' || b == b'\n' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'\n');
    }
    if out.len() > GRUBENV_SIZE {
        return Err(EnvProblem::TooLarge {
            needed: out.len(),
            available: GRUBENV_SIZE,
        });
    }
    out.resize(GRUBENV_SIZE, b'#');
    Ok(out)
}

/// Reads the GRUB environment at `path`.
pub fn read(d: &dyn Durable, path: &Path) -> Result<BTreeMap<String, String>> {
    let bytes = d
        .read(path)
        .map_err(|e| Error::io(path, e))?
        .ok_or_else(|| Error::NotInitialised {
            root: path.to_path_buf(),
        })?;
    parse(&bytes).map_err(|p| Error::env(path, p))
}

/// Replaces the GRUB environment at `path` atomically (from Linux; GRUB itself writes in place).
pub fn write(d: &dyn Durable, path: &Path, vars: &BTreeMap<String, String>) -> Result<()> {
    let bytes = serialise(vars).map_err(|p| Error::env(path, p))?;
    write_atomic(d, path, &bytes).map_err(|e| Error::io(path, e))
}
