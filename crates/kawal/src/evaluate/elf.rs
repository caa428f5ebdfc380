//! The section names of an ELF file, read from its section headers: enough to tell whether
//! the running executable still carries a symbol table or debug information (PL-1-3). Reads
//! the header, the section header table and the section-name table only, each bounded.
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Largest section-name table read.
const MAX_SHSTRTAB: u64 = 1 << 20;

/// What the section headers show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfFacts {
    /// The section names, in order.
    pub sections: Vec<String>,
}

impl ElfFacts {
    /// Whether a symbol table (`.symtab`) is present.
    pub fn has_symtab(&self) -> bool {
        self.sections.iter().any(|s| s == ".symtab")
    }

    /// The debug-information sections (`.debug_*`, `.zdebug_*`).
    pub fn debug_sections(&self) -> Vec<&str> {
        self.sections
            .iter()
            .filter(|s| s.starts_with(".debug") || s.starts_with(".zdebug"))
            .map(String::as_str)
            .collect()
    }
}

fn bad(what: &str) -> String {
    format!("not a readable ELF file: {what}")
}

/// Reads the section names of the ELF file at `path`.
pub fn read(path: &Path) -> Result<ElfFacts, String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    let mut ident = [0u8; 64];
    f.read_exact(&mut ident).map_err(|_| bad("short header"))?;
    if ident[..4] != *b"\x7fELF" {
        return Err(bad("no ELF magic"));
    }
    let is64 = match ident[4] {
        1 => false,
        2 => true,
        _ => return Err(bad("unknown class")),
    };
    let le = match ident[5] {
        1 => true,
        2 => false,
        _ => return Err(bad("unknown byte order")),
    };
    let u16_at = |b: &[u8], o: usize| -> u64 {
        let v = [b[o], b[o + 1]];
        u64::from(if le {
            u16::from_le_bytes(v)
        } else {
            u16::from_be_bytes(v)
        })
    };
    let u32_at = |b: &[u8], o: usize| -> u64 {
        let v = [b[o], b[o + 1], b[o + 2], b[o + 3]];
        u64::from(if le {
            u32::from_le_bytes(v)
        } else {
            u32::from_be_bytes(v)
        })
    };
    let u64_at = |b: &[u8], o: usize| -> u64 {
        let mut v = [0u8; 8];
        v.copy_from_slice(&b[o..o + 8]);
        if le {
            u64::from_le_bytes(v)
        } else {
            u64::from_be_bytes(v)
        }
    };
    // e_shoff, e_shentsize, e_shnum, e_shstrndx.
    let (shoff, shentsize, shnum, shstrndx) = if is64 {
        (
            u64_at(&ident, 0x28),
            u16_at(&ident, 0x3A),
            u16_at(&ident, 0x3C),
            u16_at(&ident, 0x3E),
        )
    } else {
        (
            u32_at(&ident, 0x20),
            u16_at(&ident, 0x2E),
            u16_at(&ident, 0x30),
            u16_at(&ident, 0x32),
        )
    };
    let min_entry = if is64 { 64 } else { 40 };
    if shnum == 0 {
        return Ok(ElfFacts {
            sections: Vec::new(),
        });
    }
    let table_len = shentsize * shnum;
    if shentsize < min_entry || shstrndx >= shnum || shoff.saturating_add(table_len) > len {
        return Err(bad("section header table out of bounds"));
    }
    let mut table = vec![0u8; usize::try_from(table_len).map_err(|_| bad("table size"))?];
    f.seek(SeekFrom::Start(shoff)).map_err(|e| e.to_string())?;
    f.read_exact(&mut table)
        .map_err(|_| bad("short section table"))?;
    let entry = |i: u64| -> (u64, u64, u64) {
        let o = usize::try_from(i * shentsize).unwrap_or(0);
        let e = &table[o..];
        if is64 {
            (u32_at(e, 0), u64_at(e, 0x18), u64_at(e, 0x20))
        } else {
            (u32_at(e, 0), u32_at(e, 0x10), u32_at(e, 0x14))
        }
    };
    let (_, str_off, str_size) = entry(shstrndx);
    if str_size > MAX_SHSTRTAB || str_off.saturating_add(str_size) > len {
        return Err(bad("section-name table out of bounds"));
    }
    let mut names = vec![0u8; usize::try_from(str_size).map_err(|_| bad("names size"))?];
    f.seek(SeekFrom::Start(str_off))
        .map_err(|e| e.to_string())?;
    f.read_exact(&mut names)
        .map_err(|_| bad("short section names"))?;
    let mut sections = Vec::new();
    for i in 0..shnum {
        let (name_off, ..) = entry(i);
        let start = usize::try_from(name_off).unwrap_or(usize::MAX);
        let Some(rest) = names.get(start..) else {
            continue;
        };
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        let name = String::from_utf8_lossy(&rest[..end]).into_owned();
        if !name.is_empty() {
            sections.push(name);
        }
    }
    Ok(ElfFacts { sections })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    /// G045: PL-1-3
    #[test]
    fn reads_the_sections_of_the_running_test_binary() {
        // A test build keeps its symbols: the reader must see them.
        let f = read(Path::new("/proc/self/exe")).unwrap();
        assert!(f.sections.iter().any(|s| s == ".text"), "{:?}", f.sections);
        assert!(f.has_symtab(), "{:?}", f.sections);
    }

    #[test]
    fn refuses_what_is_not_elf() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, [0u8; 100]).unwrap();
        assert!(read(&p).is_err());
        let mut hdr = vec![0u8; 64];
        hdr[..4].copy_from_slice(b"\x7fELF");
        hdr[4] = 2;
        hdr[5] = 1;
        hdr[0x28] = 0xff; // section table beyond the end
        hdr[0x3A] = 64;
        hdr[0x3C] = 3;
        std::fs::write(&p, &hdr).unwrap();
        assert!(read(&p).is_err());
    }
}
