//! Unit tests of `replication.rs`: roles per table and lease.

use super::*;
use crate::cores::{PartitionKey, PartitionSettings};
use crate::model::nid;
use crate::model::StreamId;

fn entry(leader: NodeId, epoch: u32, replicas: &[NodeId]) -> PartitionEntry {
    PartitionEntry {
        key: PartitionKey {
            stream_id: StreamId::new(1),
            partition: 0,
        },
        stream: "s".into(),
        partition: 0,
        shard: ShardId(2),
        settings: PartitionSettings {
            retention_age_ms: None,
            retention_bytes: None,
            retention_messages: None,
            compact: false,
        },
        leader,
        leader_epoch: epoch,
        replicas: replicas.to_vec(),
        isr: replicas.to_vec(),
        isr_version: 0,
        min_insync_replicas: 2,
    }
}

fn table(local: NodeId) -> PartitionTable {
    PartitionTable {
        local_node: local,
        node_client_addrs: [
            (nid(1), "127.0.0.1:9000".to_string()),
            (nid(2), "not an address".to_string()),
        ]
        .into(),
        ..PartitionTable::default()
    }
}

#[test]
fn roles_follow_the_table() {
    let e = entry(nid(1), 4, &[nid(1), nid(2), nid(3)]);
    assert_eq!(
        role_key(&e, &table(nid(1)), true),
        RoleKey::Leader {
            epoch: 4,
            replicas: vec![nid(1), nid(2), nid(3)]
        }
    );
    // A follower fetches from the leader's port + the partition's shard.
    assert_eq!(
        role_key(&e, &table(nid(3)), true),
        RoleKey::Follower {
            leader: nid(1),
            epoch: 4,
            leader_addr: Some("127.0.0.1:9002".parse().unwrap()),
        }
    );
    assert_eq!(
        role_key(&e, &table(nid(9)), true),
        RoleKey::Inactive,
        "not a replica"
    );
    let unreachable = entry(nid(2), 5, &[nid(1), nid(2)]);
    assert_eq!(
        role_key(&unreachable, &table(nid(1)), true),
        RoleKey::Follower {
            leader: nid(2),
            epoch: 5,
            leader_addr: None,
        },
        "an unusable address is no address"
    );
    assert_eq!(LeaderEpoch::from_metadata(7), LeaderEpoch(7));
    assert_eq!(LeaderEpoch::from_metadata(u32::MAX), LeaderEpoch(i32::MAX));
}

#[test]
fn without_a_metadata_lease_a_partition_is_followed_but_never_led() {
    let e = entry(nid(1), 4, &[nid(1), nid(2), nid(3)]);
    assert_eq!(
        role_key(&e, &table(nid(1)), false),
        RoleKey::Unconfirmed { epoch: 4 },
        "the table says node 1 leads, but its metadata may be stale"
    );
    // Following on unconfirmed metadata is safe: a leader serves
    // replica fetches only while its own lease holds.
    assert_eq!(
        role_key(&e, &table(nid(3)), false),
        RoleKey::Follower {
            leader: nid(1),
            epoch: 4,
            leader_addr: Some("127.0.0.1:9002".parse().unwrap()),
        }
    );
    assert_eq!(role_key(&e, &table(nid(9)), false), RoleKey::Inactive);
}
