//! Segments of unbounded queues made ahead of need, off the sending path
//! (chain.rs asks for them; protocol in hw/SPEC.md §11): what one chain
//! handle shares with its preparations ([`Spares`]), and the one background
//! thread per process, started on first use, that runs them and unmaps the
//! segments senders have moved past.
//!
//! The thread does not stay pinned to the core of a pinned sending thread
//! that started it (it takes the main thread's CPUs), and runs at the
//! priority it inherits.
//!
//! The thread ends after ten seconds without work.
//!
//! A preparation throws away an offer that can no longer follow the chain,
//! makes the next segment (created, its memory allocated, initialised, its
//! bytes counted against the limit) and offers it in `spare_segment`;
//! losing that race to another process's offer, it removes its own. Then
//! it faults the offer in, part by part, ahead of the sender. The
//! handle keeps its offer mapped, so that the send that takes it opens
//! nothing; when the handle is dropped it waits for a running preparation
//! and takes back and removes an offer nobody took.
#![warn(clippy::arithmetic_side_effects)]

use crate::chain::{self, Segment, SegmentStore, Size};
use crate::mpmc::MpmcGeometry;
use crate::sync::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Longest a send that finds the newest segment full waits for its
/// handle's preparation, already running, to offer the next one, before it
/// makes one itself (making a 64 MiB segment takes tens of milliseconds,
/// more on a loaded machine; waiting for one half made is never longer).
const WAIT_RUNNING: Duration = Duration::from_millis(500);
/// Longest dropping a handle waits for its running preparation, so that
/// nothing made for it outlives it.
const WAIT_CLOSE: Duration = Duration::from_secs(10);

/// Where preparations run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Runner {
    /// On this process's background thread.
    #[cfg(not(loom))]
    Background,
    /// At once, inside the send that asks (tests: deterministic).
    #[cfg(test)]
    Inline,
}

/// Where a handle's one preparation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Job {
    Idle,
    Queued,
    Running,
}

#[derive(Debug)]
struct State<Seg> {
    job: Job,
    /// The segment the next preparation makes a successor for; taken when
    /// it starts. None: nothing asked (or the ask was withdrawn).
    target: Option<Arc<Seg>>,
    /// The handle is gone: nothing more is made or offered for it.
    closed: bool,
    /// The segment this handle's preparation offered, mapped; let go once
    /// someone took the offer.
    made: Option<Arc<Seg>>,
    /// The running preparation has made its offer and only faults it in
    /// now: a send need not wait for it.
    offered: bool,
}

/// What one chain handle shares with its preparations.
#[derive(Debug)]
pub(crate) struct Spares<Seg> {
    state: Mutex<State<Seg>>,
    changed: Condvar,
    runner: Runner,
    /// Segments offered and thrown away (read without the lock).
    prepared: AtomicU64,
    discarded: AtomicU64,
}

impl<Seg: Segment> Spares<Seg> {
    /// Preparations for one handle, run by `runner`.
    pub(crate) fn new(runner: Runner) -> Arc<Spares<Seg>> {
        Arc::new(Spares {
            state: Mutex::new(State {
                job: Job::Idle,
                target: None,
                closed: false,
                made: None,
                offered: false,
            }),
            changed: Condvar::new(),
            runner,
            prepared: AtomicU64::new(0),
            discarded: AtomicU64::new(0),
        })
    }

    /// The state. A preparation that panicked left it consistent (every
    /// change is one assignment), so a poisoned lock is taken as it is.
    fn lock(&self) -> MutexGuard<'_, State<Seg>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks for the segment after `after` (the newest, just pushed into) to
    /// be made and offered. A preparation queued or running takes
    /// the ask when it is done with the one in hand.
    pub(crate) fn request<S: SegmentStore<Seg = Seg>>(
        self: &Arc<Self>,
        store: &S,
        base: &MpmcGeometry,
        after: &Arc<Seg>,
    ) {
        {
            let mut st = self.lock();
            if st.closed {
                return;
            }
            st.target = Some(after.clone());
            if st.job != Job::Idle {
                return;
            }
            st.job = Job::Queued;
        }
        // (No runner exists in a loom build outside the tests.)
        #[cfg_attr(loom, allow(unused_variables))]
        let job = {
            let (store, base, spares) = (store.clone(), *base, self.clone());
            move || prepare_asked(&store, &base, &spares)
        };
        match self.runner {
            #[cfg(not(loom))]
            Runner::Background => {
                if let Err(job) = submit(Box::new(job)) {
                    drop(job);
                    self.set_idle();
                }
            }
            #[cfg(test)]
            Runner::Inline => job(),
        }
    }

