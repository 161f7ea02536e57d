//! Streams: their ids, specs and where their partitions live.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::NodeId;

/// Name of the internal stream that holds every cursor (`crate::cursor`).
/// Names starting with `_` are reserved for internal streams: users cannot
/// create them. Here, not beside the cursor code, because the model's name
/// rules (`validate::INTERNAL_STREAM_NAMES`) must know it too.
pub const CURSORS_STREAM: &str = "__cursors";

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
    pub(crate) fn next(self) -> Option<StreamId> {
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
