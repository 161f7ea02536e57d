//! Errors of the cluster-metadata boundary.

use std::path::PathBuf;

use super::placement::PlacementError;
use crate::model::{InvalidSpec, NodeId};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A metadata change reached a node that is not the raft leader. The
    /// server layer forwards it to `leader` (node id, client address) when
    /// one is known.
    #[error("this node is not the metadata leader (leader: {leader:?})")]
    NotLeader { leader: Option<(NodeId, String)> },
    /// Rejected before proposing: the spec breaks a rule.
    #[error(transparent)]
    InvalidSpec(#[from] InvalidSpec),
    /// Rejected by the state machine (a rule that depends on cluster state,
    /// or a proposal raced with another change).
    #[error("rejected by the metadata state machine: {reason}")]
    Rejected { reason: String },
    /// The name exists with a different subject or settings, or a
    /// conditional update's condition no longer holds.
    #[error("conflict on stream {name:?}: {reason}")]
    Conflict { name: String, reason: String },
    #[error("stream {name:?} not found")]
    NotFound { name: String },
    #[error(transparent)]
    Placement(#[from] PlacementError),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Damaged or foreign bytes in a cluster file, found where a torn write
    /// cannot explain them.
    #[error("corrupt {path} at byte {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    /// The raft log's file failed an earlier write or fsync; nothing more is
    /// written to it (fail-stop: a failed fsync is never retried and
    /// believed).
    #[error("raft log {path} is unusable after an earlier I/O failure")]
    LogFailed { path: PathBuf },
    /// openraft stopped or failed (storage error, shutdown, panic).
    #[error("raft: {reason}")]
    Raft { reason: String },
    #[error("timed out after {waited_ms} ms waiting for {what}")]
    Timeout { what: &'static str, waited_ms: u64 },
    /// A join was refused for a reason the operator must fix.
    #[error("join refused: {reason}")]
    JoinRefused { reason: String },
    /// A node (the --join address, the metadata leader) cannot be reached.
    #[error("cannot reach the node at {addr}: {reason} (is it running, and is that its --raft address?)")]
    Unreachable { addr: String, reason: String },
    /// No metadata leader answered in time (an election, or no majority of
    /// the voters is up).
    #[error("metadata unavailable: {reason}")]
    Unavailable { reason: String },
    #[error("invalid cluster configuration: {reason}")]
    Config { reason: String },
    #[error("listen on raft address {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}
