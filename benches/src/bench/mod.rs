//! Benchmarks of hwlink against the kernel's IPC mechanisms, between two real processes.
//!
//! The measuring process sets up a channel of one [`Mechanism`], spawns its
//! peer by re-executing a caller-supplied command (the `hwlink` binary runs
//! `hwlink bench-peer -- ARGS`, which calls [`peer_main`]), pins itself and
//! the peer to the given CPUs and measures one [`Workload`]:
//!
//! - [`round_trip`]: the peer echoes every message; each round trip is timed.
//! - [`stream`]: this process sends for a while, the peer receives and
//!   verifies every message (sequence number and content), then reports.
//! - [`pipeline`]: four processes in a chain, this one the source and the
//!   sink, measured end to end.
//! - [`fanout`](fanout()): this process publishes to 1, 2 or 4 subscriber
//!   processes; latency to the last subscriber and throughput with every
//!   subscriber receiving everything.
//!
//! Both processes measure their own CPU time (`getrusage`) around the
//! measured phase; the peer prints its figures as one line on its stdout.
//! Each family of mechanisms lives in its own module (`hw`, `fd`,
//! `eventfd`, `mq`, `uring`, `async_rt`, `hw_wait`; `epoll` waits for
//! readiness; `fanout` holds the fan-out workload with its transports);
//! `session` runs one measurement, [`plan`]
//! interleaves many in rounds, [`report`] prints and serialises them and
//! [`plot`] draws them.

mod async_rt;
pub mod buffering;
mod epoll;
mod eventfd;
mod fanout;
mod fd;
mod hw;
mod hw_wait;
mod lamport;
pub mod mpmc;
mod mq;
mod pipeline;
pub mod plan;
pub mod plot;
pub mod report;
mod session;
pub mod unbounded;
mod uring;

pub use fanout::{fanout, FannedOut, DEFAULT_SUBSCRIBERS, MAX_SUBSCRIBERS};
pub(crate) use hw::Floor;
pub use pipeline::{pipeline, Pipelined, STAGES};
pub use session::{peer_main, remove_leftovers, round_trip, stream, Launcher};
pub(crate) use session::{ParentSide, PeerSpec};

use hwlink_drivers::Backend;
use std::fmt;
use std::str::FromStr;

