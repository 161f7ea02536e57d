//! What crosses between the control core (tokio) and the data shards
//! (glommio): owned values only, over one SPSC ring per direction per shard.
//!
//! The hot path is `ToShard::Append` / `FromShard::Appended`: the bridge
//! groups the messages of one partition that arrived in one wake-up into one
//! RecordBatch, and the shard answers once that batch is durable.
//! Control-plane requests carry a `futures` oneshot for their answer (it
//! works across both runtimes).

use futures::channel::oneshot;
use shards::types::{Offset, ShardId, TimestampMs};

use crate::cluster::{ClusterError, MetadataLease};
use crate::model::acl::{AclRule, AclTable};
use crate::model::{
    Metadata, MetadataCommand, MetadataResponse, NodeId, NodeInfo, StreamId, StreamRecord,
    StreamSpec,
};
use crate::protocol::error_code::ErrorCode;

/// A partition, unambiguously: stream incarnation + partition index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionKey {
    pub stream_id: StreamId,
    pub partition: u32,
}

impl PartitionKey {
    /// The key of partition `partition` of the stream incarnation `record`.
    pub fn of(record: &StreamRecord, partition: u32) -> PartitionKey {
        PartitionKey {
            stream_id: record.id,
            partition,
        }
    }
}

/// Storage settings of a partition, taken from its stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionSettings {
    pub retention_age_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub retention_messages: Option<u64>,
    pub compact: bool,
}

/// One partition of the cluster and the shard of this node that owns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionEntry {
    pub key: PartitionKey,
    pub stream: String,
    pub partition: u32,
    pub shard: ShardId,
    pub settings: PartitionSettings,
    /// Current partition leader (node id) and its epoch; replication and
    /// fencing key on the epoch.
    pub leader: NodeId,
    pub leader_epoch: u32,
    /// Every node holding a copy, leader included.
    pub replicas: Vec<NodeId>,
    /// In-sync replicas, leader included.
    pub isr: Vec<NodeId>,
    /// Version of `isr` in the metadata; ISR proposals are conditional on it.
    pub isr_version: u64,
    /// ISR size below which ack-`all` appends are refused.
    pub min_insync_replicas: u32,
}

/// Every partition this node serves, sent to each shard (its own copy)
/// whenever the metadata changes. A shard opens the entries it owns, closes
/// and deletes the ones that disappeared, and uses the rest to point clients
/// at the right port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionTable {
    pub entries: Vec<PartitionEntry>,
    /// This node's id.
    pub local_node: NodeId,
    /// Client (consumer protocol) address `host:port` of shard 0 of every
    /// registered node; shard k of a node listens on that port + k.
    pub node_client_addrs: std::collections::BTreeMap<NodeId, String>,
    /// Every ACL rule, indexed for checking: the shard authorizes requests
    /// against its own copy, without asking the control core.
    pub acls: AclTable,
}

impl PartitionTable {
    /// Every partition of the cluster, as `metadata` has it, seen from node
    /// `local_node`.
    pub fn from_metadata(metadata: &Metadata, local_node: NodeId) -> PartitionTable {
        let mut table = PartitionTable::from_streams(metadata.streams().values());
        table.local_node = local_node;
        table.acls = AclTable::from_rules(metadata.acls());
        table.node_client_addrs = metadata
            .nodes()
            .iter()
            .map(|(id, info)| (*id, info.client_addr.clone()))
            .collect();
        table
    }

    pub fn from_streams<'a>(streams: impl Iterator<Item = &'a StreamRecord>) -> PartitionTable {
        let mut entries = Vec::new();
        for record in streams {
            let spec = &record.spec;
            let settings = PartitionSettings {
                retention_age_ms: spec.retention_age_ms,
                retention_bytes: spec.retention_bytes,
                retention_messages: spec.retention_messages,
                compact: spec.compact,
            };
            for assignment in &record.partitions {
                entries.push(PartitionEntry {
                    key: PartitionKey::of(record, assignment.partition),
                    stream: spec.name.clone(),
                    partition: assignment.partition,
                    shard: ShardId(assignment.shard),
                    settings: settings.clone(),
                    leader: assignment.leader,
                    leader_epoch: assignment.leader_epoch,
                    replicas: assignment.replicas.clone(),
                    isr: assignment.isr.clone(),
                    isr_version: assignment.isr_version,
                    min_insync_replicas: spec.min_insync_replicas,
                });
            }
        }
        PartitionTable {
            entries,
            ..PartitionTable::default()
        }
    }
}

/// Where to send the ack for one record, if anywhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckRoute {
    /// NATS subject the ack is published to (reply subject or envelope inbox).
    pub inbox: String,
    pub correlation_id: Option<String>,
}

/// When an append counts as done and may be acked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CommitLevel {
    /// Durable on the partition leader (ack policy `leader`, and records
    /// nobody is waiting for).
    Leader,
    /// Below the high watermark: durable on every in-sync replica, with at
    /// least `min_insync_replicas` of them (ack policy `all`, the default).
    All,
}

