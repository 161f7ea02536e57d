//! Test support for partition replication: a cluster of real `sluice serve
//! --node-id N` processes (own data directories, one shared nats-server)
//! that can be killed, paused (SIGSTOP) and restarted on the same data and
//! ports, plus the checks the replication tests share (ISR, per-replica
//! records and segment bytes).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shards::batch::{DecodedRecord, Record};
use shards::types::{Offset, TimestampMs};
use sluice::client::{Client, ClientConfig, ClientError, FetchStart, PartitionState};
use sluice::protocol::envelope::AckPolicy;
use sluice::protocol::error_code::ErrorCode;
use sluice::protocol::error_response::ErrorResponse;
use sluice::protocol::frame::{encode_frame, FrameKind};
use sluice::protocol::publish::{PublishRequest, PublishResponse};

use sluice_testkit::SluiceNode;

use crate::common::member;

/// Bound of every wait on a condition (a loaded 2-CPU machine is slow).
pub const WAIT: Duration = Duration::from_secs(60);
/// Client I/O timeout: above the server's 30 s ack-`all` wait.
const CLIENT_IO_TIMEOUT: Duration = Duration::from_secs(45);

/// How fast failures are noticed in these tests.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub replica_lag_time_max_ms: u64,
    pub node_timeout_ms: u64,
}

/// One `sluice serve --node-id N` process, restartable on the same data
/// (a [`SluiceNode`], which it dereferences to, in a temporary directory).
pub struct ReplicaNode {
    pub id: u64,
    node: SluiceNode,
    _dir: tempfile::TempDir,
}

/// Small segments: the test machine's disk is small and segments are
/// preallocated.
pub const DEFAULT_CONFIG: &str = "segment_bytes = 16777216\n";

impl ReplicaNode {
    /// Starts node `id` (joining the member at `join`, if given) and
    /// returns once its admin port reports healthy; `config` is its
    /// `sluice.toml`.
    pub fn start_with(
        id: u64,
        nats_url: &str,
        join: Option<SocketAddr>,
        timing: Timing,
        config: &str,
    ) -> ReplicaNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut serve = member(id, dir.path(), nats_url, join, timing.node_timeout_ms);
        serve.flag("--replica-lag-time-max-ms", timing.replica_lag_time_max_ms);
        serve.config = config.to_string();
        ReplicaNode {
            id,
            node: serve.start().expect("start node"),
            _dir: dir,
        }
    }

    /// Its data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.node.data_dir.clone()
    }

    /// SIGKILL: no shutdown, no final sync.
    pub fn kill(&mut self) {
        self.node.kill();
    }

    /// Starts the process again on the same data directory and ports.
    pub fn restart(&mut self) {
        self.node.restart().expect("restart node");
    }

    pub fn client(&self) -> Client {
        let config = ClientConfig {
            io_timeout: CLIENT_IO_TIMEOUT,
            ..ClientConfig::default()
        };
        Client::connect_with(&self.listen.to_string(), config).expect("connect")
    }

    /// The segment file of `stream`'s partition `partition` (the test streams
    /// stay in their first segment).
    pub fn first_segment(&self, stream: &str, partition: u32) -> PathBuf {
        let root = self.data_dir().join("partitions");
        let prefix = format!("{stream}-");
        for entry in std::fs::read_dir(&root).expect("partitions dir").flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) {
                return entry
                    .path()
                    .join(partition.to_string())
                    .join("00000000000000000000.log");
            }
        }
        panic!("node {} has no directory for {stream}", self.id);
    }
}

sluice_testkit::deref_to_node!(ReplicaNode, node);

/// Three nodes: node 1 bootstraps, 2 and 3 join it.
pub fn start_three(nats_url: &str, timing: Timing) -> Vec<ReplicaNode> {
    start_three_with(nats_url, timing, DEFAULT_CONFIG)
}

/// [`start_three`] with this `sluice.toml` on every node.
pub fn start_three_with(nats_url: &str, timing: Timing, config: &str) -> Vec<ReplicaNode> {
    let first = ReplicaNode::start_with(1, nats_url, None, timing, config);
    let join = first.raft;
    let mut nodes = vec![first];
    for id in 2..=3 {
        nodes.push(ReplicaNode::start_with(
            id,
            nats_url,
            Some(join),
            timing,
            config,
        ));
    }
    nodes
}

