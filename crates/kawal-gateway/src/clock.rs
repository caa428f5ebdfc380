//! The clock floor: the earliest time the wall clock can truly show, and the sensor
//! certificate checks that use it when the clock reads earlier (G045 AU-1-9: validity with
//! the clock-sync state taken into account).
//!
//! A gateway without a battery-backed clock may boot at 1970 or at its build date and keep
//! that until NTP answers. Checked at such a time, every sensor certificate is "not valid
//! yet" and the whole site is locked out. But the device knows better than its clock: its
//! audit log and its certificates carry times it has already lived through. The floor is the
//! latest of those; while the clock reads earlier, certificates are checked at the floor
//! instead. A clock that reads *later* than the truth cannot be caught this way and is not
//! corrected: an expired certificate stays refused.
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// The earliest time (Unix seconds) the device's wall clock can truly show; it only rises.
#[derive(Debug, Default)]
pub struct ClockFloor {
    unix_s: AtomicI64,
    applied: AtomicU64,
}

impl ClockFloor {
    /// A floor at `unix_s`.
    #[must_use]
    pub fn new(unix_s: i64) -> Self {
        Self {
            unix_s: AtomicI64::new(unix_s),
            applied: AtomicU64::new(0),
        }
    }

    /// Raises the floor to `unix_s` if that is later.
    pub fn raise(&self, unix_s: i64) {
        self.unix_s.fetch_max(unix_s, Ordering::Relaxed);
    }

    /// The floor, Unix seconds.
    pub fn get(&self) -> i64 {
        self.unix_s.load(Ordering::Relaxed)
    }

    /// Certificate checks made at the floor because the clock read earlier, since start.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    /// `now`, or the floor when the clock reads earlier (counted in [`ClockFloor::applied`]).
    pub fn at_least(&self, now: UnixTime) -> UnixTime {
        let floor = u64::try_from(self.get()).unwrap_or(0);
        if now.as_secs() >= floor {
            return now;
        }
        self.applied.fetch_add(1, Ordering::Relaxed);
        UnixTime::since_unix_epoch(Duration::from_secs(floor))
    }
}

/// A client-certificate verifier that checks validity at `floor` when the clock reads
/// earlier; everything else is the inner verifier's.
#[derive(Debug)]
pub(crate) struct FloorVerifier {
    pub(crate) inner: Arc<dyn ClientCertVerifier>,
    pub(crate) floor: Arc<ClockFloor>,
}

impl ClientCertVerifier for FloorVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, self.floor.at_least(now))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
