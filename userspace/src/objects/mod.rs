//! Views of the objects in a region, one module per object kind: each
//! initialises its object in a region being created and, given a validated
//! object table entry, checks the object's configuration (read once) and
//! hands out its shared words and bytes through a [`ShmView`](crate::shm::ShmView).
//! The region itself (mapping, header, object table) is `crate::region`;
//! sizes and offsets come from `hwlink_hw`.

pub(crate) mod domain;
pub(crate) mod mailbox;
pub(crate) mod mpmc;
pub(crate) mod rendezvous;
pub(crate) mod spsc;
pub(crate) mod topic;

pub(crate) use domain::{domain_object_bytes, init_domain, DomainConfig, DomainParts};
pub(crate) use mailbox::{init_mailbox, MailboxConfig, MailboxParts};
pub(crate) use mpmc::{init_mpmc_ring, MpmcParts};
pub(crate) use rendezvous::{init_rendezvous, RendezvousParts};
pub(crate) use spsc::{init_spsc_ring, spsc_ring_bytes, Endpoint, RingParts};
pub(crate) use topic::{init_topic, RawTopic, TopicConfig, TopicParts};
