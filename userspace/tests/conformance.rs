//! The contract every way of sending honours, checked by one generic body
//! over every backend (hugepages, shm) and every flavour: a link (SPSC
//! ring), a mailbox with bounded buffering (MPMC ring), unbounded (segment
//! chain) and zero capacity (rendezvous), and a domain's direct links with
//! each buffering. The contract:
//!
//! - `try_recv` on an empty queue is `Empty`; a timed receive on it
//!   returns the timeout error (how fast is not asserted);
//! - `try_send` on a full queue is `Full` with the message handed back (a
//!   zero-capacity queue is full while nobody receives; an unbounded one is
//!   never full, but past its byte limit is `MemoryLimit`, message back);
//! - messages arrive in the order they were sent, and messages of 0, 1 and
//!   the largest slot size arrive byte-exact;
//! - once the receiver is gone (dropped; a mailbox removed; a domain member
//!   left), a send is `Disconnected` (a domain: `MemberGone`), message
//!   back.
//!
//! Every case runs in this process: the receiver is a thread when sending
//! needs one to proceed.

use hwlink::{
    Access, Backend, Buffering, Domain, LinkBuilder, MailboxBuilder, OpenError, RecvError,
    SendError,
};
use hwlink_drivers::MapError;
use std::time::Duration;

/// The bound on any single wait.
const T: Duration = Duration::from_secs(30);
/// Slots of the bounded flavours.
const CAP: u32 = 8;
/// Byte limit of the unbounded flavours: room for a few 2 MiB segments on
/// hugepages.
const LIMIT: u64 = 8 << 20;

/// The sending end of a flavour.
trait Tx: Send {
    fn try_send(&mut self, m: Vec<u8>) -> Result<(), SendError<Vec<u8>>>;
    fn send_timeout(&mut self, m: Vec<u8>, t: Duration) -> Result<(), SendError<Vec<u8>>>;
}

/// The receiving end of a flavour.
trait Rx: Send {
    fn try_recv(&mut self) -> Result<Vec<u8>, RecvError>;
    fn recv_timeout(&mut self, t: Duration) -> Result<Vec<u8>, RecvError>;
    /// Goes away: dropped, removed or left.
    fn close(self: Box<Self>);
}

/// A flavour's two ends and what it promises.
struct Pair {
    tx: Box<dyn Tx>,
    rx: Box<dyn Rx>,
    /// Largest message.
    max: usize,
    buffering: Buffering,
    /// Whether a send to a receiver that is gone is `MemberGone` (a
    /// domain) rather than `Disconnected`.
    member: bool,
}

impl Tx for hwlink::Sender {
    fn try_send(&mut self, m: Vec<u8>) -> Result<(), SendError<Vec<u8>>> {
        hwlink::Sender::try_send(self, m)
    }
    fn send_timeout(&mut self, m: Vec<u8>, t: Duration) -> Result<(), SendError<Vec<u8>>> {
        hwlink::Sender::send_timeout(self, m, t)
    }
}

impl Rx for hwlink::Receiver {
    fn try_recv(&mut self) -> Result<Vec<u8>, RecvError> {
        hwlink::Receiver::try_recv(self)
    }
    fn recv_timeout(&mut self, t: Duration) -> Result<Vec<u8>, RecvError> {
        hwlink::Receiver::recv_timeout(self, t)
    }
    fn close(self: Box<Self>) {
        drop(self);
    }
}

impl Tx for hwlink::Mailbox {
    fn try_send(&mut self, m: Vec<u8>) -> Result<(), SendError<Vec<u8>>> {
        hwlink::Mailbox::try_send(self, m)
    }
    fn send_timeout(&mut self, m: Vec<u8>, t: Duration) -> Result<(), SendError<Vec<u8>>> {
        hwlink::Mailbox::send_timeout(self, m, t)
    }
}

impl Rx for hwlink::Mailbox {
    fn try_recv(&mut self) -> Result<Vec<u8>, RecvError> {
        hwlink::Mailbox::try_recv(self)
    }
    fn recv_timeout(&mut self, t: Duration) -> Result<Vec<u8>, RecvError> {
        hwlink::Mailbox::recv_timeout(self, t)
    }
    fn close(self: Box<Self>) {
        self.remove().expect("remove the mailbox");
    }
}

/// Member `a` of a domain, sending to `b`.
struct MemberTx(hwlink::Member);
/// Member `b` of a domain, receiving from `a`.
struct MemberRx(hwlink::Member);

impl Tx for MemberTx {
    fn try_send(&mut self, m: Vec<u8>) -> Result<(), SendError<Vec<u8>>> {
        self.0.try_send("b", m)
    }
    fn send_timeout(&mut self, m: Vec<u8>, t: Duration) -> Result<(), SendError<Vec<u8>>> {
        self.0.send_timeout("b", m, t)
    }
}

