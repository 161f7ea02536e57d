//! The metadata state machine's transition function.
//!
//! [`Metadata::apply`] is deterministic: its result depends only on the
//! metadata and the command, never on the clock, the local node or its
//! configuration, so every replica that applies the same log reaches the same
//! metadata. It validates everything it is given — a proposer's checks are an
//! optimisation, not a guarantee — and answers rule breaks with
//! `Invalid` / `Conflict` / `NotFound` instead of changing anything.

use std::collections::BTreeSet;

use crate::model::limits::{NODES_MAX, STREAMS_MAX};
use crate::model::{
    validate_node_info, validate_spec, Metadata, MetadataCommand, MetadataResponse, NodeId,
    NodeInfo, PartitionAssignment, StreamId, StreamRecord, StreamSpec,
};

/// A response, and whether the metadata changed (subscribers are only
/// notified of changes).
#[derive(Debug)]
pub(crate) struct Applied {
    pub response: MetadataResponse,
    pub changed: bool,
}

impl Applied {
    pub(super) fn changed(response: MetadataResponse) -> Applied {
        Applied {
            response,
            changed: true,
        }
    }

    pub(super) fn unchanged(response: MetadataResponse) -> Applied {
        Applied {
            response,
            changed: false,
        }
    }

    pub(super) fn invalid(reason: impl Into<String>) -> Applied {
        Applied::unchanged(MetadataResponse::Invalid {
            reason: reason.into(),
        })
    }

    fn conflict(reason: impl Into<String>) -> Applied {
        Applied::unchanged(MetadataResponse::Conflict {
            reason: reason.into(),
        })
    }
}

impl Metadata {
    /// Applies one committed command.
    /// Applies one committed command and returns its answer: what every
    /// node's state machine does with each raft log entry. Public for the
    /// `metadata_apply` fuzz target (commands arrive from other nodes).
    pub fn apply_command(&mut self, command: &MetadataCommand) -> MetadataResponse {
        self.apply(command).response
    }

    pub(crate) fn apply(&mut self, command: &MetadataCommand) -> Applied {
        match command {
            MetadataCommand::RegisterNode { node_id, info } => self.register_node(*node_id, info),
            MetadataCommand::CreateStream {
                spec,
                placement,
                created_at_ms,
            } => self.create_stream(spec, placement, *created_at_ms),
            MetadataCommand::DeleteStream { name } => match self.streams.remove(name) {
                Some(record) => Applied::changed(MetadataResponse::StreamDeleted(record)),
                None => Applied::unchanged(MetadataResponse::NotFound),
            },
            MetadataCommand::UpdateIsr {
                stream,
                stream_id,
                partition,
                leader_epoch,
                isr_version,
                isr,
            } => self.update_isr(
                stream,
                *stream_id,
                *partition,
                (*leader_epoch, *isr_version),
                isr,
            ),
            MetadataCommand::ChangeLeader {
                stream,
                stream_id,
                partition,
                leader_epoch,
                leader,
            } => self.change_leader(stream, *stream_id, *partition, *leader_epoch, *leader),
            MetadataCommand::LeaveIsr {
                stream,
                stream_id,
                partition,
                node,
            } => self.leave_isr(stream, *stream_id, *partition, *node),
            MetadataCommand::GrantAcl {
                principal,
                stream_pattern,
                operations,
            } => self.grant_acl(principal, stream_pattern, *operations),
            MetadataCommand::RevokeAcl {
                principal,
                stream_pattern,
                operations,
            } => self.revoke_acl(principal, stream_pattern, *operations),
        }
    }

    fn register_node(&mut self, node_id: NodeId, info: &NodeInfo) -> Applied {
        if let Err(e) = validate_node_info(info) {
            return Applied::invalid(e.to_string());
        }
        if self.nodes.get(&node_id) == Some(info) {
            return Applied::unchanged(MetadataResponse::Ok);
        }
        if !self.nodes.contains_key(&node_id) && self.nodes.len() >= NODES_MAX {
            return Applied::invalid(format!("node limit {NODES_MAX} reached"));
        }
        self.nodes.insert(node_id, info.clone());
        Applied::changed(MetadataResponse::Ok)
    }