/// What carries the messages. Each has a stable name, used on the command
/// line and in the JSON report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// hwlink SPSC links, both ends busy-polling.
    HwlinkPoll,
    /// hwlink SPSC links, both ends spin-then-park.
    HwlinkSpinPark,
    /// hwlink SPSC links, both ends parking on the doorbell.
    HwlinkPark,
    /// hwlink SPSC links in spin-then-park, written in place
    /// (`reserve`/`commit`) and read in place (`recv_with`): no copy.
    HwlinkZeroCopy,
    /// hwlink SPSC links, both ends busy-polling, carrying a 64-byte
    /// `#[repr(C)]` struct with `send_value` / `recv_value` (64 bytes
    /// only): the typed layer beside `hwlink-poll`'s bytes.
    HwlinkTyped,
    /// hwlink SPSC links laid out as packed records (16-byte units,
    /// `RingLayout::Packed`), both ends busy-polling: `hwlink-poll` with
    /// the other layout.
    HwlinkPacked,
    /// hwlink MPMC mailbox, one sender and one receiver.
    HwlinkMailbox,
    /// hwlink SPSC links, all busy-polling; the echo side selects over
    /// four links (`hwlink::Select`), the measuring side sends on each in
    /// turn.
    HwlinkSelectPoll,
    /// As `hwlink-select-poll`, every end parking on its doorbell.
    HwlinkSelectPark,
    /// hwlink SPSC links in spin-then-park; the echo side waits in
    /// `epoll_wait` on its receiver's descriptor (`as_fd`).
    HwlinkEpoll,
    /// hwlink SPSC links in spin-then-park as `hwlink::tokio` async ends,
    /// each side on a tokio current-thread runtime.
    HwlinkAsync,
    /// Two busy-polled flags on separate cache lines: the physical floor.
    Floor,
    /// Lamport's SPSC ring in the same kind of shared memory: fixed slots,
    /// both indices re-read per message, busy-poll. The simplest correct
    /// ring: the reference hwlink's links must beat.
    RingLamport,
    /// A pipe each way.
    Pipe,
    /// A Unix stream socketpair.
    UnixStream,
    /// A non-blocking Unix stream socketpair, each side waiting in
    /// `epoll_wait` before it reads.
    UnixEpoll,
    /// A Unix stream socketpair as tokio `UnixStream`s, each side on a
    /// current-thread runtime.
    TokioUnix,
    /// A Unix datagram socketpair.
    UnixDgram,
    /// A Unix seqpacket socketpair.
    UnixSeqpacket,
    /// eventfd doorbells with the payload in shared memory.
    Eventfd,
    /// As `eventfd`, with non-blocking eventfds waited on in `epoll_wait`.
    EventfdEpoll,
    /// POSIX message queues.
    PosixMq,
    /// A System V message queue.
    SysvMq,
    /// TCP over loopback with `TCP_NODELAY`.
    Tcp,
    /// Pipes driven through io_uring (submit and wait).
    UringPipe,
    /// A Unix stream socketpair driven through io_uring (submit and wait).
    UringUnix,
    /// As `uring-unix`, with a kernel submission-polling thread (SQPOLL).
    UringUnixSqpoll,
    /// An hwlink topic, publisher and subscribers busy-polling: each
    /// message written once into shared memory, read in place by every
    /// subscriber (fan-out only).
    HwlinkTopic,
    /// As `hwlink-topic`, every end spin-then-park (fan-out only).
    HwlinkTopicPark,
}

impl Mechanism {
    /// Every mechanism, in report order.
    pub const ALL: [Mechanism; 29] = [
        Mechanism::HwlinkPoll,
        Mechanism::HwlinkSpinPark,
        Mechanism::HwlinkPark,
        Mechanism::HwlinkZeroCopy,
        Mechanism::HwlinkTyped,
        Mechanism::HwlinkPacked,
        Mechanism::HwlinkMailbox,
        Mechanism::HwlinkSelectPoll,
        Mechanism::HwlinkSelectPark,
        Mechanism::HwlinkEpoll,
        Mechanism::HwlinkAsync,
        Mechanism::Floor,
        Mechanism::RingLamport,
        Mechanism::Pipe,
        Mechanism::UnixStream,
        Mechanism::UnixEpoll,
        Mechanism::TokioUnix,
        Mechanism::UnixDgram,
        Mechanism::UnixSeqpacket,
        Mechanism::Eventfd,
        Mechanism::EventfdEpoll,
        Mechanism::PosixMq,
        Mechanism::SysvMq,
        Mechanism::Tcp,
        Mechanism::UringPipe,
        Mechanism::UringUnix,
        Mechanism::UringUnixSqpoll,
        Mechanism::HwlinkTopic,
        Mechanism::HwlinkTopicPark,
    ];

