//! `ClusterStatus` (kind `0x0B`, answer `0x8B`): nodes, liveness, and every
//! partition's leader, epoch, replicas, ISR, watermarks and per-replica
//! lag, as the asked node could learn them.

use flatbuffers::FlatBufferBuilder;

use super::body::{read_body, DecodeError};
use super::generated::protocol as fb;
use super::wire;
use crate::model::NodeId;

/// Which streams' partitions to include; empty = every stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterStatusRequest {
    pub streams: Vec<String>,
}

impl ClusterStatusRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::new();
        let streams = wire::create_names(&mut fbb, &self.streams);
        let root =
            fb::ClusterStatusRequest::create(&mut fbb, &fb::ClusterStatusRequestArgs { streams });
        fbb.finish_minimal(root);
        fbb.finished_data().to_vec()
    }

    pub fn decode(body: &[u8]) -> Result<ClusterStatusRequest, DecodeError> {
        let request = read_body::<fb::ClusterStatusRequest>(body)?;
        Ok(ClusterStatusRequest {
            streams: wire::strings(request.streams()),
        })
    }
}

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

/// A `u64` where -1 means "unknown"; any other negative value is an error.
fn optional_u64(
    table: &'static str,
    field: &'static str,
    value: i64,
) -> Result<Option<u64>, DecodeError> {
    wire::optional_offset(table, field, value).map(|value| value.map(|offset| offset.0))
}

impl ClusterStatus {
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::with_capacity(1024);
        let nodes: Vec<_> = self
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
                        shard_count: node.shard_count,
                        alive: node.alive,
                        metadata_leader: node.metadata_leader,
                    },
                )
            })
            .collect();
        let nodes = fbb.create_vector(&nodes);
        let mut partitions = Vec::with_capacity(self.partitions.len());
        for row in &self.partitions {
            let replica_rows: Vec<_> = row
                .replica_status
                .iter()
                .map(|r| {
                    fb::ReplicaStatus::create(
                        &mut fbb,
                        &fb::ReplicaStatusArgs {
                            node_id: r.node_id.to_wire(),
                            log_end_offset: wire::optional_u64_to_wire(r.log_end_offset),
                            lag: wire::optional_u64_to_wire(r.lag),
                            in_sync: r.in_sync,
                        },
                    )
                })
                .collect();
            let replica_rows = fbb.create_vector(&replica_rows);
            let replicas = fbb.create_vector(&wire::node_ids_to_wire(&row.replicas));
            let isr = fbb.create_vector(&wire::node_ids_to_wire(&row.isr));
            let stream = fbb.create_string(&row.stream);
            partitions.push(fb::PartitionStatus::create(
                &mut fbb,
                &fb::PartitionStatusArgs {
                    stream: Some(stream),
                    partition: wire::partition_to_wire(row.partition),
                    leader: wire::optional_node_id_to_wire(row.leader),
                    leader_epoch: row.leader_epoch.map_or(-1, wire::epoch_to_wire),
                    replicas: Some(replicas),
                    isr: Some(isr),
                    high_watermark: wire::optional_u64_to_wire(row.high_watermark),
                    log_start_offset: wire::optional_u64_to_wire(row.log_start_offset),
                    log_end_offset: wire::optional_u64_to_wire(row.log_end_offset),
                    replica_status: Some(replica_rows),
                },
            ));
        }
        let partitions = fbb.create_vector(&partitions);
        let root = fb::ClusterStatusResponse::create(
            &mut fbb,
            &fb::ClusterStatusResponseArgs {
                metadata_leader: wire::optional_node_id_to_wire(self.metadata_leader),
                liveness_known: self.liveness_known,
                nodes: Some(nodes),
                partitions: Some(partitions),
            },
        );
        fbb.finish_minimal(root);
        fbb.finished_data().to_vec()
    }

    pub fn decode(body: &[u8]) -> Result<ClusterStatus, DecodeError> {
        let response = read_body::<fb::ClusterStatusResponse>(body)?;
        let nodes = response
            .nodes()
            .into_iter()
            .flatten()
            .map(|n| {
                Ok(NodeState {
                    node_id: wire::node_id("NodeStatus", "node_id", n.node_id())?,
                    raft_addr: n.raft_addr().unwrap_or_default().to_owned(),
                    client_addr: n.client_addr().unwrap_or_default().to_owned(),
                    shard_count: n.shard_count(),
                    alive: n.alive(),
                    metadata_leader: n.metadata_leader(),
                })
            })
            .collect::<Result<Vec<_>, DecodeError>>()?;
        let table = "PartitionStatus";
        let partitions = response
            .partitions()
            .into_iter()
            .flatten()
            .map(|p| {
                Ok(PartitionState {
                    stream: p.stream().unwrap_or_default().to_owned(),
                    partition: wire::partition(table, p.partition())?,
                    leader: wire::optional_node_id(table, "leader", p.leader())?,
                    // Any negative epoch reads as "none".
                    leader_epoch: u32::try_from(p.leader_epoch()).ok(),
                    replicas: wire::node_ids(table, "replicas", p.replicas())?,
                    isr: wire::node_ids(table, "isr", p.isr())?,
                    high_watermark: optional_u64(table, "high_watermark", p.high_watermark())?,
                    log_start_offset: optional_u64(
                        table,
                        "log_start_offset",
                        p.log_start_offset(),
                    )?,
                    log_end_offset: optional_u64(table, "log_end_offset", p.log_end_offset())?,
                    replica_status: p
                        .replica_status()
                        .into_iter()
                        .flatten()
                        .map(|r| {
                            Ok(ReplicaState {
                                node_id: wire::node_id("ReplicaStatus", "node_id", r.node_id())?,
                                log_end_offset: optional_u64(
                                    "ReplicaStatus",
                                    "log_end_offset",
                                    r.log_end_offset(),
                                )?,
                                lag: optional_u64("ReplicaStatus", "lag", r.lag())?,
                                in_sync: r.in_sync(),
                            })
                        })
                        .collect::<Result<Vec<_>, DecodeError>>()?,
                })
            })
            .collect::<Result<Vec<_>, DecodeError>>()?;
        Ok(ClusterStatus {
            metadata_leader: wire::optional_node_id(
                "ClusterStatusResponse",
                "metadata_leader",
                response.metadata_leader(),
            )?,
            liveness_known: response.liveness_known(),
            nodes,
            partitions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{nid, nids};

    #[test]
    fn cluster_status_round_trips() {
        let status = ClusterStatus {
            metadata_leader: Some(nid(1)),
            liveness_known: true,
            nodes: vec![NodeState {
                node_id: nid(1),
                raft_addr: "a:1".into(),
                client_addr: "a:2".into(),
                shard_count: 2,
                alive: true,
                metadata_leader: true,
            }],
            partitions: vec![PartitionState {
                stream: "s".into(),
                partition: 0,
                leader: Some(nid(1)),
                leader_epoch: Some(2),
                replicas: nids(&[1, 2]),
                isr: nids(&[1]),
                high_watermark: Some(5),
                log_start_offset: Some(0),
                log_end_offset: None,
                replica_status: vec![ReplicaState {
                    node_id: nid(2),
                    log_end_offset: None,
                    lag: Some(3),
                    in_sync: false,
                }],
            }],
        };
        assert_eq!(ClusterStatus::decode(&status.encode()), Ok(status));
        let request = ClusterStatusRequest {
            streams: vec!["s".into()],
        };
        assert_eq!(ClusterStatusRequest::decode(&request.encode()), Ok(request));
    }
}
