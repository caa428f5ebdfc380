//! Secrets never reach the log: details whose key names a secret are redacted on the way in.

mod common;

use common::*;
use kawal_audit::{Details, Event, Filter, Outcome, Value};

/// G045: PL-4-1
#[test]
fn secret_details_are_redacted_before_they_are_written() {
    let fx = Fixture::new();
    let log = fx.open();
    let details = Details::new()
        .with("user", "alice")
        .with("Password", "hunter2-PLAINTEXT")
        .with("mqtt_token", "tok-PLAINTEXT")
        .with("private_key_pem", "-----BEGIN PLAINTEXT")
        .with("Key_Material", "00ff-PLAINTEXT")
        .with("admin_passphrase", "correct horse PLAINTEXT")
        .with("client_secret", "s-PLAINTEXT");
    log.append(Event::new("auth.password_changed", "alice", Outcome::Success).details(details))
        .unwrap();
    log.append(
        Event::new("auth.login", "bob", Outcome::Failure).with("SESSION_TOKEN", "x-PLAINTEXT"),
    )
    .unwrap();
    log.close().unwrap();

    for seg in fx.segments() {
        let raw = std::fs::read_to_string(seg).unwrap();
        assert!(
            !raw.contains("PLAINTEXT"),
            "a secret reached the file: {raw}"
        );
    }
    let e = kawal_audit::read_entries(fx.dir(), Filter::default())
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(e.details.get("user"), Some(&Value::from("alice")));
    for k in [
        "Password",
        "mqtt_token",
        "private_key_pem",
        "Key_Material",
        "admin_passphrase",
        "client_secret",
    ] {
        assert_eq!(e.details.get(k), Some(&Value::from("[REDACTED]")), "{k}");
    }
    fx.verify().unwrap();
}
