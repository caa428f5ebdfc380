//! The device's own identity: its key, its CSR for a factory CA, and the dev CA (G045 AU-1-9).
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, string::Ia5String,
};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use crate::util::{check_uid, name, random_serial};
use crate::{Error, Result};

/// The device's identity key: ECDSA P-256, PKCS#8 DER held in a `Zeroizing<Vec<u8>>`;
/// `Debug` prints `[REDACTED]`. The sensor CA's key is one too.
///
/// The signing key inside rcgen's `KeyPair` is held by aws-lc, which wipes it when freed;
/// rcgen also keeps its own copy of the DER, which is freed but not wiped on drop.
pub struct IdentityKey {
    der: Zeroizing<Vec<u8>>,
    pub(crate) pair: KeyPair,
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
pub(crate) const BACKDATE: Duration = Duration::minutes(5);

/// Makes a dev CA (self-signed, CN `kawal DEV CA <uid> - NOT FOR PRODUCTION`, 10 years,
/// CA:true with path length 0) and the device certificate it signs for `device` (CN = `uid`,
/// SAN DNS `localhost`, IP `127.0.0.1` and `::1`, URI `urn:kawal:device:<uid>`, 825 days,
/// serverAuth and clientAuth EKU, digitalSignature KU).
pub fn issue_dev(device: &IdentityKey, uid: &str) -> Result<DevIssued> {
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

    let leaf = dev_leaf(uid, DEVICE_DAYS)?;
    let issuer = Issuer::from_params(&ca, &ca_key.pair);
    let device_cert = leaf.signed_by(&device.pair, &issuer)?;

    Ok(DevIssued {
        ca_cert_pem: ca_cert.pem(),
        ca_key,
        device_cert_pem: device_cert.pem(),
    })
}

/// The device certificate's parameters: CN = `uid`, SAN DNS `localhost`, IP `127.0.0.1` and
/// `::1`, URI `urn:kawal:device:<uid>`, `days` of validity from now (backdated 5 minutes).
fn dev_leaf(uid: &str, days: i64) -> Result<CertificateParams> {
    let urn = device_urn(uid)?;
    let now = OffsetDateTime::now_utc();
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
    leaf.not_after = now + Duration::days(days);
    leaf.serial_number = Some(random_serial()?);
    Ok(leaf)
}

/// A new device certificate for the same `device` key from the dev CA made at provisioning
/// (`ca_key`, `ca_cert_pem`): a dev device's renewal. `days` of validity (1 to 825); the
/// dev CA, and so what peers trust, stays the same. Returns the certificate, PEM.
///
/// # Errors
/// [`Error::Parse`] for an unreadable CA certificate, [`Error::InvalidUid`] or
/// [`Error::Generate`] otherwise.
pub fn reissue_dev(
    device: &IdentityKey,
    ca_key: &IdentityKey,
    ca_cert_pem: &str,
    uid: &str,
    days: u32,
) -> Result<String> {
    let ca_der = first_cert_der(ca_cert_pem)?;
    let issuer = Issuer::from_ca_cert_der(&ca_der.as_slice().into(), &ca_key.pair)?;
    let leaf = dev_leaf(uid, i64::from(days.clamp(1, 825)))?;
    Ok(leaf.signed_by(&device.pair, &issuer)?.pem())
}

/// The DER of the first `CERTIFICATE` block of `pem`.
fn first_cert_der(pem: &str) -> Result<Vec<u8>> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| Error::Parse(format!("dev CA PEM: {e}")))?;
    if block.label != "CERTIFICATE" {
        return Err(Error::Parse("dev CA PEM is not a CERTIFICATE".to_owned()));
    }
    Ok(block.contents)
}
