//! Multi-node metadata tests, in one process over real TCP: joining
//! (through a follower, idempotent on restart, refused on a taken id),
//! static peers, forwarding changes to the leader across a leader loss, and
//! the controller moving partition leadership off a dead node.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use super::*;
use crate::model::{nid, MetadataCommand, StreamSpec};

/// Raft timings that tolerate a loaded 2-CPU test machine.
fn tuning() -> RaftTuning {
    RaftTuning {
        heartbeat_interval_ms: 50,
        election_timeout_min_ms: 400,
        election_timeout_max_ms: 800,
        ..RaftTuning::default()
    }
}

/// Node ids of these tests start above this, so they never equal the ids
/// of the other tests' nodes (which run in parallel and whose freed ports
/// may be handed out again): raft requests are addressed by node id.
const ID_BASE: u64 = 40;
const N1: NodeId = nid(ID_BASE + 1);
const N2: NodeId = nid(ID_BASE + 2);
const N3: NodeId = nid(ID_BASE + 3);
const ALL: [NodeId; 3] = [N1, N2, N3];

/// Node timeout of these tests: failures are noticed in about a second.
const NODE_TIMEOUT_MS: u64 = 1_000;
/// Bound of every wait on a condition.
const WAIT: Duration = Duration::from_secs(30);

/// A loopback address with a port that was free a moment ago (a restarted
/// node must come back on the same raft address).
/// A loopback address for a raft listener; not from the ephemeral range,
/// where the other nodes' client sockets could take it before it is bound.
fn free_addr() -> String {
    let port = sluice_testkit::ports::free_port().expect("a free port");
    format!("127.0.0.1:{port}")
}

fn config(id: NodeId, dir: &Path, raft_addr: &str, bootstrap: Bootstrap) -> MetadataConfig {
    MetadataConfig {
        raft: tuning(),
        bootstrap,
        node_timeout_ms: NODE_TIMEOUT_MS,
        ..MetadataConfig::new(
            id,
            dir,
            raft_addr,
            format!("127.0.0.1:{}", 9500 + id.get()),
            2,
        )
    }
}

/// Polls `condition` every 20 ms until it holds or [`WAIT`] passes.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn voters(node: &MetadataNode) -> Vec<NodeId> {
    node.raft()
        .metrics()
        .borrow()
        .membership_config
        .voter_ids()
        .collect()
}

struct Cluster {
    dirs: Vec<tempfile::TempDir>,
    addrs: Vec<String>,
    nodes: Vec<Option<MetadataNode>>,
}

impl Cluster {
    /// Node 1 bootstraps; node 2 joins through node 1; node 3 joins
    /// through node 2, a follower, which forwards the join to the leader.
    async fn three() -> Cluster {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let addrs: Vec<String> = (0..3).map(|_| free_addr()).collect();
        let mut nodes = Vec::new();
        for raw in ID_BASE + 1..=ID_BASE + 3 {
            let id = nid(raw);
            let i = (raw - ID_BASE - 1) as usize;
            let bootstrap = match i {
                0 => Bootstrap::IfPristine,
                1 => Bootstrap::Join(addrs[0].clone()),
                _ => Bootstrap::Join(addrs[1].clone()),
            };
            let node = MetadataNode::start(config(id, dirs[i].path(), &addrs[i], bootstrap))
                .await
                .expect("start node");
            nodes.push(Some(node));
        }
        Cluster { dirs, addrs, nodes }
    }

    fn node(&self, id: NodeId) -> &MetadataNode {
        self.nodes[(id.get() - ID_BASE - 1) as usize]
            .as_ref()
            .expect("node running")
    }

    fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .flatten()
            .find(|n| n.is_leader())
            .map(|n| n.node_id())
    }

    async fn stop(&mut self, id: NodeId) {
        let node = self.nodes[(id.get() - ID_BASE - 1) as usize]
            .take()
            .expect("node running");
        node.shutdown().await.unwrap();
    }

    async fn shutdown(mut self) {
        for node in self.nodes.drain(..).flatten() {
            node.shutdown().await.unwrap();
        }
    }
}

