//! Timestamps for audit entries (G045 PL-4-3): UTC wall time with microseconds, the clock's
//! synchronisation state, and a monotonic reading that does not jump when the wall clock is
//! set.
//!
//! The wall time is formatted as RFC 3339 in one fixed form, `YYYY-MM-DDTHH:MM:SS.ffffffZ`,
//! so that every instant has exactly one encoding in the log (see [`crate::canonical`]).

use std::fmt;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Whether the wall clock was synchronised to a trusted time source when an entry was stamped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClockState {
    /// The kernel reports the clock as synchronised (e.g. by NTP or NTS).
    Synchronised,
    /// The kernel reports the clock as not synchronised: the wall time may be wrong.
    Unsynchronised,
    /// The state could not be determined (e.g. [`SystemClock`] in tests).
    Unknown,
}

impl ClockState {
    /// The name used in the log: `"synchronised"`, `"unsynchronised"` or `"unknown"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Synchronised => "synchronised",
            Self::Unsynchronised => "unsynchronised",
            Self::Unknown => "unknown",
        }
    }

    /// The state named `s` in the log, if it is one.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "synchronised" => Some(Self::Synchronised),
            "unsynchronised" => Some(Self::Unsynchronised),
            "unknown" => Some(Self::Unknown),
            _ => None,
        }
    }
}

impl fmt::Display for ClockState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A UTC instant with microsecond precision, between years 0000 and 9999 inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WallTime {
    micros: i64,
}

/// 0000-01-01T00:00:00Z in microseconds since the Unix epoch.
const MIN_MICROS: i64 = -62_167_219_200_000_000;
/// 9999-12-31T23:59:59.999999Z in microseconds since the Unix epoch.
const MAX_MICROS: i64 = 253_402_300_799_999_999;
const MICROS_PER_DAY: i64 = 86_400_000_000;

impl WallTime {
    /// The instant `micros` microseconds after 1970-01-01T00:00:00Z, if within years 0–9999.
    pub fn from_unix_micros(micros: i64) -> Option<Self> {
        (MIN_MICROS..=MAX_MICROS)
            .contains(&micros)
            .then_some(Self { micros })
    }

    /// Microseconds since 1970-01-01T00:00:00Z (negative before it).
    pub fn unix_micros(self) -> i64 {
        self.micros
    }

    /// The wall clock now, clamped to 1970-01-01 if the clock is set before it.
    pub fn now() -> Self {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(MAX_MICROS));
        Self {
            micros: micros.min(MAX_MICROS),
        }
    }

    /// Parses the fixed form `YYYY-MM-DDTHH:MM:SS.ffffffZ`; any other form is refused, so a
    /// parsed time formats back to the same bytes.
    pub fn parse(s: &[u8]) -> Option<Self> {
        if s.len() != 27 {
            return None;
        }
        let seps = [
            (4, b'-'),
            (7, b'-'),
            (10, b'T'),
            (13, b':'),
            (16, b':'),
            (19, b'.'),
        ];
        if seps.iter().any(|&(i, c)| s[i] != c) || s[26] != b'Z' {
            return None;
        }
        let num = |from: usize, to: usize| -> Option<i64> {
            s[from..to].iter().try_fold(0i64, |acc, &b| {
                b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
            })
        };
        let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
        let (hour, min, sec, frac) = (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 26)?);
        let valid_date = (1..=12).contains(&month) && day >= 1 && day <= days_in(year, month);
        if !valid_date || hour > 23 || min > 59 || sec > 59 {
            return None;
        }
        let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec;
        Self::from_unix_micros(secs * 1_000_000 + frac)
    }

    /// Appends the fixed RFC 3339 form to `out`.
    pub fn write_rfc3339(self, out: &mut Vec<u8>) {
        let days = self.micros.div_euclid(MICROS_PER_DAY);
        let in_day = self.micros.rem_euclid(MICROS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        let secs = in_day / 1_000_000;
        let fields = [
            (year, 4),
            (month, 2),
            (day, 2),
            (secs / 3600, 2),
            (secs / 60 % 60, 2),
            (secs % 60, 2),
            (in_day % 1_000_000, 6),
        ];
        for (i, &(value, width)) in fields.iter().enumerate() {
            push_padded(out, value, width);
            out.push(b"--T::.Z"[i]);
        }
    }
}

impl fmt::Display for WallTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = Vec::with_capacity(27);
        self.write_rfc3339(&mut buf);
        f.write_str(&String::from_utf8_lossy(&buf))
    }
}

