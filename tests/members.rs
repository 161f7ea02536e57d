//! Multi-node membership end to end: three real `sluice` processes (own
//! data directories, one shared nats-server) join one cluster, a stream
//! with replication factor 3 is created through a follower, `sluice cluster
//! status` shows the three nodes, and after the metadata leader is
//! SIGKILLed metadata operations keep working and its partitions move.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{member, NatsServer};
use serde_json::Value;
use sluice_testkit::SluiceNode;

/// Node timeout of these tests: a killed node is declared dead in ~1.5 s.
const NODE_TIMEOUT_MS: u64 = 1_500;
/// Bound of every wait on a condition.
const WAIT: Duration = Duration::from_secs(60);

/// One `sluice serve --node-id N` process.
struct Node {
    id: u64,
    node: SluiceNode,
    listen: SocketAddr,
    admin: SocketAddr,
    raft: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Node {
    /// Starts node `id`; with `join`, it joins the member at that raft
    /// address. Returns once `/healthz` answers (after the join).
    fn start(id: u64, nats_url: &str, join: Option<SocketAddr>) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = member(id, dir.path(), nats_url, join, NODE_TIMEOUT_MS)
            .start()
            .expect("start node");
        Node {
            id,
            listen: node.listen,
            admin: node.admin,
            raft: node.raft,
            node,
            _dir: dir,
        }
    }

    fn kill(&mut self) {
        self.node.kill();
    }

    /// Runs `sluice ARGS --server <this node>`.
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .args(["--server", &self.listen.to_string()])
            .output()
            .expect("run sluice")
    }

    /// `sluice cluster status --json` as asked of this node.
    fn status(&self) -> Value {
        let output = self.cli(&["cluster", "status", "--json"]);
        assert!(
            output.status.success(),
            "cluster status failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("cluster status JSON")
    }
}