    /// Its stable name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::HwlinkPoll => "hwlink-poll",
            Mechanism::HwlinkSpinPark => "hwlink-spin-park",
            Mechanism::HwlinkPark => "hwlink-park",
            Mechanism::HwlinkZeroCopy => "hwlink-zero-copy",
            Mechanism::HwlinkTyped => "hwlink-typed",
            Mechanism::HwlinkPacked => "hwlink-packed",
            Mechanism::HwlinkMailbox => "hwlink-mailbox",
            Mechanism::HwlinkSelectPoll => "hwlink-select-poll",
            Mechanism::HwlinkSelectPark => "hwlink-select-park",
            Mechanism::HwlinkEpoll => "hwlink-epoll",
            Mechanism::HwlinkAsync => "hwlink-async",
            Mechanism::Floor => "floor",
            Mechanism::RingLamport => "ring-lamport",
            Mechanism::Pipe => "pipe",
            Mechanism::UnixStream => "unix-stream",
            Mechanism::UnixEpoll => "unix-epoll",
            Mechanism::TokioUnix => "tokio-unix",
            Mechanism::UnixDgram => "unix-dgram",
            Mechanism::UnixSeqpacket => "unix-seqpacket",
            Mechanism::Eventfd => "eventfd",
            Mechanism::EventfdEpoll => "eventfd-epoll",
            Mechanism::PosixMq => "posix-mq",
            Mechanism::SysvMq => "sysv-mq",
            Mechanism::Tcp => "tcp",
            Mechanism::UringPipe => "uring-pipe",
            Mechanism::UringUnix => "uring-unix",
            Mechanism::UringUnixSqpoll => "uring-unix-sqpoll",
            Mechanism::HwlinkTopic => "hwlink-topic",
            Mechanism::HwlinkTopicPark => "hwlink-topic-park",
        }
    }

    /// What a reader of the figures must know about how this row is
    /// measured, where that is not what its name says (the JSON's `note`).
    pub fn note(self) -> Option<&'static str> {
        match self {
            Mechanism::Floor => {
                Some("two busy-polled cache-line flags: one 8-byte word moves at every size")
            }
            Mechanism::RingLamport => Some(
                "Lamport's SPSC ring in the same kind of shared memory, busy-polling: fixed slots (an 8-byte length, then the payload), the tail and head on their own cache lines, each side re-reading the other's index for every message; the simplest correct ring",
            ),
            Mechanism::HwlinkSelectPoll | Mechanism::HwlinkSelectPark => Some(
                "the echo side waits in one Select over four links, a new Select per message; the measuring side sends on each link in turn",
            ),
            Mechanism::HwlinkPacked => Some(
                "hwlink-poll's links laid out as packed records: each message a length-prefixed record in 16-byte units (an 8-byte message takes 16 bytes, four share a cache line) instead of a fixed slot of at least 64 bytes",
            ),
            Mechanism::HwlinkTyped => Some(
                "a 64-byte #[repr(C)] struct sent with send_value and received with recv_value over busy-polling links (64-byte messages only); round trips move the struct as an application does (one tick stamped with the sequence number, echoed as received), streams also copy between the harness's byte buffer and the struct",
            ),
            Mechanism::HwlinkEpoll => Some(
                "only the echo side (the stream's receiver) waits in epoll_wait on its receiver's descriptor; the measuring side receives with spin-then-park",
            ),
            Mechanism::HwlinkTopic | Mechanism::HwlinkTopicPark => Some(
                "fan-out only (Block backpressure): the publisher loans a slot and copies each message into it once; every subscriber reads all of it in place (recv_with, a sum over every byte) and answers on its own hwlink link",
            ),
            _ => None,
        }
    }

    /// What a reader of the fan-out figures must know about this row: how
    /// the message reaches each subscriber and what the subscriber does
    /// with it.
    pub fn fanout_note(self) -> Option<&'static str> {
        match self {
            Mechanism::HwlinkTopic | Mechanism::HwlinkTopicPark => self.note(),
            Mechanism::HwlinkPoll => Some(
                "one busy-polling hwlink link per subscriber: the publisher copies each message into every link; each subscriber reads all of it in place (recv_with, a sum over every byte)",
            ),
            Mechanism::Pipe => Some(
                "one pipe per subscriber, sized to hold a whole message (F_SETPIPE_SZ, up to fs.pipe-max-size), fixed-size framing: the publisher writes each message to every pipe (the kernel copies it once per reader); each subscriber read()s all of it into a buffer and sums every byte",
            ),
            Mechanism::UnixDgram => Some(
                "one Unix datagram socketpair per subscriber, buffers raised (SO_SNDBUFFORCE/SO_RCVBUFFORCE when root): the publisher sends each message on every socket; each subscriber recv()s it into a buffer and sums every byte",
            ),
            _ => None,
        }
    }

    /// Whether the fan-out workload runs this mechanism.
    pub fn fans_out(self) -> bool {
        matches!(
            self,
            Mechanism::HwlinkTopic
                | Mechanism::HwlinkTopicPark
                | Mechanism::HwlinkPoll
                | Mechanism::Pipe
                | Mechanism::UnixDgram
        )
    }

    /// Whether this mechanism runs only in the fan-out workload (a topic
    /// has one publisher and many subscribers: no echo, no chain).
    pub fn fanout_only(self) -> bool {
        matches!(self, Mechanism::HwlinkTopic | Mechanism::HwlinkTopicPark)
    }

    /// Whether this is one of hwlink's own transports.
    pub fn is_hwlink(self) -> bool {
        matches!(
            self,
            Mechanism::HwlinkPoll
                | Mechanism::HwlinkSpinPark
                | Mechanism::HwlinkPark
                | Mechanism::HwlinkZeroCopy
                | Mechanism::HwlinkTyped
                | Mechanism::HwlinkPacked
                | Mechanism::HwlinkMailbox
                | Mechanism::HwlinkSelectPoll
                | Mechanism::HwlinkSelectPark
                | Mechanism::HwlinkEpoll
                | Mechanism::HwlinkAsync
                | Mechanism::HwlinkTopic
                | Mechanism::HwlinkTopicPark
        )
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mechanism {
    type Err = BenchError;
    fn from_str(s: &str) -> Result<Self, BenchError> {
        Mechanism::ALL
            .into_iter()
            .find(|m| m.name() == s.trim())
            .ok_or_else(|| BenchError::UnknownMechanism(s.to_string()))
    }
}

/// What is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Workload {
    /// Ping-pong: the peer echoes each message.
    RoundTrip,
    /// One-way: the peer receives and verifies every message.
    Stream,
}

