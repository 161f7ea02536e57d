//! Cluster metadata: nodes, streams, partition placement, leaders and ISRs,
//! replicated with openraft (storage-v2) on the tokio control core.
//!
//! Raft is used for metadata only; partition data is replicated by the data
//! shards (ISR, DESIGN.md §6). The pieces:
//!
//! - `types.rs`: the openraft type configuration and the metadata model
//!   ([`Metadata`], [`StreamRecord`], [`MetadataCommand`], ...).
//! - `apply.rs`: the deterministic state-machine transition,
//!   `validate.rs`: the rules it enforces, `placement.rs`: where a new
//!   stream's partitions go.
//! - `storage.rs`: durable log, vote and snapshot files under
//!   `<data_dir>/raft/` (layouts documented there and in
//!   `storage/log_file.rs`); `frame.rs`: the CRC'd framing they and the
//!   network share.
//! - `network.rs`: raft RPCs over TCP, client and server.
//! - this file: [`MetadataNode`], the handle the server uses.
//!
//! Invariants: the metadata changes only by applying committed commands, in
//! log order, identically on every node; a log write is reported flushed
//! only after fsync; a vote is durable before it is used; a stream id is
//! never reused.
//!
//! Reads ([`MetadataNode::list_streams`], [`MetadataNode::subscribe`], ...)
//! see this node's applied state, which may trail the leader. Writes go
//! through the raft leader; on a follower they fail with
//! [`ClusterError::NotLeader`] naming the leader (forwarding is the server
//! layer's job).

mod apply;
mod error;
mod frame;
pub mod limits;
pub mod network;
mod placement;
mod storage;
mod types;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{Raft, ServerState, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use self::error::ClusterError;
pub use self::placement::{stream_hash, Placement, PlacementError, RoundRobinPlacement};
pub use self::types::{
    ClusterNode, Metadata, MetadataCommand, MetadataRaft, MetadataResponse, NodeId, NodeInfo,
    PartitionAssignment, StreamId, StreamRecord, StreamSpec, TypeConfig,
};
pub use self::validate::{validate_spec, validate_stream_name, validate_subject, InvalidSpec};

use self::limits::{
    ELECTION_TIMEOUT_MAX_MS_DEFAULT, ELECTION_TIMEOUT_MIN_MS_DEFAULT,
    HEARTBEAT_INTERVAL_MS_DEFAULT, RAFT_INSTALL_SNAPSHOT_TIMEOUT_MS, RAFT_PAYLOAD_ENTRIES_MAX,
    RAFT_SNAPSHOT_CHUNK_BYTES, SNAPSHOT_LOGS_SINCE_LAST_DEFAULT, SNAPSHOT_LOGS_TO_KEEP_DEFAULT,
    STARTUP_LEADER_WAIT_MS,
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
}

/// What a pristine node (no vote, log or snapshot) does at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Bootstrap {
    /// Form a one-node cluster with itself as the only voter.
    #[default]
    IfPristine,
    /// Wait to be added by an existing cluster's leader (joining nodes).
    Never,
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
        }
    }
}

/// The result of a successful [`MetadataNode::create_stream`].
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// This node's member of the metadata cluster. Must be started (and used)
/// inside a tokio runtime: openraft spawns its tasks there.
pub struct MetadataNode {
    node_id: NodeId,
    /// What this node announces in the metadata.
    info: NodeInfo,
    raft: MetadataRaft,
    metadata: watch::Receiver<Arc<Metadata>>,
    raft_server: JoinHandle<()>,
}

