//! Enrolment with one-time tokens (G045 AU-1-9, AU-3-1): the token is shown once, kept only
//! as a hash, single use, expires, and enrols only the name it was issued for.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions unwrap or panic; a panic is a test failure"
)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::{Fixture, der_of, sensor_csr, with_cert};
use kawal_pki::{
    DEFAULT_TOKEN_TTL, Error, SensorRefusal, SensorState, TOKEN_MAX_FAILURES, TokenRefusal,
};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

const DAY: Duration = DEFAULT_TOKEN_TTL;

fn token_refusal(e: Error) -> TokenRefusal {
    match e {
        Error::Token(r) => r,
        other => panic!("expected a token refusal, got {other}"),
    }
}

/// G045: AU-1-9, AU-3-1
#[test]
fn enrol_redeem_gives_a_certificate_for_the_enrolled_name() {
    let f = Fixture::new();
    let token = f.sensors.enroll("boiler-7", None, DAY).unwrap();
    assert_eq!(token.uid, "boiler-7");
    assert_eq!(token.role, "sensor");
    assert_eq!(token.expires_at, f.clock.get() + 86_400);
    assert_eq!(token.expose().len(), 43);
    let shown = f.sensors.show("boiler-7").unwrap();
    assert_eq!(shown.state, SensorState::Pending);
    assert!(shown.token_outstanding);
    assert_eq!(
        f.sensors.admit("boiler-7", "abc"),
        Err(SensorRefusal::Inactive)
    );

    // The CSR names someone else; the certificate is for the token's name regardless.
    let (key, csr) = sensor_csr("admin");
    let got = f.sensors.redeem(token.expose(), csr.as_bytes()).unwrap();
    assert_eq!(got.uid, "boiler-7");
    assert_eq!(got.role, "sensor");
    assert_eq!(got.superseded, None);
    let (_, ca) = X509Certificate::from_der(f.ca.cert_der()).unwrap();
    with_cert(&got.issued.cert_der, |c| {
        c.verify_signature(Some(ca.public_key())).unwrap();
        assert_eq!(c.public_key().raw, key.public_key_der().as_slice());
        let cn = c.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "boiler-7");
        let names = &c
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names;
        assert_eq!(names.len(), 1);
        assert!(matches!(
            names[0],
            GeneralName::URI("urn:kawal:sensor:boiler-7")
        ));
    });

    let shown = f.sensors.show("boiler-7").unwrap();
    assert_eq!(shown.state, SensorState::Active);
    assert_eq!(shown.serial.as_deref(), Some(got.issued.serial.as_str()));
    assert_eq!(shown.not_after, Some(got.issued.not_after));
    assert_eq!(
        shown.cert_pem.as_deref(),
        Some(got.issued.cert_pem.as_str())
    );
    assert!(!shown.token_outstanding);
    assert_eq!(
        f.sensors.admit("boiler-7", &got.issued.serial),
        Ok("sensor".to_owned())
    );
    // Upper case and leading zeros in the presented serial do not matter.
    let padded = format!("00{}", got.issued.serial.to_ascii_uppercase());
    assert_eq!(
        f.sensors.admit("boiler-7", &padded),
        Ok("sensor".to_owned())
    );
    assert_eq!(
        f.sensors.admit("boiler-8", &got.issued.serial),
        Err(SensorRefusal::NotEnrolled)
    );
}

/// G045: AU-1-9, AU-3-1
#[test]
fn token_is_single_use() {
    let f = Fixture::new();
    let token = f.sensors.enroll("s1", Some("reader"), DAY).unwrap();
    let (_, csr) = sensor_csr("s1");
    let first = f.sensors.redeem(token.expose(), csr.as_bytes()).unwrap();
    assert_eq!(first.role, "reader");
    let (_, csr2) = sensor_csr("s1");
    let again = f
        .sensors
        .redeem(token.expose(), csr2.as_bytes())
        .unwrap_err();
    assert_eq!(token_refusal(again), TokenRefusal::Unknown);
    // The first certificate is untouched by the refused replay.
    assert_eq!(
        f.sensors.admit("s1", &first.issued.serial),
        Ok("reader".to_owned())
    );
}

