//! Reading entries back for display (`kawal log show`) and for resending to a sink.
//!
//! The reader parses each line with the same strict parser as [`crate::verify()`] but does
//! not check the chain: run `verify` for that. It reads segment by segment, one line at a
//! time, so memory does not grow with the log. An incomplete last line (a write in progress
//! in another process, or cut by a crash) is skipped.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::canonical;
use crate::entry::{Entry, Outcome};
use crate::error::{Error, Result};
use crate::segment;

/// Which entries [`read_entries`] yields. The default yields every entry but checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only events named this or below it: `"auth"` matches `auth` and `auth.login`, not
    /// `authz.check`.
    pub event_prefix: Option<String>,
    /// Only entries with this seq or a later one.
    pub since_seq: Option<u64>,
    /// Only entries with this outcome.
    pub outcome: Option<Outcome>,
    /// Also yield checkpoint entries.
    pub include_checkpoints: bool,
}

impl Filter {
    /// Whether `e` passes the filter.
    pub fn matches(&self, e: &Entry) -> bool {
        let event_ok = self.event_prefix.as_deref().is_none_or(|p| {
            let p = p.strip_suffix('.').unwrap_or(p);
            e.event == p
                || (e.event.starts_with(p) && e.event.as_bytes().get(p.len()) == Some(&b'.'))
        });
        event_ok
            && self.since_seq.is_none_or(|s| e.seq >= s)
            && self.outcome.is_none_or(|o| e.outcome == o)
            && (self.include_checkpoints || !e.is_checkpoint())
    }
}

/// An iterator over the entries of a log, in seq order as stored.
#[derive(Debug)]
pub struct Entries {
    segments: VecDeque<PathBuf>,
    current: Option<(PathBuf, BufReader<File>, u64)>,
    filter: Filter,
    line: Vec<u8>,
}

/// The entries of the log in `dir/audit/` that pass `filter`. Errors for single lines
/// ([`Error::Corrupt`]) are yielded in place and reading goes on.
pub fn read_entries(dir: &Path, filter: Filter) -> Result<Entries> {
    let segs = segment::list_segments(&segment::audit_dir(dir))?;
    let mut segments: VecDeque<PathBuf> = segs.into_iter().map(|(_, p)| p).collect();
    if let Some(since) = filter.since_seq {
        // Skip whole segments that end before `since`: those followed by one starting at or
        // before it.
        while segments.len() > 1 && first_seq(&segments[1]).is_some_and(|s| s <= since) {
            segments.pop_front();
        }
    }
    Ok(Entries {
        segments,
        current: None,
        filter,
        line: Vec::with_capacity(512),
    })
}

/// The seq of the first line of `path`, if it parses.
fn first_seq(path: &Path) -> Option<u64> {
    let mut r = BufReader::new(File::open(path).ok()?);
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line).ok()?;
    let line = line.strip_suffix(b"\n")?;
    canonical::parse_view(line).ok().map(|v| v.seq)
}

impl Iterator for Entries {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.current.is_none() {
                let path = self.segments.pop_front()?;
                match File::open(&path) {
                    Ok(f) => self.current = Some((path, BufReader::new(f), 0)),
                    Err(e) => return Some(Err(Error::io("open", path, e))),
                }
            }
            let (path, reader, line_no) = self.current.as_mut()?;
            self.line.clear();
            match reader.read_until(b'\n', &mut self.line) {
                Ok(0) => {
                    self.current = None;
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    let path = path.clone();
                    self.current = None;
                    return Some(Err(Error::io("read", path, e)));
                }
            }
            *line_no += 1;
            let Some(line) = self.line.strip_suffix(b"\n") else {
                // Incomplete last line: not (yet) an entry.
                self.current = None;
                continue;
            };
            match canonical::parse_entry(line) {
                Ok(e) if self.filter.matches(&e) => return Some(Ok(e)),
                Ok(_) => {}
                Err(reason) => {
                    return Some(Err(Error::Corrupt {
                        path: path.clone(),
                        line: *line_no,
                        reason,
                    }));
                }
            }
        }
    }
}