    fn set_idle(&self) {
        self.lock().job = Job::Idle;
        self.changed.notify_all();
    }

    /// The segment numbered `k` if this handle made it (its offer was just
    /// taken by this handle): mapped already.
    pub(crate) fn take_made(&self, k: u64) -> Option<Arc<Seg>> {
        let mut st = self.lock();
        if st.made.as_ref().is_some_and(|m| m.number() == k) {
            st.made.take()
        } else {
            None
        }
    }

    /// For a send that found the newest segment full with no offer to
    /// take: if this handle's preparation is running and has not offered
    /// its segment yet, waits for it (bounded; true); if one is only
    /// queued, or the running one only faults in an offer already taken,
    /// withdraws the ask (the send makes the segment itself, and nothing
    /// is made twice).
    pub(crate) fn wait_running(&self) -> bool {
        let mut st = self.lock();
        if st.job != Job::Running || st.offered {
            st.target = None;
            return false;
        }
        let until = Instant::now().checked_add(WAIT_RUNNING);
        while st.job == Job::Running && !st.offered {
            let left = until.map_or(WAIT_RUNNING, |t| {
                t.saturating_duration_since(Instant::now())
            });
            if left.is_zero() {
                break;
            }
            st = self
                .changed
                .wait_timeout(st, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// Segments offered and thrown away by this handle's preparations.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.prepared.load(Ordering::Relaxed),
            self.discarded.load(Ordering::Relaxed),
        )
    }

    /// Lets go of `seg`, which the handle has moved past: if this was its
    /// last mapping here, it is unmapped on the background thread.
    pub(crate) fn dispose(&self, seg: Arc<Seg>) {
        match self.runner {
            #[cfg(not(loom))]
            Runner::Background if Arc::strong_count(&seg) == 1 => {
                // A task that cannot be handed over is dropped here, and
                // the segment unmapped here after all.
                let _ = submit(Box::new(move || drop(seg)));
            }
            _ => drop(seg),
        }
    }

    /// The handle is going: waits for a running preparation (bounded), then
    /// takes back and removes the offer it made if nobody took it.
    pub(crate) fn close<S: SegmentStore<Seg = Seg>>(&self, store: &S) {
        let mut st = self.lock();
        st.closed = true;
        let until = Instant::now().checked_add(WAIT_CLOSE);
        while st.job == Job::Running {
            let left = until.map_or(WAIT_CLOSE, |t| t.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                break;
            }
            st = self
                .changed
                .wait_timeout(st, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        if let Some(made) = st.made.take() {
            let k = made.number();
            // C4: taking the offer back makes it ours alone to remove.
            if store
                .spare_segment()
                .compare_exchange(k, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                chain::discard(store, &made);
                self.discarded.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Marks the preparation over if it panics (the handle must not wait for
/// it, nor ask in vain for another).
struct Over<'a, Seg: Segment>(&'a Spares<Seg>);

impl<Seg: Segment> Drop for Over<'_, Seg> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.set_idle();
        }
    }
}

/// The job on the background thread: runs the preparations asked for
/// until none is.
fn prepare_asked<S: SegmentStore>(store: &S, base: &MpmcGeometry, spares: &Spares<S::Seg>) {
    loop {
        let mut taken = None;
        let after = {
            let mut st = spares.lock();
            let Some(after) = st.target.take().filter(|_| !st.closed) else {
                st.job = Job::Idle;
                drop(st);
                spares.changed.notify_all();
                return;
            };
            st.job = Job::Running;
            st.offered = false;
            // Our last offer was taken by another process: let go of our
            // mapping (below, outside the lock: unmapping takes a while).
            let word = store.spare_segment().load(Ordering::Acquire);
            if st.made.as_ref().is_some_and(|m| m.number() != word) {
                taken = st.made.take();
            }
            after
        };
        drop(taken);
        let _over = Over(spares);
        prepare(store, base, &after, spares);
    }
}

/// One preparation: the segment after `after`, made and offered.
fn prepare<S: SegmentStore>(
    store: &S,
    base: &MpmcGeometry,
    after: &Arc<S::Seg>,
    spares: &Spares<S::Seg>,
) {
    if chain::discard_stale(store, after.number()) {
        spares.discarded.fetch_add(1, Ordering::Relaxed);
    }
    // Too late (the segment already has a successor), or an offer that can
    // follow it is there.
    if after.next_segment().load(Ordering::Acquire) != 0
        || store.spare_segment().load(Ordering::Acquire) != 0
    {
        return;
    }
    let size = Size::After(after.ring().geometry().capacity);
    // Past the byte limit (or not creatable now): nothing is offered; the
    // send that finds the segment full tries itself and reports why.
    let Ok(seg) = chain::make_segment(store, base, size, 0) else {
        return;
    };
    let mut st = spares.lock();
    if !st.closed && chain::offer(store, &seg) {
        st.made = Some(seg.clone());
        st.offered = true;
        spares.prepared.fetch_add(1, Ordering::Relaxed);
        drop(st);
        spares.changed.notify_all();
        fault_in(&*seg, spares);
    } else {
        // The handle is gone, or another process's offer came first.
        drop(st);
        chain::discard(store, &seg);
        spares.discarded.fetch_add(1, Ordering::Relaxed);
    }
}

/// Faults in the segment just offered, part by part from its start (where
/// its sender begins), until it is done, the handle is gone, or a newer
/// segment is asked for (the sender has taken this one, and making the
/// next comes first; the sender faults in the rest as it writes). So a
/// sender that fills segments faster than memory can be cleared takes page
/// faults of a few microseconds each, never a wait for a whole segment.
fn fault_in<Seg: Segment>(seg: &Seg, spares: &Spares<Seg>) {
    for k in 0..u64::MAX {
        {
            let st = spares.lock();
            if st.closed || st.target.is_some() {
                return;
            }
        }
        if !seg.populate(k) {
            return;
        }
    }
}

/// Starts this process's background thread now, if it is not running, so
/// that the first segment asked for does not wait for a thread to start.
#[cfg(not(loom))]
pub(crate) fn start_worker() {
    let _ = submit(Box::new(|| {}));
}

/// Work for the background thread.
#[cfg(not(loom))]
type Task = Box<dyn FnOnce() + Send>;

/// How long the background thread waits for work before it ends (the next
/// task starts another).
#[cfg(not(loom))]
const IDLE: Duration = Duration::from_secs(10);

/// The background thread of this process (a forked child starts its own).
#[cfg(not(loom))]
struct Worker {
    pid: u32,
    thread: std::thread::ThreadId,
    tx: std::sync::mpsc::Sender<Task>,
}

#[cfg(not(loom))]
static WORKER: Mutex<Option<Worker>> = Mutex::new(None);

/// Runs `task` on the background thread, starting it if needed. Never
/// waits: if the thread cannot be started, or another thread is handing
/// over work this very moment, the task comes back.
#[cfg(not(loom))]
fn submit(task: Task) -> Result<(), Task> {
    use std::sync::TryLockError;
    let mut worker = match WORKER.try_lock() {
        Ok(w) => w,
        Err(TryLockError::Poisoned(p)) => p.into_inner(),
        Err(TryLockError::WouldBlock) => return Err(task),
    };
    let pid = std::process::id();
    if worker.as_ref().map_or(true, |w| w.pid != pid) {
        *worker = start(pid);
    }
    let Some(w) = worker.as_ref() else {
        return Err(task);
    };
    w.tx.send(task).map_err(|e| {
        *worker = None;
        e.0
    })
}

#[cfg(not(loom))]
fn start(pid: u32) -> Option<Worker> {
    let (tx, rx) = std::sync::mpsc::channel::<Task>();
    let run = |task: Task| {
        // A task that panics (it should not) ends alone: its handle sees
        // its preparation over (`Over`), the thread goes on.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(task));
    };
    let thread = std::thread::Builder::new()
        .name("hwlink-segments".into())
        .spawn(move || {
            // Started by a sending thread: if that thread is pinned to its
            // own core, this one must not share it (it takes the main
            // thread's CPUs instead).
            let _ = crate::liveness::unpin_if_pinned();
            loop {
                use std::sync::mpsc::RecvTimeoutError;
                match rx.recv_timeout(IDLE) {
                    Ok(task) => run(task),
                    Err(RecvTimeoutError::Disconnected) => return,
                    Err(RecvTimeoutError::Timeout) => {
                        // Idle: end, unless a task came in meanwhile (a
                        // sender holds the lock from its check to its send).
                        let mut w = WORKER.lock().unwrap_or_else(PoisonError::into_inner);
                        if let Ok(task) = rx.try_recv() {
                            drop(w);
                            run(task);
                            continue;
                        }
                        let me = std::thread::current().id();
                        if w.as_ref().is_some_and(|w| w.thread == me) {
                            *w = None;
                        }
                        return;
                    }
                }
            }
        })
        .ok()?;
    Some(Worker {
        pid,
        thread: thread.thread().id(),
        tx,
    })
}
