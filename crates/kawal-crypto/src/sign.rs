//! Signature verification with public keys only (no secret here).
use aws_lc_rs::signature;

/// Checks an Ed25519 signature.
pub fn verify_ed25519(public_key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    signature::UnparsedPublicKey::new(&signature::ED25519, public_key)
        .verify(msg, sig)
        .is_ok()
}

/// Checks an ECDSA P-256/SHA-256 signature (`r || s`, 64 bytes) by an uncompressed public key.
pub fn verify_p256(public_key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, public_key)
        .verify(msg, sig)
        .is_ok()
}
