//! Support for the cluster acceptance tests (issue #5): a 3-node cluster of
//! real `sluice serve` processes around one nats-server, a continuous
//! publisher, a consistency checker, a network-namespace lab, and the
//! soak-mode knobs. Everything is killed and removed on drop, panics too.

#![allow(dead_code)]

pub mod checker;
pub mod disk;
pub mod live;
pub mod netns;
pub mod procs;
pub mod publisher;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sluice::client::{
    Client, ClientConfig, FetchStart, OffsetQuery, PartitionMetadata, StreamConfig,
};
use sluice::protocol::envelope::AckPolicy;

use checker::{History, ReplicaView, Report};
use netns::NetLab;
use procs::{Nats, Node, NodeSettings};

/// The `sluice` binary cargo built for these tests.
pub fn sluice_bin() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_sluice"))
}

/// Nodes in a test cluster.
pub const NODES: usize = 3;
/// Replication factor and min ISR of the test streams.
pub const REPLICATION_FACTOR: u16 = 3;
pub const MIN_INSYNC_REPLICAS: u16 = 2;
/// Longest wait for the cluster to react to a fault (election, ISR change,
/// catch-up) on a loaded CI machine.
pub const REACT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the consumer-visible high watermark must stay unchanged before
/// the replicas are read.
const SETTLE_STABLE: Duration = Duration::from_secs(1);
/// Largest fetch when reading a partition back.
const FETCH_BYTES: u32 = 4 << 20;

/// The scenarios run one at a time (each starts four processes; running
/// them side by side on a 2-CPU machine would only make timeouts flaky).
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Soak knobs: `SLUICE_SOAK_CYCLES` (faults per scenario, default 1) and
/// `SLUICE_SOAK_SECS` (seconds of publishing between faults, default 0 =
/// just enough acks to prove progress).
#[derive(Clone, Copy, Debug)]
pub struct Soak {
    pub cycles: usize,
    pub phase: Duration,
}

impl Soak {
    pub fn from_env() -> Soak {
        let read = |name: &str| -> Option<u64> {
            let value = std::env::var(name).ok()?;
            Some(
                value
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={value:?} is not a whole number")),
            )
        };
        Soak {
            cycles: read("SLUICE_SOAK_CYCLES").unwrap_or(1).max(1) as usize,
            phase: Duration::from_secs(read("SLUICE_SOAK_SECS").unwrap_or(0)),
        }
    }
}

/// Polls `probe` until it returns `Some`, at most `timeout`; `None` after.
pub fn poll<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn client_config() -> ClientConfig {
    ClientConfig {
        connect_timeout: Duration::from_secs(1),
        io_timeout: Duration::from_secs(5),
    }
}

/// One nats-server and three nodes (node ids 1..=3; node 1 bootstraps, the
/// others join it). Field order is drop order: nodes, then NATS, then the
/// namespace they may live in.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub nats: Nats,
    pub lab: Option<NetLab>,
}

impl Cluster {
    /// Three nodes on 127.0.0.1.
    pub fn start() -> Cluster {
        Self::start_on(None, None)
    }

    /// Three nodes around a network namespace: nats-server and the other
    /// nodes on the root side of the veth, node `isolated_id` inside it.
    pub fn start_with_lab(lab: NetLab, isolated_id: u64) -> Cluster {
        Self::start_on(Some(lab), Some(isolated_id))
    }

