//! Where a new stream's partitions go: which nodes replicate each partition,
//! which of them leads, and which data shard owns it.
//!
//! Placement runs on the proposing node, before the command enters the raft
//! log; the state machine only checks the result (`apply.rs`), so a future
//! smarter placement (load-aware, rack-aware) needs no log format change.

use crate::model::{Metadata, NodeId, PartitionAssignment, StreamSpec};

/// Decides the assignments of a new stream from the current metadata.
pub trait Placement {
    fn place(
        &self,
        spec: &StreamSpec,
        metadata: &Metadata,
    ) -> Result<Vec<PartitionAssignment>, PlacementError>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("replication factor {replication_factor} needs that many live nodes, the cluster has {nodes}; start or join more nodes (see `sluice cluster status`) or lower --replication-factor")]
    NotEnoughNodes {
        replication_factor: u32,
        nodes: usize,
    },
}

/// Leaders round-robin over the registered nodes (in id order) starting at
/// a preferred node; each partition's followers are the next nodes in that
/// order. The shard is `(partition + hash(stream name)) % shard_count`, so
/// consecutive partitions land on consecutive shards and different streams
/// start on different shards. With replicas of different shard counts the
/// smallest count is used, so the shard exists on every replica.
#[derive(Debug, Clone, Copy)]
pub struct RoundRobinPlacement {
    first_leader: NodeId,
}

impl RoundRobinPlacement {
    /// Partition 0 is led by `first_leader` if it is registered (normally the
    /// proposing node), else by a node chosen from the stream name's hash.
    pub fn starting_at(first_leader: NodeId) -> RoundRobinPlacement {
        RoundRobinPlacement { first_leader }
    }
}

impl Placement for RoundRobinPlacement {
    fn place(
        &self,
        spec: &StreamSpec,
        metadata: &Metadata,
    ) -> Result<Vec<PartitionAssignment>, PlacementError> {
        let nodes: Vec<NodeId> = metadata.nodes().keys().copied().collect();
        let replication_factor = spec.replication_factor as usize;
        if replication_factor == 0 || replication_factor > nodes.len() {
            return Err(PlacementError::NotEnoughNodes {
                replication_factor: spec.replication_factor,
                nodes: nodes.len(),
            });
        }
        let name_hash = u64::from(stream_hash(&spec.name));
        let start = nodes
            .iter()
            .position(|n| *n == self.first_leader)
            .unwrap_or((name_hash % nodes.len() as u64) as usize);
        let placement = (0..spec.partitions)
            .map(|partition| {
                let leader_index = (start + partition as usize) % nodes.len();
                let replicas: Vec<NodeId> = (0..replication_factor)
                    .map(|k| nodes[(leader_index + k) % nodes.len()])
                    .collect();
                let shard_count = replicas
                    .iter()
                    .map(|n| metadata.nodes()[n].shard_count)
                    .min()
                    .unwrap_or(1)
                    .max(1);
                let shard = ((u64::from(partition) + name_hash) % u64::from(shard_count)) as u32;
                PartitionAssignment {
                    stream: spec.name.clone(),
                    partition,
                    leader: replicas[0],
                    isr: replicas.clone(),
                    replicas,
                    leader_epoch: 0,
                    isr_version: 0,
                    shard,
                }
            })
            .collect();
        Ok(placement)
    }
}

/// A hash of the stream name that is the same on every node and every build
/// (unlike `std`'s `DefaultHasher`, whose algorithm may change).
pub fn stream_hash(name: &str) -> u32 {
    crc32c::crc32c(name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{nid, nids};
    use crate::model::{MetadataCommand, NodeInfo};

    fn metadata(nodes: &[(NodeId, u32)]) -> Metadata {
        let mut m = Metadata::default();
        for (id, shards) in nodes {
            m.apply(&MetadataCommand::RegisterNode {
                node_id: *id,
                info: NodeInfo {
                    raft_addr: "r".into(),
                    client_addr: "c".into(),
                    shard_count: *shards,
                },
            });
        }
        m
    }

    #[test]
    fn single_node_leads_everything_and_spreads_shards() {
        let m = metadata(&[(nid(1), 4)]);
        let mut spec = StreamSpec::new("orders", "orders");
        spec.partitions = 8;
        let placement = RoundRobinPlacement::starting_at(nid(1))
            .place(&spec, &m)
            .unwrap();
        let h = u64::from(stream_hash("orders"));
        for (p, a) in placement.iter().enumerate() {
            assert_eq!(a.partition as usize, p);
            assert_eq!(
                (a.leader, a.replicas.clone(), a.isr.clone()),
                (nid(1), nids(&[1]), nids(&[1]))
            );
            assert_eq!(u64::from(a.shard), (p as u64 + h) % 4);
        }
    }

    #[test]
    fn replicas_are_distinct_and_leaders_rotate() {
        let m = metadata(&[(nid(1), 2), (nid(2), 3), (nid(3), 2)]);
        let mut spec = StreamSpec::new("s", "s");
        spec.partitions = 3;
        spec.replication_factor = 2;
        let placement = RoundRobinPlacement::starting_at(nid(2))
            .place(&spec, &m)
            .unwrap();
        let leaders: Vec<NodeId> = placement.iter().map(|a| a.leader).collect();
        assert_eq!(leaders, nids(&[2, 3, 1]));
        assert_eq!(placement[0].replicas, nids(&[2, 3]));
        assert_eq!(placement[2].replicas, nids(&[1, 2]));
        assert!(placement.iter().all(|a| a.shard < 2));
    }

    #[test]
    fn too_few_nodes_is_an_error() {
        let m = metadata(&[(nid(1), 1)]);
        let mut spec = StreamSpec::new("s", "s");
        spec.replication_factor = 3;
        assert_eq!(
            RoundRobinPlacement::starting_at(nid(1)).place(&spec, &m),
            Err(PlacementError::NotEnoughNodes {
                replication_factor: 3,
                nodes: 1
            })
        );
    }
}