/// G045: AU-1-9, AU-3-1
#[test]
fn expired_token_is_refused_and_burnt() {
    let f = Fixture::new();
    let token = f
        .sensors
        .enroll("s1", None, Duration::from_secs(3600))
        .unwrap();
    f.clock.advance(3599);
    let (_, bad) = sensor_csr("s1");
    // Still valid one second before expiry (a bad CSR proves the token was accepted).
    let mut der = der_of(&bad, "CERTIFICATE REQUEST");
    let last = der.len() - 1;
    der[last] ^= 1;
    assert!(matches!(
        f.sensors.redeem(token.expose(), &der),
        Err(Error::Csr { .. })
    ));
    f.clock.advance(1);
    let (_, csr) = sensor_csr("s1");
    let e = f
        .sensors
        .redeem(token.expose(), csr.as_bytes())
        .unwrap_err();
    assert_eq!(token_refusal(e), TokenRefusal::Expired);
    let e = f
        .sensors
        .redeem(token.expose(), csr.as_bytes())
        .unwrap_err();
    assert_eq!(token_refusal(e), TokenRefusal::Unknown);
    assert!(!f.sensors.show("s1").unwrap().token_outstanding);
    assert_eq!(f.sensors.show("s1").unwrap().state, SensorState::Pending);
}

/// G045: AU-1-9, AU-3-1
#[test]
fn wrong_and_malformed_tokens_are_refused() {
    let f = Fixture::new();
    let token = f.sensors.enroll("s1", None, DAY).unwrap();
    let (_, csr) = sensor_csr("s1");
    let mut raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.expose())
        .unwrap();
    raw[0] ^= 1;
    let near = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw);
    for wrong in [
        near.as_str(),
        "",
        "x",
        &"A".repeat(43),
        token.expose().get(..42).unwrap(),
        &format!("{}A", token.expose()),
        &"é".repeat(43),
    ] {
        let e = f.sensors.redeem(wrong, csr.as_bytes()).unwrap_err();
        assert_eq!(token_refusal(e), TokenRefusal::Unknown, "{wrong:?}");
    }
    // Failed guesses do not hurt the real token.
    assert!(f.sensors.redeem(token.expose(), csr.as_bytes()).is_ok());
}

/// G045: AU-1-9, AU-3-1
#[test]
fn token_is_bound_to_its_name() {
    let f = Fixture::new();
    let a = f.sensors.enroll("sensor-a", None, DAY).unwrap();
    let b = f.sensors.enroll("sensor-b", Some("reader"), DAY).unwrap();
    let (_, csr) = sensor_csr("sensor-b");
    let got = f.sensors.redeem(a.expose(), csr.as_bytes()).unwrap();
    assert_eq!(got.uid, "sensor-a");
    assert_eq!(got.role, "sensor");
    assert_eq!(
        f.sensors.admit("sensor-b", &got.issued.serial),
        Err(SensorRefusal::Inactive)
    );
    // b's token is still good, and only for b.
    let (_, csr) = sensor_csr("sensor-a");
    let got_b = f.sensors.redeem(b.expose(), csr.as_bytes()).unwrap();
    assert_eq!(
        (got_b.uid.as_str(), got_b.role.as_str()),
        ("sensor-b", "reader")
    );
}

/// G045: AU-1-9, AU-3-1
#[test]
fn bad_requests_count_against_the_token_until_it_burns() {
    let f = Fixture::new();
    let token = f.sensors.enroll("s1", None, DAY).unwrap();
    for i in 1..TOKEN_MAX_FAILURES {
        let e = f.sensors.redeem(token.expose(), b"not a csr").unwrap_err();
        assert!(matches!(e, Error::Csr { .. }), "attempt {i}: {e}");
    }
    let e = f.sensors.redeem(token.expose(), b"not a csr").unwrap_err();
    assert_eq!(token_refusal(e), TokenRefusal::Burnt);
    let (_, csr) = sensor_csr("s1");
    let e = f
        .sensors
        .redeem(token.expose(), csr.as_bytes())
        .unwrap_err();
    assert_eq!(token_refusal(e), TokenRefusal::Unknown);
    // A new token from the operator works.
    let fresh = f.sensors.renew("s1", DAY).unwrap();
    assert!(f.sensors.redeem(fresh.expose(), csr.as_bytes()).is_ok());
}

