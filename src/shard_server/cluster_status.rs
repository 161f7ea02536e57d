//! ClusterStatus (kind 0x0B): asks the control core to gather the cluster's
//! state and encodes it, leaving out partitions of streams the session may
//! not see.

use flatbuffers::FlatBufferBuilder;

use super::Shard;
use crate::cores::{AdminReply, AdminRequest, ClusterStatusView, PartitionRow};
use crate::model::NodeId;
use crate::protocol::body::read_body;
use crate::protocol::error_code::ErrorCode;
use crate::protocol::error_response::ErrorResponse;
use crate::protocol::frame::{Frame, FrameKind};
use crate::protocol::generated::protocol as fb;

type Answer = Result<Option<(FrameKind, Vec<u8>)>, ErrorResponse>;

pub(super) async fn cluster_status(
    shard: &Shard,
    frame: &Frame,
    visible: impl Fn(&str) -> bool,
) -> Answer {
    let request = read_body::<fb::ClusterStatusRequest>(&frame.body)
        .map_err(|e| ErrorResponse::new(e.code(), e.to_string()))?;
    let wanted: Vec<String> = request
        .streams()
        .map(|names| names.iter().map(str::to_owned).collect())
        .unwrap_or_default();
    let view = match shard.admin(AdminRequest::ClusterStatus).await {
        AdminReply::ClusterStatus(view) => view,
        AdminReply::Error(failure) => {
            return Err(ErrorResponse::new(failure.code, failure.message))
        }
        _ => {
            return Err(ErrorResponse::new(
                ErrorCode::Unknown,
                "unexpected cluster status answer",
            ))
        }
    };
    let shown = |row: &PartitionRow| {
        (wanted.is_empty() || wanted.contains(&row.stream)) && visible(&row.stream)
    };
    Ok(Some((
        FrameKind::ClusterStatusResponse,
        encode(&view, shown),
    )))
}

fn encode(view: &ClusterStatusView, shown: impl Fn(&PartitionRow) -> bool) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(1024);
    let nodes: Vec<_> = view
        .nodes
        .iter()
        .map(|node| {
            let raft_addr = fbb.create_string(&node.raft_addr);
            let client_addr = fbb.create_string(&node.client_addr);
            fb::NodeStatus::create(
                &mut fbb,
                &fb::NodeStatusArgs {
                    node_id: node.node_id.to_wire(),
                    raft_addr: Some(raft_addr),
                    client_addr: Some(client_addr),
                    shard_count: node.shard_count.min(u32::from(u16::MAX)) as u16,
                    alive: node.alive,
                    metadata_leader: view.metadata_leader == Some(node.node_id),
                },
            )
        })
        .collect();
    let nodes = fbb.create_vector(&nodes);
    let wire = |v: Option<u64>| v.map_or(-1, |v| v.min(i64::MAX as u64) as i64);
    let mut partitions = Vec::new();
    for row in view.partitions.iter().filter(|r| shown(r)) {
        let replica_rows: Vec<_> = row
            .replica_rows
            .iter()
            .map(|r| {
                fb::ReplicaStatus::create(
                    &mut fbb,
                    &fb::ReplicaStatusArgs {
                        node_id: r.node.to_wire(),
                        log_end_offset: wire(r.log_end),
                        lag: wire(r.lag),
                        in_sync: r.in_sync,
                    },
                )
            })
            .collect();
        let replica_rows = fbb.create_vector(&replica_rows);
        let replicas: Vec<i64> = row.replicas.iter().map(|n| n.to_wire()).collect();
        let replicas = fbb.create_vector(&replicas);
        let isr: Vec<i64> = row.isr.iter().map(|n| n.to_wire()).collect();
        let isr = fbb.create_vector(&isr);
        let stream = fbb.create_string(&row.stream);
        partitions.push(fb::PartitionStatus::create(
            &mut fbb,
            &fb::PartitionStatusArgs {
                stream: Some(stream),
                partition: row.partition.min(i32::MAX as u32) as i32,
                leader: row.leader.to_wire(),
                leader_epoch: shards::types::LeaderEpoch::from_metadata(row.leader_epoch).0,
                replicas: Some(replicas),
                isr: Some(isr),
                high_watermark: wire(row.high_watermark),
                log_start_offset: wire(row.log_start),
                log_end_offset: wire(row.log_end),
                replica_status: Some(replica_rows),
            },
        ));
    }
    let partitions = fbb.create_vector(&partitions);
    let root = fb::ClusterStatusResponse::create(
        &mut fbb,
        &fb::ClusterStatusResponseArgs {
            metadata_leader: view.metadata_leader.map_or(-1, NodeId::to_wire),
            liveness_known: view.liveness_known,
            nodes: Some(nodes),
            partitions: Some(partitions),
        },
    );
    fbb.finish(root, None);
    fbb.finished_data().to_vec()
}
