//! The openraft type configuration: the model's commands, responses and
//! node ids (`crate::model`) as raft's types, and how raft reaches a node.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::model::{MetadataCommand, MetadataResponse, NodeId};

/// How raft reaches a node, carried in raft membership entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNode {
    /// `host:port` of the node's raft listener.
    pub raft_addr: String,
    /// `host:port` of the node's client (consumer protocol) listener; the
    /// address a client is redirected to when this node leads.
    pub client_addr: String,
}

impl fmt::Display for ClusterNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "raft={} client={}", self.raft_addr, self.client_addr)
    }
}

openraft::declare_raft_types!(
    /// openraft types of the metadata cluster: commands, responses, node ids
    /// and node addresses; snapshots are in-memory byte buffers (the metadata
    /// is small).
    pub TypeConfig:
        D = MetadataCommand,
        R = MetadataResponse,
        NodeId = NodeId,
        Node = ClusterNode,
        SnapshotData = Cursor<Vec<u8>>,
);

/// The raft instance type of the metadata cluster.
pub type MetadataRaft = openraft::Raft<TypeConfig>;
/// A raft log id (term, leader, index).
pub type LogId = openraft::LogId<NodeId>;
/// A raft vote.
pub type Vote = openraft::Vote<NodeId>;
/// A raft log entry of this cluster.
pub type Entry = openraft::Entry<TypeConfig>;
/// Raft membership as stored in the state machine.
pub type StoredMembership = openraft::StoredMembership<NodeId, ClusterNode>;
/// Snapshot metadata of this cluster.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, ClusterNode>;
