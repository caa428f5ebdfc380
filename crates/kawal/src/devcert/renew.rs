//! Renewal of the device certificate from the CA that issued it, over EST (RFC 7030
//! `simplereenroll`), before it expires (G045 AU-1-10), without a restart.
//!
//! From `at-lifetime-percent` of the certificate's lifetime on (default 67, two thirds), the
//! daemon's certificate watch sends a CSR for the same device key to the configured EST
//! server, authenticated in TLS by the certificate in force, and pins the server's CA. The
//! answer must certify the device key and be valid now; it is then written as
//! `pki/device.crt.pem` (with the chain the old file carried) and put in force like any
//! renewed file. A failed attempt (server away, refused, wrong answer) is recorded as
//! `certificate.renewal-failed` and retried with back-off (`retry-min-s` doubling up to
//! `retry-max-s`, with jitter), while the certificate in force keeps serving; expiry
//! warnings at 30 and 7 days go on as for any certificate.
//!
//! Clock jumps: whether renewal is due is read from the wall clock (a certificate's lifetime
//! is wall time), but when to retry is kept on the monotonic clock, so a step of the wall
//! clock neither fires a burst of attempts nor postpones the next one.
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kawal_pki::IdentityKey;
use zeroize::Zeroizing;

use super::{LeafFacts, check};
use crate::device::Device;
use crate::{est, serve};

/// `[device.renewal]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The EST server's base URL (`https://host:port`, optionally a path prefix); the
    /// `/.well-known/est/simplereenroll` path is appended.
    pub est_url: String,
    /// The CA certificates (PEM) the EST server's certificate must chain to: pinned.
    pub ca_file: PathBuf,
    /// Renew from this share of the lifetime on (1 to 99 %).
    pub at_percent: u8,
    /// First wait after a failed attempt.
    pub retry_min: Duration,
    /// Longest wait between attempts.
    pub retry_max: Duration,
}

/// The Unix time from which a certificate valid from `not_before` to `not_after` is renewed.
#[must_use]
pub fn renew_from(not_before: i64, not_after: i64, at_percent: u8) -> i64 {
    let lifetime = not_after.saturating_sub(not_before).max(0);
    not_before.saturating_add(lifetime.saturating_mul(i64::from(at_percent)) / 100)
}

/// A random number for [`Schedule::failed`].
#[must_use]
pub fn jitter() -> u64 {
    kawal_crypto::rng::array::<8>().map_or(0, u64::from_be_bytes)
}

/// When to try next: after failures, a monotonic deadline with exponential back-off.
#[derive(Debug, Default, Clone)]
pub struct Schedule {
    failures: u32,
    next_try: Option<Instant>,
}

impl Schedule {
    /// Whether an attempt is due for the certificate `f` at wall time `wall_now` (Unix s)
    /// and monotonic time `mono_now`.
    #[must_use]
    pub fn due(&self, f: &LeafFacts, at_percent: u8, wall_now: i64, mono_now: Instant) -> bool {
        wall_now >= renew_from(f.not_before, f.not_after, at_percent)
            && self.next_try.is_none_or(|t| mono_now >= t)
    }

    /// Records a failed attempt at `mono_now`; returns the wait before the next, drawn from
    /// `[d/2, d]` where `d` = `retry_min` × 2^(failures−1), at most `retry_max` (`jitter` is
    /// any random number).
    pub fn failed(&mut self, s: &Settings, mono_now: Instant, jitter: u64) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let exp = self.failures.saturating_sub(1).min(30);
        let full = s
            .retry_min
            .saturating_mul(1u32 << exp)
            .min(s.retry_max)
            .max(s.retry_min);
        let full_ms = u64::try_from(full.as_millis()).unwrap_or(u64::MAX);
        let half = full_ms / 2;
        let wait = Duration::from_millis(half + jitter % (full_ms - half + 1));
        self.next_try = Some(mono_now + wait);
        wait
    }

    /// Records a successful renewal: back to a clean slate.
    pub fn succeeded(&mut self) {
        *self = Self::default();
    }

    /// Failed attempts since the last success.
    #[must_use]
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// Renews the device certificate over EST; owned by the certificate watch.
#[derive(Debug)]
pub struct Renewer {
    /// The settings.
    pub settings: Settings,
    ca_pem: String,
    /// When to try.
    pub schedule: Schedule,
    /// The last failure's reason, for the health record.
    pub last_error: Option<String>,
}

impl Renewer {
    /// A renewer with the pinned CA read from `settings.ca_file`.
    ///
    /// # Errors
    /// The CA file cannot be read or holds no certificate.
    pub fn new(settings: Settings) -> crate::error::Result<Self> {
        use crate::error::{CliError, Exit};
        let ca_pem = std::fs::read_to_string(&settings.ca_file).map_err(|e| {
            CliError::new(
                Exit::Config,
                format!("device.renewal.ca-file {}: {e}", settings.ca_file.display()),
            )
        })?;
        if super::read_chain(&ca_pem).is_err() {
            return Err(CliError::new(
                Exit::Config,
                format!(
                    "device.renewal.ca-file {}: not a PEM file of certificates",
                    settings.ca_file.display()
                ),
            ));
        }
        Ok(Self {
            settings,
            ca_pem,
            schedule: Schedule::default(),
            last_error: None,
        })
    }

