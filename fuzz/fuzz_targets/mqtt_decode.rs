//! Arbitrary bytes into the sensor listener's framing (ADR 0004): `frame::decode_frame` cuts
//! successive packets off the input with a 64 KiB cap. It must never panic, never report more
//! bytes used than it was given or than the cap, and every packet it accepts must encode back
//! to a frame that decodes to the same packet (round-trip soundness). Known crash patterns of
//! MQTT brokers are in `corpus/mqtt_decode/`; `crates/kawal-gateway/src/frame.rs` and
//! `crates/kawal-gateway/tests/broker.rs` hold their deterministic tests.
#![no_main]

use kawal_gateway::frame::{self, FrameError};
use libfuzzer_sys::fuzz_target;

const CAP: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while !rest.is_empty() {
        match frame::decode_frame(rest, CAP) {
            Ok(Some((packet, used))) => {
                assert!(used >= 2 && used <= rest.len() && used <= CAP);
                let again = frame::encode(&packet).expect("an accepted packet encodes");
                match frame::decode_frame(&again, CAP) {
                    Ok(Some((p2, n2))) => {
                        assert_eq!(p2, packet, "round trip changed the packet");
                        assert_eq!(n2, again.len());
                    }
                    other => panic!("re-encoded packet does not decode: {other:?}"),
                }
                rest = &rest[used..];
            }
            Ok(None) => break,
            Err(FrameError::TooLarge { len, cap }) => {
                assert!(len > cap);
                break;
            }
            Err(_) => break,
        }
    }
});