/// Polls `condition` every 200 ms until it holds or [`WAIT`] passes.
fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn alive_nodes(status: &Value) -> Vec<u64> {
    status["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["alive"] == Value::Bool(true))
        .filter_map(|n| n["node_id"].as_u64())
        .collect()
}

#[test]
fn three_processes_join_create_through_a_follower_and_survive_the_metadata_leader() {
    let nats = NatsServer::start();
    let first = Node::start(1, &nats.url, None);
    // Node 3 joins through node 2, a follower, which forwards the join.
    let second = Node::start(2, &nats.url, Some(first.raft));
    let third = Node::start(3, &nats.url, Some(second.raft));
    let mut nodes = vec![first, second, third];

    eventually("three live nodes in cluster status", || {
        let status = nodes[2].status();
        status["liveness_known"] == Value::Bool(true) && alive_nodes(&status) == [1, 2, 3]
    });
    let status = nodes[0].status();
    let nodes_json = status["nodes"].as_array().expect("nodes");
    assert_eq!(nodes_json.len(), 3, "{status}");
    for (node, json) in nodes.iter().zip(nodes_json) {
        assert_eq!(json["raft_addr"], Value::String(node.raft.to_string()));
        assert_eq!(json["client_addr"], Value::String(node.listen.to_string()));
    }
    let leader = status["metadata_leader"]
        .as_u64()
        .expect("a metadata leader");
    let follower = nodes.iter().find(|n| n.id != leader).expect("a follower");

    // RF 3 through a follower: placed on the leader, answered from there.
    let created = follower.cli(&[
        "stream",
        "create",
        "orders",
        "--subject",
        "orders",
        "--partitions",
        "3",
        "--replication-factor",
        "3",
    ]);
    assert!(
        created.status.success(),
        "create through node {}: {}",
        follower.id,
        String::from_utf8_lossy(&created.stderr)
    );
    for node in &nodes {
        let describe = node.cli(&["stream", "describe", "orders"]);
        let text = String::from_utf8_lossy(&describe.stdout);
        assert!(describe.status.success(), "{text}");
        assert!(text.contains("replication"), "{text}");
    }
    let status = follower.status();
    let partitions = status["partitions"].as_array().expect("partitions");
    assert_eq!(partitions.len(), 3, "{status}");
    let leaders: std::collections::BTreeSet<u64> = partitions
        .iter()
        .filter_map(|p| p["leader"].as_u64())
        .collect();
    assert_eq!(leaders.len(), 3, "one partition leader per node: {status}");
    for p in partitions {
        assert_eq!(p["replicas"].as_array().map(Vec::len), Some(3), "{p}");
        assert_eq!(p["replica_status"].as_array().map(Vec::len), Some(3), "{p}");
    }

    // Each partition's messages are taken by its leader alone (a queue
    // group per partition): one ack per message, from the leader.
    let p0_leader = partitions
        .iter()
        .find(|p| p["partition"] == 0)
        .and_then(|p| p["leader"].as_u64())
        .expect("partition 0 leader");
    common::runtime().block_on(async {
        use futures::StreamExt;
        let nats = async_nats::connect(&nats.url).await.expect("nats");
        let inbox = nats.new_inbox();
        let mut acks = nats.subscribe(inbox.clone()).await.expect("subscribe");
        nats.flush().await.expect("flush");
        for i in 0..5 {
            nats.publish_with_reply("orders", inbox.clone(), format!("m{i}").into())
                .await
                .expect("publish");
        }
        let mut offsets = Vec::new();
        // Five acks (bounded wait), then a short quiet period in which a
        // duplicate from a second subscriber would show up.
        let mut deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while let Ok(Some(message)) = tokio::time::timeout_at(deadline, acks.next()).await {
            let ack = sluice::protocol::ack::Ack::decode(&message.payload).expect("ack decodes");
            assert_eq!((ack.stream.as_str(), ack.partition), ("orders", 0));
            match ack.outcome {
                sluice::protocol::ack::AckOutcome::Committed { offset, .. } => {
                    offsets.push(offset.0)
                }
                other => panic!("ack failed: {other:?}"),
            }
            if offsets.len() == 5 {
                deadline = tokio::time::Instant::now() + Duration::from_millis(500);
            }
        }
        assert_eq!(
            offsets,
            [0, 1, 2, 3, 4],
            "exactly one ack per message (leader {p0_leader})"
        );
    });

    // SIGKILL the metadata leader: metadata operations keep working.
    let index = nodes.iter().position(|n| n.id == leader).unwrap();
    nodes[index].kill();
    let killed_at = Instant::now();
    let survivor = nodes.iter().find(|n| n.id != leader).unwrap();
    eventually("a create after the metadata leader died", || {
        let output = survivor.cli(&[
            "stream",
            "create",
            "after",
            "--subject",
            "after",
            "--replication-factor",
            "2",
        ]);
        output.status.success()
    });
    eventually(
        "the killed node reported dead and its partitions moved",
        || {
            let status = survivor.status();
            let moved = status["partitions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["stream"] == "orders")
                .all(|p| {
                    p["leader"].as_u64() != Some(leader)
                        && !p["isr"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|n| n.as_u64() == Some(leader))
                });
            status["metadata_leader"]
                .as_u64()
                .is_some_and(|l| l != leader)
                && !alive_nodes(&status).contains(&leader)
                && moved
        },
    );
    eprintln!(
        "metadata leader SIGKILLed → create done, node dead and partitions moved in {:?} (node timeout {NODE_TIMEOUT_MS} ms)",
        killed_at.elapsed()
    );
    // The partition the dead node led went to an ISR member with a new
    // epoch; the others kept theirs (the dead node only left their ISR).
    let status = survivor.status();
    let epochs: Vec<u64> = status["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["stream"] == "orders")
        .filter_map(|p| p["leader_epoch"].as_u64())
        .collect();
    assert_eq!(epochs.iter().filter(|e| **e == 1).count(), 1, "{status}");
    assert_eq!(epochs.iter().filter(|e| **e == 0).count(), 2, "{status}");

    // The new leader of the moved partition subscribed to its subject: a
    // message published there is stored and acked.
    let moved = status["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["stream"] == "orders" && p["leader_epoch"] == 1)
        .and_then(|p| p["partition"].as_u64())
        .expect("the moved partition") as u32;
    let subject = match moved {
        0 => "orders".to_owned(),
        p => format!("orders.{p}"),
    };
    common::runtime().block_on(async {
        use futures::StreamExt;
        let nats = async_nats::connect(&nats.url).await.expect("nats");
        let inbox = nats.new_inbox();
        let mut acks = nats.subscribe(inbox.clone()).await.expect("subscribe");
        nats.flush().await.expect("flush");
        // The subscription may trail the metadata by a moment: retry.
        let started = Instant::now();
        loop {
            nats.publish_with_reply(subject.clone(), inbox.clone(), "after failover".into())
                .await
                .expect("publish");
            match tokio::time::timeout(Duration::from_secs(2), acks.next()).await {
                Ok(Some(message)) => {
                    let ack =
                        sluice::protocol::ack::Ack::decode(&message.payload).expect("ack decodes");
                    assert_eq!(ack.partition, moved);
                    assert!(
                        matches!(
                            ack.outcome,
                            sluice::protocol::ack::AckOutcome::Committed { .. }
                        ),
                        "{ack:?}"
                    );
                    break;
                }
                _ => assert!(started.elapsed() < WAIT, "no ack from the new leader"),
            }
        }
    });
    let metrics = {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(survivor.admin).expect("admin");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(stream, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    };
    assert!(
        metrics.contains("sluice_under_replicated_partitions "),
        "{metrics}"
    );
}
