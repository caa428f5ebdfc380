//! Runs the tamper inputs on threads and the response once.
//!
//! Each input gets a plain thread (no async runtime: the response must run even when the
//! daemon's runtime is stuck). The first tamper from any input runs the [`TamperResponse`] on
//! that input's thread; any later one is only recorded. An input's thread ends after its first
//! tamper, so an input that keeps seeing tamper (a file that stays at `1`) does not spin.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{Error, ResponseReport, Result, StopFlag, TamperInput, TamperResponse, TamperSignal};

/// What the monitor saw and did.
#[derive(Debug, Clone, Default)]
pub struct MonitorReport {
    /// The response, once it has run.
    pub response: Option<ResponseReport>,
    /// Tamper findings after the first, which ran nothing: `(input, reason)`.
    pub also_seen: Vec<(String, String)>,
    /// Input faults reported: `(input, error text)`.
    pub faults: Vec<(String, String)>,
}

struct Shared {
    response: TamperResponse,
    fired: AtomicBool,
    report: Mutex<MonitorReport>,
    done: Condvar,
}

impl Shared {
    fn report(&self) -> MutexGuard<'_, MonitorReport> {
        // A panic elsewhere must not keep the report from being read.
        self.report.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn trigger(&self, signal: &TamperSignal) -> bool {
        if self
            .fired
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            self.report()
                .also_seen
                .push((signal.input.clone(), signal.reason.clone()));
            return false;
        }
        let outcome = self.response.run(signal);
        self.report().response = Some(outcome);
        self.done.notify_all();
        true
    }
}

/// The running tamper monitor.
pub struct Monitor {
    stop: StopFlag,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("threads", &self.threads.len())
            .field("fired", &self.fired())
            .finish_non_exhaustive()
    }
}

impl Monitor {
    /// Arms every input ([`TamperInput::arm`]: once this returns, signal handlers are
    /// installed and GPIO lines requested) and starts one thread per input. With no inputs it
    /// starts none; [`trigger`](Self::trigger) still works.
    pub fn start(inputs: Vec<Box<dyn TamperInput>>, response: TamperResponse) -> Result<Self> {
        let stop = StopFlag::new();
        let shared = Arc::new(Shared {
            response,
            fired: AtomicBool::new(false),
            report: Mutex::new(MonitorReport::default()),
            done: Condvar::new(),
        });
        let mut monitor = Self {
            stop,
            shared,
            threads: Vec::new(),
        };
        for mut input in inputs {
            // A fault here is reported and left to the input's thread to retry.
            let mut last_fault = None;
            if let Err(e) = input.arm() {
                monitor.shared.response.alert().fault(input.name(), &e);
                let text = e.to_string();
                monitor
                    .shared
                    .report()
                    .faults
                    .push((input.name().to_owned(), text.clone()));
                last_fault = Some(text);
            }
            let stop = monitor.stop.clone();
            let shared = Arc::clone(&monitor.shared);
            let handle = std::thread::Builder::new()
                .name(format!("tamper-{}", input.name()))
                .spawn(move || run_input(input, last_fault, &stop, &shared))
                .map_err(Error::Spawn);
            match handle {
                Ok(h) => monitor.threads.push(h),
                Err(e) => {
                    monitor.shutdown();
                    return Err(e);
                }
            }
        }
        Ok(monitor)
    }

    /// Runs the response for a finding from outside the inputs (the daemon's own checks), on
    /// the calling thread. Returns `true` if this call ran it, `false` if it had already run
    /// (the finding is then only recorded).
    pub fn trigger(&self, signal: &TamperSignal) -> bool {
        self.shared.trigger(signal)
    }

    /// Whether the response has started.
    pub fn fired(&self) -> bool {
        self.shared.fired.load(Ordering::SeqCst)
    }

    /// Waits up to `timeout` for the response to finish; its report, if it did.
    pub fn wait_response(&self, timeout: Duration) -> Option<ResponseReport> {
        let guard = self.shared.report();
        let (guard, _) = self
            .shared
            .done
            .wait_timeout_while(guard, timeout, |r| r.response.is_none())
            .unwrap_or_else(PoisonError::into_inner);
        guard.response.clone()
    }

    /// A copy of what the monitor has seen so far.
    pub fn report(&self) -> MonitorReport {
        self.shared.report().clone()
    }

    /// Stops every input thread, waits for them, and returns the final report.
    pub fn stop(mut self) -> MonitorReport {
        self.shutdown();
        self.report()
    }

    fn shutdown(&mut self) {
        self.stop.stop();
        for t in self.threads.drain(..) {
            // A panicked input thread has nothing left to report.
            let _ = t.join();
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run_input(
    mut input: Box<dyn TamperInput>,
    mut last_fault: Option<String>,
    stop: &StopFlag,
    shared: &Shared,
) {
    loop {
        match input.wait(stop) {
            Ok(Some(signal)) => {
                shared.trigger(&signal);
                return;
            }
            Ok(None) => return,
            Err(e) => {
                let text = e.to_string();
                if last_fault.as_deref() != Some(text.as_str()) {
                    shared.response.alert().fault(input.name(), &e);
                    shared
                        .report()
                        .faults
                        .push((input.name().to_owned(), text.clone()));
                    last_fault = Some(text);
                }
                if stop.sleep(input.fault_backoff()) {
                    return;
                }
            }
        }
    }
}
