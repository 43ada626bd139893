//! Shared-memory transports without the kernel: hwlink SPSC links and the cache-line floor.

use super::{BenchError, Mechanism, Options, ParentSide, PeerSpec, Transport, Workload};
use hwlink::WaitStrategy;
use hwlink::{LinkBuilder, Receiver, Sender};
use hwlink_drivers::Region;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Slots of a link for `size`-byte messages: a power of two from 4 to
/// 1024, keeping the ring's payload near 8 MiB at most.
pub(crate) fn link_capacity(size: usize) -> u32 {
    let fit = (8 << 20) / size.max(1);
    let pow = if fit == 0 {
        1
    } else {
        1usize << (usize::BITS - 1 - fit.leading_zeros())
    };
    pow.clamp(4, 1024) as u32
}

fn wait_of(m: Mechanism) -> WaitStrategy {
    match m {
        Mechanism::HwlinkPoll
        | Mechanism::HwlinkPacked
        | Mechanism::HwlinkSelectPoll
        | Mechanism::HwlinkTyped => WaitStrategy::BusyPoll,
        Mechanism::HwlinkPark | Mechanism::HwlinkSelectPark => WaitStrategy::Park,
        _ => WaitStrategy::SpinPark,
    }
}

pub(super) fn link_err(e: impl std::fmt::Display) -> BenchError {
    BenchError::Link(e.to_string())
}

/// One end of a pair of links (the reverse one is absent when streaming).
struct Links {
    tx: Option<Sender>,
    rx: Option<Receiver>,
    /// Write and read messages in place (hwlink-zero-copy).
    in_place: bool,
}

impl Transport for Links {
    fn send(&mut self, msg: &[u8]) -> Result<(), BenchError> {
        let tx = self
            .tx
            .as_mut()
            .ok_or_else(|| link_err("no sending link"))?;
        tx.send(msg).map_err(|e| link_err(e.to_string()))
    }
    fn recv(&mut self, buf: &mut [u8]) -> Result<(), BenchError> {
        let rx = self
            .rx
            .as_mut()
            .ok_or_else(|| link_err("no receiving link"))?;
        let n = rx.recv_into(buf).map_err(link_err)?;
        if n != buf.len() {
            return Err(BenchError::Verify(format!(
                "received {n} bytes, expected {}",
                buf.len()
            )));
        }
        Ok(())
    }
    fn send_written(&mut self, buf: &mut [u8], seq: u64) -> Result<(), BenchError> {
        if !self.in_place {
            super::fill(buf, seq);
            return self.send(buf);
        }
        let tx = self
            .tx
            .as_mut()
            .ok_or_else(|| link_err("no sending link"))?;
        let mut slot = tx.reserve(buf.len()).map_err(link_err)?;
        super::fill_shm(&mut slot.bytes_mut(), seq);
        slot.commit();
        Ok(())
    }
    fn recv_checked(&mut self, buf: &mut [u8], expected: u64) -> Result<u64, BenchError> {
        if !self.in_place {
            self.recv(buf)?;
            let seq = super::seq_of(buf);
            if seq != super::STOP {
                super::verify(buf, expected)?;
            }
            return Ok(seq);
        }
        let rx = self
            .rx
            .as_mut()
            .ok_or_else(|| link_err("no receiving link"))?;
        let want = buf.len();
        rx.recv_with(|m| {
            if m.len() != want {
                return Err(BenchError::Verify(format!(
                    "received {} bytes, expected {want}",
                    m.len()
                )));
            }
            let seq = super::seq_of_shm(m);
            if seq != super::STOP {
                super::verify_shm(m, expected)?;
            }
            Ok(seq)
        })
        .map_err(link_err)?
    }
}

/// The link `<name>-<dir>` of a session, waiting as its mechanism says.
pub(super) fn builder(spec: &PeerSpec, dir: &str) -> LinkBuilder {
    LinkBuilder::new(format!("{}-{dir}", spec.name))
        .capacity(link_capacity(spec.size))
        .slot_size(spec.size as u32)
        .layout(if spec.mechanism == Mechanism::HwlinkPacked {
            hwlink::RingLayout::Packed
        } else {
            hwlink::RingLayout::Auto
        })
        .backend(spec.backend)
        .wait(wait_of(spec.mechanism))
        .ready_timeout(Duration::from_secs(5))
}

