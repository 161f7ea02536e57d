//! Raft RPC over TCP: the client ([`TcpNetwork`], openraft's
//! `RaftNetworkFactory`) and the server ([`serve_raft`]).
//!
//! Each message is one frame (`frame.rs`: u32 length, CRC-32C, JSON
//! payload) of at most [`RAFT_FRAME_BYTES_MAX`] bytes. A request is a
//! [`RaftRequest`] addressed to a node id (a node closes connections that
//! bring requests meant for another id), its reply the matching
//! [`RaftReply`]; one request is outstanding per connection. A client keeps one connection per peer and
//! drops it after any error or timeout, and when a call is cancelled before
//! its reply is read (openraft drops RPC futures at their TTL), reconnecting
//! on the next call, so a reply can never be matched with the wrong request.
//!
//! Sluice's own control RPCs (`control_rpc.rs`: forwarding to the leader,
//! join, heartbeats, status) share the transport as
//! [`RaftRequest::Control`], answered by the node's [`ControlHandler`].
//!
//! Errors map onto openraft's retry model: cannot connect → `Unreachable`
//! (openraft backs off), I/O or a bad frame → `Network` (retried at once),
//! no reply within the RPC's TTL → `Timeout`, request over the frame limit →
//! `PayloadTooLarge` (openraft splits the AppendEntries).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::RPCTypes;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::control_rpc::{ControlReply, ControlRequest};
use super::error::ClusterError;
use super::frame::{self, FrameError};
use super::limits::{
    RAFT_CONNECTIONS_MAX, RAFT_CONNECT_TIMEOUT_MS, RAFT_FRAME_BYTES_MAX, RAFT_IDLE_TIMEOUT_MS,
    SNAPSHOT_BYTES_MAX,
};
use super::types::{ClusterNode, MetadataRaft, TypeConfig};
use crate::model::NodeId;

/// A raft RPC request on the wire.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRequest {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    Control(ControlRequest),
}

/// A request as it travels: with the node id the sender means to reach.
/// A node answers only requests meant for it, so a stale peer that still
/// calls an address now used by another node (a replaced machine, another
/// cluster) cannot feed it a foreign raft log. `to` is absent only for
/// control requests to a node whose id the sender cannot know (a join to
/// the `--join` address).
#[derive(Debug, Serialize)]
struct AddressedRef<'a> {
    to: Option<NodeId>,
    request: &'a RaftRequest,
}

#[derive(Debug, Deserialize)]
struct Addressed {
    to: Option<NodeId>,
    request: RaftRequest,
}

/// The reply to a [`RaftRequest`] of the same variant: the remote raft's
/// result, errors included.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftReply {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    Control(ControlReply),
}

/// Answers control requests arriving on the raft listener.
pub type ControlHandler =
    Arc<dyn Fn(ControlRequest) -> BoxFuture<'static, ControlReply> + Send + Sync>;

/// Why a call produced no reply.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("peer closed the connection")]
    Closed,
    #[error("reply does not match the request")]
    Mismatch,
    #[error("timed out")]
    Timeout,
}

/// openraft's network factory: one [`PeerClient`] per target node.
#[derive(Debug, Clone)]
pub struct TcpNetwork {
    local: NodeId,
}

impl TcpNetwork {
    /// `local` is this node's id (used in timeout reports).
    pub fn new(local: NodeId) -> TcpNetwork {
        TcpNetwork { local }
    }
}

impl RaftNetworkFactory<TypeConfig> for TcpNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &ClusterNode) -> PeerClient {
        PeerClient::new(self.local, Some(target), node.raft_addr.clone())
    }
}

/// A connection (made lazily, remade after errors) to one peer.
pub struct PeerClient {
    local: NodeId,
    /// The node meant, when known (0 in reports otherwise).
    target: NodeId,
    addressed_to: Option<NodeId>,
    addr: String,
    stream: Option<TcpStream>,
}

impl PeerClient {
    /// A client of the node `target` (`None`: whichever node listens there;
    /// control requests only) listening for raft at `addr`.
    pub fn new(local: NodeId, target: Option<NodeId>, addr: impl Into<String>) -> PeerClient {
        PeerClient {
            local,
            target: target.unwrap_or_default(),
            addressed_to: target,
            addr: addr.into(),
            stream: None,
        }
    }