/// Polls `check` until it returns `Some`, at most [`WAIT`].
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(started.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The partition's state as `node` reports it (`None` if it cannot answer).
pub fn partition_state(node: &ReplicaNode, stream: &str, partition: u32) -> Option<PartitionState> {
    let status = node.client().cluster_status(&[stream]).ok()?;
    status
        .partitions
        .into_iter()
        .find(|p| p.stream == stream && p.partition == partition)
}

/// Waits until `node` reports `isr` (as a set) for the partition.
pub fn wait_for_isr(node: &ReplicaNode, stream: &str, partition: u32, isr: &[u64]) {
    let mut want = isr.to_vec();
    want.sort_unstable();
    wait_for(&format!("ISR {want:?}"), || {
        let mut have: Vec<u64> = partition_state(node, stream, partition)?
            .isr
            .iter()
            .map(|id| id.get())
            .collect();
        have.sort_unstable();
        (have == want).then_some(())
    });
}

/// `count` small records whose values name `tag` and their index.
pub fn records(tag: &str, count: usize) -> Vec<Record> {
    (0..count)
        .map(|i| Record {
            timestamp: TimestampMs::now(),
            key: Some(format!("k{i}").into_bytes().into()),
            value: Some(format!("{tag}-{i}").into_bytes().into()),
            headers: Vec::new(),
        })
        .collect()
}

pub fn publish(
    node: &ReplicaNode,
    stream: &str,
    records: &[Record],
    policy: AckPolicy,
) -> Result<(Offset, Offset), ClientError> {
    node.client()
        .publish_with_policy(stream, 0, records, policy)
}

/// Every committed record `node` serves for the partition (consumer fetches
/// on a follower stop at its high watermark).
pub fn committed_records(node: &ReplicaNode, stream: &str) -> (Offset, Vec<DecodedRecord>) {
    let mut client = node.client();
    let mut next = FetchStart::Earliest;
    let mut all = Vec::new();
    loop {
        let fetched = client
            .fetch(stream, 0, next, 1 << 20, Duration::ZERO)
            .expect("fetch");
        let done = fetched.records.is_empty() || fetched.next_offset >= fetched.high_watermark;
        all.extend(fetched.records);
        next = FetchStart::Offset(fetched.next_offset);
        if done {
            return (fetched.high_watermark, all);
        }
    }
}

/// Waits until every node serves exactly `end` committed offsets, then
/// checks that all serve the same records and hold byte-identical segment
/// files. Returns the records.
pub fn assert_replicas_identical(
    nodes: &[&ReplicaNode],
    stream: &str,
    end: Offset,
) -> Vec<DecodedRecord> {
    let mut reference: Option<Vec<DecodedRecord>> = None;
    for node in nodes {
        let records = wait_for(
            &format!("node {} to commit up to {}", node.id, end.0),
            || {
                let (hw, records) = committed_records(node, stream);
                (hw == end).then_some(records)
            },
        );
        assert_eq!(
            records.len() as u64,
            end.0,
            "node {}: one record per offset",
            node.id
        );
        for (index, record) in records.iter().enumerate() {
            assert_eq!(record.offset, Offset(index as u64), "node {}", node.id);
        }
        match &reference {
            None => reference = Some(records),
            Some(first) => assert!(first == &records, "node {} serves other records", node.id),
        }
    }
    // The logs themselves: same batches at the same file positions.
    let segments: Vec<Vec<u8>> = nodes
        .iter()
        .map(|n| read_prefix(&n.first_segment(stream, 0)))
        .collect();
    for (node, bytes) in nodes.iter().zip(&segments).skip(1) {
        assert!(
            bytes == &segments[0],
            "node {} segment differs from node {}",
            node.id,
            nodes[0].id
        );
    }
    reference.unwrap_or_default()
}

/// A segment file without its zero-filled preallocated tail (compared
/// between nodes, so trimming the same way on each is exact enough).
fn read_prefix(path: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(path).expect("segment file");
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    bytes
}

/// The partition leader's node as `node` reports it.
pub fn leader_of(node: &ReplicaNode, stream: &str) -> u64 {
    wait_for("a partition leader", || {
        partition_state(node, stream, 0)?.leader.map(|id| id.get())
    })
}

/// The answer to one Publish sent on a raw socket.
#[derive(Debug, PartialEq, Eq)]
pub enum RawPublish {
    Acked { base: Offset, last: Offset },
    Refused(ErrorCode),
}

/// Publishes on a socket of its own, without the client's NotLeader
/// redirect (which would resend the batch to the new leader): what the
/// node at `addr` itself answers.
pub fn raw_publish(
    addr: SocketAddr,
    stream: &str,
    records: &[Record],
    policy: AckPolicy,
) -> RawPublish {
    let mut batch = Vec::new();
    shards::batch::encode_batch(Offset::ZERO, records, &mut batch);
    let mut socket = std::net::TcpStream::connect(addr).expect("connect");
    socket
        .set_read_timeout(Some(CLIENT_IO_TIMEOUT))
        .expect("timeout");
    raw_publish_batch(&mut socket, stream, &batch, policy)
}

/// Sends one Publish of `batch` exactly as given (to partition 0) on
/// `socket` and reads the answer.
pub fn raw_publish_batch(
    socket: &mut std::net::TcpStream,
    stream: &str,
    batch: &[u8],
    policy: AckPolicy,
) -> RawPublish {
    use std::io::{Read, Write};
    let body = PublishRequest {
        stream,
        partition: 0,
        ack_policy: Some(policy),
        batch: Some(batch),
    }
    .encode();
    let mut frame = bytes::BytesMut::new();
    encode_frame(FrameKind::PublishRequest, 7, &body, &mut frame).expect("frame");
    socket.write_all(&frame).expect("send publish");
    let mut header = [0u8; 9];
    socket.read_exact(&mut header).expect("answer header");
    let length = u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    assert!((5..1 << 20).contains(&length), "answer length {length}");
    let mut body = vec![0u8; length - 5];
    socket.read_exact(&mut body).expect("answer body");
    match FrameKind::try_from(header[4]).expect("kind") {
        FrameKind::PublishResponse => {
            let response = PublishResponse::decode(&body).expect("body");
            RawPublish::Acked {
                base: response.base_offset,
                last: response.last_offset,
            }
        }
        FrameKind::ErrorResponse => {
            RawPublish::Refused(ErrorResponse::decode(&body).expect("error body").code)
        }
        other => panic!("unexpected answer {other:?}"),
    }
}
