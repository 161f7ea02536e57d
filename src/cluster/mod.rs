//! Cluster metadata: nodes, streams, partition placement, leaders and ISRs,
//! replicated with openraft (storage-v2) on the tokio control core.
//!
//! Raft is used for metadata only; partition data is replicated by the data
//! shards (ISR, docs/design.md §10). The metadata model it replicates
//! ([`Metadata`], [`StreamRecord`], `MetadataCommand`, the rules a valid
//! spec keeps) is plain data in [`crate::model`]; this module is the
//! machinery around it:
//!
//! - `types.rs`: the openraft type configuration.
//! - `apply.rs`: the deterministic state-machine transition (`acl.rs`:
//!   its ACL commands), `placement.rs`: where a new stream's partitions go.
//! - `storage.rs`: durable log, vote and snapshot files under
//!   `<data_dir>/raft/` (layouts documented there and in
//!   `storage/log_file.rs`); `frame.rs`: the CRC'd framing they and the
//!   network share.
//! - `network.rs`: raft RPCs over TCP, client and server;
//!   `control_rpc.rs`: Sluice's own RPCs on that transport (forwarding to
//!   the leader, join, heartbeats, status).
//! - `liveness.rs`: node heartbeats as the leader sees them;
//!   `controller.rs`: moves partition leadership off dead nodes;
//!   `lease.rs`: how long this node may lead partitions on the metadata it
//!   has applied (renewed by every heartbeat, see [`MetadataLease`]).
//! - `membership.rs`: forming and joining the cluster at start-up, a
//!   restarted member's settling, the leader adding a node;
//!   `forward.rs`: changes and control operations through the raft leader
//!   (forwarded from a follower); `lease_renewal.rs`: the loop that keeps
//!   this node's lease (and heartbeats the leader).
//! - this file: [`MetadataNode`], the handle the server uses: its
//!   configuration, start and shutdown, and the reads of applied state.
//!
//! Invariants: the metadata changes only by applying committed commands, in
//! log order, identically on every node; a log write is reported flushed
//! only after fsync; a vote is durable before it is used; a stream id is
//! never reused.
//!
//! Reads ([`MetadataCore::list_streams`], [`MetadataCore::subscribe`], ...)
//! see this node's applied state, which may trail the leader. Writes
//! ([`MetadataCore::write`], create, delete) go through the raft leader:
//! a follower forwards them over the raft transport, retrying across
//! elections, and returns once it has applied the change itself.

mod acl;
mod apply;
pub mod control_rpc;
pub mod controller;
mod error;
mod forward;
mod frame;
pub mod lease;
mod lease_renewal;
pub mod limits;
pub mod liveness;
mod membership;
pub mod network;
mod placement;
mod storage;
mod types;

