//! Kernel message queues: POSIX (`mq_open`) and System V (`msgget`).

use super::{BenchError, Mechanism, ParentSide, PeerSpec, Transport};
use std::ffi::CString;

/// A number from a /proc/sys file.
fn sysctl(path: &str) -> Option<usize> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn interrupted() -> bool {
    std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
}

/// The messages a POSIX queue of `size`-byte messages may hold here (at
/// most 8), or why `size` cannot be carried.
fn posix_limits(size: usize) -> Result<usize, BenchError> {
    let max = sysctl("/proc/sys/fs/mqueue/msgsize_max").unwrap_or(8192);
    if size > max {
        return Err(BenchError::Unsupported(format!(
            "POSIX queues carry at most {max} bytes per message here (fs.mqueue.msgsize_max); raise it with `sysctl -w fs.mqueue.msgsize_max={size}` to measure {size}"
        )));
    }
    Ok(sysctl("/proc/sys/fs/mqueue/msg_max").unwrap_or(10).min(8))
}

/// The bytes a System V queue holds here (kernel.msgmnb), or why
/// `size`-byte messages cannot be carried.
fn sysv_limits(size: usize) -> Result<usize, BenchError> {
    let max = sysctl("/proc/sys/kernel/msgmax").unwrap_or(8192);
    let mnb = sysctl("/proc/sys/kernel/msgmnb").unwrap_or(16384);
    if size > max.min(mnb) {
        return Err(BenchError::Unsupported(format!(
            "System V queues carry at most {} bytes per message here (kernel.msgmax {max}, kernel.msgmnb {mnb}); raise them with sysctl to measure {size}",
            max.min(mnb)
        )));
    }
    Ok(mnb)
}

/// One side of a pair of POSIX queues: sends on one, receives on the other.
struct PosixMq {
    out: libc::mqd_t,
    inn: libc::mqd_t,
    /// Names to unlink on drop (the creating side only).
    owned: Vec<CString>,
}

impl Transport for PosixMq {
    fn send(&mut self, msg: &[u8]) -> Result<(), BenchError> {
        loop {
            // SAFETY: the pointer and length describe `msg`; `out` is open.
            let rc = unsafe { libc::mq_send(self.out, msg.as_ptr().cast(), msg.len(), 0) };
            if rc == 0 {
                return Ok(());
            }
            if !interrupted() {
                return Err(BenchError::last_os("mq_send"));
            }
        }
    }
    fn recv(&mut self, buf: &mut [u8]) -> Result<(), BenchError> {
        loop {
            // SAFETY: the pointer and length describe `buf`, which is as
            // large as the queue's message size; `inn` is open.
            let n = unsafe {
                libc::mq_receive(
                    self.inn,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    std::ptr::null_mut(),
                )
            };
            if n >= 0 {
                if n as usize != buf.len() {
                    return Err(BenchError::Verify(format!(
                        "received {n} bytes, expected {}",
                        buf.len()
                    )));
                }
                return Ok(());
            }
            if !interrupted() {
                return Err(BenchError::last_os("mq_receive"));
            }
        }
    }
}

impl Drop for PosixMq {
    fn drop(&mut self) {
        // SAFETY: both descriptors are open and closed only here.
        unsafe {
            libc::mq_close(self.out);
            libc::mq_close(self.inn);
        }
        for name in &self.owned {
            // SAFETY: a NUL-terminated name.
            unsafe { libc::mq_unlink(name.as_ptr()) };
        }
    }
}

fn mq_name(spec: &PeerSpec, dir: &str) -> CString {
    CString::new(format!("/{}-{dir}", spec.name)).expect("no NUL in a session name")
}

fn mq_open(name: &CString, create: Option<(usize, usize)>) -> Result<libc::mqd_t, BenchError> {
    let mqd = match create {
        Some((maxmsg, msgsize)) => {
            // SAFETY: mq_attr is plain data; zeroed is valid.
            let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
            attr.mq_maxmsg = maxmsg as libc::c_long;
            attr.mq_msgsize = msgsize as libc::c_long;
            // SAFETY: a NUL-terminated name, and a pointer to our attributes.
            unsafe {
                libc::mq_open(
                    name.as_ptr(),
                    libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                    0o600 as libc::mode_t,
                    &attr as *const libc::mq_attr,
                )
            }
        }
        // SAFETY: a NUL-terminated name.
        None => unsafe { libc::mq_open(name.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) },
    };
    if mqd == -1 {
        let e = std::io::Error::last_os_error();
        return Err(BenchError::Unsupported(format!(
            "mq_open {name:?} failed ({e}); check that /dev/mqueue works and RLIMIT_MSGQUEUE (ulimit -q) allows the queue"
        )));
    }
    Ok(mqd)
}

