#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failure should stop the test loudly"
)]

use zeroize::Zeroizing;

use super::*;

fn settings() -> BridgeSettings {
    BridgeSettings::new(
        "upstream.example",
        "upstream.example",
        "",
        ClientIdentity {
            cert_chain_pem: String::new(),
            key_pkcs8_der: Zeroizing::new(vec![0xAB; 32]),
        },
        "KWL-GW-1",
    )
}

#[test]
fn up_topics_carry_the_certified_uid() {
    let p = "kawal/gw/KWL-GW-1";
    assert_eq!(
        up_topic(p, "s1", "kawal/s1/up/temp"),
        "kawal/gw/KWL-GW-1/s1/up/temp"
    );
    // Another sensor's namespace cannot be claimed: the uid segment is the publisher's.
    assert_eq!(
        up_topic(p, "s1", "kawal/s2/up/x"),
        "kawal/gw/KWL-GW-1/s1/kawal/s2/up/x"
    );
    assert_eq!(up_topic(p, "s1", "misc"), "kawal/gw/KWL-GW-1/s1/misc");
}

/// Threat: ST-G-3 — only `<prefix>/<uid>/down/...` reaches a sensor.
#[test]
fn down_topics_map_only_from_the_prefix() {
    let p = "kawal/gw/G";
    assert_eq!(
        down_topic(p, "kawal/gw/G/s1/down/x").as_deref(),
        Some("kawal/s1/down/x")
    );
    assert_eq!(
        down_topic(p, "kawal/gw/G/s1/down/a/b").as_deref(),
        Some("kawal/s1/down/a/b")
    );
    assert_eq!(
        down_topic(p, "kawal/gw/G/s1/down").as_deref(),
        Some("kawal/s1/down")
    );
    assert_eq!(down_topic(p, "kawal/gw/G/s1/up/x"), None);
    assert_eq!(down_topic(p, "kawal/gw/GX/s1/down/x"), None);
    assert_eq!(down_topic(p, "kawal/gw/G//down/x"), None);
    assert_eq!(down_topic(p, "kawal/gw/G/s1/downx"), None);
    assert_eq!(down_topic(p, "other/s1/down/x"), None);
}

#[test]
fn settings_defaults_and_checks() {
    let mut s = settings();
    assert_eq!(s.prefix(), "kawal/gw/KWL-GW-1");
    assert_eq!(s.down_filter(), "kawal/gw/KWL-GW-1/+/down/#");
    assert!(s.problems().is_empty(), "{:?}", s.problems());
    s.up_prefix = "a/+/b".into();
    s.inflight = 0;
    s.backoff_min = Duration::from_secs(90);
    assert_eq!(s.problems().len(), 3, "{:?}", s.problems());
}

#[test]
fn identity_debug_hides_the_key() {
    let shown = format!("{:?}", settings());
    assert!(shown.contains("REDACTED"));
    assert!(!shown.contains("171"), "{shown}");
}

#[test]
fn frames_are_cut_and_capped_before_buffering() {
    let mut out = Vec::new();
    encode(&Packet::Puback(Pid::try_from(7).unwrap()), &mut out).ok();
    encode(&Packet::Pingresp, &mut out).ok();
    let mut buf = BytesMut::from(&out[..3]);
    assert_eq!(parse_frame(&mut buf, 1024), Ok(None));
    buf.extend_from_slice(&out[3..]);
    assert_eq!(
        parse_frame(&mut buf, 1024),
        Ok(Some(Packet::Puback(Pid::try_from(7).unwrap())))
    );
    assert_eq!(parse_frame(&mut buf, 1024), Ok(Some(Packet::Pingresp)));
    assert!(buf.is_empty());
    // A PUBLISH claiming 200 MB: refused from its header alone, nothing reserved.
    let mut big = BytesMut::from(&[0x30u8, 0x80, 0x80, 0x80, 0x60][..]);
    assert!(matches!(
        parse_frame(&mut big, 1 << 20),
        Err(FrameError::TooLarge(_))
    ));
    assert!(big.capacity() < 1024);
    // Five length bytes.
    let mut bad = BytesMut::from(&[0x30u8, 0x80, 0x80, 0x80, 0x80, 0x01][..]);
    assert_eq!(
        parse_frame(&mut bad, usize::MAX),
        Err(FrameError::BadLength)
    );
    // A bad packet type.
    let mut junk = BytesMut::from(&[0x00u8, 0x00][..]);
    assert!(matches!(
        parse_frame(&mut junk, 1024),
        Err(FrameError::Malformed(_))
    ));
}

#[test]
fn backoff_stays_within_bounds() {
    let s = settings();
    for attempt in 0..40 {
        let d = backoff(&s, attempt);
        assert!(d >= s.backoff_min && d <= s.backoff_max, "{d:?}");
    }
    assert_eq!(backoff(&s, 0), Duration::from_secs(1));
}

fn self_signed(name: &str) -> (String, Vec<u8>, Vec<u8>) {
    let c = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    (
        c.cert.pem(),
        c.cert.der().to_vec(),
        c.signing_key.serialize_der(),
    )
}

/// G045: AU-1-10 — a renewed identity is checked before it is put in force: its key must
/// belong to its certificate, and the leaf's SHA-256 names it in the status and audit log.
#[test]
fn identity_is_checked_and_named_by_its_leaf() {
    let (roots, _, _) = self_signed("upstream.example");
    let (cert_a, der_a, key_a) = self_signed("a");
    let (_, _, key_b) = self_signed("b");
    let good = ClientIdentity {
        cert_chain_pem: cert_a.clone(),
        key_pkcs8_der: Zeroizing::new(key_a),
    };
    let (_, sha) = tls::build(&roots, &good).unwrap();
    assert_eq!(sha, hex::encode(kawal_crypto::sha256(&der_a)));
    let mismatched = ClientIdentity {
        cert_chain_pem: cert_a,
        key_pkcs8_der: Zeroizing::new(key_b),
    };
    let err = tls::build(&roots, &mismatched).unwrap_err();
    assert!(matches!(err, Error::Tls(_)), "{err}");
    let no_cert = ClientIdentity {
        cert_chain_pem: String::new(),
        ..mismatched
    };
    assert!(matches!(
        tls::build(&roots, &no_cert),
        Err(Error::ClientCert(_))
    ));
}
