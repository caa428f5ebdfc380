//! Debouncing of a tamper line, as a pure state machine.
//!
//! A mechanical switch bounces for a few milliseconds when it moves, and a long cable picks up
//! spikes; neither is tamper. A line counts as tampered once it has stayed at the tamper level
//! for the whole debounce period. Times are durations since any fixed origin (the caller's
//! monotonic clock), so the logic is tested without a clock or a GPIO line.

use std::time::Duration;

/// What the debouncer concludes at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Debounced {
    /// The line is at its normal level.
    Idle,
    /// The line is at the tamper level, not yet for the whole period; look again after
    /// `remaining`.
    Pending {
        /// Time left until it counts.
        remaining: Duration,
    },
    /// The line has stayed at the tamper level for the whole period.
    Tamper,
}

/// Tracks how long a line has been at the tamper level.
#[derive(Debug, Clone)]
pub struct Debouncer {
    period: Duration,
    active_since: Option<Duration>,
}

impl Debouncer {
    /// A debouncer with the given period (zero: the first tamper level counts).
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            active_since: None,
        }
    }

    /// Records the line's level (`active`: at the tamper level) seen at time `at`. A repeated
    /// active level keeps the earlier start; any inactive level restarts the count.
    pub fn level(&mut self, active: bool, at: Duration) {
        if !active {
            self.active_since = None;
        } else if self.active_since.is_none() {
            self.active_since = Some(at);
        }
    }

    /// The conclusion at time `now`.
    pub fn poll(&self, now: Duration) -> Debounced {
        match self.active_since {
            None => Debounced::Idle,
            Some(since) => {
                let held = now.saturating_sub(since);
                if held >= self.period {
                    Debounced::Tamper
                } else {
                    Debounced::Pending {
                        remaining: self.period - held,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// G045: PH-2-1
    #[test]
    fn a_level_held_for_the_period_is_tamper() {
        let mut d = Debouncer::new(ms(5));
        assert_eq!(d.poll(ms(0)), Debounced::Idle);
        d.level(true, ms(10));
        assert_eq!(d.poll(ms(10)), Debounced::Pending { remaining: ms(5) });
        assert_eq!(d.poll(ms(13)), Debounced::Pending { remaining: ms(2) });
        assert_eq!(d.poll(ms(15)), Debounced::Tamper);
        assert_eq!(d.poll(ms(1000)), Debounced::Tamper);
    }

    /// G045: PH-2-1
    #[test]
    fn a_bounce_shorter_than_the_period_is_not_tamper() {
        let mut d = Debouncer::new(ms(5));
        // Bounces: active 1 ms, inactive, active 2 ms, inactive...
        d.level(true, ms(0));
        d.level(false, ms(1));
        d.level(true, ms(2));
        d.level(false, ms(4));
        assert_eq!(d.poll(ms(20)), Debounced::Idle);
        // ...then it settles active at 6 ms: counts from there, not from the first bounce.
        d.level(true, ms(6));
        assert_eq!(d.poll(ms(10)), Debounced::Pending { remaining: ms(1) });
        assert_eq!(d.poll(ms(11)), Debounced::Tamper);
    }

    /// G045: PH-2-1
    #[test]
    fn repeated_active_levels_keep_the_first_start() {
        let mut d = Debouncer::new(ms(5));
        d.level(true, ms(0));
        d.level(true, ms(3));
        d.level(true, ms(4));
        assert_eq!(d.poll(ms(5)), Debounced::Tamper);
    }

    /// G045: PH-2-1
    #[test]
    fn zero_period_counts_at_once_and_clock_skew_is_harmless() {
        let mut d = Debouncer::new(Duration::ZERO);
        d.level(true, ms(7));
        assert_eq!(d.poll(ms(7)), Debounced::Tamper);
        let mut d = Debouncer::new(ms(5));
        d.level(true, ms(7));
        // A `now` before the level was seen (should not happen) waits the full period.
        assert_eq!(d.poll(ms(3)), Debounced::Pending { remaining: ms(5) });
    }
}
