#![allow(clippy::unwrap_used, reason = "tests")]

use serde_json::json;

use super::*;

/// G045: AU-1-10
/// The expiry marker uses the PKI's boundaries: expired at the end, 7 and 30 days
/// inclusive, and says how many days are left in words, not only in colour.
#[test]
fn expiry_markers_follow_the_pki_boundaries() {
    let now = 1_000_000_000;
    assert_eq!(Expiry::at(now + 31 * DAY, now), Expiry::Ok);
    assert_eq!(Expiry::at(now + 30 * DAY + 1, now), Expiry::Ok);
    assert_eq!(Expiry::at(now + 30 * DAY, now), Expiry::Warn30);
    assert_eq!(Expiry::at(now + 7 * DAY + 1, now), Expiry::Warn30);
    assert_eq!(Expiry::at(now + 7 * DAY, now), Expiry::Warn7);
    assert_eq!(Expiry::at(now + 1, now), Expiry::Warn7);
    assert_eq!(Expiry::at(now, now), Expiry::Expired);
    assert_eq!(Expiry::at(now - DAY, now), Expiry::Expired);
    let m = marker(Expiry::Warn7, Some(3 * DAY - 5)).unwrap();
    assert_eq!((m.class, m.text.as_str()), ("warn-7d", "3 days left"));
    assert_eq!(marker(Expiry::Warn7, Some(1)).unwrap().text, "1 day left");
    assert!(marker(Expiry::Ok, Some(90 * DAY)).is_none());
}

/// G045: AU-1-10
/// Expiry and last-seen times are read from Unix seconds, milliseconds, microseconds or
/// RFC 3339; missing fields are `-`; a revoked sensor gets no expiry warning.
#[test]
fn sensor_rows_read_every_time_form_and_show_missing_fields_as_a_dash() {
    let now = 1_750_000_000;
    let v = json!({"sensors": [
        {"uid": "s1", "role": "sensor", "state": "active", "serial": "0a1b",
         "not_after": now + 3 * DAY, "last_seen": (now - 60) * 1000},
        {"uid": "s2", "state": "active", "not_after": "2025-06-15T14:40:00Z",
         "last_seen": (now - 60) * 1_000_000},
        {"uid": "s3", "state": "revoked", "not_after": now - DAY},
        {"uid": "-bad"},
    ]});
    let rows = sensor_rows(&v, now);
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0].marker.as_ref().unwrap().class, "warn-7d");
    assert_eq!(rows[0].last_seen, "2025-06-15 15:05:40 UTC");
    assert_eq!(rows[1].role, "-");
    assert_eq!(rows[1].serial, "-");
    assert_eq!(rows[1].expires, "2025-06-15 14:40:00 UTC");
    assert_eq!(rows[1].marker.as_ref().unwrap().class, "expired");
    assert_eq!(rows[1].last_seen, rows[0].last_seen);
    assert!(rows[2].marker.is_none());
    assert_eq!(rows[3].last_seen, "-");
    assert!(!rows[3].actionable);
    assert!(rows[0].actionable);
}

/// G045: AU-1-10
/// The naming rule is the API's: 1..64 of `[A-Za-z0-9._:-]`, not starting with `-`.
#[test]
fn the_naming_rule_matches_the_api() {
    for ok in ["a", "boiler-7", "site.3:pump_2", &"x".repeat(64)] {
        assert!(valid_name(ok), "{ok}");
    }
    for bad in [
        "",
        "-a",
        &"x".repeat(65),
        "a b",
        "a/b",
        "a%2fb",
        "ü",
        "a\n",
        "<b>",
    ] {
        assert!(!valid_name(bad), "{bad:?}");
    }
}

/// G045: DS-2-1
/// The gateway's state is shown whatever its shape: scalars, nested objects and lists as
/// labelled rows, `recent` as a table without payloads.
#[test]
fn gateway_state_is_rendered_generically() {
    let v = json!({
        "connections": 3,
        "queue": {"used": 10, "capacity": 1000},
        "bridge": {"state": "connected", "upstream": {"host": "up.example"}},
        "listeners": ["0.0.0.0:8883"],
        "recent": [{"uid": "s1", "topic": "kawal/s1/up/t", "size": 12,
                    "at": 1_750_000_000, "payload": "c2VjcmV0"}],
    });
    let (sections, recent) = gateway_view(&v);
    let all: Vec<(String, String, String)> = sections
        .iter()
        .flat_map(|s| {
            s.rows
                .iter()
                .map(|r| (s.title.clone(), r.key.clone(), r.value.clone()))
        })
        .collect();
    let has =
        |t: &str, k: &str, val: &str| all.iter().any(|(a, b, c)| a == t && b == k && c == val);
    assert!(has("Gateway", "connections", "3"), "{all:?}");
    assert!(has("Gateway", "listeners", "0.0.0.0:8883"), "{all:?}");
    assert!(has("queue", "capacity", "1000"), "{all:?}");
    assert!(has("bridge", "upstream · host", "up.example"), "{all:?}");
    assert!(!format!("{all:?}").contains("c2VjcmV0"), "no payload");
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0].size, "12 B");
    assert_eq!(recent[0].at, "2025-06-15 15:06:40 UTC");
}
