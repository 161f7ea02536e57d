//! Request bodies the client builds and response bodies it reads, one pair
//! per request kind (tables of `schema/protocol.fbs`).
//!
//! Encoders take already-checked values; decoders verify the flatbuffer
//! ([`read_body`]) and turn wire sentinels into options. A decode error is a
//! reason string: the client wraps it in a protocol violation with the
//! server's address.

use flatbuffers::{FlatBufferBuilder, WIPOffset};
use shards::types::{Offset, TimestampMs};

use super::types::{
    BrokerMetadata, ClusterMetadata, CreatedStream, FetchStart, Limit, ListedOffset, OffsetQuery,
    PartitionFailure, PartitionMetadata, StreamConfig, StreamMetadata,
};
use crate::model::NodeId;
use crate::protocol::body::read_body;
use crate::protocol::envelope::AckPolicy;
use crate::protocol::error_code::ErrorCode;
use crate::protocol::generated::protocol as fb;

/// Flatbuffer overhead allowed on top of a publish batch (stream name,
/// vtable, offsets, padding).
const PUBLISH_OVERHEAD_BYTES: usize = 512;

// ------------------------------------------------------------------ encode

pub(super) fn metadata_request(streams: &[&str]) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let names: Vec<WIPOffset<&str>> = streams.iter().map(|s| fbb.create_string(s)).collect();
    let streams = (!names.is_empty()).then(|| fbb.create_vector(&names));
    let root = fb::MetadataRequest::create(&mut fbb, &fb::MetadataRequestArgs { streams });
    fbb.finish_minimal(root);
    fbb.finished_data().to_vec()
}

pub(crate) fn create_stream_request(config: &StreamConfig) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let config = stream_config(&mut fbb, config);
    let root = fb::CreateStreamRequest::create(
        &mut fbb,
        &fb::CreateStreamRequestArgs {
            config: Some(config),
        },
    );
    fbb.finish_minimal(root);
    fbb.finished_data().to_vec()
}

fn stream_config<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    config: &StreamConfig,
) -> WIPOffset<fb::StreamConfig<'a>> {
    let name = fbb.create_string(&config.name);
    let subject = fbb.create_string(&config.subject);
    let group = config
        .group
        .as_deref()
        .map(|group| fbb.create_string(group));
    let small = |value: Option<u16>| value.map_or(0, |v| i16::try_from(v).unwrap_or(i16::MAX));
    fb::StreamConfig::create(
        fbb,
        &fb::StreamConfigArgs {
            name: Some(name),
            subject: Some(subject),
            group,
            partitions: config
                .partitions
                .map_or(0, |p| i32::try_from(p).unwrap_or(i32::MAX)),
            replication_factor: small(config.replication_factor),
            min_insync_replicas: small(config.min_insync_replicas),
            retention_age_ms: config.retention_age_ms.to_wire(),
            retention_bytes: config.retention_bytes.to_wire(),
            retention_messages: config.retention_messages.to_wire(),
            compact: config.compact,
            ack_policy: config.ack_policy.map(AckPolicy::to_wire),
        },
    )
}

pub(crate) fn delete_stream_request(name: &str) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let name = Some(fbb.create_string(name));
    let root = fb::DeleteStreamRequest::create(&mut fbb, &fb::DeleteStreamRequestArgs { name });
    fbb.finish_minimal(root);
    fbb.finished_data().to_vec()
}

pub(crate) fn fetch_request(
    stream: &str,
    partition: i32,
    start: FetchStart,
    max_bytes: u32,
    max_wait_ms: u32,
) -> Vec<u8> {
    let (start_kind, start_value) = match start {
        FetchStart::Offset(offset) => (fb::StartKind::Offset, wire_offset(offset)),
        FetchStart::Earliest => (fb::StartKind::Earliest, 0),
        FetchStart::Latest => (fb::StartKind::Latest, 0),
        FetchStart::Timestamp(at) => (fb::StartKind::Timestamp, at.0),
    };
    let mut fbb = FlatBufferBuilder::new();
    let stream = Some(fbb.create_string(stream));
    let root = fb::FetchRequest::create(
        &mut fbb,
        &fb::FetchRequestArgs {
            stream,
            partition,
            start_kind,
            start_value,
            max_bytes,
            max_wait_ms,
            replica_id: -1,
            current_leader_epoch: -1,
        },
    );
    fbb.finish_minimal(root);
    fbb.finished_data().to_vec()
}

