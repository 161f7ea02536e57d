//! End-to-end tests of a single metadata node: real raft, real files, real
//! TCP, short raft timeouts.

use std::fs::OpenOptions;
use std::path::Path;
use std::time::Duration;

use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::VoteRequest;
use tokio::io::AsyncWriteExt;

use super::network::TcpNetwork;
use super::*;
use crate::model::{nid, nids, MetadataCommand, StreamId, StreamSpec};

fn fast_tuning() -> RaftTuning {
    RaftTuning {
        heartbeat_interval_ms: 30,
        election_timeout_min_ms: 100,
        election_timeout_max_ms: 200,
        ..RaftTuning::default()
    }
}

fn config(dir: &Path) -> MetadataConfig {
    MetadataConfig {
        raft: fast_tuning(),
        ..MetadataConfig::new(nid(1), dir, "127.0.0.1:0", "127.0.0.1:9400", 4)
    }
}

async fn start(dir: &Path) -> MetadataNode {
    MetadataNode::start(config(dir)).await.expect("start node")
}

fn spec(name: &str, subject: &str) -> StreamSpec {
    StreamSpec {
        partitions: 3,
        ..StreamSpec::new(name, subject)
    }
}

fn names(node: &MetadataNode) -> Vec<String> {
    node.list_streams()
        .into_iter()
        .map(|r| r.spec.name)
        .collect()
}

fn raft_log(dir: &Path) -> std::path::PathBuf {
    dir.join(RAFT_DIR).join("log")
}

