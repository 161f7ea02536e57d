//! The metadata as a client sees it: the control core's view (nodes,
//! streams, this node's partition statuses) described as the protocol
//! module's owned [`ClusterMetadata`] model, filtered by what the session
//! may see. A second wire protocol maps this model to its own answer.

use std::collections::{BTreeMap, HashMap};

use shards::types::ShardId;

use super::ServiceError;
use crate::cores::{AdminReply, AdminRequest, MetadataView, PartitionKey, PartitionStatus};
use crate::model::{NodeId, NodeInfo, StreamRecord};
use crate::protocol::error_code::ErrorCode;
use crate::protocol::limits::PROTOCOL_VERSION;
use crate::protocol::metadata::{
    BrokerMetadata, ClusterMetadata, PartitionFailure, PartitionMetadata, StreamMetadata,
};
use crate::protocol::stream_config::StreamConfig;
use crate::protocol::wire;
use crate::shard_server::Shard;

/// The control core's current metadata view (asked over the ring).
pub async fn view(shard: &Shard) -> Result<MetadataView, ServiceError> {
    match shard.admin(AdminRequest::Metadata).await {
        AdminReply::Metadata(view) => Ok(view),
        AdminReply::Error(failure) => Err(failure.into()),
        _ => Err(ServiceError::new(
            ErrorCode::Unknown,
            "unexpected metadata answer",
        )),
    }
}

/// The streams asked for (all when `wanted` is empty) that `visible` lets
/// the principal see. A named stream it may not see is answered
/// `NotAuthorized` whether or not it exists, so names do not leak.
pub fn describe(
    view: &MetadataView,
    wanted: &[String],
    visible: impl Fn(&str) -> bool,
) -> ClusterMetadata {
    // Every registered node; this node from its own settings (it may not be
    // registered yet right after start-up).
    let mut brokers = vec![BrokerMetadata {
        node_id: view.node_id,
        host: view.host.clone(),
        port_base: view.base_port,
        shard_count: wire::u32_to_u16(view.shard_count),
    }];
    for (id, info) in view.nodes.iter().filter(|(id, _)| **id != view.node_id) {
        if let Some((host, port)) = split_addr(&info.client_addr) {
            brokers.push(BrokerMetadata {
                node_id: *id,
                host: host.to_owned(),
                port_base: port,
                shard_count: wire::u32_to_u16(info.shard_count),
            });
        }
    }
    let mut streams = Vec::new();
    for record in &view.streams {
        if !wanted.is_empty() && !wanted.contains(&record.spec.name) {
            continue;
        }
        if !visible(&record.spec.name) {
            continue;
        }
        streams.push(stream_metadata(
            record,
            |node| client_port(&view.nodes, node).unwrap_or(view.base_port),
            &view.statuses,
        ));
    }
    for name in wanted {
        let error = if !visible(name) {
            ErrorCode::NotAuthorized
        } else if !view.streams.iter().any(|r| r.spec.name == *name) {
            ErrorCode::StreamNotFound
        } else {
            continue;
        };
        streams.push(StreamMetadata::refused(name, error));
    }
    ClusterMetadata {
        protocol_version: PROTOCOL_VERSION,
        cluster_id: None,
        brokers,
        streams,
    }
}

/// One stream and its partitions. `leader_port` gives a partition leader's
/// base client port: a client reads a partition from its leader at that
/// port + the shard index. `statuses` holds what this node's shards know
/// of the partitions they hold (watermarks, failures).
pub fn stream_metadata(
    record: &StreamRecord,
    leader_port: impl Fn(NodeId) -> u16,
    statuses: &HashMap<PartitionKey, PartitionStatus>,
) -> StreamMetadata {
    let partitions = record
        .partitions
        .iter()
        .map(|assignment| {
            let key = PartitionKey::of(record, assignment.partition);
            let status = statuses.get(&key);
            // A partition placed here that could not be opened has no
            // watermarks; its `failure` says why (no time: it is retried).
            let opened = status.filter(|s| s.open_failure.is_none());
            let failure = status.and_then(|s| s.failure.as_ref());
            let cause = match status.and_then(|s| s.open_failure.as_ref()) {
                Some(open_failure) => Some(format!("not open: {}", open_failure.message)),
                None => failure.map(|f| f.cause.clone()),
            };
            PartitionMetadata {
                partition: assignment.partition,
                leader: Some(assignment.leader),
                leader_epoch: Some(wire::epoch_to_wire(assignment.leader_epoch)),
                shard_index: u16::try_from(assignment.shard).unwrap_or(u16::MAX),
                consumer_port: ShardId(assignment.shard)
                    .port(leader_port(assignment.leader))
                    .unwrap_or(u16::MAX),
                replicas: assignment.replicas.clone(),
                isr: assignment.isr.clone(),
                high_watermark: opened.map(|s| s.high_watermark),
                log_start_offset: opened.map(|s| s.log_start),
                failure: cause.map(|cause| PartitionFailure {
                    cause,
                    at_ms: failure.map(|f| f.at.0),
                }),
            }
        })
        .collect();
    StreamMetadata {
        error: None,
        config: StreamConfig::from(&record.spec),
        partitions,
    }
}

/// `host:port` split, when the port is a number.
fn split_addr(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    Some((host, port.parse().ok()?))
}

/// The base (shard 0) client port node `node` registered.
pub fn client_port(nodes: &BTreeMap<NodeId, NodeInfo>, node: NodeId) -> Option<u16> {
    nodes
        .get(&node)
        .and_then(|info| split_addr(&info.client_addr))
        .map(|(_, port)| port)
}
