//! PL-4-3: each entry carries a UTC timestamp with microseconds, the clock's synchronisation
//! state at that moment, a monotonic reading and the boot it belongs to.

mod common;

use std::sync::Arc;

use common::*;
use kawal_audit::{AuditLog, AuditOptions, ClockState, Filter};

/// G045: PL-4-3
#[test]
fn entries_record_the_clock_state_when_they_were_written() {
    let fx = Fixture::new();
    let clock = Arc::new(FixedClock::new(
        1_750_000_000_000_001,
        ClockState::Unsynchronised,
    ));
    let options = AuditOptions {
        boot_id: Some("boot-a".into()),
        ..small_options()
    };
    let log = AuditLog::open(
        fx.dir(),
        UID,
        fx.signer.clone(),
        fx.anchors.clone(),
        clock.clone(),
        options,
    )
    .unwrap();
    log.append(event(1)).unwrap();
    clock.set(1_750_000_100_000_002, ClockState::Synchronised);
    log.append(event(2)).unwrap();
    clock.set(1_750_000_200_000_003, ClockState::Unknown);
    log.append(event(3)).unwrap();
    log.close().unwrap();

    let lines = fx.all_lines();
    assert!(
        lines[0]
            .1
            .contains("\"wall\":\"2025-06-15T15:06:40.000001Z\",\"clock\":\"unsynchronised\"")
    );
    let entries: Vec<_> = kawal_audit::read_entries(fx.dir(), Filter::default())
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let states: Vec<_> = entries.iter().map(|e| e.clock).collect();
    assert_eq!(
        states,
        [
            ClockState::Unsynchronised,
            ClockState::Synchronised,
            ClockState::Unknown
        ]
    );
    assert_eq!(entries[1].wall.to_string(), "2025-06-15T15:08:20.000002Z");
    assert!(entries.windows(2).all(|w| w[0].mono_ns < w[1].mono_ns));
    assert!(entries.iter().all(|e| e.boot_id == "boot-a"));
}

/// G045: PL-4-3
#[test]
fn the_system_clock_says_its_sync_state_is_unknown_and_records_the_boot() {
    let fx = Fixture::new();
    let log = fx.open();
    log.append(event(1)).unwrap();
    log.close().unwrap();
    let e = parse(&fx.all_lines()[0].1);
    assert_eq!(e.clock, ClockState::Unknown);
    assert!(e.mono_ns > 0);
    let wall = e.wall.to_string();
    assert_eq!(wall.len(), 27, "{wall}: RFC 3339 UTC with microseconds");
    assert!(wall.ends_with('Z'));
    if let Ok(id) = std::fs::read_to_string("/proc/sys/kernel/random/boot_id") {
        assert_eq!(e.boot_id, id.trim());
    }
}
