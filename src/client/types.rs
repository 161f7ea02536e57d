//! The owned values the client hands out and takes in: wire tables decoded
//! into plain Rust types, with the wire's sentinels (`-1`, `0 = server
//! default`) turned into `Option`s and enums.

use shards::batch::DecodedRecord;
use shards::types::{Offset, TimestampMs};

use crate::model::{NodeId, StreamSpec};
use crate::protocol::envelope::AckPolicy;
use crate::protocol::error_code::ErrorCode;

/// A stream retention limit as the wire carries it: `0` = the server's
/// default, `-1` = no limit, `> 0` = the limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Limit {
    /// Whatever the server is configured with (wire `0`).
    #[default]
    ServerDefault,
    /// No limit (wire `-1`).
    Unlimited,
    /// At most this much (wire `> 0`; `0` is not a valid limit).
    Max(u64),
}

impl Limit {
    /// The wire value. A limit above `i64::MAX` is sent as `i64::MAX`.
    pub fn to_wire(self) -> i64 {
        match self {
            Limit::ServerDefault => 0,
            Limit::Unlimited => -1,
            Limit::Max(value) => i64::try_from(value).unwrap_or(i64::MAX).max(1),
        }
    }

    /// Reads a wire value; any negative value is "no limit".
    pub fn from_wire(value: i64) -> Limit {
        match u64::try_from(value) {
            Ok(0) => Limit::ServerDefault,
            Ok(value) => Limit::Max(value),
            Err(_) => Limit::Unlimited,
        }
    }

    /// From the cluster's resolved form, where `None` means "no limit".
    fn from_spec(value: Option<u64>) -> Limit {
        value.map_or(Limit::Unlimited, Limit::Max)
    }
}

/// A stream's settings as `CreateStream` sends them and `Metadata` reports
/// them (`StreamConfig` in `schema/protocol.fbs`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamConfig {
    pub name: String,
    /// NATS subject of partition 0 (partition `i > 0` listens on `subject.i`).
    pub subject: String,
    /// Consumer group (NATS queue group); `None` = no group.
    pub group: Option<String>,
    /// `None` = the server's default.
    pub partitions: Option<u32>,
    /// `None` = the server's default.
    pub replication_factor: Option<u16>,
    /// `None` = the server's default.
    pub min_insync_replicas: Option<u16>,
    /// Milliseconds.
    pub retention_age_ms: Limit,
    pub retention_bytes: Limit,
    pub retention_messages: Limit,
    pub compact: bool,
    /// `None` = the server's default.
    pub ack_policy: Option<AckPolicy>,
}

impl StreamConfig {
    /// Name and subject; every other setting is the server's default.
    pub fn new(name: impl Into<String>, subject: impl Into<String>) -> StreamConfig {
        StreamConfig {
            name: name.into(),
            subject: subject.into(),
            ..StreamConfig::default()
        }
    }
}

impl From<&StreamSpec> for StreamConfig {
    /// The cluster's fully resolved spec: every field explicit, absent
    /// retention limits meaning "no limit" rather than "server default".
    fn from(spec: &StreamSpec) -> StreamConfig {
        StreamConfig {
            name: spec.name.clone(),
            subject: spec.subject.clone(),
            group: spec.group.clone(),
            partitions: Some(spec.partitions),
            replication_factor: Some(u16::try_from(spec.replication_factor).unwrap_or(u16::MAX)),
            min_insync_replicas: Some(u16::try_from(spec.min_insync_replicas).unwrap_or(u16::MAX)),
            retention_age_ms: Limit::from_spec(spec.retention_age_ms),
            retention_bytes: Limit::from_spec(spec.retention_bytes),
            retention_messages: Limit::from_spec(spec.retention_messages),
            compact: spec.compact,
            ack_policy: None,
        }
    }
}

/// The answer to `Metadata`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterMetadata {
    pub protocol_version: u16,
    pub cluster_id: Option<String>,
    pub brokers: Vec<BrokerMetadata>,
    pub streams: Vec<StreamMetadata>,
}

impl ClusterMetadata {
    pub fn stream(&self, name: &str) -> Option<&StreamMetadata> {
        self.streams
            .iter()
            .find(|stream| stream.config.name == name)
    }

    pub fn broker(&self, node_id: NodeId) -> Option<&BrokerMetadata> {
        self.brokers.iter().find(|broker| broker.node_id == node_id)
    }
}

/// One node of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BrokerMetadata {
    pub node_id: NodeId,
    pub host: String,
    /// Shard `i` of this node listens on `port_base + i`.
    pub port_base: u16,
    pub shard_count: u16,
}

/// One stream in a `Metadata` answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamMetadata {
    /// Set for a stream named in the request that could not be described
    /// (e.g. [`ErrorCode::StreamNotFound`]); then only `config.name` is set.
    pub error: Option<ErrorCode>,
    pub config: StreamConfig,
    pub partitions: Vec<PartitionMetadata>,
}

/// Where one partition lives, and its watermarks as last reported to the
/// metadata (they may lag; Fetch and ListOffsets give current values).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionMetadata {
    pub partition: u32,
    /// `None` while the partition has no leader.
    pub leader: Option<NodeId>,
    pub leader_epoch: Option<i32>,
    pub shard_index: u16,
    /// The leader's port for this partition (`port_base + shard_index`).
    pub consumer_port: u16,
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    pub high_watermark: Option<Offset>,
    pub log_start_offset: Option<Offset>,
    /// Set when the partition fail-stopped (e.g. after a failed fsync).
    pub failure: Option<PartitionFailure>,
}

/// Why and when a partition stopped taking writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionFailure {
    /// Operation and errno, e.g. `fdatasync EIO`.
    pub cause: String,
    /// ms since the Unix epoch; `None` if the server did not say.
    pub at_ms: Option<i64>,
}

/// The outcome of `CreateStream`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatedStream {
    /// `false` when a stream with this name and these settings existed.
    pub created: bool,
    pub stream: StreamMetadata,
}

/// Where a fetch starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchStart {
    /// At this offset; records below it in the first batch are skipped.
    Offset(Offset),
    /// At the log start offset.
    Earliest,
    /// At the high watermark: only records committed after the request.
    Latest,
    /// At the first record whose timestamp is at least this.
    Timestamp(TimestampMs),
}

/// What `ListOffsets` looks up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetQuery {
    Earliest,
    Latest,
    /// The first record whose timestamp is at least this.
    Timestamp(TimestampMs),
}

/// The answer to `ListOffsets`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListedOffset {
    pub offset: Offset,
    /// For [`OffsetQuery::Timestamp`]: the timestamp of the record at
    /// `offset`; `None` when no record is that recent (then `offset` is the
    /// high watermark) and for the other queries.
    pub timestamp: Option<TimestampMs>,
}

/// The answer to one fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchResult {
    /// Offset after the last committed record when the server answered.
    pub high_watermark: Offset,
    /// Oldest retained offset.
    pub log_start: Offset,
    /// The fetched records at or after the start position, in offset order.
    pub records: Vec<DecodedRecord>,
    /// Where the next fetch continues: after the last batch received, or the
    /// start position when nothing arrived.
    pub next_offset: Offset,
}
