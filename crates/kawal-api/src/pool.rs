//! A bounded pool for Argon2id verification (G045 AU-1-3): a flood of wrong passwords can use at
//! most `workers` cores, and waits in a short queue; past that, attempts fail fast with "busy"
//! instead of piling up memory and latency for everyone.
//!
//! The workers are the pool's own threads at a lower CPU priority (nice 10): on a small
//! gateway whose cores a flood keeps busy hashing, the API, the console and the MQTT
//! sessions still get the CPU first.
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tokio::sync::oneshot;

/// The pool is full: try again shortly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// The niceness of the verification threads: below the daemon's other work.
const WORKER_NICE: i32 = 10;

type Job = Box<dyn FnOnce() + Send>;

/// Jobs waiting for a worker: reserved callers' first, so the management network's login
/// does not wait behind a flood's queue.
#[derive(Default)]
struct Lanes {
    reserved: VecDeque<Job>,
    others: VecDeque<Job>,
    closed: bool,
}

#[derive(Default)]
struct Jobs {
    lanes: Mutex<Lanes>,
    ready: Condvar,
}

impl Jobs {
    fn lock(&self) -> MutexGuard<'_, Lanes> {
        // Jobs run outside the lock, so a poisoned lock holds consistent queues.
        self.lanes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The next job, reserved lane first; `None` once the pool is dropped.
    fn next(&self) -> Option<Job> {
        let mut lanes = self.lock();
        loop {
            if let Some(job) = lanes
                .reserved
                .pop_front()
                .or_else(|| lanes.others.pop_front())
            {
                return Some(job);
            }
            if lanes.closed {
                return None;
            }
            lanes = self
                .ready
                .wait(lanes)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    fn push(&self, reserved: bool, job: Job) {
        let mut lanes = self.lock();
        if reserved {
            lanes.reserved.push_back(job);
        } else {
            lanes.others.push_back(job);
        }
        drop(lanes);
        self.ready.notify_one();
    }
}

/// Runs CPU-heavy password checks on `workers` low-priority threads.
pub struct VerifyPool {
    jobs: Arc<Jobs>,
    admitted: Arc<AtomicUsize>,
    capacity: usize,
    reserve: usize,
    refused: AtomicU64,
}

/// Gives back an admission when the job (or the caller that gave up) is done with it.
struct Admission(Arc<AtomicUsize>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for VerifyPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyPool")
            .field("capacity", &self.capacity)
            .field("reserve", &self.reserve)
            .field("refused", &self.refused())
            .finish_non_exhaustive()
    }
}

impl Drop for VerifyPool {
    fn drop(&mut self) {
        // Workers finish what is queued, then stop.
        self.jobs.lock().closed = true;
        self.jobs.ready.notify_all();
    }
}

/// One worker: lowers its own priority, then runs jobs until the pool is dropped.
fn worker(jobs: &Jobs) {
    lower_priority();
    while let Some(job) = jobs.next() {
        // A panicking check must not take the worker with it.
        drop(std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)));
    }
}

/// Best effort: a thread that cannot lower its priority still works, at normal priority.
fn lower_priority() {
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), WORKER_NICE) {
        tracing::warn!(error = %e, "could not lower the priority of a password-check worker");
    }
}

impl VerifyPool {
    /// `workers` jobs run at once; `queue` more may wait.
    pub fn new(workers: usize, queue: usize) -> Self {
        let workers = workers.max(1);
        let jobs = Arc::new(Jobs::default());
        for i in 0..workers {
            let jobs = Arc::clone(&jobs);
            let spawned = std::thread::Builder::new()
                .name(format!("kawal-verify-{i}"))
                .spawn(move || worker(&jobs));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a password-check worker");
            }
        }
        Self {
            jobs,
            admitted: Arc::new(AtomicUsize::new(0)),
            capacity: workers + queue,
            reserve: workers,
            refused: AtomicU64::new(0),
        }
    }

    /// Attempts refused because the pool was full, since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Runs `job` on a worker once one is free, or refuses at once when the queue is full.
    /// The job keeps its place until it finishes, even if the caller is gone, so a
    /// disconnecting client cannot start more work than the pool allows.
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        self.run_as(false, job).await
    }

    /// As [`run`](Self::run); `reserved` callers (the exempt management network) may also use
    /// `workers` more places, which others cannot fill, so a flood from elsewhere does not
    /// turn them away as busy; their jobs also go before others' queued jobs.
    pub async fn run_as<T: Send + 'static>(
        &self,
        reserved: bool,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let cap = if reserved {
            self.capacity + self.reserve
        } else {
            self.capacity
        };
        if self.admitted.fetch_add(1, Ordering::AcqRel) >= cap {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Busy);
        }
        let admission = Admission(Arc::clone(&self.admitted));
        let (done, answer) = oneshot::channel();
        let boxed: Job = Box::new(move || {
            let out = job();
            drop(admission);
            // The caller may have gone; the work is done either way.
            let _ = done.send(out);
        });
        self.jobs.push(reserved, boxed);
        answer.await.map_err(|_| Busy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refuses_past_capacity_and_recovers() {
        let pool = Arc::new(VerifyPool::new(1, 1));
        let slow = |ms| move || std::thread::sleep(Duration::from_millis(ms));
        let a = tokio::spawn({
            let p = Arc::clone(&pool);
            async move { p.run(slow(300)).await }
        });
        let b = tokio::spawn({
            let p = Arc::clone(&pool);
            async move { p.run(slow(10)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(pool.run(|| ()).await, Err(Busy));
        assert_eq!(pool.refused(), 1);
        assert!(a.await.is_ok_and(|r| r.is_ok()));
        assert!(b.await.is_ok_and(|r| r.is_ok()));
        assert_eq!(pool.run(|| 7).await, Ok(7));
    }

    /// G045: AU-1-3
    /// A reserved caller's job runs before the others' queued jobs, and past their capacity.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reserved_jobs_go_first() {
        let pool = Arc::new(VerifyPool::new(1, 3));
        let order = Arc::new(Mutex::new(Vec::new()));
        let job = |tag: &'static str, ms: u64| {
            let order = Arc::clone(&order);
            move || {
                std::thread::sleep(Duration::from_millis(ms));
                order.lock().unwrap().push(tag);
            }
        };
        let mut waits = Vec::new();
        for (tag, ms) in [("busy", 200), ("o1", 1), ("o2", 1), ("o3", 1)] {
            let p = Arc::clone(&pool);
            let j = job(tag, ms);
            waits.push(tokio::spawn(async move { p.run(j).await }));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(pool.run(|| ()).await, Err(Busy), "others are at capacity");
        let r = pool.run_as(true, job("reserved", 1)).await;
        assert_eq!(r, Ok(()));
        for w in waits {
            assert!(w.await.is_ok_and(|r| r.is_ok()));
        }
        let order = order.lock().unwrap().clone();
        assert_eq!(order, ["busy", "reserved", "o1", "o2", "o3"]);
    }
}
