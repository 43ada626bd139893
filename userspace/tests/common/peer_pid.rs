//! The process id of a peer.

use super::peer::Peer;

impl Peer {
    /// The peer's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}
