//! `sluice cluster status`: gathers what the node a client asked can learn
//! of the cluster within a bounded time, and turns it into rows.
//!
//! Metadata (nodes, placement, leaders, ISRs) comes from this node's copy;
//! liveness from the metadata leader (it tracks heartbeats); each
//! partition's watermarks and per-replica progress from the nodes holding
//! it, asked in parallel over the raft transport. A node that does not
//! answer in time leaves its numbers unknown instead of delaying the answer.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::future::join_all;

use crate::cluster::{LocalPartitionStatus, MetadataNode};
use crate::cores::{ClusterStatusView, NodeRow, PartitionRow, ReplicaRow};
use crate::model::{Metadata, NodeId, StreamId};

/// How long the whole status may wait for the leader or for one node.
pub const STATUS_RPC_TIMEOUT: Duration = Duration::from_secs(2);

/// Reports per node, per partition.
pub type Reports = HashMap<NodeId, HashMap<(StreamId, u32), LocalPartitionStatus>>;

pub async fn gather(metadata: &MetadataNode) -> ClusterStatusView {
    let snapshot = metadata.metadata();
    let leader = metadata.leader().map(|(id, _)| id);
    let liveness = tokio::time::timeout(STATUS_RPC_TIMEOUT, metadata.liveness())
        .await
        .ok()
        .and_then(Result::ok);
    let asks = snapshot.nodes().keys().map(|node| async move {
        let report = metadata.node_status(*node, STATUS_RPC_TIMEOUT).await;
        (*node, report)
    });
    let mut reports: Reports = HashMap::new();
    for (node, report) in join_all(asks).await {
        match report {
            Ok(statuses) => {
                // A replica that could not open has no numbers to show.
                let by_key = statuses
                    .into_iter()
                    .filter(|s| s.open_failure.is_none())
                    .map(|s| ((s.stream_id, s.partition), s))
                    .collect();
                reports.insert(node, by_key);
            }
            Err(e) => tracing::debug!(node = node.get(), error = %e, "no status from node"),
        }
    }
    build(&snapshot, leader, liveness.as_ref(), &reports)
}

