//! Unit tests of the integrity manifest's building blocks: path rules, strict hex and mode
//! spellings, PEM handling, streaming hashing.

use super::format::{check_path, parse_hex32};
use super::*;

/// G045: PL-1-4
#[test]
fn plain_absolute_paths_pass_and_everything_else_is_refused() {
    for good in [
        "/usr/bin/kawal",
        "/etc/kawal/kawal.toml",
        "/a",
        "/a/b c/..d/e..",
    ] {
        assert!(check_path(DocKind::Manifest, good).is_ok(), "{good}");
    }
    let long = format!("/{}", "x".repeat(MAX_PATH_BYTES));
    for bad in [
        "",
        "/",
        "a/b",
        "./a",
        "/a/../b",
        "/a/./b",
        "/a//b",
        "/a/",
        "/..",
        "/a\n",
        "/a\0b",
        "/a\u{7f}",
        long.as_str(),
    ] {
        let err = check_path(DocKind::Manifest, bad).unwrap_err();
        assert!(matches!(err, Error::InvalidPath { .. }), "{bad:?}");
    }
}

/// G045: PL-1-4
#[test]
fn long_paths_are_cut_in_error_messages_on_a_character_boundary() {
    let bad = format!("/{}/../x", "é".repeat(3000));
    let Error::InvalidPath { path, .. } = check_path(DocKind::Overlay, &bad).unwrap_err() else {
        panic!("not an InvalidPath");
    };
    assert!(path.len() <= 200);
}

/// G045: PL-1-4
#[test]
fn hashes_have_one_spelling() {
    let lower = "ab".repeat(32);
    assert_eq!(parse_hex32(&lower), Some([0xab; 32]));
    assert_eq!(parse_hex32(&"AB".repeat(32)), None);
    assert_eq!(parse_hex32(&"ab".repeat(31)), None);
    assert_eq!(parse_hex32(&format!("{lower}0")), None);
    assert_eq!(parse_hex32(&format!("+{}", "b".repeat(63))), None);
}

/// G045: PL-1-4
#[test]
fn streaming_hash_matches_one_shot_sha256_across_buffer_boundaries() {
    let data: Vec<u8> = (0..(HASH_BUFFER_BYTES * 2 + 17))
        .map(|i| u8::try_from(i % 251).unwrap())
        .collect();
    for len in [0, 1, HASH_BUFFER_BYTES - 1, HASH_BUFFER_BYTES, data.len()] {
        let mut buf = vec![0u8; HASH_BUFFER_BYTES];
        let (sha, n) = check::hash_reader(&data[..len], &mut buf).unwrap();
        assert_eq!(n, len as u64);
        assert_eq!(sha, kawal_crypto::sha256(&data[..len]), "{len}");
    }
}

/// G045: PL-1-4
#[test]
fn pem_must_be_one_block_of_the_expected_type() {
    let key = SigningKey::generate().unwrap();
    let pem = key.to_pkcs8_pem().unwrap();
    assert!(SigningKey::from_pem(&pem).is_ok());
    assert!(SigningKey::from_pem(&format!("\n  {}\n\n", pem.as_str())).is_ok());
    let twice = format!("{}{}", pem.as_str(), pem.as_str());
    assert!(SigningKey::from_pem(&twice).is_err());
    let relabelled = pem.replace("PRIVATE KEY", "EC PRIVATE KEY");
    assert!(SigningKey::from_pem(&relabelled).is_err());
    let broken = pem.replacen('M', "!", 1);
    assert!(SigningKey::from_pem(&broken).is_err());
    let public = key.public_key();
    assert_eq!(PublicKey::from_pem(&public.to_pem()).unwrap(), public);
    assert!(PublicKey::from_bytes(&[0u8; 31]).is_err());
    assert!(PublicKey::from_bytes(&[0u8; 44]).is_err());
}

/// G045: PL-1-4
#[test]
fn errors_name_the_document_and_never_carry_key_bytes() {
    let key = SigningKey::generate().unwrap();
    let err = SigningKey::from_seed(&[1u8; 31]).unwrap_err();
    assert_eq!(err.to_string(), "key: an Ed25519 seed is 32 bytes");
    let e = Error::Tampered {
        doc: DocKind::Overlay,
    };
    assert_eq!(
        e.to_string(),
        "local overlay was modified after it was signed"
    );
    let pem = key.to_pkcs8_pem().unwrap();
    let damaged = pem.replacen("MC4", "MC5", 1);
    let err = SigningKey::from_pem(&damaged).unwrap_err().to_string();
    assert!(!err.contains(pem.lines().nth(1).unwrap()), "{err}");
}
