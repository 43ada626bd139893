//! Shared machinery of the multi-process tests, in one file per part so
//! that a test binary includes only the parts it uses (none of them is
//! dead in any binary):
//!
//! - `names.rs`: link names unique to a test, cleanup of their regions;
//! - `msg.rs`, `message.rs`, `stream.rs`: generated messages, their
//!   checks, checksums;
//! - `watchdog.rs`, `kill.rs`: a watchdog, a SIGKILL at a chosen moment;
//! - `peer.rs`, `peer_pid.rs`, `drive.rs`: the parent side, spawning and driving a peer
//!   process (this test binary run again);
//! - `child.rs`: the peer side, `peer_entry_with` and the role context;
//! - `roles.rs`, `zc.rs`: the link roles, the zero-copy script;
//! - `raw.rs`, `raw_read.rs`, `raw_write.rs`, `raw64.rs`, `layout.rs`: raw
//!   access to a region file, the layout of a link region;
//! - `shm_dir.rs`: where shm regions live.
//!
//! A test binary lists the parts it uses in an inline module:
//!
//! ```ignore
//! mod common {
//!     pub mod child;
//!     pub mod peer;
//!     // ...
//! }
//! ```
//!
//! This file is that list for the binaries that say `mod common;`
//! (`cli.rs`), with the names they use from it.

pub mod child;
pub mod message;
pub mod msg;
pub mod names;
pub mod peer;
pub mod peer_pid;
pub mod raw;
pub mod raw_write;
pub mod roles;
pub mod stream;
pub mod zc;

pub use child::PEER_WAIT;
pub use names::{assert_no_regions, unique, Cleanup};
pub use peer::Peer;
pub use raw::{region, RawRegion};

/// The offset in `struct hwl_region` that `cli.rs` writes (`layout.rs` has
/// the whole layout, for the binaries that use all of it).
pub mod hdr {
    pub const ABI_VERSION: usize = core::mem::offset_of!(hwlink_hw::hwl_region, abi_version);
}

/// The body of `peer_entry` for the link roles.
pub fn peer_entry() {
    child::peer_entry_with(roles::run);
}
