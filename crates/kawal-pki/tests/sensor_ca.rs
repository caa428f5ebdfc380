//! The sensor CA: its certificate, what it signs and refuses, its CRL and the EST encodings
//! (G045 AU-1-9, AU-1-10).
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions unwrap or panic; a panic is a test failure"
)]

mod common;

use common::{
    GATEWAY, TestStore, der_of, openssl, openssl_csr, openssl_serial, sensor_csr, with_cert, write,
};
use kawal_pki::{
    CSR_MAX, Error, RevokeReason, RevokedEntry, SensorCa, parse_est_csr, pkcs7_certs_only,
    serial_hex,
};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

const UID: &str = "boiler-7";

fn csr_refusal(err: Error) -> &'static str {
    match err {
        Error::Csr { reason } => reason,
        other => panic!("expected a CSR refusal, got {other}"),
    }
}

/// G045: AU-1-9
#[test]
fn ca_is_made_once_sealed_and_loaded_back() {
    let ts = TestStore::new();
    let ca = SensorCa::load_or_create(&ts.store, GATEWAY).unwrap();
    let again = SensorCa::load_or_create(&ts.store, "another-name").unwrap();
    assert_eq!(ca.cert_der(), again.cert_der());
    assert_eq!(ca.cert_pem(), again.cert_pem());
    assert!(format!("{ca:?}").contains("[REDACTED]"));

    with_cert(ca.cert_der(), |c| {
        c.verify_signature(None).unwrap();
        let cn = c.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), format!("kawal sensor CA {GATEWAY}"));
        let bc = c.basic_constraints().unwrap().unwrap().value;
        assert!(bc.ca);
        assert_eq!(bc.path_len_constraint, Some(0));
        let ku = c.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign() && !ku.digital_signature());
        let days =
            (c.validity().not_after.timestamp() - c.validity().not_before.timestamp()) / 86_400;
        assert!((3650..=3651).contains(&days), "{days}");
    });

    // The key is sealed: the PKCS#8 never appears on disk, and the store's own key opens it.
    let disk = ts.disk_bytes();
    assert!(
        !disk
            .windows(ca.cert_der().len())
            .any(|w| w == ca.cert_der())
    );
    assert!(SensorCa::generate("-bad").is_err());
}