pub(super) fn link_parent(spec: &PeerSpec) -> Result<ParentSide, BenchError> {
    if spec.mechanism == Mechanism::HwlinkZeroCopy && spec.workload == Workload::RoundTrip {
        return Err(BenchError::Unsupported(
            "streams only: a round trip's echo copies the message either way, as hwlink-spin-park does"
                .into(),
        ));
    }
    let tx = builder(spec, "a").create_sender().map_err(link_err)?;
    let rx = match spec.workload {
        Workload::RoundTrip => Some(builder(spec, "b").create_receiver().map_err(link_err)?),
        Workload::Stream => None,
    };
    Ok(ParentSide::new(Links {
        tx: Some(tx),
        rx,
        in_place: spec.mechanism == Mechanism::HwlinkZeroCopy,
    }))
}

pub(super) fn link_child(spec: &PeerSpec) -> Result<Box<dyn Transport>, BenchError> {
    let rx = builder(spec, "a").open_receiver().map_err(link_err)?;
    let tx = match spec.workload {
        Workload::RoundTrip => Some(builder(spec, "b").open_sender().map_err(link_err)?),
        Workload::Stream => None,
    };
    Ok(Box::new(Links {
        tx,
        rx: Some(rx),
        in_place: spec.mechanism == Mechanism::HwlinkZeroCopy,
    }))
}

/// The message of the typed rows (`hwlink-typed`): a market tick, 64
/// bytes, `#[repr(C)]` with no padding. The harness's message bytes
/// (sequence number first) are its fields.
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct Tick {
    seq: u64,
    timestamp_ns: u64,
    instrument: u64,
    price: i64,
    quantity: u32,
    side: u16,
    flags: u16,
    venue: [u8; 8],
    order_id: u64,
    checksum: u64,
}

/// The one size the typed rows carry.
const TICK_SIZE: usize = std::mem::size_of::<Tick>();
const _: () = assert!(TICK_SIZE == 64);

/// One end of a pair of links carrying [`Tick`]s with `send_value` and
/// `recv_value` (the reverse link is absent when streaming). Round trips
/// move values as an application does: the measuring side keeps one tick
/// and stamps each round trip's sequence number into it, the peer sends
/// back the value it received. Streams (and the stop message) go through
/// the harness's byte buffer, so each side also copies between it and a
/// tick there.
struct TypedLinks {
    tx: Option<Sender>,
    rx: Option<Receiver>,
    tick: Tick,
}

impl TypedLinks {
    fn new(tx: Option<Sender>, rx: Option<Receiver>) -> TypedLinks {
        TypedLinks {
            tx,
            rx,
            tick: Tick {
                seq: 0,
                timestamp_ns: 1_700_000_000_000_000_000,
                instrument: 42,
                price: 10_125,
                quantity: 300,
                side: 1,
                flags: 0,
                venue: *b"XNAS\0\0\0\0",
                order_id: 7,
                checksum: 0,
            },
        }
    }
    fn tx(&mut self) -> Result<&mut Sender, BenchError> {
        self.tx.as_mut().ok_or_else(|| link_err("no sending link"))
    }
    fn rx(&mut self) -> Result<&mut Receiver, BenchError> {
        self.rx
            .as_mut()
            .ok_or_else(|| link_err("no receiving link"))
    }
}