    fn start_on(lab: Option<NetLab>, isolated_id: Option<u64>) -> Cluster {
        let root_ip: IpAddr = match &lab {
            Some(lab) => IpAddr::V4(lab.host_ip),
            None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        let nats = Nats::start(root_ip);
        let mut nodes: Vec<Node> = Vec::with_capacity(NODES);
        for id in 1..=NODES as u64 {
            let join = nodes.first().map(|first: &Node| first.raft);
            let (ip, prefix) = match (&lab, isolated_id) {
                (Some(lab), Some(isolated)) if isolated == id => {
                    (IpAddr::V4(lab.ns_ip), lab.exec_prefix())
                }
                _ => (root_ip, Vec::new()),
            };
            let mut node =
                Node::spawn_new(id, ip, &nats.url, join, prefix, NodeSettings::default());
            node.wait_healthy();
            nodes.push(node);
        }
        // Healthy is local: membership shows when an RF 3 stream can be
        // placed (`create_stream` retries until then).
        Cluster { nodes, nats, lab }
    }

    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[(id - 1) as usize]
    }

    pub fn node_mut(&mut self, id: u64) -> &mut Node {
        &mut self.nodes[(id - 1) as usize]
    }

    pub fn running_ids(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.id)
            .collect()
    }

    pub fn client(&self, id: u64) -> Result<Client, sluice::client::ClientError> {
        Client::connect_with(&self.node(id).listen.to_string(), client_config())
    }

    /// The tails of every node's log, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("----- node {} log -----\n{}\n", n.id, n.log_tail()))
            .collect()
    }

    /// Creates `name` on `subject` (RF 3, min ISR 2, ack policy all), asking
    /// node `via` first (placement tends to give it partition 0), and waits
    /// until every partition has a leader and a full ISR.
    pub fn create_stream(&self, name: &str, subject: &str, partitions: u32, via: u64) {
        let mut config = StreamConfig::new(name, subject);
        config.partitions = Some(partitions);
        config.replication_factor = Some(REPLICATION_FACTOR);
        config.min_insync_replicas = Some(MIN_INSYNC_REPLICAS);
        config.ack_policy = Some(AckPolicy::All);
        let created = poll(REACT_TIMEOUT, || {
            let running = self.running_ids();
            let id = if running.contains(&via) {
                via
            } else {
                *running.first()?
            };
            match self.client(id).ok()?.create_stream(&config) {
                Ok(created) => Some(created),
                Err(error) => {
                    eprintln!("create {name} via node {id}: {error}; retrying");
                    None
                }
            }
        });
        assert!(
            created.is_some(),
            "could not create {name}\n{}",
            self.logs()
        );
        for partition in 0..partitions {
            self.wait_partition(name, partition, "a leader and a full ISR", |p| {
                p.leader.is_some() && p.isr.len() == REPLICATION_FACTOR as usize
            });
        }
    }

    /// The partition as the metadata of the first running node (other than
    /// `skip`) that answers describes it.
    pub fn partition_from(
        &self,
        stream: &str,
        partition: u32,
        skip: &[u64],
    ) -> Option<PartitionMetadata> {
        self.running_ids()
            .into_iter()
            .filter(|id| !skip.contains(id))
            .find_map(|id| {
                let metadata = self.client(id).ok()?.metadata_for(&[stream]).ok()?;
                let stream = metadata.stream(stream)?;
                stream
                    .partitions
                    .iter()
                    .find(|p| p.partition == partition)
                    .cloned()
            })
    }

    pub fn partition(&self, stream: &str, partition: u32) -> Option<PartitionMetadata> {
        self.partition_from(stream, partition, &[])
    }

    /// Waits until `condition` holds for the partition (asking running nodes
    /// other than `skip`); the partition then.
    pub fn wait_partition_from(
        &self,
        stream: &str,
        partition: u32,
        skip: &[u64],
        what: &str,
        condition: impl Fn(&PartitionMetadata) -> bool,
    ) -> PartitionMetadata {
        let mut last = None;
        let found = poll(REACT_TIMEOUT, || {
            let p = self.partition_from(stream, partition, skip)?;
            let ok = condition(&p);
            last = Some(p.clone());
            ok.then_some(p)
        });
        found.unwrap_or_else(|| {
            panic!(
                "{stream}/{partition}: never got {what} within {REACT_TIMEOUT:?}; last seen {last:?}\n{}",
                self.logs()
            )
        })
    }

    pub fn wait_partition(
        &self,
        stream: &str,
        partition: u32,
        what: &str,
        condition: impl Fn(&PartitionMetadata) -> bool,
    ) -> PartitionMetadata {
        self.wait_partition_from(stream, partition, &[], what, condition)
    }

    /// Runs the CLI against node `id`: (success, stdout, stderr).
    pub fn cli(&self, id: u64, args: &[&str]) -> (bool, String, String) {
        let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["--server", &self.node(id).listen.to_string()])
            .args(args)
            .output()
            .expect("run the sluice CLI");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// `sluice cluster status --json` from node `id`, parsed.
    pub fn status(&self, id: u64) -> Option<serde_json::Value> {
        let (ok, stdout, _) = self.cli(id, &["cluster", "status", "--json"]);
        ok.then(|| serde_json::from_str(&stdout).ok()).flatten()
    }

    /// The metadata (raft) leader according to `cluster status --json` of
    /// any running node.
    pub fn metadata_leader(&self) -> Option<u64> {
        self.running_ids()
            .into_iter()
            .find_map(|id| status_metadata_leader(&self.status(id)?))
    }

    /// Starts a consumer that follows the partition (and its leader) while
    /// the scenario runs.
    pub fn live_consumer(&self, stream: &str, partition: u32) -> live::LiveConsumer {
        let nodes = self.nodes.iter().map(|n| n.listen).collect();
        live::LiveConsumer::start(nodes, stream, partition)
    }

    /// A client connected straight to the partition's current leader (the
    /// metadata's word), so nothing depends on the client's routing.
    pub fn leader_client(&self, stream: &str, partition: u32) -> Option<(u64, Client)> {
        let leader = self.partition(stream, partition)?.leader?.get();
        if !self.node(leader).is_running() {
            return None;
        }
        Some((leader, self.client(leader).ok()?))
    }

    /// Every committed record of the partition as a consumer sees it, read
    /// from the leader.
    pub fn consumer_view(&self, stream: &str, partition: u32) -> ReplicaView {
        let (via, mut client) = self
            .leader_client(stream, partition)
            .expect("connect to the partition leader");
        let high_watermark = client
            .list_offsets(stream, partition, OffsetQuery::Latest)
            .expect("list offsets")
            .offset;
        let mut records = Vec::new();
        let mut next = FetchStart::Earliest;
        let deadline = Instant::now() + REACT_TIMEOUT;
        loop {
            let result = client
                .fetch(stream, partition, next, FETCH_BYTES, Duration::ZERO)
                .expect("fetch");
            let done = result.records.is_empty() || result.next_offset >= high_watermark;
            records.extend(
                result
                    .records
                    .into_iter()
                    .map(|r| (r.offset.0, r.value.map(|v| v.to_vec()).unwrap_or_default())),
            );
            next = FetchStart::Offset(result.next_offset);
            if done {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "fetching {stream}/{partition} back took too long"
            );
        }
        ReplicaView {
            name: format!("consumer(via node {via}, hw {})", high_watermark.0),
            records,
            complete: true,
        }
    }

    /// After a scenario: waits until every node runs and is back in the
    /// ISR and the high watermark is stable, reads the partition as a
    /// consumer, stops every node gracefully, reads each node's partition
    /// directory from disk, and checks all four views against `history`.
    /// `live` is what a consumer saw while the faults happened.
    pub fn settle_and_check(
        &mut self,
        stream: &str,
        partition: u32,
        history: &History,
        live: ReplicaView,
    ) -> Report {
        let views = self
            .settle_and_read(&[(stream, partition)])
            .pop()
            .expect("one stream's views");
        let mut views = views;
        views.insert(1, live);
        let report = checker::check(history, &views);
        println!("{report}");
        report
    }

    /// Waits until every node runs, each partition is back to a full ISR
    /// and its high watermark is stable, reads each partition as a consumer
    /// from its leader, stops every node gracefully (followers first) and
    /// reads each node's copy from disk. Per partition: the consumer's view
    /// first, then one view per node.
    pub fn settle_and_read(&mut self, partitions: &[(&str, u32)]) -> Vec<Vec<ReplicaView>> {
        assert_eq!(
            self.running_ids().len(),
            NODES,
            "settle needs every node running"
        );
        let mut consumers = Vec::new();
        for &(stream, partition) in partitions {
            self.settle(stream, partition);
            consumers.push(self.consumer_view(stream, partition));
        }
        let leaders: Vec<u64> = partitions
            .iter()
            .filter_map(|&(stream, partition)| {
                Some(self.partition(stream, partition)?.leader?.get())
            })
            .collect();
        // Followers first, so the leaders see no ISR churn while they stop.
        let mut order: Vec<u64> = (1..=NODES as u64)
            .filter(|id| !leaders.contains(id))
            .collect();
        order.extend((1..=NODES as u64).filter(|id| leaders.contains(id)));
        for id in order {
            self.node_mut(id).stop();
        }
        partitions
            .iter()
            .zip(consumers)
            .map(|(&(stream, partition), consumer)| {
                let mut views = vec![consumer];
                for node in &self.nodes {
                    let dir = disk::partition_dir(&node.data_dir, stream, partition)
                        .unwrap_or_else(|| {
                            panic!("node {} has no directory for {stream}", node.id)
                        });
                    views.push(disk::read_partition(
                        &format!("node {} (disk)", node.id),
                        &dir,
                    ));
                }
                views
            })
            .collect()
    }

    /// Waits until the partition has a full ISR and a high watermark that
    /// stopped moving.
    fn settle(&self, stream: &str, partition: u32) {
        self.wait_partition(stream, partition, "a full ISR", |p| {
            p.leader.is_some() && p.isr.len() == REPLICATION_FACTOR as usize
        });
        // The HW reaches every ISR member's log end shortly after the last
        // publish; wait until it stops moving.
        let mut last = None;
        let mut since = Instant::now();
        let stable = poll(REACT_TIMEOUT, || {
            let hw = self
                .leader_client(stream, partition)?
                .1
                .list_offsets(stream, partition, OffsetQuery::Latest)
                .ok()?
                .offset;
            if last != Some(hw) {
                last = Some(hw);
                since = Instant::now();
            }
            (since.elapsed() >= SETTLE_STABLE).then_some(hw)
        });
        assert!(
            stable.is_some(),
            "the high watermark of {stream}/{partition} never settled\n{}",
            self.logs()
        );
    }

    /// Restarts every stopped node (after [`Cluster::settle_and_check`],
    /// for another cycle).
    pub fn restart_stopped(&mut self) {
        for node in &mut self.nodes {
            if !node.is_running() {
                node.spawn();
            }
        }
        for node in &mut self.nodes {
            node.wait_healthy();
        }
    }
}

/// The metadata leader's id in `cluster status --json`: a top-level
/// `metadata_leader` (number), or `metadata.leader`.
pub fn status_metadata_leader(status: &serde_json::Value) -> Option<u64> {
    status
        .get("metadata_leader")
        .and_then(|v| v.as_u64())
        .or_else(|| status.get("metadata")?.get("leader")?.as_u64())
}

/// Prints one line of figures for the final report.
pub fn figure(scenario: &str, text: impl std::fmt::Display) {
    println!("[{scenario}] {text}");
}

/// Failover times, formatted: min/median/max.
pub fn summarize(times: &[Duration]) -> String {
    if times.is_empty() {
        return "none".into();
    }
    let mut sorted = times.to_vec();
    sorted.sort();
    format!(
        "n={} min={:?} median={:?} max={:?}",
        sorted.len(),
        sorted[0],
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1]
    )
}

/// The address of node `id`'s data shard 0.
pub fn shard_addr(node: &Node) -> SocketAddr {
    node.listen
}
