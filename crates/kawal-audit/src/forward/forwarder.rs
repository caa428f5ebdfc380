//! [`Forwarder`]: the thread that follows the local log and forwards it, and its status.
//!
//! The work is done by [`Pump`], a plain state machine stepped by the thread: connect (with
//! back-off), send what the log holds after the last sent entry, confirm (see the parent
//! module), repeat. The thread sleeps between steps until the poll interval passes or a
//! [`ForwardWaker`] (a [`Sink`] given to the log) signals a durable batch.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use rustls::ClientConfig;
use rustls::pki_types::ServerName;

use super::conn::{Conn, Timeouts};
use super::cursor::{Cursor, CursorFileStore};
use super::follow::{self, Follower};
use super::syslog::write_frame;
use super::{ForwardConfig, ForwardError, tls};
use crate::entry::Entry;
use crate::sink::{Sink, SinkError};

/// Entries read and sent per step at most (about 150 KB of frames for typical entries).
const BATCH: u64 = 512;
/// The local log's end is looked up at most this often for the backlog figure.
const LOCAL_REFRESH: Duration = Duration::from_millis(250);
/// After the local log could not be read at the position, reading is tried again this late.
const STALL_RETRY: Duration = Duration::from_secs(30);

/// Why forwarding cannot go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stall {
    /// The local log ends before the cursor: cleared once it no longer does.
    Short,
    /// The entry at the position cannot be read or does not chain: retried after
    /// [`STALL_RETRY`].
    Read(Instant),
}

/// How far the collector is behind, against [`ForwardConfig::max_backlog_entries`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum BacklogAlarm {
    /// Below 80 % of the maximum.
    #[default]
    Normal,
    /// At or above 80 %: the caller should raise the alarm (logs are piling up locally).
    High,
    /// At or above the maximum. Nothing is dropped (the backlog is the local log), but the
    /// collector's copy is that far behind.
    Full,
}

impl BacklogAlarm {
    /// The alarm for `backlog` entries against `max`.
    pub fn of(backlog: u64, max: u64) -> Self {
        let max = max.max(1);
        if backlog >= max {
            Self::Full
        } else if u128::from(backlog) * 5 >= u128::from(max) * 4 {
            Self::High
        } else {
            Self::Normal
        }
    }
}

/// What the forwarder is doing, for health checks and the compliance report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardStatus {
    /// A TLS connection to the collector is open now.
    pub connected: bool,
    /// The last seq known delivered (the durable cursor).
    pub cursor_seq: u64,
    /// The last seq sent (delivered or not).
    pub sent_seq: u64,
    /// The last seq in the local log, as last looked up.
    pub local_seq: u64,
    /// Local entries after the cursor: what the collector lacks or may lack.
    pub backlog_entries: u64,
    /// [`ForwardConfig::max_backlog_entries`].
    pub max_backlog_entries: u64,
    /// The alarm state of the backlog.
    pub backlog_alarm: BacklogAlarm,
    /// The declared overlap: entries that may arrive twice after a broken connection or a
    /// restart ([`ForwardConfig::confirm_max_entries`]).
    pub declared_overlap: u64,
    /// Messages written to the collector since start: resent ones included, and those of a
    /// write that failed (part of it may have arrived).
    pub messages_sent: u64,
    /// Messages this process sent again after a broken connection. Entries that an earlier
    /// process sent without confirmation are resent after a restart as ordinary messages
    /// (at most [`ForwardStatus::declared_overlap`] of them).
    pub messages_resent: u64,
    /// Confirming closes that succeeded.
    pub confirmations: u64,
    /// Connections opened after the first one.
    pub reconnects: u64,
    /// Connections that broke before their entries were confirmed.
    pub broken_connections: u64,
    /// Handshakes that resumed an earlier TLS session.
    pub resumed_sessions: u64,
    /// Forwarding cannot go on until the local log or the cursor is fixed (see
    /// `last_error`); nothing is skipped meanwhile.
    pub stalled: bool,
    /// The most recent error (connect, TLS, transport, local log, cursor); never holds key
    /// material.
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<SystemTime>,
    /// When entries were last confirmed delivered.
    pub last_confirmed_at: Option<SystemTime>,
}