impl Transport for TypedLinks {
    fn round_trip(&mut self, msg: &[u8], _echo: &mut [u8]) -> Result<u64, BenchError> {
        self.tick.seq = super::seq_of(msg);
        let tick = self.tick;
        self.tx()?.send_value(&tick).map_err(link_err)?;
        let back: Tick = self.rx()?.recv_value().map_err(link_err)?;
        Ok(back.seq)
    }
    fn echo(&mut self, _buf: &mut [u8]) -> Result<u64, BenchError> {
        let tick: Tick = self.rx()?.recv_value().map_err(link_err)?;
        if tick.seq != super::STOP {
            self.tx()?.send_value(&tick).map_err(link_err)?;
        }
        Ok(tick.seq)
    }
    fn send(&mut self, msg: &[u8]) -> Result<(), BenchError> {
        let tick = Tick::read_from_bytes(msg)
            .map_err(|_| BenchError::Verify(format!("a {}-byte message is no Tick", msg.len())))?;
        self.tx()?.send_value(&tick).map_err(link_err)
    }
    fn recv(&mut self, buf: &mut [u8]) -> Result<(), BenchError> {
        let tick: Tick = self.rx()?.recv_value().map_err(link_err)?;
        tick.write_to(buf).map_err(|_| {
            BenchError::Verify(format!("a Tick does not fill a {}-byte buffer", buf.len()))
        })
    }
}

pub(super) fn typed_parent(spec: &PeerSpec) -> Result<ParentSide, BenchError> {
    if spec.size != TICK_SIZE {
        return Err(BenchError::Unsupported(format!(
            "the typed rows carry one {TICK_SIZE}-byte #[repr(C)] struct: run them at --sizes {TICK_SIZE}, beside hwlink-poll"
        )));
    }
    let tx = builder(spec, "a").create_sender().map_err(link_err)?;
    let rx = match spec.workload {
        Workload::RoundTrip => Some(builder(spec, "b").create_receiver().map_err(link_err)?),
        Workload::Stream => None,
    };
    Ok(ParentSide::new(TypedLinks::new(Some(tx), rx)))
}

pub(super) fn typed_child(spec: &PeerSpec) -> Result<Box<dyn Transport>, BenchError> {
    let rx = builder(spec, "a").open_receiver().map_err(link_err)?;
    let tx = match spec.workload {
        Workload::RoundTrip => Some(builder(spec, "b").open_sender().map_err(link_err)?),
        Workload::Stream => None,
    };
    Ok(Box::new(TypedLinks::new(tx, Some(rx))))
}

/// Pipeline stage `stage`'s link to the next stage, created by this stage.
pub(super) fn chain_sender(spec: &PeerSpec, stage: usize) -> Result<Sender, BenchError> {
    builder(spec, &format!("p{stage}"))
        .create_sender()
        .map_err(link_err)
}

/// Pipeline stage `stage`'s end of the chain: receives from the previous
/// stage's link (waiting up to five seconds for that stage to create it)
/// and sends on `tx`.
pub(super) fn chain_end(
    spec: &PeerSpec,
    stage: usize,
    stages: usize,
    tx: Sender,
) -> Result<Box<dyn Transport>, BenchError> {
    let prev = builder(spec, &format!("p{}", (stage + stages - 1) % stages));
    let deadline = Instant::now() + Duration::from_secs(5);
    let rx = loop {
        match prev.open_receiver() {
            Ok(rx) => break rx,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => return Err(link_err(e)),
        }
    };
    Ok(Box::new(Links {
        tx: Some(tx),
        rx: Some(rx),
        in_place: false,
    }))
}

/// Offsets of the two flags: separate cache lines (and prefetch pairs).
const PING: usize = 0;
const PONG: usize = 128;
/// How long the floor waits for its peer before giving up.
const FLOOR_PATIENCE: Duration = Duration::from_secs(10);

/// One side of the floor: writes its flag, spins on the other's. Only the
/// sequence number travels, whatever the message size. The one floor of
/// both harnesses (`hwlink bench` and `pingpong`).
pub(crate) struct Floor {
    region: Region,
    mine: usize,
    theirs: usize,
    last: u64,
}

impl Floor {
    /// Creates the flags' region `NAME-floor`: the measuring side.
    pub(crate) fn create(name: &str, backend: hwlink::Backend) -> Result<Floor, BenchError> {
        let region = Region::create(&format!("{name}-floor"), 4096, backend).map_err(link_err)?;
        Ok(Floor {
            region,
            mine: PING,
            theirs: PONG,
            last: 0,
        })
    }