pub(crate) fn publish_request(
    stream: &str,
    partition: i32,
    ack_policy: Option<AckPolicy>,
    batch: &[u8],
) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(batch.len() + PUBLISH_OVERHEAD_BYTES);
    let batch = Some(fbb.create_vector(batch));
    let stream = Some(fbb.create_string(stream));
    let root = fb::PublishRequest::create(
        &mut fbb,
        &fb::PublishRequestArgs {
            stream,
            partition,
            ack_policy: ack_policy.map(AckPolicy::to_wire),
            batch,
        },
    );
    fbb.finish_minimal(root);
    fbb.finished_data().to_vec()
}

pub(super) fn list_offsets_request(stream: &str, partition: i32, query: OffsetQuery) -> Vec<u8> {
    let (kind, timestamp_ms) = match query {
        OffsetQuery::Earliest => (fb::OffsetKind::Earliest, 0),
        OffsetQuery::Latest => (fb::OffsetKind::Latest, 0),
        OffsetQuery::Timestamp(at) => (fb::OffsetKind::Timestamp, at.0),
    };
    let mut fbb = FlatBufferBuilder::new();
    let stream = Some(fbb.create_string(stream));
    let root = fb::ListOffsetsRequest::create(
        &mut fbb,
        &fb::ListOffsetsRequestArgs {
            stream,
            partition,
            kind,
            timestamp_ms,
        },
    );
    fbb.finish_minimal(root);
    fbb.finished_data().to_vec()
}

pub(super) fn set_cursor_request(
    cursor_id: &str,
    stream: &str,
    partition: i32,
    offset: Offset,
) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let cursor_id = Some(fbb.create_string(cursor_id));
    let stream = Some(fbb.create_string(stream));
    let root = fb::SetCursorRequest::create(
        &mut fbb,
        &fb::SetCursorRequestArgs {
            cursor_id,
            stream,
            partition,
            offset: wire_offset(offset),
        },
    );
    fbb.finish_minimal(root);
    fbb.finished_data().to_vec()
}

pub(super) fn fetch_cursor_request(cursor_id: &str, stream: &str, partition: i32) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let cursor_id = Some(fbb.create_string(cursor_id));
    let stream = Some(fbb.create_string(stream));
    let root = fb::FetchCursorRequest::create(
        &mut fbb,
        &fb::FetchCursorRequestArgs {
            cursor_id,
            stream,
            partition,
        },
    );
    fbb.finish_minimal(root);
    fbb.finished_data().to_vec()
}

/// Offsets are `u64` in the engine and `int64` on the wire.
fn wire_offset(offset: Offset) -> i64 {
    i64::try_from(offset.0).unwrap_or(i64::MAX)
}

// ------------------------------------------------------------------ decode

