//! Async receive and send for tokio (cargo feature `tokio`): each end's
//! pollable descriptor (`as_fd`, hw/SPEC.md §8.11) in a
//! `tokio::io::unix::AsyncFd`.
//!
//! **Cancel safety.** Every future here is cancel-safe: a message is taken
//! (or accepted) only inside one synchronous attempt (`try_recv`,
//! `try_send`), never across an `.await`. Dropping a `recv()` future
//! (a `select!` that chose another branch, a timeout) loses no message and
//! duplicates none: the next `recv()` gets the next message. A dropped
//! `send()` future did not send.
//!
//! **Waiting** follows the end's strategy. Spin-then-park first polls the
//! ring for a short while ([`ASYNC_SPIN`], adjustable per end), as the
//! blocking forms do (a reply that comes within it costs no wake-up), then
//! awaits the descriptor; park awaits at once; busy-poll never parks: it
//! yields to the runtime between attempts.
//!
//! Domain members' async sends wait for room with a short timer backoff
//! (50 µs doubling to 1 ms): a member's sends go over one link per peer,
//! with no single doorbell to await.

use crate::error::{RecvError, SendError};
use crate::{Access, Mailbox, Member, ReadinessError, Receiver, Sender, Subscriber, WaitStrategy};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// How long a spin-then-park end polls before it awaits its descriptor.
pub const ASYNC_SPIN: Duration = Duration::from_micros(20);

