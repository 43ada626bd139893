//! QEMU's ivshmem-doorbell server protocol (QEMU docs/specs/ivshmem-spec),
//! both ends: [`IvshmemServer`], which Debian's QEMU does not ship, and
//! [`IvshmemClient`], through which a host process joins as a peer, the way
//! QEMU's ivshmem-client does, so doorbells work host <-> guest both ways.
//!
//! Every message is one little-endian i64, with at most one file descriptor
//! (SCM_RIGHTS). On connect the server sends: the protocol version (0); the
//! client's own id; -1 with the shared-memory fd; for every other peer, its
//! id with each of its eventfds (one per vector); then the client's own id
//! with each of its own eventfds. Later, an id with an fd announces a new
//! peer's vector, an id without fd says that peer is gone. Ringing peer P's
//! vector V is writing 1 to P's V-th eventfd (QEMU turns that into MSI-X
//! vector V inside P).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::device::{DeviceError, DeviceMemory};
use crate::doorbell::{Counters, DoorbellCounts, IvshmemDoorbell};
use crate::fd_passing::{recv_msg, send_msg};
use crate::vfio_sys;

/// The protocol version this module speaks.
pub const PROTOCOL_VERSION: i64 = 0;
/// Most vectors a peer may have (the doorbell register's low 16 bits).
pub const MAX_VECTORS: u16 = 64;