/// The forwarding state machine (no threads; the [`Forwarder`] steps it).
pub(crate) struct Pump {
    dir: PathBuf,
    collector: String,
    hostname: String,
    server_name: ServerName<'static>,
    tls: Arc<ClientConfig>,
    /// The same without session resumption, for collectors that fail resumed handshakes.
    tls_full: Arc<ClientConfig>,
    /// Whether resumption is still tried.
    resume: bool,
    timeouts: Timeouts,
    confirm_interval: Duration,
    poll_interval: Duration,
    backoff: (Duration, Duration),
    store: CursorFileStore,
    /// Known delivered.
    cursor: Cursor,
    /// Position: the last entry sent.
    follower: Follower,
    /// Highest seq ever sent by this process (to count resends).
    high_water: u64,
    conn: Option<Conn>,
    unconfirmed: u64,
    first_unconfirmed_at: Option<Instant>,
    failures: u32,
    retry_at: Option<Instant>,
    local_checked_at: Option<Instant>,
    stall: Option<Stall>,
    frames: Vec<u8>,
    status: ForwardStatus,
}

impl Pump {
    /// Checks `config`, builds the TLS configuration and loads the cursor.
    pub fn new(log_dir: &Path, config: ForwardConfig) -> Result<Self, ForwardError> {
        if let Some(e) = config.problems().into_iter().next() {
            return Err(e);
        }
        let tls = tls::client_config(&config.ca_pem, &config.identity)?;
        let mut full = (*tls).clone();
        full.resumption = rustls::client::Resumption::disabled();
        let server_name = tls::server_name(&config.server_name)?;
        let store = CursorFileStore::new(&config.cursor_path);
        let mut status = ForwardStatus {
            max_backlog_entries: config.max_backlog_entries,
            declared_overlap: config.confirm_max_entries,
            ..ForwardStatus::default()
        };
        let cursor = match store.load() {
            Ok(c) => c.unwrap_or(Cursor::START),
            Err(e) => {
                // Never skip: resend the whole log; the collector's copy is deduplicated.
                tracing::error!(error = %e, "log forwarding cursor unreadable, resending from entry 1");
                note_error(&mut status, &e);
                Cursor::START
            }
        };
        status.cursor_seq = cursor.seq;
        status.sent_seq = cursor.seq;
        Ok(Self {
            dir: log_dir.to_owned(),
            collector: config.collector,
            hostname: config.hostname,
            server_name,
            tls,
            tls_full: Arc::new(full),
            resume: true,
            timeouts: Timeouts {
                connect: config.connect_timeout,
                io: config.io_timeout,
            },
            confirm_interval: config.confirm_interval,
            poll_interval: config.poll_interval,
            backoff: (config.backoff_min, config.backoff_max),
            store,
            cursor,
            follower: Follower::new(log_dir, cursor),
            high_water: cursor.seq,
            conn: None,
            unconfirmed: 0,
            first_unconfirmed_at: None,
            failures: 0,
            retry_at: None,
            local_checked_at: None,
            stall: None,
            frames: Vec::with_capacity(256 << 10),
            status,
        })
    }

