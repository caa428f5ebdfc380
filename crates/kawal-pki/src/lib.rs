//! kawal pki: the device's identity key and certificates (G045 AU-1-9).
//!
//! - [`IdentityKey`]: an ECDSA P-256 key, generated on the device, whose PKCS#8 bytes are only
//!   handed out for sealing into the store.
//! - [`device_csr_pem`]: a certificate signing request for a factory CA.
//! - [`issue_dev`]: a throw-away development CA and the device certificate it signs, for
//!   provisioning without a factory CA; its name says `NOT FOR PRODUCTION`.
//! - [`cert_facts`]: what the compliance report shows about a certificate.
#![forbid(unsafe_code)]

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SerialNumber,
    string::Ia5String,
};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

/// Errors of the PKI crate. None of them carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not a PKCS#8 ECDSA P-256 private key.
    #[error("not a PKCS#8 ECDSA P-256 private key: {0}")]
    InvalidKey(String),
    /// A UID that cannot be put in a certificate.
    #[error("UID not usable in a certificate: {reason}")]
    InvalidUid {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Building or signing a certificate or CSR failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// The OS random source failed (serial numbers).
    #[error(transparent)]
    Crypto(#[from] kawal_crypto::Error),
    /// A PEM certificate could not be read.
    #[error("certificate unreadable: {0}")]
    Parse(String),
}

/// Result of PKI operations.
pub type Result<T> = std::result::Result<T, Error>;

/// The device's identity key: ECDSA P-256, PKCS#8 DER held in a `Zeroizing<Vec<u8>>`;
/// `Debug` prints `[REDACTED]`.
///
/// The signing key inside rcgen's `KeyPair` is held by aws-lc, which wipes it when freed;
/// rcgen also keeps its own copy of the DER, which is freed but not wiped on drop.
pub struct IdentityKey {
    der: Zeroizing<Vec<u8>>,
    pair: KeyPair,
}

impl IdentityKey {
    /// A fresh key from the OS CSPRNG.
    pub fn generate() -> Result<Self> {
        let pair = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        Ok(Self {
            der: Zeroizing::new(pair.serialize_der()),
            pair,
        })
    }

    /// The key from its PKCS#8 DER, as unsealed from the store.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self> {
        let pair = KeyPair::try_from(der).map_err(|e| Error::InvalidKey(e.to_string()))?;
        if pair.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(Error::InvalidKey("not an ECDSA P-256 key".to_owned()));
        }
        Ok(Self {
            der: Zeroizing::new(der.to_vec()),
            pair,
        })
    }

    /// The PKCS#8 DER of the private key, for sealing into the store only.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.der
    }

    /// The public key as SubjectPublicKeyInfo DER.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.pair.subject_public_key_info()
    }
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdentityKey([REDACTED])")
    }
}

/// The URI that names a device in its certificates.
fn device_urn(uid: &str) -> Result<SanType> {
    check_uid(uid)?;
    Ok(SanType::URI(Ia5String::try_from(format!(
        "urn:kawal:device:{uid}"
    ))?))
}

/// The same character rules as kawal-platform's `DeviceUid`.
fn check_uid(uid: &str) -> Result<()> {
    let reason = if uid.is_empty() || uid.len() > 64 {
        "length outside 1..=64"
    } else if uid.starts_with('-') {
        "starts with '-'"
    } else if !uid
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        "characters outside [A-Za-z0-9._:-]"
    } else {
        return Ok(());
    };
    Err(Error::InvalidUid { reason })
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// A random positive 128-bit serial number.
fn random_serial() -> Result<SerialNumber> {
    let mut bytes = kawal_crypto::rng::array::<16>()?;
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

/// A certificate signing request for the factory CA, PEM: CN = `uid`, plus a URI SAN
/// `urn:kawal:device:<uid>`, signed by `key`.
pub fn device_csr_pem(key: &IdentityKey, uid: &str) -> Result<String> {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(uid);
    params.subject_alt_names = vec![device_urn(uid)?];
    Ok(params.serialize_request(&key.pair)?.pem()?)
}

/// What a dev provisioning makes on the spot.
pub struct DevIssued {
    /// The dev CA's self-signed certificate, PEM.
    pub ca_cert_pem: String,
    /// The dev CA's key (kept so the device can re-issue; never a production trust anchor).
    pub ca_key: IdentityKey,
    /// The device certificate the dev CA signed, PEM.
    pub device_cert_pem: String,
}

impl fmt::Debug for DevIssued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevIssued")
            .field("ca_cert_pem", &self.ca_cert_pem)
            .field("ca_key", &self.ca_key)
            .field("device_cert_pem", &self.device_cert_pem)
            .finish()
    }
}

