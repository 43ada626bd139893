//! What `hwlink ls` and `rm --stale` read: a region file and a process
//! liveness file of arbitrary bytes, listed and described (every object
//! kind a header can name), then a stale sweep.
#![no_main]

use hwlink::admin;
use hwlink_fuzz::{clean, dir, put_region, split};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parts = split(data, 2);
    put_region("fzl", parts[0]);
    if let Some(p) = parts.get(1) {
        let _ = std::fs::write(dir().join("hwlink-proc.0badf00d"), p);
    }
    let _ = admin::list();
    let _ = admin::remove_stale();
    clean();
});
