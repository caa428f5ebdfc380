//! One certificate per UID, revocation, re-enrolment and the CRL (G045 AU-1-10, AU-3-1).
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions unwrap or panic; a panic is a test failure"
)]

mod common;

use common::{Fixture, openssl, openssl_serial, sensor_csr, write};
use kawal_pki::{
    DEFAULT_TOKEN_TTL, Error, Issuance, RevokeReason, SensorCa, SensorRefusal, SensorState,
};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

fn enrolled(f: &Fixture, uid: &str) -> Issuance {
    let token = f.sensors.enroll(uid, None, DEFAULT_TOKEN_TTL).unwrap();
    let (_, csr) = sensor_csr(uid);
    f.sensors.redeem(token.expose(), csr.as_bytes()).unwrap()
}

/// G045: AU-1-10, AU-3-1
#[test]
fn second_issue_supersedes_the_first_and_revocation_is_final() {
    let f = Fixture::new();
    let first = enrolled(&f, "s1");
    assert_eq!(f.sensors.crl_number().unwrap(), 0);

    // The operator signs a CSR file: the first certificate is superseded at once.
    let (_, csr) = sensor_csr("s1");
    let second = f.sensors.sign_csr_for("s1", csr.as_bytes()).unwrap();
    assert_eq!(
        second.superseded.as_deref(),
        Some(first.issued.serial.as_str())
    );
    assert_eq!(second.crl_number, 1);
    assert_eq!(
        f.sensors.admit("s1", &first.issued.serial),
        Err(SensorRefusal::Superseded)
    );
    assert_eq!(
        f.sensors.admit("s1", &second.issued.serial),
        Ok("sensor".to_owned())
    );

    let rev = f.sensors.revoke("s1", RevokeReason::KeyCompromise).unwrap();
    assert_eq!(rev.serials, vec![second.issued.serial.clone()]);
    assert_eq!(rev.crl_number, 2);
    assert!(!rev.token_burnt);
    assert_eq!(
        f.sensors.admit("s1", &second.issued.serial),
        Err(SensorRefusal::Revoked)
    );
    assert_eq!(
        f.sensors.admit("s1", &first.issued.serial),
        Err(SensorRefusal::Superseded)
    );
    assert_eq!(f.sensors.admit("s1", "123456"), Err(SensorRefusal::Revoked));
    assert!(matches!(
        f.sensors.revoke("s1", RevokeReason::Unspecified),
        Err(Error::State { .. })
    ));
    let shown = f.sensors.show("s1").unwrap();
    assert_eq!(shown.state, SensorState::Revoked);
    assert_eq!(shown.serial, None);
    assert_eq!(shown.previous.len(), 2);

    // Coming back: a new token and a new key; the revoked key is never certified again.
    let token = f.sensors.renew("s1", DEFAULT_TOKEN_TTL).unwrap();
    let e = f
        .sensors
        .redeem(token.expose(), csr.as_bytes())
        .unwrap_err();
    assert!(
        matches!(e, Error::Csr { reason } if reason.contains("revoked")),
        "{e}"
    );
    let (_, fresh) = sensor_csr("s1");
    let third = f.sensors.redeem(token.expose(), fresh.as_bytes()).unwrap();
    assert_eq!(third.superseded, None);
    assert_eq!(
        f.sensors.admit("s1", &third.issued.serial),
        Ok("sensor".to_owned())
    );
    // Old serials stay refused for good.
    assert_eq!(
        f.sensors.admit("s1", &second.issued.serial),
        Err(SensorRefusal::Revoked)
    );

    // The CRL lists both the revoked and the superseded serial; OpenSSL reads it.
    let entries = f.sensors.revoked_entries().unwrap();
    let serials: Vec<&str> = entries.iter().map(|e| e.serial.as_str()).collect();
    assert_eq!(serials.len(), 2);
    assert!(serials.contains(&first.issued.serial.as_str()));
    assert!(serials.contains(&second.issued.serial.as_str()));
    let crl = f.sensors.crl(7).unwrap();
    assert_eq!(crl.number, 2);
    let (_, parsed) = CertificateRevocationList::from_der(&crl.der).unwrap();
    let (_, ca) = X509Certificate::from_der(f.ca.cert_der()).unwrap();
    parsed.verify_signature(ca.public_key()).unwrap();
    assert_eq!(parsed.iter_revoked_certificates().count(), 2);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "crl.der", &crl.der);
    let text = openssl(
        dir.path(),
        &["crl", "-inform", "DER", "-in", "crl.der", "-noout", "-text"],
    )
    .unwrap();
    for s in [&first.issued.serial, &second.issued.serial] {
        assert!(text.contains(&openssl_serial(s)), "{s}: {text}");
    }
    assert!(!text.contains(&openssl_serial(&third.issued.serial)));
}