    /// Does one round of work; returns how long to sleep before the next (zero: at once).
    pub fn step(&mut self, now: Instant) -> Duration {
        self.refresh_local(now, false);
        match self.stall {
            Some(Stall::Short) => return self.poll_interval,
            Some(Stall::Read(since)) if now.duration_since(since) < STALL_RETRY => {
                return self.poll_interval;
            }
            Some(Stall::Read(_)) => {
                // Try again from the cursor: the damage may have been repaired.
                self.set_stall(None);
                self.follower.reset(self.cursor);
                self.status.sent_seq = self.cursor.seq;
            }
            None => {}
        }
        if self.conn.is_none() {
            if let Some(at) = self.retry_at
                && now < at
            {
                return at - now;
            }
            if let Err(e) = self.connect() {
                self.failed(&e, now);
                return self.retry_at.map_or(self.poll_interval, |at| at - now);
            }
        }
        let Some(conn) = self.conn.as_mut() else {
            return self.poll_interval;
        };
        if conn.peer_gone() {
            let e = ForwardError::Transport {
                op: "collector closed",
                reason: "the collector closed the connection".into(),
            };
            self.broken(&e, now);
            return Duration::ZERO;
        }
        let room = (self.status.declared_overlap - self.unconfirmed).min(BATCH);
        let before = self.follower.last().seq;
        self.frames.clear();
        let (frames, host) = (&mut self.frames, self.hostname.as_str());
        let read = self.follower.read(
            usize::try_from(room).unwrap_or(usize::MAX),
            |f, line, hash| {
                write_frame(frames, host, f, line, hash);
            },
        );
        let last = self.follower.last().seq;
        let n = last - before;
        if n > 0 {
            // Counted when written, even if the write then fails: part of it may have
            // reached the collector, and will be sent again.
            self.status.messages_sent += n;
            self.status.messages_resent += self.high_water.min(last).saturating_sub(before);
            self.high_water = self.high_water.max(last);
            if let Err(e) = conn.send(&self.frames) {
                self.broken(&e, now);
                return Duration::ZERO;
            }
            self.unconfirmed += n;
            self.first_unconfirmed_at.get_or_insert(now);
            self.status.sent_seq = last;
        }
        if let Err(e) = read {
            // The local log is damaged at the position: stall, skip nothing, retry later.
            tracing::error!(error = %e, "log forwarding stalled");
            note_error(&mut self.status, &e);
            self.set_stall(Some(Stall::Read(now)));
        }
        let due = self.first_unconfirmed_at.map(|t| t + self.confirm_interval);
        if self.unconfirmed >= self.status.declared_overlap
            || due.is_some_and(|due| now >= due)
            || (self.status.stalled && self.unconfirmed > 0)
        {
            self.confirm(now);
            return Duration::ZERO;
        }
        if n == room && n > 0 {
            return Duration::ZERO;
        }
        let wait = due.map_or(self.poll_interval, |due| {
            (due - now).min(self.poll_interval)
        });
        wait.max(Duration::from_millis(1))
    }

    fn connect(&mut self) -> Result<(), ForwardError> {
        let config = if self.resume {
            &self.tls
        } else {
            &self.tls_full
        };
        let conn = match Conn::open(&self.collector, &self.server_name, config, self.timeouts) {
            Ok(c) => c,
            // Some collectors issue session tickets and then fail the handshakes that use
            // them (rsyslog's OpenSSL driver sets no session ID context). After a failed
            // handshake that may have offered a ticket, try once without: if that works,
            // stay with full handshakes.
            Err(ForwardError::Handshake { refused: false, .. })
                if self.resume
                    && self.status.confirmations + self.status.broken_connections > 0 =>
            {
                let c = Conn::open(
                    &self.collector,
                    &self.server_name,
                    &self.tls_full,
                    self.timeouts,
                )?;
                tracing::info!(
                    collector = %self.collector,
                    "log collector fails resumed TLS handshakes; using full handshakes"
                );
                self.resume = false;
                c
            }
            Err(e) => return Err(e),
        };
        if conn.resumed() {
            self.status.resumed_sessions += 1;
        }
        if self.status.confirmations + self.status.broken_connections > 0 {
            self.status.reconnects += 1;
        }
        tracing::debug!(collector = %self.collector, resumed = conn.resumed(), "log collector connected");
        self.conn = Some(conn);
        self.status.connected = true;
        self.retry_at = None;
        Ok(())
    }

