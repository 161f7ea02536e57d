//! Limits on the cluster metadata model: name lengths, counts, ACL rules.
//! Each bounds what one proposal may carry and what the replicated metadata
//! (every snapshot, every node's copy) may grow to; the state machine checks
//! them on apply.

/// Longest stream name, in bytes (names are ASCII). A name may be as long as
/// a file name (`NAME_MAX`), so on-disk directories are named by the stream's
/// id, never by its name.
pub const STREAM_NAME_BYTES_MAX: usize = 255;

/// Longest NATS subject a stream may bind. Partition `i > 0` listens on
/// `subject.i`, which adds at most 11 bytes; NATS itself has no hard limit
/// but every message carries the subject, so we keep it bounded.
pub const SUBJECT_BYTES_MAX: usize = 1024;

/// Longest consumer-group (NATS queue group) name.
pub const GROUP_BYTES_MAX: usize = 255;

/// Most partitions one stream may have. Each partition costs a directory, a
/// few open files and ~100-400 bytes of metadata (in every snapshot and in
/// the log entry that creates the stream: 4096 × ~400 B ≈ 1.6 MiB, below
/// the raft log's
/// largest record, `LOG_RECORD_BYTES_MAX`).
pub const MAX_PARTITIONS_PER_STREAM: u32 = 4096;

/// Most streams the cluster holds. Bounds the metadata snapshot and the copy
/// of the metadata made on every applied change.
pub const STREAMS_MAX: usize = 10_000;

/// Most nodes that may register. Bounds placement work and metadata size.
pub const NODES_MAX: usize = 1024;

/// Most data shards one node may announce.
pub const SHARDS_PER_NODE_MAX: u32 = 1024;

/// Longest address string a node may announce (host:port).
pub const NODE_ADDR_BYTES_MAX: usize = 255;

/// Most ACL rules (principal × stream pattern pairs) in the metadata. Every
/// shard holds an index of all of them (a few hundred bytes each), and a
/// check scans the rules of one principal, so this bounds both.
pub const ACL_RULES_MAX: usize = 10_000;

/// Longest principal name (or principal glob) in an ACL rule, in bytes.
pub const ACL_PRINCIPAL_BYTES_MAX: usize = 255;
