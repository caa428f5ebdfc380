//! Reading a sensor's certificate signing request (PKCS#10) before the sensor CA signs it.
//!
//! The request proves possession of the key (its self-signature is verified on aws-lc-rs) and
//! carries the public key; nothing else in it is used. Every requested name and extension is
//! ignored: the CA sets the subject, SAN, EKU and KU itself from the enrolment record. Only
//! ECDSA keys on P-256 or P-384 (uncompressed points) are accepted: the curves every sensor TLS
//! stack (mbedTLS, wolfSSL) and the gateway's rustls verify; RSA, P-521 and Ed25519 are refused.
use std::borrow::Cow;

use rcgen::{PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PublicKeyData, SignatureAlgorithm};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_SIG_ECDSA_WITH_SHA256,
    OID_SIG_ECDSA_WITH_SHA384, OID_SIG_ECDSA_WITH_SHA512,
};
use x509_parser::prelude::FromDer;

use crate::{Error, Result};

/// The largest CSR accepted, PEM or DER (RFC 7030 sets no limit; a P-384 request is under
/// 1 KiB, so this leaves room for any honest request and none for memory abuse).
pub const CSR_MAX: usize = 16 * 1024;

fn refused(reason: &'static str) -> Error {
    Error::Csr { reason }
}

/// The public key of a verified request, in the shape rcgen signs.
#[derive(Debug, Clone)]
pub(crate) struct CsrKey {
    /// The SubjectPublicKeyInfo DER, as in the request.
    pub(crate) spki: Vec<u8>,
    /// The uncompressed EC point.
    point: Vec<u8>,
    /// The key's curve, as rcgen names it (with its matching hash).
    alg: &'static SignatureAlgorithm,
}

impl CsrKey {
    /// SHA-256 of the SubjectPublicKeyInfo, lowercase hex: how the registry recognises a key.
    pub(crate) fn fingerprint(&self) -> String {
        hex::encode(kawal_crypto::sha256(&self.spki))
    }
}

impl PublicKeyData for CsrKey {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.alg
    }
}

/// The DER of a request given as PEM (`CERTIFICATE REQUEST` or `NEW CERTIFICATE REQUEST`) or
/// as DER.
fn der_of(input: &[u8]) -> Result<Cow<'_, [u8]>> {
    if input.len() > CSR_MAX {
        return Err(refused("larger than 16 KiB"));
    }
    let start = input
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(input.len());
    if !input[start..].starts_with(b"-----BEGIN") {
        return Ok(Cow::Borrowed(input));
    }
    let (_, block) =
        x509_parser::pem::parse_x509_pem(&input[start..]).map_err(|_| refused("unreadable PEM"))?;
    if block.label != "CERTIFICATE REQUEST" && block.label != "NEW CERTIFICATE REQUEST" {
        return Err(refused("the PEM block is not a CERTIFICATE REQUEST"));
    }
    Ok(Cow::Owned(block.contents))
}

/// Parses `input` (PEM or DER, at most [`CSR_MAX`] bytes), checks its key type and verifies
/// its self-signature.
pub(crate) fn read_csr(input: &[u8]) -> Result<CsrKey> {
    let der = der_of(input)?;
    let (rest, csr) = X509CertificationRequest::from_der(&der)
        .map_err(|_| refused("not a PKCS#10 certificate request"))?;
    if !rest.is_empty() {
        return Err(refused("trailing bytes after the request"));
    }
    let spki = &csr.certification_request_info.subject_pki;
    if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY {
        return Err(refused("only ECDSA P-256 or P-384 keys are accepted"));
    }
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    let (alg, point_len) = match curve {
        Some(c) if c == OID_EC_P256 => (&PKCS_ECDSA_P256_SHA256, 65),
        Some(c) if c == OID_NIST_EC_P384 => (&PKCS_ECDSA_P384_SHA384, 97),
        _ => return Err(refused("only ECDSA P-256 or P-384 keys are accepted")),
    };
    let point = &spki.subject_public_key.data;
    if point.len() != point_len || point.first() != Some(&0x04) {
        return Err(refused("the EC public key is not an uncompressed point"));
    }
    let sig = &csr.signature_algorithm.algorithm;
    if *sig != OID_SIG_ECDSA_WITH_SHA256
        && *sig != OID_SIG_ECDSA_WITH_SHA384
        && *sig != OID_SIG_ECDSA_WITH_SHA512
    {
        return Err(refused(
            "signature algorithm is not ECDSA with SHA-256/384/512",
        ));
    }
    csr.verify_signature()
        .map_err(|_| refused("the request's signature does not verify"))?;
    Ok(CsrKey {
        spki: spki.raw.to_vec(),
        point: point.to_vec(),
        alg,
    })
}