/// G045: AU-1-9, AU-1-10
#[test]
fn sensor_certificate_has_the_fixed_profile_and_chains_to_the_ca() {
    let ca = SensorCa::generate(GATEWAY).unwrap();
    let (key, csr) = sensor_csr("a-name-the-ca-ignores");
    let issued = ca.sign_csr(csr.as_bytes(), UID, 365).unwrap();
    assert_eq!(der_of(&issued.cert_pem, "CERTIFICATE"), issued.cert_der);

    let (_, ca_cert) = X509Certificate::from_der(ca.cert_der()).unwrap();
    with_cert(&issued.cert_der, |c| {
        c.verify_signature(Some(ca_cert.public_key())).unwrap();
        assert_eq!(c.issuer(), ca_cert.subject());
        assert_eq!(c.public_key().raw, key.public_key_der().as_slice());
        let cn = c.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), UID);
        let names = &c
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names;
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(matches!(names[0], GeneralName::URI(u) if u == "urn:kawal:sensor:boiler-7"));
        let eku = c.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth && !eku.any && eku.other.is_empty());
        let ku = c.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && !ku.key_cert_sign() && !ku.crl_sign());
        assert!(!c.basic_constraints().unwrap().unwrap().value.ca);
        // The authority key identifier names the CA's subject key identifier.
        let aki = c
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => {
                    a.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => None,
            })
            .unwrap();
        let ski = ca_cert
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => {
                    Some(k.0.to_vec())
                }
                _ => None,
            })
            .unwrap();
        assert_eq!(aki, ski);
        // Serial: positive, as text the same as the gateway computes it.
        assert_eq!(issued.serial, format!("{:x}", c.tbs_certificate.serial));
        assert_eq!(issued.serial, serial_hex(c.raw_serial()));
        assert!(c.raw_serial()[0] < 0x80);
        assert_eq!(c.validity().not_before.timestamp(), issued.not_before);
        assert_eq!(c.validity().not_after.timestamp(), issued.not_after);
        assert_eq!(issued.not_after - issued.not_before, 365 * 86_400 + 300);
        assert!(c.validity().is_valid());
    });

    // Read back as the EST re-enrolment route does.
    let seen = ca.read_issued(&issued.cert_der).unwrap();
    assert_eq!(
        (seen.uid.as_str(), seen.serial.as_str()),
        (UID, issued.serial.as_str())
    );
    let other = SensorCa::generate(GATEWAY).unwrap();
    assert!(other.read_issued(&issued.cert_der).is_err());

    // OpenSSL agrees: a client certificate chaining to the sensor CA.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ca.pem", ca.cert_pem().as_bytes());
    write(dir.path(), "leaf.pem", issued.cert_pem.as_bytes());
    let out = openssl(
        dir.path(),
        &[
            "verify",
            "-CAfile",
            "ca.pem",
            "-purpose",
            "sslclient",
            "leaf.pem",
        ],
    )
    .unwrap();
    assert!(out.contains("leaf.pem: OK"), "{out}");
    assert!(
        openssl(
            dir.path(),
            &[
                "verify",
                "-CAfile",
                "ca.pem",
                "-purpose",
                "sslserver",
                "leaf.pem"
            ]
        )
        .is_err(),
        "a sensor certificate is not a server certificate"
    );

    // Different certificates have different serials; the validity is configurable.
    let short = ca.sign_csr(csr.as_bytes(), UID, 30).unwrap();
    assert_ne!(short.serial, issued.serial);
    assert_eq!(short.not_after - short.not_before, 30 * 86_400 + 300);
}

/// G045: AU-1-9
#[test]
fn requested_names_and_extensions_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let ca = SensorCa::generate(GATEWAY).unwrap();
    let csr = openssl_csr(
        dir.path(),
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        &[
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-addext",
            "extendedKeyUsage=serverAuth,codeSigning",
            "-addext",
            "subjectAltName=DNS:gateway.example,URI:urn:kawal:sensor:admin",
        ],
    );
    let issued = ca.sign_csr(&csr, UID, 365).unwrap();
    with_cert(&issued.cert_der, |c| {
        assert!(!c.basic_constraints().unwrap().unwrap().value.ca);
        assert!(!c.key_usage().unwrap().unwrap().value.key_cert_sign());
        let eku = c.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth && !eku.code_signing);
        let names = &c
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names;
        assert_eq!(names.len(), 1);
        let cn = c.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), UID);
    });
    // P-384 is accepted too.
    let p384 = openssl_csr(
        dir.path(),
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
        &[],
    );
    assert!(ca.sign_csr(&p384, UID, 365).is_ok());
}

