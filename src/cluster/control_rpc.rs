//! Control RPCs between Sluice nodes, carried on the raft TCP transport
//! (`network.rs`) next to openraft's own RPCs: forwarding metadata changes
//! to the raft leader, joining a cluster, liveness heartbeats, and the
//! per-node status that `sluice cluster status` gathers.
//!
//! A request that reaches a node which is not the leader is forwarded once
//! by that node (see [`ControlRequest::forwarded`]); a forwarded request
//! that meets a non-leader is answered [`RemoteError::NotLeader`] and the
//! forwarding node retries, so a request crosses at most two hops per try.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::ClusterError;
use super::types::ClusterNode;
use super::StreamCreation;
use crate::model::{MetadataCommand, MetadataResponse, NodeId, StreamId, StreamRecord, StreamSpec};

/// One control request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlRequest {
    /// Set by a node forwarding to the leader: the receiver must not forward
    /// it again (it answers `NotLeader` instead).
    pub forwarded: bool,
    pub op: ControlOp,
}

/// What a control request asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControlOp {
    /// Propose a command on the leader ([`super::MetadataCore::write`]).
    Write(MetadataCommand),
    /// Create a stream, placement computed on the leader (partition 0 led
    /// by `origin`, the node the client asked, when it can).
    CreateStream {
        spec: StreamSpec,
        origin: NodeId,
    },
    DeleteStream(String),
    /// Add `node_id` at `node` as a learner, wait for it to catch up, then
    /// make it a voter. Idempotent.
    Join {
        node_id: NodeId,
        node: ClusterNode,
    },
    /// `node_id` is up; sent to the leader every heartbeat interval. Answered
    /// with [`ControlReply::Confirmed`], which renews the sender's metadata
    /// lease.
    Heartbeat {
        node_id: NodeId,
    },
    /// Which registered nodes the leader considers alive.
    Liveness,
    /// What this node's shards know of the partitions they hold.
    LocalStatus,
}

/// The answer to a [`ControlRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControlReply {
    /// A command was applied on the leader at raft log index `index`.
    Written {
        response: MetadataResponse,
        index: u64,
    },
    Created {
        creation: StreamCreation,
        index: u64,
    },
    Deleted {
        record: StreamRecord,
        index: u64,
    },
    Joined,
    /// Sent by nodes before metadata leases: a heartbeat taken, no read
    /// index (a node gets no lease from it).
    HeartbeatAck,
    /// A heartbeat taken: the leader's read index, confirmed with a quorum
    /// after the heartbeat arrived. The sender holds a metadata lease once
    /// it has applied this index (`lease.rs`).
    Confirmed {
        read_index: u64,
    },
    Liveness(BTreeMap<NodeId, bool>),
    LocalStatus(Vec<LocalPartitionStatus>),
    Failed(RemoteError),
}

/// A [`ClusterError`] as it crosses the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RemoteError {
    #[error("not the metadata leader (leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    #[error("{reason}")]
    Rejected { reason: String },
    #[error("conflict on stream {name:?}: {reason}")]
    Conflict { name: String, reason: String },
    #[error("stream {name:?} not found")]
    NotFound { name: String },
    /// Join refused for a reason the operator must fix (e.g. the node id is
    /// taken by another address).
    #[error("{reason}")]
    Refused { reason: String },
    #[error("{reason}")]
    Unavailable { reason: String },
}

impl From<ClusterError> for RemoteError {
    fn from(error: ClusterError) -> RemoteError {
        match error {
            ClusterError::NotLeader { leader } => RemoteError::NotLeader {
                leader: leader.map(|(id, _)| id),
            },
            ClusterError::InvalidSpec(e) => RemoteError::Rejected {
                reason: e.to_string(),
            },
            ClusterError::Placement(e) => RemoteError::Rejected {
                reason: e.to_string(),
            },
            ClusterError::Rejected { reason } => RemoteError::Rejected { reason },
            ClusterError::Conflict { name, reason } => RemoteError::Conflict { name, reason },
            ClusterError::NotFound { name } => RemoteError::NotFound { name },
            ClusterError::JoinRefused { reason } => RemoteError::Refused { reason },
            other => RemoteError::Unavailable {
                reason: other.to_string(),
            },
        }
    }
}

impl From<RemoteError> for ClusterError {
    fn from(error: RemoteError) -> ClusterError {
        match error {
            RemoteError::NotLeader { leader } => ClusterError::NotLeader {
                leader: leader.map(|id| (id, String::new())),
            },
            RemoteError::Rejected { reason } => ClusterError::Rejected { reason },
            RemoteError::Conflict { name, reason } => ClusterError::Conflict { name, reason },
            RemoteError::NotFound { name } => ClusterError::NotFound { name },
            RemoteError::Refused { reason } => ClusterError::JoinRefused { reason },
            RemoteError::Unavailable { reason } => ClusterError::Unavailable { reason },
        }
    }
}

/// One partition as the node holding it reports it (the serialisable form
/// of `cores::PartitionStatus`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalPartitionStatus {
    pub stream_id: StreamId,
    pub partition: u32,
    pub high_watermark: u64,
    pub log_start: u64,
    pub log_end: u64,
    pub leader_epoch: u32,
    pub replicas: Vec<ReplicaLag>,
    /// Set while the partition is placed on the node but could not be
    /// opened (the numbers above mean nothing then). Absent from the JSON
    /// of nodes that predate it, which read as "opened".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_failure: Option<OpenFailure>,
}

/// Why a node could not open a partition placed on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenFailure {
    /// Wire error code (`protocol::error_code`), e.g. 18 `DiskFull`.
    pub code: u16,
    /// E.g. "no space left on device creating partition orders/1 (...)".
    pub message: String,
}

/// One replica's progress as its partition leader tracks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaLag {
    pub node: NodeId,
    pub log_end: u64,
    pub lag: u64,
    pub in_sync: bool,
}