impl Workload {
    /// Its stable name.
    pub fn name(self) -> &'static str {
        match self {
            Workload::RoundTrip => "round-trip",
            Workload::Stream => "stream",
        }
    }
}

/// Why a benchmark could not run, or failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The mechanism cannot carry this workload here: reported as skipped.
    #[error("{0}")]
    Unsupported(String),
    /// A mechanism name that does not exist.
    #[error("unknown mechanism `{0}`: run `hwlink bench --help` for the list")]
    UnknownMechanism(String),
    /// A system call failed.
    #[error(
        "{what} failed: {source}; check this system's limits (ulimit -a, /proc/sys/fs, /proc/sys/kernel/msg*) and retry"
    )]
    Io {
        /// What was being done.
        what: String,
        /// The error from the kernel.
        source: std::io::Error,
    },
    /// An hwlink link could not be created, opened or used.
    #[error("hwlink link: {0}; run `hwlink ls` and `hwlink rm --stale`, or try `--backend shm`")]
    Link(String),
    /// A message arrived wrong: a bug in the transport or the benchmark.
    #[error("message check failed: {0}; this is a bug, please report it with the command line")]
    Verify(String),
    /// The peer process misbehaved.
    #[error("peer process: {0}; rerun with the same arguments to see its error output")]
    Peer(String),
    /// A plot could not be drawn or written.
    #[error("cannot write the plot {path}: {msg}; check that the --plots directory is writable")]
    Plot {
        /// The SVG file.
        path: String,
        /// What went wrong.
        msg: String,
    },
    /// Bad arguments for the peer process.
    #[error("bad peer arguments: {0}; the peer is started by `hwlink bench`, not by hand")]
    PeerArgs(String),
}

impl BenchError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> BenchError {
        BenchError::Io {
            what: what.into(),
            source,
        }
    }
    /// The last OS error, as a failure of `what`.
    pub(crate) fn last_os(what: impl Into<String>) -> BenchError {
        BenchError::io(what, std::io::Error::last_os_error())
    }
}