#[tokio::test]
async fn bootstrap_registers_the_node_and_leads() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    assert!(node.is_leader());
    assert_eq!(node.leader(), Some((nid(1), "127.0.0.1:9400".to_owned())));
    let metadata = node.metadata();
    let me = &metadata.nodes()[&nid(1)];
    assert_eq!(me.client_addr, "127.0.0.1:9400");
    assert_eq!(me.shard_count, 4);
    assert_ne!(me.raft_addr, "127.0.0.1:0", "the bound port is announced");
    assert!(metadata.streams().is_empty());
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn created_stream_is_listed_described_and_published() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let mut updates = node.subscribe();

    let created = node
        .create_stream(spec("orders", "orders.*"))
        .await
        .unwrap();
    let StreamCreation::Created(record) = created else {
        panic!("expected a new stream, got {created:?}");
    };
    assert_eq!(record.spec, spec("orders", "orders.*"));
    assert_eq!(record.partitions.len(), 3);
    let hash = u64::from(stream_hash("orders"));
    for (p, a) in record.partitions.iter().enumerate() {
        assert_eq!(a.partition as usize, p);
        assert_eq!(
            (a.leader, &a.replicas, &a.isr),
            (nid(1), &nids(&[1]), &nids(&[1]))
        );
        assert_eq!(u64::from(a.shard), (p as u64 + hash) % 4);
        assert_eq!(a.leader_epoch, 0);
    }

    assert_eq!(node.list_streams(), vec![record.clone()]);
    assert_eq!(node.describe("orders"), Some(record.clone()));
    assert_eq!(node.describe("missing"), None);
    // The subscription fired and carries the new stream.
    tokio::time::timeout(Duration::from_secs(5), updates.changed())
        .await
        .expect("subscription fired")
        .unwrap();
    assert_eq!(updates.borrow_and_update().stream("orders"), Some(&record));

    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn create_is_idempotent_and_conflicts_on_different_settings() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let first = node
        .create_stream(spec("orders", "orders.*"))
        .await
        .unwrap()
        .into_record();
    let updates = node.subscribe();

    let again = node
        .create_stream(spec("orders", "orders.*"))
        .await
        .unwrap();
    assert_eq!(again, StreamCreation::Exists(first.clone()));
    assert!(!updates.has_changed().unwrap(), "a no-op must not notify");

    let other_subject = node.create_stream(spec("orders", "orders.x.*")).await;
    assert!(
        matches!(&other_subject, Err(ClusterError::Conflict { name, reason }) if name == "orders" && reason.contains("subject")),
        "{other_subject:?}"
    );
    let other_partitions = node
        .create_stream(StreamSpec {
            partitions: 4,
            ..spec("orders", "orders.*")
        })
        .await;
    assert!(
        matches!(&other_partitions, Err(ClusterError::Conflict { reason, .. }) if reason.contains("partitions")),
        "{other_partitions:?}"
    );
    assert_eq!(node.list_streams(), vec![first]);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn delete_removes_and_recreate_gets_a_fresh_id() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let first = node
        .create_stream(spec("orders", "orders"))
        .await
        .unwrap()
        .into_record();
    let deleted = node.delete_stream("orders").await.unwrap();
    assert_eq!(deleted, first);
    assert!(node.list_streams().is_empty());
    assert!(matches!(
        node.delete_stream("orders").await,
        Err(ClusterError::NotFound { name }) if name == "orders"
    ));
    let second = node
        .create_stream(spec("orders", "orders"))
        .await
        .unwrap()
        .into_record();
    assert!(second.id > first.id, "{} !> {}", second.id, first.id);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn invalid_specs_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    for (name, subject) in [
        ("", "a"),
        (".hidden", "a"),
        ("_internal", "a"),
        ("white space", "a"),
        ("ok", ""),
        ("ok", "a..b"),
        ("ok", "a.>.b"),
        ("ok", "a*"),
    ] {
        let result = node.create_stream(StreamSpec::new(name, subject)).await;
        assert!(
            matches!(result, Err(ClusterError::InvalidSpec(_))),
            "{name:?} / {subject:?}: {result:?}"
        );
    }
    let too_many = node
        .create_stream(StreamSpec {
            partitions: crate::model::limits::MAX_PARTITIONS_PER_STREAM + 1,
            ..StreamSpec::new("big", "big")
        })
        .await;
    assert!(matches!(too_many, Err(ClusterError::InvalidSpec(_))));

    // Replication beyond the cluster: placement refuses, clearly.
    let replicated = node
        .create_stream(StreamSpec {
            replication_factor: 3,
            ..StreamSpec::new("replicated", "r")
        })
        .await;
    assert!(
        matches!(
            replicated,
            Err(ClusterError::Placement(PlacementError::NotEnoughNodes {
                replication_factor: 3,
                nodes: 1
            }))
        ),
        "{replicated:?}"
    );

    // The state machine validates on its own, whatever a proposer sends.
    let raw = node
        .propose(MetadataCommand::CreateStream {
            spec: StreamSpec::new("_sneaky", "x"),
            placement: vec![],
            created_at_ms: 0,
        })
        .await
        .unwrap();
    assert!(matches!(raw, MetadataResponse::Invalid { .. }), "{raw:?}");
    assert!(node.list_streams().is_empty());
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn restart_keeps_streams_ids_and_placements() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let mut kept = Vec::new();
    for name in ["a", "b", "c"] {
        let record = node
            .create_stream(spec(name, &format!("{name}.events")))
            .await
            .unwrap()
            .into_record();
        kept.push(record);
    }
    node.delete_stream("b").await.unwrap();
    kept.remove(1);
    node.shutdown().await.unwrap();

    let node = start(dir.path()).await;
    assert_eq!(node.list_streams(), kept);
    assert!(node.is_leader(), "the node re-elects itself after restart");
    let d = node
        .create_stream(spec("d", "d"))
        .await
        .unwrap()
        .into_record();
    assert_eq!(d.id, StreamId::new(4), "ids are never reused");
    assert_eq!(names(&node), vec!["a", "c", "d"]);
    node.shutdown().await.unwrap();

    // And once more, without the committed-index hint: the node replays its
    // log once it leads again.
    std::fs::remove_file(dir.path().join(RAFT_DIR).join("committed")).unwrap();
    let node = start(dir.path()).await;
    assert_eq!(names(&node), vec!["a", "c", "d"]);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn restart_after_a_torn_log_tail_keeps_the_entries_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    for name in ["a", "b", "c"] {
        node.create_stream(spec(name, name)).await.unwrap();
    }
    node.shutdown().await.unwrap();

    // Tear the last entry (the creation of "c").
    let log = OpenOptions::new()
        .write(true)
        .open(raft_log(dir.path()))
        .unwrap();
    let len = log.metadata().unwrap().len();
    log.set_len(len - 5).unwrap();
    drop(log);

    let node = start(dir.path()).await;
    assert_eq!(names(&node), vec!["a", "b"]);
    let c = node.create_stream(spec("c", "c")).await.unwrap();
    assert!(matches!(c, StreamCreation::Created(_)), "{c:?}");
    assert_eq!(names(&node), vec!["a", "b", "c"]);
    node.shutdown().await.unwrap();

    let node = start(dir.path()).await;
    assert_eq!(names(&node), vec!["a", "b", "c"]);
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn restart_from_snapshot_and_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.raft.snapshot_logs_since_last = 10;
    config.raft.snapshot_logs_to_keep = 2;

    let node = MetadataNode::start(config.clone()).await.unwrap();
    for i in 0..30 {
        node.create_stream(spec(&format!("s{i:02}"), &format!("s.{i}")))
            .await
            .unwrap();
    }
    for i in (0..30).step_by(3) {
        node.delete_stream(&format!("s{i:02}")).await.unwrap();
    }
    let expected = node.list_streams();
    assert_eq!(expected.len(), 20);
    let metrics = node
        .raft()
        .wait(Some(Duration::from_secs(5)))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= 30) && m.purged.is_some(),
            "a snapshot and a purge",
        )
        .await
        .expect("snapshot built and log purged");
    let snapshot_index = metrics.snapshot.unwrap().index;
    let last_index = metrics.last_log_index.unwrap();
    assert!(dir.path().join(RAFT_DIR).join("snapshot").exists());
    node.shutdown().await.unwrap();

    // Drop the committed hint too: everything after the snapshot must come
    // back from the log.
    std::fs::remove_file(dir.path().join(RAFT_DIR).join("committed")).unwrap();
    let node = MetadataNode::start(config.clone()).await.unwrap();
    assert_eq!(node.list_streams(), expected);
    let metrics = node.raft().metrics().borrow().clone();
    assert!(metrics.snapshot.unwrap().index >= snapshot_index);
    assert!(metrics.last_log_index.unwrap() >= last_index);
    let new = node
        .create_stream(spec("after", "after"))
        .await
        .unwrap()
        .into_record();
    assert_eq!(new.id, StreamId::new(31));
    node.shutdown().await.unwrap();
}

