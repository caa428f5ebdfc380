//! Sinks: other destinations for durable entries, such as a remote syslog server over TLS
//! (RFC 5425, a later issue).
//!
//! The writer gives each durable batch (after its `fdatasync`) to a thread that delivers it
//! to every sink in turn. The local log never waits for a sink: if the sinks fall behind by
//! [`crate::AuditOptions::sink_queue_batches`] batches, newer batches are not queued for them,
//! and every failure or drop is counted in [`crate::Stats`] and logged. The local log stays
//! complete, so a forwarding sink can resend what it missed by reading it
//! ([`crate::read_entries`] with `since_seq`).

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use crate::entry::Entry;
use crate::error::{Error, Result};
use crate::writer::Counters;

/// Why a sink could not take a batch.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The destination cannot be reached now (connection refused, TLS failure, time-out).
    #[error("sink {sink} unavailable: {reason}")]
    Unavailable {
        /// The sink's name.
        sink: String,
        /// What failed.
        reason: String,
    },
    /// The destination refused the entries.
    #[error("sink {sink} rejected the batch: {reason}")]
    Rejected {
        /// The sink's name.
        sink: String,
        /// Why.
        reason: String,
    },
}

/// A destination for durable entries.
pub trait Sink: Send {
    /// Delivers `entries` (one durable batch, in seq order). Called from the sink thread only.
    fn deliver(&mut self, entries: &[Entry]) -> Result<(), SinkError>;
}

/// A sink that keeps entries in memory; for tests and the demo.
#[derive(Debug, Clone, Default)]
pub struct MemorySink {
    entries: Arc<Mutex<Vec<Entry>>>,
    fail: Arc<Mutex<bool>>,
}

impl MemorySink {
    /// An empty sink; clones share its contents.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of every entry delivered so far.
    pub fn entries(&self) -> Vec<Entry> {
        self.entries.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Makes every later delivery fail (or succeed again), to test failure handling.
    pub fn set_failing(&self, fail: bool) {
        if let Ok(mut f) = self.fail.lock() {
            *f = fail;
        }
    }
}

impl Sink for MemorySink {
    fn deliver(&mut self, entries: &[Entry]) -> Result<(), SinkError> {
        if self.fail.lock().map(|f| *f).unwrap_or(true) {
            return Err(SinkError::Unavailable {
                sink: "memory".into(),
                reason: "set failing".into(),
            });
        }
        match self.entries.lock() {
            Ok(mut all) => {
                all.extend_from_slice(entries);
                Ok(())
            }
            Err(_) => Err(SinkError::Rejected {
                sink: "memory".into(),
                reason: "poisoned".into(),
            }),
        }
    }
}

/// The sink thread and the queue to it. Dropping it lets the thread deliver what is queued,
/// then waits for it.
pub(crate) struct SinkWorker {
    tx: Option<mpsc::SyncSender<Arc<[Entry]>>>,
    handle: Option<JoinHandle<()>>,
}

impl fmt::Debug for SinkWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkWorker").finish_non_exhaustive()
    }
}

impl SinkWorker {
    /// Queues a durable batch without waiting; `false` if the queue is full.
    pub fn offer(&self, batch: Arc<[Entry]>) -> bool {
        self.tx
            .as_ref()
            .is_some_and(|tx| tx.try_send(batch).is_ok())
    }
}

impl Drop for SinkWorker {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(h) = self.handle.take()
            && h.join().is_err()
        {
            tracing::error!("audit sink thread panicked");
        }
    }
}

/// Starts the sink thread, if there are sinks.
pub(crate) fn spawn(
    mut sinks: Vec<Box<dyn Sink>>,
    capacity: usize,
    counters: &Arc<Counters>,
) -> Result<Option<SinkWorker>> {
    if sinks.is_empty() {
        return Ok(None);
    }
    let (tx, rx) = mpsc::sync_channel::<Arc<[Entry]>>(capacity.max(1));
    let counters = Arc::clone(counters);
    let handle = std::thread::Builder::new()
        .name("kawal-audit-sinks".into())
        .spawn(move || {
            for batch in rx {
                let mut ok = true;
                for sink in &mut sinks {
                    if let Err(e) = sink.deliver(&batch) {
                        ok = false;
                        counters.sink_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "audit sink delivery failed");
                    }
                }
                if ok {
                    counters.sink_delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .map_err(|e| Error::io("spawn sink thread", "audit", e))?;
    Ok(Some(SinkWorker {
        tx: Some(tx),
        handle: Some(handle),
    }))
}
