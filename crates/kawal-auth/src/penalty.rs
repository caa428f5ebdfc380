//! Per-source-address penalties for failed logins (G045 AU-1-3), in the manner of OpenSSH's
//! `PerSourcePenalties`: in memory, no I/O, times in seconds.
//!
//! The per-account lockout stops guessing one account's password; this stops one source from
//! guessing many accounts' passwords. After `free_failures` failures a source must wait
//! `per_failure` seconds for each failure past them, up to `max_penalty`. A source that stays
//! quiet for `max_penalty` seconds after its penalty ends is forgotten, so a waiting attacker
//! keeps the count but a user who mistyped a few times once does not. A success forgets the
//! source: the per-account lockout still counts every guess against other accounts.
//!
//! IPv6 sources are grouped by /64 (one host usually holds the whole prefix); IPv4-mapped IPv6
//! addresses count as their IPv4 address. The table is bounded: when full, the entries whose
//! penalty ends soonest are dropped first, so the heaviest offenders stay penalised.
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PenaltyPolicy {
    /// Seconds added per failure past the free ones (default 2).
    pub per_failure: u64,
    /// Failures before penalties start (default 3).
    pub free_failures: u32,
    /// Longest penalty, seconds (default 600).
    pub max_penalty: u64,
    /// Networks never penalised (the management network); empty by default.
    pub exempt: Vec<IpNet>,
    /// Most sources tracked at once (default 10 000).
    pub max_tracked: usize,
}

impl Default for PenaltyPolicy {
    fn default() -> Self {
        Self {
            per_failure: 2,
            free_failures: 3,
            max_penalty: 600,
            exempt: Vec::new(),
            max_tracked: 10_000,
        }
    }
}

/// One source's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    failures: u32,
    /// Penalised until this time (exclusive); at or before the last failure when not penalised.
    until: u64,
}

/// The sources being tracked.
#[derive(Debug, Clone)]
pub struct SourcePenalties {
    policy: PenaltyPolicy,
    sources: HashMap<IpAddr, Entry>,
}

/// The address a source is tracked under: IPv4 as is (also when IPv4-mapped), IPv6 by /64.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

impl SourcePenalties {
    /// An empty table.
    pub fn new(p: PenaltyPolicy) -> Self {
        Self {
            policy: p,
            sources: HashMap::new(),
        }
    }

    /// Its settings.
    pub fn policy(&self) -> &PenaltyPolicy {
        &self.policy
    }

    /// Sources tracked now.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// Whether no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Whether `ip` is on an exempt network.
    pub fn is_exempt(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.policy.exempt.iter().any(|n| n.contains(&ip))
    }

    fn forgotten(&self, e: &Entry, now: u64) -> bool {
        now >= e.until.saturating_add(self.policy.max_penalty)
    }

    /// Before checking a password from `ip` at `now`: `Some(seconds to wait)` if penalised.
    pub fn check(&mut self, ip: IpAddr, now: u64) -> Option<u64> {
        if self.is_exempt(ip) {
            return None;
        }
        let key = source_key(ip);
        let e = *self.sources.get(&key)?;
        if self.forgotten(&e, now) {
            self.sources.remove(&key);
            return None;
        }
        (now < e.until).then(|| e.until - now)
    }

    /// After a failed attempt from `ip` at `now`: `Some(seconds to wait)` if the source is now
    /// penalised.
    pub fn failure(&mut self, ip: IpAddr, now: u64) -> Option<u64> {
        if self.is_exempt(ip) {
            return None;
        }
        let key = source_key(ip);
        let stale = self
            .sources
            .get(&key)
            .is_some_and(|e| self.forgotten(e, now));
        if stale {
            self.sources.remove(&key);
        }
        if !self.sources.contains_key(&key) {
            self.make_room(now);
            if self.policy.max_tracked == 0 {
                return None;
            }
        }
        let p = &self.policy;
        let e = self.sources.entry(key).or_insert(Entry {
            failures: 0,
            until: now,
        });
        e.failures = e.failures.saturating_add(1);
        let past_free = e.failures.saturating_sub(p.free_failures);
        let penalty = p
            .per_failure
            .saturating_mul(u64::from(past_free))
            .min(p.max_penalty);
        e.until = now.saturating_add(penalty);
        (penalty > 0).then_some(penalty)
    }

    /// After a successful login from `ip`: the source is forgotten.
    pub fn success(&mut self, ip: IpAddr) {
        self.sources.remove(&source_key(ip));
    }