#[tokio::test]
async fn raft_rpc_over_tcp_survives_a_bad_frame() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let peer = ClusterNode {
        raft_addr: node.raft_addr().to_owned(),
        client_addr: String::new(),
    };

    // Garbage on a raw connection: the server closes it and keeps serving.
    let mut raw = tokio::net::TcpStream::connect(node.raft_addr())
        .await
        .unwrap();
    raw.write_all(&[0xff; 64]).await.unwrap();
    let mut sink = [0u8; 16];
    let closed = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut raw, &mut sink),
    )
    .await
    .expect("server closes the connection");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");

    let term_before = node.raft().metrics().borrow().current_term;
    // A real client: a stale vote request is answered (and refused).
    let mut client = TcpNetwork::new(nid(2)).new_client(nid(1), &peer).await;
    let stale = VoteRequest::new(openraft::Vote::new(0, nid(2)), None);
    let reply = client
        .vote(stale, RPCOption::new(Duration::from_secs(5)))
        .await
        .expect("vote RPC answered");
    assert!(!reply.vote_granted);
    assert!(node.is_leader(), "a stale vote does not depose the leader");

    // A request meant for another node id (a stale peer of a node that
    // used this address before) is refused: the connection is closed.
    let mut misaddressed = TcpNetwork::new(nid(2)).new_client(nid(7), &peer).await;
    let refused = misaddressed
        .vote(
            VoteRequest::new(openraft::Vote::new(9, nid(2)), None),
            RPCOption::new(Duration::from_secs(5)),
        )
        .await;
    assert!(
        matches!(refused, Err(openraft::error::RPCError::Network(_))),
        "{refused:?}"
    );
    assert!(node.is_leader(), "a misaddressed vote changes nothing");
    assert_eq!(node.raft().metrics().borrow().current_term, term_before);

    // An unreachable peer is reported as such, not as a hang.
    let nowhere = ClusterNode {
        raft_addr: "127.0.0.1:1".to_owned(),
        client_addr: String::new(),
    };
    let mut client = TcpNetwork::new(nid(2)).new_client(nid(3), &nowhere).await;
    let unreachable = client
        .vote(
            VoteRequest::new(openraft::Vote::new(0, nid(2)), None),
            RPCOption::new(Duration::from_secs(5)),
        )
        .await;
    assert!(
        matches!(unreachable, Err(openraft::error::RPCError::Unreachable(_))),
        "{unreachable:?}"
    );
    node.shutdown().await.unwrap();
}

/// Adds `node` to the leader's cluster as a learner (waiting until it has
/// caught up) and registers it in the metadata.
async fn add_learner(leader: &MetadataNode, node: &MetadataNode) {
    let id = node.node_id();
    let client_addr = format!("127.0.0.1:94{id:02}");
    let member = ClusterNode {
        raft_addr: node.raft_addr().to_owned(),
        client_addr: client_addr.clone(),
    };
    leader.raft().add_learner(id, member, true).await.unwrap();
    let info = NodeInfo {
        raft_addr: node.raft_addr().to_owned(),
        client_addr,
        shard_count: 2,
    };
    let registered = leader
        .propose(MetadataCommand::RegisterNode { node_id: id, info })
        .await
        .unwrap();
    assert_eq!(registered, MetadataResponse::Ok);
}

