//! [`verify()`]: the full check of a log, for `kawal log verify` and the compliance evidence.
//!
//! It reads every segment and checks, in order: that each line is a canonical entry; that
//! seqs run 1, 2, 3… without gap, repeat or reordering; that each `prev` is the hash of the
//! entry before (the first is all zeros); that each checkpoint's `head` and `count` match what
//! precedes it and its signature verifies with the trusted key of its `key_version`; and, given
//! the anchor, that the anchored checkpoint is present and unchanged (so a truncated log, or
//! one truncated and then continued, fails). It stops at the first bad entry and names it.
//!
//! What it cannot see without an anchor: removal of whole entries from the end back to a
//! checkpoint boundary. Entries after the last checkpoint are protected by the chain only
//! (reported as [`VerifyReport::unsigned_tail`]).
//!
//! Parsing, hashing and signature checks of each segment are spread over the available cores
//! (up to 8), and the next segment is read while one is checked; only the cheap linking pass
//! is sequential.

use std::path::Path;

use crate::canonical::{self, ParseError, Reason};
use crate::chain::{Anchor, SignatureProblem, TrustedKeys, checkpoint_message};
use crate::entry::{self, EntryHash};
use crate::segment;

mod report;

pub use self::report::{BadEntry, Problem, VerifyError, VerifyReport};

/// What the parallel pass learns about one line.
struct LineInfo {
    seq: u64,
    prev: EntryHash,
    hash: EntryHash,
    /// Boxed: checkpoints are rare, and the vectors of these are what verify writes most.
    checkpoint: Option<Box<CpInfo>>,
    tamper_record: bool,
}

/// The checkpoint part of a [`LineInfo`].
struct CpInfo {
    head: EntryHash,
    count: u64,
    key_version: u32,
    sig: Result<(), SignatureProblem>,
    sig_bytes: [u8; 64],
}

/// The newest checkpoint seen by a fast pass, whose signature is checked at the end.
#[derive(Clone, Copy)]
struct LastCheckpoint {
    seq: u64,
    head: EntryHash,
    count: u64,
    key_version: u32,
    sig: [u8; 64],
}

/// Parses, hashes and checks the signature of each line of `chunk` (whole lines, each ending
/// in `\n`) into `out`; stops at the first line that does not parse and returns why.
fn scan_chunk(
    chunk: &[u8],
    uid: &str,
    keys: Option<&TrustedKeys>,
    out: &mut Vec<LineInfo>,
) -> Option<ParseError> {
    out.clear();
    let mut pos = 0;
    while pos < chunk.len() {
        let rest = &chunk[pos..];
        let (v, len) = match canonical::parse_prefix(rest) {
            Ok((v, len)) if rest.get(len) == Some(&b'\n') => (v, len),
            Ok((_, len)) => {
                return Some(ParseError {
                    offset: len,
                    reason: Reason::Trailing,
                });
            }
            Err(e) => return Some(e),
        };
        let checkpoint = v.checkpoint.map(|cp| {
            // Without keys (the fast pass), signatures are checked once, on the newest checkpoint.
            let sig = keys.map_or(Ok(()), |keys| {
                let msg = checkpoint_message(uid, v.seq, &cp.head, cp.count);
                keys.verify(cp.key_version, &msg, &cp.sig)
            });
            Box::new(CpInfo {
                head: cp.head,
                count: cp.count,
                key_version: cp.key_version,
                sig,
                sig_bytes: cp.sig,
            })
        });
        out.push(LineInfo {
            seq: v.seq,
            prev: v.prev,
            hash: EntryHash::of(&rest[..len]),
            checkpoint,
            tamper_record: v.event == entry::TAMPER_EVENT.as_bytes(),
        });
        pos += len + 1;
    }
    None
}

/// Splits `body` (whole lines) into at most `n` runs of whole lines of about equal size.
fn split_chunks(body: &[u8], n: usize) -> Vec<&[u8]> {
    let mut chunks = Vec::with_capacity(n);
    let mut start = 0;
    for k in 1..n {
        let target = (body.len() * k / n).max(start);
        let Some(nl) = body[target..].iter().position(|b| *b == b'\n') else {
            break;
        };
        let end = target + nl + 1;
        chunks.push(&body[start..end]);
        start = end;
    }
    chunks.push(&body[start..]);
    chunks
}

/// Below this size a segment is checked on the calling thread only.
const PARALLEL_MIN_BYTES: usize = 256 << 10;

/// Reads `path` into `buf`, reusing its memory (fresh pages for every segment cost more
/// than hashing them).
fn read_into(path: &Path, buf: &mut Vec<u8>) -> Result<(), VerifyError> {
    use std::io::Read;

    buf.clear();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(buf))
        .map(|_| ())
        .map_err(|source| VerifyError::Io {
            path: path.to_owned(),
            source,
        })
}

