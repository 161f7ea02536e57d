//! Keeping this node's metadata lease (what a lease is, and why it makes
//! leading safe, is in `lease.rs`): one confirmation round per heartbeat
//! interval, which is also this node's heartbeat to the metadata leader.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::watch;

use super::control_rpc::{ControlOp, ControlReply, ControlRequest};
use super::network::PeerClient;
use super::{
    lease, liveness, raft_error, unexpected_reply, ClusterError, MetadataConfig, MetadataCore,
    MetadataLease,
};

impl MetadataCore {
    /// The metadata leader's read index: confirms with a quorum that this
    /// node still leads (openraft's read-index round, started after this
    /// call) and returns its commit index, at least its own term's first
    /// entry. Bounded by the lease duration (a slower answer grants
    /// nothing).
    pub(super) async fn read_index(&self) -> Result<u64, ClusterError> {
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
}

/// Every heartbeat interval, tells the metadata leader that this node is
/// up and renews this node's metadata lease with the leader's read index
/// (one confirmation round, see `lease.rs`). The first round runs at once,
/// so a starting node gets its lease as soon as a leader answers. Runs
/// until the node shuts down.
pub(super) async fn keep_lease(core: Arc<MetadataCore>) {
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
pub(super) fn warn_if_leases_cannot_outlast_elections(config: &MetadataConfig) {
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
