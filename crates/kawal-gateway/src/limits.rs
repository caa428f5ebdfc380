//! Limits of the sensor listener: sizes, counts, rates and timeouts, the source-network
//! allow-list, and the token bucket they use (G045 ST-G-1).
//!
//! Every limit has a default that suits a small gateway ([`Settings::default`]); the daemon
//! fills [`Settings`] from `[mqtt]` in the configuration. Limits on sources count IPv6 peers
//! per /64 (one host's usual allocation), so that an attacker with a /64 cannot multiply the
//! per-source limits by changing its address; IPv4-mapped IPv6 addresses count as IPv4.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::payload::PayloadRule;
use crate::topic::TopicRules;

/// A rate with a burst: `per_s` tokens a second, at most `burst` saved up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Tokens added per second (at least 1).
    pub per_s: u32,
    /// Most tokens held (at least 1).
    pub burst: u32,
}

impl Rate {
    /// `per_s` a second with a burst of twice that.
    pub const fn doubled(per_s: u32) -> Self {
        Self {
            per_s,
            burst: per_s.saturating_mul(2),
        }
    }
}

/// The listener's settings. See [`Settings::default`] for the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Largest packet a sensor may send, header included (default 64 KiB).
    pub max_packet_bytes: usize,
    /// Topic length and depth limits (default 256 bytes, 16 levels).
    pub topic: TopicRules,
    /// Subscriptions per connection (default 32).
    pub max_subscriptions: usize,
    /// QoS 1 messages in flight in each direction per connection (default 32): unacknowledged
    /// deliveries to the client, and the client's publishes waiting for the store.
    pub inflight: usize,
    /// Bytes waiting to be written to one client before it counts as a slow reader and is
    /// disconnected (default 1 MiB).
    pub max_queued_bytes: usize,
    /// Connections in total (default 20,000).
    pub max_connections: usize,
    /// Connections per source (default 64).
    pub max_per_source: usize,
    /// TLS handshakes in progress at once (default 512).
    pub max_handshakes_in_progress: usize,
    /// TLS handshakes per source (default 20/s, burst 40).
    pub handshakes_per_source: Rate,
    /// Time for the TLS handshake (default 10 s).
    pub handshake_timeout: Duration,
    /// Time from the handshake to CONNECT (default 10 s).
    pub connect_timeout: Duration,
    /// PUBLISH packets per sensor (default 500/s, burst 1000).
    pub messages: Rate,
    /// PUBLISH payload bytes per sensor (default 1 MiB/s, burst 2 MiB).
    pub bytes: Rate,
    /// How long a sensor may stay over its rate (reading is paused meanwhile) before it is
    /// disconnected (default 5 s within 10 s).
    pub throttle_grace: Duration,
    /// Longest keep-alive accepted, in seconds (default 1200); a client asking for more is
    /// refused, one asking for 0 (none) gets this. The connection is closed after 1.5 times the
    /// keep-alive without a packet.
    pub keep_alive_max: u16,
    /// Source networks allowed to connect; empty allows any.
    pub allow_sources: Vec<IpNet>,
    /// Retained messages kept (default 1000; 0 ignores the retain flag).
    pub max_retained: usize,
    /// Payload bytes of retained messages kept (default 1 MiB).
    pub max_retained_bytes: usize,
    /// Audit flood control: refusals before authentication (source, limits, TLS) written
    /// individually per source and window (default 10) before they are only counted.
    pub audit_refusals_per_source: u32,
    /// Audit flood control: the window, after which counts are written as one summary event
    /// per source (default 60 s).
    pub audit_window: Duration,
    /// Sources tracked at once for handshake rates and audit flood control (default 65,536).
    pub max_tracked_sources: usize,
    /// Payload rules for sensors' publishes and wills, the first matching one deciding
    /// (default none: see [`crate::payload`]).
    pub payload: Vec<PayloadRule>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_packet_bytes: 64 * 1024,
            topic: TopicRules::default(),
            max_subscriptions: 32,
            inflight: 32,
            max_queued_bytes: 1024 * 1024,
            max_connections: 20_000,
            max_per_source: 64,
            max_handshakes_in_progress: 512,
            handshakes_per_source: Rate::doubled(20),
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            messages: Rate::doubled(500),
            bytes: Rate::doubled(1024 * 1024),
            throttle_grace: Duration::from_secs(5),
            keep_alive_max: 1200,
            allow_sources: Vec::new(),
            max_retained: 1000,
            max_retained_bytes: 1024 * 1024,
            audit_refusals_per_source: 10,
            audit_window: Duration::from_secs(60),
            max_tracked_sources: 65_536,
            payload: Vec::new(),
        }
    }
}

