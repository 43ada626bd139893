//! hwlink: kernel-bypass message passing between processes over shared
//! memory (hugepages or a device BAR).
//!
//! A *link* is a lock-free single-producer single-consumer ring of
//! length-prefixed slots in a named region. One process holds its
//! [`Sender`], another its [`Receiver`]; they wake each other through
//! semaphore doorbells (futex words in the region) only when one of them
//! actually sleeps, so a polling peer sees no system call at all.
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

mod doorbell;
mod error;
mod futex;
#[cfg(not(loom))]
mod hw_doorbell;
pub mod liveness;
mod spsc;
mod sync;
mod wait;

#[cfg(not(loom))]
pub mod admin;
#[cfg(not(loom))]
pub mod bench;
#[cfg(not(loom))]
pub mod exchange;
#[cfg(not(loom))]
mod link;
#[cfg(not(loom))]
pub mod pingpong;
#[cfg(not(loom))]
mod region;
#[cfg(not(loom))]
pub mod remote_pingpong;

#[cfg(test)]
mod spsc_tests;

pub use error::{Corruption, OpenError, RecvError, SendError, Side};
pub use hwlink_drivers::{Backend, BackingKind};
#[cfg(not(loom))]
pub use link::{
    LinkBuilder, ReadBatch, ReadSlot, Receiver, Sender, WriteBatch, WriteSlot, DEFAULT_CAPACITY,
    DEFAULT_SLOT_SIZE,
};
pub use wait::WaitStrategy;

/// The README's example, compiled as a doctest so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