/// Validity of the dev CA (10 years).
const CA_DAYS: i64 = 3650;
/// Validity of a device certificate (825 days, the CA/Browser Forum's former TLS maximum).
const DEVICE_DAYS: i64 = 825;
/// Backdating of not-before, for peers whose clocks run slightly behind.
const BACKDATE: Duration = Duration::minutes(5);

/// Makes a dev CA (self-signed, CN `kawal DEV CA <uid> - NOT FOR PRODUCTION`, 10 years,
/// CA:true with path length 0) and the device certificate it signs for `device` (CN = `uid`,
/// SAN DNS `localhost`, IP `127.0.0.1` and `::1`, URI `urn:kawal:device:<uid>`, 825 days,
/// serverAuth and clientAuth EKU, digitalSignature KU).
pub fn issue_dev(device: &IdentityKey, uid: &str) -> Result<DevIssued> {
    let urn = device_urn(uid)?;
    let now = OffsetDateTime::now_utc();

    let ca_key = IdentityKey::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = name(&format!("kawal DEV CA {uid} - NOT FOR PRODUCTION"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now - BACKDATE;
    ca.not_after = now + Duration::days(CA_DAYS);
    ca.serial_number = Some(random_serial()?);
    let ca_cert = ca.self_signed(&ca_key.pair)?;

    let mut leaf = CertificateParams::default();
    leaf.distinguished_name = name(uid);
    leaf.subject_alt_names = vec![
        SanType::DnsName(Ia5String::try_from("localhost")?),
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        urn,
    ];
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = now - BACKDATE;
    leaf.not_after = now + Duration::days(DEVICE_DAYS);
    leaf.serial_number = Some(random_serial()?);
    let issuer = Issuer::from_params(&ca, &ca_key.pair);
    let device_cert = leaf.signed_by(&device.pair, &issuer)?;

    Ok(DevIssued {
        ca_cert_pem: ca_cert.pem(),
        ca_key,
        device_cert_pem: device_cert.pem(),
    })
}

/// Facts about a PEM certificate for the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CertFacts {
    /// Subject common name (empty if none).
    pub subject_cn: String,
    /// Issuer common name (empty if none).
    pub issuer_cn: String,
    /// Start of validity, RFC 3339 UTC (`YYYY-MM-DDTHH:MM:SSZ`).
    pub not_before: String,
    /// End of validity, RFC 3339 UTC.
    pub not_after: String,
    /// Whether a dev CA issued it (issuer CN contains `DEV CA`).
    pub is_dev: bool,
    /// SHA-256 of the DER, lowercase hex.
    pub fingerprint_sha256: String,
}

/// Reads the facts of the first certificate in `pem`.
pub fn cert_facts(pem: &str) -> Result<CertFacts> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| Error::Parse(format!("PEM: {e}")))?;
    if block.label != "CERTIFICATE" {
        return Err(Error::Parse(format!(
            "PEM block is {:?}, not CERTIFICATE",
            block.label
        )));
    }
    let cert = block
        .parse_x509()
        .map_err(|e| Error::Parse(format!("X.509: {e}")))?;
    let cn = |n: &x509_parser::x509::X509Name<'_>| {
        n.iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let issuer_cn = cn(cert.issuer());
    Ok(CertFacts {
        subject_cn: cn(cert.subject()),
        is_dev: issuer_cn.contains("DEV CA"),
        issuer_cn,
        not_before: rfc3339(cert.validity().not_before.to_datetime()),
        not_after: rfc3339(cert.validity().not_after.to_datetime()),
        fingerprint_sha256: hex::encode(kawal_crypto::sha256(&block.contents)),
    })
}

fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}