#[tokio::test]
async fn three_nodes_replicate_over_tcp_and_a_lagging_learner_gets_a_snapshot() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let node_config = |id: NodeId, bootstrap: Bootstrap| MetadataConfig {
        raft: RaftTuning {
            snapshot_logs_since_last: 10,
            snapshot_logs_to_keep: 2,
            ..fast_tuning()
        },
        bootstrap,
        ..MetadataConfig::new(
            id,
            dirs[id.get() as usize - 1].path(),
            "127.0.0.1:0",
            format!("127.0.0.1:94{id:02}"),
            2,
        )
    };
    let leader = MetadataNode::start(node_config(nid(1), Bootstrap::IfPristine))
        .await
        .unwrap();
    for i in 0..25 {
        leader
            .create_stream(spec(&format!("s{i:02}"), &format!("s.{i}")))
            .await
            .unwrap();
    }
    leader
        .raft()
        .wait(Some(Duration::from_secs(5)))
        .metrics(|m| m.purged.is_some(), "the leader purged its log")
        .await
        .unwrap();

    // Two pristine nodes that wait to be added: entries 0.. are purged on
    // the leader, so they can only catch up through InstallSnapshot.
    let mut followers = Vec::new();
    for id in [2, 3] {
        let node = MetadataNode::start(node_config(nid(id), Bootstrap::Never))
            .await
            .unwrap();
        assert!(node.list_streams().is_empty());
        add_learner(&leader, &node).await;
        followers.push(node);
    }
    leader
        .raft()
        .change_membership([nid(1), nid(2), nid(3)], false)
        .await
        .unwrap();

    let replicated = leader
        .create_stream(StreamSpec {
            replication_factor: 3,
            ..spec("replicated", "r.*")
        })
        .await
        .unwrap()
        .into_record();
    assert!(replicated
        .partitions
        .iter()
        .all(|a| a.replicas.len() == 3 && a.shard < 2));
    let expected = leader.metadata();
    assert_eq!(expected.streams().len(), 26);
    for follower in &followers {
        let mut updates = follower.subscribe();
        tokio::time::timeout(
            Duration::from_secs(5),
            updates.wait_for(|m| **m == *expected),
        )
        .await
        .expect("follower caught up")
        .unwrap();
        assert!(!follower.is_leader());
        let installed = follower.raft().metrics().borrow().snapshot;
        assert!(installed.is_some(), "caught up through a snapshot");
        let here = follower
            .create_stream_with(
                spec("elsewhere", "e"),
                &RoundRobinPlacement::starting_at(nid(1)),
            )
            .await;
        assert!(
            matches!(&here, Err(ClusterError::NotLeader { leader: Some((id, addr)) }) if *id == nid(1) && addr == "127.0.0.1:9401"),
            "placing on a follower is refused: {here:?}"
        );
    }
    for follower in followers {
        follower.shutdown().await.unwrap();
    }
    leader.shutdown().await.unwrap();
}

#[tokio::test]
async fn acls_survive_restart() {
    use crate::model::acl::{AclOperation, AclOperations};
    let dir = tempfile::tempdir().unwrap();
    // Default snapshot policy: the rules come back from the log. (An
    // in-process restart while a snapshot build is still running races the
    // new node's storage, so this test does not force snapshots.)
    let config = config(dir.path());
    let node = MetadataNode::start(config.clone()).await.unwrap();
    let grant = |principal: &str, pattern: &str| MetadataCommand::GrantAcl {
        principal: principal.into(),
        stream_pattern: pattern.into(),
        operations: AclOperations::of([AclOperation::Fetch]),
    };
    for i in 0..6 {
        let response = node.write(grant("alice", &format!("s{i}"))).await.unwrap();
        assert_eq!(response, MetadataResponse::Ok);
    }
    let revoke = MetadataCommand::RevokeAcl {
        principal: "alice".into(),
        stream_pattern: "s0".into(),
        operations: AclOperations::NONE,
    };
    assert_eq!(node.write(revoke).await.unwrap(), MetadataResponse::Ok);
    let before = node.metadata().acls().clone();
    assert_eq!(before["alice"].len(), 5);
    node.shutdown().await.unwrap();

    let node = MetadataNode::start(config).await.unwrap();
    assert_eq!(node.metadata().acls(), &before);
    node.shutdown().await.unwrap();
}
