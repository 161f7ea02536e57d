//! Server ports for tests: see `shards::testing::ports` (shared with the
//! in-process tests of the `sluice` crate).

pub use shards::testing::ports::free_ports_on;
