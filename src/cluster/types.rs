//! The openraft type configuration and the metadata model it replicates.
//!
//! The model is plain data. It changes only through [`Metadata::apply`]
//! (in `apply.rs`), which the raft state machine calls for every committed
//! [`MetadataCommand`], in log order, on every node.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// Identifies a Sluice node in the cluster (and in raft). Stable across
/// restarts: it is configured, never generated.
pub type NodeId = u64;

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

/// Identifies one incarnation of a stream. Assigned by the state machine from
/// a counter that only grows, so a stream deleted and created again under the
/// same name gets a new id (and fresh directories on every replica).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct StreamId(u64);

impl StreamId {
    /// The first id the cluster hands out.
    pub const FIRST: StreamId = StreamId(1);

    pub const fn new(raw: u64) -> StreamId {
        StreamId(raw)
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    /// The id after this one; `None` once the id space is exhausted (only
    /// reachable from a snapshot or log entry carrying `u64::MAX`).
    pub(super) fn next(self) -> Option<StreamId> {
        self.0.checked_add(1).map(StreamId)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What a user asks for when creating a stream. Validated by
/// `validate::validate_spec` before it is proposed and again when applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamSpec {
    /// Unique in the cluster: 1..=255 of `[A-Za-z0-9_.-]`, not starting with
    /// `.` or `_` (reserved for internal streams).
    pub name: String,
    /// NATS subject partition 0 listens on; `*` and `>` allowed as tokens.
    pub subject: String,
    /// NATS queue group shared with other streams of the group.
    pub group: Option<String>,
    /// 1..=`MAX_PARTITIONS_PER_STREAM`.
    pub partitions: u32,
    /// Replicas per partition, leader included; at most the node count.
    pub replication_factor: u32,
    pub retention_age_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub retention_messages: Option<u64>,
    /// Keep only the last record per key.
    pub compact: bool,
    /// In-sync replicas (leader included) an ack-`all` write needs:
    /// 1..=`replication_factor`. Metadata written before the field existed
    /// loads as 1.
    #[serde(default = "min_insync_replicas_default")]
    pub min_insync_replicas: u32,
}

/// `min_insync_replicas` of a stream that does not name one (and of
/// metadata written before the setting existed).
pub const MIN_INSYNC_REPLICAS_DEFAULT: u32 = 1;

fn min_insync_replicas_default() -> u32 {
    MIN_INSYNC_REPLICAS_DEFAULT
}

impl StreamSpec {
    /// A spec with one partition, one replica, no retention limits and no
    /// compaction: what most tests and simple deployments want.
    pub fn new(name: impl Into<String>, subject: impl Into<String>) -> StreamSpec {
        StreamSpec {
            name: name.into(),
            subject: subject.into(),
            group: None,
            partitions: 1,
            replication_factor: 1,
            retention_age_ms: None,
            retention_bytes: None,
            retention_messages: None,
            compact: false,
            min_insync_replicas: MIN_INSYNC_REPLICAS_DEFAULT,
        }
    }
}

/// Where one partition lives and who leads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionAssignment {
    /// Name of the stream the partition belongs to.
    pub stream: String,
    pub partition: u32,
    /// Current leader; always a member of `isr`.
    pub leader: NodeId,
    /// Every node holding a copy, leader included, distinct.
    pub replicas: Vec<NodeId>,
    /// In-sync replicas: a subset of `replicas` that contains `leader`.
    pub isr: Vec<NodeId>,
    /// Bumped on every leader change (KIP-101 truncation uses it).
    pub leader_epoch: u32,
    /// Bumped on every ISR change. `UpdateIsr` names the version it was
    /// computed from, so a proposal that raced another ISR change (a late
    /// shrink landing after an expand) is refused instead of undoing it
    /// (Kafka's partition epoch, KIP-497).
    #[serde(default)]
    pub isr_version: u64,
    /// Data shard that owns the partition on each replica; below every
    /// replica's shard count.
    pub shard: u32,
}

/// A stream as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRecord {
    pub id: StreamId,
    pub spec: StreamSpec,
    /// One per partition, in partition order (`partitions[i].partition == i`).
    pub partitions: Vec<PartitionAssignment>,
    /// Wall-clock time the creating node proposed the stream (not the apply
    /// time, which would differ between replicas).
    pub created_at_ms: u64,
}

/// What the cluster knows about a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub raft_addr: String,
    pub client_addr: String,
    /// Data shards on the node; shard `k` listens on `client port + k`.
    pub shard_count: u32,
}

/// The replicated cluster metadata. Identical on every node at the same
/// applied log index; changed only by `Metadata::apply`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub(super) streams: BTreeMap<String, StreamRecord>,
    pub(super) next_stream_id: StreamId,
    pub(super) nodes: BTreeMap<NodeId, NodeInfo>,
    /// Per-stream access rules (`acl.rs`). Absent in snapshots written
    /// before ACLs existed, hence the default.
    #[serde(default)]
    pub(super) acls: super::acl::AclRules,
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