/// Fails with the last OS error when a libc call returned -1.
pub(crate) fn check(rc: libc::c_int, what: &str) -> Result<libc::c_int, BenchError> {
    if rc < 0 {
        Err(BenchError::last_os(what))
    } else {
        Ok(rc)
    }
}

/// One side of a channel: moves whole messages of the session's fixed size.
pub(crate) trait Transport {
    /// Sends one message (all of `msg`).
    fn send(&mut self, msg: &[u8]) -> Result<(), BenchError>;
    /// Receives one message, which fills all of `buf`.
    fn recv(&mut self, buf: &mut [u8]) -> Result<(), BenchError>;
    /// Sends message `seq` of `buf.len()` bytes ([`fill`]): by default
    /// written into `buf`, then sent; in place where the mechanism can.
    fn send_written(&mut self, buf: &mut [u8], seq: u64) -> Result<(), BenchError> {
        fill(buf, seq);
        self.send(buf)
    }
    /// Receives one message of `buf.len()` bytes and returns its sequence
    /// number, having checked that it is message `expected` (unless it is
    /// the stop message): by default copied into `buf`; in place where the
    /// mechanism can.
    fn recv_checked(&mut self, buf: &mut [u8], expected: u64) -> Result<u64, BenchError> {
        self.recv(buf)?;
        let seq = seq_of(buf);
        if seq != STOP {
            verify(buf, expected)?;
        }
        Ok(seq)
    }
    /// The measuring side's round trip: sends `msg` (its sequence number
    /// written) and receives the echo, returning the echo's sequence
    /// number: by default `send`, then `recv` into `echo`; a transport of
    /// values moves its own value instead of bytes.
    fn round_trip(&mut self, msg: &[u8], echo: &mut [u8]) -> Result<u64, BenchError> {
        self.send(msg)?;
        self.recv(echo)?;
        Ok(seq_of(echo))
    }
    /// The peer's echo: receives one message and, unless it is the stop
    /// message, sends it back; returns its sequence number. By default
    /// through `buf`, like [`round_trip`](Self::round_trip).
    fn echo(&mut self, buf: &mut [u8]) -> Result<u64, BenchError> {
        self.recv(buf)?;
        let seq = seq_of(buf);
        if seq != STOP {
            self.send(buf)?;
        }
        Ok(seq)
    }
}

/// The sequence number that tells the peer to stop.
const STOP: u64 = u64::MAX;

/// The `j`-th 8-byte word of message `seq`'s body: differs between
/// messages and between positions, so a stale, misplaced or torn copy shows.
#[inline]
fn pattern_word(seq: u64, j: usize) -> u64 {
    seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (j as u64).wrapping_mul(0x0000_0100_0000_01B3)
}

/// Writes message `seq`: the sequence number, then a pattern derived from it.
pub(crate) fn fill(buf: &mut [u8], seq: u64) {
    fill_from(buf, seq, 0);
}

/// Bytes `start..start + out.len()` of message `seq` (`start` a multiple
/// of 8): its sequence number, then pattern words.
fn fill_from(out: &mut [u8], seq: u64, start: usize) {
    debug_assert_eq!(start % 8, 0);
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let w = start / 8 + i;
        let word = if w == 0 {
            seq
        } else {
            pattern_word(seq, w - 1)
        };
        chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]);
    }
}

/// Bytes staged at a time when a message is written or checked in place.
const IN_PLACE_CHUNK: usize = 1024;
/// The buffer for messages of at most this many bytes.
const SMALL_CHUNK: usize = 64;

/// A zeroed message buffer starting on a cache line, for every mechanism
/// alike: a heap `Vec` starts wherever the allocator's history puts it
/// (16-byte aligned), and copies of large messages between it and a slot
/// run several percent slower or faster with that offset, which then
/// changes from one build to the next for reasons that have nothing to do
/// with the transport.
pub(crate) struct AlignedBuf {
    bytes: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    pub(crate) fn new(len: usize) -> AlignedBuf {
        let bytes = vec![0u8; len + 64];
        let start = bytes.as_ptr().align_offset(64);
        AlignedBuf { bytes, start, len }
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes[self.start..self.start + self.len]
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.start + self.len]
    }
}

