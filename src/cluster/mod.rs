//! Cluster metadata: nodes, streams, partition placement, leaders and ISRs,
//! replicated with openraft (storage-v2) on the tokio control core.
//!
//! Raft is used for metadata only; partition data is replicated by the data
//! shards (ISR, docs/design.md §10). The metadata model it replicates
//! ([`Metadata`], [`StreamRecord`], [`MetadataCommand`], the rules a valid
//! spec keeps) is plain data in `crate::model`; this module is the
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
//! - this file: [`MetadataNode`], the handle the server uses.
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
mod frame;
pub mod lease;
pub mod limits;
pub mod liveness;
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

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use openraft::error::{CheckIsLeaderError, ClientWriteError, InitializeError, RaftError};
use openraft::{ChangeMembers, Raft, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use self::control_rpc::{LocalPartitionStatus, OpenFailure, ReplicaLag};
pub use self::error::ClusterError;
pub use self::lease::MetadataLease;
pub use self::placement::{stream_hash, Placement, PlacementError, RoundRobinPlacement};
pub use self::types::{ClusterNode, MetadataRaft, TypeConfig};

use self::control_rpc::{ControlOp, ControlReply, ControlRequest, RemoteError};
use self::limits::{
    APPLY_WAIT_MS, ELECTION_TIMEOUT_MAX_MS_DEFAULT, ELECTION_TIMEOUT_MIN_MS_DEFAULT,
    FORWARD_DEADLINE_MS, FORWARD_RETRY_BACKOFF_MS, FORWARD_RPC_TIMEOUT_MS,
    HEARTBEAT_INTERVAL_MS_DEFAULT, JOIN_TIMEOUT_MS, NODE_TIMEOUT_MS_DEFAULT, PROPOSE_TIMEOUT_MS,
    RAFT_INSTALL_SNAPSHOT_TIMEOUT_MS, RAFT_PAYLOAD_ENTRIES_MAX, RAFT_SNAPSHOT_CHUNK_BYTES,
    SETTLE_LOG_EVERY, SNAPSHOT_LOGS_SINCE_LAST_DEFAULT, SNAPSHOT_LOGS_TO_KEEP_DEFAULT,
    STARTUP_LEADER_WAIT_MS,
};
use self::liveness::Liveness;
use self::network::PeerClient;
use crate::model::{
    validate_node_info, validate_spec, validate_stream_name, Metadata, MetadataCommand,
    MetadataResponse, NodeId, NodeInfo, StreamRecord, StreamSpec, INTERNAL_STREAM_NAMES,
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
    /// every successful confirmation round ([`keep_lease`]).
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
        warn_if_leases_cannot_outlast_elections(&config);
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
                    .push(tokio::spawn(keep_lease(node.core.clone())));
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
    /// Forms or joins a cluster as configured when pristine; then, if this
    /// node is the only voter, settles it as a registered, caught-up
    /// leader. Returns the background task that registers a restarted
    /// member of a multi-node cluster, if one is needed.
    async fn bootstrap(
        self: Arc<Self>,
        pristine: bool,
        bootstrap: Bootstrap,
    ) -> Result<Option<JoinHandle<()>>, ClusterError> {
        if pristine {
            match &bootstrap {
                Bootstrap::Never => {
                    tracing::info!(
                        node_id = self.node_id.get(),
                        "pristine node waiting to be added to a cluster"
                    );
                    return Ok(None);
                }
                Bootstrap::IfPristine => self.initialize_alone().await?,
                Bootstrap::StaticPeers(peers) => self.initialize_peers(peers).await?,
                Bootstrap::Join(addr) => {
                    self.join_via(addr).await?;
                    self.register_self().await?;
                    return Ok(None);
                }
            }
        }
        let metrics = self
            .wait_for(
                |m| m.membership_config.log_id().is_some(),
                "the raft membership to load",
            )
            .await?;
        let voters: Vec<NodeId> = metrics.membership_config.voter_ids().collect();
        if voters != [self.node_id] {
            // A member of a multi-node cluster: registering needs the
            // leader, which needs a majority that may still be starting.
            let join = match bootstrap {
                Bootstrap::Join(addr) if !voters.contains(&self.node_id) => Some(addr),
                _ => None,
            };
            return Ok(Some(tokio::spawn(self.clone().settle_member(join))));
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
        self.register_self().await?;
        Ok(None)
    }

    /// Makes this node the only voter of a new cluster.
    async fn initialize_alone(&self) -> Result<(), ClusterError> {
        let me = ClusterNode {
            raft_addr: self.info.raft_addr.clone(),
            client_addr: self.info.client_addr.clone(),
        };
        self.initialize(BTreeMap::from([(self.node_id, me)])).await
    }

    /// Forms the cluster of a static peer list. Every peer does the same
    /// with the same list (openraft allows several nodes to initialize with
    /// an identical membership), so the client addresses, which a peer does
    /// not know of the others, are left empty: they come from registration.
    async fn initialize_peers(&self, peers: &BTreeMap<NodeId, String>) -> Result<(), ClusterError> {
        match peers.get(&self.node_id) {
            Some(addr) if *addr == self.info.raft_addr => {}
            Some(addr) => {
                return Err(ClusterError::Config {
                    reason: format!(
                        "peers lists node {} at {addr}, but this node's raft address is {}; make them agree",
                        self.node_id, self.info.raft_addr
                    ),
                })
            }
            None => {
                return Err(ClusterError::Config {
                    reason: format!(
                        "peers does not list this node ({}); every node must start with the same full list",
                        self.node_id
                    ),
                })
            }
        }
        let members = peers
            .iter()
            .map(|(id, addr)| {
                let node = ClusterNode {
                    raft_addr: addr.clone(),
                    client_addr: String::new(),
                };
                (*id, node)
            })
            .collect();
        self.initialize(members).await
    }

    async fn initialize(&self, members: BTreeMap<NodeId, ClusterNode>) -> Result<(), ClusterError> {
        let count = members.len();
        match self.raft.initialize(members).await {
            Ok(()) => {
                tracing::info!(
                    node_id = self.node_id.get(),
                    voters = count,
                    "bootstrapped the metadata cluster"
                );
                Ok(())
            }
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(raft_error(e)),
        }
    }

    /// Background settling of a restarted member: re-joins if it is not a
    /// voter yet (a join interrupted by a crash), then registers its current
    /// addresses; retries until it succeeds.
    async fn settle_member(self: Arc<Self>, join: Option<String>) {
        let mut attempt: u32 = 0;
        loop {
            let joined = match &join {
                Some(addr) => self.join_via(addr).await,
                None => Ok(()),
            };
            match joined {
                Ok(()) => match self.register_self().await {
                    Ok(()) => return,
                    Err(e) => {
                        if attempt.is_multiple_of(SETTLE_LOG_EVERY) {
                            tracing::warn!(node_id = self.node_id.get(), error = %e, "cannot register with the metadata leader yet; retrying");
                        }
                    }
                },
                Err(ClusterError::JoinRefused { reason }) => {
                    tracing::error!(node_id = self.node_id.get(), %reason, "join refused; this node stays out of the cluster");
                    return;
                }
                Err(e) => {
                    if attempt.is_multiple_of(SETTLE_LOG_EVERY) {
                        tracing::warn!(node_id = self.node_id.get(), error = %e, "cannot join yet; retrying");
                    }
                }
            }
            attempt = attempt.wrapping_add(1);
            tokio::time::sleep(Duration::from_millis(FORWARD_RETRY_BACKOFF_MS * 5)).await;
        }
    }

    /// Asks the member at `addr` (its raft address) to add this node;
    /// retries while it is unreachable or busy, up to [`JOIN_TIMEOUT_MS`].
    async fn join_via(&self, addr: &str) -> Result<(), ClusterError> {
        let request = ControlRequest {
            forwarded: false,
            op: ControlOp::Join {
                node_id: self.node_id,
                node: ClusterNode {
                    raft_addr: self.info.raft_addr.clone(),
                    client_addr: self.info.client_addr.clone(),
                },
            },
        };
        let deadline = Instant::now() + Duration::from_millis(JOIN_TIMEOUT_MS);
        let mut client = PeerClient::new(self.node_id, None, addr);
        loop {
            let failure = match client
                .control(&request, Duration::from_millis(JOIN_TIMEOUT_MS))
                .await
            {
                Ok(ControlReply::Joined) => {
                    tracing::info!(
                        node_id = self.node_id.get(),
                        via = addr,
                        "joined the metadata cluster as a voter"
                    );
                    return Ok(());
                }
                Ok(ControlReply::Failed(RemoteError::Refused { reason })) => {
                    return Err(ClusterError::JoinRefused { reason })
                }
                Ok(ControlReply::Failed(e)) => ClusterError::from(e),
                Ok(other) => ClusterError::Unavailable {
                    reason: format!("unexpected answer to a join: {other:?}"),
                },
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(match failure {
                    ClusterError::Unreachable { addr, reason } => ClusterError::Unreachable {
                        addr: format!("{addr} (--join)"),
                        reason,
                    },
                    other => other,
                });
            }
            tracing::info!(via = addr, error = %failure, "join not done yet; retrying");
            tokio::time::sleep(Duration::from_millis(FORWARD_RETRY_BACKOFF_MS * 5)).await;
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
    /// or outdated, through the leader wherever it is.
    async fn register_self(&self) -> Result<(), ClusterError> {
        if self.metadata.borrow().nodes().get(&self.node_id) == Some(&self.info) {
            return Ok(());
        }
        let command = MetadataCommand::RegisterNode {
            node_id: self.node_id,
            info: self.info.clone(),
        };
        match self.write(command).await? {
            MetadataResponse::Ok => Ok(()),
            MetadataResponse::Invalid { reason } => Err(ClusterError::Config { reason }),
            other => Err(unexpected("RegisterNode", other)),
        }
    }

    /// Creates a user stream wherever the metadata leader is: placement
    /// ([`RoundRobinPlacement`] starting at this node, over the live nodes)
    /// is computed on the leader. Returns once this node has applied it.
    /// Names reserved for internal streams (starting with `_`) are refused
    /// here; the server creates those with [`Self::create_internal_stream`].
    /// Idempotent: the same name with the same spec answers
    /// [`StreamCreation::Exists`] with the existing record (same id); the
    /// same name with a different subject or settings is a
    /// [`ClusterError::Conflict`].
    pub async fn create_stream(&self, spec: StreamSpec) -> Result<StreamCreation, ClusterError> {
        validate_stream_name(&spec.name)?;
        self.create_any_stream(spec).await
    }

    /// Creates one of the server's internal streams
    /// (`validate::INTERNAL_STREAM_NAMES`), placed like any stream.
    pub async fn create_internal_stream(
        &self,
        spec: StreamSpec,
    ) -> Result<StreamCreation, ClusterError> {
        debug_assert!(INTERNAL_STREAM_NAMES.contains(&spec.name.as_str()));
        self.create_any_stream(spec).await
    }

    async fn create_any_stream(&self, spec: StreamSpec) -> Result<StreamCreation, ClusterError> {
        validate_spec(&spec)?;
        let op = ControlOp::CreateStream {
            spec,
            origin: self.node_id,
        };
        match self.execute(op).await? {
            ControlReply::Created { creation, index } => {
                self.wait_applied(index).await;
                Ok(creation)
            }
            other => Err(unexpected_reply("CreateStream", other)),
        }
    }

    /// Creates a stream on this node, which must lead, placing its
    /// partitions with `placement`.
    pub async fn create_stream_with(
        &self,
        spec: StreamSpec,
        placement: &impl Placement,
    ) -> Result<StreamCreation, ClusterError> {
        self.create_stream_here(spec, placement)
            .await
            .map(|(creation, _)| creation)
    }

    async fn create_stream_here(
        &self,
        spec: StreamSpec,
        placement: &impl Placement,
    ) -> Result<(StreamCreation, u64), ClusterError> {
        validate_spec(&spec)?;
        self.check_leader()?;
        let metadata = self.metadata();
        let assignments = match metadata.stream(&spec.name) {
            // The state machine ignores the placement of an identical
            // re-create; reuse the existing one rather than failing
            // placement if the cluster shrank since.
            Some(existing) if existing.spec == spec => existing.partitions.clone(),
            _ => placement.place(&spec, &self.live_metadata(&metadata))?,
        };
        let name = spec.name.clone();
        let command = MetadataCommand::CreateStream {
            spec,
            placement: assignments,
            created_at_ms: now_ms(),
        };
        let (response, index) = self.propose_indexed(command).await?;
        let creation = match response {
            MetadataResponse::StreamCreated(record) => StreamCreation::Created(record),
            MetadataResponse::StreamExists(record) => StreamCreation::Exists(record),
            MetadataResponse::Conflict { reason } => {
                return Err(ClusterError::Conflict { name, reason })
            }
            MetadataResponse::Invalid { reason } => return Err(ClusterError::Rejected { reason }),
            other => return Err(unexpected("CreateStream", other)),
        };
        Ok((creation, index))
    }

    /// The metadata without the nodes the leader considers dead: new
    /// partitions are not placed on them.
    fn live_metadata(&self, metadata: &Metadata) -> Metadata {
        let now = self.liveness_clock();
        let mut live = metadata.clone();
        live.nodes.retain(|id, _| self.liveness.is_alive(*id, now));
        live
    }

    /// The instant liveness is judged at, after starting a new grace period
    /// if this node leads in a term it has not tracked yet.
    fn liveness_clock(&self) -> Instant {
        let now = Instant::now();
        let term = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            (metrics.state == ServerState::Leader).then_some(metrics.current_term)
        };
        if let Some(term) = term {
            self.liveness.leading_in(term, now);
        }
        now
    }

    /// Deletes a stream wherever the leader is; returns the record it had
    /// once this node has applied the deletion.
    pub async fn delete_stream(&self, name: &str) -> Result<StreamRecord, ClusterError> {
        match self
            .execute(ControlOp::DeleteStream(name.to_owned()))
            .await?
        {
            ControlReply::Deleted { record, index } => {
                self.wait_applied(index).await;
                Ok(record)
            }
            other => Err(unexpected_reply("DeleteStream", other)),
        }
    }

    async fn delete_stream_here(&self, name: &str) -> Result<(StreamRecord, u64), ClusterError> {
        self.check_leader()?;
        let command = MetadataCommand::DeleteStream {
            name: name.to_owned(),
        };
        match self.propose_indexed(command).await? {
            (MetadataResponse::StreamDeleted(record), index) => Ok((record, index)),
            (MetadataResponse::NotFound, _) => Err(ClusterError::NotFound {
                name: name.to_owned(),
            }),
            (other, _) => Err(unexpected("DeleteStream", other)),
        }
    }

    /// Proposes `command` through the raft leader wherever it is (forwarded
    /// over the raft transport, retried across elections for up to
    /// [`FORWARD_DEADLINE_MS`]), and returns the state machine's response
    /// once it is committed and applied there and here. Every server-side
    /// metadata change goes through here.
    pub async fn write(&self, command: MetadataCommand) -> Result<MetadataResponse, ClusterError> {
        match self.execute(ControlOp::Write(command)).await? {
            ControlReply::Written { response, index } => {
                self.wait_applied(index).await;
                Ok(response)
            }
            other => Err(unexpected_reply("Write", other)),
        }
    }

    /// Proposes any command through raft on this node, which must lead, and
    /// returns the state machine's response once it is committed and
    /// applied here.
    pub async fn propose(
        &self,
        command: MetadataCommand,
    ) -> Result<MetadataResponse, ClusterError> {
        self.propose_indexed(command).await.map(|(r, _)| r)
    }

    async fn propose_indexed(
        &self,
        command: MetadataCommand,
    ) -> Result<(MetadataResponse, u64), ClusterError> {
        let written = tokio::time::timeout(
            Duration::from_millis(PROPOSE_TIMEOUT_MS),
            self.raft.client_write(command),
        )
        .await
        .map_err(|_| ClusterError::Unavailable {
            reason: format!(
                "the change was not committed within {PROPOSE_TIMEOUT_MS} ms; is a majority of the voters up?"
            ),
        })?;
        match written {
            Ok(written) => Ok((written.data, written.log_id.index)),
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

    /// Runs `op` on the leader: here if this node leads, else forwarded to
    /// it. Retries while there is no leader or it moved, with a short
    /// backoff, for up to [`FORWARD_DEADLINE_MS`].
    async fn execute(&self, op: ControlOp) -> Result<ControlReply, ClusterError> {
        let deadline = Instant::now() + Duration::from_millis(FORWARD_DEADLINE_MS);
        let mut client: Option<PeerClient> = None;
        loop {
            let attempt = match self.leader_target() {
                Some((leader, _)) if leader == self.node_id => self.execute_here(op.clone()).await,
                Some((leader, addr)) => {
                    let peer = match &mut client {
                        Some(c) if c.addr() == addr => c,
                        slot => slot.insert(PeerClient::new(self.node_id, Some(leader), addr)),
                    };
                    let request = ControlRequest {
                        forwarded: true,
                        op: op.clone(),
                    };
                    match peer
                        .control(&request, Duration::from_millis(FORWARD_RPC_TIMEOUT_MS))
                        .await
                    {
                        Ok(ControlReply::Failed(e)) => Err(ClusterError::from(e)),
                        other => other,
                    }
                }
                None => Err(ClusterError::NotLeader { leader: None }),
            };
            let retry = matches!(
                &attempt,
                Err(ClusterError::NotLeader { .. })
                    | Err(ClusterError::Unreachable { .. })
                    | Err(ClusterError::Unavailable { .. })
            );
            if !retry {
                return attempt.map_err(|e| self.with_leader_hint(e));
            }
            if Instant::now() >= deadline {
                let reason = match attempt {
                    Err(e) => e.to_string(),
                    Ok(_) => String::new(),
                };
                return Err(ClusterError::Unavailable {
                    reason: format!(
                        "no metadata leader took the change within {FORWARD_DEADLINE_MS} ms (last: {reason}); is a majority of the nodes up?"
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(FORWARD_RETRY_BACKOFF_MS)).await;
        }
    }

    /// `op` on this node, as the leader (it answers `NotLeader` if not).
    async fn execute_here(&self, op: ControlOp) -> Result<ControlReply, ClusterError> {
        match op {
            ControlOp::Write(command) => {
                self.check_leader()?;
                let (response, index) = self.propose_indexed(command).await?;
                Ok(ControlReply::Written { response, index })
            }
            ControlOp::CreateStream { spec, origin } => {
                let placement = RoundRobinPlacement::starting_at(origin);
                let (creation, index) = self.create_stream_here(spec, &placement).await?;
                Ok(ControlReply::Created { creation, index })
            }
            ControlOp::DeleteStream(name) => {
                let (record, index) = self.delete_stream_here(&name).await?;
                Ok(ControlReply::Deleted { record, index })
            }
            ControlOp::Join { node_id, node } => {
                self.add_member(node_id, node).await?;
                Ok(ControlReply::Joined)
            }
            ControlOp::Liveness => {
                self.check_leader()?;
                let metadata = self.metadata();
                let now = self.liveness_clock();
                Ok(ControlReply::Liveness(
                    self.liveness
                        .snapshot(metadata.nodes().keys().copied(), now),
                ))
            }
            ControlOp::Heartbeat { node_id } => {
                self.check_leader()?;
                let now = self.liveness_clock();
                // Heard first: the sender's lease counts from before it sent
                // this, so the liveness entry must not be older than that.
                self.liveness.heard_from(node_id, now);
                let read_index = self.read_index().await?;
                Ok(ControlReply::Confirmed { read_index })
            }
            ControlOp::LocalStatus => Ok(ControlReply::LocalStatus(self.local_status().await)),
        }
    }

    /// Answers a control request from another node. A request that needs
    /// the leader and reaches a follower is forwarded once (a join arriving
    /// at the `--join` member, typically); a request already forwarded is
    /// answered `NotLeader` and its sender retries.
    async fn handle_control(&self, request: ControlRequest) -> ControlReply {
        let needs_leader = !matches!(request.op, ControlOp::LocalStatus);
        let result = if needs_leader && !self.is_leader() {
            if request.forwarded || matches!(request.op, ControlOp::Heartbeat { .. }) {
                Err(ClusterError::NotLeader {
                    leader: self.leader(),
                })
            } else {
                self.execute(request.op).await
            }
        } else {
            self.execute_here(request.op).await
        };
        result.unwrap_or_else(|e| ControlReply::Failed(e.into()))
    }

    /// Adds `node_id` as a voter: as a learner first, waiting until it has
    /// caught up, then promoted. Idempotent; refuses a node id or raft
    /// address another node already uses.
    async fn add_member(&self, node_id: NodeId, node: ClusterNode) -> Result<(), ClusterError> {
        let _one_at_a_time = self.membership_changes.lock().await;
        self.check_leader()?;
        let metadata = self.metadata();
        if let Some(info) = metadata.nodes().get(&node_id) {
            if info.raft_addr != node.raft_addr {
                return Err(ClusterError::JoinRefused {
                    reason: format!(
                        "node id {node_id} is already used by the node at raft address {}; give the new node another --node-id (or restart the old node with its own address)",
                        info.raft_addr
                    ),
                });
            }
        }
        if let Some((other, _)) = metadata
            .nodes()
            .iter()
            .find(|(id, info)| **id != node_id && info.raft_addr == node.raft_addr)
        {
            return Err(ClusterError::JoinRefused {
                reason: format!(
                    "raft address {} is already used by node {other}; a node keeps its --node-id across restarts",
                    node.raft_addr
                ),
            });
        }
        let membership = self.raft.metrics().borrow().membership_config.clone();
        if let Some(existing) = membership.membership().get_node(&node_id) {
            if existing.raft_addr != node.raft_addr {
                return Err(ClusterError::JoinRefused {
                    reason: format!(
                        "node id {node_id} is already a member at raft address {}; give the new node another --node-id",
                        existing.raft_addr
                    ),
                });
            }
        }
        if membership.voter_ids().any(|id| id == node_id) {
            return Ok(());
        }
        tracing::info!(node_id = node_id.get(), raft = %node.raft_addr, "adding a node: learner first");
        tokio::time::timeout(
            Duration::from_millis(JOIN_TIMEOUT_MS),
            self.raft.add_learner(node_id, node, true),
        )
        .await
        .map_err(|_| ClusterError::Unavailable {
            reason: format!("node {node_id} did not catch up within {JOIN_TIMEOUT_MS} ms"),
        })?
        .map_err(raft_error)?;
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([node_id])), false)
            .await
            .map_err(raft_error)?;
        tracing::info!(node_id = node_id.get(), "node is a voter");
        Ok(())
    }

    /// Waits (bounded) until this node has applied log index `index`, so a
    /// change made through the leader is visible here when it returns.
    async fn wait_applied(&self, index: u64) {
        let waited = self
            .raft
            .wait(Some(Duration::from_millis(APPLY_WAIT_MS)))
            .applied_index_at_least(Some(index), "the change to be applied here")
            .await;
        if let Err(e) = waited {
            tracing::warn!(index, error = %e, "a committed change is not applied here yet");
        }
    }

    /// The metadata leader's read index: confirms with a quorum that this
    /// node still leads (openraft's read-index round, started after this
    /// call) and returns its commit index, at least its own term's first
    /// entry. Bounded by the lease duration (a slower answer grants
    /// nothing).
    async fn read_index(&self) -> Result<u64, ClusterError> {
        let budget = lease::lease_duration(self.liveness.timeout());
        let read = tokio::time::timeout(budget, self.raft.get_read_log_id())
            .await
            .map_err(|_| ClusterError::Unavailable {
                reason: format!(
                    "a majority of the voters did not confirm the metadata leader within {budget:?}"
                ),
            })?;
        match read {
            Ok((read_log_id, _applied)) => Ok(read_log_id.map_or(0, |id| id.index)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward))) => {
                Err(ClusterError::NotLeader {
                    leader: forward
                        .leader_id
                        .zip(forward.leader_node.map(|n| n.client_addr)),
                })
            }
            Err(e) => Err(raft_error(e)),
        }
    }

    /// One confirmation round of the metadata lease (see `lease.rs`): asks
    /// the metadata leader (or this node, when it leads) for its read
    /// index, waits until this node has applied it, and returns the lease
    /// that grants, counted from before the question was asked.
    async fn confirm_round(
        &self,
        client: &mut Option<PeerClient>,
    ) -> Result<MetadataLease, ClusterError> {
        let sent_at = Instant::now();
        let lease = MetadataLease::granted(sent_at, self.liveness.timeout());
        let budget = lease::lease_duration(self.liveness.timeout());
        let (leader, addr) = self
            .leader_target()
            .ok_or(ClusterError::NotLeader { leader: None })?;
        let read_index = if leader == self.node_id {
            self.read_index().await?
        } else {
            let peer = match client {
                Some(c) if c.addr() == addr => c,
                slot => slot.insert(PeerClient::new(self.node_id, Some(leader), addr)),
            };
            let request = ControlRequest {
                forwarded: true,
                op: ControlOp::Heartbeat {
                    node_id: self.node_id,
                },
            };
            match peer.control(&request, budget).await? {
                ControlReply::Confirmed { read_index } => read_index,
                other => return Err(unexpected_reply("Heartbeat", other)),
            }
        };
        let remaining = lease.valid_until().map_or(Duration::ZERO, |until| {
            until.saturating_duration_since(Instant::now())
        });
        self.raft
            .wait(Some(remaining))
            .applied_index_at_least(Some(read_index), "the metadata leader's read index")
            .await
            .map_err(|e| ClusterError::Unavailable {
                reason: format!(
                    "metadata not caught up with the leader's read index {read_index}: {e}"
                ),
            })?;
        Ok(lease)
    }

    /// This node's metadata lease now (see [`MetadataLease`]).
    pub fn lease(&self) -> MetadataLease {
        *self.lease.borrow()
    }

    /// A receiver that changes whenever the lease is renewed.
    pub fn subscribe_lease(&self) -> watch::Receiver<MetadataLease> {
        self.lease.subscribe()
    }

    /// Waits until this node holds a metadata lease, for at most `timeout`;
    /// whether it does.
    pub async fn wait_for_lease(&self, timeout: Duration) -> bool {
        let mut lease = self.lease.subscribe();
        let held = async move {
            lease
                .wait_for(|l| l.is_valid_at(Instant::now()))
                .await
                .is_ok()
        };
        matches!(tokio::time::timeout(timeout, held).await, Ok(true))
    }

    /// Confirms that this node leads the metadata and has applied
    /// everything committed before this call (a linearizable read), within
    /// `timeout`. The controller plans only from metadata confirmed so: a
    /// new leader may not have applied its predecessor's last entries.
    pub async fn confirm_current_as_leader(&self, timeout: Duration) -> Result<(), ClusterError> {
        let confirmed = tokio::time::timeout(timeout, self.raft.ensure_linearizable())
            .await
            .map_err(|_| ClusterError::Unavailable {
                reason: format!("metadata leadership not confirmed within {timeout:?}"),
            })?;
        confirmed.map(|_| ()).map_err(raft_error)
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

    fn with_leader_hint(&self, error: ClusterError) -> ClusterError {
        match error {
            ClusterError::NotLeader { .. } => ClusterError::NotLeader {
                leader: self.leader(),
            },
            other => other,
        }
    }

    /// Installs where [`ControlOp::LocalStatus`] gets this node's
    /// partition statuses (the server, once its shards run). Only the first
    /// call has an effect.
    pub fn set_status_source(&self, source: StatusSource) {
        let _ = self.status_source.set(source);
    }

    async fn local_status(&self) -> Vec<LocalPartitionStatus> {
        match self.status_source.get() {
            Some(source) => source().await,
            None => Vec::new(),
        }
    }

    /// Which registered nodes are alive, as the metadata leader sees it
    /// (asked of it when this node does not lead).
    pub async fn liveness(&self) -> Result<BTreeMap<NodeId, bool>, ClusterError> {
        match self.execute(ControlOp::Liveness).await? {
            ControlReply::Liveness(alive) => Ok(alive),
            other => Err(unexpected_reply("Liveness", other)),
        }
    }

    /// The partition statuses node `node` reports (asked over the raft
    /// transport; this node's own directly), within `timeout`.
    pub async fn node_status(
        &self,
        node: NodeId,
        timeout: Duration,
    ) -> Result<Vec<LocalPartitionStatus>, ClusterError> {
        if node == self.node_id {
            return Ok(self.local_status().await);
        }
        let addr = self
            .metadata()
            .nodes()
            .get(&node)
            .map(|info| info.raft_addr.clone())
            .ok_or(ClusterError::Unavailable {
                reason: format!("node {node} is not registered"),
            })?;
        let request = ControlRequest {
            forwarded: true,
            op: ControlOp::LocalStatus,
        };
        match PeerClient::new(self.node_id, Some(node), addr)
            .control(&request, timeout)
            .await?
        {
            ControlReply::LocalStatus(statuses) => Ok(statuses),
            other => Err(unexpected_reply("LocalStatus", other)),
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

/// Every heartbeat interval, tells the metadata leader that this node is
/// up and renews this node's metadata lease with the leader's read index
/// (one confirmation round, see `lease.rs`). The first round runs at once,
/// so a starting node gets its lease as soon as a leader answers. Runs
/// until the node shuts down.
async fn keep_lease(core: Arc<MetadataCore>) {
    let interval = liveness::heartbeat_interval(core.liveness.timeout());
    let mut client: Option<PeerClient> = None;
    loop {
        match core.confirm_round(&mut client).await {
            Ok(lease) => {
                core.lease.send_if_modified(|current| {
                    let renewed = current.max(lease);
                    let changed = renewed != *current;
                    *current = renewed;
                    changed
                });
            }
            Err(e) => {
                tracing::debug!(error = %e, "metadata lease not renewed this round");
                tokio::time::sleep(lease::LEASE_RETRY_INTERVAL.min(interval)).await;
                continue;
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// Says so at start-up when a metadata leader election would outlast the
/// partition leaders' metadata leases (see `lease.rs`, "Cost"): every
/// partition then pauses while the metadata elects a new leader.
fn warn_if_leases_cannot_outlast_elections(config: &MetadataConfig) {
    let timeout = Duration::from_millis(config.node_timeout_ms);
    let lease = lease::lease_duration(timeout);
    let election = liveness::heartbeat_interval(timeout)
        + Duration::from_millis(config.raft.election_timeout_max_ms);
    if lease <= election {
        tracing::warn!(
            node_timeout_ms = config.node_timeout_ms,
            ?lease,
            ?election,
            "node_timeout is short for the metadata election timeout: partition leaders will \
             stop taking writes while the metadata elects a new leader (raise node_timeout_ms \
             above {} ms to avoid it)",
            (election.as_millis() * 100 / u128::from(lease::LEASE_FRACTION_PERCENT)) + 1
        );
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