/// A setting out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mqtt setting {name}: {problem}")]
pub struct SettingsError {
    /// The setting.
    pub name: &'static str,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl Settings {
    /// Checks that every setting is usable.
    ///
    /// # Errors
    /// Every setting out of range, in field order.
    pub fn validate(&self) -> Result<(), Vec<SettingsError>> {
        let mut errors = Vec::new();
        let mut need = |ok: bool, name: &'static str, problem: &'static str| {
            if !ok {
                errors.push(SettingsError { name, problem });
            }
        };
        let positive = "must be at least 1";
        // A CONNECT needs ~14 bytes; 128 MiB is far beyond any sensor.
        need(
            (64..=128 << 20).contains(&self.max_packet_bytes),
            "max_packet_bytes",
            "must be 64 B to 128 MiB",
        );
        need(
            (1..=65_535).contains(&self.topic.max_len),
            "max_topic_length",
            "must be 1 to 65535",
        );
        need(self.topic.max_depth >= 1, "max_topic_depth", positive);
        need(self.max_subscriptions >= 1, "max_subscriptions", positive);
        need(
            (1..=65_535).contains(&self.inflight),
            "inflight",
            "must be 1 to 65535",
        );
        need(
            self.max_queued_bytes >= self.max_packet_bytes,
            "max_queued_bytes",
            "must be at least max_packet_bytes",
        );
        need(self.max_connections >= 1, "max_connections", positive);
        need(self.max_per_source >= 1, "max_per_source", positive);
        need(
            self.max_handshakes_in_progress >= 1,
            "max_handshakes_in_progress",
            positive,
        );
        for (rate, name) in [
            (self.handshakes_per_source, "handshakes_per_source"),
            (self.messages, "messages_per_s"),
            (self.bytes, "bytes_per_s"),
        ] {
            need(rate.per_s >= 1 && rate.burst >= 1, name, positive);
        }
        for (d, name) in [
            (self.handshake_timeout, "handshake_timeout"),
            (self.connect_timeout, "connect_timeout"),
            (self.audit_window, "audit_window"),
        ] {
            need(!d.is_zero(), name, "must be more than 0 s");
        }
        need(self.keep_alive_max >= 1, "keep_alive_max", positive);
        need(
            self.max_tracked_sources >= 1,
            "max_tracked_sources",
            positive,
        );
        for rule in &self.payload {
            if let Some(problem) = rule.problem(&self.topic, self.max_packet_bytes) {
                errors.push(SettingsError {
                    name: "payload",
                    problem,
                });
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// A token bucket: `take` succeeds while tokens last, and tokens come back at the rate.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_s: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: Rate, now: Instant) -> Self {
        let burst = f64::from(rate.burst.max(1));
        Self {
            per_s: f64::from(rate.per_s.max(1)),
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.per_s).min(self.burst);
        self.last = self.last.max(now);
    }

    /// Takes `n` tokens, or says how long until they would be there. A request larger than
    /// the burst succeeds once the bucket is full, leaving it in debt.
    ///
    /// # Errors
    /// The wait until the request can succeed; nothing is taken.
    pub fn take(&mut self, n: u64, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        // Token counts stay far below 2^52, so the conversion is exact.
        let n = n as f64;
        let need = n.min(self.burst);
        if self.tokens >= need {
            self.tokens -= n;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((need - self.tokens) / self.per_s))
        }
    }

    /// Returns `n` tokens taken before (never beyond the burst).
    pub fn give_back(&mut self, n: u64) {
        // Token counts stay far below 2^52, so the conversion is exact.
        self.tokens = (self.tokens + n as f64).min(self.burst);
    }

    /// Whether the bucket is full again (an idle source that need not be tracked).
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

/// The key sources are counted by: IPv4 addresses, IPv6 /64 prefixes (shared with audit flood
/// control, so both count the same sources).
pub use kawal_audit::flood::source_key;

/// Whether `ip` is in `allow` (an empty list allows every source).
pub fn source_allowed(allow: &[IpNet], ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    };
    allow.is_empty() || allow.iter().any(|net| net.contains(&ip))
}

/// Which connection limit was hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    /// All connections.
    Total,
    /// Connections from this source.
    PerSource,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_source: HashMap<IpAddr, usize>,
}