/// Writes message `seq` in place into a slot of shared memory, a chunk at
/// a time (no message-sized buffer, no reference into the slot).
pub(crate) fn fill_shm(dst: &mut hwlink::ShmSliceMut<'_>, seq: u64) {
    // Small messages through a small buffer: zeroing a whole chunk for
    // each would cost more than the message itself.
    if dst.len() <= SMALL_CHUNK {
        let mut chunk = [0u8; SMALL_CHUNK];
        let n = dst.len();
        fill_from(&mut chunk[..n], seq, 0);
        dst.write_at(0, &chunk[..n]);
        return;
    }
    let mut chunk = [0u8; IN_PLACE_CHUNK];
    let mut start = 0;
    while start < dst.len() {
        let n = (dst.len() - start).min(IN_PLACE_CHUNK);
        fill_from(&mut chunk[..n], seq, start);
        dst.write_at(start, &chunk[..n]);
        start += n;
    }
}

/// The sequence number of a message in shared memory (STOP if too short).
pub(crate) fn seq_of_shm(src: hwlink::ShmSlice<'_>) -> u64 {
    let mut b = [0u8; 8];
    if src.read_at(0, &mut b) {
        u64::from_le_bytes(b)
    } else {
        STOP
    }
}

/// [`verify`] for a message in shared memory, checked in place a chunk at
/// a time.
pub(crate) fn verify_shm(src: hwlink::ShmSlice<'_>, expected: u64) -> Result<(), BenchError> {
    let seq = seq_of_shm(src);
    if seq != expected {
        return Err(BenchError::Verify(format!(
            "received message {seq}, expected {expected}"
        )));
    }
    if src.len() <= SMALL_CHUNK {
        let (mut want, mut got) = ([0u8; SMALL_CHUNK], [0u8; SMALL_CHUNK]);
        let n = src.len();
        fill_from(&mut want[..n], seq, 0);
        src.read_at(0, &mut got[..n]);
        if want[..n] != got[..n] {
            return Err(BenchError::Verify(format!(
                "message {seq}: its content is not what was sent"
            )));
        }
        return Ok(());
    }
    let (mut want, mut got) = ([0u8; IN_PLACE_CHUNK], [0u8; IN_PLACE_CHUNK]);
    let mut start = 0;
    while start < src.len() {
        let n = (src.len() - start).min(IN_PLACE_CHUNK);
        fill_from(&mut want[..n], seq, start);
        src.read_at(start, &mut got[..n]);
        if want[..n] != got[..n] {
            return Err(BenchError::Verify(format!(
                "message {seq}: its content is not what was sent"
            )));
        }
        start += n;
    }
    Ok(())
}

fn seq_of(buf: &[u8]) -> u64 {
    u64::from_le_bytes(buf[..8].try_into().expect("messages are at least 8 bytes"))
}

/// Checks that `buf` is message `expected`, byte for byte.
pub(crate) fn verify(buf: &[u8], expected: u64) -> Result<(), BenchError> {
    let seq = seq_of(buf);
    if seq != expected {
        return Err(BenchError::Verify(format!(
            "received message {seq}, expected {expected}"
        )));
    }
    let words = buf[8..].chunks_exact(8);
    let tail = words.remainder();
    let n = buf[8..].len() / 8;
    let words_ok = words
        .enumerate()
        .all(|(j, w)| w == pattern_word(seq, j).to_le_bytes());
    let tail_ok = tail == &pattern_word(seq, n).to_le_bytes()[..tail.len()];
    if words_ok && tail_ok {
        Ok(())
    } else {
        Err(BenchError::Verify(format!(
            "message {seq}: its content is not what was sent"
        )))
    }
}