/// The rows, from the metadata, liveness and the reports that arrived.
pub fn build(
    metadata: &Metadata,
    metadata_leader: Option<NodeId>,
    liveness: Option<&BTreeMap<NodeId, bool>>,
    reports: &Reports,
) -> ClusterStatusView {
    let nodes = metadata
        .nodes()
        .iter()
        .map(|(id, info)| NodeRow {
            node_id: *id,
            raft_addr: info.raft_addr.clone(),
            client_addr: info.client_addr.clone(),
            shard_count: info.shard_count,
            alive: liveness.is_some_and(|l| l.get(id) == Some(&true)),
        })
        .collect();
    let mut partitions = Vec::new();
    for record in metadata.streams().values() {
        for a in &record.partitions {
            let key = (record.id, a.partition);
            let report_of = |node: NodeId| reports.get(&node).and_then(|r| r.get(&key));
            let leader_report = report_of(a.leader);
            let leader_end = leader_report.map(|r| r.log_end);
            let replica_rows = a
                .replicas
                .iter()
                .map(|node| {
                    let in_sync = a.isr.contains(node);
                    // The leader's tracking is authoritative; else the
                    // replica's own log end against the leader's.
                    let tracked =
                        leader_report.and_then(|r| r.replicas.iter().find(|p| p.node == *node));
                    match tracked {
                        Some(p) => ReplicaRow {
                            node: *node,
                            log_end: Some(p.log_end),
                            lag: Some(p.lag),
                            in_sync: p.in_sync,
                        },
                        None => {
                            let own = report_of(*node).map(|r| r.log_end);
                            ReplicaRow {
                                node: *node,
                                log_end: own,
                                lag: own.zip(leader_end).map(|(o, l)| l.saturating_sub(o)),
                                in_sync,
                            }
                        }
                    }
                })
                .collect();
            partitions.push(PartitionRow {
                stream: record.spec.name.clone(),
                partition: a.partition,
                leader: a.leader,
                leader_epoch: a.leader_epoch,
                replicas: a.replicas.clone(),
                isr: a.isr.clone(),
                high_watermark: leader_report.map(|r| r.high_watermark),
                log_start: leader_report.map(|r| r.log_start),
                log_end: leader_end,
                replica_rows,
            });
        }
    }
    ClusterStatusView {
        metadata_leader,
        liveness_known: liveness.is_some(),
        nodes,
        partitions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ReplicaLag;
    use crate::model::nid;
    use crate::model::{MetadataCommand, NodeInfo, PartitionAssignment, StreamSpec};

    fn metadata() -> Metadata {
        let mut m = Metadata::default();
        for id in 1..=3 {
            m.apply(&MetadataCommand::RegisterNode {
                node_id: nid(id),
                info: NodeInfo {
                    raft_addr: format!("127.0.0.1:{}", 9000 + id),
                    client_addr: format!("127.0.0.1:{}", 9100 + id),
                    shard_count: 1,
                },
            });
        }
        let spec = StreamSpec {
            replication_factor: 3,
            ..StreamSpec::new("s", "s")
        };
        m.apply(&MetadataCommand::CreateStream {
            spec,
            placement: vec![PartitionAssignment {
                stream: "s".into(),
                partition: 0,
                leader: nid(1),
                replicas: vec![nid(1), nid(2), nid(3)],
                isr: vec![nid(1), nid(2)],
                leader_epoch: 0,
                isr_version: 0,
                shard: 0,
            }],
            created_at_ms: 0,
        });
        m
    }

    fn report(log_end: u64, replicas: Vec<ReplicaLag>) -> LocalPartitionStatus {
        LocalPartitionStatus {
            stream_id: StreamId::FIRST,
            partition: 0,
            high_watermark: log_end.saturating_sub(2),
            log_start: 0,
            log_end,
            leader_epoch: 0,
            replicas,
            open_failure: None,
        }
    }

    #[test]
    fn rows_prefer_the_leaders_tracking_then_the_replicas_own_log_end() {
        let m = metadata();
        let key = (StreamId::FIRST, 0);
        let mut reports: Reports = HashMap::new();
        let tracked = ReplicaLag {
            node: nid(2),
            log_end: 9,
            lag: 1,
            in_sync: true,
        };
        reports.insert(nid(1), HashMap::from([(key, report(10, vec![tracked]))]));
        reports.insert(nid(3), HashMap::from([(key, report(4, vec![]))]));
        let liveness = BTreeMap::from([(nid(1), true), (nid(2), true), (nid(3), false)]);
        let view = build(&m, Some(nid(1)), Some(&liveness), &reports);
        assert_eq!(view.metadata_leader, Some(nid(1)));
        assert!(view.liveness_known);
        assert_eq!(
            view.nodes.iter().map(|n| n.alive).collect::<Vec<_>>(),
            [true, true, false]
        );
        let p = &view.partitions[0];
        assert_eq!((p.high_watermark, p.log_end), (Some(8), Some(10)));
        let rows: Vec<_> = p
            .replica_rows
            .iter()
            .map(|r| (r.node, r.log_end, r.lag, r.in_sync))
            .collect();
        assert_eq!(
            rows,
            [
                (nid(1), Some(10), Some(0), true),
                (nid(2), Some(9), Some(1), true),
                (nid(3), Some(4), Some(6), false)
            ]
        );
        // Nothing answered: numbers unknown, placement still shown.
        let view = build(&m, None, None, &HashMap::new());
        assert!(!view.liveness_known);
        assert!(view.nodes.iter().all(|n| !n.alive));
        let p = &view.partitions[0];
        assert_eq!((p.leader, p.high_watermark), (nid(1), None));
        assert!(p.replica_rows.iter().all(|r| r.lag.is_none()));
    }
}
