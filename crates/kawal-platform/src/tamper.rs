//! Tamper detection and response (G045 PH-2-1).
//!
//! **Detection.** A device lists its tamper inputs in its configuration ([`Config`], checked
//! into a [`ValidConfig`]). Each is a [`TamperInput`]: a blocking source that returns when it
//! sees tamper. Three kinds exist:
//!
//! - [`GpioInput`]: a GPIO line (an enclosure switch), read as edge events through the GPIO
//!   character device, debounced in kawal ([`Debouncer`]) so a bounce does not count.
//! - [`FileInput`]: a file or sysfs attribute (a supervisor driver's `tamper` attribute),
//!   polled every few milliseconds because sysfs attributes do not reliably notify.
//! - [`SignalInput`]: a Unix signal (SIGUSR1, SIGUSR2 or a realtime signal) from the
//!   enclosure's supervisor process.
//!
//! A [`Monitor`] runs each input on its own thread (plain threads, independent of any async
//! runtime) and runs the [`TamperResponse`] once, on the first tamper from any input.
//!
//! **Response**, in this order, each step timed ([`ResponseReport`]):
//!
//! 1. **Destroy.** [`Destroy::destroy_keys`] wipes the key hierarchy held in memory; the
//!    sealed root blob is overwritten in place with random bytes and synced. The latency from
//!    the input seeing tamper to here is the figure PH-2-1 bounds (100 ms). Then a lock marker
//!    `tamper-locked` ([`LockInfo`], JSON) is written atomically into the data folder and the
//!    overwritten blob is truncated and unlinked, its folder synced.
//! 2. **Alert.** [`Alert::tamper`] records the event in the audit log and wakes the log
//!    forwarder.
//!
//! On the next start, [`is_locked`] finds the marker and the daemon refuses to unseal and asks
//! for re-provisioning (the sealed blob is gone anyway: the marker says why).
//!
//! # Why destroy comes before the alert
//!
//! The keys must be gone within a bounded time, and writing and forwarding a log record does
//! not have one (a full disk, a slow collector). The event is still the first thing recorded
//! after the keys are gone: nothing else is logged or done in between. It follows that the
//! alert path must not need the destroyed keys. The audit log's checkpoint signing key derives
//! from the root, so the daemon has two choices, with this trade-off:
//!
//! - **Keep an already-derived checkpoint signer** outside the hierarchy that
//!   [`Destroy::destroy_keys`] wipes, use it to append and sign the tamper event, then drop
//!   it. The event is signed like every other record, and the signing key lives a few
//!   milliseconds longer than the rest (an attacker holding the device at that moment can at
//!   most sign audit records, not decrypt the store).
//! - **Append the event unsigned, checkpoint later.** Every key is gone at step 1; the event is
//!   hash-chained to the signed records before it, but no checkpoint covers it until the
//!   device is re-provisioned, so the collector's copy (delivered over TLS) is the one to
//!   trust.
//!
//! The forwarder's TLS client key is not part of the root hierarchy's symmetric keys; if it is
//! wiped too, the event waits in the local log until re-provisioning. Whichever is chosen,
//! [`Alert::tamper`] must not block on a lock a long-running operation (an update, a store
//! write) may hold.
//!
//! # Configuration
//!
//! ```toml
//! [[tamper.input]]
//! name = "lid-switch"
//! kind = "gpio"
//! chip = "/dev/gpiochip0"
//! line = 17
//! active = "low"          # tamper when the line is low (switch opens to ground)
//! debounce-ms = 5
//!
//! [[tamper.input]]
//! name = "supervisor-attr"
//! kind = "file"
//! path = "/sys/devices/platform/supervisor/tamper"
//! value = "1"
//! interval-ms = 10
//! on-unreadable = "tamper" # or "fault": report, keep watching
//!
//! [[tamper.input]]
//! name = "supervisor-signal"
//! kind = "signal"
//! signal = "SIGUSR2"      # or "SIGUSR1", "SIGRTMIN+N"
//! ```
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

mod cfg;
mod debounce;
mod file;
mod gpio;
mod monitor;
mod response;
mod signal;

pub use cfg::{
    ActiveLevel, Config, InputConfig, MAX_DEBOUNCE, MAX_INTERVAL, OnUnreadable, SignalSpec,
    ValidConfig, ValidInput,
};
pub use debounce::{Debounced, Debouncer};
pub use file::FileInput;
pub use gpio::GpioInput;
pub use monitor::{Monitor, MonitorReport};
pub use response::{
    Alert, Destroy, LOCK_MARKER, LockInfo, ResponseReport, StepTiming, TamperResponse,
    destroy_sealed_blob, is_locked, overwrite_in_place,
};
pub use signal::SignalInput;

