//! hwlink: kernel-bypass message passing between processes over shared
//! memory (hugepages or a device BAR).
//!
//! A *link* is a lock-free single-producer single-consumer ring of
//! length-prefixed slots in a named region. One process holds its
//! [`Sender`], another its [`Receiver`]; they wake each other through
//! semaphore doorbells (futex words in the region) only when one of them
//! actually sleeps, so a polling peer sees no system call at all.
//!
//! Processes can also join a named [`Domain`] and address each other by
//! member name ([`Member::send`], [`Member::recv_from`],
//! [`Member::recv_any`]); links between members are set up on first use.
//!
//! Every end also sends and receives typed messages: a `#[repr(C)]`
//! plain-data struct copied straight into the slot and out of it, checked
//! by [`zerocopy`]'s traits (`send_value`, `recv_value`, and
//! [`Sender::reserve_value`] to write one in place), and with the `serde`
//! feature any serde type in postcard's format (`send_serialized`,
//! `recv_deserialized`).
//!
//! ```no_run
//! use hwlink::{LinkBuilder, WaitStrategy};
//! // process A
//! let mut tx = LinkBuilder::new("prices").capacity(1024).slot_size(256).create_sender()?;
//! tx.send(b"hello")?;
//! // process B
//! let mut rx = LinkBuilder::new("prices").wait(WaitStrategy::BusyPoll).open_receiver()?;
//! assert_eq!(rx.recv()?, b"hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
// `unsafe` is allowed only in the modules that wrap what needs it: the
// mapping (region), raw views of shared memory (shm), system calls (futex,
// liveness, readiness), the runtime registration of a descriptor (tokio)
// and the loom-switchable atomics and fences (sync).
#![deny(unsafe_code)]
#![warn(missing_debug_implementations)]
#![warn(clippy::unnecessary_safety_comment)]

/// The public send forms of a flavour, over its one
/// `send_deadline(msg, patience)`.
macro_rules! send_forms {
    () => {
        /// Sends `msg`, waiting per the wait strategy until it is accepted.
        pub fn send<M: AsRef<[u8]>>(&mut self, msg: M) -> Result<(), SendError<M>> {
            self.send_deadline(msg, crate::wait::Patience::new(None, true))
        }
        /// Sends `msg`, waiting at most `timeout` until it is accepted.
        pub fn send_timeout<M: AsRef<[u8]>>(
            &mut self,
            msg: M,
            timeout: std::time::Duration,
        ) -> Result<(), SendError<M>> {
            let deadline = crate::wait::deadline_after(timeout);
            self.send_deadline(msg, crate::wait::Patience::new(deadline, true))
        }
        /// Sends `msg` if it can be accepted now (a free slot; with zero
        /// capacity, a receiver waiting); hands it back in `Full` if not.
        pub fn try_send<M: AsRef<[u8]>>(&mut self, msg: M) -> Result<(), SendError<M>> {
            self.send_deadline(msg, crate::wait::Patience::new(None, false))
        }
    };
}

/// Builder setters: `name: Type;` (with its doc comment) becomes
/// `pub fn name(mut self, name: Type) -> Self`, storing into field `name`.
macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, $name: $ty) -> Self {
                self.$name = $name;
                self
            }
        )*
    };
}

// Typed messages: the forms every end gets through its macros, so it is
// declared before the modules that use them.
#[cfg(not(loom))]
#[macro_use]
mod typed;

#[cfg_attr(loom, allow(dead_code))]
mod ahead;
mod chain;
mod doorbell;
mod error;
#[allow(unsafe_code)]
mod futex;
#[cfg(not(loom))]
mod hw_doorbell;
#[allow(unsafe_code)]
pub mod liveness;
mod mpmc;
mod spsc;
#[allow(unsafe_code)]
mod sync;
mod wait;
// Zero-capacity (rendezvous) hand-off; wired into mailboxes and links later.
mod rendezvous;
#[allow(unsafe_code)]
pub mod shm;