#[tokio::test]
async fn join_through_a_follower_makes_three_registered_voters_and_is_idempotent() {
    let mut cluster = Cluster::three().await;
    for id in ALL {
        let node = cluster.node(id);
        eventually("three voters everywhere", || voters(node) == ALL).await;
        eventually("three registered nodes everywhere", || {
            node.metadata().nodes().len() == 3
        })
        .await;
    }
    let registered = cluster.node(N1).metadata().nodes()[&N3].clone();
    assert_eq!(registered.raft_addr, cluster.addrs[2]);
    assert_eq!(
        registered.client_addr,
        format!("127.0.0.1:{}", 9500 + N3.get())
    );

    // Restart node 3 with the same --join: nothing changes, it settles.
    cluster.stop(N3).await;
    let restarted = MetadataNode::start(config(
        N3,
        cluster.dirs[2].path(),
        &cluster.addrs[2],
        Bootstrap::Join(cluster.addrs[1].clone()),
    ))
    .await
    .expect("restart with --join");
    cluster.nodes[2] = Some(restarted);
    eventually("the restarted node follows again", || {
        cluster.node(N3).leader().is_some()
    })
    .await;
    assert_eq!(voters(cluster.node(N1)), ALL);

    // A new node claiming node 2's id from another address is refused.
    let intruder_dir = tempfile::tempdir().unwrap();
    let refused = MetadataNode::start(config(
        N2,
        intruder_dir.path(),
        &free_addr(),
        Bootstrap::Join(cluster.addrs[0].clone()),
    ))
    .await;
    match refused {
        Err(ClusterError::JoinRefused { reason }) => {
            assert!(
                reason.contains(&format!("node id {N2} is already used")),
                "{reason}"
            );
            assert!(reason.contains("--node-id"), "says what to do: {reason}");
        }
        Err(other) => panic!("expected a refused join, got {other}"),
        Ok(_) => panic!("expected a refused join, got a running node"),
    }
    assert_eq!(voters(cluster.node(N1)), ALL);
    cluster.shutdown().await;
}