/// Writes `value` (0 ≤ value < 10^width) as exactly `width` decimal digits.
fn push_padded(out: &mut Vec<u8>, value: i64, width: u32) {
    let mut div = 10i64.pow(width.saturating_sub(1));
    while div > 0 {
        let digit = (value / div).rem_euclid(10);
        out.push(b"0123456789"[usize::try_from(digit).unwrap_or(0)]);
        div /= 10;
    }
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (inverse of [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// One reading of the clock: what an entry records about when it was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    /// UTC wall time.
    pub wall: WallTime,
    /// Whether the wall clock was synchronised at that moment.
    pub clock: ClockState,
    /// Nanoseconds on a monotonic clock counting from boot (CLOCK_BOOTTIME-like).
    pub mono_ns: u64,
}

/// A source of [`Timestamp`]s. The platform crate implements it on the kernel's clocks
/// (`CLOCK_REALTIME`, `CLOCK_BOOTTIME`, `adjtimex` for the sync state).
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// A portable clock for tests and tools: the system wall clock with sync state
/// [`ClockState::Unknown`].
///
/// Its monotonic reading is the system uptime read from `/proc/uptime` when the clock is
/// created (10 ms resolution; 0 where that file is unreadable) plus the time elapsed since
/// then on [`Instant`] (`CLOCK_MONOTONIC`). Readings are monotonic within one process; two
/// processes may disagree by up to the 10 ms resolution of the base.
#[derive(Debug, Clone)]
pub struct SystemClock {
    base_ns: u64,
    start: Instant,
}

impl SystemClock {
    /// A clock anchored to the current uptime.
    pub fn new() -> Self {
        let base_ns = std::fs::read_to_string("/proc/uptime")
            .ok()
            .and_then(|s| parse_uptime_ns(&s))
            .unwrap_or(0);
        Self {
            base_ns,
            start: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let elapsed = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        Timestamp {
            wall: WallTime::now(),
            clock: ClockState::Unknown,
            mono_ns: self.base_ns.saturating_add(elapsed),
        }
    }
}

/// Parses the first field of `/proc/uptime` ("12345.67 ...") into nanoseconds.
fn parse_uptime_ns(s: &str) -> Option<u64> {
    let first = s.split_whitespace().next()?;
    let (secs, frac) = first.split_once('.').unwrap_or((first, ""));
    let secs: u64 = secs.parse().ok()?;
    let mut frac_ns = 0u64;
    let mut scale = 100_000_000u64;
    for b in frac.bytes().take(9) {
        frac_ns += u64::from(b.checked_sub(b'0').filter(|d| *d < 10)?) * scale;
        scale /= 10;
    }
    secs.checked_mul(1_000_000_000)?.checked_add(frac_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(t: WallTime) -> String {
        t.to_string()
    }

    #[test]
    fn formats_known_instants() {
        let t = |m| WallTime::from_unix_micros(m).unwrap();
        assert_eq!(fmt(t(0)), "1970-01-01T00:00:00.000000Z");
        assert_eq!(fmt(t(951_782_400_000_001)), "2000-02-29T00:00:00.000001Z");
        assert_eq!(fmt(t(MIN_MICROS)), "0000-01-01T00:00:00.000000Z");
        assert_eq!(fmt(t(MAX_MICROS)), "9999-12-31T23:59:59.999999Z");
        assert_eq!(fmt(t(-1)), "1969-12-31T23:59:59.999999Z");
        assert!(WallTime::from_unix_micros(MAX_MICROS + 1).is_none());
    }

    #[test]
    fn parse_round_trips_and_rejects_other_forms() {
        for m in [
            0,
            1,
            -1,
            951_782_400_000_001,
            1_750_000_000_123_456,
            MIN_MICROS,
            MAX_MICROS,
        ] {
            let t = WallTime::from_unix_micros(m).unwrap();
            assert_eq!(WallTime::parse(fmt(t).as_bytes()), Some(t));
        }
        for bad in [
            "2025-02-29T00:00:00.000000Z",
            "2025-13-01T00:00:00.000000Z",
            "2025-01-01T24:00:00.000000Z",
            "2025-01-01T00:00:60.000000Z",
            "2025-01-01 00:00:00.000000Z",
            "2025-01-01T00:00:00.000000+00:00",
            "2025-01-01T00:00:00.00000Z",
            "2025-01-01T00:00:00.+00000Z",
        ] {
            assert_eq!(WallTime::parse(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn system_clock_is_monotonic_and_unknown() {
        let c = SystemClock::new();
        let a = c.now();
        let b = c.now();
        assert!(b.mono_ns >= a.mono_ns);
        assert_eq!(a.clock, ClockState::Unknown);
        assert_eq!(parse_uptime_ns("12.34 5.6\n"), Some(12_340_000_000));
    }
}
