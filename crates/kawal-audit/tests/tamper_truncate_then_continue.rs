//! Attack: truncating the log and appending a fresh, well-chained continuation, so that the
//! log looks complete; and the daemon continuing after such damage, which must stay visible.

mod common;

use common::*;
use kawal_audit::{Error, Outcome, Problem, TamperFinding};

/// G045: PL-4-2
#[test]
fn detects_a_forged_continuation_after_truncation() {
    let fx = Fixture::new();
    fx.fill(40);
    let anchor = fx.anchor().unwrap();
    let seg = &fx.segments()[0];
    let mut lines = read_lines(seg);
    let total = lines.len();
    lines.truncate(20);
    // Continue with plausible events, seqs and links correct, past the anchored seq.
    let template = parse(&lines[4]);
    assert!(!template.is_checkpoint());
    while lines.len() < total + 5 {
        let last = parse(lines.last().unwrap());
        let mut e = template.clone();
        e.seq = last.seq + 1;
        e.prev = last.hash();
        e.outcome = Outcome::Info;
        lines.push(line_of(&e));
    }
    write_lines(seg, &lines);
    // Without signing key there are no checkpoints, and the anchored one is gone.
    let b = bad(fx.verify());
    assert_eq!(b.seq, Some(anchor.seq));
    assert!(matches!(b.problem, Problem::AnchorMismatch { .. }), "{b}");
    assert!(matches!(
        fx.open_with(small_options()),
        Err(Error::Tampered {
            finding: TamperFinding::AnchorMismatch { .. }
        })
    ));
}

/// G045: PL-4-2
#[test]
fn continuing_after_truncation_leaves_a_signed_record_forever() {
    let fx = Fixture::new();
    fx.fill(40);
    let old_anchor = fx.anchor().unwrap();
    let seg = &fx.segments()[0];
    let mut lines = read_lines(seg);
    lines.truncate(15);
    write_lines(seg, &lines);

    let refused = fx.open_with(small_options());
    let Err(Error::Tampered { finding }) = refused else {
        panic!("expected the open to be refused, got {refused:?}");
    };
    assert!(matches!(
        finding,
        TamperFinding::Truncated { last_seq: 15, .. }
    ));

    let log = kawal_audit::AuditLog::open_after_tamper(
        fx.dir(),
        UID,
        fx.signer.clone(),
        fx.anchors.clone(),
        std::sync::Arc::new(kawal_audit::SystemClock::new()),
        small_options(),
    )
    .unwrap();
    log.append(event(99)).unwrap();
    log.close().unwrap();

    // Consistent against the new anchor, but the record of the damage is there to see.
    let report = fx.verify().unwrap();
    assert_eq!(report.tamper_records, vec![16]);
    let record = parse(&read_lines(seg)[15]);
    assert_eq!(record.event, "audit.tamper_detected");
    assert_eq!(record.outcome, Outcome::Failure);
    assert_eq!(record.details.get("finding"), Some(&"truncated".into()));
    assert_eq!(
        record.details.get("anchor_seq"),
        Some(&old_anchor.seq.into())
    );
    assert!(
        parse(&read_lines(seg)[16]).is_checkpoint(),
        "the record is signed at once"
    );
    // Against the anchor from before, the log still fails.
    let trusted = fx.trusted();
    let old = kawal_audit::verify(fx.dir(), UID, &trusted, Some(&old_anchor));
    let problem = bad(old).problem;
    assert!(
        matches!(
            problem,
            Problem::Truncated { .. } | Problem::AnchorMismatch { .. }
        ),
        "{problem}"
    );
}
