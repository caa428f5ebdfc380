//! The sensor CA (G045 AU-1-9, AU-1-10): a local ECDSA P-256 CA that signs sensors' CSRs and
//! the CRL. Its key is sealed in the encrypted store and never leaves it except into rcgen's
//! signer.
//!
//! Store layout, table `pki-sensor-ca` (data class): `ca-key-pkcs8` (the key, PKCS#8 DER) and
//! `ca-cert-der` (its self-signed certificate), written together in one transaction;
//! `crl-number` (decimal text, kept by the registry).
use std::fmt;

use kawal_store::{Store, Table};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyIdMethod, KeyUsagePurpose, RevocationReason, RevokedCertParams, SanType,
    SerialNumber, string::Ia5String,
};
use time::Duration;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::csr::{CsrKey, read_csr};
use crate::identity::BACKDATE;
use crate::util::{check_uid, datetime, name, now_unix, random_serial, serial_hex};
use crate::{Error, IdentityKey, Result};

/// The store table of the sensor CA: its key, its certificate, the CRL number.
pub(crate) const CA_TABLE: Table = Table::data("pki-sensor-ca");
const KEY_RECORD: &str = "ca-key-pkcs8";
const CERT_RECORD: &str = "ca-cert-der";

/// Validity of the sensor CA (10 years).
const CA_DAYS: i64 = 3650;
/// Default validity of a sensor certificate.
pub const DEFAULT_CERT_DAYS: u32 = 365;
const DAY: i64 = 86_400;

/// The URI that names a sensor in its certificate.
pub fn sensor_urn(uid: &str) -> String {
    format!("urn:kawal:sensor:{uid}")
}

/// A certificate the sensor CA issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// Its serial number as text ([`serial_hex`](crate::serial_hex)).
    pub serial: String,
    /// Start of validity, Unix seconds (5 minutes before issuance).
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
}

/// Why a certificate is in the CRL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum RevokeReason {
    /// No reason given.
    Unspecified,
    /// The sensor's key is known or suspected to be compromised.
    KeyCompromise,
    /// A newer certificate was issued to the sensor (re-enrolment, renewal, CSR signed).
    Superseded,
    /// The sensor is taken out of service.
    CessationOfOperation,
}

impl RevokeReason {
    /// The reason as written in the audit log and `kawal sensor show`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::KeyCompromise => "key-compromise",
            Self::Superseded => "superseded",
            Self::CessationOfOperation => "cessation-of-operation",
        }
    }

    /// The reason from its text (as [`as_str`](Self::as_str) writes it).
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Unspecified,
            Self::KeyCompromise,
            Self::Superseded,
            Self::CessationOfOperation,
        ]
        .into_iter()
        .find(|r| r.as_str() == text)
    }

    fn rcgen(self) -> RevocationReason {
        match self {
            Self::Unspecified => RevocationReason::Unspecified,
            Self::KeyCompromise => RevocationReason::KeyCompromise,
            Self::Superseded => RevocationReason::Superseded,
            Self::CessationOfOperation => RevocationReason::CessationOfOperation,
        }
    }
}

/// One line of the CRL.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RevokedEntry {
    /// The certificate's serial as text ([`serial_hex`](crate::serial_hex)).
    pub serial: String,
    /// When it was revoked, Unix seconds.
    pub revoked_at: i64,
    /// Why.
    pub reason: RevokeReason,
}

/// A signed certificate revocation list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crl {
    /// DER.
    pub der: Vec<u8>,
    /// PEM (`X509 CRL`).
    pub pem: String,
    /// Its CRL number.
    pub number: u64,
    /// This update, Unix seconds.
    pub this_update: i64,
    /// Next update, Unix seconds.
    pub next_update: i64,
}

/// What a certificate issued by this CA says about the sensor (read after verifying the CA's
/// signature on it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SensorCert {
    /// The UID: from the `urn:kawal:sensor:` URI, or the CN when there is none.
    pub uid: String,
    /// The serial as text.
    pub serial: String,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
}

/// The sensor CA: ECDSA P-256, self-signed, CN `kawal sensor CA <gateway uid>`, CA:true with
/// path length 0, keyCertSign and cRLSign, 10 years. `Debug` shows no key.
pub struct SensorCa {
    key: IdentityKey,
    cert_der: Vec<u8>,
    cert_pem: String,
    not_after: i64,
}

impl fmt::Debug for SensorCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SensorCa")
            .field("key", &self.key)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

pub(crate) fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

const NOT_ISSUED: &str = "not issued by this CA";

