//! The sensor registry (G045 AU-1-9, AU-1-10, AU-3-1): who may connect to the gateway as a
//! sensor, with which role and which certificate.
//!
//! One JSON record per sensor in the store's `sensors` table, keyed by UID (the store keeps
//! keys only as keyed hashes and seals the values). A second table, `sensor-tokens`, maps the
//! hash of an outstanding enrolment token to its UID, so a token finds its sensor without a
//! scan; the sensor record stays the authority (the hash in it is compared in constant time),
//! and a stale index entry is dropped when met.
//!
//! Life of a sensor: [`Sensors::enroll`] (a one-time token, state `pending`) →
//! [`Sensors::redeem`] (EST `simpleenroll`: the CSR signed, state `active`) →
//! [`Sensors::reenroll`] (EST `simplereenroll` with the current certificate) … →
//! [`Sensors::revoke`] (state `revoked`). One UID has one valid certificate: every issuance
//! supersedes the previous certificate, which goes into the record's history and the CRL for
//! good. Nothing here writes the audit log; every change returns what the caller needs for it.
mod query;
mod record;
mod token;
mod types;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use kawal_store::{Store, Table};

use crate::ca::CA_TABLE;
use crate::csr::{CsrKey, read_csr};
use crate::util::{check_uid, now_unix};
use crate::{DEFAULT_CERT_DAYS, Error, Result, RevokeReason, SensorCa, TokenRefusal};
use query::refusal_for;
use record::{CurrentCert, SensorRecord, TokenRecord};
pub use record::{PastCert, SensorState};
pub use token::{DEFAULT_TOKEN_TTL, EnrolToken, TOKEN_MAX_FAILURES};
pub use types::{Issuance, Revocation, SensorInfo, SensorRefusal};

const SENSORS: Table = Table::data("sensors");
const TOKENS: Table = Table::data("sensor-tokens");
const CRL_NUMBER: &str = "crl-number";
/// `mark_seen` writes a sensor's record at most once per this many seconds.
pub const SEEN_WRITE_INTERVAL: i64 = 60;
/// The role a sensor gets when none is named.
pub const DEFAULT_ROLE: &str = "sensor";

type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The sensor registry on the encrypted store. Cheap to share behind an `Arc`; changes are
/// serialised by an internal lock (the daemon is the one writer: the CLI goes through its API).
pub struct Sensors {
    store: Arc<Store>,
    ca: Arc<SensorCa>,
    cert_days: u32,
    clock: Clock,
    write: Mutex<()>,
    seen: Mutex<HashMap<String, i64>>,
    /// External CA certificates (DER) whose sensor certificates may be imported.
    external: Vec<Vec<u8>>,
}

impl fmt::Debug for Sensors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sensors")
            .field("ca", &self.ca)
            .field("cert_days", &self.cert_days)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere cannot leave the guarded data half-written: the unit lock guards
    // nothing, and the seen map holds plain numbers.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Checks a role name: `[a-z0-9-]{1,32}`.
pub fn check_role(role: &str) -> Result<()> {
    let reason = if role.is_empty() || role.len() > 32 {
        "length outside 1..=32"
    } else if !role
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        "characters outside [a-z0-9-]"
    } else {
        return Ok(());
    };
    Err(Error::InvalidRole { reason })
}

/// A serial as presented (any case, maybe leading zeros) in [`serial_hex`](crate::serial_hex)
/// form.
fn normal_serial(serial: &str) -> String {
    let s = serial.trim().trim_start_matches('0').to_ascii_lowercase();
    if s.is_empty() { "0".to_owned() } else { s }
}

fn ttl_secs(ttl: std::time::Duration) -> i64 {
    i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)
}

fn not_enrolled(uid: &str) -> Error {
    Error::NotEnrolled {
        uid: uid.to_owned(),
    }
}

impl Sensors {
    /// The registry in `store`, issuing with `ca` for [`DEFAULT_CERT_DAYS`] days.
    pub fn new(store: Arc<Store>, ca: Arc<SensorCa>) -> Self {
        Self {
            store,
            ca,
            cert_days: DEFAULT_CERT_DAYS,
            clock: Arc::new(now_unix),
            write: Mutex::new(()),
            seen: Mutex::new(HashMap::new()),
            external: Vec::new(),
        }
    }

