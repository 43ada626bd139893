//! A mailbox of arbitrary bytes (bounded, unbounded or zero capacity, as
//! its control block says), with its first two segments: open it, receive
//! and send once each way.
#![no_main]

use hwlink::{Access, Backend, MailboxBuilder};
use hwlink_fuzz::{clean, put_region, split};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let parts = split(data, 3);
    put_region("mbx.fz", parts[0]);
    if let Some(s) = parts.get(1) {
        put_region("mbx.fz.s1", s);
    }
    if let Some(s) = parts.get(2) {
        put_region("mbx.fz.s2", s);
    }
    let b = MailboxBuilder::new()
        .backend(Backend::Shm)
        .ready_timeout(Duration::ZERO);
    if let Ok(mut m) = b.open("fz", Access::SendRecv) {
        let _ = m.try_recv();
        let _ = m.recv_timeout(Duration::from_micros(100));
        let _ = m.try_send(b"fuzz");
        let _ = m.len();
        let _ = m.bytes_in_use();
    }
    clean();
});
