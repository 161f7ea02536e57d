//! `ClusterStatus` (kind 0x0B): nodes, liveness, and every partition's
//! leader, epoch, replicas, ISR, watermarks and per-replica lag.

use bytes::Bytes;
use flatbuffers::FlatBufferBuilder;

use super::{Client, ClientError};
use crate::model::NodeId;
use crate::protocol::body::read_body;
use crate::protocol::frame::FrameKind;
use crate::protocol::generated::protocol as fb;

/// The cluster as the asked node could learn it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ClusterStatus {
    /// The metadata (raft) leader, when one is known.
    pub metadata_leader: Option<NodeId>,
    /// Whether the metadata leader answered the liveness question (if not,
    /// every `alive` is false).
    pub liveness_known: bool,
    pub nodes: Vec<NodeState>,
    pub partitions: Vec<PartitionState>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct NodeState {
    pub node_id: NodeId,
    pub raft_addr: String,
    pub client_addr: String,
    pub shard_count: u16,
    pub alive: bool,
    pub metadata_leader: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PartitionState {
    pub stream: String,
    pub partition: u32,
    pub leader: Option<NodeId>,
    pub leader_epoch: Option<u32>,
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    /// `None` when the partition leader did not answer.
    pub high_watermark: Option<u64>,
    pub log_start_offset: Option<u64>,
    pub log_end_offset: Option<u64>,
    pub replica_status: Vec<ReplicaState>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReplicaState {
    pub node_id: NodeId,
    pub log_end_offset: Option<u64>,
    /// Records it lacks behind the leader's log end.
    pub lag: Option<u64>,
    pub in_sync: bool,
}

impl Client {
    /// The cluster's nodes and the partitions of `streams` (all when empty).
    pub fn cluster_status(&mut self, streams: &[&str]) -> Result<ClusterStatus, ClientError> {
        let mut fbb = FlatBufferBuilder::new();
        let names: Vec<_> = streams.iter().map(|s| fbb.create_string(s)).collect();
        let names = (!names.is_empty()).then(|| fbb.create_vector(&names));
        let root = fb::ClusterStatusRequest::create(
            &mut fbb,
            &fb::ClusterStatusRequestArgs { streams: names },
        );
        fbb.finish_minimal(root);
        let body = fbb.finished_data().to_vec();
        self.call(
            self.bootstrap,
            FrameKind::ClusterStatusRequest,
            &body,
            |c, body| decode(&body).map_err(|e| ClientError::protocol(c.addr(), e)),
        )
    }
}

fn known(v: i64) -> Option<u64> {
    u64::try_from(v).ok()
}

fn ids(v: Option<flatbuffers::Vector<'_, i64>>) -> Vec<NodeId> {
    v.into_iter()
        .flatten()
        .filter_map(NodeId::from_wire)
        .collect()
}

fn decode(body: &Bytes) -> Result<ClusterStatus, String> {
    let response = read_body::<fb::ClusterStatusResponse>(body).map_err(|e| e.to_string())?;
    let nodes = response
        .nodes()
        .into_iter()
        .flatten()
        .map(|n| NodeState {
            node_id: NodeId::from_wire(n.node_id()).unwrap_or_default(),
            raft_addr: n.raft_addr().unwrap_or_default().to_owned(),
            client_addr: n.client_addr().unwrap_or_default().to_owned(),
            shard_count: n.shard_count(),
            alive: n.alive(),
            metadata_leader: n.metadata_leader(),
        })
        .collect();
    let partitions = response
        .partitions()
        .into_iter()
        .flatten()
        .map(|p| PartitionState {
            stream: p.stream().unwrap_or_default().to_owned(),
            partition: u32::try_from(p.partition()).unwrap_or(0),
            leader: NodeId::from_wire(p.leader()),
            leader_epoch: u32::try_from(p.leader_epoch()).ok(),
            replicas: ids(p.replicas()),
            isr: ids(p.isr()),
            high_watermark: known(p.high_watermark()),
            log_start_offset: known(p.log_start_offset()),
            log_end_offset: known(p.log_end_offset()),
            replica_status: p
                .replica_status()
                .into_iter()
                .flatten()
                .map(|r| ReplicaState {
                    node_id: NodeId::from_wire(r.node_id()).unwrap_or_default(),
                    log_end_offset: known(r.log_end_offset()),
                    lag: known(r.lag()),
                    in_sync: r.in_sync(),
                })
                .collect(),
        })
        .collect();
    Ok(ClusterStatus {
        metadata_leader: NodeId::from_wire(response.metadata_leader()),
        liveness_known: response.liveness_known(),
        nodes,
        partitions,
    })
}