    /// Encodes a request as one frame, addressed to the target.
    fn encode(&self, request: &RaftRequest) -> Result<Vec<u8>, FrameError> {
        let addressed = AddressedRef {
            to: self.addressed_to,
            request,
        };
        frame::encode(&addressed, RAFT_FRAME_BYTES_MAX)
    }

    /// The raft address this client calls.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends one control request and waits up to `ttl` for its reply.
    pub async fn control(
        &mut self,
        request: &ControlRequest,
        ttl: Duration,
    ) -> Result<ControlReply, ClusterError> {
        let bytes = self
            .encode(&RaftRequest::Control(request.clone()))
            .map_err(|e| ClusterError::Unavailable {
                reason: format!("cannot encode a control request: {e}"),
            })?;
        match self.call(&bytes, ttl).await {
            Ok(RaftReply::Control(reply)) => Ok(reply),
            Ok(_) => {
                self.stream = None;
                Err(ClusterError::Unavailable {
                    reason: format!("node at {} answered another request", self.addr),
                })
            }
            Err(CallError::Connect { addr, source }) => Err(ClusterError::Unreachable {
                addr,
                reason: source.to_string(),
            }),
            Err(e) => Err(ClusterError::Unavailable {
                reason: format!("control RPC to node {} at {}: {e}", self.target, self.addr),
            }),
        }
    }

    /// Sends one request and reads its reply within `ttl`.
    ///
    /// The connection is taken out of `self` for the exchange and put back
    /// only once the whole reply has been read. A call that fails, times out
    /// or is cancelled midway therefore drops the connection, and with it any
    /// reply still on its way. Cancellation is the usual case: openraft wraps
    /// every raft RPC (AppendEntries, Vote, InstallSnapshot chunk) in its own
    /// timeout of the same TTL and drops this future when it fires, before
    /// the timeout here does. Were the connection kept, the late
    /// reply would be read as the reply to the *next* request; a stale
    /// `Conflict` read as the answer to an AppendEntries after a snapshot
    /// made the leader see a follower "lose" entries it had just acknowledged
    /// (openraft: "follower log reversion is not allowed"), a panic of the
    /// leader's raft core.
    async fn call(&mut self, request: &[u8], ttl: Duration) -> Result<RaftReply, CallError> {
        let connected = self.stream.take();
        let exchange = async {
            let mut stream = match connected {
                Some(stream) => stream,
                None => {
                    let connect = TcpStream::connect(self.addr.as_str());
                    let stream = match tokio::time::timeout(
                        Duration::from_millis(RAFT_CONNECT_TIMEOUT_MS),
                        connect,
                    )
                    .await
                    {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(source)) => {
                            return Err(CallError::Connect {
                                addr: self.addr.clone(),
                                source,
                            })
                        }
                        Err(_) => {
                            return Err(CallError::Connect {
                                addr: self.addr.clone(),
                                source: io::ErrorKind::TimedOut.into(),
                            })
                        }
                    };
                    stream.set_nodelay(true)?;
                    stream
                }
            };
            stream.write_all(request).await?;
            let payload = frame::read_frame_async(&mut stream, RAFT_FRAME_BYTES_MAX)
                .await
                .map_err(|e| match e {
                    frame::ReadError::Corrupt(e) => CallError::Frame(e),
                    frame::ReadError::Io(e) => CallError::Io(e),
                })?
                .ok_or(CallError::Closed)?;
            let reply = frame::decode::<RaftReply>(&payload)?;
            Ok((stream, reply))
        };
        match tokio::time::timeout(ttl, exchange).await {
            Ok(Ok((stream, reply))) => {
                self.stream = Some(stream);
                Ok(reply)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(CallError::Timeout),
        }
    }

    fn rpc_error<E: std::error::Error>(
        &self,
        error: CallError,
        action: RPCTypes,
        ttl: Duration,
    ) -> RPCError<NodeId, ClusterNode, E> {
        tracing::debug!(target_node = self.target.get(), addr = %self.addr, %error, ?action, "raft RPC failed");
        match error {
            CallError::Connect { .. } => RPCError::Unreachable(Unreachable::new(&error)),
            CallError::Timeout => RPCError::Timeout(Timeout {
                action,
                id: self.local,
                target: self.target,
                timeout: ttl,
            }),
            _ => RPCError::Network(NetworkError::new(&error)),
        }
    }

