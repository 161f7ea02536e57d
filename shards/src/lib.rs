//! # shards — Sluice's storage engine
//!
//! A partition log for one core, on io_uring, built to be owned outright by a
//! thread-per-core shard. It knows nothing of NATS, tokio, openraft or
//! flatbuffers: the server feeds it RecordBatch v2 bytes and serves what it
//! returns.
//!
//! ## Ownership
//!
//! Every [`log::PartitionLog`] lives on exactly one glommio executor (it is
//! `!Send`); its segment files, indexes, waiters and sync task belong to that
//! executor alone. State is single-threaded (`Rc`/`RefCell`), so there are no
//! locks on the data path. Work crosses cores only as owned values over the
//! SPSC rings in [`ring`], one per (sender, receiver) pair; [`shard`] starts
//! the pinned executors, and the caller hands each its rings.
//!
//! ## Durability
//!
//! The bytes on disk are Kafka RecordBatch v2 ([`batch`]), the same bytes a
//! fetch sends with `sendfile`. An append is written to the page cache with
//! `pwrite` and resolves only after an `fdatasync` (issued through io_uring)
//! covers it: **group commit**, one sync for everything appended while the
//! previous one ran. Three watermarks say how safe each offset is — log end
//! (written), stable (fsynced), high watermark (committed, the only part
//! consumers see). A failed `fdatasync` fail-stops the partition; it is never
//! retried. On open, every batch after the last trusted index entry is
//! length- and CRC-checked and a torn tail is cut off before anything is
//! served ([`segment`]).
//!
//! ## Files
//!
//! One directory per partition: `<base_offset:020>.log` segments (the active
//! one preallocated step by step as it grows, sealed to their exact size on
//! roll), each with a sparse `.index` (offset →
//! position) and `.timeindex` (timestamp → offset), plus a `high-watermark`
//! checkpoint for replicated logs and a `leader-epoch-checkpoint` (where each
//! leader epoch starts, [`epoch_cache`]).

#![warn(missing_docs)]

pub mod batch;
pub mod compaction;
pub mod constants;
pub mod epoch_cache;
pub mod error;
mod event;
mod index;
pub mod io;
pub mod log;
pub mod maintenance;
pub mod retention;
pub mod ring;
pub mod segment;
pub mod shard;
// Test support (executors, tmpfs, log fixtures) is compiled only for this
// crate's own tests and for builds that ask for the `testing` feature (the
// dev-dependencies of `sluice`, `fuzz` and this crate's integration tests
// and benches), so production builds do not carry it.
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod time_index;
pub mod types;