    /// Opens the flags' region `NAME-floor`: the echoing side.
    pub(crate) fn open(name: &str, backend: hwlink::Backend) -> Result<Floor, BenchError> {
        let region = Region::open(&format!("{name}-floor"), backend).map_err(link_err)?;
        Ok(Floor {
            region,
            mine: PONG,
            theirs: PING,
            last: 0,
        })
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        assert!(self.region.len() >= offset + 8);
        // SAFETY: the region is page aligned and at least offset + 8 bytes
        // long; both processes access these words only atomically.
        unsafe { &*self.region.as_ptr().add(offset).cast::<AtomicU64>() }
    }
}

impl Transport for Floor {
    fn send(&mut self, msg: &[u8]) -> Result<(), BenchError> {
        let seq = u64::from_le_bytes(msg[..8].try_into().expect("8 bytes"));
        self.word(self.mine).store(seq, Ordering::Release);
        Ok(())
    }
    fn recv(&mut self, buf: &mut [u8]) -> Result<(), BenchError> {
        let w = self.word(self.theirs);
        let mut spins = 0u32;
        let mut since: Option<Instant> = None;
        loop {
            let v = w.load(Ordering::Acquire);
            if v != self.last {
                self.last = v;
                buf[..8].copy_from_slice(&v.to_le_bytes());
                return Ok(());
            }
            core::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins % (1 << 20) == 0 {
                let t0 = *since.get_or_insert_with(Instant::now);
                if t0.elapsed() > FLOOR_PATIENCE {
                    return Err(BenchError::Peer(
                        "the floor's peer did not answer for 10 s".into(),
                    ));
                }
            }
        }
    }
}

pub(super) fn floor_parent(spec: &PeerSpec, opts: &Options) -> Result<ParentSide, BenchError> {
    if spec.workload == Workload::Stream {
        return Err(BenchError::Unsupported(
            "the floor is round trip only: two cache-line flags carry no payload".into(),
        ));
    }
    if opts.cpus.is_some_and(|(a, b)| a == b) {
        return Err(BenchError::Unsupported(
            "busy-polling flags on one shared core measure only the scheduler; use two CPUs".into(),
        ));
    }
    Ok(ParentSide::new(Floor::create(&spec.name, spec.backend)?))
}

pub(super) fn floor_child(spec: &PeerSpec) -> Result<Box<dyn Transport>, BenchError> {
    Ok(Box::new(Floor::open(&spec.name, spec.backend)?))
}

/// One end of a pair of mailboxes (the reverse one is absent when
/// streaming): the MPMC transport, one sender and one receiver on each.
struct Mailboxes {
    tx: Option<hwlink::Mailbox>,
    rx: Option<hwlink::Mailbox>,
}

impl Transport for Mailboxes {
    fn send(&mut self, msg: &[u8]) -> Result<(), BenchError> {
        let tx = self
            .tx
            .as_mut()
            .ok_or_else(|| link_err("no sending mailbox"))?;
        tx.send(msg).map_err(|e| link_err(e.to_string()))
    }
    fn recv(&mut self, buf: &mut [u8]) -> Result<(), BenchError> {
        let rx = self
            .rx
            .as_mut()
            .ok_or_else(|| link_err("no receiving mailbox"))?;
        let n = rx
            .recv_with(|m, _| {
                m.copy_to(buf);
                m.len()
            })
            .map_err(link_err)?;
        if n != buf.len() {
            return Err(BenchError::Verify(format!(
                "received {n} bytes, expected {}",
                buf.len()
            )));
        }
        Ok(())
    }
}

fn mailbox_builder(spec: &PeerSpec) -> hwlink::MailboxBuilder {
    hwlink::MailboxBuilder::new()
        .buffering(hwlink::Buffering::Bounded(link_capacity(spec.size)))
        .slot_size(spec.size as u32)
        .backend(spec.backend)
        .wait(WaitStrategy::SpinPark)
}

/// Removes a mailbox when the measuring side is done with it (mailboxes
/// outlive their creator otherwise).
pub(super) struct Owned(Option<hwlink::Mailbox>);

