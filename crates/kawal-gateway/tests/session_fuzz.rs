//! The MQTT session state machine under seeded pseudo-random packet sequences: the stable
//! twin of `fuzz/fuzz_targets/mqtt_session.rs`, for CI without nightly. Both drive one real
//! session (`conn::run` over an in-memory duplex stream) through
//! `kawal_gateway::fuzzing`, which holds the generator, the fake registry and uplink, and the
//! invariants: no panic, the session ends, nothing outside the sensor's lane reaches the
//! uplink, every PUBACK answers a message the uplink stored.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::disallowed_macros,
    reason = "test: a failure should stop it loudly; the coverage counts are printed"
)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kawal_gateway::fuzzing::{Harness, Script, Source};

/// Sequences played.
const RUNS: u64 = 3000;
/// Played sequences stop here even if fewer ran (a slow machine); the count is asserted.
const TIME_BUDGET: Duration = Duration::from_secs(15);

/// splitmix64: a small deterministic PRNG, so that a failing seed replays. Not for crypto.
struct SplitMix {
    state: u64,
    steps_left: u32,
}

impl SplitMix {
    fn new(seed: u64) -> Self {
        let mut s = Self {
            state: seed,
            steps_left: 0,
        };
        s.steps_left = s.below(40) + 1;
        s
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl Source for SplitMix {
    fn below(&mut self, n: u32) -> u32 {
        u32::try_from(self.next() % u64::from(n.max(1))).unwrap()
    }

    fn more(&mut self) -> bool {
        self.steps_left = self.steps_left.saturating_sub(1);
        self.steps_left > 0
    }
}

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// G045: PL-1-1
/// Threat ST-D-10 (malformed or out-of-order MQTT from an authenticated sensor).
#[test]
fn the_session_survives_thousands_of_out_of_order_packet_sequences() {
    // A panic in a task the session spawns (writer, acker) is caught by tokio; count it.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));

    let dir = tempfile::tempdir().unwrap();
    let harness = Harness::new(dir.path()).unwrap();
    let started = Instant::now();
    let (mut accepted, mut refused, mut pubacks, mut stored, mut uplink_refused) = (0, 0, 0, 0, 0);
    let mut stored_qos1 = 0;
    let mut ran = 0u64;
    for seed in 0..RUNS {
        if started.elapsed() > TIME_BUDGET {
            break;
        }
        let script = Script::generate(&mut SplitMix::new(seed));
        match harness.run(&script) {
            Ok(r) => {
                match r.connack {
                    Some(0) => accepted += 1,
                    _ => refused += 1,
                }
                pubacks += r.pubacks;
                stored += r.stored;
                stored_qos1 += r.stored_qos1;
                uplink_refused += r.refused;
            }
            Err(v) => panic!("seed {seed}: {v}\n{script:#?}"),
        }
        assert_eq!(PANICS.load(Ordering::SeqCst), 0, "seed {seed} panicked");
        ran += 1;
    }
    println!(
        "{ran} sequences in {:?}: {accepted} sessions accepted, {refused} refused, \
         {pubacks} PUBACKs, {stored} messages stored ({stored_qos1} QoS 1), \
         {uplink_refused} refused by the uplink",
        started.elapsed()
    );
    assert!(ran >= 1000, "only {ran} sequences within {TIME_BUDGET:?}");
    // The generator reaches the states it is meant to.
    assert!(
        accepted > ran / 4 && refused > ran / 10,
        "{accepted}/{refused}"
    );
    assert!(pubacks > 0 && stored > 0 && uplink_refused > 0);
}