pub(crate) fn proto_err(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// One connected peer, as the server tracks it.
#[derive(Debug)]
struct ServerPeer {
    id: i64,
    stream: UnixStream,
    vectors: Vec<OwnedFd>,
}

/// An ivshmem-doorbell server: hands every client the shared memory and
/// everybody's eventfds.
#[derive(Debug)]
pub struct IvshmemServer {
    listener: UnixListener,
    socket: PathBuf,
    shm: File,
    vectors: u16,
    peers: Arc<Mutex<Vec<ServerPeer>>>,
}

impl IvshmemServer {
    /// Listens on `socket` (replacing a stale socket file) and serves the
    /// file `memory` (created, and with `size` emptied and resized) with
    /// `vectors` interrupt vectors per peer.
    pub fn bind(
        socket: &Path,
        memory: &Path,
        size: Option<u64>,
        vectors: u16,
    ) -> Result<IvshmemServer, DeviceError> {
        if vectors == 0 || vectors > MAX_VECTORS {
            return Err(DeviceError::io(
                "use 1 to 64 vectors for",
                socket,
                io::Error::from(io::ErrorKind::InvalidInput),
            ));
        }
        let shm = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(memory)
            .map_err(|e| DeviceError::io("open", memory, e))?;
        if let Some(size) = size {
            // Afresh: links on device memory are never freed, so a reused
            // file would still hold the last run's.
            shm.set_len(0)
                .and_then(|()| shm.set_len(size))
                .map_err(|e| DeviceError::io("resize", memory, e))?;
        }
        let len = shm
            .metadata()
            .map_err(|e| DeviceError::io("stat", memory, e))?
            .len();
        DeviceMemory::check_len(memory, len)?;
        if socket.exists() && UnixStream::connect(socket).is_err() {
            let _ = std::fs::remove_file(socket);
        }
        let listener =
            UnixListener::bind(socket).map_err(|e| DeviceError::io("listen on", socket, e))?;
        Ok(IvshmemServer {
            listener,
            socket: socket.to_owned(),
            shm,
            vectors,
            peers: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// Serves clients until the process is stopped. `log` gets one line per
    /// event (connect, disconnect).
    pub fn serve(&self, log: impl Fn(&str) + Send + Sync + 'static) -> Result<(), DeviceError> {
        let log = Arc::new(log);
        let mut next_id: i64 = 0;
        for conn in self.listener.incoming() {
            let stream = match conn {
                Ok(s) => s,
                Err(e) => {
                    log(&format!("accept failed: {e}"));
                    continue;
                }
            };
            let id = next_id;
            next_id = (next_id + 1) % i64::from(u16::MAX);
            match self.admit(id, stream) {
                Ok(watch) => {
                    log(&format!("peer {id} connected"));
                    let peers = self.peers.clone();
                    let log = log.clone();
                    std::thread::spawn(move || {
                        // A peer never sends anything: end of stream (or an
                        // error) means it is gone.
                        let mut buf = [0u8; 64];
                        let mut watch = watch;
                        while matches!(watch.read(&mut buf), Ok(n) if n > 0) {}
                        Self::remove(&peers, id);
                        log(&format!("peer {id} disconnected"));
                    });
                }
                Err(e) => log(&format!("peer {id} refused: {e}")),
            }
        }
        Ok(())
    }

    /// Sends a new client everything, announces it to the others, and
    /// records it. Returns a clone of its stream to watch for its end.
    fn admit(&self, id: i64, stream: UnixStream) -> io::Result<UnixStream> {
        let vectors = (0..self.vectors)
            .map(|_| vfio_sys::eventfd())
            .collect::<io::Result<Vec<_>>>()?;
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        send_msg(&stream, PROTOCOL_VERSION, None)?;
        send_msg(&stream, id, None)?;
        send_msg(&stream, -1, Some(self.shm.as_raw_fd()))?;
        for other in peers.iter() {
            for v in &vectors {
                // A dead peer is removed by its watcher; ignore it here.
                let _ = send_msg(&other.stream, id, Some(v.as_raw_fd()));
            }
        }
        for other in peers.iter() {
            for v in &other.vectors {
                send_msg(&stream, other.id, Some(v.as_raw_fd()))?;
            }
        }
        for v in &vectors {
            send_msg(&stream, id, Some(v.as_raw_fd()))?;
        }
        let watch = stream.try_clone()?;
        peers.push(ServerPeer {
            id,
            stream,
            vectors,
        });
        Ok(watch)
    }

    fn remove(peers: &Mutex<Vec<ServerPeer>>, id: i64) {
        let mut peers = peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.retain(|p| p.id != id);
        for other in peers.iter() {
            let _ = send_msg(&other.stream, id, None);
        }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for IvshmemServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// What a client knows about the other peers: their eventfds by id.
#[derive(Debug, Default)]
struct PeerTable {
    peers: HashMap<u16, Vec<File>>,
    closed: bool,
}

/// A host process joined to an ivshmem server as a peer: it maps the
/// shared memory, rings other peers (guests) and is rung by them.
#[derive(Debug)]
pub struct IvshmemClient {
    id: u16,
    own: Vec<File>,
    table: Arc<(Mutex<PeerTable>, Condvar)>,
    stream: UnixStream,
    memory: Mutex<Option<DeviceMemory>>,
    counters: Counters,
}

impl Drop for IvshmemClient {
    fn drop(&mut self) {
        // The reader thread holds a clone of the socket: shut it down so the
        // server (and through it the other peers) learn this peer is gone.
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

impl IvshmemClient {
    /// Connects to the server at `socket` and reads the initial messages:
    /// version, own id, shared memory, the other peers' eventfds and
    /// `vectors` own eventfds (the server's vector count).
    pub fn connect(socket: &Path, vectors: u16) -> Result<Arc<IvshmemClient>, DeviceError> {
        let io_err = |e| DeviceError::io("talk to the ivshmem server at", socket, e);
        // The server's socket file appears at bind(2), a moment before it
        // listens: a refused connection is tried again for a while.
        let until = std::time::Instant::now() + Duration::from_secs(10);
        let stream = loop {
            match UnixStream::connect(socket) {
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
                    ) && std::time::Instant::now() < until =>
                {
                    std::thread::sleep(Duration::from_millis(50))
                }
                r => break r.map_err(io_err)?,
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(io_err)?;
        let next = || -> Result<(i64, Option<OwnedFd>), DeviceError> {
            recv_msg(&stream)
                .map_err(io_err)?
                .ok_or_else(|| io_err(proto_err("the server closed the connection")))
        };
        let (version, _) = next()?;
        if version != PROTOCOL_VERSION {
            return Err(io_err(proto_err(format!(
                "protocol version {version}, this build speaks {PROTOCOL_VERSION}"
            ))));
        }
        let (id, _) = next()?;
        let id = u16::try_from(id).map_err(|_| io_err(proto_err(format!("own id {id}"))))?;
        let (minus_one, shm) = next()?;
        let shm = match (minus_one, shm) {
            (-1, Some(fd)) => File::from(fd),
            _ => return Err(io_err(proto_err("expected -1 with the shared-memory fd"))),
        };
        let mut table = PeerTable::default();
        let mut own = Vec::new();
        while own.len() < usize::from(vectors) {
            match next()? {
                (peer, Some(fd)) if peer == i64::from(id) => own.push(File::from(fd)),
                (peer, Some(fd)) => {
                    let peer = u16::try_from(peer)
                        .map_err(|_| io_err(proto_err(format!("peer id {peer}"))))?;
                    table.peers.entry(peer).or_default().push(File::from(fd));
                }
                (peer, None) => {
                    if let Ok(p) = u16::try_from(peer) {
                        table.peers.remove(&p);
                    }
                }
            }
        }
        let len = shm.metadata().map_err(io_err)?.len();
        DeviceMemory::check_len(socket, len)?;
        let memory = crate::device::DeviceMemory::from_file(&shm, socket, len)?;
        stream.set_read_timeout(None).map_err(io_err)?;
        let table = Arc::new((Mutex::new(table), Condvar::new()));
        let reader = stream.try_clone().map_err(io_err)?;
        let shared = table.clone();
        std::thread::spawn(move || Self::follow(reader, shared));
        Ok(Arc::new(IvshmemClient {
            id,
            own,
            table,
            stream,
            memory: Mutex::new(Some(memory)),
            counters: Counters::default(),
        }))
    }

    /// Reads later announcements: new peers' eventfds, peers gone.
    fn follow(stream: UnixStream, table: Arc<(Mutex<PeerTable>, Condvar)>) {
        loop {
            let msg = recv_msg(&stream);
            let (lock, cv) = &*table;
            let mut t = lock.lock().unwrap_or_else(|p| p.into_inner());
            match msg {
                Ok(Some((peer, fd))) => {
                    if let Ok(p) = u16::try_from(peer) {
                        match fd {
                            Some(fd) => t.peers.entry(p).or_default().push(File::from(fd)),
                            None => {
                                t.peers.remove(&p);
                            }
                        }
                    }
                }
                Ok(None) | Err(_) => {
                    t.closed = true;
                    cv.notify_all();
                    return;
                }
            }
            cv.notify_all();
        }
    }

    /// The shared memory, once (the first call takes it).
    pub fn take_memory(&self) -> Option<DeviceMemory> {
        self.memory.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// The ids of the other peers now connected, in order.
    pub fn peers(&self) -> Vec<u16> {
        let t = self.table.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut ids: Vec<u16> = t.peers.keys().copied().collect();
        ids.sort();
        ids
    }

    /// Waits up to `timeout` until another peer is connected; returns its id.
    pub fn wait_for_peer(&self, timeout: Duration) -> Option<u16> {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.table;
        let mut t = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(&id) = t.peers.keys().min() {
                return Some(id);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || t.closed {
                return None;
            }
            t = cv
                .wait_timeout(t, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl IvshmemDoorbell for IvshmemClient {
    fn own_id(&self) -> u16 {
        self.id
    }

    fn vectors(&self) -> u16 {
        self.own.len() as u16
    }

    fn ring(&self, peer: u16, vector: u16) -> io::Result<()> {
        let t = self.table.0.lock().unwrap_or_else(|p| p.into_inner());
        let fd = t
            .peers
            .get(&peer)
            .and_then(|v| v.get(usize::from(vector)))
            .ok_or_else(|| proto_err(format!("no peer {peer} vector {vector} (yet)")))?;
        // eventfd: add 1 to the counter. `&File` implements Write.
        (&*fd).write_all(&1u64.to_ne_bytes())?;
        self.counters.rang();
        Ok(())
    }

    fn wait(&self, vector: u16, timeout: Option<Duration>) -> io::Result<bool> {
        let fd = self
            .own
            .get(usize::from(vector))
            .ok_or_else(|| proto_err(format!("no own vector {vector}")))?;
        let result = (|| {
            if take_eventfd(fd)? {
                return Ok(true);
            }
            if !vfio_sys::poll_readable(fd.as_fd().as_raw_fd(), timeout)? {
                return Ok(false);
            }
            take_eventfd(fd)
        })();
        self.counters.waited(result)
    }

    fn counts(&self) -> DoorbellCounts {
        self.counters.get()
    }
}

/// Reads (and so resets) an eventfd's counter without blocking; whether it
/// was signalled. The eventfds from the server may be blocking: read only
/// when poll says so.
pub(crate) fn take_eventfd(fd: &File) -> io::Result<bool> {
    if !vfio_sys::poll_readable(fd.as_raw_fd(), Some(Duration::ZERO))? {
        return Ok(false);
    }
    let mut b = [0u8; 8];
    match (&*fd).read(&mut b) {
        Ok(8) => Ok(true),
        Ok(_) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start_server(dir: &Path) -> PathBuf {
        let socket = dir.join("ivshmem.sock");
        let server = IvshmemServer::bind(&socket, &dir.join("memory"), Some(1 << 20), 2).unwrap();
        std::thread::spawn(move || server.serve(|_| {}));
        socket
    }

    #[test]
    fn two_peers_share_memory_and_ring_each_other() {
        if crate::qemu::skip_under_qemu(
            "ivshmem_server::tests::two_peers_share_memory_and_ring_each_other",
            "qemu-user 7.2's recvmsg with SCM_RIGHTS (MSG_CMSG_CLOEXEC) returns a bogus length \
             and the process dies of SIGSEGV; the ivshmem-server protocol passes descriptors",
        ) {
            return;
        }
        let dir = crate::testutil::TempDir::new();
        let socket = start_server(dir.path());
        let a = IvshmemClient::connect(&socket, 2).unwrap();
        let b = IvshmemClient::connect(&socket, 2).unwrap();
        assert_ne!(a.own_id(), b.own_id());
        assert_eq!((a.vectors(), b.vectors()), (2, 2));
        // b learned of a in its initial messages; a learns of b later.
        assert_eq!(b.peers(), vec![a.own_id()]);
        assert_eq!(
            a.wait_for_peer(Duration::from_secs(5)),
            Some(b.own_id()),
            "a hears of b"
        );

        let (ma, mb) = (a.take_memory().unwrap(), b.take_memory().unwrap());
        assert!(a.take_memory().is_none(), "the memory is handed out once");
        assert!(ma.write_register(8192, 0x1234_5678));
        assert_eq!(mb.read_register(8192), Some(0x1234_5678));

        // Nothing rung yet: a short wait times out.
        assert!(!b.wait(1, Some(Duration::from_millis(20))).unwrap());
        a.ring(b.own_id(), 1).unwrap();
        assert!(b.wait(1, Some(Duration::from_secs(5))).unwrap());
        assert!(
            !b.wait(0, Some(Duration::ZERO)).unwrap(),
            "only vector 1 was rung"
        );
        b.ring(a.own_id(), 0).unwrap();
        assert!(a.wait(0, None).unwrap());
        assert!(
            a.ring(999, 0).is_err(),
            "unknown peers are an error, not a hang"
        );
        assert!(a.ring(b.own_id(), 7).is_err(), "so are unknown vectors");

        // A peer that leaves is announced.
        let b_id = b.own_id();
        drop(b);
        let deadline = Instant::now() + Duration::from_secs(5);
        while a.peers().contains(&b_id) {
            assert!(Instant::now() < deadline, "a never heard b leave");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_client_of_a_non_server_fails_clearly() {
        let dir = crate::testutil::TempDir::new();
        let err = IvshmemClient::connect(&dir.path().join("nothing.sock"), 2).unwrap_err();
        assert!(err.to_string().contains("ivshmem server"), "{err}");
    }
}