/// G045: AU-1-9
#[test]
fn bad_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = SensorCa::generate(GATEWAY).unwrap();

    // A signature that does not verify.
    let (_, csr) = sensor_csr(UID);
    let mut der = der_of(&csr, "CERTIFICATE REQUEST");
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let why = csr_refusal(ca.sign_csr(&der, UID, 365).unwrap_err());
    assert!(why.contains("signature"), "{why}");

    // A public key swapped after signing (proof of possession fails).
    let (_, a) = sensor_csr(UID);
    let (other, _) = sensor_csr(UID);
    let mut swapped = der_of(&a, "CERTIFICATE REQUEST");
    let (_, parsed) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&swapped).unwrap();
    let old_spki = parsed.certification_request_info.subject_pki.raw.to_vec();
    let new_spki = other.public_key_der();
    assert_eq!(old_spki.len(), new_spki.len());
    let at = swapped
        .windows(old_spki.len())
        .position(|w| w == old_spki.as_slice())
        .unwrap();
    swapped[at..at + new_spki.len()].copy_from_slice(&new_spki);
    let why = csr_refusal(ca.sign_csr(&swapped, UID, 365).unwrap_err());
    assert!(why.contains("signature"), "{why}");

    // Key types outside P-256/P-384.
    let rsa = openssl_csr(dir.path(), &["-newkey", "rsa:2048"], &[]);
    let why = csr_refusal(ca.sign_csr(&rsa, UID, 365).unwrap_err());
    assert!(why.contains("P-256"), "{why}");
    let p521 = openssl_csr(
        dir.path(),
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-521"],
        &[],
    );
    let why = csr_refusal(ca.sign_csr(&p521, UID, 365).unwrap_err());
    assert!(why.contains("P-256"), "{why}");
    let ed = openssl_csr(dir.path(), &["-newkey", "ed25519"], &[]);
    assert!(matches!(ca.sign_csr(&ed, UID, 365), Err(Error::Csr { .. })));

    // Oversize, garbage, trailing bytes, a certificate instead of a request.
    let mut big = der_of(&csr, "CERTIFICATE REQUEST");
    big.resize(CSR_MAX + 1, 0);
    let why = csr_refusal(ca.sign_csr(&big, UID, 365).unwrap_err());
    assert!(why.contains("16 KiB"), "{why}");
    assert!(ca.sign_csr(b"", UID, 365).is_err());
    assert!(ca.sign_csr(b"garbage", UID, 365).is_err());
    let mut trailing = der_of(&csr, "CERTIFICATE REQUEST");
    trailing.push(0);
    assert!(ca.sign_csr(&trailing, UID, 365).is_err());
    assert!(ca.sign_csr(ca.cert_pem().as_bytes(), UID, 365).is_err());

    // A bad UID is refused even with a good request.
    assert!(matches!(
        ca.sign_csr(csr.as_bytes(), "no spaces", 365),
        Err(Error::InvalidUid { .. })
    ));
}

/// G045: AU-1-10
#[test]
fn crl_lists_revoked_serials_and_openssl_reads_it() {
    let ca = SensorCa::generate(GATEWAY).unwrap();
    let (_, csr) = sensor_csr(UID);
    let a = ca.sign_csr(csr.as_bytes(), UID, 365).unwrap();
    let b = ca.sign_csr(csr.as_bytes(), UID, 365).unwrap();
    let c = ca.sign_csr(csr.as_bytes(), UID, 365).unwrap();
    let now = b.not_before + 300;
    let entries = [
        RevokedEntry {
            serial: a.serial.clone(),
            revoked_at: now,
            reason: RevokeReason::Superseded,
        },
        RevokedEntry {
            serial: b.serial.clone(),
            revoked_at: now,
            reason: RevokeReason::KeyCompromise,
        },
    ];
    let crl = ca.crl(&entries, 7, 7).unwrap();
    assert_eq!(der_of(&crl.pem, "X509 CRL"), crl.der);
    assert_eq!(crl.next_update - crl.this_update, 7 * 86_400);

    let (rest, parsed) = CertificateRevocationList::from_der(&crl.der).unwrap();
    assert!(rest.is_empty());
    let (_, ca_cert) = X509Certificate::from_der(ca.cert_der()).unwrap();
    parsed.verify_signature(ca_cert.public_key()).unwrap();
    assert_eq!(parsed.issuer(), ca_cert.subject());
    assert_eq!(
        parsed.crl_number().map(ToString::to_string),
        Some("7".into())
    );
    let listed: Vec<String> = parsed
        .iter_revoked_certificates()
        .map(|r| format!("{:x}", r.serial()))
        .collect();
    assert_eq!(listed, vec![a.serial.clone(), b.serial.clone()]);

    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "crl.der", &crl.der);
    let text = openssl(
        dir.path(),
        &["crl", "-inform", "DER", "-in", "crl.der", "-noout", "-text"],
    )
    .unwrap();
    for s in [&a.serial, &b.serial] {
        assert!(text.contains(&openssl_serial(s)), "{s} not in {text}");
    }
    assert!(!text.contains(&openssl_serial(&c.serial)));
    assert!(
        text.contains("Key Compromise") && text.contains("Superseded"),
        "{text}"
    );
    assert!(text.contains("X509v3 CRL Number"), "{text}");

    // OpenSSL's chain check with the CRL: the revoked one fails, the other passes.
    write(dir.path(), "ca.pem", ca.cert_pem().as_bytes());
    write(dir.path(), "crl.pem", crl.pem.as_bytes());
    write(dir.path(), "b.pem", b.cert_pem.as_bytes());
    write(dir.path(), "c.pem", c.cert_pem.as_bytes());
    let check = |leaf: &str| {
        openssl(
            dir.path(),
            &[
                "verify",
                "-crl_check",
                "-CAfile",
                "ca.pem",
                "-CRLfile",
                "crl.pem",
                leaf,
            ],
        )
    };
    let revoked = check("b.pem").unwrap_err();
    assert!(revoked.contains("revoked"), "{revoked}");
    assert!(check("c.pem").unwrap().contains("c.pem: OK"));

    // An empty CRL is valid too.
    let empty = ca.crl(&[], 0, 1).unwrap();
    assert_eq!(
        CertificateRevocationList::from_der(&empty.der)
            .unwrap()
            .1
            .iter_revoked_certificates()
            .count(),
        0
    );
}

