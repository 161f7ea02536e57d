//! The controller: runs on the metadata leader and moves partition
//! leadership away from dead nodes.
//!
//! Rules (Kafka's, with unclean election off):
//! - a partition whose leader is dead gets a new leader: the first live
//!   ISR member in replica order (`ChangeLeader`, which bumps the leader
//!   epoch and so fences the old leader's writes);
//! - dead nodes leave the ISR (`UpdateIsr`, conditional on the epoch);
//! - a partition with no live ISR member keeps its dead leader and ISR and
//!   stays offline until one of them returns: a node outside the ISR may
//!   lack acknowledged records and never leads.
//!
//! [`plan`] is the pure decision; [`run`] applies it every heartbeat
//! interval while this node leads, each time after a linearizable read
//! (the leader confirmed by a quorum, everything committed applied). Commands are conditional on the leader
//! epoch they were computed from, so a plan made from stale metadata is
//! rejected by the state machine and recomputed next round.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::MetadataCore;
use crate::model::{Metadata, MetadataCommand, MetadataResponse, NodeId};

/// The commands that bring `metadata` in line with the live nodes, in the
/// order they must be applied (a `ChangeLeader` before the `UpdateIsr` at
/// its new epoch).
pub fn plan(metadata: &Metadata, is_alive: impl Fn(NodeId) -> bool) -> Vec<MetadataCommand> {
    let mut commands = Vec::new();
    for record in metadata.streams().values() {
        for assignment in &record.partitions {
            let live_isr: Vec<NodeId> = assignment
                .isr
                .iter()
                .copied()
                .filter(|n| is_alive(*n))
                .collect();
            let mut epoch = assignment.leader_epoch;
            if !is_alive(assignment.leader) {
                let successor = assignment
                    .replicas
                    .iter()
                    .copied()
                    .find(|n| live_isr.contains(n));
                let Some(successor) = successor else {
                    // No live in-sync replica: offline (unclean election off).
                    continue;
                };
                commands.push(MetadataCommand::ChangeLeader {
                    stream: record.spec.name.clone(),
                    stream_id: record.id,
                    partition: assignment.partition,
                    leader_epoch: epoch,
                    leader: successor,
                });
                epoch = epoch.saturating_add(1);
            }
            if live_isr != assignment.isr {
                commands.push(MetadataCommand::UpdateIsr {
                    stream: record.spec.name.clone(),
                    stream_id: record.id,
                    partition: assignment.partition,
                    leader_epoch: epoch,
                    isr_version: Some(assignment.isr_version),
                    isr: live_isr,
                });
            }
        }
    }
    commands
}

/// Partitions with no live in-sync replica (offline), as `stream/partition`.
pub fn offline(metadata: &Metadata, is_alive: impl Fn(NodeId) -> bool) -> BTreeSet<String> {
    metadata
        .streams()
        .values()
        .flat_map(|r| r.partitions.iter())
        .filter(|a| !a.isr.iter().any(|n| is_alive(*n)))
        .map(|a| format!("{}/{}", a.stream, a.partition))
        .collect()
}