/// CPU time (user + system) this process has used, in nanoseconds.
pub fn cpu_time_ns() -> u64 {
    // SAFETY: rusage is plain data; zeroed is valid and the call fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer is to our rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU time of both processes over a measurement, with the messages each
/// handled in that time.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuTotals {
    /// Measuring process (the round trip's initiator, the stream's sender).
    pub measurer_ns: u64,
    /// Messages it handled meanwhile.
    pub measurer_msgs: u64,
    /// Peer process (the echoer, the stream's receiver).
    pub peer_ns: u64,
    /// Messages it handled meanwhile.
    pub peer_msgs: u64,
}

impl CpuTotals {
    /// Adds another measurement's totals.
    pub fn add(&mut self, o: &CpuTotals) {
        self.measurer_ns += o.measurer_ns;
        self.measurer_msgs += o.measurer_msgs;
        self.peer_ns += o.peer_ns;
        self.peer_msgs += o.peer_msgs;
    }
    /// Nanoseconds of CPU per message in the measuring process.
    pub fn measurer_per_msg(&self) -> f64 {
        self.measurer_ns as f64 / self.measurer_msgs.max(1) as f64
    }
    /// Nanoseconds of CPU per message in the peer.
    pub fn peer_per_msg(&self) -> f64 {
        self.peer_ns as f64 / self.peer_msgs.max(1) as f64
    }
}

/// Where and how a benchmark runs.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Memory for hwlink links, the floor and eventfd's buffer.
    pub backend: Backend,
    /// CPUs for (this process, the peer); None leaves both unpinned.
    pub cpus: Option<(usize, usize)>,
}

/// Round trips measured in one session.
#[derive(Clone, Debug, Default)]
pub struct RoundTrips {
    /// Nanoseconds of each measured round trip.
    pub samples: Vec<u64>,
    /// Round trips made to warm up, before those measured.
    pub warmup: u64,
    /// CPU time of both processes.
    pub cpu: CpuTotals,
}

/// A one-way stream measured in one session.
#[derive(Clone, Copy, Debug, Default)]
pub struct Streamed {
    /// Messages the peer received and verified.
    pub messages: u64,
    /// Bytes in them.
    pub bytes: u64,
    /// The peer's time from the first message to the stop message.
    pub elapsed_ns: u64,
    /// CPU time of both processes.
    pub cpu: CpuTotals,
}

impl Streamed {
    /// Adds another session's figures.
    pub fn add(&mut self, o: &Streamed) {
        self.messages += o.messages;
        self.bytes += o.bytes;
        self.elapsed_ns += o.elapsed_ns;
        self.cpu.add(&o.cpu);
    }
    /// Messages per second.
    pub fn msgs_per_s(&self) -> f64 {
        self.messages as f64 * 1e9 / self.elapsed_ns.max(1) as f64
    }
    /// Gigabytes (10^9 bytes) per second.
    pub fn gb_per_s(&self) -> f64 {
        self.bytes as f64 / self.elapsed_ns.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for m in Mechanism::ALL {
            assert_eq!(m.name().parse::<Mechanism>().unwrap(), m);
        }
        assert!("carrier-pigeon".parse::<Mechanism>().is_err());
    }

    #[test]
    fn fill_then_verify() {
        for len in [8, 13, 64, 100] {
            let mut b = vec![0u8; len];
            fill(&mut b, 7);
            verify(&b, 7).unwrap();
            assert!(verify(&b, 8).is_err());
            b[len - 1] ^= 1;
            assert!(len == 8 || verify(&b, 7).is_err(), "{len}");
        }
        // The same body under another sequence number does not pass.
        let (mut a, mut b) = (vec![0u8; 64], vec![0u8; 64]);
        fill(&mut a, 1);
        fill(&mut b, 2);
        a[..8].copy_from_slice(&b[..8]);
        assert!(verify(&a, 2).is_err());
    }
}