impl MetadataNode {
    /// Opens the raft storage under `<data_dir>/raft/`, rebuilds the state
    /// machine, starts raft and its RPC listener.
    ///
    /// A pristine node (no vote, log or snapshot) bootstraps a one-node
    /// cluster with itself as the only voter, unless configured with
    /// [`Bootstrap::Never`]. A node that is the only voter
    /// (after bootstrap or on restart) waits until it leads, until its state
    /// machine has caught up with everything committed, and until it is
    /// registered with its current addresses, so the metadata is complete
    /// when this returns.
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
        validate::validate_node_info(&info).map_err(|e| ClusterError::Config {
            reason: e.to_string(),
        })?;
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
        let raft_server = tokio::spawn(network::serve_raft(listener, raft.clone()));
        let node = MetadataNode {
            node_id: config.node_id,
            info,
            raft,
            metadata: opened.metadata,
            raft_server,
        };
        match node.bootstrap(opened.pristine, config.bootstrap).await {
            Ok(()) => Ok(node),
            Err(e) => {
                if let Err(stop) = node.shutdown().await {
                    tracing::warn!(error = %stop, "shutdown after a failed start");
                }
                Err(e)
            }
        }
    }

    /// Forms a one-node cluster if asked to and pristine; then, if this node
    /// is the only voter, settles it as a registered, caught-up leader.
    async fn bootstrap(&self, pristine: bool, bootstrap: Bootstrap) -> Result<(), ClusterError> {
        if pristine {
            if bootstrap == Bootstrap::Never {
                tracing::info!(
                    node_id = self.node_id,
                    "pristine node waiting to be added to a cluster"
                );
                return Ok(());
            }
            self.initialize_alone().await?;
        }
        let metrics = self
            .wait_for(
                |m| m.membership_config.log_id().is_some(),
                "the raft membership to load",
            )
            .await?;
        let voters: Vec<NodeId> = metrics.membership_config.voter_ids().collect();
        if voters != [self.node_id] {
            // A member of a multi-node cluster: the leader drives it; joining
            // and registration through the leader are the server's job.
            return Ok(());
        }
        self.wait_for(
            |m| m.state == ServerState::Leader && m.current_leader == Some(m.id),
            "this single-voter node to become leader",
        )
        .await?;
        // Applies every committed entry before the first read is served.
        self.raft
            .ensure_linearizable()
            .await
            .map_err(|e| ClusterError::Raft {
                reason: format!("catching up the state machine: {e}"),
            })?;
        self.register_self().await
    }

    /// Makes this node the only voter of a new cluster.
    async fn initialize_alone(&self) -> Result<(), ClusterError> {
        let me = ClusterNode {
            raft_addr: self.info.raft_addr.clone(),
            client_addr: self.info.client_addr.clone(),
        };
        match self
            .raft
            .initialize(BTreeMap::from([(self.node_id, me)]))
            .await
        {
            Ok(()) => {
                tracing::info!(
                    node_id = self.node_id,
                    "bootstrapped a one-node metadata cluster"
                );
                Ok(())
            }
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(raft_error(e)),
        }
    }

    /// Waits up to [`STARTUP_LEADER_WAIT_MS`] for raft metrics to satisfy
    /// `condition`.
    async fn wait_for(
        &self,
        condition: impl Fn(&openraft::RaftMetrics<NodeId, ClusterNode>) -> bool + Send,
        what: &'static str,
    ) -> Result<openraft::RaftMetrics<NodeId, ClusterNode>, ClusterError> {
        self.raft
            .wait(Some(Duration::from_millis(STARTUP_LEADER_WAIT_MS)))
            .metrics(condition, what)
            .await
            .map_err(|_| ClusterError::Timeout {
                what,
                waited_ms: STARTUP_LEADER_WAIT_MS,
            })
    }

    /// Registers (or updates) this node in the metadata if it is missing
    /// or outdated.
    async fn register_self(&self) -> Result<(), ClusterError> {
        if self.metadata.borrow().nodes().get(&self.node_id) == Some(&self.info) {
            return Ok(());
        }
        let command = MetadataCommand::RegisterNode {
            node_id: self.node_id,
            info: self.info.clone(),
        };
        match self.propose(command).await? {
            MetadataResponse::Ok => Ok(()),
            MetadataResponse::Invalid { reason } => Err(ClusterError::Config { reason }),
            other => Err(unexpected("RegisterNode", other)),
        }
    }

    /// Creates a stream with [`RoundRobinPlacement`] starting at this node.
    pub async fn create_stream(&self, spec: StreamSpec) -> Result<StreamCreation, ClusterError> {
        self.create_stream_with(spec, &RoundRobinPlacement::starting_at(self.node_id))
            .await
    }

    /// Creates a stream, placing its partitions with `placement`.
    /// Idempotent: the same name with the same spec answers
    /// [`StreamCreation::Exists`] with the existing record (same id); the
    /// same name with a different subject or settings is a
    /// [`ClusterError::Conflict`].
    pub async fn create_stream_with(
        &self,
        spec: StreamSpec,
        placement: &impl Placement,
    ) -> Result<StreamCreation, ClusterError> {
        validate_spec(&spec)?;
        self.check_leader()?;
        let metadata = self.metadata();
        let assignments = match metadata.stream(&spec.name) {
            // The state machine ignores the placement of an identical
            // re-create; reuse the existing one rather than failing
            // placement if the cluster shrank since.
            Some(existing) if existing.spec == spec => existing.partitions.clone(),
            _ => placement.place(&spec, &metadata)?,
        };
        let name = spec.name.clone();
        let command = MetadataCommand::CreateStream {
            spec,
            placement: assignments,
            created_at_ms: now_ms(),
        };
        match self.propose(command).await? {
            MetadataResponse::StreamCreated(record) => Ok(StreamCreation::Created(record)),
            MetadataResponse::StreamExists(record) => Ok(StreamCreation::Exists(record)),
            MetadataResponse::Conflict { reason } => Err(ClusterError::Conflict { name, reason }),
            MetadataResponse::Invalid { reason } => Err(ClusterError::Rejected { reason }),
            other => Err(unexpected("CreateStream", other)),
        }
    }

    /// Deletes a stream; returns the record it had.
    pub async fn delete_stream(&self, name: &str) -> Result<StreamRecord, ClusterError> {
        self.check_leader()?;
        let command = MetadataCommand::DeleteStream {
            name: name.to_owned(),
        };
        match self.propose(command).await? {
            MetadataResponse::StreamDeleted(record) => Ok(record),
            MetadataResponse::NotFound => Err(ClusterError::NotFound {
                name: name.to_owned(),
            }),
            other => Err(unexpected("DeleteStream", other)),
        }
    }

    /// Proposes `command` through the raft leader wherever it is, and returns
    /// the state machine's response once it is committed and applied there.
    /// Every server-side metadata change goes through here (forwarding from
    /// a follower to the leader lives behind it).
    pub async fn write(&self, command: MetadataCommand) -> Result<MetadataResponse, ClusterError> {
        self.propose(command).await
    }

    /// Proposes any command through raft and returns the state machine's
    /// response once it is committed and applied on this (leader) node.
    pub async fn propose(
        &self,
        command: MetadataCommand,
    ) -> Result<MetadataResponse, ClusterError> {
        match self.raft.client_write(command).await {
            Ok(written) => Ok(written.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                Err(ClusterError::NotLeader {
                    leader: forward
                        .leader_id
                        .zip(forward.leader_node.map(|n| n.client_addr)),
                })
            }
            Err(e) => Err(raft_error(e)),
        }
    }

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

    /// The current leader's id and client address, if known.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader?;
        let node = metrics.membership_config.membership().get_node(&leader)?;
        Some((leader, node.client_addr.clone()))
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

    /// Stops raft (its tasks finish their current storage operation) and the
    /// RPC listener with its connections.
    pub async fn shutdown(self) -> Result<(), ClusterError> {
        let MetadataNode {
            raft, raft_server, ..
        } = self;
        raft_server.abort();
        let stopped = raft.shutdown().await;
        // An aborted server task reports a cancellation, which is expected.
        let _ = raft_server.await;
        stopped.map_err(|e| ClusterError::Raft {
            reason: format!("shutdown: {e}"),
        })
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
