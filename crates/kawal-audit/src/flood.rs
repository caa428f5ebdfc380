//! Flood control for events a remote peer can cause as often as it likes (refused logins,
//! refused TLS handshakes, malformed packets): the first few per source are written one by
//! one, the rest are counted and written as one summary per source when the window ends.
//! So a flood writes a bounded number of events per window, whatever its size, and the log
//! still says who tried what, how often.
//!
//! The caller owns the clock (`now`) and writes what [`FloodControl::roll`] returns.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::entry::{Event, Outcome};

/// Sources whose events are counted individually per window; events from further sources
/// are counted together (so memory stays bounded under a spoofed-source flood).
pub const TRACKED_SOURCES: usize = 1024;
/// Events written individually per window over all sources.
pub const INDIVIDUAL_PER_WINDOW: u32 = 200;
/// Summary events written per window; the rest are folded into one with `source` = `other`.
pub const SUMMARIES_PER_WINDOW: usize = 100;
/// UIDs (or user names) named in one summary at most.
pub const SUMMARY_UIDS: usize = 16;

/// The key a source is counted under: an IPv4 address (IPv4-mapped IPv6 included) or an
/// IPv6 /64, the smallest block one subscriber usually gets.
#[must_use]
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[derive(Default)]
struct SourceCount {
    written: u32,
    suppressed: u64,
    kinds: BTreeMap<String, u64>,
    uids: BTreeSet<String>,
}

impl SourceCount {
    fn absorb(&mut self, other: Self) {
        self.suppressed += other.suppressed;
        for (k, n) in other.kinds {
            *self.kinds.entry(k).or_insert(0) += n;
        }
        for u in other.uids {
            if self.uids.len() < SUMMARY_UIDS {
                self.uids.insert(u);
            }
        }
    }
}

struct Window {
    start: Instant,
    written: u32,
    sources: HashMap<IpAddr, SourceCount>,
    other: SourceCount,
}

/// Per-source flood control for one family of events (see the module documentation).
///
/// Per window each source gets its first `per_source` events written individually, and at
/// most [`INDIVIDUAL_PER_WINDOW`] are written individually in total; the rest are counted.
/// When the window ends, [`FloodControl::roll`] gives one `summary_event` per source that
/// had events counted: `source`, `count`, `kinds` (`kind:count,...`), `uids` and
/// `window_s` (at most [`SUMMARIES_PER_WINDOW`], the rest folded into one). A flood thus
/// writes at most about 300 events a window.
pub struct FloodControl {
    summary_event: &'static str,
    actor: &'static str,
    per_source: u32,
    window: Duration,
    state: Mutex<Window>,
    suppressed: AtomicU64,
}

impl std::fmt::Debug for FloodControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FloodControl")
            .field("summary_event", &self.summary_event)
            .field("per_source", &self.per_source)
            .field("window", &self.window)
            .field("suppressed", &self.suppressed())
            .finish_non_exhaustive()
    }
}

