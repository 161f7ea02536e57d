//! ClusterStatus (kind `0x0B`): asks the control core to gather the
//! cluster's state and answers it, leaving out partitions of streams the
//! session may not see.

use super::Answer;
use crate::cores::{AdminReply, AdminRequest, ClusterStatusView};
use crate::protocol::cluster_status::{
    ClusterStatus, ClusterStatusRequest, NodeState, PartitionState, ReplicaState,
};
use crate::protocol::error_code::ErrorCode;
use crate::protocol::error_response::ErrorResponse;
use crate::protocol::frame::{Frame, FrameKind};
use crate::protocol::wire;
use crate::shard_server::Shard;

pub(super) async fn cluster_status(
    shard: &Shard,
    frame: &Frame,
    visible: impl Fn(&str) -> bool,
) -> Answer {
    let request = ClusterStatusRequest::decode(&frame.body)?;
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
    let shown = |stream: &str| {
        (request.streams.is_empty() || request.streams.iter().any(|s| s == stream))
            && visible(stream)
    };
    Ok(Some((
        FrameKind::ClusterStatusResponse,
        status(&view, shown).encode(),
    )))
}

fn status(view: &ClusterStatusView, shown: impl Fn(&str) -> bool) -> ClusterStatus {
    ClusterStatus {
        metadata_leader: view.metadata_leader,
        liveness_known: view.liveness_known,
        nodes: view
            .nodes
            .iter()
            .map(|node| NodeState {
                node_id: node.node_id,
                raft_addr: node.raft_addr.clone(),
                client_addr: node.client_addr.clone(),
                shard_count: wire::u32_to_u16(node.shard_count),
                alive: node.alive,
                metadata_leader: view.metadata_leader == Some(node.node_id),
            })
            .collect(),
        partitions: view
            .partitions
            .iter()
            .filter(|row| shown(&row.stream))
            .map(|row| PartitionState {
                stream: row.stream.clone(),
                partition: row.partition,
                leader: Some(row.leader),
                leader_epoch: Some(row.leader_epoch),
                replicas: row.replicas.clone(),
                isr: row.isr.clone(),
                high_watermark: row.high_watermark,
                log_start_offset: row.log_start,
                log_end_offset: row.log_end,
                replica_status: row
                    .replica_rows
                    .iter()
                    .map(|r| ReplicaState {
                        node_id: r.node,
                        log_end_offset: r.log_end,
                        lag: r.lag,
                        in_sync: r.in_sync,
                    })
                    .collect(),
            })
            .collect(),
    }
}
