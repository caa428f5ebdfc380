//! A GPIO tamper line, through the GPIO character device (uAPI v2).
//!
//! The line is requested as an input with edge detection on both edges; its level is read once
//! when the request is made (a lid opened while the device was off counts) and then followed
//! through edge events. The line is configured active-low when `active = "low"`, so the kernel
//! reports the *logical* level: active always means tamper. Debouncing happens here
//! ([`Debouncer`]) rather than in the kernel, so the same logic holds on every chip and is
//! tested without hardware.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gpiocdev::Request;
use gpiocdev::line::{EdgeDetection, EdgeKind, Value};

use super::cfg::ActiveLevel;
use super::{
    Debounced, Debouncer, Error, InputKind, Result, STOP_CHECK, StopFlag, TamperInput, TamperSignal,
};

/// The consumer name the line is requested under (shown by `gpioinfo`).
const CONSUMER: &str = "kawal-tamper";

/// A GPIO tamper line.
pub struct GpioInput {
    name: String,
    chip: PathBuf,
    line: u32,
    active: ActiveLevel,
    debounce: Duration,
    request: Option<Request>,
}

impl std::fmt::Debug for GpioInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpioInput")
            .field("name", &self.name)
            .field("chip", &self.chip)
            .field("line", &self.line)
            .field("active", &self.active)
            .field("debounce", &self.debounce)
            .field("requested", &self.request.is_some())
            .finish()
    }
}

impl GpioInput {
    /// A line `line` on `chip`; tamper when it stays at `active` for `debounce`. The line is
    /// requested on the first [`wait`](TamperInput::wait).
    pub fn new(
        name: &str,
        chip: &Path,
        line: u32,
        active: ActiveLevel,
        debounce: Duration,
    ) -> Self {
        Self {
            name: name.to_owned(),
            chip: chip.to_path_buf(),
            line,
            active,
            debounce,
            request: None,
        }
    }

    fn err(&self, source: gpiocdev::Error) -> Error {
        Error::Gpio {
            input: self.name.clone(),
            chip: self.chip.clone(),
            line: self.line,
            source,
        }
    }

    fn request(&self) -> Result<Request> {
        let mut b = Request::builder();
        b.on_chip(&self.chip)
            .with_consumer(CONSUMER)
            .with_line(self.line)
            .as_input()
            .with_edge_detection(EdgeDetection::BothEdges);
        if self.active == ActiveLevel::Low {
            b.as_active_low();
        }
        b.request().map_err(|e| self.err(e))
    }

    fn watch(&self, req: &Request, stop: &StopFlag) -> Result<Option<TamperSignal>> {
        let origin = Instant::now();
        let mut debouncer = Debouncer::new(self.debounce);
        let level = req.lone_value().map_err(|e| self.err(e))?;
        debouncer.level(level == Value::Active, origin.elapsed());
        loop {
            if stop.is_stopped() {
                return Ok(None);
            }
            let timeout = match debouncer.poll(origin.elapsed()) {
                Debounced::Tamper => {
                    return Ok(Some(TamperSignal {
                        input: self.name.clone(),
                        kind: InputKind::Gpio,
                        reason: format!(
                            "GPIO {} line {} {} for {} ms",
                            self.chip.display(),
                            self.line,
                            match self.active {
                                ActiveLevel::High => "high",
                                ActiveLevel::Low => "low",
                            },
                            self.debounce.as_millis()
                        ),
                        seen: Instant::now(),
                    }));
                }
                Debounced::Pending { remaining } => remaining.min(STOP_CHECK),
                Debounced::Idle => STOP_CHECK,
            };
            // Drain every queued edge: after a burst, the last one is the line's level.
            let mut wait = timeout;
            while req.wait_edge_event(wait).map_err(|e| self.err(e))? {
                let event = req.read_edge_event().map_err(|e| self.err(e))?;
                debouncer.level(event.kind == EdgeKind::Rising, origin.elapsed());
                wait = Duration::ZERO;
            }
        }
    }
}

impl TamperInput for GpioInput {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> InputKind {
        InputKind::Gpio
    }

    /// Requests the line now, so a wrong chip or line shows at start.
    fn arm(&mut self) -> Result<()> {
        if self.request.is_none() {
            self.request = Some(self.request()?);
        }
        Ok(())
    }

    fn wait(&mut self, stop: &StopFlag) -> Result<Option<TamperSignal>> {
        let req = match self.request.take() {
            Some(r) => r,
            None => self.request()?,
        };
        let out = self.watch(&req, stop);
        // Keep the line requested across calls unless it failed: a new request re-reads the
        // level, so nothing is missed either way.
        if out.is_ok() {
            self.request = Some(req);
        }
        out
    }
}
