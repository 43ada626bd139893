//! A domain directory of arbitrary bytes: join it, look at the members,
//! receive from any, send to the first, leave.
#![no_main]

use hwlink::{Backend, Domain};
use hwlink_fuzz::{clean, put_region};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    put_region("fzd", data);
    let joined = Domain::builder("fzd")
        .backend(Backend::Shm)
        .ready_timeout(Duration::ZERO)
        .join_timeout(Duration::from_millis(1))
        .join("fuzzer");
    if let Ok(mut me) = joined {
        let others = me.members();
        let _ = me.try_recv_any();
        if let Some(o) = others.iter().find(|m| m.name != "fuzzer") {
            let _ = me.try_send(&o.name, b"fuzz");
            let _ = me.try_recv_from(&o.name);
        }
        me.leave();
    }
    clean();
});
