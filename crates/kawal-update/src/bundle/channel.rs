//! A bridge from async chunks (a TUF target being downloaded) to the blocking [`std::io::Read`]
//! the unpacker wants, with bounded memory: at most `capacity` chunks are in flight.
//!
//! The end of the stream must be *declared*: [`ChunkSender::finish`] is called only once the
//! producer has verified the whole target (its signed length and SHA-256). A sender dropped
//! without `finish` — a cancelled task, a panic — reads as an error, never as a clean end, so an
//! unverified stream can never unpack successfully.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc;
use tough::Bytes;

type Reason = Box<dyn std::error::Error + Send + Sync>;

#[derive(Default)]
struct Shared {
    failure: Mutex<Option<Reason>>,
    finished: AtomicBool,
}

/// Creates a channel holding at most `capacity` chunks (at least one).
#[must_use]
pub fn chunk_channel(capacity: usize) -> (ChunkSender, ChunkReader) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let shared = Arc::new(Shared::default());
    (
        ChunkSender {
            tx,
            shared: Arc::clone(&shared),
        },
        ChunkReader {
            rx,
            current: Bytes::new(),
            shared,
            failed: false,
        },
    )
}

/// The reader side has gone away (the unpacker stopped, usually after a refusal): stop sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the bundle reader has stopped")]
pub struct Closed;

/// The async end: feeds chunks, then declares the end or a failure.
#[derive(Debug)]
pub struct ChunkSender {
    tx: mpsc::Sender<Bytes>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("finished", &self.finished.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

impl ChunkSender {
    /// Sends one chunk, waiting while the channel is full. Empty chunks are skipped.
    pub async fn send(&self, chunk: impl Into<Bytes>) -> Result<(), Closed> {
        let chunk = chunk.into();
        if chunk.is_empty() {
            return Ok(());
        }
        self.tx.send(chunk).await.map_err(|_| Closed)
    }

    /// Declares the stream complete and verified: the reader returns end-of-file once it has
    /// delivered every chunk.
    pub fn finish(self) {
        self.shared.finished.store(true, Ordering::Release);
    }

    /// Declares the stream failed: the reader returns an error carrying `reason` (an
    /// `io::Error` whose inner error is `reason`, for the caller to downcast) instead of the
    /// chunks still queued.
    pub fn fail(self, reason: impl Into<Reason>) {
        let mut slot = self
            .shared
            .failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *slot = Some(reason.into());
    }
}

/// The blocking end, for [`super::unpack`] running under `tokio::task::spawn_blocking`.
///
/// # Panics
/// Reading panics (inside tokio) when called from an async task rather than a blocking thread;
/// that is a misuse by the caller, never caused by the data.
#[derive(Debug)]
pub struct ChunkReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
    shared: Arc<Shared>,
    failed: bool,
}

impl ChunkReader {
    fn failure(&mut self) -> Option<io::Error> {
        if self.failed {
            return Some(io::Error::other("the update stream failed"));
        }
        let reason = self
            .shared
            .failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        self.failed = true;
        Some(io::Error::other(reason))
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // A declared failure wins over chunks still queued: they are not worth reading.
        if let Some(e) = self.failure() {
            return Err(e);
        }
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => {
                    if let Some(e) = self.failure() {
                        return Err(e);
                    }
                    if self.shared.finished.load(Ordering::Acquire) {
                        return Ok(0);
                    }
                    self.failed = true;
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the update stream stopped before its end was verified",
                    ));
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}
