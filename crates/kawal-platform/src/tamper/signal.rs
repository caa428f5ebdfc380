//! A Unix signal from the enclosure's supervisor as a tamper input.
//!
//! The handler (installed through `signal-hook`, which holds the one `unsafe` needed) writes a
//! byte to a self-pipe; the input's thread blocks reading the other end, so it wakes at once.
//!
//! Limits, for the daemon author: any process allowed to signal the daemon (root, or the same
//! user) can trigger the response, so that user must be the daemon's alone. The handler is
//! installed when [`super::Monitor::start`] arms the input: until then the signal's default
//! action (terminate) applies, so the daemon should start its monitor before it tells the
//! supervisor it is ready. Once installed, the handler stays for the life of the process (dropping the
//! input only disconnects it), so the signal no longer terminates the daemon.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::time::Instant;

use signal_hook::SigId;

use super::cfg::SignalSpec;
use super::{Error, InputKind, Result, STOP_CHECK, StopFlag, TamperInput, TamperSignal};

/// A Unix signal tamper input.
#[derive(Debug)]
pub struct SignalInput {
    name: String,
    signal: SignalSpec,
    pipe: Option<(UnixStream, SigId)>,
}

impl SignalInput {
    /// Watches `signal`. The handler is installed by [`arm`](TamperInput::arm) (which
    /// [`super::Monitor::start`] calls) or on the first [`wait`](TamperInput::wait).
    pub fn new(name: &str, signal: SignalSpec) -> Self {
        Self {
            name: name.to_owned(),
            signal,
            pipe: None,
        }
    }

    fn err(&self, source: std::io::Error) -> Error {
        Error::Signal {
            input: self.name.clone(),
            signal: self.signal.name().to_owned(),
            source,
        }
    }
}

impl Drop for SignalInput {
    fn drop(&mut self) {
        if let Some((_, id)) = self.pipe.take() {
            signal_hook::low_level::unregister(id);
        }
    }
}

impl TamperInput for SignalInput {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> InputKind {
        InputKind::Signal
    }

    /// Installs the handler (idempotent); from here on the signal is caught, not fatal.
    fn arm(&mut self) -> Result<()> {
        if self.pipe.is_none() {
            let (read, write) = UnixStream::pair().map_err(|e| self.err(e))?;
            read.set_read_timeout(Some(STOP_CHECK))
                .map_err(|e| self.err(e))?;
            let id = signal_hook::low_level::pipe::register(self.signal.number(), write)
                .map_err(|e| self.err(e))?;
            self.pipe = Some((read, id));
        }
        Ok(())
    }

    fn wait(&mut self, stop: &StopFlag) -> Result<Option<TamperSignal>> {
        self.arm()?;
        let Some((read, _)) = self.pipe.as_mut() else {
            return Ok(None);
        };
        let mut buf = [0u8; 16];
        loop {
            if stop.is_stopped() {
                return Ok(None);
            }
            match read.read(&mut buf) {
                Ok(0) => {
                    // The write end is gone: drop the handler so the next wait installs anew.
                    if let Some((_, id)) = self.pipe.take() {
                        signal_hook::low_level::unregister(id);
                    }
                    let e = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
                    return Err(self.err(e));
                }
                Ok(_) => {
                    return Ok(Some(TamperSignal {
                        input: self.name.clone(),
                        kind: InputKind::Signal,
                        reason: format!("signal {} received", self.signal.name()),
                        seen: Instant::now(),
                    }));
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(self.err(e)),
            }
        }
    }
}
