//! The kernel clock (G045 PL-4-3): wall time, whether the kernel considers it synchronised,
//! and a monotonic reading that counts through suspend.
//!
//! This is the only module of kawal with `unsafe` code (ADR 0002): `kernel_query` calls
//! `adjtimex(2)` and `clock_gettime(2)` through `libc`. Both take a pointer to a plain struct
//! owned by the caller and are thread-safe; nothing else here is `unsafe`.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kawal_audit::{Clock, ClockState, Timestamp, WallTime};

/// How long a read of the kernel sync state is reused.
const SYNC_CACHE: Duration = Duration::from_secs(10);

/// What to ask the kernel.
#[derive(Clone, Copy)]
enum Query {
    /// `adjtimex` with `modes = 0` (read only).
    Adjtime,
    /// `clock_gettime(CLOCK_BOOTTIME)`.
    BootTime,
}

/// The kernel's answer.
enum Reply {
    /// Return value of `adjtimex` and the `status` field.
    Adjtime { state: i32, status: i32 },
    /// Nanoseconds since boot, including time suspended.
    BootTime(u64),
}

/// The one function of kawal allowed to use `unsafe` (ADR 0002). `None` if the call failed
/// or the platform lacks it.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn kernel_query(query: Query) -> Option<Reply> {
    match query {
        Query::Adjtime => {
            // SAFETY: `timex` is a C struct of integers (and padding) for which all-zero
            // bytes are a valid value; `modes = 0` then asks for a read only.
            let mut tx: libc::timex = unsafe { std::mem::zeroed() };
            // SAFETY: `tx` is a valid, exclusively borrowed `timex` for the whole call; with
            // `modes == 0` adjtimex only writes into it and changes no clock (no privilege).
            let state = unsafe { libc::adjtimex(&raw mut tx) };
            (state >= 0).then_some(Reply::Adjtime {
                state,
                status: tx.status,
            })
        }
        Query::BootTime => {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `ts` is a valid, exclusively borrowed `timespec` for the whole call and
            // CLOCK_BOOTTIME is a clock id every supported Linux kernel (>= 2.6.39) knows.
            let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &raw mut ts) };
            if rc != 0 {
                return None;
            }
            let secs = u64::try_from(ts.tv_sec).ok()?;
            let nanos = u64::try_from(ts.tv_nsec).ok()?;
            secs.checked_mul(1_000_000_000)?
                .checked_add(nanos)
                .map(Reply::BootTime)
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn kernel_query(_query: Query) -> Option<Reply> {
    None
}

/// Kernel clock discipline state from `adjtimex(2)` in read-only mode: `Synchronised` when
/// the return is not `TIME_ERROR` (5) and `STA_UNSYNC` (0x0040) is clear, `Unsynchronised`
/// otherwise, `Unknown` if the call fails.
pub fn kernel_sync_state() -> ClockState {
    match kernel_query(Query::Adjtime) {
        Some(Reply::Adjtime { state, status }) => sync_state_from(state, status),
        _ => ClockState::Unknown,
    }
}

/// `TIME_ERROR`: the clock is not synchronised (same value on every Linux ABI).
const TIME_ERROR: i32 = 5;
/// `STA_UNSYNC` in `timex.status`.
const STA_UNSYNC: i32 = 0x0040;

fn sync_state_from(state: i32, status: i32) -> ClockState {
    if state != TIME_ERROR && status & STA_UNSYNC == 0 {
        ClockState::Synchronised
    } else {
        ClockState::Unsynchronised
    }
}

/// The audit clock: wall time from the system clock, the sync state from the kernel (re-read
/// at most every 10 s) and the monotonic reading from `CLOCK_BOOTTIME` (falling back to the
/// time since this clock was created where that fails).
#[derive(Debug)]
pub struct KernelClock {
    start: Instant,
    sync: Mutex<Option<(Instant, ClockState)>>,
}

