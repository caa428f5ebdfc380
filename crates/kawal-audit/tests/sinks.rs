//! Durable batches reach the sinks after the sync; a failing sink never blocks or loses the
//! local log, and its failures are counted.

mod common;

use common::*;
use kawal_audit::{AuditOptions, MemorySink};

/// G045: PL-4-1
#[test]
fn a_sink_receives_every_durable_entry_in_order() {
    let fx = Fixture::new();
    let sink = MemorySink::new();
    let options = AuditOptions {
        sinks: vec![Box::new(sink.clone())],
        ..small_options()
    };
    let log = fx.open_with(options).unwrap();
    for i in 0..25 {
        log.append(event(i)).unwrap();
    }
    log.close().unwrap();
    let got: Vec<String> = sink.entries().iter().map(line_of).collect();
    let on_disk: Vec<String> = fx.all_lines().into_iter().map(|(_, l)| l).collect();
    assert_eq!(
        got, on_disk,
        "the sink saw exactly the log, checkpoints included"
    );
}

/// G045: PL-4-1
#[test]
fn a_failing_sink_is_counted_and_the_local_log_is_complete() {
    let fx = Fixture::new();
    let sink = MemorySink::new();
    sink.set_failing(true);
    let options = AuditOptions {
        sinks: vec![Box::new(sink.clone())],
        ..small_options()
    };
    let log = fx.open_with(options).unwrap();
    for i in 0..5 {
        log.append(event(i)).unwrap();
    }
    // Delivery is asynchronous; wait (bounded) for the failures to be counted.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while log.stats().sink_failures < 5 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(log.stats().sink_failures, 5);
    assert_eq!(log.stats().sink_batches_delivered, 0);
    log.close().unwrap();
    assert!(sink.entries().is_empty());
    assert_eq!(
        fx.verify().unwrap().entries,
        10,
        "5 events, each signed by its batch's checkpoint"
    );
}
