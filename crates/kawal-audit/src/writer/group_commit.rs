//! Group commit: the queue between appenders and the writer thread, the writer's loop, and
//! how answers get back to waiting appenders.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};

use super::Counters;
use super::state::LogState;
use crate::entry::Event;
use crate::error::{Error, Result};
use crate::sink::SinkWorker;

/// What an appender asks of the writer.
#[derive(Debug)]
pub(crate) enum Body {
    Events(Vec<Event>),
    Checkpoint,
}

/// Where an appender waits for its answer.
#[derive(Default)]
struct Slot {
    answer: Mutex<Option<Result<Vec<u64>>>>,
    ready: Condvar,
}

impl Slot {
    fn put(&self, r: Result<Vec<u64>>) {
        *lock(&self.answer) = Some(r);
        self.ready.notify_one();
    }

    fn wait(&self) -> Result<Vec<u64>> {
        let mut answer = lock(&self.answer);
        loop {
            if let Some(r) = answer.take() {
                return r;
            }
            answer = self
                .ready
                .wait(answer)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

/// A caller's answer, called on the ack thread once the batch is durable (or failed).
pub(crate) type Callback = Box<dyn FnOnce(Result<Vec<u64>>) + Send>;

/// Where the answer goes: a waiting appender's [`Slot`], or a callback for appenders that
/// must not block (an async runtime's worker threads).
enum Target {
    Slot(Arc<Slot>),
    Callback(Callback),
}

impl Target {
    fn answer(self, r: Result<Vec<u64>>) {
        match self {
            Self::Slot(slot) => slot.put(r),
            Self::Callback(f) => f(r),
        }
    }
}

/// The writer's end of a [`Target`]. Dropped unanswered (the writer thread died), it answers
/// [`Error::Closed`], so no appender waits forever.
struct Reply(Option<Target>);

impl Reply {
    fn send(mut self, r: Result<Vec<u64>>) {
        if let Some(target) = self.0.take() {
            target.answer(r);
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(target) = self.0.take() {
            target.answer(Err(Error::Closed));
        }
    }
}

pub(super) struct Request {
    body: Body,
    reply: Reply,
}

#[derive(Default)]
pub(super) struct Queue {
    reqs: Vec<Request>,
    pub shutdown: bool,
    failed: Option<Arc<Error>>,
    /// Whether the writer is waiting for work (else nobody needs waking: it will look).
    writer_idle: bool,
}

pub(super) struct Shared {
    pub queue: Mutex<Queue>,
    pub wake: Condvar,
    pub counters: Arc<Counters>,
}

impl Shared {
    /// Queues `body` for the writer and waits for the answer.
    pub(super) fn request(&self, body: Body) -> Result<Vec<u64>> {
        let slot = Arc::new(Slot::default());
        self.enqueue(body, Target::Slot(Arc::clone(&slot)))?;
        slot.wait()
    }

    /// Queues `body` for the writer and returns at once; `then` gets the answer.
    pub(super) fn submit(&self, body: Body, then: Callback) {
        if let Err((e, Target::Callback(then))) =
            self.enqueue_or_return(body, Target::Callback(then))
        {
            then(Err(e));
        }
    }

    fn enqueue(&self, body: Body, target: Target) -> Result<()> {
        self.enqueue_or_return(body, target).map_err(|(e, _)| e)
    }

    /// Queues a request; on refusal (the log failed or is closing) gives the target back.
    fn enqueue_or_return(
        &self,
        body: Body,
        target: Target,
    ) -> std::result::Result<(), (Error, Target)> {
        let wake = {
            let mut q = lock(&self.queue);
            if let Some(cause) = &q.failed {
                let e = Error::LogFailed {
                    cause: Arc::clone(cause),
                };
                return Err((e, target));
            }
            if q.shutdown {
                return Err((Error::Closed, target));
            }
            q.reqs.push(Request {
                body,
                reply: Reply(Some(target)),
            });
            // Only a waiting writer needs a wake-up call; a busy one takes the queue next.
            std::mem::take(&mut q.writer_idle)
        };
        if wake {
            self.wake.notify_one();
        }
        Ok(())
    }
}

/// Locks `m`, carrying on if another thread panicked while holding it (the data guarded here
/// stays consistent at every unlock).
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The writer thread: group commit until shutdown, then a final checkpoint; then the sinks
/// finish delivering what was queued for them, before `close` returns.
pub(super) fn run_writer(
    shared: &Shared,
    mut state: LogState,
    sinks: Option<SinkWorker>,
) -> Result<()> {
    // Waking each appender is a system call; an ack thread does it while the writer goes on
    // with the next batch, which keeps batches large and the disk busy.
    let (ack_tx, ack_rx) = mpsc::channel::<AckBatch>();
    let acker = std::thread::Builder::new()
        .name("kawal-audit-acks".into())
        .spawn(move || {
            for batch in ack_rx {
                for (reply, result) in batch {
                    reply.send(result);
                }
            }
        });
    let result = match acker {
        Ok(acker) => {
            let result = writer_loop(shared, &mut state, sinks.as_ref(), &Acks::Thread(ack_tx));
            if acker.join().is_err() {
                tracing::error!("audit ack thread panicked");
            }
            result
        }
        Err(e) => {
            tracing::warn!(error = %e, "no audit ack thread; the writer acks itself");
            writer_loop(shared, &mut state, sinks.as_ref(), &Acks::Inline)
        }
    };
    drop(sinks);
    result
}

/// The answers for one batch: each appender's reply channel and result.
type AckBatch = Vec<(Reply, Result<Vec<u64>>)>;

/// How the writer hands results back to appenders.
enum Acks {
    Thread(mpsc::Sender<AckBatch>),
    Inline,
}

impl Acks {
    fn send(&self, batch: AckBatch) {
        let batch = match self {
            Self::Thread(tx) => match tx.send(batch) {
                Ok(()) => return,
                // The ack thread is gone: answer here rather than leave anyone waiting.
                Err(mpsc::SendError(batch)) => batch,
            },
            Self::Inline => batch,
        };
        for (reply, result) in batch {
            reply.send(result);
        }
    }
}

fn writer_loop(
    shared: &Shared,
    state: &mut LogState,
    sinks: Option<&SinkWorker>,
    acks: &Acks,
) -> Result<()> {
    let counters = &shared.counters;
    loop {
        let (reqs, shutdown, failed) = {
            let mut q = lock(&shared.queue);
            while q.reqs.is_empty() && !q.shutdown {
                q.writer_idle = true;
                q = shared
                    .wake
                    .wait(q)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            q.writer_idle = false;
            (std::mem::take(&mut q.reqs), q.shutdown, q.failed.clone())
        };
        if let Some(cause) = failed {
            acks.send(fail_all(reqs, &cause));
            if shutdown {
                return Err(Error::LogFailed { cause });
            }
            continue;
        }
        if reqs.is_empty() && !shutdown {
            continue;
        }
        let bodies: Vec<&Body> = reqs.iter().map(|r| &r.body).collect();
        match state.commit(&bodies, shutdown) {
            Ok(done) => {
                counters.entries.fetch_add(done.written, Ordering::Relaxed);
                counters
                    .checkpoints
                    .fetch_add(done.checkpoints, Ordering::Relaxed);
                counters.batches.fetch_add(1, Ordering::Relaxed);
                counters
                    .anchor_failures
                    .fetch_add(u64::from(done.anchor_failed), Ordering::Relaxed);
                acks.send(
                    reqs.into_iter()
                        .zip(done.seqs)
                        .map(|(r, s)| (r.reply, Ok(s)))
                        .collect(),
                );
                if let Some(sinks) = sinks
                    && !done.entries.is_empty()
                    && !sinks.offer(done.entries.into())
                {
                    counters.sink_dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("audit sink queue full; batch not forwarded");
                }
                if shutdown {
                    return Ok(());
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "audit log write failed; log is now failed");
                let cause = Arc::new(e);
                lock(&shared.queue).failed = Some(Arc::clone(&cause));
                acks.send(fail_all(reqs, &cause));
                if shutdown {
                    return Err(Error::LogFailed { cause });
                }
            }
        }
    }
}

/// Every request answered with the log's failure.
fn fail_all(reqs: Vec<Request>, cause: &Arc<Error>) -> AckBatch {
    reqs.into_iter()
        .map(|r| {
            (
                r.reply,
                Err(Error::LogFailed {
                    cause: Arc::clone(cause),
                }),
            )
        })
        .collect()
}