impl Rx for MemberRx {
    fn try_recv(&mut self) -> Result<Vec<u8>, RecvError> {
        self.0.try_recv_from("a")
    }
    fn recv_timeout(&mut self, t: Duration) -> Result<Vec<u8>, RecvError> {
        self.0.recv_from_timeout("a", t)
    }
    fn close(self: Box<Self>) {
        self.0.leave();
    }
}

/// A name unique to this process and case.
fn unique(tag: &str) -> String {
    format!("c{}-{tag}", std::process::id())
}

/// The flavours.
#[derive(Clone, Copy, Debug)]
enum Flavour {
    Link,
    Mailbox(Buffering),
    Domain(Buffering),
}

/// Opens both ends of `flavour` on `backend`.
fn open(tag: &str, backend: Backend, flavour: Flavour) -> Result<Pair, OpenError> {
    let name = unique(tag);
    match flavour {
        Flavour::Link => {
            let b = LinkBuilder::new(&name)
                .capacity(CAP)
                .slot_size(256)
                .backend(backend);
            let tx = b.create_sender()?;
            let rx = b.open_receiver().unwrap();
            Ok(Pair {
                max: tx.max_message(),
                tx: Box::new(tx),
                rx: Box::new(rx),
                buffering: Buffering::Bounded(CAP),
                member: false,
            })
        }
        Flavour::Mailbox(buffering) => {
            let b = MailboxBuilder::new()
                .name(&name)
                .buffering(buffering)
                .slot_size(256)
                .backend(backend);
            let rx = b.create(Access::Recv)?;
            let tx = b.open(&name, Access::Send).unwrap();
            Ok(Pair {
                max: tx.max_message(),
                tx: Box::new(tx),
                rx: Box::new(rx),
                buffering,
                member: false,
            })
        }
        Flavour::Domain(buffering) => {
            let b = Domain::builder(&name)
                .backend(backend)
                .slot_size(256)
                .buffering(buffering);
            let a = b.join("a")?;
            let bm = b.join("b").unwrap();
            Ok(Pair {
                max: a.max_message(),
                tx: Box::new(MemberTx(a)),
                rx: Box::new(MemberRx(bm)),
                buffering,
                member: true,
            })
        }
    }
}

/// Message `seq` of the FIFO check: its sequence number then bytes of its
/// own, 8 to 200 bytes long.
fn message(seq: u64) -> Vec<u8> {
    let len = 8 + (seq * 37 % 193) as usize;
    let mut m = seq.to_le_bytes().to_vec();
    m.extend((8..len).map(|i| (seq as usize * 31 + i * 7) as u8));
    m
}