/// G045: AU-1-9, AU-3-1
#[test]
fn store_holds_no_plaintext_token_and_debug_shows_none() {
    let f = Fixture::new();
    let token = f.sensors.enroll("s1", None, DAY).unwrap();
    let renewed_pending = f.sensors.enroll("s2", None, DAY).unwrap();
    let text = token.expose().to_owned();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&text)
        .unwrap();
    let debug = format!("{token:?} {:?}", f.sensors);
    assert!(!debug.contains(&text));
    assert!(debug.contains("[REDACTED]"));

    let disk = f.store.disk_bytes();
    for needle in [
        text.as_bytes(),
        raw.as_slice(),
        renewed_pending.expose().as_bytes(),
        hex::encode(&raw).as_bytes(),
    ] {
        assert!(
            !disk.windows(needle.len()).any(|w| w == needle),
            "token material found in the store"
        );
    }
    // The error for a wrong token does not echo it either.
    let near = text.get(..42).unwrap();
    let e = f.sensors.redeem(near, b"").unwrap_err();
    assert!(!e.to_string().contains(near));
    assert!(!format!("{e:?}").contains(near));
}

/// G045: AU-1-9, AU-1-10
#[test]
fn names_are_enrolled_once_and_checked() {
    let f = Fixture::new();
    f.sensors.enroll("s1", None, DAY).unwrap();
    assert!(matches!(
        f.sensors.enroll("s1", None, DAY),
        Err(Error::AlreadyEnrolled { .. })
    ));
    for bad in ["", "-s", "a b", "a/b", &"x".repeat(65)] {
        assert!(
            matches!(
                f.sensors.enroll(bad, None, DAY),
                Err(Error::InvalidUid { .. })
            ),
            "{bad:?}"
        );
    }
    for bad in ["Sensor", "", "a_b", &"r".repeat(33)] {
        assert!(
            matches!(
                f.sensors.enroll("s2", Some(bad), DAY),
                Err(Error::InvalidRole { .. })
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        f.sensors.renew("nobody", DAY),
        Err(Error::NotEnrolled { .. })
    ));
    assert!(matches!(
        f.sensors.show("nobody"),
        Err(Error::NotEnrolled { .. })
    ));
}

/// G045: AU-1-9, AU-3-1
#[test]
fn renewing_a_token_replaces_the_outstanding_one() {
    let f = Fixture::new();
    let first = f.sensors.enroll("s1", None, DAY).unwrap();
    let second = f.sensors.renew("s1", DAY).unwrap();
    let (_, csr) = sensor_csr("s1");
    let e = f
        .sensors
        .redeem(first.expose(), csr.as_bytes())
        .unwrap_err();
    assert_eq!(token_refusal(e), TokenRefusal::Unknown);
    let one = f.sensors.redeem(second.expose(), csr.as_bytes()).unwrap();

    // A token for an active sensor (lost key): its redemption supersedes the certificate.
    let third = f.sensors.renew("s1", DAY).unwrap();
    assert_eq!(
        f.sensors.admit("s1", &one.issued.serial),
        Ok("sensor".to_owned()),
        "the current certificate stays valid until the new token is used"
    );
    // The same key again is not a new enrolment.
    let e = f
        .sensors
        .redeem(third.expose(), csr.as_bytes())
        .unwrap_err();
    assert!(matches!(e, Error::Csr { .. }), "{e}");
    let (_, fresh) = sensor_csr("s1");
    let two = f.sensors.redeem(third.expose(), fresh.as_bytes()).unwrap();
    assert_eq!(two.superseded.as_deref(), Some(one.issued.serial.as_str()));
    assert_eq!(
        f.sensors.admit("s1", &one.issued.serial),
        Err(SensorRefusal::Superseded)
    );
}

/// G045: AU-1-9
#[test]
fn registry_survives_a_reopen() {
    let f = Fixture::new();
    let token = f.sensors.enroll("s1", None, DAY).unwrap();
    let again = kawal_pki::Sensors::new(
        f.store.store.clone(),
        std::sync::Arc::new(kawal_pki::SensorCa::load_or_create(&f.store.store, "x").unwrap()),
    );
    let (_, csr) = sensor_csr("s1");
    let got = again.redeem(token.expose(), csr.as_bytes()).unwrap();
    let (_, ca) = X509Certificate::from_der(f.ca.cert_der()).unwrap();
    with_cert(&got.issued.cert_der, |c| {
        c.verify_signature(Some(ca.public_key())).unwrap();
    });
    assert_eq!(
        f.sensors.admit("s1", &got.issued.serial),
        Ok("sensor".to_owned())
    );
}