/// A System V queue: messages of type 1 go to the peer, type 2 come back.
struct SysvMq {
    id: i32,
    send_type: libc::c_long,
    recv_type: libc::c_long,
    /// The message with its type word in front.
    scratch: Vec<u8>,
    owner: bool,
}

const TYPE_BYTES: usize = std::mem::size_of::<libc::c_long>();

impl Transport for SysvMq {
    fn send(&mut self, msg: &[u8]) -> Result<(), BenchError> {
        self.scratch[..TYPE_BYTES].copy_from_slice(&self.send_type.to_ne_bytes());
        self.scratch[TYPE_BYTES..TYPE_BYTES + msg.len()].copy_from_slice(msg);
        loop {
            // SAFETY: scratch holds the type word and msg.len() bytes.
            let rc = unsafe { libc::msgsnd(self.id, self.scratch.as_ptr().cast(), msg.len(), 0) };
            if rc == 0 {
                return Ok(());
            }
            if !interrupted() {
                return Err(BenchError::last_os("msgsnd"));
            }
        }
    }
    fn recv(&mut self, buf: &mut [u8]) -> Result<(), BenchError> {
        loop {
            // SAFETY: scratch holds the type word and buf.len() bytes.
            let n = unsafe {
                libc::msgrcv(
                    self.id,
                    self.scratch.as_mut_ptr().cast(),
                    buf.len(),
                    self.recv_type,
                    0,
                )
            };
            if n >= 0 {
                if n as usize != buf.len() {
                    return Err(BenchError::Verify(format!(
                        "received {n} bytes, expected {}",
                        buf.len()
                    )));
                }
                buf.copy_from_slice(&self.scratch[TYPE_BYTES..TYPE_BYTES + buf.len()]);
                return Ok(());
            }
            if !interrupted() {
                return Err(BenchError::last_os("msgrcv"));
            }
        }
    }
}

impl Drop for SysvMq {
    fn drop(&mut self) {
        if self.owner {
            // SAFETY: IPC_RMID takes no buffer.
            unsafe { libc::msgctl(self.id, libc::IPC_RMID, std::ptr::null_mut()) };
        }
    }
}

pub(super) fn parent(spec: &PeerSpec) -> Result<ParentSide, BenchError> {
    let size = spec.size;
    if spec.mechanism == Mechanism::PosixMq {
        let maxmsg = posix_limits(size)?;
        let (a, b) = (mq_name(spec, "a"), mq_name(spec, "b"));
        let out = mq_open(&a, Some((maxmsg, size)))?;
        let inn = match mq_open(&b, Some((maxmsg, size))) {
            Ok(inn) => inn,
            Err(e) => {
                // SAFETY: `out` is open and used nowhere else; `a` is a
                // NUL-terminated name.
                unsafe {
                    libc::mq_close(out);
                    libc::mq_unlink(a.as_ptr());
                }
                return Err(e);
            }
        };
        return Ok(ParentSide::new(PosixMq {
            out,
            inn,
            owned: vec![a, b],
        }));
    }
    sysv_limits(size)?;
    // SAFETY: msgget takes plain integers.
    let id = unsafe { libc::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600) };
    if id < 0 {
        return Err(BenchError::last_os("msgget"));
    }
    let mut side = ParentSide::new(SysvMq {
        id,
        send_type: 1,
        recv_type: 2,
        scratch: vec![0u8; TYPE_BYTES + size],
        owner: true,
    });
    side.id = i64::from(id);
    Ok(side)
}

pub(super) fn child(spec: &PeerSpec) -> Result<Box<dyn Transport>, BenchError> {
    if spec.mechanism == Mechanism::PosixMq {
        let inn = mq_open(&mq_name(spec, "a"), None)?;
        let out = match mq_open(&mq_name(spec, "b"), None) {
            Ok(o) => o,
            Err(e) => {
                // SAFETY: `inn` is open and used nowhere else.
                unsafe { libc::mq_close(inn) };
                return Err(e);
            }
        };
        return Ok(Box::new(PosixMq {
            out,
            inn,
            owned: Vec::new(),
        }));
    }
    Ok(Box::new(SysvMq {
        id: i32::try_from(spec.id).map_err(|_| BenchError::PeerArgs("bad queue id".into()))?,
        send_type: 2,
        recv_type: 1,
        scratch: vec![0u8; TYPE_BYTES + spec.size],
        owner: false,
    }))
}

