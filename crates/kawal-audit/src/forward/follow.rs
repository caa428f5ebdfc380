//! Following the local log: the entries after a given seq, read incrementally.
//!
//! The follower keeps its place (segment and byte offset) between reads, so following a log
//! that grows costs only the new bytes; [`read_entries`](crate::read_entries) would rescan
//! the current segment from its start on every call. It parses each line with the same strict
//! parser as the reader and checks that the entries it hands out are consecutive and chained
//! (each `prev` is the hash of the entry before), starting from the cursor's hash: a local
//! log rewritten behind the forwarder's back is refused, not forwarded.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::ForwardError;
use super::cursor::Cursor;
use super::syslog::EntryFields;
use crate::canonical;
use crate::entry::EntryHash;
use crate::segment;

/// Where the follower is.
struct Place {
    number: u64,
    path: PathBuf,
    reader: BufReader<File>,
    /// Offset of the next line to read.
    offset: u64,
}

/// Reads the entries of the log in `dir/audit/` after a position.
pub(crate) struct Follower {
    audit_dir: PathBuf,
    place: Option<Place>,
    /// The last entry handed out (or the start position).
    last: Cursor,
    line: Vec<u8>,
}

impl Follower {
    /// A follower of the log in `dir/audit/` that hands out the entries after `from`.
    pub fn new(dir: &Path, from: Cursor) -> Self {
        Self {
            audit_dir: segment::audit_dir(dir),
            place: None,
            last: from,
            line: Vec::with_capacity(1024),
        }
    }

    /// Moves back (or on) so that the next entry handed out follows `from`.
    pub fn reset(&mut self, from: Cursor) {
        self.place = None;
        self.last = from;
    }

    /// The last entry handed out.
    pub fn last(&self) -> Cursor {
        self.last
    }

    /// Hands up to `max` further entries to `each` (with their canonical bytes and hash);
    /// returns how many. Stops early at the end of the log or at an incomplete last line.
    ///
    /// # Errors
    /// [`ForwardError::LocalLog`] if the next entry cannot be found (the log is shorter than
    /// the position, or entries are missing), is corrupt, or does not chain from the last one.
    pub fn read(
        &mut self,
        max: usize,
        mut each: impl FnMut(&EntryFields<'_>, &[u8], &EntryHash),
    ) -> Result<usize, ForwardError> {
        if self.place.is_none() && !self.locate()? {
            return Ok(0);
        }
        let mut n = 0;
        while n < max {
            let Some(place) = self.place.as_mut() else {
                break;
            };
            self.line.clear();
            let got = read_line(&mut place.reader, &mut self.line)
                .map_err(|e| local(format!("read {}: {e}", place.path.display())))?;
            if got == 0 || self.line.last() != Some(&b'\n') {
                // The end for now (or a line still being written): come back to this offset.
                place
                    .reader
                    .seek(SeekFrom::Start(place.offset))
                    .map_err(|e| local(format!("seek {}: {e}", place.path.display())))?;
                if got == 0 && self.advance_segment()? {
                    continue;
                }
                break;
            }
            let line = &self.line[..self.line.len() - 1];
            let v = canonical::parse_view(line).map_err(|e| {
                local(format!(
                    "{} at byte {}: not a valid entry ({e})",
                    place.path.display(),
                    place.offset
                ))
            })?;
            let expected = self.last.seq + 1;
            if v.seq != expected {
                return Err(local(format!(
                    "{}: expected seq {expected}, found {}",
                    place.path.display(),
                    v.seq
                )));
            }
            if v.prev != self.last.hash {
                return Err(local(format!(
                    "entry {} does not chain from the entry before it \
                     (the local log was changed after it was forwarded)",
                    v.seq
                )));
            }
            let hash = EntryHash::of(line);
            let fields = EntryFields {
                seq: v.seq,
                wall: v.wall,
                outcome: v.outcome,
                event: v.event,
                prev: v.prev,
                checkpoint: v.checkpoint.is_some(),
            };
            each(&fields, line, &hash);
            place.offset += got as u64;
            self.last = Cursor { seq: v.seq, hash };
            n += 1;
        }
        Ok(n)
    }

    /// Finds the segment and offset of the entry after `self.last`; `false` if the log does
    /// not hold it yet.
    fn locate(&mut self) -> Result<bool, ForwardError> {
        let want = self.last.seq + 1;
        let segs = segment::list_segments(&self.audit_dir).map_err(|e| local(e.to_string()))?;
        // The last segment whose first entry is at or before `want`.
        let mut chosen = None;
        for (number, path) in &segs {
            match first_seq(path)? {
                Some(first) if first <= want => chosen = Some((*number, path.clone())),
                Some(_) => break,
                None => {}
            }
        }
        let Some((number, path)) = chosen else {
            return match segs.first() {
                Some((_, p)) if first_seq(p)?.is_some() => Err(local(format!(
                    "entry {want} is not in the local log (its first segment starts later)"
                ))),
                _ => Ok(false),
            };
        };
        let file = File::open(&path).map_err(|e| local(format!("open {}: {e}", path.display())))?;
        let mut reader = BufReader::with_capacity(64 << 10, file);
        let mut offset = 0u64;
        loop {
            self.line.clear();
            let got = read_line(&mut reader, &mut self.line)
                .map_err(|e| local(format!("read {}: {e}", path.display())))?;
            if got == 0 || self.line.last() != Some(&b'\n') {
                // `want` is not written yet; the last line must then be `want - 1`.
                reader
                    .seek(SeekFrom::Start(offset))
                    .map_err(|e| local(format!("seek {}: {e}", path.display())))?;
                break;
            }
            let line = &self.line[..self.line.len() - 1];
            let v = canonical::parse_view(line).map_err(|e| {
                local(format!(
                    "{} at byte {offset}: not a valid entry ({e})",
                    path.display()
                ))
            })?;
            if v.seq >= want {
                if v.seq > want {
                    return Err(local(format!(
                        "entry {want} is missing from the local log (found {} in {})",
                        v.seq,
                        path.display()
                    )));
                }
                reader
                    .seek(SeekFrom::Start(offset))
                    .map_err(|e| local(format!("seek {}: {e}", path.display())))?;
                break;
            }
            offset += got as u64;
        }
        self.place = Some(Place {
            number,
            path,
            reader,
            offset,
        });
        Ok(true)
    }

    /// At the end of the current segment: moves to the next one if it exists.
    fn advance_segment(&mut self) -> Result<bool, ForwardError> {
        let Some(place) = self.place.as_ref() else {
            return Ok(false);
        };
        let next = segment::segment_path(&self.audit_dir, place.number + 1);
        let file = match File::open(&next) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(local(format!("open {}: {e}", next.display()))),
        };
        self.place = Some(Place {
            number: place.number + 1,
            path: next,
            reader: BufReader::with_capacity(64 << 10, file),
            offset: 0,
        });
        Ok(true)
    }
}