    /// Closes the connection gracefully; on success everything sent is known delivered.
    fn confirm(&mut self, now: Instant) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        self.status.connected = false;
        // A collector that already closed on its own may not have read our last frames,
        // though its EOF would look like a confirmation: check right before closing.
        if conn.peer_gone() {
            let e = ForwardError::Transport {
                op: "collector closed",
                reason: "the collector closed the connection before confirmation".into(),
            };
            self.broken(&e, now);
            return;
        }
        match conn.close_confirm() {
            Ok(()) => {
                self.failures = 0;
                self.status.confirmations += 1;
                self.status.last_confirmed_at = Some(SystemTime::now());
                self.unconfirmed = 0;
                self.first_unconfirmed_at = None;
                self.advance_cursor(self.follower.last());
            }
            Err(e) => self.broken(&e, now),
        }
    }

    fn advance_cursor(&mut self, to: Cursor) {
        if to.seq == self.cursor.seq {
            return;
        }
        self.cursor = to;
        self.status.cursor_seq = to.seq;
        self.status.backlog_entries = self.status.local_seq.saturating_sub(to.seq);
        self.status.backlog_alarm =
            BacklogAlarm::of(self.status.backlog_entries, self.status.max_backlog_entries);
        // If the save fails, the cursor on disk stays behind: a restart resends more, and
        // nothing is lost. The next confirmation tries again.
        if let Err(e) = self.store.save(&to) {
            tracing::error!(error = %e, "log forwarding cursor not saved");
            note_error(&mut self.status, &e);
        }
    }

    /// The connection broke before confirmation: go back to the cursor and retry later.
    fn broken(&mut self, e: &ForwardError, now: Instant) {
        self.conn = None;
        self.status.connected = false;
        if self.unconfirmed > 0 {
            self.status.broken_connections += 1;
        }
        self.unconfirmed = 0;
        self.first_unconfirmed_at = None;
        self.follower.reset(self.cursor);
        self.status.sent_seq = self.cursor.seq;
        self.failed(e, now);
    }

    fn failed(&mut self, e: &ForwardError, now: Instant) {
        tracing::warn!(error = %e, "log forwarding");
        note_error(&mut self.status, e);
        self.failures = self.failures.saturating_add(1);
        self.retry_at = Some(now + backoff(self.backoff.0, self.backoff.1, self.failures));
    }

    /// Looks up the end of the local log (at most every [`LOCAL_REFRESH`] unless `force`).
    fn refresh_local(&mut self, now: Instant, force: bool) {
        if !force
            && self
                .local_checked_at
                .is_some_and(|t| now.duration_since(t) < LOCAL_REFRESH)
        {
            return;
        }
        self.local_checked_at = Some(now);
        match follow::last_seq(&self.dir) {
            Ok(local) if local < self.cursor.seq => {
                let e = ForwardError::LocalLog {
                    reason: format!(
                        "the local log ends at seq {local}, before entry {} already delivered: \
                         truncated or replaced",
                        self.cursor.seq
                    ),
                };
                if self.stall != Some(Stall::Short) {
                    tracing::error!(error = %e, "log forwarding stalled");
                    // Whatever was sent cannot be confirmed against this log: start over
                    // from the cursor once the log is back.
                    self.conn = None;
                    self.status.connected = false;
                    self.unconfirmed = 0;
                    self.first_unconfirmed_at = None;
                }
                note_error(&mut self.status, &e);
                self.status.local_seq = local;
                self.set_stall(Some(Stall::Short));
            }
            Ok(local) => {
                self.status.local_seq = local;
                if self.stall == Some(Stall::Short) {
                    self.set_stall(None);
                    self.follower.reset(self.cursor);
                    self.status.sent_seq = self.cursor.seq;
                }
            }
            Err(e) => {
                note_error(&mut self.status, &e);
            }
        }
        self.status.backlog_entries = self.status.local_seq.saturating_sub(self.cursor.seq);
        self.status.backlog_alarm =
            BacklogAlarm::of(self.status.backlog_entries, self.status.max_backlog_entries);
    }

    fn set_stall(&mut self, stall: Option<Stall>) {
        self.stall = stall;
        self.status.stalled = stall.is_some();
    }

    /// On stop: sends what the log holds beyond the last sent entry (the caller's final
    /// records, such as the daemon's stop event, are appended just before), confirms it and
    /// closes. One attempt, even during a back-off (stopping is this process's last chance),
    /// bounded by the connect and I/O time-outs; a failure leaves it to the next start.
    pub fn shutdown(&mut self, now: Instant) {
        self.refresh_local(now, true);
        if self.stall.is_none() {
            self.retry_at = None;
            // Each round sends up to the overlap, then confirms; stop at the first failure
            // or when a round makes no progress.
            for _ in 0..1024 {
                let before = (self.follower.last().seq, self.status.last_error_at);
                if before.0 >= self.status.local_seq {
                    break;
                }
                self.step(Instant::now());
                if self.unconfirmed > 0 {
                    self.confirm(Instant::now());
                }
                if (self.follower.last().seq, self.status.last_error_at) == before
                    || self.status.last_error_at != before.1
                {
                    break;
                }
                self.retry_at = None;
                self.refresh_local(Instant::now(), true);
            }
        }
        if self.unconfirmed > 0 {
            self.confirm(now);
        } else if let Some(conn) = self.conn.take() {
            let _ = conn.close_confirm();
        }
        self.status.connected = false;
        self.refresh_local(now, true);
    }

    /// The current status.
    pub fn status(&self) -> &ForwardStatus {
        &self.status
    }
}