    fn remote<E: std::error::Error>(&self, error: E) -> RPCError<NodeId, ClusterNode, E> {
        RPCError::RemoteError(RemoteError::new(self.target, error))
    }
}

/// Maps a request that cannot be encoded: an oversize AppendEntries with
/// more than one entry becomes `PayloadTooLarge` (a hint to halve it).
fn unencodable<E: std::error::Error>(
    error: FrameError,
    action: RPCTypes,
    entries: usize,
) -> RPCError<NodeId, ClusterNode, E> {
    match error {
        FrameError::TooLarge { .. } if entries > 1 => {
            RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint((entries / 2) as u64))
        }
        other => {
            tracing::error!(?action, error = %other, "cannot encode a raft request");
            RPCError::Network(NetworkError::new(&other))
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, ClusterNode, RaftError<NodeId>>>
    {
        let (action, ttl) = (RPCTypes::AppendEntries, option.hard_ttl());
        let entries = rpc.entries.len();
        let request = self
            .encode(&RaftRequest::AppendEntries(rpc))
            .map_err(|e| unencodable(e, action, entries))?;
        match self.call(&request, ttl).await {
            Ok(RaftReply::AppendEntries(reply)) => reply.map_err(|e| self.remote(e)),
            Ok(_) => Err(self.rpc_error(CallError::Mismatch, action, ttl)),
            Err(e) => Err(self.rpc_error(e, action, ttl)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, ClusterNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let (action, ttl) = (RPCTypes::InstallSnapshot, option.hard_ttl());
        let request = self
            .encode(&RaftRequest::InstallSnapshot(rpc))
            .map_err(|e| unencodable(e, action, 1))?;
        match self.call(&request, ttl).await {
            Ok(RaftReply::InstallSnapshot(reply)) => reply.map_err(|e| self.remote(e)),
            Ok(_) => Err(self.rpc_error(CallError::Mismatch, action, ttl)),
            Err(e) => Err(self.rpc_error(e, action, ttl)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, ClusterNode, RaftError<NodeId>>> {
        let (action, ttl) = (RPCTypes::Vote, option.hard_ttl());
        let request = self
            .encode(&RaftRequest::Vote(rpc))
            .map_err(|e| unencodable(e, action, 1))?;
        match self.call(&request, ttl).await {
            Ok(RaftReply::Vote(reply)) => reply.map_err(|e| self.remote(e)),
            Ok(_) => Err(self.rpc_error(CallError::Mismatch, action, ttl)),
            Err(e) => Err(self.rpc_error(e, action, ttl)),
        }
    }
}

/// Serves raft RPCs from peers on `listener` until the returned future is
/// dropped (which also ends every connection it serves). At most
/// [`RAFT_CONNECTIONS_MAX`] connections are served at once; more are
/// closed on accept.
pub async fn serve_raft(
    listener: TcpListener,
    local: NodeId,
    raft: MetadataRaft,
    control: ControlHandler,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if connections.len() >= RAFT_CONNECTIONS_MAX {
                        tracing::warn!(%peer, limit = RAFT_CONNECTIONS_MAX, "too many raft connections; closing");
                        continue;
                    }
                    connections.spawn(serve_connection(stream, peer, local, raft.clone(), control.clone()));
                }
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "raft listener accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Answers requests on one connection until the peer closes it, goes idle,
/// or sends something that is not a valid request (then it is closed).
async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    local: NodeId,
    raft: MetadataRaft,
    control: ControlHandler,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "set_nodelay failed");
    }
    let idle = Duration::from_millis(RAFT_IDLE_TIMEOUT_MS);
    loop {
        let payload = match tokio::time::timeout(
            idle,
            frame::read_frame_async(&mut stream, RAFT_FRAME_BYTES_MAX),
        )
        .await
        {
            Err(_) => {
                tracing::debug!(%peer, "closing idle raft connection");
                return;
            }
            Ok(Ok(None)) => return,
            Ok(Ok(Some(payload))) => payload,
            Ok(Err(e)) => {
                tracing::warn!(%peer, error = %e, "bad raft frame; closing the connection");
                return;
            }
        };
        let Addressed { to, request } = match frame::decode(&payload) {
            Ok(addressed) => addressed,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "undecodable raft request; closing the connection");
                return;
            }
        };
        let meant_for_us = match to {
            Some(to) => to == local,
            None => matches!(request, RaftRequest::Control(_)),
        };
        if !meant_for_us {
            tracing::warn!(%peer, local = local.get(), to = ?to, "raft request meant for another node (a stale peer of a replaced node?); closing the connection");
            return;
        }
        let reply = match request {
            RaftRequest::AppendEntries(rpc) => {
                RaftReply::AppendEntries(raft.append_entries(rpc).await)
            }
            RaftRequest::Vote(rpc) => RaftReply::Vote(raft.vote(rpc).await),
            RaftRequest::InstallSnapshot(rpc) => {
                let end = rpc.offset.saturating_add(rpc.data.len() as u64);
                if end > SNAPSHOT_BYTES_MAX as u64 {
                    tracing::warn!(%peer, end, limit = SNAPSHOT_BYTES_MAX, "snapshot chunk beyond the snapshot limit; closing the connection");
                    return;
                }
                RaftReply::InstallSnapshot(raft.install_snapshot(rpc).await)
            }
            RaftRequest::Control(request) => RaftReply::Control(control(request).await),
        };
        let bytes = match frame::encode(&reply, RAFT_FRAME_BYTES_MAX) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::error!(%peer, error = %e, "cannot encode a raft reply; closing the connection");
                return;
            }
        };
        if let Err(e) = stream.write_all(&bytes).await {
            tracing::debug!(%peer, error = %e, "raft reply write failed");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, LogId, Vote};

    use super::*;
    use crate::model::nid;

    /// A peer that answers an AppendEntries whose `prev_log_id` is at index
    /// `slow` only after `delay`, with `Conflict`, and every other one at
    /// once with `Success`, in order, on each connection.
    async fn peer_slow_at(slow: u64, delay: Duration) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    while let Ok(Some(payload)) =
                        frame::read_frame_async(&mut stream, RAFT_FRAME_BYTES_MAX).await
                    {
                        let Addressed { request, .. } = frame::decode(&payload).unwrap();
                        let RaftRequest::AppendEntries(rpc) = request else {
                            panic!("unexpected request {request:?}");
                        };
                        let reply = if rpc.prev_log_id.map(|id| id.index) == Some(slow) {
                            tokio::time::sleep(delay).await;
                            AppendEntriesResponse::Conflict
                        } else {
                            AppendEntriesResponse::Success
                        };
                        let reply = RaftReply::AppendEntries(Ok(reply));
                        let bytes = frame::encode(&reply, RAFT_FRAME_BYTES_MAX).unwrap();
                        if stream.write_all(&bytes).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn append_after(index: u64) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(1, nid(1)),
            prev_log_id: Some(LogId::new(CommittedLeaderId::new(1, nid(1)), index)),
            leader_commit: None,
            entries: Vec::new(),
        }
    }

    /// openraft drops an RPC future when its own timeout (the RPC's hard
    /// TTL) fires. The late reply to that call must not be taken as the
    /// reply to the next one: a stale `Conflict` answering an AppendEntries
    /// right after a snapshot was installed made the leader panic with
    /// "follower log reversion is not allowed".
    #[tokio::test]
    async fn the_reply_to_a_cancelled_call_is_never_read_as_the_next_reply() {
        let addr = peer_slow_at(17, Duration::from_millis(300)).await;
        let mut client = PeerClient::new(nid(1), Some(nid(2)), addr);
        let option = RPCOption::new(Duration::from_secs(5));

        // The probe after entry 17: the caller gives up before the peer
        // answers, and drops the call.
        let cancelled = tokio::time::timeout(
            Duration::from_millis(50),
            client.append_entries(append_after(17), option.clone()),
        )
        .await;
        assert!(cancelled.is_err(), "{cancelled:?}");

        // The next request gets its own reply, not the probe's Conflict.
        let reply = client
            .append_entries(append_after(29), option.clone())
            .await
            .unwrap();
        assert_eq!(reply, AppendEntriesResponse::Success);
        // And the connection it used stays in sync.
        let reply = client
            .append_entries(append_after(30), option)
            .await
            .unwrap();
        assert_eq!(reply, AppendEntriesResponse::Success);
    }
}