/// The descriptor as tokio registers it (owned by the end: registered
/// with the runtime only while the end lives).
#[derive(Debug)]
struct Fd(RawFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Waiting for one end: its descriptor in the runtime (None: busy-poll)
/// and the spin.
#[derive(Debug)]
struct Waiter {
    fd: Option<AsyncFd<Fd>>,
    spin: Duration,
}

impl Waiter {
    /// `fd`: the end's descriptor, which must stay open and the same for
    /// as long as this waiter lives (the end owns it, and every wrapper
    /// below holds the end after its waiter, so the waiter drops first).
    /// `pinned_alone`: this thread may run on one CPU only and its peers
    /// are unknown: then no spin (a peer on this CPU cannot answer while
    /// we hold it), as the blocking forms yield instead.
    fn new(
        strategy: WaitStrategy,
        fd: Option<RawFd>,
        pinned_alone: bool,
    ) -> Result<Waiter, ReadinessError> {
        let fd = match fd {
            // SAFETY: `raw` is the open descriptor of the end's readiness
            // ring, which the end keeps (never replaced) for its whole
            // life; the end outlives this waiter (field order of every
            // wrapper: waiter first), as the function's contract says.
            Some(raw) => Some(
                unsafe { AsyncFd::register_with_interest(Fd(raw), Interest::READABLE) }
                    .map_err(|e| ReadinessError::Io(e.into()))?,
            ),
            None => None,
        };
        Ok(Waiter {
            fd,
            spin: match strategy {
                WaitStrategy::SpinPark if !pinned_alone => ASYNC_SPIN,
                _ => Duration::ZERO,
            },
        })
    }

    /// Spins on `ready` (memory only) for the spin budget: true if it
    /// turned ready. Not when the peer shares this thread's only CPU
    /// (`shared_core`): it cannot answer while we hold the CPU.
    fn spin(&self, shared_core: bool, ready: impl Fn() -> bool) -> bool {
        if self.spin.is_zero() || shared_core {
            return false;
        }
        let start = Instant::now();
        loop {
            for _ in 0..64 {
                if ready() {
                    return true;
                }
                std::hint::spin_loop();
            }
            if start.elapsed() >= self.spin {
                return false;
            }
        }
    }

    /// Waits until the descriptor reads ready (busy-poll: yields once).
    /// The caller's attempt armed it: a post since then is not lost.
    async fn park(&self) -> std::io::Result<()> {
        match &self.fd {
            Some(fd) => {
                let mut guard = fd.readable().await?;
                guard.clear_ready();
                Ok(())
            }
            None => {
                tokio::task::yield_now().await;
                Ok(())
            }
        }
    }
}

/// An async link receiver.
#[derive(Debug)]
pub struct AsyncReceiver {
    // Deregistered from the runtime before the end (and its descriptor)
    // goes: field order.
    waiter: Waiter,
    rx: Receiver,
}

impl AsyncReceiver {
    /// Wraps `rx`; must be called within a tokio runtime.
    pub fn new(mut rx: Receiver) -> Result<AsyncReceiver, ReadinessError> {
        let strategy = rx.wait_strategy();
        let fd = match strategy {
            WaitStrategy::BusyPoll => None,
            _ => Some(rx.as_fd()?.as_raw_fd()),
        };
        rx.arm_explicitly();
        Ok(AsyncReceiver {
            waiter: Waiter::new(strategy, fd, false)?,
            rx,
        })
    }

    /// How long a spin-then-park end polls before it awaits (default
    /// [`ASYNC_SPIN`]; zero: never).
    pub fn set_spin(&mut self, spin: Duration) {
        self.waiter.spin = spin;
    }

    /// Receives the next message. Cancel-safe.
    pub async fn recv(&mut self) -> Result<Vec<u8>, RecvError> {
        loop {
            match self.rx.try_recv() {
                Err(RecvError::Empty) => {}
                other => return other,
            }
            let rx = &self.rx;
            if self
                .waiter
                .spin(rx.shares_core_with_peer(), || rx.ready_now())
            {
                continue;
            }
            if self.rx.arm_for_wait() {
                continue;
            }
            self.waiter.park().await.map_err(io_to_recv)?;
        }
    }

    /// The receiver.
    pub fn get_mut(&mut self) -> &mut Receiver {
        &mut self.rx
    }

    /// Unwraps the receiver.
    pub fn into_inner(self) -> Receiver {
        self.rx
    }
}

/// An async topic subscriber.
#[derive(Debug)]
pub struct AsyncSubscriber {
    // Deregistered from the runtime before the end: field order.
    waiter: Waiter,
    sub: Subscriber,
}

impl AsyncSubscriber {
    /// Wraps `sub`; must be called within a tokio runtime.
    pub fn new(mut sub: Subscriber) -> Result<AsyncSubscriber, ReadinessError> {
        let strategy = sub.wait_strategy();
        let fd = match strategy {
            WaitStrategy::BusyPoll => None,
            _ => Some(sub.as_fd()?.as_raw_fd()),
        };
        sub.arm_explicitly();
        let pinned_alone = crate::liveness::cpu_mask().count_ones() == 1;
        Ok(AsyncSubscriber {
            waiter: Waiter::new(strategy, fd, pinned_alone)?,
            sub,
        })
    }

    /// Receives the next message ([`RecvError::Lagged`] as the blocking
    /// form reports it). Cancel-safe.
    pub async fn recv(&mut self) -> Result<Vec<u8>, RecvError> {
        loop {
            match self.sub.try_recv() {
                Err(RecvError::Empty) => {}
                other => return other,
            }
            let sub = &self.sub;
            if self.waiter.spin(false, || sub.ready_now()) {
                continue;
            }
            if self.sub.arm_for_wait() {
                continue;
            }
            self.waiter.park().await.map_err(io_to_recv)?;
        }
    }

    /// The subscriber.
    pub fn get_mut(&mut self) -> &mut Subscriber {
        &mut self.sub
    }

    /// Unwraps the subscriber.
    pub fn into_inner(self) -> Subscriber {
        self.sub
    }
}

/// An async link sender.
#[derive(Debug)]
pub struct AsyncSender {
    waiter: Waiter,
    tx: Sender,
}

impl AsyncSender {
    /// Wraps `tx`; must be called within a tokio runtime.
    pub fn new(mut tx: Sender) -> Result<AsyncSender, ReadinessError> {
        let strategy = tx.wait_strategy();
        let fd = match strategy {
            WaitStrategy::BusyPoll => None,
            _ => Some(tx.as_fd()?.as_raw_fd()),
        };
        tx.arm_explicitly();
        Ok(AsyncSender {
            waiter: Waiter::new(strategy, fd, false)?,
            tx,
        })
    }

    /// Sends `msg`, waiting for room. Cancel-safe: if the future is
    /// dropped, the message was not sent.
    pub async fn send<M: AsRef<[u8]>>(&mut self, msg: M) -> Result<(), SendError<M>> {
        let mut msg = msg;
        loop {
            match self.tx.try_send(msg) {
                Err(SendError::Full(m)) => msg = m,
                other => return other,
            }
            let tx = &self.tx;
            if self
                .waiter
                .spin(tx.shares_core_with_peer(), || tx.ready_now())
            {
                continue;
            }
            if self.tx.arm_for_wait() {
                continue;
            }
            if self.waiter.park().await.is_err() {
                return Err(SendError::Disconnected(msg));
            }
        }
    }

    /// The sender.
    pub fn get_mut(&mut self) -> &mut Sender {
        &mut self.tx
    }

    /// Unwraps the sender.
    pub fn into_inner(self) -> Sender {
        self.tx
    }
}

/// An async mailbox: receives if the handle may receive, sends if it may
/// send (each direction with its own descriptor).
#[derive(Debug)]
pub struct AsyncMailbox {
    recv_waiter: Option<Waiter>,
    send_waiter: Option<Waiter>,
    mailbox: Mailbox,
}

impl AsyncMailbox {
    /// Wraps `mailbox`; must be called within a tokio runtime.
    pub fn new(mut mailbox: Mailbox) -> Result<AsyncMailbox, ReadinessError> {
        let strategy = mailbox.wait_strategy();
        let polls = strategy == WaitStrategy::BusyPoll;
        let access = mailbox.access();
        let recv_waiter = if matches!(access, Access::Recv | Access::SendRecv) {
            let fd = if polls {
                None
            } else {
                Some(mailbox.as_fd()?.as_raw_fd())
            };
            Some(Waiter::new(strategy, fd, pinned_alone())?)
        } else {
            None
        };
        let send_waiter = if matches!(access, Access::Send | Access::SendRecv) {
            let fd = if polls {
                None
            } else {
                Some(mailbox.as_send_fd()?.as_raw_fd())
            };
            Some(Waiter::new(strategy, fd, pinned_alone())?)
        } else {
            None
        };
        mailbox.arm_explicitly();
        Ok(AsyncMailbox {
            recv_waiter,
            send_waiter,
            mailbox,
        })
    }

    /// Receives the next message. Cancel-safe.
    pub async fn recv(&mut self) -> Result<Vec<u8>, RecvError> {
        loop {
            match self.mailbox.try_recv() {
                Err(RecvError::Empty) => {}
                other => return other,
            }
            let Some(waiter) = &self.recv_waiter else {
                return Err(RecvError::Disconnected);
            };
            let mailbox = &self.mailbox;
            if waiter.spin(false, || mailbox.ready_now(true)) {
                continue;
            }
            if self.mailbox.arm_for_wait(true) {
                continue;
            }
            let Some(waiter) = &self.recv_waiter else {
                return Err(RecvError::Disconnected);
            };
            waiter.park().await.map_err(io_to_recv)?;
        }
    }

    /// Sends `msg`, waiting for room. Cancel-safe.
    pub async fn send<M: AsRef<[u8]>>(&mut self, msg: M) -> Result<(), SendError<M>> {
        let mut msg = msg;
        loop {
            match self.mailbox.try_send(msg) {
                Err(SendError::Full(m)) => msg = m,
                other => return other,
            }
            let Some(waiter) = &self.send_waiter else {
                return Err(SendError::Disconnected(msg));
            };
            let mailbox = &self.mailbox;
            if waiter.spin(false, || mailbox.ready_now(false)) {
                continue;
            }
            if self.mailbox.arm_for_wait(false) {
                continue;
            }
            let Some(waiter) = &self.send_waiter else {
                return Err(SendError::Disconnected(msg));
            };
            if waiter.park().await.is_err() {
                return Err(SendError::Disconnected(msg));
            }
        }
    }

    /// The mailbox.
    pub fn get_mut(&mut self) -> &mut Mailbox {
        &mut self.mailbox
    }

    /// Unwraps the mailbox.
    pub fn into_inner(self) -> Mailbox {
        self.mailbox
    }
}

/// An async domain member.
#[derive(Debug)]
pub struct AsyncMember {
    waiter: Waiter,
    member: Member,
}

/// Longest pause between two attempts of a member's async send.
const SEND_BACKOFF_MAX: Duration = Duration::from_millis(1);

impl AsyncMember {
    /// Wraps `member`; must be called within a tokio runtime.
    pub fn new(mut member: Member) -> Result<AsyncMember, ReadinessError> {
        let strategy = member.wait_strategy();
        let fd = match strategy {
            WaitStrategy::BusyPoll => None,
            _ => Some(member.as_fd()?.as_raw_fd()),
        };
        member.arm_explicitly();
        Ok(AsyncMember {
            waiter: Waiter::new(strategy, fd, pinned_alone())?,
            member,
        })
    }

    /// Receives the next message from any member, with the sender's name.
    /// Cancel-safe.
    pub async fn recv_any(&mut self) -> Result<(String, Vec<u8>), RecvError> {
        loop {
            match self.member.try_recv_any() {
                Err(RecvError::Empty) => {}
                other => return other,
            }
            let member = &self.member;
            if self.waiter.spin(false, || member.recv_ready_now(None)) {
                continue;
            }
            if self.member.arm_for_wait() {
                continue;
            }
            self.waiter.park().await.map_err(io_to_recv)?;
        }
    }

    /// Receives the next message from the member named `from` (waiting
    /// for it to join). Cancel-safe.
    pub async fn recv_from(&mut self, from: &str) -> Result<Vec<u8>, RecvError> {
        loop {
            match self.member.try_recv_from(from) {
                Err(RecvError::Empty | RecvError::NoSuchMember { .. }) => {}
                other => return other,
            }
            let member = &self.member;
            if self
                .waiter
                .spin(false, || member.recv_ready_now(Some(from)))
            {
                continue;
            }
            if self.member.arm_for_wait() {
                continue;
            }
            // A member that has not joined yet rings nothing when it does:
            // look again at least every slice.
            if let Ok(woke) =
                tokio::time::timeout(crate::wait::SLEEP_SLICE, self.waiter.park()).await
            {
                woke.map_err(io_to_recv)?;
            }
        }
    }

    /// Sends `msg` to the member named `to`, waiting for room (by a short
    /// timer backoff: see the module documentation). Cancel-safe.
    pub async fn send<M: AsRef<[u8]>>(&mut self, to: &str, msg: M) -> Result<(), SendError<M>> {
        let mut msg = msg;
        let mut pause = Duration::from_micros(50);
        loop {
            match self.member.try_send(to, msg) {
                Err(SendError::Full(m)) => msg = m,
                other => return other,
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(SEND_BACKOFF_MAX);
        }
    }

    /// The member.
    pub fn get_mut(&mut self) -> &mut Member {
        &mut self.member
    }

    /// Unwraps the member.
    pub fn into_inner(self) -> Member {
        self.member
    }
}

/// This thread may run on one CPU only, and the peers it waits for are
/// unknown (a mailbox's, a member's): one of them may share that CPU.
fn pinned_alone() -> bool {
    crate::liveness::cpu_mask().count_ones() == 1
}

/// The runtime failed to watch the descriptor: no receive can wait.
fn io_to_recv(e: std::io::Error) -> RecvError {
    RecvError::Unavailable {
        reason: format!("the async runtime cannot watch the end's descriptor: {e}"),
    }
}
