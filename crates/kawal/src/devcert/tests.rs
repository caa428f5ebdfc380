#![allow(clippy::unwrap_used, reason = "tests")]
use super::*;

const DAY: i64 = 86_400;

fn dev_cert(days: u32) -> (IdentityKey, String) {
    let device = IdentityKey::generate().unwrap();
    let issued = kawal_pki::issue_dev(&device, "unit-dev-01").unwrap();
    let pem = kawal_pki::reissue_dev(
        &device,
        &issued.ca_key,
        &issued.ca_cert_pem,
        "unit-dev-01",
        days,
    )
    .unwrap();
    (device, format!("{pem}{}", issued.ca_cert_pem))
}

#[test]
fn a_certificate_for_the_device_key_passes() {
    let (key, chain) = dev_cert(90);
    let f = check(&chain, &key.public_key_der(), now_s()).unwrap();
    assert_eq!(f.subject, "unit-dev-01");
    assert!(f.issuer.contains("DEV CA"));
    assert!((89..=90).contains(&days_left(f.not_after, now_s())));
}

#[test]
fn a_certificate_for_another_key_is_refused() {
    let (_, chain) = dev_cert(90);
    let other = IdentityKey::generate().unwrap();
    assert_eq!(
        check(&chain, &other.public_key_der(), now_s()),
        Err(Refusal::OtherKey)
    );
}

#[test]
fn validity_is_checked_at_both_ends() {
    let (key, chain) = dev_cert(3);
    let spki = key.public_key_der();
    let f = check(&chain, &spki, now_s()).unwrap();
    assert!(matches!(
        check(&chain, &spki, f.not_before - 1),
        Err(Refusal::NotYetValid { .. })
    ));
    assert!(matches!(
        check(&chain, &spki, f.not_after),
        Err(Refusal::Expired { .. })
    ));
}

#[test]
fn a_key_block_or_garbage_is_refused_without_echoing_it() {
    let (key, chain) = dev_cert(90);
    let with_key =
        format!("{chain}-----BEGIN PRIVATE KEY-----\nTUFURVJJQUw=\n-----END PRIVATE KEY-----\n");
    let r = check(&with_key, &key.public_key_der(), now_s()).unwrap_err();
    assert_eq!(r.reason(), "unreadable");
    assert!(!r.to_string().contains("TUFURVJJQUw"), "{r}");
    assert_eq!(
        check("no pem here", &key.public_key_der(), now_s()),
        Err(Refusal::NoCertificate)
    );
}

#[test]
fn expiry_is_news_once_per_state_and_certificate() {
    let seen = |state: ExpiryState| ExpirySeen {
        sha256: "aa".into(),
        state: state.as_str().into(),
    };
    // Nothing to say while more than 30 days are left.
    assert!(!expiry_news(None, "aa", ExpiryState::Ok));
    // Entering each warning state is news once.
    assert!(expiry_news(None, "aa", ExpiryState::Warn30));
    assert!(!expiry_news(
        Some(&seen(ExpiryState::Warn30)),
        "aa",
        ExpiryState::Warn30
    ));
    assert!(expiry_news(
        Some(&seen(ExpiryState::Warn30)),
        "aa",
        ExpiryState::Warn7
    ));
    assert!(expiry_news(
        Some(&seen(ExpiryState::Warn7)),
        "aa",
        ExpiryState::Expired
    ));
    // A renewed certificate that is itself close to its end is news again.
    assert!(expiry_news(
        Some(&seen(ExpiryState::Warn7)),
        "bb",
        ExpiryState::Warn7
    ));
    assert_eq!(days_left(1000 + 3 * DAY + 5, 1000), 3);
    assert_eq!(days_left(1000 - DAY, 1000), -1);
}