/// Errors of tamper detection and response.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The tamper configuration is invalid (operator misconfiguration). Every problem found is
    /// listed, one per entry, each naming the input and field.
    #[error("invalid tamper configuration: {}", problems.join("; "))]
    InvalidConfig {
        /// The problems, as `input "name": field: what is wrong`.
        problems: Vec<String>,
    },
    /// An input cannot read its source (a fault of the input, not a tamper finding).
    #[error("tamper input {input:?}: cannot read {}: {source}", path.display())]
    InputRead {
        /// The input's configured name.
        input: String,
        /// The file or device it reads.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A GPIO line cannot be requested or read.
    #[error("tamper input {input:?}: GPIO {} line {line}: {source}", chip.display())]
    Gpio {
        /// The input's configured name.
        input: String,
        /// The GPIO chip's character device.
        chip: PathBuf,
        /// The line offset on the chip.
        line: u32,
        /// The error from the GPIO character device.
        source: gpiocdev::Error,
    },
    /// A signal handler cannot be installed, or its self-pipe failed.
    #[error("tamper input {input:?}: signal {signal}: {source}")]
    Signal {
        /// The input's configured name.
        input: String,
        /// The signal, by name.
        signal: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file step of the response (overwrite, unlink, lock marker) failed.
    #[error("{step} {}: {source}", path.display())]
    Io {
        /// What was being done.
        step: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The lock marker exists but cannot be parsed. The device is still locked.
    #[error("tamper lock marker {} is unreadable: {reason}", path.display())]
    BadLockMarker {
        /// The marker's path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The random bytes for overwriting the sealed blob could not be drawn.
    #[error("cannot draw random bytes to overwrite the sealed blob: {0}")]
    Random(kawal_crypto::Error),
    /// The daemon's [`Destroy`] reported a failure.
    #[error("destroying the keys in memory failed: {reason}")]
    Destroy {
        /// What the daemon reported (never key material).
        reason: String,
    },
    /// The daemon's [`Alert`] reported a failure.
    #[error("recording the tamper event failed: {reason}")]
    Alert {
        /// What the daemon reported.
        reason: String,
    },
    /// A monitor thread could not be started.
    #[error("cannot start the tamper monitor thread: {0}")]
    Spawn(std::io::Error),
}

/// Result of tamper detection and response.
pub type Result<T> = std::result::Result<T, Error>;

/// Which kind of input saw tamper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InputKind {
    /// A GPIO line.
    Gpio,
    /// A file or sysfs attribute.
    File,
    /// A Unix signal.
    Signal,
}

impl InputKind {
    /// The name used in configuration and in the lock marker.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gpio => "gpio",
            Self::File => "file",
            Self::Signal => "signal",
        }
    }
}

/// A tamper finding from one input.
#[derive(Debug, Clone)]
pub struct TamperSignal {
    /// The input's configured name.
    pub input: String,
    /// The input's kind.
    pub kind: InputKind,
    /// What it saw, for the log and the lock marker (no secret ever reaches here).
    pub reason: String,
    /// When the input saw it: the origin of the tamper-to-keys-destroyed latency.
    pub seen: Instant,
}

/// A blocking source of tamper findings.
///
/// [`wait`](Self::wait) blocks until tamper (`Ok(Some(_))`), until `stop` is set (`Ok(None)`,
/// noticed within [`STOP_CHECK`]), or until the input cannot watch its source (`Err`, a
/// fault: the [`Monitor`] reports it and calls `wait` again after
/// [`fault_backoff`](Self::fault_backoff)).
pub trait TamperInput: Send {
    /// The input's configured name.
    fn name(&self) -> &str;
    /// The input's kind.
    fn kind(&self) -> InputKind;
    /// Opens the input's source ahead of the first [`wait`](Self::wait) (a signal handler is
    /// installed, a GPIO line requested), so problems surface at start and nothing is missed
    /// between start and the first wait. [`Monitor::start`] calls it; the default does nothing.
    fn arm(&mut self) -> Result<()> {
        Ok(())
    }
    /// Blocks until tamper, stop or a fault.
    fn wait(&mut self, stop: &StopFlag) -> Result<Option<TamperSignal>>;
    /// How long the monitor waits before calling [`wait`](Self::wait) again after a fault.
    fn fault_backoff(&self) -> std::time::Duration {
        std::time::Duration::from_secs(1)
    }
}

/// The longest an input blocks before it looks at its [`StopFlag`] again.
pub const STOP_CHECK: std::time::Duration = std::time::Duration::from_millis(50);

/// Tells input threads to return. Cloning shares the flag.
#[derive(Debug, Clone, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    /// A flag not yet set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the flag.
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether the flag is set.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Sleeps for `d` in slices of at most [`STOP_CHECK`]; returns `true` if stopped meanwhile.
    pub fn sleep(&self, d: std::time::Duration) -> bool {
        let end = Instant::now() + d;
        loop {
            if self.is_stopped() {
                return true;
            }
            let now = Instant::now();
            if now >= end {
                return false;
            }
            std::thread::sleep((end - now).min(STOP_CHECK));
        }
    }
}
