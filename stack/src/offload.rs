//! The processor pool: CPU-heavy closures (hashing, compression, crypto) run on worker
//! threads so one slow request never stalls the other connections of an engine's loop.
//!
//! Jobs go to a shared bounded queue (crossbeam); each result comes back to the engine
//! that owns the connection through that engine's own lock-free queue, and is handed to
//! `App::on_done` from the loop, on the connection's core. A result for a connection that
//! closed meanwhile is dropped (and counted). Every queue is bounded: a full one is an
//! error the app sees (`OffloadError`), never unbounded memory.

use crate::app::ConnId;
use crossbeam::channel::{bounded, Sender, TrySendError};
use crossbeam::queue::ArrayQueue;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

type Job = Box<dyn FnOnce() + Send>;

/// A pool of worker threads shared by the engines of a process.
pub struct Pool {
    jobs: Option<Sender<Job>>,
}

impl Pool {
    /// `threads` workers taking jobs from a queue of at most `queue` waiting jobs.
    pub fn new(threads: usize, queue: usize) -> Pool {
        let (tx, rx) = bounded::<Job>(queue.max(1));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("c10m-pool-{i}"))
                .spawn(move || {
                    for job in rx.iter() {
                        job();
                    }
                })
                .expect("spawning a pool thread");
        }
        Pool { jobs: Some(tx) }
    }

    /// An engine's port into this pool, delivering results of type `D` back to it; at
    /// most `in_flight` jobs of that engine queued or running at once.
    pub fn port<D: Send + 'static>(&self, in_flight: usize) -> OffloadPort<D> {
        OffloadPort {
            jobs: self.jobs.clone().expect("pool is running"),
            results: Arc::new(ArrayQueue::new(in_flight.max(1))),
            in_flight: 0,
            wake: Arc::new(WakeState::default()),
        }
    }
}

impl Drop for Pool {
    /// Workers end when the last sender is gone: the pool's and every engine's port. They
    /// are not joined here, because an engine (holding a port) may outlive the pool
    /// value; a worker finishes the job it runs and then exits by itself.
    fn drop(&mut self) {
        self.jobs.take();
    }
}

/// Why a job was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffloadError {
    /// No pool is attached to this engine.
    NoPool,
    /// This engine already has its maximum of jobs in flight.
    TooManyInFlight,
    /// The pool's job queue is full.
    QueueFull,
}

impl std::fmt::Display for OffloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OffloadError::NoPool => write!(f, "no processor pool attached"),
            OffloadError::TooManyInFlight => write!(f, "too many jobs in flight on this engine"),
            OffloadError::QueueFull => write!(f, "processor pool queue is full"),
        }
    }
}
impl std::error::Error for OffloadError {}

/// Lets a worker wake the engine's loop when it sleeps (adaptive idle).
#[derive(Default)]
pub struct WakeState {
    /// Set by the engine just before it blocks; a worker that sees it calls `notify`.
    pub sleeping: AtomicBool,
    notify: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl WakeState {
    pub(crate) fn set_notify(&self, f: Box<dyn Fn() + Send + Sync>) {
        let _ = self.notify.set(f);
    }
    fn wake(&self) {
        // Pairs with the engine's SeqCst store of `sleeping` and its re-check of the
        // results queue: either it sees our result, or we see it sleeping.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) {
            if let Some(n) = self.notify.get() {
                n();
            }
        }
    }
}

/// One engine's end of the pool.
pub struct OffloadPort<D> {
    jobs: Sender<Job>,
    results: Arc<ArrayQueue<(ConnId, D)>>,
    in_flight: usize,
    pub(crate) wake: Arc<WakeState>,
}

impl<D: Send + 'static> OffloadPort<D> {
    pub(crate) fn submit(
        &mut self,
        id: ConnId,
        job: impl FnOnce() -> D + Send + 'static,
    ) -> Result<(), OffloadError> {
        // The results queue holds `capacity` entries; bounding the jobs in flight by it
        // means a worker's push can never fail.
        if self.in_flight >= self.results.capacity() {
            return Err(OffloadError::TooManyInFlight);
        }
        let results = self.results.clone();
        let wake = self.wake.clone();
        let boxed: Job = Box::new(move || {
            let d = job();
            let pushed = results.push((id, d)).is_ok();
            debug_assert!(
                pushed,
                "in-flight bound keeps the results queue from filling"
            );
            wake.wake();
        });
        match self.jobs.try_send(boxed) {
            Ok(()) => {
                self.in_flight += 1;
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(OffloadError::QueueFull),
            Err(TrySendError::Disconnected(_)) => Err(OffloadError::NoPool),
        }
    }

    /// Take one finished result.
    pub(crate) fn pop(&mut self) -> Option<(ConnId, D)> {
        let r = self.results.pop()?;
        self.in_flight -= 1;
        Some(r)
    }

    pub(crate) fn has_results(&self) -> bool {
        !self.results.is_empty()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}