    fn create_stream(
        &mut self,
        spec: &StreamSpec,
        placement: &[PartitionAssignment],
        created_at_ms: u64,
    ) -> Applied {
        if let Err(e) = validate_spec(spec) {
            return Applied::invalid(e.to_string());
        }
        if let Some(existing) = self.streams.get(&spec.name) {
            return match spec_differences(&existing.spec, spec) {
                None => Applied::unchanged(MetadataResponse::StreamExists(existing.clone())),
                Some(fields) => Applied::conflict(format!(
                    "stream {:?} exists with a different {fields}",
                    spec.name
                )),
            };
        }
        if self.streams.len() >= STREAMS_MAX {
            return Applied::invalid(format!("stream limit {STREAMS_MAX} reached"));
        }
        let node_count = self.nodes.len();
        if spec.replication_factor as usize > node_count {
            return Applied::invalid(format!(
                "replication factor {} exceeds the {node_count} registered node(s)",
                spec.replication_factor
            ));
        }
        if let Err(reason) = self.check_placement(spec, placement) {
            return Applied::invalid(format!("placement of {:?}: {reason}", spec.name));
        }
        // The counter comes from the replicated state (a snapshot a peer
        // sent may hold any value): refuse, never overflow.
        let Some(next_stream_id) = self.next_stream_id.next() else {
            return Applied::invalid("stream id space exhausted");
        };
        let record = StreamRecord {
            id: self.next_stream_id,
            spec: spec.clone(),
            partitions: placement.to_vec(),
            created_at_ms,
        };
        self.next_stream_id = next_stream_id;
        self.streams.insert(spec.name.clone(), record.clone());
        Applied::changed(MetadataResponse::StreamCreated(record))
    }

    /// One assignment per partition, in order, for this stream; replicas
    /// distinct registered nodes, as many as the replication factor; leader
    /// in the ISR, ISR within the replicas; epoch 0; shard valid on every
    /// replica.
    fn check_placement(
        &self,
        spec: &StreamSpec,
        placement: &[PartitionAssignment],
    ) -> Result<(), String> {
        if placement.len() != spec.partitions as usize {
            return Err(format!(
                "{} assignments for {} partitions",
                placement.len(),
                spec.partitions
            ));
        }
        for (index, assignment) in placement.iter().enumerate() {
            let p = assignment.partition;
            if p as usize != index || assignment.stream != spec.name {
                return Err(format!(
                    "assignment {index} names {:?}/{p}",
                    assignment.stream
                ));
            }
            if assignment.replicas.len() != spec.replication_factor as usize {
                return Err(format!(
                    "partition {p} has {} replicas, replication factor is {}",
                    assignment.replicas.len(),
                    spec.replication_factor
                ));
            }
            check_replica_set(p, assignment)?;
            if assignment.leader_epoch != 0 {
                return Err(format!("partition {p} starts at leader epoch != 0"));
            }
            for node in &assignment.replicas {
                let Some(info) = self.nodes.get(node) else {
                    return Err(format!("partition {p}: node {node} is not registered"));
                };
                if assignment.shard >= info.shard_count {
                    return Err(format!(
                        "partition {p}: shard {} but node {node} has {} shard(s)",
                        assignment.shard, info.shard_count
                    ));
                }
            }
        }
        Ok(())
    }

    fn update_isr(
        &mut self,
        stream: &str,
        stream_id: StreamId,
        partition: u32,
        (leader_epoch, isr_version): (u32, Option<u64>),
        isr: &[NodeId],
    ) -> Applied {
        let assignment = match self.partition_mut(stream, stream_id, partition, leader_epoch) {
            Ok(a) => a,
            Err(miss) => return miss.into(),
        };
        if let Some(expected) = isr_version.filter(|v| *v != assignment.isr_version) {
            return Applied::conflict(format!(
                "{stream}/{partition} ISR is at version {}, not {expected}",
                assignment.isr_version
            ));
        }
        let mut candidate = assignment.clone();
        candidate.isr = isr.to_vec();
        if let Err(reason) = check_replica_set(partition, &candidate) {
            return Applied::invalid(reason);
        }
        if assignment.isr == candidate.isr {
            return Applied::unchanged(MetadataResponse::Ok);
        }
        candidate.isr_version = candidate.isr_version.wrapping_add(1);
        *assignment = candidate;
        Applied::changed(MetadataResponse::Ok)
    }

