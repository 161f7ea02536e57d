//! Every limit and default of the raft machinery (log and snapshot files,
//! the raft transport, timings), each with the reason it exists and what it
//! costs. The limits on the model itself (names, counts, ACL rules) are in
//! [`crate::model::limits`].
//!
//! Every length read from disk or from a peer is checked against one of these
//! before anything is allocated for it.

/// Largest single record of the raft log file (one serialised raft entry, or
/// a purge marker). A length field above this is corruption, not a request to
/// allocate. The largest legitimate entry is a `CreateStream` with
/// [`MAX_PARTITIONS_PER_STREAM`](crate::model::limits::MAX_PARTITIONS_PER_STREAM) partitions at full replication.
pub const LOG_RECORD_BYTES_MAX: usize = 16 << 20;

/// Largest raft log file accepted at start-up. The whole unpurged log is held
/// in memory (the metadata log is small: the snapshot policy bounds it to a
/// few thousand entries), so this is also a bound on that memory.
pub const LOG_FILE_BYTES_MAX: u64 = 1 << 30;

/// Purged bytes at the front of the log file after which `purge` rewrites
/// the file without them (when they are also at least half the file). Below
/// this a purge only appends a small durable marker.
pub const LOG_REWRITE_DEAD_BYTES_MIN: u64 = 1 << 20;

/// Largest serialised snapshot (the whole metadata as JSON). Checked when a
/// snapshot file is read, built or received from the leader.
pub const SNAPSHOT_BYTES_MAX: usize = 256 << 20;

/// Largest vote / committed-pointer file record. Both are a few dozen bytes.
pub const SMALL_RECORD_BYTES_MAX: usize = 4096;

/// Largest raft RPC frame on the wire, either direction. An AppendEntries
/// larger than this is split (see [`RAFT_PAYLOAD_ENTRIES_MAX`]); a connection
/// buffers at most one frame, so this times [`RAFT_CONNECTIONS_MAX`] bounds
/// the server's read-buffer memory.
pub const RAFT_FRAME_BYTES_MAX: usize = 64 << 20;

/// Most entries in one AppendEntries RPC (openraft `max_payload_entries`).
/// Together with [`LOG_RECORD_BYTES_MAX`] it keeps ordinary RPCs far below
/// [`RAFT_FRAME_BYTES_MAX`]; oversize ones are split by openraft.
pub const RAFT_PAYLOAD_ENTRIES_MAX: u64 = 64;

/// Snapshot chunk size for InstallSnapshot RPCs. JSON encodes bytes as a
/// number array (up to 4 bytes per byte), so a 1 MiB chunk stays well inside
/// [`RAFT_FRAME_BYTES_MAX`].
pub const RAFT_SNAPSHOT_CHUNK_BYTES: u64 = 1 << 20;

/// Time for one InstallSnapshot chunk ([`RAFT_SNAPSHOT_CHUNK_BYTES`], up to
/// 4 MiB as JSON) to be sent and acknowledged.
pub const RAFT_INSTALL_SNAPSHOT_TIMEOUT_MS: u64 = 5_000;

/// Most concurrent inbound raft connections. Each peer keeps one per
/// direction, so this is far above any sane cluster size and only stops a
/// runaway client from exhausting tasks and buffers.
pub const RAFT_CONNECTIONS_MAX: usize = 256;

/// Time to establish a TCP connection to a peer before it is reported
/// unreachable (openraft then backs off before retrying).
pub const RAFT_CONNECT_TIMEOUT_MS: u64 = 1_000;

/// An inbound raft connection with no request for this long is closed. A
/// live leader sends heartbeats far more often.
pub const RAFT_IDLE_TIMEOUT_MS: u64 = 60_000;

/// Production raft heartbeat interval. Metadata changes are rare; a leader
/// failure is detected within the election timeout below.
pub const HEARTBEAT_INTERVAL_MS_DEFAULT: u64 = 250;

/// Production lower bound of the randomised election timeout (4 heartbeats).
pub const ELECTION_TIMEOUT_MIN_MS_DEFAULT: u64 = 1_000;

/// Production upper bound of the randomised election timeout.
pub const ELECTION_TIMEOUT_MAX_MS_DEFAULT: u64 = 2_000;

/// Build a snapshot after this many log entries since the last one. Bounds
/// the in-memory log and the re-apply work at start-up.
pub const SNAPSHOT_LOGS_SINCE_LAST_DEFAULT: u64 = 5_000;

/// Log entries already covered by a snapshot that are kept anyway, so a
/// briefly lagging follower catches up from the log instead of a snapshot.
pub const SNAPSHOT_LOGS_TO_KEEP_DEFAULT: u64 = 1_000;

/// How long `MetadataNode::start` waits for a single-node cluster to elect
/// itself and register, before giving up.
pub const STARTUP_LEADER_WAIT_MS: u64 = 10_000;

/// Default of `node_timeout_ms`: a node silent for this long is dead.
pub const NODE_TIMEOUT_MS_DEFAULT: u64 = 5_000;

/// How long a metadata change keeps looking for a leader (elections take
/// one to two election timeouts) before it fails.
pub const FORWARD_DEADLINE_MS: u64 = 15_000;

/// Pause between tries while there is no leader or it moved.
pub const FORWARD_RETRY_BACKOFF_MS: u64 = 100;

/// Reply wait of one forwarded change (the leader's own commit is bounded
/// by [`PROPOSE_TIMEOUT_MS`]).
pub const FORWARD_RPC_TIMEOUT_MS: u64 = 12_000;

/// How long the leader waits for a proposal to commit (no majority → the
/// caller is told so instead of waiting forever).
pub const PROPOSE_TIMEOUT_MS: u64 = 10_000;

/// How long a change made through the leader may take to be applied on the
/// node that asked for it.
pub const APPLY_WAIT_MS: u64 = 10_000;

/// How long a joining node keeps asking (the `--join` member may still be
/// starting), and how long the leader waits for a new learner to catch up.
pub const JOIN_TIMEOUT_MS: u64 = 60_000;

/// A restarted member logs every this many failed registration tries.
pub const SETTLE_LOG_EVERY: u32 = 20;