/// Runs until the node shuts down: while this node leads the metadata, it
/// applies [`plan`] every heartbeat interval. Taking over leadership starts
/// a fresh liveness grace period (`MetadataCore::liveness_clock`); losing
/// it simply stops the acting.
pub async fn run(core: Arc<MetadataCore>) {
    let interval = super::liveness::heartbeat_interval(core.liveness.timeout());
    let mut leading = false;
    let mut reported_offline = BTreeSet::new();
    loop {
        tokio::time::sleep(interval).await;
        let now_leading = core.is_leader();
        if now_leading && !leading {
            tracing::info!(
                node_id = core.node_id.get(),
                "metadata leader: controller started"
            );
        } else if !now_leading && leading {
            tracing::info!(
                node_id = core.node_id.get(),
                "no longer the metadata leader: controller stopped"
            );
        }
        leading = now_leading;
        if !leading {
            continue;
        }
        // Plan only from metadata known to be current: a new leader may not
        // have applied what its predecessor committed yet.
        if let Err(e) = core.confirm_current_as_leader(interval).await {
            tracing::debug!(error = %e, "controller: metadata not confirmed current; not acting this round");
            continue;
        }
        let metadata = core.metadata();
        let now = core.liveness_clock();
        let alive = |n: NodeId| core.liveness.is_alive(n, now);
        let offline_now = offline(&metadata, alive);
        for partition in offline_now.difference(&reported_offline) {
            tracing::error!(%partition, "partition offline: no live in-sync replica (unclean election is off); it returns when an ISR member does");
        }
        reported_offline = offline_now;
        for command in plan(&metadata, alive) {
            match core.propose(command.clone()).await {
                Ok(MetadataResponse::Ok) => {
                    tracing::info!(?command, "controller: applied");
                }
                Ok(other) => {
                    // Raced with another change (epoch moved): next round
                    // plans from the newer metadata.
                    tracing::debug!(?command, response = ?other, "controller: not applied");
                    break;
                }
                Err(e) => {
                    tracing::warn!(?command, error = %e, "controller: cannot apply");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{nid, nids};
    use crate::model::{PartitionAssignment, StreamId, StreamRecord, StreamSpec};

    fn metadata(leader: NodeId, replicas: &[NodeId], isr: &[NodeId]) -> Metadata {
        let mut m = Metadata::default();
        let spec = StreamSpec {
            replication_factor: replicas.len() as u32,
            ..StreamSpec::new("s", "s")
        };
        m.streams.insert(
            "s".into(),
            StreamRecord {
                id: StreamId::new(7),
                spec,
                partitions: vec![PartitionAssignment {
                    stream: "s".into(),
                    partition: 0,
                    leader,
                    replicas: replicas.to_vec(),
                    isr: isr.to_vec(),
                    leader_epoch: 4,
                    isr_version: 0,
                    shard: 0,
                }],
                created_at_ms: 0,
            },
        );
        m
    }

    #[test]
    fn dead_leader_is_replaced_by_the_first_live_isr_member_then_leaves_the_isr() {
        let m = metadata(nid(1), &[nid(1), nid(2), nid(3)], &[nid(1), nid(3)]);
        let commands = plan(&m, |n| n != nid(1));
        assert_eq!(
            commands,
            vec![
                MetadataCommand::ChangeLeader {
                    stream: "s".into(),
                    stream_id: StreamId::new(7),
                    partition: 0,
                    leader_epoch: 4,
                    leader: nid(3),
                },
                MetadataCommand::UpdateIsr {
                    stream: "s".into(),
                    stream_id: StreamId::new(7),
                    partition: 0,
                    leader_epoch: 5,
                    isr_version: Some(0),
                    isr: vec![nid(3)],
                },
            ],
            "node 2 is alive but not in the ISR: never elected"
        );
        // Applying the plan gives a consistent assignment.
        let mut applied = m.clone();
        for c in &commands {
            assert_eq!(applied.apply(c).response, MetadataResponse::Ok);
        }
        let a = &applied.streams()["s"].partitions[0];
        assert_eq!(
            (a.leader, a.leader_epoch, a.isr.clone()),
            (nid(3), 5, nids(&[3]))
        );
        assert!(
            plan(&applied, |n| n != nid(1)).is_empty(),
            "a settled plan is empty"
        );
    }

    #[test]
    fn no_live_isr_member_leaves_the_partition_offline() {
        let m = metadata(nid(1), &[nid(1), nid(2), nid(3)], &[nid(1)]);
        assert!(
            plan(&m, |n| n != nid(1)).is_empty(),
            "unclean election is off"
        );
        assert_eq!(
            offline(&m, |n| n != nid(1)),
            BTreeSet::from(["s/0".to_owned()])
        );
        assert!(offline(&m, |_| true).is_empty());
    }

    #[test]
    fn dead_follower_leaves_the_isr_at_the_current_epoch() {
        let m = metadata(nid(1), &[nid(1), nid(2), nid(3)], &[nid(1), nid(2), nid(3)]);
        assert_eq!(
            plan(&m, |n| n != nid(2)),
            vec![MetadataCommand::UpdateIsr {
                stream: "s".into(),
                stream_id: StreamId::new(7),
                partition: 0,
                leader_epoch: 4,
                isr_version: Some(0),
                isr: vec![nid(1), nid(3)],
            }]
        );
        assert!(plan(&m, |_| true).is_empty());
    }
}