#[cfg(test)]
mod lease_sim_tests;
#[cfg(test)]
mod membership_tests;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use openraft::{Raft, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use self::control_rpc::{LocalPartitionStatus, OpenFailure, ReplicaLag};
pub use self::error::ClusterError;
pub use self::lease::MetadataLease;
pub use self::placement::{stream_hash, Placement, PlacementError, RoundRobinPlacement};
pub use self::types::{ClusterNode, MetadataRaft, TypeConfig};

use self::control_rpc::ControlReply;
use self::limits::{
    ELECTION_TIMEOUT_MAX_MS_DEFAULT, ELECTION_TIMEOUT_MIN_MS_DEFAULT,
    HEARTBEAT_INTERVAL_MS_DEFAULT, NODE_TIMEOUT_MS_DEFAULT, RAFT_INSTALL_SNAPSHOT_TIMEOUT_MS,
    RAFT_PAYLOAD_ENTRIES_MAX, RAFT_SNAPSHOT_CHUNK_BYTES, SNAPSHOT_LOGS_SINCE_LAST_DEFAULT,
    SNAPSHOT_LOGS_TO_KEEP_DEFAULT,
};
use self::liveness::Liveness;
use crate::model::{
    validate_node_info, Metadata, MetadataResponse, NodeId, NodeInfo, StreamRecord,
};

/// Subdirectory of the data directory holding the raft files.
pub const RAFT_DIR: &str = "raft";

/// Raft timing and log-compaction settings. The defaults suit production;
/// tests shorten them.
#[derive(Debug, Clone)]
pub struct RaftTuning {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many entries since the last one.
    pub snapshot_logs_since_last: u64,
    /// Entries a snapshot covers that are kept in the log anyway.
    pub snapshot_logs_to_keep: u64,
}

impl Default for RaftTuning {
    fn default() -> RaftTuning {
        RaftTuning {
            heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS_DEFAULT,
            election_timeout_min_ms: ELECTION_TIMEOUT_MIN_MS_DEFAULT,
            election_timeout_max_ms: ELECTION_TIMEOUT_MAX_MS_DEFAULT,
            snapshot_logs_since_last: SNAPSHOT_LOGS_SINCE_LAST_DEFAULT,
            snapshot_logs_to_keep: SNAPSHOT_LOGS_TO_KEEP_DEFAULT,
        }
    }
}

/// How to start a metadata node.
#[derive(Debug, Clone)]
pub struct MetadataConfig {
    /// Stable across restarts; unique in the cluster.
    pub node_id: NodeId,
    /// The node's data directory; raft files go to `<data_dir>/raft/`.
    pub data_dir: PathBuf,
    /// `host:port` to listen on for raft RPCs and to announce to peers. With
    /// port 0 the bound port is announced.
    pub raft_addr: String,
    /// `host:port` of this node's client listener, announced in metadata.
    pub client_addr: String,
    /// Data shards on this node (placement picks shards below this).
    pub shard_count: u32,
    pub raft: RaftTuning,
    pub bootstrap: Bootstrap,
    /// A node the metadata leader has not heard from for this long is dead
    /// (its partitions get new leaders).
    pub node_timeout_ms: u64,
}

/// What a pristine node (no vote, log or snapshot) does at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Bootstrap {
    /// Form a one-node cluster with itself as the only voter.
    #[default]
    IfPristine,
    /// Wait to be added by an existing cluster's leader.
    Never,
    /// Ask the member at this raft address to add this node (as a voter,
    /// once caught up); also re-asked by a restarted node that is not a
    /// voter yet.
    Join(String),
    /// Form the cluster of these voters (node id → raft address), listed
    /// identically on every one of them.
    StaticPeers(BTreeMap<NodeId, String>),
}

impl MetadataConfig {
    /// A configuration with the default [`RaftTuning`].
    pub fn new(
        node_id: NodeId,
        data_dir: impl Into<PathBuf>,
        raft_addr: impl Into<String>,
        client_addr: impl Into<String>,
        shard_count: u32,
    ) -> MetadataConfig {
        MetadataConfig {
            node_id,
            data_dir: data_dir.into(),
            raft_addr: raft_addr.into(),
            client_addr: client_addr.into(),
            shard_count,
            raft: RaftTuning::default(),
            bootstrap: Bootstrap::IfPristine,
            node_timeout_ms: NODE_TIMEOUT_MS_DEFAULT,
        }
    }
}

/// The result of a successful [`MetadataCore::create_stream`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamCreation {
    /// A new stream (with a new id).
    Created(StreamRecord),
    /// A stream of that name and the very same spec existed; nothing changed.
    Exists(StreamRecord),
}

impl StreamCreation {
    pub fn record(&self) -> &StreamRecord {
        match self {
            StreamCreation::Created(r) | StreamCreation::Exists(r) => r,
        }
    }

    pub fn into_record(self) -> StreamRecord {
        match self {
            StreamCreation::Created(r) | StreamCreation::Exists(r) => r,
        }
    }
}

/// Where a `sluice cluster status` gets the partition statuses of this node
/// (installed by the server once its shards run).
pub type StatusSource =
    Arc<dyn Fn() -> BoxFuture<'static, Vec<LocalPartitionStatus>> + Send + Sync>;

/// This node's member of the metadata cluster. Must be started (and used)
/// inside a tokio runtime: openraft spawns its tasks there. Dereferences to
/// [`MetadataCore`], the part its background tasks share.
pub struct MetadataNode {
    core: Arc<MetadataCore>,
    raft_server: JoinHandle<()>,
    /// Heartbeats, the controller, and (on a restarted member) registration.
    background: Vec<JoinHandle<()>>,
}

/// The state of a metadata node shared by its API, its RPC server and its
/// background tasks.
pub struct MetadataCore {
    node_id: NodeId,
    /// What this node announces in the metadata.
    info: NodeInfo,
    raft: MetadataRaft,
    metadata: watch::Receiver<Arc<Metadata>>,
    liveness: Liveness,
    /// One join (membership change) at a time; openraft refuses overlapping
    /// changes anyway, this turns that into waiting.
    membership_changes: tokio::sync::Mutex<()>,
    status_source: OnceLock<StatusSource>,
    /// Until when the applied metadata is confirmed current; renewed by
    /// every successful confirmation round (`lease_renewal::keep_lease`).
    lease: watch::Sender<MetadataLease>,
}

