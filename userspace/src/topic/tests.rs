//! Topic handles over real regions: see userspace/tests/topics.rs for processes.