/// The name of pipeline hop `k`'s POSIX queue.
fn hop_name(spec: &PeerSpec, k: usize) -> CString {
    mq_name(spec, &format!("p{k}"))
}

/// Pipeline stage `stage`'s end of a chain of `stages` POSIX queues (hop k
/// carries stage k's messages to stage k + 1, mod `stages`): it receives on
/// hop `stage - 1` and sends on hop `stage`. Stage 0 creates every hop (and
/// unlinks them all when its end is dropped), before the other stages
/// start. Also returns the messages one hop holds.
pub(super) fn posix_stage(
    spec: &PeerSpec,
    stage: usize,
    stages: usize,
) -> Result<(Box<dyn Transport>, usize), BenchError> {
    let maxmsg = posix_limits(spec.size)?;
    let inn_hop = (stage + stages - 1) % stages;
    if stage > 0 {
        let inn = mq_open(&hop_name(spec, inn_hop), None)?;
        let out = match mq_open(&hop_name(spec, stage), None) {
            Ok(o) => o,
            Err(e) => {
                // SAFETY: `inn` is open and used nowhere else.
                unsafe { libc::mq_close(inn) };
                return Err(e);
            }
        };
        let t = PosixMq {
            out,
            inn,
            owned: Vec::new(),
        };
        return Ok((Box::new(t), maxmsg));
    }
    let names: Vec<CString> = (0..stages).map(|k| hop_name(spec, k)).collect();
    let mut open: Vec<libc::mqd_t> = Vec::new();
    for name in &names {
        match mq_open(name, Some((maxmsg, spec.size))) {
            Ok(q) => open.push(q),
            Err(e) => {
                for (q, name) in open.iter().zip(&names) {
                    // SAFETY: each queue is open and used nowhere else; each
                    // name is NUL-terminated.
                    unsafe {
                        libc::mq_close(*q);
                        libc::mq_unlink(name.as_ptr());
                    }
                }
                return Err(e);
            }
        }
    }
    // Keep hop 0 (ours to send on) and the last hop (ours to receive on).
    for (k, q) in open.iter().enumerate() {
        if k != 0 && k != inn_hop {
            // SAFETY: an open queue used nowhere else; the other stages open
            // it again by name.
            unsafe { libc::mq_close(*q) };
        }
    }
    let t = PosixMq {
        out: open[0],
        inn: open[inn_hop],
        owned: names,
    };
    Ok((Box::new(t), maxmsg))
}

/// Pipeline stage `stage`'s end of a chain over one System V queue, in
/// which message type k + 1 is hop k (stage k to stage k + 1, mod
/// `stages`). Stage 0 creates the queue (`spec.id` is ignored; the id is
/// returned, for the other stages) and removes it when its end is dropped.
/// Also returns the messages of `spec.size` bytes the queue holds.
pub(super) fn sysv_stage(
    spec: &PeerSpec,
    stage: usize,
    stages: usize,
) -> Result<(Box<dyn Transport>, i64, usize), BenchError> {
    let holds = sysv_limits(spec.size)? / spec.size.max(1);
    let send_type = (stage % stages + 1) as libc::c_long;
    let recv_type = ((stage + stages - 1) % stages + 1) as libc::c_long;
    let scratch = vec![0u8; TYPE_BYTES + spec.size];
    if stage > 0 {
        let id = i32::try_from(spec.id).map_err(|_| BenchError::PeerArgs("bad queue id".into()))?;
        let t = SysvMq {
            id,
            send_type,
            recv_type,
            scratch,
            owner: false,
        };
        return Ok((Box::new(t), spec.id, holds));
    }
    // SAFETY: msgget takes plain integers.
    let id = unsafe { libc::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600) };
    if id < 0 {
        return Err(BenchError::last_os("msgget"));
    }
    let t = SysvMq {
        id,
        send_type,
        recv_type,
        scratch,
        owner: true,
    };
    Ok((Box::new(t), i64::from(id), holds))
}
