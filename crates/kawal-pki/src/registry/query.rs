//! The read side of the registry: lists, the admission check the broker asks on every
//! connection, renewal due dates, the CRL; and `mark_seen`, the one cheap write.
use super::record::{SensorRecord, SensorState};
use super::{
    SEEN_WRITE_INTERVAL, SENSORS, SensorInfo, SensorRefusal, Sensors, lock, normal_serial,
};
use crate::util::check_uid;
use crate::{Crl, Error, Result, RevokeReason, RevokedEntry, expiry_state};

impl Sensors {
    fn info(rec: SensorRecord, now: i64) -> SensorInfo {
        let cur = rec.current;
        SensorInfo {
            uid: rec.uid,
            role: rec.role,
            state: rec.state,
            created_at: rec.created_at,
            last_seen: rec.last_seen,
            revoked_at: rec.revoked_at,
            serial: cur.as_ref().map(|c| c.serial.clone()),
            issued_at: cur.as_ref().map(|c| c.issued_at),
            not_before: cur.as_ref().map(|c| c.not_before),
            not_after: cur.as_ref().map(|c| c.not_after),
            expiry: cur.as_ref().map(|c| expiry_state(c.not_after, now)),
            cert_pem: cur.map(|c| c.cert_pem),
            token_outstanding: rec.token.is_some(),
            token_expires_at: rec.token.map(|t| t.expires_at),
            previous: rec.history,
        }
    }

    fn all(&self) -> Result<Vec<SensorRecord>> {
        let mut out = Vec::new();
        for (_, bytes) in self.store.list(SENSORS)? {
            out.push(serde_json::from_slice::<SensorRecord>(&bytes).map_err(|_| {
                Error::Corrupt {
                    what: "sensor record",
                }
            })?);
        }
        out.sort_by(|a, b| a.uid.cmp(&b.uid));
        Ok(out)
    }

    /// Every sensor, by UID.
    pub fn list(&self) -> Result<Vec<SensorInfo>> {
        let now = self.now();
        Ok(self
            .all()?
            .into_iter()
            .map(|r| Self::info(r, now))
            .collect())
    }

    /// One sensor.
    pub fn show(&self, uid: &str) -> Result<SensorInfo> {
        check_uid(uid)?;
        let rec = self.need(uid)?;
        Ok(Self::info(rec, self.now()))
    }

    /// Records that the sensor connected at `when` (Unix seconds). Writes at most once per
    /// [`SEEN_WRITE_INTERVAL`] per sensor; `Ok(false)` when this call was throttled.
    pub fn mark_seen(&self, uid: &str, when: i64) -> Result<bool> {
        if let Some(last) = lock(&self.seen).get(uid)
            && (*last..last.saturating_add(SEEN_WRITE_INTERVAL)).contains(&when)
        {
            return Ok(false);
        }
        check_uid(uid)?;
        let _w = lock(&self.write);
        let mut rec = self.need(uid)?;
        rec.last_seen = Some(rec.last_seen.map_or(when, |l| l.max(when)));
        self.put(&rec)?;
        lock(&self.seen).insert(uid.to_owned(), when);
        Ok(true)
    }

    /// Whether the certificate `serial_hex` is the current, unrevoked certificate of sensor
    /// `uid`; `Ok(role)` if it is. Fails closed: a store that cannot be read gives
    /// [`SensorRefusal::Inactive`].
    pub fn admit(&self, uid: &str, serial_hex: &str) -> std::result::Result<String, SensorRefusal> {
        if check_uid(uid).is_err() {
            return Err(SensorRefusal::NotEnrolled);
        }
        let rec = match self.get(uid) {
            Ok(Some(r)) => r,
            Ok(None) => return Err(SensorRefusal::NotEnrolled),
            Err(_) => return Err(SensorRefusal::Inactive),
        };
        let serial = normal_serial(serial_hex);
        match &rec.current {
            Some(cur) if rec.state == SensorState::Active && cur.serial == serial => Ok(rec.role),
            _ => Err(refusal_for(&rec, &serial)),
        }
    }

    /// Active sensors past two thirds of their current certificate's lifetime at `now`.
    pub fn renew_due(&self, now: i64) -> Result<Vec<String>> {
        Ok(self
            .all()?
            .into_iter()
            .filter(|r| r.state == SensorState::Active)
            .filter(|r| {
                r.current.as_ref().is_some_and(|c| {
                    let life = c.not_after.saturating_sub(c.not_before);
                    now >= c.not_before.saturating_add(life / 3 * 2)
                })
            })
            .map(|r| r.uid)
            .collect())
    }

    /// Every revoked or superseded certificate of every sensor, oldest revocation first.
    pub fn revoked_entries(&self) -> Result<Vec<RevokedEntry>> {
        let mut out: Vec<RevokedEntry> = self
            .all()?
            .into_iter()
            .flat_map(|r| r.history)
            .filter(|p| !p.external)
            .map(|p| RevokedEntry {
                serial: p.serial,
                revoked_at: p.revoked_at,
                reason: p.reason,
            })
            .collect();
        out.sort_by(|a, b| (a.revoked_at, &a.serial).cmp(&(b.revoked_at, &b.serial)));
        Ok(out)
    }

    /// The current CRL: every entry of [`revoked_entries`](Self::revoked_entries), numbered
    /// [`crl_number`](Self::crl_number), next update in `next_update_days` days.
    pub fn crl(&self, next_update_days: u32) -> Result<Crl> {
        let entries = self.revoked_entries()?;
        self.ca.crl(&entries, self.crl_number()?, next_update_days)
    }
}

/// Why `serial` is not `rec`'s current certificate.
pub(super) fn refusal_for(rec: &SensorRecord, serial: &str) -> SensorRefusal {
    if let Some(past) = rec.history.iter().find(|p| p.serial == serial) {
        return if past.reason == RevokeReason::Superseded {
            SensorRefusal::Superseded
        } else {
            SensorRefusal::Revoked
        };
    }
    match rec.state {
        SensorState::Revoked => SensorRefusal::Revoked,
        SensorState::Pending => SensorRefusal::Inactive,
        // A certificate of ours that the record does not know, while another is current
        // (a store restored from an older backup): not the current one.
        SensorState::Active => SensorRefusal::Superseded,
    }
}
