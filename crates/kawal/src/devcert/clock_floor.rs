//! The clock floor (see [`kawal_gateway::clock`]): the latest time this device is known to
//! have lived through, so a clock that boots at 1970 or at its build date does not lock every
//! sensor out as "not valid yet". Read at start, raised by the certificate watch while the
//! kernel says the clock is synchronised, and kept in the store's health table.
use std::time::SystemTime;

use crate::device::{Device, tables};

/// The health-table record of the floor (Unix seconds).
const RECORD: &str = "clock-floor";
/// The floor is written back at most this often (seconds): it is a lower bound, an hour old
/// is still one.
const KEEP_EVERY: i64 = 3600;

/// The floor at start: the latest of the floor kept in the store, the last write to the audit
/// log (its files' modification times), and the start of validity of the device certificate
/// `chain_pem` and of the sensor CA `sensor_ca_pem` (issued when the clock was right, or a
/// CA would not have issued them).
pub fn initial(dev: &Device, chain_pem: &str, sensor_ca_pem: &str) -> i64 {
    let kept: i64 = dev
        .get_json(tables::HEALTH, RECORD)
        .ok()
        .flatten()
        .unwrap_or(0);
    let audit = std::fs::read_dir(dev.layout.dir.join(kawal_audit::SUBDIR))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok()?.modified().ok())
                .filter_map(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    let not_before = |pem: &str| super::read_chain(pem).map_or(0, |(f, _)| f.not_before);
    let floor = kept
        .max(audit)
        .max(not_before(chain_pem))
        .max(not_before(sensor_ca_pem));
    floor.max(test_ahead())
}

/// Debug builds only: `KAWAL_CLOCK_FLOOR_AHEAD_S` (1 to 20 years in seconds) puts the floor
/// that far ahead of the clock, as if the clock had been set back, so tests can see a clock
/// behind its floor. Release builds ignore it.
fn test_ahead() -> i64 {
    if cfg!(debug_assertions)
        && let Some(s) = std::env::var("KAWAL_CLOCK_FLOOR_AHEAD_S")
            .ok()
            .and_then(|v| v.parse::<i64>().ok())
            .filter(|s| (1..=20 * 366 * 86_400).contains(s))
    {
        return super::now_s() + s;
    }
    0
}

/// Keeps `now` as the floor in the store, if the kept one is an hour old or more.
pub fn keep(dev: &Device, now: i64) {
    let kept: i64 = dev
        .get_json(tables::HEALTH, RECORD)
        .ok()
        .flatten()
        .unwrap_or(0);
    if now < kept.saturating_add(KEEP_EVERY) {
        return;
    }
    if let Err(e) = dev
        .store
        .put(tables::HEALTH, RECORD, now.to_string().as_bytes())
    {
        tracing::warn!(error = %e, "could not keep the clock floor");
    }
}