/// Records of one partition, encoded as one RecordBatch v2 (base offset 0;
/// the log assigns offsets), with one ack route per record.
#[derive(Debug)]
pub struct AppendRequest {
    pub key: PartitionKey,
    pub stream: String,
    pub partition: u32,
    pub batch: Vec<u8>,
    pub acks: Vec<Option<AckRoute>>,
    /// Every record of the batch asked for this level.
    pub level: CommitLevel,
}

/// Why an append was not made durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendFailure {
    pub code: ErrorCode,
    pub message: String,
}

/// Counters of one shard, for `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    pub shard: ShardId,
    pub partitions: u64,
    pub appends: u64,
    pub append_records: u64,
    pub append_bytes: u64,
    pub append_errors: u64,
    pub fetches: u64,
    pub fetch_bytes: u64,
    /// Bytes of fetch responses that went file → socket by `sendfile`.
    pub sendfile_bytes: u64,
    /// Bytes that had to be copied through user space (socket back-pressure).
    pub copied_bytes: u64,
    pub connections_open: u64,
    pub connections_total: u64,
    pub protocol_errors: u64,
    /// `fdatasync` latency histogram: counts per bucket of
    /// [`FSYNC_BUCKETS_US`], plus the overflow bucket last.
    pub fsync_buckets: Vec<u64>,
    pub fsync_sum_us: u64,
    pub failed_partitions: u64,
    /// Rejected credentials, and requests sent before authenticating.
    pub auth_failures: u64,
    /// Requests refused with `NotAuthorized` by the ACLs.
    pub authorization_denials: u64,
    /// Bytes this shard copied from partition leaders as a follower.
    pub replicated_bytes: u64,
}

/// Upper bounds (µs) of the fsync latency histogram buckets.
pub const FSYNC_BUCKETS_US: [u64; 12] = shards::log::FSYNC_BUCKET_BOUNDS_US;

/// A control-plane request a client sent to a shard's port.
#[derive(Debug)]
pub enum AdminRequest {
    CreateStream(StreamSpec),
    DeleteStream(String),
    /// Every stream (or the named ones) with placement and ports.
    Metadata,
    /// Add operations to an ACL rule (through the metadata leader).
    GrantAcl(AclRule),
    /// Remove operations (all when empty) from an ACL rule.
    RevokeAcl(AclRule),
    /// Every ACL rule, or those of one principal.
    ListAcls {
        principal: Option<String>,
    },
    /// Create the internal cursor stream unless it exists (answered with
    /// `Created`, `created = false` when it already existed).
    EnsureCursorStream,
    /// Nodes with liveness, and every partition with leader, ISR,
    /// watermarks and per-replica lag (`sluice cluster status`).
    ClusterStatus,
}

#[derive(Debug)]
pub enum AdminReply {
    Created {
        record: StreamRecord,
        created: bool,
        /// Registered nodes, for each partition leader's port.
        nodes: std::collections::BTreeMap<NodeId, NodeInfo>,
    },
    Deleted(StreamRecord),
    Metadata(MetadataView),
    /// A grant or revoke is committed and applied by this node's shards.
    AclChanged,
    Acls(Vec<AclRule>),
    ClusterStatus(ClusterStatusView),
    Error(AppendFailure),
}

/// The cluster as `sluice cluster status` shows it, gathered by the node a
/// client asked: metadata from its own copy, liveness from the metadata
/// leader, partition progress from every node that answered in time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterStatusView {
    pub metadata_leader: Option<NodeId>,
    /// Whether the metadata leader answered the liveness question.
    pub liveness_known: bool,
    pub nodes: Vec<NodeRow>,
    pub partitions: Vec<PartitionRow>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRow {
    pub node_id: NodeId,
    pub raft_addr: String,
    pub client_addr: String,
    pub shard_count: u32,
    pub alive: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionRow {
    pub stream: String,
    pub partition: u32,
    pub leader: NodeId,
    pub leader_epoch: u32,
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    /// From the partition leader's report; `None` when it did not answer.
    pub high_watermark: Option<u64>,
    pub log_start: Option<u64>,
    pub log_end: Option<u64>,
    /// One per replica, in `replicas` order.
    pub replica_rows: Vec<ReplicaRow>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaRow {
    pub node: NodeId,
    pub log_end: Option<u64>,
    pub lag: Option<u64>,
    pub in_sync: bool,
}

/// Why and when a partition fail-stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionFailure {
    /// Operation and errno, e.g. `fdatasync EIO`.
    pub cause: String,
    pub at: TimestampMs,
}

/// What a client needs to know of the cluster: streams, where each partition
/// lives, and watermarks when known.
#[derive(Clone, Debug, Default)]
pub struct MetadataView {
    pub node_id: NodeId,
    pub host: String,
    pub base_port: u16,
    pub shard_count: u32,
    /// Every registered node (brokers, and each partition leader's port).
    pub nodes: std::collections::BTreeMap<NodeId, NodeInfo>,
    pub streams: Vec<StreamRecord>,
    /// What this node's shards know of each partition they hold (watermarks,
    /// and follower progress where this node leads).
    pub statuses: std::collections::HashMap<PartitionKey, PartitionStatus>,
}

/// What the shard holding a partition knows of it now: its own log, and,
/// on the partition leader, how far each replica has come.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionStatus {
    pub high_watermark: Offset,
    pub log_start: Offset,
    pub log_end: Offset,
    /// The leader epoch this replica last applied from the partition table.
    pub leader_epoch: u32,
    /// Progress of every replica as tracked by the partition leader (the
    /// leader itself included); empty where this node does not lead or has
    /// no follower tracking for the partition.
    pub replicas: Vec<ReplicaProgress>,
    /// Set once the partition's log fail-stopped.
    pub failure: Option<PartitionFailure>,
    /// Set while the partition is placed on this shard but its log could
    /// not be opened (no space for its directory or first preallocation
    /// step, an I/O error): what appends to it are answered meanwhile. The
    /// shard retries the open every second; the watermarks above mean
    /// nothing then.
    pub open_failure: Option<AppendFailure>,
}