    fn change_leader(
        &mut self,
        stream: &str,
        stream_id: StreamId,
        partition: u32,
        leader_epoch: u32,
        leader: NodeId,
    ) -> Applied {
        let assignment = match self.partition_mut(stream, stream_id, partition, leader_epoch) {
            Ok(a) => a,
            Err(miss) => return miss.into(),
        };
        if !assignment.isr.contains(&leader) {
            // Unclean leader election is off: only an in-sync replica leads.
            return Applied::invalid(format!(
                "node {leader} is not in the ISR {:?} of {stream}/{partition}",
                assignment.isr
            ));
        }
        let Some(next_epoch) = assignment.leader_epoch.checked_add(1) else {
            return Applied::invalid("leader epoch space exhausted");
        };
        assignment.leader = leader;
        assignment.leader_epoch = next_epoch;
        Applied::changed(MetadataResponse::Ok)
    }

    fn leave_isr(
        &mut self,
        stream: &str,
        stream_id: StreamId,
        partition: u32,
        node: NodeId,
    ) -> Applied {
        let Some(record) = self.streams.get_mut(stream) else {
            return Applied::unchanged(MetadataResponse::NotFound);
        };
        if record.id != stream_id {
            return Applied::conflict(format!(
                "stream {stream:?} is now incarnation {}, not {stream_id}",
                record.id
            ));
        }
        let Some(assignment) = record.partitions.get_mut(partition as usize) else {
            return Applied::unchanged(MetadataResponse::NotFound);
        };
        if !assignment.replicas.contains(&node) {
            return Applied::invalid(format!(
                "node {node} is not a replica of {stream}/{partition} ({:?})",
                assignment.replicas
            ));
        }
        if !assignment.isr.contains(&node) {
            return Applied::unchanged(MetadataResponse::Ok);
        }
        let mut candidate = assignment.clone();
        candidate.isr.retain(|n| *n != node);
        candidate.isr_version = candidate.isr_version.wrapping_add(1);
        if candidate.leader == node {
            // Same rule as the controller: the first ISR member in replica
            // order, so every node computes the same successor.
            let successor = candidate
                .replicas
                .iter()
                .copied()
                .find(|n| candidate.isr.contains(n));
            let (Some(successor), Some(next_epoch)) =
                (successor, candidate.leader_epoch.checked_add(1))
            else {
                tracing::error!(%stream, partition, node = node.get(), isr = ?assignment.isr,
                    "the only in-sync replica lost acknowledged data; it stays leader \
                     (unclean election is off): acknowledged records may be missing");
                return Applied::unchanged(MetadataResponse::Ok);
            };
            candidate.leader = successor;
            candidate.leader_epoch = next_epoch;
        }
        if let Err(reason) = check_replica_set(partition, &candidate) {
            return Applied::invalid(reason);
        }
        tracing::warn!(%stream, partition, node = node.get(), isr = ?candidate.isr,
            leader = candidate.leader.get(),
            leader_epoch = candidate.leader_epoch,
            "replica lost acknowledged data and left the ISR until it has re-fetched");
        *assignment = candidate;
        Applied::changed(MetadataResponse::Ok)
    }

    /// The partition of that stream incarnation, if the caller's leader
    /// epoch is current.
    fn partition_mut(
        &mut self,
        stream: &str,
        stream_id: StreamId,
        partition: u32,
        leader_epoch: u32,
    ) -> Result<&mut PartitionAssignment, PartitionMiss> {
        let Some(record) = self.streams.get_mut(stream) else {
            return Err(PartitionMiss::NotFound);
        };
        if record.id != stream_id {
            return Err(PartitionMiss::Stale(format!(
                "stream {stream:?} is now incarnation {}, not {stream_id}",
                record.id
            )));
        }
        let Some(assignment) = record.partitions.get_mut(partition as usize) else {
            return Err(PartitionMiss::NotFound);
        };
        if assignment.leader_epoch != leader_epoch {
            return Err(PartitionMiss::Stale(format!(
                "{stream}/{partition} is at leader epoch {}, not {leader_epoch}",
                assignment.leader_epoch
            )));
        }
        Ok(assignment)
    }
}

/// Why a conditional partition update found no partition to change.
enum PartitionMiss {
    NotFound,
    /// The stream was re-created or the leader epoch moved on.
    Stale(String),
}

