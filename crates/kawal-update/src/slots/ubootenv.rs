//! The U-Boot environment format, as `fw_printenv`/`fw_setenv` read and write it.
//!
//! A block of a fixed size: a 4-byte little-endian CRC-32 of the data area, then (redundant
//! layout only) one flag byte, then the data area: `name=value\0` pairs ended by one more `\0`
//! and padded to the size. With two copies (redundant environment) the valid copy with the
//! higher flag is the active one, counting with wrap-around (0 follows 255), and a write goes
//! to the other copy with the next flag, so a torn write leaves the active copy intact.

use std::collections::BTreeMap;

use super::error::EnvProblem;

/// The variables of an environment, sorted by name (as `env export` writes them).
pub type Vars = BTreeMap<String, String>;

/// How a block is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One copy: CRC-32, then data.
    Single,
    /// Two copies: CRC-32, flag byte, then data.
    Redundant,
}

impl Layout {
    /// Bytes before the data area.
    #[must_use]
    pub fn header_len(self) -> usize {
        match self {
            Self::Single => 4,
            Self::Redundant => 5,
        }
    }
}

/// A parsed block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The variables.
    pub vars: Vars,
    /// The flag byte (0 for the single layout).
    pub flag: u8,
}

/// Parses a block of exactly `size` bytes.
pub fn parse(bytes: &[u8], size: usize, layout: Layout) -> Result<Block, EnvProblem> {
    let header = layout.header_len();
    if bytes.len() != size || size <= header {
        return Err(EnvProblem::Size {
            expected: size,
            found: bytes.len(),
        });
    }
    let stored = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let data = &bytes[header..];
    if crc32fast::hash(data) != stored {
        return Err(EnvProblem::BadCrc);
    }
    let flag = if layout == Layout::Redundant {
        bytes[4]
    } else {
        0
    };
    let mut vars = Vars::new();
    let mut i = 0;
    loop {
        let rest = data.get(i..).unwrap_or_default();
        match rest.first() {
            None => return Err(EnvProblem::Malformed { offset: header + i }),
            Some(0) => break,
            Some(_) => {}
        }
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(EnvProblem::Malformed { offset: header + i })?;
        let entry = std::str::from_utf8(&rest[..end])
            .map_err(|_| EnvProblem::Malformed { offset: header + i })?;
        let (name, value) = entry
            .split_once('=')
            .ok_or(EnvProblem::Malformed { offset: header + i })?;
        vars.insert(name.to_owned(), value.to_owned());
        i += end + 1;
    }
    Ok(Block { vars, flag })
}

/// Writes `vars` as a block of `size` bytes with `flag`, padding with `pad` (0x00, or 0xff to
/// spare erased flash).
pub fn serialise(
    vars: &Vars,
    flag: u8,
    size: usize,
    layout: Layout,
    pad: u8,
) -> Result<Vec<u8>, EnvProblem> {
    let header = layout.header_len();
    let mut data = Vec::with_capacity(size);
    for (name, value) in vars {
        let bad_name = name.is_empty() || name.contains(['=', '\0', '\n']);
        if bad_name || value.contains('\0') {
            return Err(EnvProblem::BadVariable { name: name.clone() });
        }
        data.extend_from_slice(name.as_bytes());
        data.push(b'=');
        data.extend_from_slice(value.as_bytes());
        data.push(0);
    }
    data.push(0);
    let available = size.saturating_sub(header);
    if data.len() > available {
        return Err(EnvProblem::TooLarge {
            needed: data.len(),
            available,
        });
    }
    data.resize(available, pad);
    let mut out = crc32fast::hash(&data).to_le_bytes().to_vec();
    if layout == Layout::Redundant {
        out.push(flag);
    }
    out.extend_from_slice(&data);
    Ok(out)
}

/// Which of two redundant copies is active: the valid one, or of two valid ones the newer flag
/// (255 is older than 0, as in `fw_env`). `None` if neither is valid.
#[must_use]
pub fn active_copy(a: Option<&Block>, b: Option<&Block>) -> Option<usize> {
    match (a, b) {
        (None, None) => None,
        (Some(_), None) => Some(0),
        (None, Some(_)) => Some(1),
        (Some(a), Some(b)) => Some(match (a.flag, b.flag) {
            (255, 0) => 1,
            (0, 255) => 0,
            (fa, fb) if fb > fa => 1,
            _ => 0,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_environment_is_one_terminator() {
        let b = serialise(&Vars::new(), 0, 16, Layout::Single, 0xff).unwrap();
        assert_eq!(b.len(), 16);
        assert_eq!(b[4], 0);
        assert_eq!(b[5], 0xff);
        assert_eq!(parse(&b, 16, Layout::Single).unwrap().vars, Vars::new());
    }

    #[test]
    fn rejects_missing_terminator() {
        // A data area full of one unterminated variable, with a correct CRC.
        let data = b"abcdefg=hij".to_vec();
        let mut b = crc32fast::hash(&data).to_le_bytes().to_vec();
        b.extend_from_slice(&data);
        assert!(matches!(
            parse(&b, b.len(), Layout::Single),
            Err(EnvProblem::Malformed { .. })
        ));
    }
}