    /// One attempt: a CSR for the device key to `simplereenroll`, authenticated by
    /// `in_force` (the chain presented now, leaf first). Returns the new file's content: the
    /// new leaf, then the certificates after the leaf in `current_file` (the chain the
    /// issuer's certificate needs), checked against the device key and `now`.
    ///
    /// # Errors
    /// Why not, in words fit for the audit log (no key material).
    pub fn attempt(
        &self,
        dev: &Device,
        current_file: &str,
        in_force: &str,
        now: i64,
    ) -> Result<String, String> {
        let key_der = serve::device_key(dev).map_err(|e| e.message)?;
        let key = IdentityKey::from_pkcs8_der(&key_der).map_err(|e| format!("device key: {e}"))?;
        let csr_pem =
            kawal_pki::device_csr_pem(&key, &dev.info.uid).map_err(|e| format!("CSR: {e}"))?;
        let csr_der = est::pem_body(&csr_pem).map_err(|e| e.message)?;
        let identity = Zeroizing::new(format!(
            "{in_force}{}",
            *Zeroizing::new(est::pem("PRIVATE KEY", &key_der))
        ));
        let http = est::client(&self.ca_pem, Some(identity.as_bytes())).map_err(|e| e.message)?;
        let leaf = est::post_est(
            &http,
            self.settings.est_url.trim_end_matches('/'),
            "/.well-known/est/simplereenroll",
            None,
            &csr_der,
        )
        .map_err(|e| e.message)?;
        let mut chain = est::pem("CERTIFICATE", &leaf);
        for extra in x509_parser::pem::Pem::iter_from_buffer(current_file.as_bytes()).skip(1) {
            let extra = extra.map_err(|e| format!("the current certificate file: {e}"))?;
            chain.push_str(&est::pem(&extra.label, &extra.contents));
        }
        check(&chain, &key.public_key_der(), now)
            .map_err(|r| format!("the EST server's certificate was not accepted: {r}"))?;
        Ok(chain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            est_url: "https://ca.example:8443".into(),
            ca_file: "/dev/null".into(),
            at_percent: 67,
            retry_min: Duration::from_secs(60),
            retry_max: Duration::from_secs(6 * 3600),
        }
    }

    fn facts(not_before: i64, not_after: i64) -> LeafFacts {
        LeafFacts {
            subject: "gw".into(),
            issuer: "fleet".into(),
            serial: "01".into(),
            not_before,
            not_after,
            sha256: String::new(),
        }
    }

    /// G045: AU-1-10
    #[test]
    fn renewal_is_due_from_two_thirds_of_the_lifetime() {
        let f = facts(0, 300 * 86_400);
        assert_eq!(renew_from(0, 300 * 86_400, 67), 201 * 86_400);
        let s = Schedule::default();
        let t = Instant::now();
        assert!(!s.due(&f, 67, 200 * 86_400, t));
        assert!(s.due(&f, 67, 201 * 86_400, t));
        // Expired: still due (the server decides whether it renews an expired certificate).
        assert!(s.due(&f, 67, 400 * 86_400, t));
    }

    /// G045: AU-1-10
    /// Back-off doubles from the minimum to the maximum, with jitter in the upper half, and is
    /// kept on the monotonic clock: a wall-clock jump, either way, changes nothing.
    #[test]
    fn failures_back_off_on_the_monotonic_clock_whatever_the_wall_clock_does() {
        let s = settings();
        let f = facts(0, 300 * 86_400);
        let wall = 250 * 86_400;
        let t0 = Instant::now();
        let mut sched = Schedule::default();
        let mut fulls = Vec::new();
        for jitter in [0u64, u64::MAX, 7, 12_345, 99, 3, 1, 2, 5, 8, 13, 21] {
            let wait = sched.failed(&s, t0, jitter);
            let full = s
                .retry_min
                .saturating_mul(1 << (sched.failures() - 1).min(30))
                .min(s.retry_max);
            assert!(wait >= full / 2 && wait <= full, "{wait:?} vs {full:?}");
            fulls.push(full);
            // Not due before the wait, whatever the wall clock says (a day forward, a year back).
            for w in [wall, wall + 86_400, wall - 365 * 86_400 + 201 * 86_400] {
                assert!(!sched.due(&f, 67, w, t0 + wait - Duration::from_millis(1)));
            }
            assert!(sched.due(&f, 67, wall, t0 + wait));
        }
        assert_eq!(fulls[0], Duration::from_secs(60));
        assert_eq!(fulls[1], Duration::from_secs(120));
        assert_eq!(*fulls.last().unwrap(), Duration::from_secs(6 * 3600));
        sched.succeeded();
        assert_eq!(sched.failures(), 0);
        assert!(sched.due(&f, 67, wall, t0));
    }
}
