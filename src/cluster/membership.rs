//! Forming and joining the metadata cluster: what a pristine node does at
//! start-up (form a one-node cluster, the static peer cluster, join a
//! member, or wait), how a restarted member settles (re-join, register its
//! addresses), and how the leader adds a node (learner first, then voter).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{InitializeError, RaftError};
use openraft::{ChangeMembers, ServerState};
use tokio::task::JoinHandle;

use super::control_rpc::{ControlOp, ControlReply, ControlRequest, RemoteError};
use super::limits::{
    FORWARD_RETRY_BACKOFF_MS, JOIN_TIMEOUT_MS, SETTLE_LOG_EVERY, STARTUP_LEADER_WAIT_MS,
};
use super::network::PeerClient;
use super::{raft_error, unexpected, Bootstrap, ClusterError, ClusterNode, MetadataCore};
use crate::model::{MetadataCommand, MetadataResponse, NodeId};

impl MetadataCore {
    /// Forms or joins a cluster as configured when pristine; then, if this
    /// node is the only voter, settles it as a registered, caught-up
    /// leader. Returns the background task that registers a restarted
    /// member of a multi-node cluster, if one is needed.
    pub(super) async fn bootstrap(
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

    /// Adds `node_id` as a voter: as a learner first, waiting until it has
    /// caught up, then promoted. Idempotent; refuses a node id or raft
    /// address another node already uses.
    pub(super) async fn add_member(
        &self,
        node_id: NodeId,
        node: ClusterNode,
    ) -> Result<(), ClusterError> {
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
}
