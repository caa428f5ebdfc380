//! The device identity key, its CSR and dev certificates (G045 AU-1-9).
#![allow(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions unwrap; a panic is a test failure"
)]

use kawal_pki::{IdentityKey, cert_facts, device_csr_pem, issue_dev};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::pem::parse_x509_pem;
use x509_parser::prelude::{FromDer, X509Certificate};

const UID: &str = "kw-abcdefghijklmnopqrstuvwxyz";

fn der_of(pem: &str, label: &str) -> Vec<u8> {
    let (_, block) = parse_x509_pem(pem.as_bytes()).unwrap();
    assert_eq!(block.label, label);
    block.contents
}

fn cn(name: &x509_parser::x509::X509Name<'_>) -> String {
    name.iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

/// G045: AU-1-9
#[test]
fn csr_carries_the_uid_and_the_key() {
    let key = IdentityKey::generate().unwrap();
    let pem = device_csr_pem(&key, UID).unwrap();
    let der = der_of(&pem, "CERTIFICATE REQUEST");
    let (_, csr) = X509CertificationRequest::from_der(&der).unwrap();
    csr.verify_signature().unwrap();
    let info = &csr.certification_request_info;
    assert_eq!(cn(&info.subject), UID);
    assert_eq!(info.subject_pki.raw, key.public_key_der().as_slice());
    let uris: Vec<String> = csr
        .requested_extensions()
        .into_iter()
        .flatten()
        .filter_map(|e| match e {
            ParsedExtension::SubjectAlternativeName(san) => Some(san.general_names.clone()),
            _ => None,
        })
        .flatten()
        .filter_map(|g| match g {
            GeneralName::URI(u) => Some(u.to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(uris, vec![format!("urn:kawal:device:{UID}")]);
}

/// G045: AU-1-9
#[test]
fn bad_uids_are_refused() {
    let key = IdentityKey::generate().unwrap();
    for bad in ["", "-x", "a b", "é", "a/b"] {
        assert!(device_csr_pem(&key, bad).is_err(), "{bad:?}");
        assert!(issue_dev(&key, bad).is_err(), "{bad:?}");
    }
}

/// G045: AU-1-9
#[test]
fn dev_certificate_verifies_against_its_dev_ca() {
    let device = IdentityKey::generate().unwrap();
    let issued = issue_dev(&device, UID).unwrap();
    let ca_der = der_of(&issued.ca_cert_pem, "CERTIFICATE");
    let leaf_der = der_of(&issued.device_cert_pem, "CERTIFICATE");
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    let (_, leaf) = X509Certificate::from_der(&leaf_der).unwrap();

    // Signatures: the CA signs itself and the leaf; another CA does not verify the leaf.
    ca.verify_signature(None).unwrap();
    leaf.verify_signature(Some(ca.public_key())).unwrap();
    let other = issue_dev(&device, UID).unwrap();
    let other_der = der_of(&other.ca_cert_pem, "CERTIFICATE");
    let (_, other_ca) = X509Certificate::from_der(&other_der).unwrap();
    assert!(leaf.verify_signature(Some(other_ca.public_key())).is_err());
    assert_ne!(ca.serial, other_ca.serial);

    // The CA.
    assert_eq!(
        cn(ca.subject()),
        format!("kawal DEV CA {UID} - NOT FOR PRODUCTION")
    );
    assert_eq!(
        ca.public_key().raw,
        issued.ca_key.public_key_der().as_slice()
    );
    let bc = ca.basic_constraints().unwrap().unwrap().value;
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, Some(0));
    assert!(ca.key_usage().unwrap().unwrap().value.key_cert_sign());
    let ca_days =
        (ca.validity().not_after.timestamp() - ca.validity().not_before.timestamp()) / 86_400;
    assert!((3650..=3651).contains(&ca_days), "{ca_days}");

    // The device certificate.
    assert_eq!(leaf.issuer(), ca.subject());
    assert_eq!(cn(leaf.subject()), UID);
    assert_eq!(leaf.public_key().raw, device.public_key_der().as_slice());
    assert!(!leaf.basic_constraints().unwrap().unwrap().value.ca);
    let ku = leaf.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && !ku.key_cert_sign());
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    let sans: Vec<String> = leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|g| match g {
            GeneralName::IPAddress(ip) => format!("IP {}", hex::encode(ip)),
            other => other.to_string(),
        })
        .collect();
    for want in [
        "DNSName(localhost)",
        "IP 7f000001",
        "IP 00000000000000000000000000000001",
        &format!("URI(urn:kawal:device:{UID})"),
    ] {
        assert!(sans.iter().any(|s| s == want), "{want} not in {sans:?}");
    }
    let days =
        (leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp()) / 86_400;
    assert!((825..=826).contains(&days), "{days}");
    assert!(leaf.validity().is_valid());
}

/// G045: AU-1-9
#[test]
fn cert_facts_mark_the_dev_ca() {
    let device = IdentityKey::generate().unwrap();
    let issued = issue_dev(&device, UID).unwrap();
    let facts = cert_facts(&issued.device_cert_pem).unwrap();
    assert_eq!(facts.subject_cn, UID);
    assert!(facts.issuer_cn.contains("NOT FOR PRODUCTION"));
    assert!(facts.is_dev);
    assert_eq!(facts.fingerprint_sha256.len(), 64);
    let der = der_of(&issued.device_cert_pem, "CERTIFICATE");
    assert_eq!(
        facts.fingerprint_sha256,
        hex::encode(kawal_crypto::sha256(&der))
    );
    assert_eq!(facts.not_before.len(), 20, "{}", facts.not_before);
    assert!(facts.not_before < facts.not_after);
    assert!(facts.not_after.ends_with('Z'));

    let ca = cert_facts(&issued.ca_cert_pem).unwrap();
    assert!(ca.is_dev);
    assert_eq!(ca.subject_cn, ca.issuer_cn);

    assert!(cert_facts("not a certificate").is_err());
    let csr = device_csr_pem(&device, UID).unwrap();
    assert!(cert_facts(&csr).is_err(), "a CSR is not a certificate");
}

/// G045: AU-1-9
#[test]
fn key_round_trips_and_debug_is_redacted() {
    let key = IdentityKey::generate().unwrap();
    let again = IdentityKey::from_pkcs8_der(key.pkcs8_der()).unwrap();
    assert_eq!(again.pkcs8_der(), key.pkcs8_der());
    assert_eq!(again.public_key_der(), key.public_key_der());
    // The reloaded key signs for the same identity.
    let issued = issue_dev(&again, UID).unwrap();
    let leaf_der = der_of(&issued.device_cert_pem, "CERTIFICATE");
    let (_, leaf) = X509Certificate::from_der(&leaf_der).unwrap();
    assert_eq!(leaf.public_key().raw, key.public_key_der().as_slice());

    let debug = format!("{key:?} {issued:?}");
    assert!(debug.contains("[REDACTED]"));
    let secret_hex = hex::encode(key.pkcs8_der());
    let tail = secret_hex.get(secret_hex.len() - 32..).unwrap();
    assert!(!debug.contains(tail));
    assert!(!debug.contains(&hex::encode(issued.ca_key.pkcs8_der())));

    assert!(IdentityKey::from_pkcs8_der(b"garbage").is_err());
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let err = IdentityKey::from_pkcs8_der(&ed.serialize_der()).unwrap_err();
    assert!(err.to_string().contains("P-256"), "{err}");
}