    /// Frees one slot if the table is full: forgotten entries first, else the one whose
    /// penalty ends soonest.
    fn make_room(&mut self, now: u64) {
        if self.sources.len() < self.policy.max_tracked {
            return;
        }
        let max_penalty = self.policy.max_penalty;
        self.sources
            .retain(|_, e| now < e.until.saturating_add(max_penalty));
        while self.sources.len() >= self.policy.max_tracked {
            let Some(soonest) = self
                .sources
                .iter()
                .min_by_key(|(_, e)| (e.until, e.failures))
                .map(|(k, _)| *k)
            else {
                return;
            };
            self.sources.remove(&soonest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn table() -> SourcePenalties {
        SourcePenalties::new(PenaltyPolicy::default())
    }

    /// G045: AU-1-3
    #[test]
    fn free_failures_then_growing_penalties() {
        let mut t = table();
        let a = ip("192.0.2.7");
        let now = 1_000;
        for _ in 0..3 {
            assert_eq!(t.check(a, now), None);
            assert_eq!(t.failure(a, now), None);
        }
        assert_eq!(t.failure(a, now), Some(2));
        assert_eq!(t.check(a, now), Some(2));
        assert_eq!(t.check(a, now + 1), Some(1));
        assert_eq!(t.check(a, now + 2), None);
        assert_eq!(
            t.failure(a, now + 2),
            Some(4),
            "the count survives the penalty"
        );
        assert_eq!(t.failure(a, now + 6), Some(6));
        assert_eq!(
            t.check(ip("192.0.2.8"), now),
            None,
            "other sources unaffected"
        );
    }

    /// G045: AU-1-3
    #[test]
    fn penalties_are_capped() {
        let mut t = table();
        let a = ip("198.51.100.1");
        let mut last = None;
        for _ in 0..1000 {
            last = t.failure(a, 50);
        }
        assert_eq!(last, Some(600));
        assert_eq!(t.check(a, 50), Some(600));
    }

    /// G045: AU-1-3
    #[test]
    fn a_quiet_source_is_forgotten_after_its_penalty_ends() {
        let mut t = table();
        let a = ip("203.0.113.9");
        for _ in 0..5 {
            t.failure(a, 100);
        }
        // Penalty 4 s ends at 104; forgotten 600 s later.
        assert_eq!(t.check(a, 104 + 599), None);
        assert_eq!(t.failure(a, 104 + 599), Some(6), "still remembered");
        let end = 104 + 599 + 6;
        assert_eq!(t.check(a, end + 600), None);
        assert!(t.is_empty(), "forgotten");
        assert_eq!(t.failure(a, end + 600), None, "free failures again");
    }

    /// G045: AU-1-3
    #[test]
    fn success_forgets_the_source() {
        let mut t = table();
        let a = ip("192.0.2.1");
        for _ in 0..4 {
            t.failure(a, 10);
        }
        t.success(a);
        assert_eq!(t.check(a, 10), None);
        assert_eq!(t.failure(a, 10), None);
    }

    /// G045: AU-1-3
    #[test]
    fn the_management_network_is_never_penalised() {
        let mut t = SourcePenalties::new(PenaltyPolicy {
            exempt: vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()],
            ..PenaltyPolicy::default()
        });
        for a in [ip("10.1.2.3"), ip("::ffff:10.9.9.9"), ip("fd12::1")] {
            assert!(t.is_exempt(a), "{a}");
            for _ in 0..50 {
                assert_eq!(t.failure(a, 5), None);
            }
            assert_eq!(t.check(a, 5), None);
        }
        assert!(t.is_empty());
        assert!(!t.is_exempt(ip("11.0.0.1")));
    }

    /// G045: AU-1-3
    #[test]
    fn ipv6_sources_share_their_64_and_mapped_ipv4_is_ipv4() {
        let mut t = table();
        for i in 0..4 {
            t.failure(ip(&format!("2001:db8:1:2::{i:x}")), 7);
        }
        assert_eq!(t.check(ip("2001:db8:1:2:ffff::1"), 7), Some(2));
        assert_eq!(t.check(ip("2001:db8:1:3::1"), 7), None, "another /64");
        for _ in 0..4 {
            t.failure(ip("::ffff:192.0.2.44"), 7);
        }
        assert_eq!(t.check(ip("192.0.2.44"), 7), Some(2));
        assert_eq!(t.len(), 2);
    }

    /// G045: AU-1-3
    #[test]
    fn the_table_is_bounded_and_keeps_the_heaviest_offenders() {
        let mut t = SourcePenalties::new(PenaltyPolicy {
            max_tracked: 100,
            ..PenaltyPolicy::default()
        });
        let heavy = ip("192.0.2.200");
        for _ in 0..50 {
            t.failure(heavy, 0);
        }
        for i in 0..1000u32 {
            let a = IpAddr::V4((0x0a00_0000 + i).into());
            t.failure(a, 0);
            assert!(t.len() <= 100);
        }
        assert_eq!(t.len(), 100);
        assert_eq!(t.check(heavy, 0), Some(94));
    }
}