impl std::ops::Deref for MetadataNode {
    type Target = MetadataCore;

    fn deref(&self) -> &MetadataCore {
        &self.core
    }
}

impl MetadataNode {
    /// Opens the raft storage under `<data_dir>/raft/`, rebuilds the state
    /// machine, starts raft, its RPC listener, heartbeats and the controller.
    ///
    /// What a pristine node (no vote, log or snapshot) does is set by
    /// [`MetadataConfig::bootstrap`]: form a one-node cluster, form the
    /// static peer cluster, join a member, or wait to be added. A node that
    /// is the only voter (after bootstrap or on restart) waits until it
    /// leads, until its state machine has caught up with everything
    /// committed, and until it is registered with its current addresses; a
    /// pristine joiner waits until it is a voter and registered. So the
    /// metadata is complete when this returns. A restarted member of a
    /// multi-node cluster registers (and re-joins if needed) in the
    /// background, as that needs a majority that may still be starting.
    pub async fn start(config: MetadataConfig) -> Result<MetadataNode, ClusterError> {
        let opened = storage::open(&config.data_dir.join(RAFT_DIR)).await?;
        let listener = TcpListener::bind(config.raft_addr.as_str())
            .await
            .map_err(|source| ClusterError::Listen {
                addr: config.raft_addr.clone(),
                source,
            })?;
        let info = NodeInfo {
            raft_addr: announced_addr(&config.raft_addr, listener.local_addr().ok()),
            client_addr: config.client_addr.clone(),
            shard_count: config.shard_count,
        };
        validate_node_info(&info).map_err(|e| ClusterError::Config {
            reason: e.to_string(),
        })?;
        lease_renewal::warn_if_leases_cannot_outlast_elections(&config);
        let raft_config = raft_config(&config.raft)?;
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            network::TcpNetwork::new(config.node_id),
            opened.log,
            opened.state_machine,
        )
        .await
        .map_err(raft_error)?;
        let core = Arc::new(MetadataCore {
            node_id: config.node_id,
            info,
            raft: raft.clone(),
            metadata: opened.metadata,
            liveness: Liveness::new(
                config.node_id,
                Duration::from_millis(config.node_timeout_ms),
            ),
            membership_changes: tokio::sync::Mutex::new(()),
            status_source: OnceLock::new(),
            lease: watch::Sender::new(MetadataLease::NONE),
        });
        let handler_core = core.clone();
        let handler: network::ControlHandler = Arc::new(move |request| {
            let core = handler_core.clone();
            Box::pin(async move { core.handle_control(request).await })
        });
        let raft_server =
            tokio::spawn(network::serve_raft(listener, config.node_id, raft, handler));
        let mut node = MetadataNode {
            core,
            raft_server,
            background: Vec::new(),
        };
        match node
            .core
            .clone()
            .bootstrap(opened.pristine, config.bootstrap)
            .await
        {
            Ok(settle) => {
                node.background.extend(settle);
                node.background
                    .push(tokio::spawn(lease_renewal::keep_lease(node.core.clone())));
                node.background
                    .push(tokio::spawn(controller::run(node.core.clone())));
                Ok(node)
            }
            Err(e) => {
                if let Err(stop) = node.shutdown().await {
                    tracing::warn!(error = %stop, "shutdown after a failed start");
                }
                Err(e)
            }
        }
    }

    /// Stops the background tasks, raft (its tasks finish their current
    /// storage operation) and the RPC listener with its connections.
    pub async fn shutdown(self) -> Result<(), ClusterError> {
        let MetadataNode {
            core,
            raft_server,
            background,
        } = self;
        for task in &background {
            task.abort();
        }
        raft_server.abort();
        let stopped = core.raft.shutdown().await;
        // Aborted tasks report a cancellation, which is expected.
        let _ = raft_server.await;
        for task in background {
            let _ = task.await;
        }
        stopped.map_err(|e| ClusterError::Raft {
            reason: format!("shutdown: {e}"),
        })
    }
}

impl MetadataCore {
    /// Fails fast with `NotLeader` when metrics say another node leads, so a
    /// follower does not compute a placement from possibly stale metadata.
    fn check_leader(&self) -> Result<(), ClusterError> {
        if self.is_leader() {
            return Ok(());
        }
        Err(ClusterError::NotLeader {
            leader: self.leader(),
        })
    }