/// Counts live connections, in total and per source.
#[derive(Debug)]
pub struct ConnLimiter {
    counts: Mutex<Counts>,
    max_total: usize,
    max_per_source: usize,
}

/// One counted connection; dropping it releases the count.
#[derive(Debug)]
pub struct ConnPermit {
    limiter: Arc<ConnLimiter>,
    key: IpAddr,
}

impl ConnLimiter {
    /// A limiter with these maxima.
    pub fn new(max_total: usize, max_per_source: usize) -> Arc<Self> {
        Arc::new(Self {
            counts: Mutex::new(Counts::default()),
            max_total,
            max_per_source,
        })
    }

    /// Counts a new connection from `ip` if both limits allow it.
    ///
    /// # Errors
    /// The limit that is reached.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnPermit, LimitHit> {
        let key = source_key(ip);
        let mut c = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if c.total >= self.max_total {
            return Err(LimitHit::Total);
        }
        let n = c.per_source.entry(key).or_insert(0);
        if *n >= self.max_per_source {
            return Err(LimitHit::PerSource);
        }
        *n += 1;
        c.total += 1;
        Ok(ConnPermit {
            limiter: Arc::clone(self),
            key,
        })
    }

    /// Connections counted now.
    pub fn live(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut c = self
            .limiter
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_source.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_source.remove(&self.key);
            }
        }
    }
}

/// Handshake rate per source: one token bucket per source key, idle (full) buckets forgotten.
#[derive(Debug)]
pub struct SourceRates {
    buckets: Mutex<HashMap<IpAddr, TokenBucket>>,
    rate: Rate,
    max_tracked: usize,
}

impl SourceRates {
    /// Tracks up to `max_tracked` sources at `rate` each.
    pub fn new(rate: Rate, max_tracked: usize) -> Self {
        Self {
            buckets: Mutex::new(HashMap::new()),
            rate,
            max_tracked,
        }
    }