pub(super) fn decode_metadata(body: &[u8]) -> Result<ClusterMetadata, String> {
    let response = read_body::<fb::MetadataResponse>(body).map_err(|e| e.to_string())?;
    let brokers = response
        .brokers()
        .iter()
        .flatten()
        .map(|broker| {
            Ok(BrokerMetadata {
                node_id: node_id(broker.node_id(), "broker node_id")?,
                host: broker.host().unwrap_or_default().to_owned(),
                port_base: broker.port_base(),
                shard_count: broker.shard_count(),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let streams = response
        .streams()
        .iter()
        .flatten()
        .map(stream_metadata)
        .collect::<Result<Vec<_>, String>>()?;
    Ok(ClusterMetadata {
        protocol_version: response.protocol_version(),
        cluster_id: response.cluster_id().map(str::to_owned),
        brokers,
        streams,
    })
}

pub(super) fn decode_create_stream(body: &[u8]) -> Result<CreatedStream, String> {
    let response = read_body::<fb::CreateStreamResponse>(body).map_err(|e| e.to_string())?;
    let stream = response
        .stream()
        .ok_or("CreateStreamResponse without a stream")?;
    Ok(CreatedStream {
        created: response.created(),
        stream: stream_metadata(stream)?,
    })
}

pub(super) fn decode_delete_stream(body: &[u8]) -> Result<(), String> {
    read_body::<fb::DeleteStreamResponse>(body)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The header frame of a fetch answer.
pub(super) struct FetchHeader {
    /// Set when the fetch failed (then `byte_count` is 0).
    pub error: Option<(ErrorCode, String)>,
    /// Wire values; -1 when the server did not fill them in.
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub byte_count: u32,
}

pub(super) fn decode_fetch_header(body: &[u8]) -> Result<FetchHeader, String> {
    let response = read_body::<fb::FetchResponse>(body).map_err(|e| e.to_string())?;
    Ok(FetchHeader {
        error: ErrorCode::from_wire(response.error_code()).map(|code| {
            (
                code,
                response.error_message().unwrap_or_default().to_owned(),
            )
        }),
        high_watermark: response.high_watermark(),
        log_start_offset: response.log_start_offset(),
        byte_count: response.byte_count(),
    })
}

/// `(base_offset, last_offset)` of a committed publish.
pub(super) fn decode_publish(body: &[u8]) -> Result<(Offset, Offset), String> {
    let response = read_body::<fb::PublishResponse>(body).map_err(|e| e.to_string())?;
    let base = offset(response.base_offset(), "base_offset")?;
    let last = offset(response.last_offset(), "last_offset")?;
    if last < base {
        return Err(format!("last_offset {last:?} below base_offset {base:?}"));
    }
    Ok((base, last))
}

pub(super) fn decode_list_offsets(body: &[u8]) -> Result<ListedOffset, String> {
    let response = read_body::<fb::ListOffsetsResponse>(body).map_err(|e| e.to_string())?;
    Ok(ListedOffset {
        offset: offset(response.offset(), "offset")?,
        timestamp: Some(response.timestamp_ms())
            .filter(|ms| *ms >= 0)
            .map(TimestampMs),
    })
}

pub(super) fn decode_set_cursor(body: &[u8]) -> Result<(), String> {
    read_body::<fb::SetCursorResponse>(body).map_err(|e| e.to_string())?;
    Ok(())
}

/// The stored cursor, `None` when there is none (-1 on the wire).
pub(super) fn decode_fetch_cursor(body: &[u8]) -> Result<Option<Offset>, String> {
    let response = read_body::<fb::FetchCursorResponse>(body).map_err(|e| e.to_string())?;
    optional_offset(response.offset(), "offset")
}

fn stream_metadata(stream: fb::StreamMetadata<'_>) -> Result<StreamMetadata, String> {
    let config = stream.config().map(stream_config_of).unwrap_or_default();
    let partitions = stream
        .partitions()
        .iter()
        .flatten()
        .map(partition_metadata)
        .collect::<Result<Vec<_>, String>>()?;
    Ok(StreamMetadata {
        error: ErrorCode::from_wire(stream.error_code()),
        config,
        partitions,
    })
}

fn stream_config_of(config: fb::StreamConfig<'_>) -> StreamConfig {
    let positive = |value: i64| u64::try_from(value).ok().filter(|v| *v > 0);
    StreamConfig {
        name: config.name().unwrap_or_default().to_owned(),
        subject: config.subject().unwrap_or_default().to_owned(),
        group: config.group().filter(|g| !g.is_empty()).map(str::to_owned),
        partitions: positive(config.partitions().into()).and_then(|p| u32::try_from(p).ok()),
        replication_factor: positive(config.replication_factor().into())
            .and_then(|r| u16::try_from(r).ok()),
        min_insync_replicas: positive(config.min_insync_replicas().into())
            .and_then(|r| u16::try_from(r).ok()),
        retention_age_ms: Limit::from_wire(config.retention_age_ms()),
        retention_bytes: Limit::from_wire(config.retention_bytes()),
        retention_messages: Limit::from_wire(config.retention_messages()),
        compact: config.compact(),
        ack_policy: config.ack_policy().and_then(AckPolicy::from_wire),
    }
}

fn partition_metadata(partition: fb::PartitionMetadata<'_>) -> Result<PartitionMetadata, String> {
    let nodes = |ids: Option<flatbuffers::Vector<'_, i64>>, what: &str| {
        ids.iter()
            .flatten()
            .map(|id| node_id(id, what))
            .collect::<Result<Vec<NodeId>, String>>()
    };
    Ok(PartitionMetadata {
        partition: u32::try_from(partition.partition())
            .map_err(|_| format!("negative partition id {}", partition.partition()))?,
        leader: optional_node_id(partition.leader(), "leader")?,
        leader_epoch: Some(partition.leader_epoch()).filter(|epoch| *epoch >= 0),
        shard_index: partition.shard_index(),
        consumer_port: partition.consumer_port(),
        replicas: nodes(partition.replicas(), "replica")?,
        isr: nodes(partition.isr(), "isr member")?,
        high_watermark: optional_offset(partition.high_watermark(), "high_watermark")?,
        log_start_offset: optional_offset(partition.log_start_offset(), "log_start_offset")?,
        failure: partition.failure().map(|cause| PartitionFailure {
            cause: cause.to_string(),
            at_ms: Some(partition.failed_at_ms()).filter(|at| *at >= 0),
        }),
    })
}

/// A required offset: non-negative.
fn offset(value: i64, what: &str) -> Result<Offset, String> {
    u64::try_from(value)
        .map(Offset)
        .map_err(|_| format!("{what} {value} is negative"))
}

/// An offset where -1 means "none".
fn optional_offset(value: i64, what: &str) -> Result<Option<Offset>, String> {
    match value {
        -1 => Ok(None),
        value => offset(value, what).map(Some),
    }
}

fn node_id(value: i64, what: &str) -> Result<NodeId, String> {
    NodeId::from_wire(value).ok_or_else(|| format!("{what} {value} is negative"))
}

/// A node id where -1 means "none".
fn optional_node_id(value: i64, what: &str) -> Result<Option<NodeId>, String> {
    match value {
        -1 => Ok(None),
        value => node_id(value, what).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_config_round_trips_through_the_wire_table() {
        let config = StreamConfig {
            name: "orders".into(),
            subject: "orders.>".into(),
            group: Some("g".into()),
            partitions: Some(3),
            replication_factor: Some(2),
            min_insync_replicas: None,
            retention_age_ms: Limit::Max(7 * 86_400_000),
            retention_bytes: Limit::Unlimited,
            retention_messages: Limit::ServerDefault,
            compact: true,
            ack_policy: Some(AckPolicy::All),
        };
        let body = create_stream_request(&config);
        let request = read_body::<fb::CreateStreamRequest>(&body).expect("verifies");
        let wire = request.config().expect("config");
        assert_eq!(wire.retention_age_ms(), 7 * 86_400_000);
        assert_eq!(wire.retention_bytes(), -1);
        assert_eq!(wire.retention_messages(), 0);
        assert_eq!(wire.partitions(), 3);
        assert_eq!(stream_config_of(wire), config);
    }

    #[test]
    fn defaults_and_sentinels() {
        let body = create_stream_request(&StreamConfig::new("s", "s"));
        let request = read_body::<fb::CreateStreamRequest>(&body).expect("verifies");
        let wire = request.config().expect("config");
        assert_eq!((wire.partitions(), wire.replication_factor()), (0, 0));
        assert_eq!(wire.group(), None);
        assert_eq!(wire.ack_policy(), None);
        assert_eq!(Limit::from_wire(-7), Limit::Unlimited);
        assert_eq!(Limit::Max(u64::MAX).to_wire(), i64::MAX);
        assert_eq!(optional_offset(-1, "x"), Ok(None));
        assert!(optional_offset(-2, "x").is_err());
    }

    #[test]
    fn fetch_request_fields() {
        let body = fetch_request("s", 2, FetchStart::Offset(Offset(41)), 1 << 20, 500);
        let request = read_body::<fb::FetchRequest>(&body).expect("verifies");
        assert_eq!(request.stream(), Some("s"));
        assert_eq!((request.partition(), request.start_value()), (2, 41));
        assert_eq!(request.start_kind(), fb::StartKind::Offset);
        assert_eq!(request.replica_id(), -1);
        let body = fetch_request("s", 0, FetchStart::Timestamp(TimestampMs(9)), 0, 0);
        let request = read_body::<fb::FetchRequest>(&body).expect("verifies");
        assert_eq!(
            (request.start_kind(), request.start_value()),
            (fb::StartKind::Timestamp, 9)
        );
    }
}