/// Verifies that `cert_der` was signed by the CA certificate `ca_der` and reads the sensor's
/// UID (the `urn:kawal:sensor:` URI, else the CN), serial and validity from it.
pub(crate) fn read_issued_by(ca_der: &[u8], cert_der: &[u8]) -> Result<SensorCert> {
    let ca = parse_cert(ca_der)?;
    let cert = parse_cert(cert_der)?;
    cert.verify_signature(Some(ca.public_key()))
        .map_err(|_| Error::Parse(NOT_ISSUED.into()))?;
    if cert.issuer().as_raw() != ca.subject().as_raw() {
        return Err(Error::Parse(NOT_ISSUED.into()));
    }
    let urn = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .and_then(|san| {
            san.value.general_names.iter().find_map(|g| match g {
                GeneralName::URI(u) => u.strip_prefix("urn:kawal:sensor:").map(str::to_owned),
                _ => None,
            })
        });
    let uid = match urn {
        Some(u) => u,
        None => cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| Error::Parse("no sensor UID in the certificate".into()))?,
    };
    check_uid(&uid)?;
    Ok(SensorCert {
        uid,
        serial: serial_hex(cert.raw_serial()),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// SHA-256 (hex) of a certificate's SubjectPublicKeyInfo.
pub(crate) fn key_fingerprint(cert_der: &[u8]) -> Result<String> {
    Ok(hex::encode(kawal_crypto::sha256(
        parse_cert(cert_der)?.public_key().raw,
    )))
}

fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| Error::Parse(format!("X.509: {e}")))?;
    if !rest.is_empty() {
        return Err(Error::Parse("trailing bytes after the certificate".into()));
    }
    Ok(cert)
}

impl SensorCa {
    /// A new sensor CA for the gateway `gateway_uid`, not stored anywhere (tests; the daemon
    /// uses [`load_or_create`](Self::load_or_create)).
    pub fn generate(gateway_uid: &str) -> Result<Self> {
        check_uid(gateway_uid)?;
        let key = IdentityKey::generate()?;
        let now = datetime(now_unix())?;
        let mut ca = CertificateParams::default();
        ca.distinguished_name = name(&format!("kawal sensor CA {gateway_uid}"));
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.not_before = now - BACKDATE;
        ca.not_after = now + Duration::days(CA_DAYS);
        ca.serial_number = Some(random_serial()?);
        let cert = ca.self_signed(&key.pair)?;
        Self::from_parts(key, cert.der().to_vec())
    }

    fn from_parts(key: IdentityKey, cert_der: Vec<u8>) -> Result<Self> {
        let cert = parse_cert(&cert_der)?;
        if cert.public_key().raw != key.public_key_der().as_slice() {
            return Err(Error::Corrupt {
                what: "sensor CA (key and certificate do not match)",
            });
        }
        let not_after = cert.validity().not_after.timestamp();
        drop(cert);
        Ok(Self {
            cert_pem: pem("CERTIFICATE", &cert_der),
            key,
            cert_der,
            not_after,
        })
    }

    /// The sensor CA sealed in `store`, made and sealed there on first use. A CA already in
    /// the store is kept as it is, whatever `gateway_uid` now says.
    pub fn load_or_create(store: &Store, gateway_uid: &str) -> Result<Self> {
        if let Some(ca) = Self::load(store)? {
            return Ok(ca);
        }
        let ca = Self::generate(gateway_uid)?;
        store.put_many(
            CA_TABLE,
            &[
                (KEY_RECORD, ca.key.pkcs8_der()),
                (CERT_RECORD, ca.cert_der.as_slice()),
            ],
        )?;
        Ok(ca)
    }

    /// The sensor CA sealed in `store`, if there is one.
    pub fn load(store: &Store) -> Result<Option<Self>> {
        let key = store.get(CA_TABLE, KEY_RECORD)?;
        let cert = store.get(CA_TABLE, CERT_RECORD)?;
        match (key, cert) {
            (None, None) => Ok(None),
            (Some(key), Some(cert)) => {
                let key = IdentityKey::from_pkcs8_der(&key).map_err(|_| Error::Corrupt {
                    what: "sensor CA key",
                })?;
                Self::from_parts(key, cert.to_vec()).map(Some)
            }
            _ => Err(Error::Corrupt {
                what: "sensor CA (key or certificate missing)",
            }),
        }
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// End of the CA's validity, Unix seconds (no sensor certificate outlives it).
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    fn issuer(&self) -> Result<Issuer<'static, &rcgen::KeyPair>> {
        Ok(Issuer::from_ca_cert_der(
            &self.cert_der.as_slice().into(),
            &self.key.pair,
        )?)
    }

    /// Verifies and signs a sensor's CSR (PEM or DER, at most 16 KiB) for `uid`, valid `days`
    /// days (at least 1; never beyond the CA's own end). Only the request's key is used.
    pub fn sign_csr(&self, csr: &[u8], uid: &str, days: u32) -> Result<Issued> {
        let key = read_csr(csr)?;
        self.issue(&key, uid, days, now_unix())
    }

