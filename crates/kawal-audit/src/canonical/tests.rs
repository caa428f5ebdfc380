//! Round trips and rejections of the canonical form.

use super::*;
use crate::entry::EntryHash;

fn sample(seq: u64, details: Details, checkpoint: Option<Checkpoint>) -> Entry {
    let (event, actor, outcome) = if checkpoint.is_some() {
        (entry::CHECKPOINT_EVENT, entry::LOG_ACTOR, Outcome::Info)
    } else {
        ("auth.login", "admin \"root\" \\ ☃", Outcome::Denied)
    };
    Entry {
        seq,
        wall: WallTime::from_unix_micros(1_750_000_000_123_456).unwrap(),
        clock: ClockState::Synchronised,
        mono_ns: 987_654_321,
        boot_id: "7cd0d151-e4cd-4c6b-afe1-61b8db0f3485".into(),
        event: event.into(),
        actor: actor.into(),
        outcome,
        details,
        prev: EntryHash([0xab; 32]),
        checkpoint,
    }
}

fn line_of(e: &Entry) -> String {
    String::from_utf8(e.canonical_bytes()).unwrap()
}

#[test]
fn round_trips_entries_and_checkpoints() {
    let details = Details::new()
        .with("user", "alice\n\t\u{1}\"x\"")
        .with("attempts", 3u8)
        .with("delta", i64::MIN)
        .with("max", u64::MAX)
        .with("ok", false)
        .with("password", "hunter2");
    let cp = Checkpoint {
        head: EntryHash([1; 32]),
        count: 6,
        key_version: 7,
        sig: [9; 64],
    };
    for e in [
        sample(7, details, None),
        sample(7, Details::new(), Some(cp)),
    ] {
        let bytes = e.canonical_bytes();
        let back = parse_entry(&bytes).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.canonical_bytes(), bytes);
        // It is plain JSON to any other reader too.
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["seq"], 7);
    }
}

#[test]
fn rejects_every_non_canonical_variant() {
    let base = line_of(&sample(
        5,
        Details::new().with("a", 1u8).with("b", "x"),
        None,
    ));
    parse_entry(base.as_bytes()).unwrap();
    let variants: Vec<(&str, String)> = vec![
        ("space", base.replacen("\"seq\":5", "\"seq\": 5", 1)),
        ("leading zero", base.replacen("\"seq\":5", "\"seq\":05", 1)),
        ("float", base.replacen("\"a\":1", "\"a\":1.0", 1)),
        ("minus zero", base.replacen("\"a\":1", "\"a\":-0", 1)),
        (
            "unsorted keys",
            base.replacen("{\"a\":1,\"b\":\"x\"}", "{\"b\":\"x\",\"a\":1}", 1),
        ),
        (
            "repeated key",
            base.replacen("{\"a\":1,\"b\":\"x\"}", "{\"a\":1,\"a\":2}", 1),
        ),
        (
            "escaped slash",
            base.replacen("\"b\":\"x\"", "\"b\":\"\\/\"", 1),
        ),
        (
            "needless escape",
            base.replacen("\"b\":\"x\"", "\"b\":\"\\u0078\"", 1),
        ),
        ("upper hex", base.replacen("abab", "ABAB", 1)),
        ("trailing", format!("{base} ")),
        (
            "unknown field",
            base.replacen("{\"seq\":5", "{\"x\":1,\"seq\":5", 1),
        ),
        (
            "field order",
            base.replacen(
                "\"clock\":\"synchronised\",\"mono_ns\":987654321",
                "\"mono_ns\":987654321,\"clock\":\"synchronised\"",
                1,
            ),
        ),
        ("bad outcome", base.replacen("\"denied\"", "\"maybe\"", 1)),
        (
            "bad clock",
            base.replacen("\"synchronised\"", "\"Synchronised\"", 1),
        ),
        ("bad time", base.replacen("2025-06-15", "2025-06-31", 1)),
        ("utc offset", base.replacen("456Z", "456+00:00", 1)),
        (
            "raw control",
            base.replacen("\"b\":\"x\"", "\"b\":\"\u{1}\"", 1),
        ),
        (
            "unredacted",
            base.replacen("\"b\":\"x\"", "\"b\":\"x\",\"token\":\"abc\"", 1),
        ),
        (
            "fake checkpoint",
            base.replacen("auth.login", entry::CHECKPOINT_EVENT, 1),
        ),
    ];
    for (what, v) in variants {
        assert_ne!(v, base, "{what}: mutation did not apply");
        assert!(parse_entry(v.as_bytes()).is_err(), "{what} accepted: {v}");
    }
    let at = base.find("\"b\":\"x\"").unwrap() + 5;
    let mut not_utf8 = base.into_bytes();
    not_utf8[at] = 0xff;
    assert_eq!(parse_entry(&not_utf8).unwrap_err().reason, Reason::NotUtf8);
}

/// xorshift64*: a fixed-seed generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn string(&mut self) -> String {
        let alphabet = [
            'a', 'Z', '0', ' ', '"', '\\', '/', '\n', '\u{0}', '\u{1f}', '\u{7f}', 'é', '☃', '😀',
        ];
        let len = self.next() % 12;
        (0..len)
            .map(|_| alphabet[usize::try_from(self.next() % alphabet.len() as u64).unwrap()])
            .collect()
    }
}

#[test]
fn random_entries_round_trip_and_agree_with_serde_json() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..3000u64 {
        let mut d = Details::new();
        for k in 0..rng.next() % 5 {
            let key = format!("k{k}_{}", rng.next() % 3);
            match rng.next() % 3 {
                0 => d.insert(&key, rng.string()),
                1 => d.insert(&key, Value::Int(i128::from(rng.next() as i64))),
                _ => d.insert(&key, rng.next().is_multiple_of(2)),
            }
        }
        let mut e = sample(i + 1, d, None);
        e.actor = format!("a{}", rng.string().replace(|c: char| c.is_control(), ""));
        let bytes = e.canonical_bytes();
        assert_eq!(
            parse_entry(&bytes).unwrap(),
            e,
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        for (k, val) in e.details.iter() {
            match val {
                Value::Str(s) => assert_eq!(v["details"][k], serde_json::json!(s)),
                Value::Int(n) => assert_eq!(v["details"][k].to_string(), n.to_string()),
                Value::Bool(b) => assert_eq!(v["details"][k], serde_json::json!(b)),
            }
        }
    }
}
