//! The replicated metadata and the commands that change it.
//!
//! Plain data: it changes only through `Metadata::apply` (the raft state
//! machine's transition, in `cluster/apply.rs`), which the state machine
//! calls for every committed [`MetadataCommand`], in log order, on every
//! node. The fields are `pub(crate)` only so that transition, which lives
//! with the raft machinery, can write them; everything else reads through
//! the accessors.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{NodeId, NodeInfo, PartitionAssignment, StreamId, StreamRecord, StreamSpec};

/// The replicated cluster metadata. Identical on every node at the same
/// applied log index; changed only by `Metadata::apply`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub(crate) streams: BTreeMap<String, StreamRecord>,
    pub(crate) next_stream_id: StreamId,
    pub(crate) nodes: BTreeMap<NodeId, NodeInfo>,
    /// Per-stream access rules (`acl.rs`). Absent in snapshots written
    /// before ACLs existed, hence the default.
    #[serde(default)]
    pub(crate) acls: super::acl::AclRules,
}

impl Default for Metadata {
    fn default() -> Metadata {
        Metadata {
            streams: BTreeMap::new(),
            next_stream_id: StreamId::FIRST,
            nodes: BTreeMap::new(),
            acls: super::acl::AclRules::new(),
        }
    }
}

impl Metadata {
    /// Streams by name.
    pub fn streams(&self) -> &BTreeMap<String, StreamRecord> {
        &self.streams
    }

    pub fn stream(&self, name: &str) -> Option<&StreamRecord> {
        self.streams.get(name)
    }

    /// Registered nodes by id.
    pub fn nodes(&self) -> &BTreeMap<NodeId, NodeInfo> {
        &self.nodes
    }

    /// The id the next created stream will get.
    pub fn next_stream_id(&self) -> StreamId {
        self.next_stream_id
    }
}

/// A change to the metadata, proposed through raft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataCommand {
    /// Add a node, or update its addresses and shard count.
    RegisterNode {
        node_id: NodeId,
        info: NodeInfo,
    },
    /// Create a stream. Idempotent: an existing stream with an identical spec
    /// answers `StreamExists` and changes nothing, whatever the placement.
    CreateStream {
        spec: StreamSpec,
        placement: Vec<PartitionAssignment>,
        created_at_ms: u64,
    },
    DeleteStream {
        name: String,
    },
    /// Replace a partition's ISR. Conditional on the stream incarnation, the
    /// leader epoch and the ISR version it was computed from, so neither a
    /// stale leader nor a stale proposal can overwrite a newer ISR.
    UpdateIsr {
        stream: String,
        stream_id: StreamId,
        partition: u32,
        leader_epoch: u32,
        /// `None` in entries written before ISR versions existed: applied
        /// without the version check, exactly as they were then, so every
        /// node replaying an old raft log reaches the same metadata.
        #[serde(default)]
        isr_version: Option<u64>,
        isr: Vec<NodeId>,
    },
    /// Make `leader` (a member of the ISR) the partition leader and bump the
    /// leader epoch. Conditional like `UpdateIsr`.
    ChangeLeader {
        stream: String,
        stream_id: StreamId,
        partition: u32,
        leader_epoch: u32,
        leader: NodeId,
    },
    /// `node`'s copy of the partition lost acknowledged data (it opened with
    /// mid-log corruption, or its log ends below its high-watermark
    /// checkpoint): it leaves the ISR until it has re-fetched and the
    /// leader expands the ISR again. If it led, leadership moves to the
    /// first other ISR member in replica order, with an epoch bump. As the
    /// only ISR member it stays (nothing else is possible without unclean
    /// election) and the state machine logs it. Not conditional on the
    /// leader epoch: the node speaks for its own disk, whatever the epoch.
    LeaveIsr {
        stream: String,
        stream_id: StreamId,
        partition: u32,
        node: NodeId,
    },
    /// Let `principal` (a name or glob) perform `operations` on the streams
    /// matching `stream_pattern`; added to what the rule already grants.
    GrantAcl {
        principal: String,
        stream_pattern: String,
        operations: super::acl::AclOperations,
    },
    /// Take `operations` (all when empty) away from the rule (principal,
    /// stream_pattern); `NotFound` when there is no such rule.
    RevokeAcl {
        principal: String,
        stream_pattern: String,
        operations: super::acl::AclOperations,
    },
}

/// The outcome of applying one [`MetadataCommand`] (or a raft-internal entry,
/// which answers `Ok`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataResponse {
    StreamCreated(StreamRecord),
    /// Same name and same spec already exist: nothing changed.
    StreamExists(StreamRecord),
    /// Same name with a different subject or settings, or a conditional
    /// update whose condition (incarnation, epoch) no longer holds.
    Conflict {
        reason: String,
    },
    /// The command breaks a rule (name, subject, limits, placement).
    Invalid {
        reason: String,
    },
    StreamDeleted(StreamRecord),
    NotFound,
    Ok,
}