#[cfg(not(loom))]
pub mod admin;
#[cfg(not(loom))]
mod channel;
#[cfg(not(loom))]
mod domain;
#[cfg(not(loom))]
mod link;
#[cfg(not(loom))]
mod mailbox;
#[cfg(not(loom))]
mod objects;
#[cfg(not(loom))]
#[allow(unsafe_code)]
mod readiness;
#[cfg(not(loom))]
#[allow(unsafe_code)]
mod region;
#[cfg(not(loom))]
mod segments;
#[cfg(not(loom))]
mod select;
#[cfg(all(feature = "tokio", not(loom)))]
#[allow(unsafe_code)]
pub mod tokio;
#[cfg(not(loom))]
mod topic;
mod topic_ring;

#[cfg(test)]
mod chain_tests;
#[cfg(test)]
mod mpmc_tests;
#[cfg(test)]
mod rendezvous_tests;
#[cfg(test)]
mod spsc_tests;
#[cfg(test)]
mod topic_ring_tests;

#[cfg(not(loom))]
pub use chain::SegmentStats;
#[cfg(not(loom))]
pub use domain::{
    Domain, DomainBuilder, Member, MemberInfo, DEFAULT_MAX_MEMBERS, MAX_DOMAIN_NAME_LEN,
    MAX_MEMBER_NAME_LEN,
};
pub use error::{Corruption, OpenError, RecvError, SendError, Side};
pub use hwlink_drivers::{Backend, BackingKind, FileAccess, Group};
#[cfg(not(loom))]
pub use link::{
    LinkBuilder, ReadBatch, ReadSlot, Receiver, RingLayout, Sender, WriteBatch, WriteSlot,
    DEFAULT_CAPACITY, DEFAULT_SLOT_SIZE,
};
#[cfg(not(loom))]
pub use mailbox::{
    Access, AttachmentInfo, Buffering, Mailbox, MailboxBuilder, MailboxId, MailboxInfo,
    DEFAULT_MAILBOX_CAPACITY, DEFAULT_MAILBOX_SLOT_SIZE, MAILBOX_PREFIX, MAX_MAILBOX_NAME,
};
#[cfg(not(loom))]
pub use readiness::ReadinessError;
#[cfg(not(loom))]
pub use select::{Outcome, Select, SelectError, SelectRecv, SelectSend, Selected};
pub use shm::{ShmSlice, ShmSliceMut};
#[cfg(not(loom))]
pub use topic::{
    Backpressure, Loan, LoanValue, Publisher, Sample, Subscriber, SubscriberInfo, Topic,
    TopicBuilder, TopicInfo, DEFAULT_MAX_SUBSCRIBERS, DEFAULT_TOPIC_CAPACITY,
    DEFAULT_TOPIC_SLOT_SIZE, MAX_TOPIC_NAME, TOPIC_PREFIX,
};
#[cfg(not(loom))]
pub use typed::ValueSlot;
pub use wait::WaitStrategy;
/// The plain-data traits of typed messages (`send_value`, `recv_value`):
/// derive `FromBytes`, `IntoBytes`, `Immutable` and `KnownLayout` on a
/// `#[repr(C)]` struct with zerocopy's own derives (a dependency on
/// `zerocopy` with its `derive` feature, same major version).
pub use zerocopy;

/// Internals exposed for the criterion micro-benchmarks (`benches/`) only:
/// not part of the API, may change at any time.
#[doc(hidden)]
#[cfg(not(loom))]
pub mod bench_support {
    use std::time::Instant;

    /// A semaphore doorbell on heap words (the same code as the doorbells
    /// in shared memory).
    #[derive(Debug)]
    pub struct Doorbell(crate::doorbell::HeapDoorbell);

    impl Default for Doorbell {
        fn default() -> Self {
            Doorbell(crate::doorbell::HeapDoorbell::new())
        }
    }

    impl Doorbell {
        /// Another handle on the same words.
        pub fn share(&self) -> Doorbell {
            Doorbell(self.0.share())
        }
        /// V: adds a token, waking a sleeper if one is registered.
        pub fn post(&self) {
            self.0.bell.post();
        }
        /// Takes a token if there is one.
        pub fn try_wait(&self) -> bool {
            self.0.bell.try_wait()
        }
        /// P: takes a token, sleeping until one comes or `deadline`.
        pub fn wait(&self, deadline: Option<Instant>) -> bool {
            self.0.bell.wait(deadline)
        }
    }
}

/// The README's example, compiled as a doctest so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