/// Verifies the log in `dir/audit/` of device `device_uid` (see the module docs).
///
/// On a log that is being written, load the anchor *before* calling this: the writer saves
/// an anchor only after its checkpoint is durable, so the files read afterwards contain it.
/// An incomplete last line (a write in progress) is reported, not failed.
pub fn verify(
    dir: &Path,
    device_uid: &str,
    trusted: &TrustedKeys,
    anchor: Option<&Anchor>,
) -> Result<VerifyReport, VerifyError> {
    // Fast pass: every structural check, and only the newest checkpoint's signature. Its
    // signature covers the chain head, which commits to every entry and every earlier
    // checkpoint before it, so the log up to it is authentic if it verifies. On any failure
    // the full pass runs, checking every signature, so the FIRST bad entry is the one named.
    if let Ok((report, last)) = verify_pass(dir, device_uid, trusted, anchor, false) {
        let newest_ok = match last {
            None => true,
            Some(cp) => {
                let msg = checkpoint_message(device_uid, cp.seq, &cp.head, cp.count);
                trusted.verify(cp.key_version, &msg, &cp.sig).is_ok()
            }
        };
        if newest_ok {
            return Ok(report);
        }
    }
    verify_pass(dir, device_uid, trusted, anchor, true).map(|(report, _)| report)
}

fn verify_pass(
    dir: &Path,
    device_uid: &str,
    trusted: &TrustedKeys,
    anchor: Option<&Anchor>,
    all_signatures: bool,
) -> Result<(VerifyReport, Option<LastCheckpoint>), VerifyError> {
    let last_cp = std::cell::Cell::new(None);
    let audit_dir = segment::audit_dir(dir);
    let segs = segment::list_segments(&audit_dir).map_err(|e| match e {
        crate::Error::Io { path, source, .. } => VerifyError::Io { path, source },
        other => VerifyError::Io {
            path: audit_dir.clone(),
            source: std::io::Error::other(other),
        },
    })?;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let mut report = VerifyReport {
        segments: segs.len(),
        ..VerifyReport::default()
    };
    let (mut buf, mut next_buf) = (Vec::new(), Vec::new());
    let mut infos: Vec<Vec<LineInfo>> = (0..workers).map(|_| Vec::new()).collect();
    if let Some((_, first)) = segs.first() {
        read_into(first, &mut buf)?;
    }
    let mut last_line = 0;
    for (i, (_, path)) in segs.iter().enumerate() {
        let ctx = Ctx {
            path,
            last: i + 1 == segs.len(),
            uid: device_uid,
            trusted: all_signatures.then_some(trusted),
            anchor,
            workers,
            last_cp: &last_cp,
        };
        // Read the next segment while this one is checked.
        let (lines, prefetched) = std::thread::scope(|s| {
            let next = &mut next_buf;
            let prefetch = segs
                .get(i + 1)
                .map(|(_, p)| s.spawn(move || read_into(p, next)));
            let lines = check_segment(&ctx, &buf, &mut report, &mut infos);
            let prefetched = prefetch.map(|h| h.join().unwrap_or_else(|_| Err(panicked(path))));
            (lines, prefetched)
        });
        last_line = lines?;
        prefetched.transpose()?;
        std::mem::swap(&mut buf, &mut next_buf);
    }
    if let Some(a) = anchor {
        if report.last_seq < a.seq {
            let problem = Problem::Truncated {
                anchor_seq: a.seq,
                last_seq: report.last_seq,
            };
            let segment = segs.last().map(|(_, p)| p.clone());
            let seq = Some(report.last_seq + 1);
            let line = last_line + 1;
            return Err(VerifyError::Bad(Box::new(BadEntry {
                segment,
                line,
                seq,
                problem,
            })));
        }
        report.anchor_checked = true;
    }
    Ok((report, last_cp.get()))
}

/// What [`check_segment`] needs besides the bytes.
struct Ctx<'a> {
    path: &'a Path,
    last: bool,
    uid: &'a str,
    /// `None` in the fast pass: signatures are not checked per checkpoint.
    trusted: Option<&'a TrustedKeys>,
    anchor: Option<&'a Anchor>,
    workers: usize,
    last_cp: &'a std::cell::Cell<Option<LastCheckpoint>>,
}