/// Reads one line, at most [`super::syslog::MAX_MESSAGE_LEN`] bytes (a longer one is an
/// error: no entry is that long).
fn read_line(r: &mut BufReader<File>, out: &mut Vec<u8>) -> std::io::Result<usize> {
    let limit = super::syslog::MAX_MESSAGE_LEN as u64;
    let n = r.by_ref().take(limit).read_until(b'\n', out)?;
    if n as u64 == limit && out.last() != Some(&b'\n') {
        return Err(std::io::Error::other("line longer than any entry"));
    }
    Ok(n)
}

fn local(reason: String) -> ForwardError {
    ForwardError::LocalLog { reason }
}

/// The seq of the first complete line of `path`, if there is one.
fn first_seq(path: &Path) -> Result<Option<u64>, ForwardError> {
    let file = File::open(path).map_err(|e| local(format!("open {}: {e}", path.display())))?;
    let mut r = BufReader::new(file);
    let mut line = Vec::new();
    read_line(&mut r, &mut line).map_err(|e| local(format!("read {}: {e}", path.display())))?;
    let Some(line) = line.strip_suffix(b"\n") else {
        return Ok(None);
    };
    canonical::parse_view(line)
        .map(|v| Some(v.seq))
        .map_err(|e| {
            local(format!(
                "{} line 1: not a valid entry ({e})",
                path.display()
            ))
        })
}

/// The seq of the last complete entry of the log in `dir/audit/` (0 if there is none), read
/// from the end of the last non-empty segment.
pub(crate) fn last_seq(dir: &Path) -> Result<u64, ForwardError> {
    let audit_dir = segment::audit_dir(dir);
    let segs = segment::list_segments(&audit_dir).map_err(|e| local(e.to_string()))?;
    for (_, path) in segs.iter().rev() {
        if let Some(seq) = last_seq_of(path)? {
            return Ok(seq);
        }
    }
    Ok(0)
}

fn last_seq_of(path: &Path) -> Result<Option<u64>, ForwardError> {
    let io = |e: std::io::Error| local(format!("read {}: {e}", path.display()));
    let mut f = File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    let mut window = 8u64 << 10;
    loop {
        let start = len.saturating_sub(window);
        f.seek(SeekFrom::Start(start)).map_err(io)?;
        let mut buf = Vec::new();
        f.by_ref()
            .take(len - start)
            .read_to_end(&mut buf)
            .map_err(io)?;
        // Drop an incomplete last line, then find the start of the last complete one.
        let Some(end) = buf.iter().rposition(|b| *b == b'\n') else {
            if start == 0 {
                return Ok(None);
            }
            window = window.saturating_mul(4);
            continue;
        };
        let body = &buf[..end];
        match body.iter().rposition(|b| *b == b'\n') {
            Some(p) => return parse_seq_of(&body[p + 1..], path).map(Some),
            None if start == 0 => return parse_seq_of(body, path).map(Some),
            None => window = window.saturating_mul(4),
        }
    }
}

fn parse_seq_of(line: &[u8], path: &Path) -> Result<u64, ForwardError> {
    canonical::parse_view(line).map(|v| v.seq).map_err(|e| {
        local(format!(
            "{} last line: not a valid entry ({e})",
            path.display()
        ))
    })
}