impl Drop for Owned {
    fn drop(&mut self) {
        if let Some(m) = self.0.take() {
            let _ = m.remove();
        }
    }
}

struct OwnedMailboxes {
    inner: Mailboxes,
    _keep: Vec<Owned>,
}

impl Transport for OwnedMailboxes {
    fn send(&mut self, msg: &[u8]) -> Result<(), BenchError> {
        self.inner.send(msg)
    }
    fn recv(&mut self, buf: &mut [u8]) -> Result<(), BenchError> {
        self.inner.recv(buf)
    }
}

pub(super) fn mailbox_parent(spec: &PeerSpec) -> Result<ParentSide, BenchError> {
    use hwlink::Access;
    let b = mailbox_builder(spec);
    let tx = b
        .clone()
        .name(format!("{}-ma", spec.name))
        .create(Access::Send)
        .map_err(link_err)?;
    // The creator's handles remove the mailboxes at the end; the sending
    // and receiving handles are separate attachments.
    let keep_a = b
        .open(&format!("{}-ma", spec.name), Access::Send)
        .map_err(link_err)?;
    let (rx, keep) = match spec.workload {
        Workload::RoundTrip => {
            let created = b
                .clone()
                .name(format!("{}-mb", spec.name))
                .create(Access::Recv)
                .map_err(link_err)?;
            let rx = b
                .open(&format!("{}-mb", spec.name), Access::Recv)
                .map_err(link_err)?;
            (Some(rx), vec![Owned(Some(tx)), Owned(Some(created))])
        }
        Workload::Stream => (None, vec![Owned(Some(tx))]),
    };
    Ok(ParentSide::new(OwnedMailboxes {
        inner: Mailboxes {
            tx: Some(keep_a),
            rx,
        },
        _keep: keep,
    }))
}

/// The pipeline's hops as mailboxes `<name>-h<k>` (hop k carries messages
/// from stage k to stage k + 1), created by stage 0 and removed when the
/// returned handles drop.
pub(super) fn mailbox_chain(spec: &PeerSpec, stages: usize) -> Result<Vec<Owned>, BenchError> {
    (0..stages)
        .map(|k| {
            mailbox_builder(spec)
                .name(format!("{}-h{k}", spec.name))
                .create(hwlink::Access::SendRecv)
                .map(|m| Owned(Some(m)))
                .map_err(link_err)
        })
        .collect()
}

/// Stage `stage`'s ends of the mailbox chain: receives from hop stage - 1,
/// sends on hop stage.
pub(super) fn mailbox_chain_end(
    spec: &PeerSpec,
    stage: usize,
    stages: usize,
) -> Result<Box<dyn Transport>, BenchError> {
    use hwlink::Access;
    let b = mailbox_builder(spec).ready_timeout(Duration::from_secs(5));
    let prev = (stage + stages - 1) % stages;
    let rx = b
        .open(&format!("{}-h{prev}", spec.name), Access::Recv)
        .map_err(link_err)?;
    let tx = b
        .open(&format!("{}-h{stage}", spec.name), Access::Send)
        .map_err(link_err)?;
    Ok(Box::new(Mailboxes {
        tx: Some(tx),
        rx: Some(rx),
    }))
}

pub(super) fn mailbox_child(spec: &PeerSpec) -> Result<Box<dyn Transport>, BenchError> {
    use hwlink::Access;
    let b = mailbox_builder(spec).ready_timeout(Duration::from_secs(5));
    let rx = b
        .open(&format!("{}-ma", spec.name), Access::Recv)
        .map_err(link_err)?;
    let tx = match spec.workload {
        Workload::RoundTrip => Some(
            b.open(&format!("{}-mb", spec.name), Access::Send)
                .map_err(link_err)?,
        ),
        Workload::Stream => None,
    };
    Ok(Box::new(Mailboxes { tx, rx: Some(rx) }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn capacities() {
        use super::link_capacity;
        assert_eq!(link_capacity(8), 1024);
        assert_eq!(link_capacity(64 << 10), 128);
        assert_eq!(link_capacity(1 << 20), 8);
        assert_eq!(link_capacity(16 << 20), 4);
    }
}