#[tokio::test]
async fn writes_and_creates_on_followers_are_forwarded_and_survive_a_leader_loss() {
    let mut cluster = Cluster::three().await;
    eventually("node 3 registered on node 3", || {
        cluster.node(N3).metadata().nodes().len() == 3
    })
    .await;
    let leader = cluster.leader().expect("a leader");
    let follower = ALL.into_iter().find(|id| *id != leader).unwrap();

    // A create on a follower: placed on the leader, visible on the
    // follower as soon as it returns.
    let spec = StreamSpec {
        partitions: 3,
        replication_factor: 3,
        ..StreamSpec::new("orders", "orders")
    };
    let created = cluster
        .node(follower)
        .create_stream(spec.clone())
        .await
        .expect("create through a follower");
    let StreamCreation::Created(record) = created else {
        panic!("expected a new stream: {created:?}");
    };
    assert_eq!(
        cluster.node(follower).describe("orders"),
        Some(record.clone())
    );
    assert_eq!(
        record.partitions[0].leader, follower,
        "placement starts at the asking node"
    );
    let leaders: BTreeSet<NodeId> = record.partitions.iter().map(|p| p.leader).collect();
    assert_eq!(leaders.len(), 3, "leaders spread over the nodes");

    // A raw command through a follower (what a shard's ISR change does).
    let p0 = &record.partitions[0];
    let shrink = MetadataCommand::UpdateIsr {
        stream: "orders".into(),
        stream_id: record.id,
        partition: 0,
        leader_epoch: p0.leader_epoch,
        isr_version: Some(p0.isr_version),
        isr: vec![p0.leader],
    };
    let response = cluster.node(follower).write(shrink).await.unwrap();
    assert_eq!(response, MetadataResponse::Ok);
    assert_eq!(
        cluster
            .node(follower)
            .describe("orders")
            .unwrap()
            .partitions[0]
            .isr,
        vec![p0.leader]
    );

    // The leader dies; a change on a survivor waits out the election.
    cluster.stop(leader).await;
    let survivor = ALL.into_iter().find(|id| *id != leader).unwrap();
    // New partitions avoid the dead node once the new leader has seen it
    // miss its heartbeats (after a grace period of one node timeout).
    let deadline = Instant::now() + WAIT;
    loop {
        let alive = cluster.node(survivor).liveness().await;
        if matches!(&alive, Ok(map) if map.get(&leader) == Some(&false)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dead leader never reported dead: {alive:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = cluster
        .node(survivor)
        .create_stream(StreamSpec {
            replication_factor: 2,
            ..StreamSpec::new("after", "after")
        })
        .await
        .expect("create after the leader loss");
    let after = after.into_record();
    assert!(
        after.partitions[0].replicas.iter().all(|n| *n != leader),
        "a dead node gets no new partition: {:?}",
        after.partitions
    );
    let too_many = cluster
        .node(survivor)
        .create_stream(StreamSpec {
            replication_factor: 3,
            ..StreamSpec::new("wide", "wide")
        })
        .await;
    assert!(
        matches!(&too_many, Err(e) if e.to_string().contains("replication factor 3 needs that many live nodes, the cluster has 2")),
        "{too_many:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn controller_elects_from_the_live_isr_and_never_outside_it() {
    let mut cluster = Cluster::three().await;
    eventually("all registered", || {
        cluster.node(N1).metadata().nodes().len() == 3
    })
    .await;
    let leader = cluster.leader().expect("a leader");
    let spec = StreamSpec {
        partitions: 3,
        replication_factor: 3,
        ..StreamSpec::new("events", "events")
    };
    let record = cluster
        .node(leader)
        .create_stream(spec)
        .await
        .unwrap()
        .into_record();
    // The victim: a node that is not the metadata leader (so the
    // controller keeps running) and leads one partition.
    let victim = ALL.into_iter().find(|id| *id != leader).unwrap();
    let led: Vec<u32> = record
        .partitions
        .iter()
        .filter(|p| p.leader == victim)
        .map(|p| p.partition)
        .collect();
    assert_eq!(led.len(), 1);
    // Another partition the victim leads alone in its ISR: it must stay
    // offline, not move to a replica outside the ISR.
    let lonely = StreamSpec {
        partitions: 1,
        replication_factor: 3,
        ..StreamSpec::new("lonely", "lonely")
    };
    let lonely = cluster
        .node(victim)
        .create_stream(lonely)
        .await
        .unwrap()
        .into_record();
    let l0 = lonely.partitions[0].clone();
    assert_eq!(l0.leader, victim);
    cluster
        .node(leader)
        .write(MetadataCommand::UpdateIsr {
            stream: "lonely".into(),
            stream_id: lonely.id,
            partition: 0,
            leader_epoch: l0.leader_epoch,
            isr_version: Some(l0.isr_version),
            isr: vec![victim],
        })
        .await
        .unwrap();

    cluster.stop(victim).await;
    let observer = cluster.node(leader);
    eventually("the dead node leads nothing and left every ISR", || {
        let events = observer.describe("events").unwrap();
        events
            .partitions
            .iter()
            .all(|p| p.leader != victim && !p.isr.contains(&victim))
    })
    .await;
    let moved = observer.describe("events").unwrap();
    let p = &moved.partitions[led[0] as usize];
    let before = &record.partitions[led[0] as usize];
    assert!(before.isr.contains(&p.leader), "elected from the ISR");
    assert_eq!(p.leader_epoch, before.leader_epoch + 1, "epoch bumped once");
    // The victim also left the ISR of the partitions it followed.
    for p in &moved.partitions {
        assert!(!p.isr.contains(&victim), "{p:?}");
        assert!(p.isr.contains(&p.leader));
    }
    // Unclean election stays off: the lonely partition keeps its dead
    // leader, ISR and epoch.
    tokio::time::sleep(Duration::from_millis(3 * NODE_TIMEOUT_MS)).await;
    let still = observer.describe("lonely").unwrap().partitions[0].clone();
    assert_eq!(
        (still.leader, still.isr.clone(), still.leader_epoch),
        (victim, vec![victim], l0.leader_epoch)
    );
    let liveness = observer.liveness().await.unwrap();
    assert_eq!(liveness.get(&victim), Some(&false));
    assert_eq!(liveness.get(&leader), Some(&true));
    cluster.shutdown().await;
}

#[tokio::test]
async fn static_peers_form_one_cluster() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let addrs: Vec<String> = (0..3).map(|_| free_addr()).collect();
    let peers: BTreeMap<NodeId, String> = ALL.into_iter().zip(addrs.iter().cloned()).collect();
    let mut starts = Vec::new();
    for (i, id) in ALL.into_iter().enumerate() {
        let config = config(
            id,
            dirs[i].path(),
            &addrs[i],
            Bootstrap::StaticPeers(peers.clone()),
        );
        starts.push(tokio::spawn(MetadataNode::start(config)));
    }
    let mut nodes = Vec::new();
    for start in starts {
        nodes.push(start.await.unwrap().expect("start a peer"));
    }
    for node in &nodes {
        eventually("everyone registered", || node.metadata().nodes().len() == 3).await;
        assert_eq!(voters(node), ALL);
    }
    let created = nodes[2]
        .create_stream(StreamSpec {
            replication_factor: 3,
            ..StreamSpec::new("s", "s")
        })
        .await
        .unwrap();
    assert!(matches!(created, StreamCreation::Created(_)));

    // A peer list that does not name this node at its address is refused.
    let wrong_dir = tempfile::tempdir().unwrap();
    let wrong = MetadataNode::start(config(
        nid(ID_BASE + 4),
        wrong_dir.path(),
        &free_addr(),
        Bootstrap::StaticPeers(peers.clone()),
    ))
    .await;
    assert!(
        matches!(&wrong, Err(ClusterError::Config { reason }) if reason.contains("does not list this node")),
        "{:?}",
        wrong.as_ref().err()
    );
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}
