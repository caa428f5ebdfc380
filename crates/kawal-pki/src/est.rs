//! EST (RFC 7030) encodings: the certs-only PKCS#7 answer and the base64 CSR body.
//!
//! The PKCS#7 structure is a fixed, degenerate SignedData with no signers, so a ~40-line DER
//! writer does it; it is an encoding, not cryptography, and `openssl pkcs7` reads it in the
//! tests.
use base64::Engine as _;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

use crate::csr::CSR_MAX;
use crate::{Error, Result};

/// DER of the OID 1.2.840.113549.1.7.2 (`signedData`), without tag and length.
const OID_SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
/// DER of the OID 1.2.840.113549.1.7.1 (`data`).
const OID_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const OID: u8 = 0x06;
/// `[0]`, constructed (EXPLICIT content, or the IMPLICIT SET OF certificates).
const CONTEXT_0: u8 = 0xa0;

/// Appends one DER TLV: `tag`, the definite length in its shortest form, `content`.
fn tlv(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    let len = content.len();
    match u8::try_from(len) {
        Ok(short) if short < 0x80 => out.push(short),
        _ => {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|b| **b == 0).count();
            let significant = &bytes[skip..];
            // At most size_of::<usize>() bytes, so the count always fits.
            out.push(0x80 | u8::try_from(significant.len()).unwrap_or(0x7f));
            out.extend_from_slice(significant);
        }
    }
    out.extend_from_slice(content);
}

fn wrap(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    tlv(&mut out, tag, content);
    out
}

/// A degenerate PKCS#7 / CMS SignedData holding only `certs_der` (RFC 7030 §4.1.3, §4.2.3:
/// `application/pkcs7-mime; smime-type=certs-only`), DER.
///
/// The certificates keep the caller's order rather than DER's sorted SET OF order: EST clients
/// take the first one as theirs, and `openssl crl2pkcs7` writes them the same way.
pub fn pkcs7_certs_only(certs_der: &[Vec<u8>]) -> Vec<u8> {
    let mut signed = Vec::new();
    tlv(&mut signed, INTEGER, &[0x01]); // version 1
    tlv(&mut signed, SET, &[]); // digestAlgorithms: none
    tlv(&mut signed, SEQUENCE, &wrap(OID, OID_DATA)); // encapContentInfo: data, absent
    tlv(&mut signed, CONTEXT_0, &certs_der.concat()); // [0] IMPLICIT certificates
    tlv(&mut signed, SET, &[]); // signerInfos: none
    let mut info = wrap(OID, OID_SIGNED_DATA);
    tlv(&mut info, CONTEXT_0, &wrap(SEQUENCE, &signed));
    wrap(SEQUENCE, &info)
}

/// The CSR (DER) of an EST `simpleenroll` / `simplereenroll` body: base64 of the DER
/// (RFC 7030 §4.2.1), line breaks and other ASCII white space allowed. The decoded request must
/// be at most 16 KiB and parse as PKCS#10; its signature is checked when it is signed.
pub fn parse_est_csr(body: &[u8]) -> Result<Vec<u8>> {
    // Base64 grows by 4/3, plus line breaks: twice the DER limit bounds any honest body.
    if body.len() > 2 * CSR_MAX {
        return Err(Error::Csr {
            reason: "larger than 16 KiB",
        });
    }
    let compact: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .map_err(|_| Error::Csr {
            reason: "the body is not base64",
        })?;
    if der.len() > CSR_MAX {
        return Err(Error::Csr {
            reason: "larger than 16 KiB",
        });
    }
    match X509CertificationRequest::from_der(&der) {
        Ok(([], _)) => Ok(der),
        _ => Err(Error::Csr {
            reason: "not a PKCS#10 certificate request",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_use_the_shortest_form() {
        assert_eq!(wrap(0x04, &[]), vec![0x04, 0x00]);
        assert_eq!(wrap(0x04, &[7; 0x7f])[..2], [0x04, 0x7f]);
        assert_eq!(wrap(0x04, &[7; 0x80])[..3], [0x04, 0x81, 0x80]);
        assert_eq!(wrap(0x04, &[7; 0xff])[..3], [0x04, 0x81, 0xff]);
        assert_eq!(wrap(0x04, &[7; 0x100])[..4], [0x04, 0x82, 0x01, 0x00]);
        assert_eq!(
            wrap(0x04, &vec![7; 0x1_0000])[..5],
            [0x04, 0x83, 0x01, 0x00, 0x00]
        );
        assert_eq!(wrap(0x04, &[7; 0x100]).len(), 0x100 + 4);
    }

    #[test]
    fn empty_certs_only_structure_is_fixed() {
        // What `openssl crl2pkcs7 -nocrl` writes for no certificates, minus its empty [1].
        let der = pkcs7_certs_only(&[]);
        assert_eq!(
            hex::encode(der),
            "302506092a864886f70d010702a0183016020101310030\
             0b06092a864886f70d010701a0003100"
        );
    }

    #[test]
    fn est_body_must_be_base64_of_a_csr() {
        assert!(parse_est_csr(b"not base64 !!").is_err());
        assert!(parse_est_csr(b"AAAA").is_err());
        assert!(parse_est_csr(&vec![b'A'; 40 * 1024]).is_err());
    }
}