impl From<PartitionMiss> for Applied {
    fn from(miss: PartitionMiss) -> Applied {
        match miss {
            PartitionMiss::NotFound => Applied::unchanged(MetadataResponse::NotFound),
            PartitionMiss::Stale(reason) => Applied::conflict(reason),
        }
    }
}

/// Replicas distinct and non-empty; ISR distinct, within the replicas, and
/// containing the leader.
fn check_replica_set(partition: u32, a: &PartitionAssignment) -> Result<(), String> {
    let replicas: BTreeSet<NodeId> = a.replicas.iter().copied().collect();
    if replicas.is_empty() || replicas.len() != a.replicas.len() {
        return Err(format!("partition {partition}: replicas must be distinct"));
    }
    let isr: BTreeSet<NodeId> = a.isr.iter().copied().collect();
    if isr.len() != a.isr.len() || !isr.is_subset(&replicas) {
        return Err(format!(
            "partition {partition}: ISR {:?} must be distinct members of {:?}",
            a.isr, a.replicas
        ));
    }
    if !isr.contains(&a.leader) {
        return Err(format!(
            "partition {partition}: leader {} is not in the ISR {:?}",
            a.leader, a.isr
        ));
    }
    Ok(())
}

/// Names the settings in which two specs of the same name differ, or `None`
/// when they are identical.
fn spec_differences(old: &StreamSpec, new: &StreamSpec) -> Option<String> {
    let mut fields = Vec::new();
    if old.subject != new.subject {
        fields.push(format!("subject ({:?} vs {:?})", old.subject, new.subject));
    }
    let settings = [
        ("group", old.group != new.group),
        ("partitions", old.partitions != new.partitions),
        (
            "replication_factor",
            old.replication_factor != new.replication_factor,
        ),
        (
            "retention_age_ms",
            old.retention_age_ms != new.retention_age_ms,
        ),
        (
            "retention_bytes",
            old.retention_bytes != new.retention_bytes,
        ),
        (
            "retention_messages",
            old.retention_messages != new.retention_messages,
        ),
        ("compact", old.compact != new.compact),
        (
            "min_insync_replicas",
            old.min_insync_replicas != new.min_insync_replicas,
        ),
    ];
    fields.extend(
        settings
            .iter()
            .filter(|(_, differs)| *differs)
            .map(|(name, _)| (*name).to_owned()),
    );
    debug_assert_eq!(fields.is_empty(), old == new);
    (!fields.is_empty()).then(|| fields.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{nid, nids};

    fn node(shards: u32) -> NodeInfo {
        NodeInfo {
            raft_addr: "127.0.0.1:1".into(),
            client_addr: "127.0.0.1:2".into(),
            shard_count: shards,
        }
    }

    fn metadata_with_nodes(count: u64) -> Metadata {
        let mut m = Metadata::default();
        for id in 1..=count {
            let applied = m.apply(&MetadataCommand::RegisterNode {
                node_id: nid(id),
                info: node(2),
            });
            assert_eq!(applied.response, MetadataResponse::Ok);
            assert!(applied.changed);
        }
        m
    }

    fn assignment(stream: &str, partition: u32, replicas: &[NodeId]) -> PartitionAssignment {
        PartitionAssignment {
            stream: stream.into(),
            partition,
            leader: replicas[0],
            replicas: replicas.to_vec(),
            isr: replicas.to_vec(),
            leader_epoch: 0,
            isr_version: 0,
            shard: 0,
        }
    }

    fn create(m: &mut Metadata, spec: &StreamSpec, placement: Vec<PartitionAssignment>) -> Applied {
        m.apply(&MetadataCommand::CreateStream {
            spec: spec.clone(),
            placement,
            created_at_ms: 7,
        })
    }

    #[test]
    fn register_same_node_twice_changes_nothing() {
        let mut m = metadata_with_nodes(1);
        let again = m.apply(&MetadataCommand::RegisterNode {
            node_id: nid(1),
            info: node(2),
        });
        assert_eq!(again.response, MetadataResponse::Ok);
        assert!(!again.changed);
        let bad = m.apply(&MetadataCommand::RegisterNode {
            node_id: nid(2),
            info: node(0),
        });
        assert!(matches!(bad.response, MetadataResponse::Invalid { .. }));
    }

    #[test]
    fn create_is_idempotent_and_ids_are_never_reused() {
        let mut m = metadata_with_nodes(1);
        let spec = StreamSpec::new("s", "a.b");
        let MetadataResponse::StreamCreated(first) =
            create(&mut m, &spec, vec![assignment("s", 0, &[nid(1)])]).response
        else {
            panic!("not created");
        };
        assert_eq!(first.id, StreamId::FIRST);
        let again = create(&mut m, &spec, vec![assignment("s", 0, &[nid(1)])]);
        assert_eq!(
            again.response,
            MetadataResponse::StreamExists(first.clone())
        );
        assert!(!again.changed);

        let mut other = spec.clone();
        other.subject = "a.c".into();
        let conflict = create(&mut m, &other, vec![assignment("s", 0, &[nid(1)])]);
        assert!(matches!(
            conflict.response,
            MetadataResponse::Conflict { .. }
        ));

        let deleted = m.apply(&MetadataCommand::DeleteStream { name: "s".into() });
        assert_eq!(deleted.response, MetadataResponse::StreamDeleted(first));
        let MetadataResponse::StreamCreated(second) =
            create(&mut m, &spec, vec![assignment("s", 0, &[nid(1)])]).response
        else {
            panic!("not re-created");
        };
        assert_eq!(second.id, StreamId::new(2));
    }

    #[test]
    fn create_with_the_last_stream_id_is_refused_not_a_panic() {
        // A snapshot installed from a peer is taken as sent: its counter
        // may be anywhere, u64::MAX included.
        let mut m = metadata_with_nodes(1);
        m.next_stream_id = StreamId::new(u64::MAX);
        let spec = StreamSpec::new("s", "a.b");
        let applied = create(&mut m, &spec, vec![assignment("s", 0, &[nid(1)])]);
        assert!(
            matches!(&applied.response, MetadataResponse::Invalid { reason } if reason.contains("exhausted")),
            "{:?}",
            applied.response
        );
        assert!(!applied.changed);
        assert!(m.streams.is_empty());
        assert_eq!(m.next_stream_id(), StreamId::new(u64::MAX));
    }

    #[test]
    fn create_rejects_bad_placement() {
        let mut m = metadata_with_nodes(2);
        let mut spec = StreamSpec::new("s", "s");
        spec.replication_factor = 2;
        let cases = [
            vec![],
            vec![assignment("s", 0, &[nid(1)])],
            vec![assignment("s", 0, &[nid(1), nid(1)])],
            vec![assignment("s", 0, &[nid(1), nid(9)])],
            vec![assignment("t", 0, &[nid(1), nid(2)])],
            vec![assignment("s", 1, &[nid(1), nid(2)])],
            vec![PartitionAssignment {
                shard: 2,
                ..assignment("s", 0, &[nid(1), nid(2)])
            }],
            vec![PartitionAssignment {
                isr: vec![nid(2)],
                ..assignment("s", 0, &[nid(1), nid(2)])
            }],
        ];
        for placement in cases {
            let applied = create(&mut m, &spec, placement.clone());
            assert!(
                matches!(applied.response, MetadataResponse::Invalid { .. }),
                "{placement:?} accepted"
            );
            assert!(!applied.changed);
        }
        spec.replication_factor = 3;
        let too_many = create(&mut m, &spec, vec![assignment("s", 0, &[nid(1), nid(2)])]);
        assert!(matches!(
            too_many.response,
            MetadataResponse::Invalid { .. }
        ));
        assert!(m.streams().is_empty());
        assert_eq!(m.next_stream_id(), StreamId::FIRST);
    }

    #[test]
    fn isr_and_leader_changes_are_conditional() {
        let mut m = metadata_with_nodes(3);
        let mut spec = StreamSpec::new("s", "s");
        spec.replication_factor = 3;
        let MetadataResponse::StreamCreated(record) = create(
            &mut m,
            &spec,
            vec![assignment("s", 0, &[nid(1), nid(2), nid(3)])],
        )
        .response
        else {
            panic!("not created");
        };
        let update = |isr: Vec<NodeId>, epoch: u32, id: StreamId, isr_version: u64| {
            MetadataCommand::UpdateIsr {
                stream: "s".into(),
                stream_id: id,
                partition: 0,
                leader_epoch: epoch,
                isr_version: Some(isr_version),
                isr,
            }
        };
        let shrink = m.apply(&update(vec![nid(1), nid(2)], 0, record.id, 0));
        assert_eq!(shrink.response, MetadataResponse::Ok);
        assert!(shrink.changed);
        let stale = m.apply(&update(vec![nid(1)], 5, record.id, 1));
        assert!(matches!(stale.response, MetadataResponse::Conflict { .. }));
        let wrong_incarnation = m.apply(&update(vec![nid(1)], 0, StreamId::new(99), 1));
        assert!(matches!(
            wrong_incarnation.response,
            MetadataResponse::Conflict { .. }
        ));
        let no_leader = m.apply(&update(vec![nid(2)], 0, record.id, 1));
        assert!(matches!(
            no_leader.response,
            MetadataResponse::Invalid { .. }
        ));

        let change = |leader: NodeId| MetadataCommand::ChangeLeader {
            stream: "s".into(),
            stream_id: record.id,
            partition: 0,
            leader_epoch: 0,
            leader,
        };
        let unclean = m.apply(&change(nid(3)));
        assert!(matches!(unclean.response, MetadataResponse::Invalid { .. }));
        assert_eq!(m.apply(&change(nid(2))).response, MetadataResponse::Ok);
        let p = &m.stream("s").unwrap().partitions[0];
        assert_eq!(
            (p.leader, p.leader_epoch, p.isr.clone()),
            (nid(2), 1, nids(&[1, 2]))
        );
        // The old epoch no longer applies.
        assert!(matches!(
            m.apply(&change(nid(1))).response,
            MetadataResponse::Conflict { .. }
        ));
    }

    #[test]
    fn an_isr_proposal_computed_before_another_isr_change_is_refused() {
        let mut m = metadata_with_nodes(3);
        let id = three_replicas(&mut m);
        let update = |isr: Vec<NodeId>, isr_version: u64| MetadataCommand::UpdateIsr {
            stream: "s".into(),
            stream_id: id,
            partition: 0,
            leader_epoch: 0,
            isr_version: Some(isr_version),
            isr,
        };
        assert_eq!(
            m.apply(&update(vec![nid(1), nid(2)], 0)).response,
            MetadataResponse::Ok
        );
        assert_eq!(
            m.apply(&update(vec![nid(1), nid(2), nid(3)], 1)).response,
            MetadataResponse::Ok
        );
        // A shrink computed from version 0 (node 3 lagging then), delayed
        // past the expand: applying it would drop a caught-up follower.
        let late = m.apply(&update(vec![nid(1), nid(2)], 0));
        assert!(
            matches!(late.response, MetadataResponse::Conflict { .. }),
            "{late:?}"
        );
        assert!(!late.changed);
        let p = &m.stream("s").unwrap().partitions[0];
        assert_eq!((p.isr.clone(), p.isr_version), (nids(&[1, 2, 3]), 2));
        // An unchanged ISR keeps its version; LeaveIsr bumps it.
        assert!(!m.apply(&update(vec![nid(1), nid(2), nid(3)], 2)).changed);
        assert_eq!(m.apply(&leave(id, nid(3))).response, MetadataResponse::Ok);
        assert_eq!(m.stream("s").unwrap().partitions[0].isr_version, 3);
        assert!(matches!(
            m.apply(&update(vec![nid(1), nid(2), nid(3)], 2)).response,
            MetadataResponse::Conflict { .. }
        ));

        // An entry from before ISR versions (no field) applies as it did then.
        let mut legacy = serde_json::to_value(update(vec![nid(1)], 0)).unwrap();
        legacy["UpdateIsr"]
            .as_object_mut()
            .unwrap()
            .remove("isr_version")
            .unwrap();
        let legacy: MetadataCommand = serde_json::from_value(legacy).unwrap();
        assert!(matches!(
            legacy,
            MetadataCommand::UpdateIsr {
                isr_version: None,
                ..
            }
        ));
        assert_eq!(m.apply(&legacy).response, MetadataResponse::Ok);
        assert_eq!(m.stream("s").unwrap().partitions[0].isr, nids(&[1]));
    }

    fn three_replicas(m: &mut Metadata) -> StreamId {
        let mut spec = StreamSpec::new("s", "s");
        spec.replication_factor = 3;
        let MetadataResponse::StreamCreated(record) = create(
            m,
            &spec,
            vec![assignment("s", 0, &[nid(1), nid(2), nid(3)])],
        )
        .response
        else {
            panic!("not created");
        };
        record.id
    }

    fn leave(id: StreamId, node: NodeId) -> MetadataCommand {
        MetadataCommand::LeaveIsr {
            stream: "s".into(),
            stream_id: id,
            partition: 0,
            node,
        }
    }

    fn leader_epoch_isr(m: &Metadata) -> (NodeId, u32, Vec<NodeId>) {
        let p = &m.stream("s").unwrap().partitions[0];
        (p.leader, p.leader_epoch, p.isr.clone())
    }

    #[test]
    fn a_follower_that_lost_data_leaves_the_isr_without_an_epoch_bump() {
        let mut m = metadata_with_nodes(3);
        let id = three_replicas(&mut m);
        let left = m.apply(&leave(id, nid(3)));
        assert_eq!(left.response, MetadataResponse::Ok);
        assert!(left.changed);
        assert_eq!(leader_epoch_isr(&m), (nid(1), 0, nids(&[1, 2])));
        // Reported again (a retry): nothing changes.
        let again = m.apply(&leave(id, nid(3)));
        assert_eq!(again.response, MetadataResponse::Ok);
        assert!(!again.changed);
    }

    #[test]
    fn a_leader_that_lost_data_hands_over_to_the_next_isr_member_in_replica_order() {
        let mut m = metadata_with_nodes(3);
        let id = three_replicas(&mut m);
        assert!(m.apply(&leave(id, nid(1))).changed);
        assert_eq!(leader_epoch_isr(&m), (nid(2), 1, nids(&[2, 3])));
        // The same commands give the same result on every node.
        let mut replica = metadata_with_nodes(3);
        let replica_id = three_replicas(&mut replica);
        replica.apply(&leave(replica_id, nid(1)));
        assert_eq!(leader_epoch_isr(&replica), leader_epoch_isr(&m));
        // The new leader loses its data too: the last ISR member takes over.
        assert!(m.apply(&leave(id, nid(2))).changed);
        assert_eq!(leader_epoch_isr(&m), (nid(3), 2, nids(&[3])));
    }

    #[test]
    fn the_only_isr_member_stays_because_unclean_election_is_off() {
        let mut m = metadata_with_nodes(3);
        let id = three_replicas(&mut m);
        m.apply(&leave(id, nid(2)));
        m.apply(&leave(id, nid(3)));
        assert_eq!(leader_epoch_isr(&m), (nid(1), 0, nids(&[1])));
        let sole = m.apply(&leave(id, nid(1)));
        assert_eq!(sole.response, MetadataResponse::Ok);
        assert!(!sole.changed);
        assert_eq!(leader_epoch_isr(&m), (nid(1), 0, nids(&[1])));
    }

    #[test]
    fn leave_isr_checks_the_stream_incarnation_and_membership() {
        let mut m = metadata_with_nodes(4);
        let id = three_replicas(&mut m);
        assert!(matches!(
            m.apply(&leave(StreamId::new(99), nid(2))).response,
            MetadataResponse::Conflict { .. }
        ));
        assert!(matches!(
            m.apply(&leave(id, nid(4))).response,
            MetadataResponse::Invalid { .. }
        ));
        let missing = MetadataCommand::LeaveIsr {
            stream: "s".into(),
            stream_id: id,
            partition: 7,
            node: nid(1),
        };
        assert_eq!(m.apply(&missing).response, MetadataResponse::NotFound);
        assert_eq!(leader_epoch_isr(&m), (nid(1), 0, nids(&[1, 2, 3])));
    }
}

/// The `metadata_apply` fuzz target's seeds are real command sequences:
/// they must keep decoding and applying as the command format evolves.
/// `SLUICE_WRITE_FUZZ_SEEDS=1` rewrites them from [`seed_sequences`].
#[cfg(test)]
mod fuzz_seed_tests {
    use super::*;
    use crate::model::acl::AclOperations;
    use crate::model::{nid, nids};
    use std::path::PathBuf;

    fn seed_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/metadata_apply")
    }

    fn node(id: u64) -> MetadataCommand {
        MetadataCommand::RegisterNode {
            node_id: nid(id),
            info: NodeInfo {
                raft_addr: format!("127.0.0.1:{}", 9000 + id),
                client_addr: format!("127.0.0.1:{}", 7000 + 100 * id),
                shard_count: 2,
            },
        }
    }

    fn create(name: &str, replicas: &[NodeId], partitions: u32) -> MetadataCommand {
        let mut spec = StreamSpec::new(name, format!("{name}.*"));
        spec.partitions = partitions;
        spec.replication_factor = replicas.len() as u32;
        spec.min_insync_replicas = 1;
        let placement = (0..partitions)
            .map(|partition| {
                let mut rotated = replicas.to_vec();
                rotated.rotate_left(partition as usize % replicas.len());
                PartitionAssignment {
                    stream: name.into(),
                    partition,
                    leader: rotated[0],
                    isr: rotated.clone(),
                    replicas: rotated,
                    leader_epoch: 0,
                    isr_version: 0,
                    shard: partition % 2,
                }
            })
            .collect();
        MetadataCommand::CreateStream {
            spec,
            placement,
            created_at_ms: 1_700_000_000_000,
        }
    }

    fn seed_sequences() -> Vec<(&'static str, Vec<MetadataCommand>)> {
        let first = StreamId::FIRST;
        vec![
            (
                "nodes-and-streams",
                vec![
                    node(1),
                    node(2),
                    node(3),
                    create("orders", &nids(&[1, 2, 3]), 3),
                    create("logs", &nids(&[2]), 1),
                ],
            ),
            (
                "isr-and-leaders",
                vec![
                    node(1),
                    node(2),
                    node(3),
                    create("orders", &nids(&[1, 2, 3]), 1),
                    MetadataCommand::UpdateIsr {
                        stream: "orders".into(),
                        stream_id: first,
                        partition: 0,
                        leader_epoch: 0,
                        isr_version: Some(0),
                        isr: nids(&[1, 2]),
                    },
                    MetadataCommand::ChangeLeader {
                        stream: "orders".into(),
                        stream_id: first,
                        partition: 0,
                        leader_epoch: 0,
                        leader: nid(2),
                    },
                    MetadataCommand::UpdateIsr {
                        stream: "orders".into(),
                        stream_id: first,
                        partition: 0,
                        leader_epoch: 1,
                        isr_version: Some(1),
                        isr: nids(&[1, 2, 3]),
                    },
                    MetadataCommand::LeaveIsr {
                        stream: "orders".into(),
                        stream_id: first,
                        partition: 0,
                        node: nid(2),
                    },
                ],
            ),
            (
                "acls-and-delete",
                vec![
                    node(1),
                    create("orders", &[nid(1)], 2),
                    MetadataCommand::GrantAcl {
                        principal: "alice".into(),
                        stream_pattern: "ord*".into(),
                        operations: AclOperations::all(),
                    },
                    MetadataCommand::RevokeAcl {
                        principal: "alice".into(),
                        stream_pattern: "ord*".into(),
                        operations: AclOperations::default(),
                    },
                    MetadataCommand::DeleteStream {
                        name: "orders".into(),
                    },
                    create("orders", &[nid(1)], 1),
                ],
            ),
        ]
    }

    #[test]
    fn fuzz_seeds_decode_and_apply() {
        let sequences = seed_sequences();
        if std::env::var_os("SLUICE_WRITE_FUZZ_SEEDS").is_some() {
            std::fs::create_dir_all(seed_dir()).unwrap();
            for (name, commands) in &sequences {
                let json = serde_json::to_vec(commands).unwrap();
                std::fs::write(seed_dir().join(name), json).unwrap();
            }
        }
        for (name, expected) in sequences {
            let bytes =
                std::fs::read(seed_dir().join(name)).unwrap_or_else(|e| panic!("seed {name}: {e}"));
            let commands: Vec<MetadataCommand> = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(
                commands, expected,
                "seed {name} is stale: rerun with SLUICE_WRITE_FUZZ_SEEDS=1"
            );
            let mut metadata = Metadata::default();
            for command in &commands {
                let response = metadata.apply_command(command);
                assert!(
                    !matches!(
                        response,
                        MetadataResponse::Invalid { .. }
                            | MetadataResponse::Conflict { .. }
                            | MetadataResponse::NotFound
                    ),
                    "seed {name}: {command:?} → {response:?}"
                );
            }
        }
    }
}
