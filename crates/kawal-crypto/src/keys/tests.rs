//! Tests of the key hierarchy: separation by purpose and version, AEAD context binding.
use super::*;

fn hierarchy() -> KeyHierarchy {
    KeyHierarchy::new(RootSecret::generate().unwrap())
}

/// G045: CR-1-3
#[test]
fn purposes_and_versions_get_distinct_keys() {
    let h = hierarchy();
    let v1 = KeyVersion::new(1).unwrap();
    let v2 = KeyVersion::new(2).unwrap();
    let data = h.aead::<StoreData>(&v1).unwrap();
    let pii = h.aead::<Pii>(&v1).unwrap();
    let data2 = h.aead::<StoreData>(&v2).unwrap();
    let sealed = data.seal(b"ctx", b"telemetry").unwrap();
    assert_eq!(&data.open(b"ctx", &sealed).unwrap()[..], b"telemetry");
    assert!(
        pii.open(b"ctx", &sealed).is_err(),
        "PII key opened store data"
    );
    assert!(
        data2.open(b"ctx", &sealed).is_err(),
        "version 2 opened version 1"
    );
    let idx = h.mac::<RecordIndex>(&v1).unwrap();
    let ses = h.mac::<Session>(&v1).unwrap();
    assert_ne!(idx.mac(b"x"), ses.mac(b"x"));
}

/// G045: CR-1-3
#[test]
fn same_root_and_salt_derive_the_same_key() {
    let root = RootSecret::generate().unwrap();
    let blob = root
        .seal(
            &crate::root::KekInputs {
                machine_binding: b"m",
                passphrase: None,
                argon2: crate::password::Argon2Params::TEST,
            },
            b"u",
        )
        .unwrap();
    let kek = crate::root::KekInputs {
        machine_binding: b"m",
        passphrase: None,
        argon2: crate::password::Argon2Params::TEST,
    };
    let a = KeyHierarchy::new(root);
    let b = KeyHierarchy::new(RootSecret::unseal(&blob, &kek, b"u").unwrap());
    let v = KeyVersion::new(1).unwrap();
    let sealed = a
        .aead::<StoreData>(&v)
        .unwrap()
        .seal(b"", b"hello")
        .unwrap();
    assert_eq!(
        &b.aead::<StoreData>(&v).unwrap().open(b"", &sealed).unwrap()[..],
        b"hello"
    );
    assert_eq!(
        a.signing::<AuditSigning>(&v).unwrap().public_key(),
        b.signing::<AuditSigning>(&v).unwrap().public_key()
    );
}

/// G045: DS-1-3
#[test]
fn ciphertext_is_bound_to_its_context_and_tamper_evident() {
    let h = hierarchy();
    let k = h.aead::<StoreData>(&KeyVersion::new(1).unwrap()).unwrap();
    let sealed = k.seal(b"table/a", b"value").unwrap();
    assert!(k.open(b"table/b", &sealed).is_err());
    for i in 0..sealed.len() {
        let mut bad = sealed.clone();
        bad[i] ^= 1;
        assert!(k.open(b"table/a", &bad).is_err());
    }
    assert_ne!(
        k.seal(b"table/a", b"value").unwrap(),
        sealed,
        "nonces repeat"
    );
}

#[test]
fn signatures_verify_with_the_public_key_only() {
    let h = hierarchy();
    let k = h
        .signing::<AuditSigning>(&KeyVersion::new(1).unwrap())
        .unwrap();
    let sig = k.sign(b"checkpoint");
    assert!(crate::sign::verify_ed25519(
        &k.public_key(),
        b"checkpoint",
        &sig
    ));
    assert!(!crate::sign::verify_ed25519(
        &k.public_key(),
        b"checkpoinT",
        &sig
    ));
}

#[test]
fn debug_output_never_contains_key_bytes() {
    let h = hierarchy();
    let k = h.aead::<Pii>(&KeyVersion::new(7).unwrap()).unwrap();
    assert_eq!(format!("{k:?}"), "AeadKey<pii>(v7, [REDACTED])");
    assert_eq!(format!("{h:?}"), "KeyHierarchy([REDACTED])");
}
