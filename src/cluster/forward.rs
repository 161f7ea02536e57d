//! Changes through the raft leader: stream create and delete, any
//! command ([`MetadataCore::write`]), and the other control operations a
//! leader runs (liveness, partition statuses). On a follower they are
//! forwarded over the raft transport (`control_rpc.rs`), retried across
//! elections, and answered once this node has applied the change too.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::ServerState;

use super::control_rpc::{ControlOp, ControlReply, ControlRequest, LocalPartitionStatus};
use super::limits::{
    APPLY_WAIT_MS, FORWARD_DEADLINE_MS, FORWARD_RETRY_BACKOFF_MS, FORWARD_RPC_TIMEOUT_MS,
    PROPOSE_TIMEOUT_MS,
};
use super::network::PeerClient;
use super::placement::{Placement, RoundRobinPlacement};
use super::{
    now_ms, raft_error, unexpected, unexpected_reply, ClusterError, MetadataCore, StatusSource,
    StreamCreation,
};
use crate::model::{
    validate_spec, validate_stream_name, Metadata, MetadataCommand, MetadataResponse, NodeId,
    StreamRecord, StreamSpec, INTERNAL_STREAM_NAMES,
};

impl MetadataCore {
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
    pub(super) fn liveness_clock(&self) -> Instant {
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
    pub(super) async fn handle_control(&self, request: ControlRequest) -> ControlReply {
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
}
