//! One real MQTT session (`kawal_gateway::conn::run` over an in-memory duplex stream) driven by
//! the fuzzer's input (G045 PL-1-1; threat ST-D-10). The input becomes a script of client
//! steps through `arbitrary`: packets out of order (PUBLISH before CONNECT, two CONNECTs,
//! PUBACK for unknown ids, odd SUBSCRIBE filters, client-sent CONNACK/SUBACK/PINGRESP,
//! DISCONNECT then more bytes), malformed frames, random bytes between packets, and whole
//! packets from mqtt-proto's own `Arbitrary`. The driver and the invariants live once in
//! `kawal_gateway::fuzzing` (feature `fuzzing`), shared with the stable test
//! `crates/kawal-gateway/tests/session_fuzz.rs`: no panic (libFuzzer's panic hook aborts on a
//! panic in any task), the session ends within a bound, nothing outside the sensor's lane
//! reaches the uplink, every PUBACK answers a message the uplink stored.
#![no_main]

use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use kawal_gateway::fuzzing::{Harness, Script, Source};
use libfuzzer_sys::fuzz_target;
use mqtt_proto::v3::Packet;

/// The fuzzer's input as a [`Source`].
struct Input<'a, 'b>(&'a mut Unstructured<'b>);

impl Source for Input<'_, '_> {
    fn below(&mut self, n: u32) -> u32 {
        self.0.int_in_range(0..=n.max(1) - 1).unwrap_or(0)
    }

    fn more(&mut self) -> bool {
        !self.0.is_empty()
    }

    fn packet(&mut self) -> Option<Packet> {
        Packet::arbitrary(self.0).ok()
    }
}

static HARNESS: OnceLock<Harness> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let harness = HARNESS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("kawal-fuzz-session-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a folder for the audit log");
        Harness::new(&dir).expect("the session harness")
    });
    let mut u = Unstructured::new(data);
    let script = Script::generate(&mut Input(&mut u));
    if let Err(v) = harness.run(&script) {
        panic!("{v}\n{script:#?}");
    }
});
