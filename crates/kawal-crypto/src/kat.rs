//! Known-answer tests of every primitive kawal uses (PL-3-4, CR-1-1).
//!
//! Vectors: SHA-256 (FIPS 180-2 "abc"), HMAC-SHA256 (RFC 4231 case 2), HKDF-SHA256 (RFC 5869
//! case 1), AES-256-GCM (GCM spec test case 16), Ed25519 (RFC 8032 7.1 test 1), ECDSA P-256
//! (RFC 6979 A.2.5 "sample" verification, plus a sign/verify pairwise check), Argon2id
//! (RFC 9106 5.3). A test may be asked to corrupt its input, so tests of the self-test can see
//! a failure refused; the daemon never asks.

use std::time::Instant;

use aws_lc_rs::{aead, digest, hkdf, hmac, rand, signature};

/// One primitive's test and how long it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KatOutcome {
    /// Primitive name, e.g. "aes-256-gcm".
    pub name: &'static str,
    /// Whether the computed answer matched.
    pub passed: bool,
    /// Wall time in microseconds.
    pub micros: u64,
}

/// The primitives tested, in order.
pub const NAMES: [&str; 7] = [
    "sha-256",
    "hmac-sha256",
    "hkdf-sha256",
    "aes-256-gcm",
    "ed25519",
    "ecdsa-p256",
    "argon2id",
];

type Kat = fn(bool) -> bool;
const TESTS: [Kat; 7] = [
    sha256,
    hmac_sha256,
    hkdf_sha256,
    aes_gcm,
    ed25519,
    ecdsa_p256,
    argon2id,
];

/// Runs every known-answer test; `corrupt` names one whose input is deliberately damaged.
pub fn run_all(corrupt: Option<&str>) -> Vec<KatOutcome> {
    NAMES
        .iter()
        .zip(TESTS)
        .map(|(&name, test)| {
            let start = Instant::now();
            let passed = test(corrupt == Some(name));
            let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
            KatOutcome {
                name,
                passed,
                micros,
            }
        })
        .collect()
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s.split_whitespace().collect::<String>()).unwrap_or_default()
}

fn damage(mut v: Vec<u8>, corrupt: bool) -> Vec<u8> {
    if corrupt && let Some(b) = v.first_mut() {
        *b ^= 0x80;
    }
    v
}

fn sha256(corrupt: bool) -> bool {
    let msg = damage(b"abc".to_vec(), corrupt);
    digest::digest(&digest::SHA256, &msg).as_ref()
        == unhex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
}

fn hmac_sha256(corrupt: bool) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, b"Jefe");
    let msg = damage(b"what do ya want for nothing?".to_vec(), corrupt);
    hmac::sign(&key, &msg).as_ref()
        == unhex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
}

struct Len(usize);
impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn hkdf_sha256(corrupt: bool) -> bool {
    let ikm = damage(vec![0x0b; 22], corrupt);
    let salt = unhex("000102030405060708090a0b0c");
    let info = unhex("f0f1f2f3f4f5f6f7f8f9");
    let expected = unhex(
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
    );
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &salt).extract(&ikm);
    let mut out = vec![0u8; 42];
    match prk.expand(&[&info], Len(42)) {
        Ok(okm) => okm.fill(&mut out).is_ok() && out == expected,
        Err(_) => false,
    }
}

fn aes_gcm(corrupt: bool) -> bool {
    let key = unhex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308");
    let iv = unhex("cafebabefacedbaddecaf888");
    let aad = unhex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
    let pt = damage(
        unhex(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72
             1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        ),
        corrupt,
    );
    let expected = unhex(
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa
         8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662
         76fc6ece0f4e1768cddf8853bb2d551b",
    );
    let Ok(unbound) = aead::UnboundKey::new(&aead::AES_256_GCM, &key) else {
        return false;
    };
    let key = aead::LessSafeKey::new(unbound);
    let Ok(nonce) = aead::Nonce::try_assume_unique_for_key(&iv) else {
        return false;
    };
    let mut buf = pt.clone();
    if key
        .seal_in_place_append_tag(nonce, aead::Aad::from(&aad), &mut buf)
        .is_err()
    {
        return false;
    }
    if buf != expected {
        return false;
    }
    // And the other direction, which must also authenticate.
    let Ok(nonce) = aead::Nonce::try_assume_unique_for_key(&iv) else {
        return false;
    };
    matches!(key.open_in_place(nonce, aead::Aad::from(&aad), &mut buf), Ok(p) if *p == pt[..])
}

fn ed25519(corrupt: bool) -> bool {
    let seed = unhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
    let public = unhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
    let expected = unhex(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    );
    let msg: &[u8] = if corrupt { b"x" } else { b"" };
    let Ok(pair) = signature::Ed25519KeyPair::from_seed_and_public_key(&seed, &public) else {
        return false;
    };
    pair.sign(msg).as_ref() == expected && crate::sign::verify_ed25519(&public, msg, &expected)
}

fn ecdsa_p256(corrupt: bool) -> bool {
    let public = unhex(
        "04 60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6
            7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299",
    );
    let sig = unhex(
        "EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716
         F7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8",
    );
    let msg = damage(b"sample".to_vec(), corrupt);
    if !crate::sign::verify_p256(&public, &msg, &sig) {
        return false;
    }
    // Pairwise consistency of a fresh key, as FIPS 140 asks of key generation.
    let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
    let Ok(pair) = signature::EcdsaKeyPair::generate(alg) else {
        return false;
    };
    let Ok(sig) = pair.sign(&rand::SystemRandom::new(), b"pairwise") else {
        return false;
    };
    use signature::KeyPair;
    crate::sign::verify_p256(pair.public_key().as_ref(), b"pairwise", sig.as_ref())
}

fn argon2id(corrupt: bool) -> bool {
    use argon2::{Algorithm, Argon2, AssociatedData, ParamsBuilder, Version};
    let Ok(data) = AssociatedData::new(&[0x04; 12]) else {
        return false;
    };
    let Ok(params) = ParamsBuilder::new()
        .m_cost(32)
        .t_cost(3)
        .p_cost(4)
        .data(data)
        .build()
    else {
        return false;
    };
    let secret = [0x03u8; 8];
    let Ok(ctx) = Argon2::new_with_secret(&secret, Algorithm::Argon2id, Version::V0x13, params)
    else {
        return false;
    };
    let password = damage(vec![0x01; 32], corrupt);
    let mut out = [0u8; 32];
    ctx.hash_password_into(&password, &[0x02; 16], &mut out)
        .is_ok()
        && out[..] == unhex("0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// G045: PL-3-4, CR-1-1
    #[test]
    fn every_known_answer_test_passes() {
        for o in run_all(None) {
            assert!(o.passed, "{} failed", o.name);
        }
    }

    /// G045: PL-3-4
    #[test]
    fn each_corrupted_input_is_caught() {
        for name in NAMES {
            let out = run_all(Some(name));
            for o in out {
                assert_eq!(
                    o.passed,
                    o.name != name,
                    "corrupting {name}: {} passed={}",
                    o.name,
                    o.passed
                );
            }
        }
    }
}