/// G045: AU-1-10, AU-3-1
#[test]
fn reenrol_needs_the_current_certificate() {
    let f = Fixture::new();
    let one = enrolled(&f, "s1");
    let (_, csr) = sensor_csr("s1");

    // Renewal with a new key, authenticated by the current certificate.
    let two = f
        .sensors
        .reenroll_with_cert(&one.issued.cert_der, csr.as_bytes())
        .unwrap();
    assert_eq!(two.superseded.as_deref(), Some(one.issued.serial.as_str()));
    // The old certificate no longer re-enrols.
    let e = f
        .sensors
        .reenroll("s1", &one.issued.serial, csr.as_bytes())
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::NotCurrent {
                refusal: SensorRefusal::Superseded,
                ..
            }
        ),
        "{e}"
    );
    // Renewal keeping the same key is allowed.
    let three = f
        .sensors
        .reenroll("s1", &two.issued.serial, csr.as_bytes())
        .unwrap();
    assert_eq!(
        f.sensors.admit("s1", &three.issued.serial),
        Ok("sensor".to_owned())
    );

    // A certificate from another CA, another sensor's name, an unknown sensor: refused.
    let other_ca = SensorCa::generate("elsewhere").unwrap();
    let (_, c) = sensor_csr("s1");
    let foreign = other_ca.sign_csr(c.as_bytes(), "s1", 30).unwrap();
    assert!(
        f.sensors
            .reenroll_with_cert(&foreign.cert_der, csr.as_bytes())
            .is_err()
    );
    let s2 = enrolled(&f, "s2");
    assert!(matches!(
        f.sensors.reenroll("s1", &s2.issued.serial, csr.as_bytes()),
        Err(Error::NotCurrent { .. })
    ));
    assert!(matches!(
        f.sensors.reenroll("ghost", "abc", csr.as_bytes()),
        Err(Error::NotCurrent {
            refusal: SensorRefusal::NotEnrolled,
            ..
        })
    ));

    // After revocation the current certificate no longer re-enrols.
    f.sensors
        .revoke("s1", RevokeReason::CessationOfOperation)
        .unwrap();
    assert!(matches!(
        f.sensors
            .reenroll("s1", &three.issued.serial, csr.as_bytes()),
        Err(Error::NotCurrent {
            refusal: SensorRefusal::Revoked,
            ..
        })
    ));
    // A pending sensor has no certificate to re-enrol with.
    f.sensors.enroll("s3", None, DEFAULT_TOKEN_TTL).unwrap();
    assert!(matches!(
        f.sensors.reenroll("s3", "abc", csr.as_bytes()),
        Err(Error::NotCurrent {
            refusal: SensorRefusal::Inactive,
            ..
        })
    ));
    // An expired certificate does not re-enrol either.
    let s4 = enrolled(&f, "s4");
    f.clock.advance(400 * 86_400);
    let (_, c4) = sensor_csr("s4");
    assert!(matches!(
        f.sensors.reenroll("s4", &s4.issued.serial, c4.as_bytes()),
        Err(Error::State { .. })
    ));
}

/// G045: AU-1-10
#[test]
fn revoking_a_pending_sensor_burns_its_token() {
    let f = Fixture::new();
    let token = f.sensors.enroll("s1", None, DEFAULT_TOKEN_TTL).unwrap();
    let rev = f.sensors.revoke("s1", RevokeReason::Unspecified).unwrap();
    assert!(rev.serials.is_empty());
    assert!(rev.token_burnt);
    assert_eq!(rev.crl_number, 0);
    let (_, csr) = sensor_csr("s1");
    assert!(matches!(
        f.sensors.redeem(token.expose(), csr.as_bytes()),
        Err(Error::Token(_))
    ));
    assert_eq!(f.sensors.admit("s1", "abc"), Err(SensorRefusal::Revoked));
    assert!(matches!(
        f.sensors.revoke("nobody", RevokeReason::Unspecified),
        Err(Error::NotEnrolled { .. })
    ));
}

/// G045: AU-1-10
#[test]
fn renewal_is_due_after_two_thirds_of_the_lifetime() {
    let f = Fixture::new();
    let one = enrolled(&f, "s1");
    enrolled(&f, "s2");
    f.sensors
        .enroll("pending", None, DEFAULT_TOKEN_TTL)
        .unwrap();
    let life = one.issued.not_after - one.issued.not_before;
    let due_at = one.issued.not_before + life / 3 * 2;
    assert!(f.sensors.renew_due(due_at - 10).unwrap().is_empty());
    assert_eq!(
        f.sensors.renew_due(due_at + 10).unwrap(),
        vec!["s1".to_owned(), "s2".to_owned()]
    );
    f.sensors.revoke("s2", RevokeReason::Unspecified).unwrap();
    assert_eq!(
        f.sensors.renew_due(due_at + 10).unwrap(),
        vec!["s1".to_owned()]
    );
}