/// G045: AU-1-9
#[test]
fn est_answer_is_pkcs7_certs_only_that_openssl_reads() {
    let ca = SensorCa::generate(GATEWAY).unwrap();
    let (_, csr) = sensor_csr(UID);
    let leaf = ca.sign_csr(csr.as_bytes(), UID, 365).unwrap();
    let p7 = pkcs7_certs_only(&[leaf.cert_der.clone(), ca.cert_der().to_vec()]);
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "p7.der", &p7);
    let out = openssl(
        dir.path(),
        &["pkcs7", "-inform", "DER", "-in", "p7.der", "-print_certs"],
    )
    .unwrap();
    let first = out.find(&format!("subject=CN = {UID}")).unwrap();
    let second = out.find("subject=CN = kawal sensor CA").unwrap();
    assert!(first < second, "{out}");
    let pems: Vec<Vec<u8>> = x509_parser::pem::Pem::iter_from_buffer(out.as_bytes())
        .map(|p| p.unwrap().contents)
        .collect();
    assert_eq!(pems, vec![leaf.cert_der.clone(), ca.cert_der().to_vec()]);

    // A large chain (long-form lengths) still reads back.
    let many: Vec<Vec<u8>> = (0..40).map(|_| leaf.cert_der.clone()).collect();
    write(dir.path(), "many.der", &pkcs7_certs_only(&many));
    let out = openssl(
        dir.path(),
        &["pkcs7", "-inform", "DER", "-in", "many.der", "-print_certs"],
    )
    .unwrap();
    assert_eq!(out.matches("BEGIN CERTIFICATE").count(), 40);
}

/// G045: AU-1-9
#[test]
fn est_csr_body_is_base64_with_line_breaks() {
    use base64::Engine as _;
    let (_, csr) = sensor_csr(UID);
    let der = der_of(&csr, "CERTIFICATE REQUEST");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
    let mut wrapped = String::new();
    for chunk in b64.as_bytes().chunks(64) {
        wrapped.push_str(std::str::from_utf8(chunk).unwrap());
        wrapped.push_str("\r\n");
    }
    assert_eq!(parse_est_csr(wrapped.as_bytes()).unwrap(), der);
    assert_eq!(parse_est_csr(b64.as_bytes()).unwrap(), der);
    assert!(
        parse_est_csr(csr.as_bytes()).is_err(),
        "PEM armour is not EST"
    );
    let not_csr = base64::engine::general_purpose::STANDARD.encode(b"hello");
    assert!(parse_est_csr(not_csr.as_bytes()).is_err());
    let huge = base64::engine::general_purpose::STANDARD.encode(vec![0u8; CSR_MAX + 1]);
    assert!(parse_est_csr(huge.as_bytes()).is_err());
}
