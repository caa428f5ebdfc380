//! Per-account lockout (G045 AU-1-3): a state machine over failures and time, kept by the
//! caller in the store so the tally survives a restart. Times are seconds on the wall clock.
//!
//! After `threshold` consecutive failures within `window` the account is locked for
//! `base_lock`, doubling with each lock in a row up to `max_lock`. Independently, more than
//! `daily_cap` failures in 24 hours lock it until that day is over. A success clears the run.
use serde::{Deserialize, Serialize};

/// The settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LockoutPolicy {
    /// Consecutive failures that lock (default 5).
    pub threshold: u32,
    /// Seconds within which they count as consecutive (default 900).
    pub window: u64,
    /// First lock, seconds (default 900).
    pub base_lock: u64,
    /// Longest lock, seconds (default 86 400).
    pub max_lock: u64,
    /// Failures per 24 hours that lock until the day is over (default 100).
    pub daily_cap: u32,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            threshold: 5,
            window: 900,
            base_lock: 900,
            max_lock: 86_400,
            daily_cap: 100,
        }
    }
}

const DAY: u64 = 86_400;

/// One account's tally.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Tally {
    /// Failures in the current run.
    pub consecutive: u32,
    /// When the current run began.
    pub run_started: u64,
    /// Locked until this time (exclusive), if locked.
    pub locked_until: Option<u64>,
    /// Locks in a row without a success in between (drives the doubling).
    pub locks: u32,
    /// Start of the current 24-hour period.
    pub day_started: u64,
    /// Failures in the current 24-hour period.
    pub day_failures: u32,
}

/// Whether an attempt may be checked at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Go ahead and verify the password.
    Open,
    /// Locked: refuse without verifying (the caller still answers like any failure).
    LockedUntil(u64),
}

impl Tally {
    /// Before verifying a password at `now`.
    pub fn gate(&self, now: u64) -> Gate {
        match self.locked_until {
            Some(until) if now < until => Gate::LockedUntil(until),
            _ => Gate::Open,
        }
    }

    /// After a failed attempt at `now`; returns the lock it caused, if any.
    pub fn failure(&mut self, now: u64, p: &LockoutPolicy) -> Option<u64> {
        if now.saturating_sub(self.day_started) >= DAY {
            self.day_started = now;
            self.day_failures = 0;
        }
        self.day_failures = self.day_failures.saturating_add(1);
        if self.consecutive == 0 || now.saturating_sub(self.run_started) > p.window {
            self.consecutive = 0;
            self.run_started = now;
        }
        self.consecutive = self.consecutive.saturating_add(1);
        let mut lock = None;
        if self.consecutive >= p.threshold {
            let shift = self.locks.min(32);
            let duration = p.base_lock.saturating_mul(1u64 << shift).min(p.max_lock);
            self.locks = self.locks.saturating_add(1);
            self.consecutive = 0;
            lock = Some(now.saturating_add(duration));
        }
        if self.day_failures >= p.daily_cap {
            let end_of_day = self.day_started.saturating_add(DAY);
            lock = Some(lock.map_or(end_of_day, |l| l.max(end_of_day)));
        }
        if let Some(until) = lock {
            self.locked_until = Some(self.locked_until.map_or(until, |u| u.max(until)));
        }
        lock
    }

    /// After a successful login: the run and the doubling start over (the daily count stays).
    pub fn success(&mut self) {
        self.consecutive = 0;
        self.locks = 0;
        self.locked_until = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// G045: AU-1-3
    #[test]
    fn five_failures_lock_for_fifteen_minutes_then_doubling() {
        let p = LockoutPolicy::default();
        let mut t = Tally::default();
        let mut now = 1_000_000;
        for _ in 0..4 {
            assert_eq!(t.failure(now, &p), None);
            now += 10;
        }
        assert_eq!(t.failure(now, &p), Some(now + 900));
        assert_eq!(t.gate(now + 899), Gate::LockedUntil(now + 900));
        assert_eq!(t.gate(now + 900), Gate::Open);
        now += 900;
        for _ in 0..4 {
            t.failure(now, &p);
        }
        assert_eq!(t.failure(now, &p), Some(now + 1800), "second lock doubles");
        t.success();
        assert_eq!(t.gate(now), Gate::Open);
    }

    /// G045: AU-1-3
    #[test]
    fn failures_spread_beyond_the_window_do_not_lock() {
        let p = LockoutPolicy::default();
        let mut t = Tally::default();
        for i in 0..20u64 {
            assert_eq!(t.failure(1_000_000 + i * 1000, &p), None);
        }
    }

    /// G045: AU-1-3
    #[test]
    fn the_daily_cap_locks_until_the_day_is_over() {
        let p = LockoutPolicy {
            threshold: 1000,
            ..LockoutPolicy::default()
        };
        let mut t = Tally::default();
        let start = 5_000_000;
        let mut lock = None;
        for i in 0..100u64 {
            lock = t.failure(start + i, &p);
        }
        assert_eq!(lock, Some(start + DAY));
        assert!(matches!(t.gate(start + DAY - 1), Gate::LockedUntil(_)));
    }

    #[test]
    fn the_tally_survives_a_restart_as_json() {
        let p = LockoutPolicy::default();
        let mut t = Tally::default();
        for _ in 0..5 {
            t.failure(42, &p);
        }
        let json = serde_json::to_string(&t).unwrap();
        let back: Tally = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.gate(43), Gate::LockedUntil(42 + 900));
    }
}