/// G045: AU-3-1
#[test]
fn last_seen_is_written_at_most_once_a_minute() {
    let f = Fixture::new();
    enrolled(&f, "s1");
    let t = f.clock.get();
    assert!(f.sensors.mark_seen("s1", t).unwrap());
    assert!(!f.sensors.mark_seen("s1", t + 30).unwrap());
    assert_eq!(f.sensors.show("s1").unwrap().last_seen, Some(t));
    assert!(f.sensors.mark_seen("s1", t + 60).unwrap());
    assert_eq!(f.sensors.show("s1").unwrap().last_seen, Some(t + 60));
    assert!(matches!(
        f.sensors.mark_seen("nobody", t),
        Err(Error::NotEnrolled { .. })
    ));
}

/// G045: AU-1-10
#[test]
fn list_is_sorted_and_shows_expiry() {
    let f = Fixture::new();
    enrolled(&f, "zeta");
    enrolled(&f, "alpha");
    f.sensors
        .enroll("mid", Some("reader"), DEFAULT_TOKEN_TTL)
        .unwrap();
    let list = f.sensors.list().unwrap();
    let names: Vec<&str> = list.iter().map(|s| s.uid.as_str()).collect();
    assert_eq!(names, ["alpha", "mid", "zeta"]);
    assert_eq!(list[0].expiry, Some(kawal_pki::ExpiryState::Ok));
    assert_eq!(list[1].expiry, None);
    assert_eq!(list[1].role, "reader");
    // The JSON the API shows carries no token.
    let json = serde_json::to_string(&list).unwrap();
    assert!(json.contains("\"state\":\"pending\""));
    assert!(!json.contains("hash"));
}

/// G045: AU-1-9, AU-3-1
/// A certificate from a configured external CA (a manufacturer's) is imported and admitted by
/// its serial; one from any other CA is refused; a newer one supersedes it; revocation works
/// as for any sensor, and no external serial enters the gateway's own CRL.
#[test]
fn an_external_ca_certificate_is_imported_admitted_superseded_and_revoked() {
    let f = Fixture::new();
    let factory = SensorCa::generate("factory-line-3").unwrap();
    let stranger = SensorCa::generate("someone-else").unwrap();
    let sensors = kawal_pki::Sensors::new(f.store.store.clone(), f.ca.clone())
        .with_external_cas(vec![factory.cert_der().to_vec()]);
    let (_, csr) = sensor_csr("ext-1");
    let first = factory.sign_csr(csr.as_bytes(), "ext-1", 365).unwrap();
    assert_eq!(
        sensors.admit("ext-1", &first.serial),
        Err(SensorRefusal::NotEnrolled)
    );
    let forged = stranger.sign_csr(csr.as_bytes(), "ext-1", 365).unwrap();
    assert!(matches!(
        sensors.import(&forged.cert_der, None),
        Err(Error::Parse(m)) if m.contains("external")
    ));
    // The gateway's own CA is not an external one either.
    let own = f.ca.sign_csr(csr.as_bytes(), "ext-1", 365).unwrap();
    assert!(sensors.import(&own.cert_der, None).is_err());

    let imported = sensors.import(&first.cert_der, Some("reader")).unwrap();
    assert_eq!(imported.uid, "ext-1");
    assert_eq!(imported.role, "reader");
    assert_eq!(imported.issued.serial, first.serial);
    assert_eq!(sensors.admit("ext-1", &first.serial), Ok("reader".into()));
    assert!(
        sensors.import(&first.cert_der, None).is_err(),
        "imported twice"
    );

    let (_, csr2) = sensor_csr("ext-1");
    let second = factory.sign_csr(csr2.as_bytes(), "ext-1", 365).unwrap();
    let again = sensors.import(&second.cert_der, None).unwrap();
    assert_eq!(again.superseded.as_deref(), Some(first.serial.as_str()));
    assert_eq!(
        sensors.admit("ext-1", &first.serial),
        Err(SensorRefusal::Superseded)
    );
    assert_eq!(sensors.admit("ext-1", &second.serial), Ok("reader".into()));

    sensors
        .revoke("ext-1", RevokeReason::KeyCompromise)
        .unwrap();
    assert_eq!(
        sensors.admit("ext-1", &second.serial),
        Err(SensorRefusal::Revoked)
    );
    // Its key is burnt for this sensor.
    assert!(sensors.import(&second.cert_der, None).is_err());
    let entries = sensors.revoked_entries().unwrap();
    assert!(
        entries
            .iter()
            .all(|e| e.serial != first.serial && e.serial != second.serial),
        "{entries:?}"
    );
}