    /// Issues the certificate for an already verified request key.
    pub(crate) fn issue(&self, key: &CsrKey, uid: &str, days: u32, now: i64) -> Result<Issued> {
        check_uid(uid)?;
        let not_before = now - BACKDATE.whole_seconds();
        let not_after = now
            .saturating_add(i64::from(days.max(1)).saturating_mul(DAY))
            .min(self.not_after);
        let mut leaf = CertificateParams::default();
        leaf.distinguished_name = name(uid);
        leaf.subject_alt_names = vec![SanType::URI(Ia5String::try_from(sensor_urn(uid))?)];
        leaf.is_ca = IsCa::ExplicitNoCa;
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        leaf.use_authority_key_identifier_extension = true;
        leaf.not_before = datetime(not_before)?;
        leaf.not_after = datetime(not_after)?;
        let serial = random_serial()?;
        let serial_text = serial_hex(serial.as_ref());
        leaf.serial_number = Some(serial);
        let cert = leaf.signed_by(key, &self.issuer()?)?;
        let cert_der = cert.der().to_vec();
        // The certificate must carry exactly the key the request proved possession of.
        if parse_cert(&cert_der)?.public_key().raw != key.spki.as_slice() {
            return Err(Error::Csr {
                reason: "the request's key could not be carried over unchanged",
            });
        }
        Ok(Issued {
            cert_pem: cert.pem(),
            cert_der,
            serial: serial_text,
            not_before,
            not_after,
        })
    }

    /// Verifies that `cert_der` is a certificate this CA signed and reads the sensor's UID,
    /// serial and validity from it (for EST `simplereenroll`, whose TLS client certificate
    /// arrives as DER). Validity dates are returned, not checked.
    pub fn read_issued(&self, cert_der: &[u8]) -> Result<SensorCert> {
        read_issued_by(&self.cert_der, cert_der).map_err(|e| match e {
            Error::Parse(m) if m == NOT_ISSUED => {
                Error::Parse("not issued by this sensor CA".into())
            }
            other => other,
        })
    }

    /// A CRL listing `revoked`, numbered `crl_number`, valid from now for `next_update_days`
    /// days (at least 1).
    pub fn crl(
        &self,
        revoked: &[RevokedEntry],
        crl_number: u64,
        next_update_days: u32,
    ) -> Result<Crl> {
        let now = now_unix();
        let next = now.saturating_add(i64::from(next_update_days.max(1)).saturating_mul(DAY));
        let mut revoked_certs = Vec::with_capacity(revoked.len());
        for r in revoked {
            revoked_certs.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&serial_bytes(&r.serial)?),
                revocation_time: datetime(r.revoked_at)?,
                reason_code: Some(r.reason.rcgen()),
                invalidity_date: None,
            });
        }
        let params = CertificateRevocationListParams {
            this_update: datetime(now)?,
            next_update: datetime(next)?,
            crl_number: SerialNumber::from(crl_number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: self.key_id_method()?,
        };
        let crl = params.signed_by(&self.issuer()?)?;
        let der = crl.der().to_vec();
        Ok(Crl {
            pem: pem("X509 CRL", &der),
            der,
            number: crl_number,
            this_update: now,
            next_update: next,
        })
    }

    /// The CA's subject key identifier as the CRL's authority key identifier, so both match
    /// whatever rcgen's default method is.
    fn key_id_method(&self) -> Result<KeyIdMethod> {
        let ca = parse_cert(&self.cert_der)?;
        let ski = ca
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => {
                    Some(k.0.to_vec())
                }
                _ => None,
            });
        Ok(ski.map_or(KeyIdMethod::Sha256, KeyIdMethod::PreSpecified))
    }
}

/// The big-endian bytes of a serial written by [`serial_hex`].
fn serial_bytes(text: &str) -> Result<Vec<u8>> {
    let even = if text.len() % 2 == 1 {
        format!("0{text}")
    } else {
        text.to_owned()
    };
    hex::decode(even).map_err(|_| Error::Corrupt {
        what: "serial number in the revocation list",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_text_round_trips_through_bytes() {
        for bytes in [vec![0x0a, 0xff], vec![0x7f; 16], vec![0x01, 0x00, 0x00]] {
            let text = serial_hex(&bytes);
            assert_eq!(serial_bytes(&text).ok(), Some(bytes));
        }
        assert!(serial_bytes("xyz").is_err());
    }

    #[test]
    fn reasons_round_trip() {
        for r in [
            RevokeReason::Unspecified,
            RevokeReason::KeyCompromise,
            RevokeReason::Superseded,
            RevokeReason::CessationOfOperation,
        ] {
            assert_eq!(RevokeReason::parse(r.as_str()), Some(r));
        }
        assert_eq!(RevokeReason::parse("nope"), None);
    }
}