fn note_error(status: &mut ForwardStatus, e: &ForwardError) {
    status.last_error = Some(e.to_string());
    status.last_error_at = Some(SystemTime::now());
}

/// The wait before attempt `failures` (1 = first retry): `min` doubling up to `max`, then
/// "equal jitter" (half fixed, half random) so that many devices cut off together do not
/// reconnect in step.
pub(crate) fn backoff(min: Duration, max: Duration, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let base = min.saturating_mul(1u32 << exp).min(max);
    let half = base / 2;
    let mut r = [0u8; 8];
    let random = if aws_lc_rs::rand::fill(&mut r).is_ok() {
        u64::from_le_bytes(r)
    } else {
        0
    };
    let half_ns = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(random.checked_rem(half_ns.saturating_add(1)).unwrap_or(0))
}

/// What the thread and the handles share.
struct Shared {
    status: Mutex<ForwardStatus>,
    signal: Mutex<Signal>,
    cv: Condvar,
}

#[derive(Default)]
struct Signal {
    woken: bool,
    stop: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn wake(&self) {
        lock(&self.signal).woken = true;
        self.cv.notify_one();
    }
}

/// The running forwarder. Dropping it stops the thread as [`Forwarder::stop`] does.
pub struct Forwarder {
    shared: Arc<Shared>,
    handle: Option<JoinHandle<()>>,
}