/// One replica's progress as the partition leader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaProgress {
    pub node: NodeId,
    /// The replica's log end offset (fsynced on that replica).
    pub log_end: Offset,
    /// Records it lacks: leader log end − its log end.
    pub lag: u64,
    pub in_sync: bool,
}

/// A cursor request handed to the shard that owns the cursor's partition
/// (`crate::cursor`): the request arrived on another shard's port and
/// travels shard → control core → owning shard, with `reply` for the answer.
#[derive(Debug)]
pub enum CursorOp {
    /// Store `offset` against incarnation `stream_id` of the key's stream
    /// durably, then answer `Ok(None)`.
    Set {
        key: crate::cursor::CursorKey,
        stream_id: StreamId,
        offset: u64,
    },
    /// Answer the stored offset (`Ok(None)` when there is none, or when
    /// the stored one belongs to another incarnation than `stream_id`).
    Fetch {
        key: crate::cursor::CursorKey,
        stream_id: StreamId,
    },
}

/// The answer to a [`CursorOp`].
pub type CursorAnswer = Result<Option<u64>, AppendFailure>;

/// A cursor request addressed to one shard.
#[derive(Debug)]
pub struct CursorRequest {
    /// Shard that owns the cursor partition.
    pub shard: ShardId,
    pub op: CursorOp,
    pub reply: oneshot::Sender<CursorAnswer>,
}

/// Control core → shard.
#[derive(Debug)]
pub enum ToShard {
    Table(PartitionTable),
    /// This node's metadata lease, sent after every renewal and when it
    /// expires: the shard leads a partition only while the lease it holds
    /// is valid (`cluster::lease`), checked against its own clock at every
    /// append, ack and replica fetch.
    Lease(MetadataLease),
    Append(AppendRequest),
    /// What the shard knows of a partition now (describe, cluster status,
    /// metrics, a create confirming its replicas opened); `None` when the
    /// partition is not placed on this shard, `open_failure` set when it is
    /// but could not be opened.
    PartitionStatus {
        key: PartitionKey,
        reply: oneshot::Sender<Option<PartitionStatus>>,
    },
    Stats(oneshot::Sender<ShardStats>),
    /// A cursor request forwarded from another shard.
    Cursor(CursorRequest),
    /// Answered once every command sent before it has been handled (a
    /// partition table is applied when the shard reaches this).
    Barrier(oneshot::Sender<()>),
    /// Finish in-flight appends, sync and close every log, then stop.
    Shutdown,
    /// Nothing to do: sent every [`SHARD_NUDGE_INTERVAL`] so that a shard
    /// executor glommio 0.9.0 parked with work still runnable (its preempt
    /// timer fired before the scheduler's first check; glommio/glommio#53)
    /// is woken by the ring within that interval, not only by its next I/O
    /// completion or timer, which on a quiet shard may be minutes away.
    Nudge,
}

/// How often the control core nudges every shard (see [`ToShard::Nudge`]):
/// ten tiny ring messages a second per shard bound such a stall.
pub const SHARD_NUDGE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Where a leader committed an append: the first record's offset and the
/// leader epoch it led (both go into the publishers' acks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Committed {
    pub base_offset: Offset,
    pub leader_epoch: u32,
}

/// Shard → control core.
#[derive(Debug)]
pub enum FromShard {
    Appended {
        stream: String,
        partition: u32,
        result: Result<Committed, AppendFailure>,
        acks: Vec<Option<AckRoute>>,
    },
    Admin {
        request: AdminRequest,
        reply: oneshot::Sender<AdminReply>,
    },
    /// A metadata change a shard asks for (ISR shrink/expand, leaving the
    /// ISR): proposed through the raft leader by [`crate::cluster::MetadataCore::write`]
    /// (crate::cluster::MetadataNode::write); the answer comes back on `reply`.
    Propose {
        command: MetadataCommand,
        reply: oneshot::Sender<Result<MetadataResponse, ClusterError>>,
    },
    /// A cursor request for another shard, to be forwarded by the router.
    Cursor(CursorRequest),
    /// The shard closed every log and is about to stop.
    Stopped { shard: ShardId },
}