    fn with_leader_hint(&self, error: ClusterError) -> ClusterError {
        match error {
            ClusterError::NotLeader { .. } => ClusterError::NotLeader {
                leader: self.leader(),
            },
            other => other,
        }
    }

    /// All streams, by name, as applied on this node.
    pub fn list_streams(&self) -> Vec<StreamRecord> {
        self.metadata.borrow().streams().values().cloned().collect()
    }

    /// One stream, as applied on this node.
    pub fn describe(&self, name: &str) -> Option<StreamRecord> {
        self.metadata.borrow().stream(name).cloned()
    }

    /// The whole metadata as applied on this node (a cheap shared copy).
    pub fn metadata(&self) -> Arc<Metadata> {
        self.metadata.borrow().clone()
    }

    /// A receiver that changes after every applied metadata change (and
    /// after a snapshot from the leader is installed). The current value
    /// counts as seen: read it with `borrow()`, then await `changed()`.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Metadata>> {
        let mut receiver = self.metadata.clone();
        receiver.borrow_and_update();
        receiver
    }

    /// Whether this node is the raft leader now (by its own metrics).
    pub fn is_leader(&self) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics.state == ServerState::Leader && metrics.current_leader == Some(self.node_id)
    }

    /// The current leader's id and client address, if known (the address
    /// it registered, else the one in the raft membership).
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let leader = self.raft.metrics().borrow().current_leader?;
        if let Some(info) = self.metadata.borrow().nodes().get(&leader) {
            return Some((leader, info.client_addr.clone()));
        }
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let node = metrics.membership_config.membership().get_node(&leader)?;
        Some((leader, node.client_addr.clone()))
    }

    /// The current leader's id and raft address, if known.
    fn leader_target(&self) -> Option<(NodeId, String)> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader?;
        let node = metrics.membership_config.membership().get_node(&leader)?;
        Some((leader, node.raft_addr.clone()))
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The raft address this node announces (the bound port if configured
    /// with port 0).
    pub fn raft_addr(&self) -> &str {
        &self.info.raft_addr
    }

    /// The underlying raft handle (metrics, membership changes).
    pub fn raft(&self) -> &MetadataRaft {
        &self.raft
    }
}

fn unexpected_reply(op: &str, reply: ControlReply) -> ClusterError {
    match reply {
        ControlReply::Failed(e) => e.into(),
        other => ClusterError::Raft {
            reason: format!("unexpected answer to {op}: {other:?}"),
        },
    }
}

fn raft_config(tuning: &RaftTuning) -> Result<openraft::Config, ClusterError> {
    openraft::Config {
        cluster_name: "sluice-metadata".to_owned(),
        heartbeat_interval: tuning.heartbeat_interval_ms,
        election_timeout_min: tuning.election_timeout_min_ms,
        election_timeout_max: tuning.election_timeout_max_ms,
        max_payload_entries: RAFT_PAYLOAD_ENTRIES_MAX,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(tuning.snapshot_logs_since_last),
        snapshot_max_chunk_size: RAFT_SNAPSHOT_CHUNK_BYTES,
        install_snapshot_timeout: RAFT_INSTALL_SNAPSHOT_TIMEOUT_MS,
        max_in_snapshot_log_to_keep: tuning.snapshot_logs_to_keep,
        // A follower this far behind gets a snapshot instead of entries; it
        // must exceed the snapshot interval (openraft's advice).
        replication_lag_threshold: tuning.snapshot_logs_since_last + tuning.snapshot_logs_to_keep,
        ..openraft::Config::default()
    }
    .validate()
    .map_err(|e| ClusterError::Config {
        reason: e.to_string(),
    })
}

/// The configured address, with port 0 replaced by the bound port.
fn announced_addr(configured: &str, bound: Option<SocketAddr>) -> String {
    match (configured.rsplit_once(':'), bound) {
        (Some((host, "0")), Some(bound)) => format!("{host}:{}", bound.port()),
        _ => configured.to_owned(),
    }
}

fn raft_error<E: std::fmt::Display>(e: E) -> ClusterError {
    ClusterError::Raft {
        reason: e.to_string(),
    }
}

fn unexpected(command: &str, response: MetadataResponse) -> ClusterError {
    ClusterError::Raft {
        reason: format!("unexpected response to {command}: {response:?}"),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