    /// Whether `ip` may start another handshake now. When `max_tracked` busy sources are
    /// already tracked, new sources are refused (fail closed) until some go idle.
    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        let key = source_key(ip);
        let mut b = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if !b.contains_key(&key) && b.len() >= self.max_tracked {
            b.retain(|_, bucket| !bucket.is_full(now));
            if b.len() >= self.max_tracked {
                return false;
            }
        }
        b.entry(key)
            .or_insert_with(|| TokenBucket::new(self.rate, now))
            .take(1, now)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// G045: PL-3-1 (threat ST-G-1: denial of service, as Annex A maps it)
    #[test]
    fn bucket_allows_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(
            Rate {
                per_s: 10,
                burst: 20,
            },
            t0,
        );
        for _ in 0..20 {
            assert!(b.take(1, t0).is_ok());
        }
        let wait = b.take(1, t0).unwrap_err();
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100));
        assert!(b.take(1, t0 + Duration::from_millis(100)).is_ok());
        assert!(b.take(1, t0 + Duration::from_millis(100)).is_err());
        // Refills to the burst, never beyond.
        let later = t0 + Duration::from_secs(60);
        assert!(b.is_full(later));
        for _ in 0..20 {
            assert!(b.take(1, later).is_ok());
        }
        assert!(b.take(1, later).is_err());
    }

    #[test]
    fn bucket_lets_an_oversized_request_through_when_full_and_goes_into_debt() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(
            Rate {
                per_s: 100,
                burst: 100,
            },
            t0,
        );
        assert!(b.take(1000, t0).is_ok());
        let wait = b.take(1, t0).unwrap_err();
        assert!(wait >= Duration::from_secs(9), "{wait:?}");
    }

    #[test]
    fn bucket_ignores_time_going_backwards() {
        let t0 = Instant::now() + Duration::from_secs(5);
        let mut b = TokenBucket::new(Rate { per_s: 1, burst: 1 }, t0);
        assert!(b.take(1, t0).is_ok());
        assert!(b.take(1, t0 - Duration::from_secs(3)).is_err());
    }

    /// G045: PL-3-1 (threat ST-G-1: denial of service, as Annex A maps it)
    #[test]
    fn counts_connections_per_source_and_in_total() {
        let l = ConnLimiter::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let p1 = l.try_acquire(a).unwrap();
        let _p2 = l.try_acquire(a).unwrap();
        assert_eq!(l.try_acquire(a).unwrap_err(), LimitHit::PerSource);
        let _p3 = l.try_acquire(b).unwrap();
        assert_eq!(l.try_acquire(b).unwrap_err(), LimitHit::Total);
        drop(p1);
        assert_eq!(l.live(), 2);
        assert!(l.try_acquire(a).is_ok());
    }

    #[test]
    fn ipv6_sources_count_per_64() {
        let x: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let y: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let z: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(x), source_key(y));
        assert_ne!(source_key(x), source_key(z));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(source_key(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
    }

    /// G045: PL-3-1 (threat ST-G-1: denial of service, as Annex A maps it)
    #[test]
    fn allow_list_filters_sources() {
        let nets: Vec<IpNet> = vec![
            "10.0.0.0/8".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ];
        assert!(source_allowed(&nets, "10.1.2.3".parse().unwrap()));
        assert!(source_allowed(&nets, "::ffff:10.1.2.3".parse().unwrap()));
        assert!(source_allowed(&nets, "2001:db8::5".parse().unwrap()));
        assert!(!source_allowed(&nets, "192.0.2.1".parse().unwrap()));
        assert!(source_allowed(&[], "192.0.2.1".parse().unwrap()));
    }

    /// G045: PL-3-1 (threat ST-G-1: denial of service, as Annex A maps it)
    #[test]
    fn handshake_rate_is_per_source_and_fails_closed_when_full() {
        let t0 = Instant::now();
        let r = SourceRates::new(Rate { per_s: 1, burst: 2 }, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        assert!(r.allow(a, t0) && r.allow(a, t0));
        assert!(!r.allow(a, t0));
        assert!(r.allow(b, t0));
        assert!(!r.allow(c, t0), "two busy sources tracked already");
        assert!(
            r.allow(c, t0 + Duration::from_secs(5)),
            "idle ones forgotten"
        );
    }

    #[test]
    fn defaults_are_valid_and_bad_values_are_all_reported() {
        assert_eq!(Settings::default().validate(), Ok(()));
        let bad = Settings {
            max_packet_bytes: 1,
            inflight: 0,
            messages: Rate { per_s: 0, burst: 0 },
            ..Settings::default()
        };
        let names: Vec<_> = bad.validate().unwrap_err().iter().map(|e| e.name).collect();
        assert_eq!(names, ["max_packet_bytes", "inflight", "messages_per_s"]);
        let bad_rule = Settings {
            payload: vec![PayloadRule {
                topic: "a/#/b".into(),
                max_bytes: Some(1),
                json: crate::payload::JsonCheck::Off,
            }],
            ..Settings::default()
        };
        let errs = bad_rule.validate().unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].name, "payload");
    }
}