impl FloodControl {
    /// Flood control whose summaries are `summary_event` events by `actor`, starting a
    /// window at `now`.
    #[must_use]
    pub fn new(
        summary_event: &'static str,
        actor: &'static str,
        per_source: u32,
        window: Duration,
        now: Instant,
    ) -> Self {
        Self {
            summary_event,
            actor,
            per_source,
            window,
            state: Mutex::new(Window {
                start: now,
                written: 0,
                sources: HashMap::new(),
                other: SourceCount::default(),
            }),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether an event of `kind` (e.g. `login.refused/source-penalty`) caused by `source`
    /// is written individually (`true`) or only counted (`false`); `uid` is named in the
    /// summary when it is counted. Call [`FloodControl::roll`] first (or regularly).
    pub fn admit(&self, source: IpAddr, kind: &str, uid: Option<&str>) -> bool {
        let mut w = self.lock();
        let key = source_key(source);
        let total_ok = w.written < INDIVIDUAL_PER_WINDOW;
        let tracked = w.sources.contains_key(&key) || w.sources.len() < TRACKED_SOURCES;
        let count = if tracked {
            w.sources.entry(key).or_default()
        } else {
            &mut w.other
        };
        if tracked && total_ok && count.written < self.per_source {
            count.written += 1;
            w.written += 1;
            return true;
        }
        count.suppressed += 1;
        *count.kinds.entry(kind.to_owned()).or_insert(0) += 1;
        if let Some(u) = uid
            && count.uids.len() < SUMMARY_UIDS
        {
            count.uids.insert(u.to_owned());
        }
        drop(w);
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// If the window has ended at `now`: starts the next and returns the summaries of the
    /// one that ended, for the caller to write. Otherwise nothing.
    pub fn roll(&self, now: Instant) -> Vec<Event> {
        let (sources, mut other, window_s) = {
            let mut w = self.lock();
            if now.saturating_duration_since(w.start) < self.window {
                return Vec::new();
            }
            let window_s = now.saturating_duration_since(w.start).as_secs();
            w.start = now;
            w.written = 0;
            (
                std::mem::take(&mut w.sources),
                std::mem::take(&mut w.other),
                window_s,
            )
        };
        let mut out = Vec::new();
        for (source, c) in sources {
            if c.suppressed == 0 {
                continue;
            }
            if out.len() < SUMMARIES_PER_WINDOW {
                out.push(self.summary(&source.to_string(), &c, window_s));
            } else {
                other.absorb(c);
            }
        }
        if other.suppressed > 0 {
            out.push(self.summary("other", &other, window_s));
        }
        out
    }

    /// Events counted instead of written, since the start.
    pub fn suppressed(&self) -> u64 {
        self.suppressed.load(Ordering::Relaxed)
    }

    fn summary(&self, source: &str, c: &SourceCount, window_s: u64) -> Event {
        let kinds = c
            .kinds
            .iter()
            .map(|(k, n)| format!("{k}:{n}"))
            .collect::<Vec<_>>()
            .join(",");
        let uids = c.uids.iter().cloned().collect::<Vec<_>>().join(",");
        Event::new(self.summary_event, self.actor, Outcome::Denied)
            .with("source", source)
            .with("count", c.suppressed)
            .with("kinds", kinds)
            .with("uids", uids)
            .with("window_s", window_s)
    }

    fn lock(&self) -> MutexGuard<'_, Window> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// G045: AU-1-3
    #[test]
    fn a_source_gets_its_first_events_then_one_summary_per_window() {
        let t0 = Instant::now();
        let f = FloodControl::new("x.events-suppressed", "x", 3, Duration::from_secs(60), t0);
        let written = (0..50)
            .filter(|i| f.admit(ip("192.0.2.7"), "x.refused/a", Some(&format!("u{}", i % 2))))
            .count();
        assert_eq!(written, 3);
        assert!(f.admit(ip("192.0.2.8"), "x.refused/a", None));
        assert_eq!(f.suppressed(), 47);
        assert!(f.roll(t0 + Duration::from_secs(59)).is_empty());
        let s = f.roll(t0 + Duration::from_secs(61));
        assert_eq!(s.len(), 1, "only the source with counted events");
        let text = format!("{:?}", s[0]);
        for part in ["192.0.2.7", "47", "x.refused/a:47", "u0,u1"] {
            assert!(text.contains(part), "{part} missing from {text}");
        }
        // A new window: the source starts afresh.
        assert!(f.admit(ip("192.0.2.7"), "x.refused/a", None));
    }

    /// G045: AU-1-3
    #[test]
    fn many_sources_are_bounded_in_events_and_memory() {
        let t0 = Instant::now();
        let f = FloodControl::new("x.events-suppressed", "x", 10, Duration::from_secs(60), t0);
        let mut written = 0;
        for a in 0..20u8 {
            for b in 0..250u8 {
                let src = IpAddr::V4(std::net::Ipv4Addr::new(10, a, b, 1));
                written += (0..3).filter(|_| f.admit(src, "k", None)).count();
            }
        }
        assert_eq!(written, INDIVIDUAL_PER_WINDOW as usize);
        let s = f.roll(t0 + Duration::from_secs(60));
        assert!(s.len() <= SUMMARIES_PER_WINDOW + 1);
        let total: u64 = s
            .iter()
            .map(|e| match e.details.get("count") {
                Some(crate::Value::Int(n)) => u64::try_from(*n).unwrap(),
                other => panic!("count {other:?}"),
            })
            .sum();
        assert_eq!(total + written as u64, 20 * 250 * 3);
    }

    #[test]
    fn ipv6_sources_count_per_64() {
        assert_eq!(
            source_key(ip("2001:db8:1:2:aaaa::1")),
            source_key(ip("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(
            source_key(ip("2001:db8:1:2::1")),
            source_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(source_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
    }
}
