//! Tests of the rendezvous hand-off: threads over heap memory (also run
//! under Miri), corruption and dead-party tests, and loom models of the
//! hand-off over loom atomics and cells.

#[cfg(not(loom))]
mod heap;

#[cfg(loom)]
mod loom_models;