    /// External CAs (DER) whose sensor certificates [`import`](Self::import) accepts.
    #[must_use]
    pub fn with_external_cas(mut self, cas: Vec<Vec<u8>>) -> Self {
        self.external = cas;
        self
    }

    /// The external CAs (DER).
    pub fn external_cas(&self) -> &[Vec<u8>] {
        &self.external
    }

    /// Certificates valid `days` days (at least 1).
    #[must_use]
    pub fn with_cert_days(mut self, days: u32) -> Self {
        self.cert_days = days.max(1);
        self
    }

    /// Another clock (Unix seconds), for tests of expiry.
    #[must_use]
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The CA that signs for this registry.
    pub fn ca(&self) -> &Arc<SensorCa> {
        &self.ca
    }

    fn now(&self) -> i64 {
        (self.clock)()
    }

    fn get(&self, uid: &str) -> Result<Option<SensorRecord>> {
        match self.store.get(SENSORS, uid)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|_| Error::Corrupt {
                    what: "sensor record",
                }),
        }
    }

    fn need(&self, uid: &str) -> Result<SensorRecord> {
        self.get(uid)?.ok_or_else(|| not_enrolled(uid))
    }

    fn put(&self, rec: &SensorRecord) -> Result<()> {
        let json = serde_json::to_vec(rec).map_err(|_| Error::Corrupt {
            what: "sensor record",
        })?;
        Ok(self.store.put(SENSORS, &rec.uid, &json)?)
    }

    /// The number of the next CRL; it grows by one with every revocation or supersession.
    pub fn crl_number(&self) -> Result<u64> {
        match self.store.get(CA_TABLE, CRL_NUMBER)? {
            None => Ok(0),
            Some(b) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(Error::Corrupt { what: "CRL number" }),
        }
    }

    /// Raises the CRL number; written before the record that changes the CRL, so a crash in
    /// between skips a number rather than reusing one for other contents.
    fn bump_crl_number(&self) -> Result<u64> {
        let next = self.crl_number()?.saturating_add(1);
        self.store
            .put(CA_TABLE, CRL_NUMBER, next.to_string().as_bytes())?;
        Ok(next)
    }

    /// Enrols `uid` with `role` (default `sensor`): a one-time token valid for `ttl`
    /// ([`DEFAULT_TOKEN_TTL`] is 24 h). A UID already enrolled, in any state, is refused with
    /// [`Error::AlreadyEnrolled`]: names are never reused, and [`renew`](Self::renew) gives an
    /// enrolled sensor a new token.
    pub fn enroll(
        &self,
        uid: &str,
        role: Option<&str>,
        ttl: std::time::Duration,
    ) -> Result<EnrolToken> {
        check_uid(uid)?;
        let role = role.unwrap_or(DEFAULT_ROLE);
        check_role(role)?;
        let _w = lock(&self.write);
        if self.get(uid)?.is_some() {
            return Err(Error::AlreadyEnrolled {
                uid: uid.to_owned(),
            });
        }
        let now = self.now();
        let mut rec = SensorRecord::new(uid, role, now);
        self.new_token(&mut rec, now, ttl)
    }

    /// A fresh one-time token for an enrolled sensor in any state (lost key, revoked sensor
    /// brought back). It replaces any outstanding token; the current certificate stays valid
    /// until the token is redeemed, which supersedes it.
    pub fn renew(&self, uid: &str, ttl: std::time::Duration) -> Result<EnrolToken> {
        check_uid(uid)?;
        let _w = lock(&self.write);
        let mut rec = self.need(uid)?;
        let now = self.now();
        self.new_token(&mut rec, now, ttl)
    }

    fn new_token(
        &self,
        rec: &mut SensorRecord,
        now: i64,
        ttl: std::time::Duration,
    ) -> Result<EnrolToken> {
        let expires_at = now.saturating_add(ttl_secs(ttl));
        let (token, hash) = token::generate(&rec.uid, &rec.role, expires_at)?;
        let old = rec.token.replace(TokenRecord {
            hash: hash.clone(),
            issued_at: now,
            expires_at,
            failures: 0,
        });
        self.put(rec)?;
        self.store.put(TOKENS, &hash, rec.uid.as_bytes())?;
        if let Some(old) = old {
            self.store.delete(TOKENS, &old.hash)?;
        }
        Ok(token)
    }

    /// Drops the sensor's token (already cleared in `rec`, or about to be) from the index.
    fn forget_token(&self, hash: &str) -> Result<()> {
        self.store.delete(TOKENS, hash)?;
        Ok(())
    }

    /// EST `simpleenroll`: redeems a one-time token with a CSR (PEM or DER). The certificate
    /// is for the UID the token was issued for, whatever the CSR asks.
    ///
    /// Token rules: unknown, replaced or used tokens give [`TokenRefusal::Unknown`]; an
    /// expired one is burnt and gives [`TokenRefusal::Expired`]. A token is consumed only by
    /// success; a request with a valid token but a bad CSR (malformed, bad signature, key
    /// type, reused key) counts as a failure, and the [`TOKEN_MAX_FAILURES`]th failure burns
    /// the token ([`TokenRefusal::Burnt`]). The new key must differ from the sensor's current
    /// certificate's key and from every key of a certificate revoked for a reason other than
    /// supersession.
    pub fn redeem(&self, token: &str, csr: &[u8]) -> Result<Issuance> {
        let unknown = Error::Token(TokenRefusal::Unknown);
        let Some(hash) = token::hash_of_presented(token) else {
            return Err(unknown);
        };
        let _w = lock(&self.write);
        let Some(uid) = self.store.get(TOKENS, &hash)? else {
            return Err(unknown);
        };
        let uid = String::from_utf8(uid.to_vec()).map_err(|_| Error::Corrupt {
            what: "token index",
        })?;
        let Some(mut rec) = self.get(&uid)? else {
            self.forget_token(&hash)?;
            return Err(unknown);
        };
        let Some(mut tok) = rec
            .token
            .clone()
            .filter(|t| kawal_crypto::ct_eq(t.hash.as_bytes(), hash.as_bytes()))
        else {
            self.forget_token(&hash)?;
            return Err(unknown);
        };
        let now = self.now();
        if now >= tok.expires_at {
            rec.token = None;
            self.put(&rec)?;
            self.forget_token(&hash)?;
            return Err(Error::Token(TokenRefusal::Expired));
        }
        let key = match read_csr(csr).and_then(|k| check_key(&rec, &k, false).map(|()| k)) {
            Ok(k) => k,
            Err(e) => {
                tok.failures = tok.failures.saturating_add(1);
                if tok.failures >= TOKEN_MAX_FAILURES {
                    rec.token = None;
                    self.put(&rec)?;
                    self.forget_token(&hash)?;
                    return Err(Error::Token(TokenRefusal::Burnt));
                }
                rec.token = Some(tok);
                self.put(&rec)?;
                return Err(e);
            }
        };
        rec.token = None;
        let issuance = self.issue_into(&mut rec, &key, now)?;
        self.forget_token(&hash)?;
        Ok(issuance)
    }

    /// EST `simplereenroll`: a new certificate for a sensor that presents its current,
    /// unrevoked, unexpired certificate (`presented_serial` from the verified TLS client
    /// certificate). The sensor may keep its key (renewal) or bring a new one (re-key), but
    /// not a key of a revoked certificate. The old certificate is superseded at once.
    pub fn reenroll(
        &self,
        presented_uid: &str,
        presented_serial: &str,
        csr: &[u8],
    ) -> Result<Issuance> {
        check_uid(presented_uid)?;
        let serial = normal_serial(presented_serial);
        let _w = lock(&self.write);
        let refused = |refusal| Error::NotCurrent {
            uid: presented_uid.to_owned(),
            refusal,
        };
        let Some(mut rec) = self.get(presented_uid)? else {
            return Err(refused(SensorRefusal::NotEnrolled));
        };
        let now = self.now();
        match &rec.current {
            Some(cur) if rec.state == SensorState::Active && cur.serial == serial => {
                if now >= cur.not_after {
                    return Err(Error::State {
                        uid: rec.uid,
                        reason: "the current certificate has expired; enrol again with a token",
                    });
                }
            }
            _ => return Err(refused(refusal_for(&rec, &serial))),
        }
        let key = read_csr(csr)?;
        check_key(&rec, &key, true)?;
        self.issue_into(&mut rec, &key, now)
    }

    /// [`reenroll`](Self::reenroll) with the TLS client certificate as DER: it must be one
    /// this registry's CA signed ([`Error::Parse`] otherwise); UID and serial come from it.
    pub fn reenroll_with_cert(&self, cert_der: &[u8], csr: &[u8]) -> Result<Issuance> {
        let presented = self.ca.read_issued(cert_der)?;
        self.reenroll(&presented.uid, &presented.serial, csr)
    }

    /// An operator signs a CSR (PEM or DER) for an enrolled sensor in any state: the sensor
    /// becomes active with this certificate, its previous one is superseded and an outstanding
    /// token is burnt. The key rules of [`redeem`](Self::redeem) apply.
    pub fn sign_csr_for(&self, uid: &str, csr: &[u8]) -> Result<Issuance> {
        check_uid(uid)?;
        let _w = lock(&self.write);
        let mut rec = self.need(uid)?;
        let key = read_csr(csr)?;
        check_key(&rec, &key, false)?;
        let old_token = rec.token.take();
        let now = self.now();
        let issuance = self.issue_into(&mut rec, &key, now)?;
        if let Some(t) = old_token {
            self.forget_token(&t.hash)?;
        }
        Ok(issuance)
    }

    /// Imports a sensor certificate issued by one of the external CAs
    /// ([`with_external_cas`](Self::with_external_cas), e.g. the manufacturer's, which put a
    /// certificate in each sensor at the factory): it must be
    /// signed by one of them, name a UID and be valid now. The sensor is created with `role`
    /// (default `sensor`) if new, or its current certificate superseded; it is active at
    /// once, and [`admit`](Self::admit) accepts exactly this certificate's serial. Its key
    /// must not be one revoked for this sensor. Revoking it works as for any sensor (the
    /// registry refuses it; it is not in the gateway's CRL, whose CA is another).
    pub fn import(&self, cert_der: &[u8], role: Option<&str>) -> Result<Issuance> {
        let mut facts = None;
        for ca in &self.external {
            match crate::ca::read_issued_by(ca, cert_der) {
                Ok(f) => {
                    facts = Some(f);
                    break;
                }
                Err(Error::Parse(m)) if m.contains("not issued") => {}
                Err(e) => return Err(e),
            }
        }
        let facts = facts
            .ok_or_else(|| Error::Parse("not issued by a configured external sensor CA".into()))?;
        let now = self.now();
        if now < facts.not_before || now >= facts.not_after {
            return Err(Error::Parse("the certificate is not valid now".into()));
        }
        let key_sha256 = crate::ca::key_fingerprint(cert_der)?;
        let _w = lock(&self.write);
        let mut rec = match self.get(&facts.uid)? {
            Some(r) => r,
            None => {
                let role = role.unwrap_or(DEFAULT_ROLE);
                check_role(role)?;
                SensorRecord::new(&facts.uid, role, now)
            }
        };
        if rec.key_was_revoked(&key_sha256) {
            return Err(Error::Csr {
                reason: "the key belongs to a revoked certificate of this sensor",
            });
        }
        if rec
            .current
            .as_ref()
            .is_some_and(|c| c.serial == facts.serial)
        {
            return Err(Error::State {
                uid: rec.uid,
                reason: "this certificate is already the sensor's current one",
            });
        }
        let crl_number = if rec.current.is_some() {
            self.bump_crl_number()?
        } else {
            self.crl_number()?
        };
        let superseded = rec.retire_current(RevokeReason::Superseded, now);
        if let Some(t) = rec.token.take() {
            self.forget_token(&t.hash)?;
        }
        let cert_pem = crate::ca::pem("CERTIFICATE", cert_der);
        rec.current = Some(CurrentCert {
            serial: facts.serial.clone(),
            issued_at: now,
            not_before: facts.not_before,
            not_after: facts.not_after,
            key_sha256,
            cert_pem: cert_pem.clone(),
            external: true,
        });
        rec.state = SensorState::Active;
        rec.revoked_at = None;
        self.put(&rec)?;
        Ok(Issuance {
            uid: rec.uid.clone(),
            role: rec.role.clone(),
            issued: crate::Issued {
                cert_pem,
                cert_der: cert_der.to_vec(),
                serial: facts.serial,
                not_before: facts.not_before,
                not_after: facts.not_after,
            },
            superseded,
            crl_number,
        })
    }

    /// Signs for `rec`, supersedes its current certificate and stores the record.
    fn issue_into(&self, rec: &mut SensorRecord, key: &CsrKey, now: i64) -> Result<Issuance> {
        let issued = self.ca.issue(key, &rec.uid, self.cert_days, now)?;
        let crl_number = if rec.current.is_some() {
            self.bump_crl_number()?
        } else {
            self.crl_number()?
        };
        let superseded = rec.retire_current(RevokeReason::Superseded, now);
        rec.current = Some(CurrentCert {
            serial: issued.serial.clone(),
            issued_at: now,
            not_before: issued.not_before,
            not_after: issued.not_after,
            key_sha256: key.fingerprint(),
            cert_pem: issued.cert_pem.clone(),
            external: false,
        });
        rec.state = SensorState::Active;
        rec.revoked_at = None;
        self.put(rec)?;
        Ok(Issuance {
            uid: rec.uid.clone(),
            role: rec.role.clone(),
            issued,
            superseded,
            crl_number,
        })
    }

    /// Revokes the sensor: its current certificate goes into the CRL with `reason`, an
    /// outstanding token is burnt, and [`admit`](Self::admit) refuses it from now on. A
    /// sensor already revoked (with no token outstanding) gives [`Error::State`].
    pub fn revoke(&self, uid: &str, reason: RevokeReason) -> Result<Revocation> {
        check_uid(uid)?;
        let _w = lock(&self.write);
        let mut rec = self.need(uid)?;
        if rec.state == SensorState::Revoked && rec.token.is_none() {
            return Err(Error::State {
                uid: rec.uid,
                reason: "already revoked",
            });
        }
        let now = self.now();
        let crl_number = if rec.current.is_some() {
            self.bump_crl_number()?
        } else {
            self.crl_number()?
        };
        let serials: Vec<String> = rec.retire_current(reason, now).into_iter().collect();
        let old_token = rec.token.take();
        rec.state = SensorState::Revoked;
        rec.revoked_at = Some(now);
        self.put(&rec)?;
        if let Some(t) = &old_token {
            self.forget_token(&t.hash)?;
        }
        Ok(Revocation {
            uid: rec.uid,
            serials,
            reason,
            token_burnt: old_token.is_some(),
            crl_number,
        })
    }
}

/// The key rules: never a key of a revoked certificate; a new enrolment (not a renewal) also
/// needs a key other than the current certificate's.
fn check_key(rec: &SensorRecord, key: &CsrKey, renewal: bool) -> Result<()> {
    let fp = key.fingerprint();
    if rec.key_was_revoked(&fp) {
        return Err(Error::Csr {
            reason: "the key belongs to a revoked certificate of this sensor",
        });
    }
    if !renewal && rec.current.as_ref().is_some_and(|c| c.key_sha256 == fp) {
        return Err(Error::Csr {
            reason: "a new enrolment needs a new key (this is the current certificate's key)",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_rules() {
        for good in ["sensor", "reader", "a", "x-1", &"r".repeat(32)] {
            assert!(check_role(good).is_ok(), "{good}");
        }
        for bad in ["", "Sensor", "a_b", "a b", &"r".repeat(33)] {
            assert!(check_role(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn presented_serials_are_normalised() {
        assert_eq!(normal_serial("00AbC"), "abc");
        assert_eq!(normal_serial("0"), "0");
        assert_eq!(normal_serial("aff"), "aff");
    }
}
