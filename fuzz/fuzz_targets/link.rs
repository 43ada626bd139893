//! A link region of arbitrary bytes: open both ends, send and receive once.
#![no_main]

use hwlink::{Backend, LinkBuilder};
use hwlink_fuzz::{clean, put_region};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    put_region("fz", data);
    let b = LinkBuilder::new("fz")
        .backend(Backend::Shm)
        .ready_timeout(Duration::ZERO);
    if let Ok(mut rx) = b.clone().open_receiver() {
        let _ = rx.try_recv();
        let _ = rx.recv_timeout(Duration::from_micros(100));
        let _ = rx.len();
    }
    if let Ok(mut tx) = b.open_sender() {
        let _ = tx.try_send(b"fuzz");
    }
    clean();
});
