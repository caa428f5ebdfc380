//! Reading entries back with filters, for `kawal log show`.

mod common;

use common::*;
use kawal_audit::{Event, Filter, Outcome};

#[allow(clippy::unwrap_used, reason = "test helper")]
fn events(fx: &Fixture, filter: Filter) -> Vec<(u64, String, Outcome)> {
    kawal_audit::read_entries(fx.dir(), filter)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.seq, e.event, e.outcome))
        .collect()
}

/// G045: PL-4-1
#[test]
fn filters_by_event_prefix_seq_and_outcome() {
    let fx = Fixture::new();
    let log = fx
        .open_with(kawal_audit::AuditOptions {
            segment_max_bytes: 1_500,
            ..small_options()
        })
        .unwrap();
    let plan = [
        ("auth.login", Outcome::Success),
        ("auth.login", Outcome::Failure),
        ("authz.check", Outcome::Denied),
        ("update.applied", Outcome::Success),
        ("auth.logout", Outcome::Info),
    ];
    for round in 0..6u64 {
        for (name, outcome) in plan {
            log.append(Event::new(name, "alice", outcome).with("round", round))
                .unwrap();
        }
    }
    log.close().unwrap();
    assert!(fx.segments().len() > 2);

    let auth = events(
        &fx,
        Filter {
            event_prefix: Some("auth".into()),
            ..Filter::default()
        },
    );
    assert_eq!(auth.len(), 18);
    assert!(
        auth.iter().all(|(_, e, _)| e.starts_with("auth.")),
        "authz.* is not under auth"
    );
    let failed = events(
        &fx,
        Filter {
            outcome: Some(Outcome::Failure),
            ..Filter::default()
        },
    );
    assert_eq!(failed.len(), 6);
    let late = events(
        &fx,
        Filter {
            since_seq: Some(30),
            ..Filter::default()
        },
    );
    assert!(late.iter().all(|(s, _, _)| *s >= 30));
    assert_eq!(late.first().unwrap().0, 30.max(late.first().unwrap().0));
    let all = events(&fx, Filter::default());
    assert_eq!(all.len(), 30);
    assert_eq!(late.len(), all.iter().filter(|(s, _, _)| *s >= 30).count());
    let with_cps = events(
        &fx,
        Filter {
            include_checkpoints: true,
            ..Filter::default()
        },
    );
    assert!(with_cps.iter().any(|(_, e, _)| e == "audit.checkpoint"));
}