impl fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Forwarder")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl Forwarder {
    /// Starts forwarding the log in `log_dir/audit/` as `config` says, on a thread of its
    /// own. Returns once the settings are checked; connecting happens on the thread.
    ///
    /// # Errors
    /// [`ForwardError::Config`] for unusable settings or PEM.
    pub fn start(log_dir: &Path, config: ForwardConfig) -> Result<Self, ForwardError> {
        let mut pump = Pump::new(log_dir, config)?;
        let shared = Arc::new(Shared {
            status: Mutex::new(pump.status().clone()),
            signal: Mutex::new(Signal::default()),
            cv: Condvar::new(),
        });
        let thread_shared = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("kawal-audit-forward".into())
            .spawn(move || run(&thread_shared, &mut pump))
            .map_err(|e| ForwardError::Config {
                field: "thread",
                reason: format!("cannot start the forwarding thread: {e}"),
            })?;
        Ok(Self {
            shared,
            handle: Some(handle),
        })
    }

    /// The status as of the last step.
    pub fn status(&self) -> ForwardStatus {
        lock(&self.shared.status).clone()
    }

    /// Local entries after the cursor (see [`ForwardStatus::backlog_entries`]).
    pub fn backlog_entries(&self) -> u64 {
        lock(&self.shared.status).backlog_entries
    }

    /// A [`Sink`] that wakes the forwarder for every durable batch: give it to
    /// [`AuditOptions::sinks`](crate::AuditOptions::sinks) so entries leave at once rather
    /// than at the next poll. It holds no entries and never fails.
    pub fn waker(&self) -> ForwardWaker {
        ForwardWaker {
            shared: Arc::downgrade(&self.shared),
        }
    }

    /// Wakes the forwarder now.
    pub fn wake(&self) {
        self.shared.wake();
    }

    /// Stops the thread after confirming what was sent (bounded by the I/O time-out);
    /// returns the final status.
    pub fn stop(mut self) -> ForwardStatus {
        self.stop_inner();
        self.status()
    }

    fn stop_inner(&mut self) {
        lock(&self.shared.signal).stop = true;
        self.shared.cv.notify_one();
        if let Some(h) = self.handle.take()
            && h.join().is_err()
        {
            tracing::error!("log forwarding thread panicked");
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

fn run(shared: &Shared, pump: &mut Pump) {
    loop {
        if lock(&shared.signal).stop {
            break;
        }
        let wait = pump.step(Instant::now());
        *lock(&shared.status) = pump.status().clone();
        if wait.is_zero() {
            continue;
        }
        let mut sig = lock(&shared.signal);
        if !sig.woken && !sig.stop {
            sig = shared
                .cv
                .wait_timeout(sig, wait)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        sig.woken = false;
    }
    pump.shutdown(Instant::now());
    *lock(&shared.status) = pump.status().clone();
}

/// Wakes a [`Forwarder`] when the log has made a batch durable (see [`Forwarder::waker`]).
#[derive(Clone)]
pub struct ForwardWaker {
    shared: Weak<Shared>,
}

impl fmt::Debug for ForwardWaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ForwardWaker").finish_non_exhaustive()
    }
}

impl Sink for ForwardWaker {
    fn deliver(&mut self, _entries: &[Entry]) -> Result<(), SinkError> {
        // The entries themselves are read back from the log, which is complete.
        if let Some(shared) = self.shared.upgrade() {
            shared.wake();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// G045: PL-4-2
    #[test]
    fn backlog_alarm_is_raised_at_80_percent() {
        assert_eq!(BacklogAlarm::of(0, 100), BacklogAlarm::Normal);
        assert_eq!(BacklogAlarm::of(79, 100), BacklogAlarm::Normal);
        assert_eq!(BacklogAlarm::of(80, 100), BacklogAlarm::High);
        assert_eq!(BacklogAlarm::of(99, 100), BacklogAlarm::High);
        assert_eq!(BacklogAlarm::of(100, 100), BacklogAlarm::Full);
        assert_eq!(BacklogAlarm::of(u64::MAX, u64::MAX), BacklogAlarm::Full);
        assert_eq!(BacklogAlarm::of(1, 0), BacklogAlarm::Full);
    }

    /// G045: PL-4-2
    #[test]
    fn backoff_doubles_within_bounds_with_jitter() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        for failures in 1..40 {
            let base = (min * (1u32 << (failures - 1).min(20))).min(max);
            for _ in 0..20 {
                let d = backoff(min, max, failures);
                assert!(d >= base / 2 && d <= base, "{failures}: {d:?}");
            }
        }
        // Jitter: not always the same.
        let set: std::collections::BTreeSet<_> = (0..50).map(|_| backoff(min, max, 5)).collect();
        assert!(set.len() > 1);
    }
}