fn panicked(path: &Path) -> VerifyError {
    let source = std::io::Error::other("verify worker panicked");
    VerifyError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The [`BadEntry`] at 0-based line `line` of `path`.
fn bad(path: &Path, line: u64, seq: Option<u64>, problem: Problem) -> VerifyError {
    let segment = Some(path.to_owned());
    VerifyError::Bad(Box::new(BadEntry {
        segment,
        line: line + 1,
        seq,
        problem,
    }))
}

/// Checks one segment's bytes, continuing the chain in `report`; returns its line count.
/// `infos` holds one reusable vector per worker.
fn check_segment(
    ctx: &Ctx<'_>,
    buf: &[u8],
    report: &mut VerifyReport,
    infos: &mut [Vec<LineInfo>],
) -> Result<u64, VerifyError> {
    let path = ctx.path;
    report.bytes += buf.len() as u64;
    // Whole lines only; an incomplete last line is judged after them.
    let complete = match buf.last() {
        None | Some(b'\n') => buf.len(),
        Some(_) => buf.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1),
    };
    let parts = if complete < PARALLEL_MIN_BYTES {
        1
    } else {
        ctx.workers
    };
    let chunks = split_chunks(&buf[..complete], parts);
    // The first chunk on this thread, the others on scoped workers.
    let errors: Vec<Option<ParseError>> = std::thread::scope(|s| {
        let mut slots = infos.iter_mut();
        let mut first = None;
        let mut handles = Vec::new();
        for (k, chunk) in chunks.iter().enumerate() {
            let Some(out) = slots.next() else { break };
            if k == 0 {
                first = Some((*chunk, out));
            } else {
                let (uid, trusted) = (ctx.uid, ctx.trusted);
                handles.push(s.spawn(move || scan_chunk(chunk, uid, trusted, out)));
            }
        }
        let mut errors = Vec::with_capacity(chunks.len());
        if let Some((chunk, out)) = first {
            errors.push(scan_chunk(chunk, ctx.uid, ctx.trusted, out));
        }
        for h in handles {
            // A panicked worker is a bug; report it as an error rather than a clean pass.
            let reason = Reason::Invalid("verify worker panicked");
            errors.push(h.join().unwrap_or(Some(ParseError { offset: 0, reason })));
        }
        errors
    });
    let mut n = 0;
    for (chunk_infos, parse_error) in infos.iter().zip(errors) {
        for info in chunk_infos {
            let seq = Some(info.seq);
            link(report, info, ctx.anchor).map_err(|p| bad(path, n, seq, p))?;
            if let Some(cp) = &info.checkpoint {
                ctx.last_cp.set(Some(LastCheckpoint {
                    seq: info.seq,
                    head: cp.head,
                    count: cp.count,
                    key_version: cp.key_version,
                    sig: cp.sig_bytes,
                }));
            }
            n += 1;
        }
        if let Some(e) = parse_error {
            return Err(bad(path, n, None, Problem::Parse(e)));
        }
    }
    if complete < buf.len() {
        if !ctx.last {
            return Err(bad(path, n, None, Problem::MissingNewline));
        }
        report.torn_tail_bytes = Some((buf.len() - complete) as u64);
    }
    Ok(n)
}

/// The sequential checks of one entry against the one before it (`report` holds the state).
fn link(
    report: &mut VerifyReport,
    info: &LineInfo,
    anchor: Option<&Anchor>,
) -> Result<(), Problem> {
    let expected = report.last_seq + 1;
    if info.seq != expected {
        return Err(Problem::Seq {
            expected,
            found: info.seq,
        });
    }
    if info.prev != report.head {
        return Err(Problem::Prev {
            expected: report.head,
            found: info.prev,
        });
    }
    if let Some(cp) = &info.checkpoint {
        if cp.head != report.head {
            return Err(Problem::CheckpointHead {
                expected: report.head,
                found: cp.head,
            });
        }
        if cp.count != report.last_seq {
            return Err(Problem::CheckpointCount {
                expected: report.last_seq,
                found: cp.count,
            });
        }
        match cp.sig {
            Ok(()) => {}
            Err(SignatureProblem::UnknownKeyVersion(v)) => {
                return Err(Problem::UnknownKeyVersion(v));
            }
            Err(SignatureProblem::BadSignature(v)) => {
                return Err(Problem::BadSignature { key_version: v });
            }
        }
    }
    if let Some(a) = anchor.filter(|a| a.seq == info.seq)
        && (info.hash != a.head || info.checkpoint.is_none())
    {
        return Err(Problem::AnchorMismatch {
            expected: a.head,
            found: info.hash,
        });
    }
    report.entries += 1;
    report.last_seq = info.seq;
    report.head = info.hash;
    report.unsigned_tail += 1;
    if let Some(cp) = &info.checkpoint {
        report.checkpoints += 1;
        report.last_checkpoint_seq = Some(info.seq);
        report.unsigned_tail = 0;
        if !report.key_versions.contains(&cp.key_version) {
            report.key_versions.push(cp.key_version);
        }
    }
    if info.tamper_record {
        report.tamper_records.push(info.seq);
    }
    Ok(())
}
