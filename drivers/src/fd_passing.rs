//! One message of the ivshmem server protocol over a UNIX stream socket: a
//! little-endian i64 with at most one descriptor (SCM_RIGHTS). The only
//! unsafe code is taking ownership of a received descriptor.

#![allow(unsafe_code)]

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use crate::ivshmem_server::proto_err;

/// Sends one message: `value` and, if given, one descriptor.
pub(crate) fn send_msg(sock: &UnixStream, value: i64, fd: Option<RawFd>) -> io::Result<()> {
    let bytes = value.to_le_bytes();
    let iov = [IoSlice::new(&bytes)];
    let fds;
    let cmsgs: &[ControlMessage] = match fd {
        Some(f) => {
            fds = [f];
            &[ControlMessage::ScmRights(&fds)]
        }
        None => &[],
    };
    let n = sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)
        .map_err(io::Error::from)?;
    if n != bytes.len() {
        return Err(proto_err(format!("short send of {n} bytes")));
    }
    Ok(())
}

/// Receives one message. Ok(None) at end of stream.
pub(crate) fn recv_msg(sock: &UnixStream) -> io::Result<Option<(i64, Option<OwnedFd>)>> {
    let mut bytes = [0u8; 8];
    let mut got = 0usize;
    let mut fd: Option<OwnedFd> = None;
    while got < bytes.len() {
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let mut iov = [IoSliceMut::new(&mut bytes[got..])];
        let msg = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        let n = msg.bytes;
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for raw in fds {
                    // SAFETY: SCM_RIGHTS just installed `raw` in this
                    // process (close-on-exec); nothing else owns it, so
                    // OwnedFd takes over closing it.
                    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                    if fd.is_none() {
                        fd = Some(owned);
                    }
                }
            }
        }
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(proto_err("the peer closed in the middle of a message"))
            };
        }
        got += n;
    }
    Ok(Some((i64::from_le_bytes(bytes), fd)))
}
