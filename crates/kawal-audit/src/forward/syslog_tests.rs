//! Unit tests of the syslog codec: framing, formatting and the strict parser.

use super::*;
use crate::details::Details;
use crate::entry::Checkpoint;
use crate::time::ClockState;

fn entry(seq: u64, outcome: Outcome) -> Entry {
    let mut details = Details::new();
    details.insert("ip", "192.0.2.7");
    details.insert("note", "ünï \"q\" ] \\ \n");
    Entry {
        seq,
        wall: WallTime::from_unix_micros(1_717_171_717_123_456).unwrap(),
        clock: ClockState::Synchronised,
        mono_ns: 42,
        boot_id: "b00t".into(),
        event: "auth.login".into(),
        actor: "alice".into(),
        outcome,
        details,
        prev: EntryHash([7; 32]),
        checkpoint: None,
    }
}

fn frame_of(e: &Entry) -> Vec<u8> {
    let canonical = e.canonical_bytes();
    let mut out = Vec::new();
    write_frame(
        &mut out,
        "KWL-TEST-0001",
        &EntryFields::from(e),
        &canonical,
        &EntryHash::of(&canonical),
    );
    out
}

/// G045: PL-4-2
#[test]
fn a_message_has_the_rfc5424_header_and_structured_data() {
    let e = entry(12, Outcome::Denied);
    let canonical = e.canonical_bytes();
    let mut out = Vec::new();
    let hash = EntryHash::of(&canonical);
    write_message(
        &mut out,
        "KWL-TEST-0001",
        &EntryFields::from(&e),
        &canonical,
        &hash,
    );
    let expected_head = format!(
        "<84>1 2024-05-31T16:08:37.123456Z KWL-TEST-0001 kawal - audit \
         [kawal@32473 seq=\"12\" hash=\"{hash}\" prev=\"{}\"] ",
        EntryHash([7; 32])
    );
    assert!(
        out.starts_with(expected_head.as_bytes()),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert!(out.ends_with(&canonical));
    assert!(!out.contains(&b'\n'), "one message is one line");
}

/// G045: PL-4-2
#[test]
fn severity_follows_the_outcome_and_tamper_is_critical() {
    let mut e = entry(1, Outcome::Success);
    assert_eq!(severity(&EntryFields::from(&e)), 5);
    e.outcome = Outcome::Failure;
    assert_eq!(severity(&EntryFields::from(&e)), 4);
    e.outcome = Outcome::Info;
    assert_eq!(severity(&EntryFields::from(&e)), 6);
    e.event = entry::TAMPER_EVENT.into();
    assert_eq!(severity(&EntryFields::from(&e)), 2);
    for name in CRITICAL_EVENTS {
        e.event = name.into();
        assert_eq!(severity(&EntryFields::from(&e)), 2, "{name}");
    }
}

/// G045: PL-4-2
#[test]
fn frames_are_octet_counted_and_split_back() {
    let a = frame_of(&entry(1, Outcome::Success));
    let b = frame_of(&entry(2, Outcome::Info));
    let (len, rest) = a.split_at(a.iter().position(|c| *c == b' ').unwrap());
    assert_eq!(
        std::str::from_utf8(len).unwrap().parse::<usize>().unwrap(),
        rest.len() - 1
    );
    let mut stream = a.clone();
    stream.extend_from_slice(&b);
    let (m1, used) = take_frame(&stream).unwrap().unwrap();
    assert_eq!(parse_message(m1).unwrap().seq, 1);
    let (m2, used2) = take_frame(&stream[used..]).unwrap().unwrap();
    assert_eq!(parse_message(m2).unwrap().seq, 2);
    assert_eq!(used + used2, stream.len());
    // Partial frames wait for more bytes.
    for cut in [0, 1, 3, a.len() - 1] {
        assert_eq!(take_frame(&a[..cut]).unwrap(), None, "cut at {cut}");
    }
    for bad in [
        &b"x"[..],
        b" 12",
        b"012 a",
        b"12x",
        b"99999999 a",
        b"123456789",
    ] {
        assert!(take_frame(bad).is_err(), "{}", String::from_utf8_lossy(bad));
    }
    assert_eq!(
        take_frame(b"3000000 x"),
        Err(FrameError::TooLong(3_000_000))
    );
}

/// G045: PL-4-2
#[test]
fn a_message_parses_back_to_the_same_entry() {
    let mut e = entry(9, Outcome::Info);
    e.event = entry::CHECKPOINT_EVENT.into();
    e.actor = entry::LOG_ACTOR.into();
    e.details = Details::new();
    e.checkpoint = Some(Checkpoint {
        head: e.prev,
        count: 8,
        key_version: 3,
        sig: [5; 64],
    });
    let f = frame_of(&e);
    let (msg, _) = take_frame(&f).unwrap().unwrap();
    let m = parse_message(msg).unwrap();
    assert_eq!(m.entry, e);
    assert_eq!(m.seq, 9);
    assert_eq!(m.hash, e.hash());
    assert_eq!(m.prev, e.prev);
    assert_eq!(m.hostname, "KWL-TEST-0001");
    assert_eq!(m.pri, 80 + 6);
    assert!(
        std::str::from_utf8(msg)
            .unwrap()
            .contains(" checkpoint [kawal@32473 ")
    );
}

fn good_line() -> (Entry, String) {
    let e = entry(5, Outcome::Success);
    let f = frame_of(&e);
    let (msg, _) = take_frame(&f).unwrap().unwrap();
    (e, String::from_utf8(msg.to_vec()).unwrap())
}

/// G045: PL-4-2
#[test]
fn foreign_lines_are_told_apart_from_bad_ones() {
    for foreign in [
        "",
        "garbage",
        "<13>Jun  1 12:00:00 host sshd[1]: Accepted publickey",
        "<13>1 2024-01-01T00:00:00Z host app - - - hello",
        "\u{0}\u{1}\u{ff}",
    ] {
        assert_eq!(
            parse_message(foreign.as_bytes()),
            Err(ParseProblem::Foreign)
        );
    }
}

/// G045: PL-4-2
#[test]
fn altered_messages_are_refused_with_a_reason() {
    let (_, good) = good_line();
    assert!(parse_message(good.as_bytes()).is_ok());
    let cases: Vec<(String, &str)> = vec![
        (good.replacen("seq=\"5\"", "seq=\"6\"", 1), "seq"),
        (good.replacen("seq=\"5\"", "seq=\"05\"", 1), "leading zero"),
        (good.replacen("\"alice\"", "\"mallory\"", 1), "hash"),
        (good.replacen("prev=\"07", "prev=\"08", 1), "prev"),
        (good.replacen("<85>", "<192>", 1), "PRI"),
        (good.replacen("<85>1", "<85>2", 1), "version"),
        (good.replacen(" seq=\"5\"", "", 1), "missing seq"),
        (
            good.replacen(" seq=\"5\"", " seq=\"5\" seq=\"5\"", 1),
            "repeated",
        ),
        (good.replacen("\"] {", "\" x=\"1\"] {", 1), "unknown param"),
        (good.replacen("\"] {", "\"", 1), "unterminated"),
        (format!("{good}x"), "trailing"),
        (good.replacen("] {", "]{", 1), "no space"),
        (good.replacen("KWL-TEST-0001", "KWL TEST", 1), "hostname"),
        (
            good.replacen("2024-05-31T16:08:37.123456Z", "yesterday", 1),
            "timestamp",
        ),
        (good.split('{').next().unwrap().to_owned(), "no message"),
    ];
    for (line, what) in cases {
        let r = parse_message(line.as_bytes());
        assert!(
            r.is_err() && r != Err(ParseProblem::Foreign),
            "{what}: {r:?}"
        );
    }
    // Truncation anywhere never panics and never passes.
    for cut in 0..good.len() {
        assert!(parse_message(&good.as_bytes()[..cut]).is_err());
    }
}

/// G045: PL-4-2
#[test]
fn other_sd_elements_are_skipped() {
    let (e, good) = good_line();
    let with_other = good.replacen(
        " [kawal@32473",
        " [origin@1 ip=\"192.0.2.1\" x=\"a\\\"b\\]c\"][kawal@32473",
        1,
    );
    assert_eq!(parse_message(with_other.as_bytes()).unwrap().entry, e);
}

/// G045: PL-4-2
#[test]
fn hostnames_are_checked() {
    assert!(is_valid_hostname("KWL-0001"));
    assert!(!is_valid_hostname(""));
    assert!(!is_valid_hostname("a b"));
    assert!(!is_valid_hostname("ü"));
    assert!(!is_valid_hostname(&"a".repeat(256)));
}