impl KernelClock {
    /// A clock on the kernel's clocks.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            sync: Mutex::new(None),
        }
    }

    fn sync_state(&self) -> ClockState {
        let mut cached = self.sync.lock().unwrap_or_else(PoisonError::into_inner);
        match *cached {
            Some((at, state)) if at.elapsed() < SYNC_CACHE => state,
            _ => {
                let state = kernel_sync_state();
                *cached = Some((Instant::now(), state));
                state
            }
        }
    }

    fn mono_ns(&self) -> u64 {
        match kernel_query(Query::BootTime) {
            Some(Reply::BootTime(ns)) => ns,
            _ => u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX),
        }
    }
}

impl Default for KernelClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for KernelClock {
    fn now(&self) -> Timestamp {
        Timestamp {
            wall: WallTime::now(),
            clock: self.sync_state(),
            mono_ns: self.mono_ns(),
        }
    }
}

/// 2024-01-01T00:00:00Z, in seconds since the Unix epoch.
const SANE_FROM: u64 = 1_704_067_200;
/// 2101-01-01T00:00:00Z, in seconds since the Unix epoch.
const SANE_UNTIL: u64 = 4_133_980_800;

/// Sanity of the wall clock for the self-test: `Ok` if the year of `now` is within
/// 2024..=2100, `Err(reason)` otherwise (e.g. a board without RTC that booted in 1970).
pub fn wall_clock_sane(now: SystemTime) -> Result<(), String> {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "wall clock is before 1970".to_owned())?
        .as_secs();
    if (SANE_FROM..SANE_UNTIL).contains(&secs) {
        Ok(())
    } else {
        let micros = i64::try_from(secs.saturating_mul(1_000_000)).unwrap_or(i64::MAX);
        let shown = WallTime::from_unix_micros(micros)
            .map_or_else(|| format!("{secs} s after 1970"), |w| w.to_string());
        Err(format!(
            "wall clock reads {shown}, outside 2024..=2100: not set or set wrongly"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// G045: PL-4-3
    #[test]
    fn kernel_sync_state_returns_on_this_machine() {
        let state = kernel_sync_state();
        #[cfg(target_os = "linux")]
        assert_ne!(state, ClockState::Unknown, "adjtimex read-only call failed");
        let _ = state;
    }

    /// G045: PL-4-3
    #[test]
    fn sync_state_follows_time_error_and_sta_unsync() {
        assert_eq!(sync_state_from(0, 0), ClockState::Synchronised);
        assert_eq!(sync_state_from(TIME_ERROR, 0), ClockState::Unsynchronised);
        assert_eq!(sync_state_from(0, STA_UNSYNC), ClockState::Unsynchronised);
        assert_eq!(sync_state_from(1, 0x2001), ClockState::Synchronised);
    }

    /// G045: PL-4-3
    #[test]
    fn kernel_clock_timestamps_increase() {
        let c = KernelClock::new();
        let a = c.now();
        std::thread::sleep(Duration::from_millis(2));
        let b = c.now();
        assert!(b.mono_ns > a.mono_ns, "{} !> {}", b.mono_ns, a.mono_ns);
        assert!(b.wall >= a.wall);
        assert_eq!(a.clock, b.clock, "sync state is cached");
        #[cfg(target_os = "linux")]
        {
            // CLOCK_BOOTTIME counts from boot, so it exceeds the age of this process's clock.
            assert!(a.mono_ns > u64::try_from(c.start.elapsed().as_nanos()).unwrap());
        }
    }

    /// G045: PL-4-3
    #[test]
    fn wall_clock_sanity_bounds() {
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        assert!(wall_clock_sane(SystemTime::now()).is_ok());
        assert!(wall_clock_sane(at(SANE_FROM)).is_ok());
        assert!(wall_clock_sane(at(SANE_UNTIL - 1)).is_ok());
        let err = wall_clock_sane(at(0)).unwrap_err();
        assert!(err.contains("1970-01-01"), "{err}");
        assert!(wall_clock_sane(at(SANE_FROM - 1)).is_err());
        assert!(wall_clock_sane(at(SANE_UNTIL)).is_err());
        assert!(wall_clock_sane(UNIX_EPOCH - Duration::from_secs(1)).is_err());
    }
}