/// The one body: the whole contract for `flavour` on `backend`.
fn conformance(tag: &str, backend: Backend, flavour: Flavour) {
    let Pair {
        mut tx,
        mut rx,
        max,
        buffering,
        member,
    } = match open(tag, backend, flavour) {
        Ok(p) => p,
        Err(OpenError::Map(
            e @ (MapError::NoHugepages { .. }
            | MapError::HugepagesDenied { .. }
            | MapError::HugepagesUnsupported),
        )) if backend == Backend::Hugepage => {
            println!("SKIPPED {flavour:?} on {backend:?}: no hugepages to be had: {e}");
            return;
        }
        Err(e) => panic!("{flavour:?} on {backend:?}: opening: {e:?} ({e})"),
    };
    let what = format!("{flavour:?} on {backend:?}");
    assert!(max >= 200, "{what}: largest message {max}");

    // Empty.
    assert_eq!(rx.try_recv(), Err(RecvError::Empty), "{what}: try_recv");
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(20)),
        Err(RecvError::Timeout),
        "{what}: recv_timeout on empty"
    );

    // Full, with the message back; then what was queued arrives in order.
    let extra = b"one too many".to_vec();
    let queued = match buffering {
        Buffering::Bounded(n) => {
            for seq in 0..u64::from(n) {
                tx.try_send(message(seq))
                    .unwrap_or_else(|e| panic!("{what}: try_send #{seq}: {e:?}"));
            }
            match tx.try_send(extra.clone()) {
                Err(SendError::Full(back)) => assert_eq!(back, extra, "{what}: Full hands back"),
                other => panic!("{what}: try_send on full: {other:?}"),
            }
            u64::from(n)
        }
        Buffering::Zero => {
            match tx.try_send(extra.clone()) {
                Err(SendError::Full(back)) => assert_eq!(back, extra, "{what}: Full hands back"),
                other => panic!("{what}: try_send without a receiver: {other:?}"),
            }
            0
        }
        Buffering::Unbounded { byte_limit } => {
            let mut seq = 0;
            loop {
                match tx.try_send(message(seq)) {
                    Ok(()) => seq += 1,
                    Err(SendError::MemoryLimit { limit, .. }) => {
                        assert_eq!(limit, byte_limit, "{what}");
                        break;
                    }
                    Err(e) => panic!("{what}: try_send #{seq}: {e:?}"),
                }
                assert!(seq < 1_000_000, "{what}: the byte limit never hit");
            }
            match tx.try_send(extra.clone()) {
                Err(e @ SendError::MemoryLimit { .. }) => {
                    assert_eq!(e.into_inner(), Some(extra.clone()), "{what}: hands back")
                }
                other => panic!("{what}: try_send past the limit: {other:?}"),
            }
            seq
        }
    };
    for seq in 0..queued {
        assert_eq!(
            rx.recv_timeout(T),
            Ok(message(seq)),
            "{what}: queued message #{seq}"
        );
    }
    assert_eq!(rx.try_recv(), Err(RecvError::Empty), "{what}: drained");

    // FIFO and sizes 0, 1 and the largest, byte-exact, with the receiver
    // a thread (a zero-capacity send waits for it).
    let mut sent: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0xa5],
        (0..max).map(|i| (i * 13 + 5) as u8).collect(),
    ];
    sent.extend((0..300).map(message));
    let n = sent.len();
    let receiver = std::thread::spawn(move || {
        let got: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                rx.recv_timeout(T)
                    .unwrap_or_else(|e| panic!("receiving #{i}: {e:?}"))
            })
            .collect();
        (rx, got)
    });
    for (i, m) in sent.iter().enumerate() {
        tx.send_timeout(m.clone(), T)
            .unwrap_or_else(|e| panic!("{what}: sending #{i}: {e:?}"));
    }
    let (rx, got) = receiver.join().expect("the receiver thread");
    assert_eq!(got.len(), n, "{what}");
    for (i, (g, s)) in got.iter().zip(&sent).enumerate() {
        assert_eq!(g, s, "{what}: message #{i} ({} bytes sent)", s.len());
    }

    // The receiver goes: a send is refused, message back.
    rx.close();
    let m = b"after".to_vec();
    match tx.send_timeout(m.clone(), T) {
        Err(SendError::Disconnected(back)) if !member => assert_eq!(back, m, "{what}"),
        Err(e @ SendError::MemberGone { .. }) if member => {
            assert_eq!(e.into_inner(), Some(m), "{what}")
        }
        other => panic!("{what}: send after the receiver went: {other:?}"),
    }
    drop(tx);
    let left: Vec<String> = hwlink::admin::list()
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .filter(|n| n.contains(&unique(tag)))
        .collect();
    for r in &left {
        let _ = hwlink::admin::remove(r);
    }
    assert!(left.is_empty(), "{what}: regions left behind: {left:?}");
}

/// One `#[test]` per (backend, flavour): `name(tag)`, `tag` naming its
/// regions.
macro_rules! conformance_tests {
    ($($name:ident($tag:literal): ($backend:ident, $flavour:expr),)*) => {$(
        #[test]
        fn $name() {
            conformance($tag, Backend::$backend, $flavour);
        }
    )*};
}

const UNBOUNDED: Buffering = Buffering::Unbounded { byte_limit: LIMIT };

conformance_tests! {
    shm_link("sl"): (Shm, Flavour::Link),
    shm_mailbox_bounded("smb"): (Shm, Flavour::Mailbox(Buffering::Bounded(CAP))),
    shm_mailbox_unbounded("smu"): (Shm, Flavour::Mailbox(UNBOUNDED)),
    shm_mailbox_zero("smz"): (Shm, Flavour::Mailbox(Buffering::Zero)),
    shm_domain_bounded("sdb"): (Shm, Flavour::Domain(Buffering::Bounded(CAP))),
    shm_domain_unbounded("sdu"): (Shm, Flavour::Domain(UNBOUNDED)),
    shm_domain_zero("sdz"): (Shm, Flavour::Domain(Buffering::Zero)),
    huge_link("hl"): (Hugepage, Flavour::Link),
    huge_mailbox_bounded("hmb"): (Hugepage, Flavour::Mailbox(Buffering::Bounded(CAP))),
    huge_mailbox_unbounded("hmu"): (Hugepage, Flavour::Mailbox(UNBOUNDED)),
    huge_mailbox_zero("hmz"): (Hugepage, Flavour::Mailbox(Buffering::Zero)),
    huge_domain_bounded("hdb"): (Hugepage, Flavour::Domain(Buffering::Bounded(CAP))),
    huge_domain_unbounded("hdu"): (Hugepage, Flavour::Domain(UNBOUNDED)),
    huge_domain_zero("hdz"): (Hugepage, Flavour::Domain(Buffering::Zero)),
}
