//! The cluster metadata state machine on arbitrary commands. Commands reach
//! it from other nodes (forwarded over the control RPC port, or in raft log
//! entries and snapshots), so every field is untrusted.
//!
//! Input: a JSON array of `MetadataCommand`s (the seeds are real ones, so
//! mutations stay mostly well-formed), applied in order to empty metadata.
//!
//! Properties: applying never panics; after every command each partition
//! keeps its invariants (index = position, distinct replicas, ISR ⊆
//! replicas, leader ∈ ISR, replicas registered); a refused command changes
//! nothing; the metadata survives a snapshot round trip (JSON); the
//! controller's failover plan for any liveness applies without breaking
//! the invariants either.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use sluice::cluster::controller;
use sluice::model::{Metadata, MetadataCommand, MetadataResponse};

/// Bounds the work per input (each command may scan every stream).
const COMMANDS_MAX: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Ok(commands) = serde_json::from_slice::<Vec<MetadataCommand>>(data) else {
        return;
    };
    let mut metadata = Metadata::default();
    for command in commands.iter().take(COMMANDS_MAX) {
        let before = metadata.clone();
        let response = metadata.apply_command(command);
        if matches!(
            response,
            MetadataResponse::Invalid { .. }
                | MetadataResponse::Conflict { .. }
                | MetadataResponse::NotFound
        ) {
            assert_eq!(metadata, before, "a refused command changed the metadata");
        }
        check(&metadata);
    }
    let snapshot = serde_json::to_vec(&metadata).expect("metadata serialises");
    let restored: Metadata = serde_json::from_slice(&snapshot).expect("snapshot decodes");
    assert_eq!(restored, metadata, "snapshot round trip");

    // The controller on the same metadata, with every other node dead.
    let plan = controller::plan(&metadata, |node| node.get() % 2 == 1);
    for command in &plan {
        metadata.apply_command(command);
        check(&metadata);
    }
});

fn check(metadata: &Metadata) {
    for (name, record) in metadata.streams() {
        assert_eq!(&record.spec.name, name);
        for (index, partition) in record.partitions.iter().enumerate() {
            assert_eq!(partition.partition as usize, index, "{name}");
            let replicas: BTreeSet<_> = partition.replicas.iter().collect();
            assert_eq!(replicas.len(), partition.replicas.len(), "distinct replicas");
            let isr: BTreeSet<_> = partition.isr.iter().collect();
            assert_eq!(isr.len(), partition.isr.len(), "distinct ISR");
            assert!(isr.is_subset(&replicas), "ISR within the replicas");
            assert!(isr.contains(&partition.leader), "leader in the ISR");
            for node in &partition.replicas {
                assert!(metadata.nodes().contains_key(node), "replica {node} registered");
            }
        }
    }
}
