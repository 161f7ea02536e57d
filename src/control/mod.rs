//! The control core: one OS thread running a current-thread tokio runtime.
//! It hosts what needs tokio — the NATS bridge (async-nats), the cluster
//! metadata (openraft) and the admin HTTP endpoint — and owns no segment
//! file. It talks to the shards only through their rings.

pub mod admin_http;
mod affinity;
pub mod bridge;
pub mod cluster_status;
pub mod nats_server;
pub mod router;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use shards::ring::{RingReceiver, RingSender};
use shards::types::TimestampMs;
use tokio::sync::{mpsc, oneshot};

use crate::cluster::{
    Bootstrap, ClusterError, LocalPartitionStatus, MetadataConfig, MetadataNode, OpenFailure,
    ReplicaLag, StatusSource,
};
use crate::config::{Membership, ServeConfig};
use crate::cores::{
    AdminReply, AdminRequest, AppendFailure, FromShard, MetadataView, PartitionKey, ToShard,
};
use crate::limits::{LimitCounters, LimitKind, Limits};
use crate::model::{MetadataCommand, MetadataResponse, NodeId, StreamRecord};
use crate::protocol::error_code::ErrorCode;
use nats_server::ManagedNatsServer;
use router::{Router, RouterRequest};

/// Requests other tasks may queue for the router before they wait.
pub const ROUTER_REQUESTS_CAPACITY: usize = 1024;
/// Longest the first part of shutdown may take after SIGINT/SIGTERM,
/// whatever NATS does: stopping the router, the shards' reports with the
/// acks of their last appends, and the final NATS flush share it. What is
/// not done by then is logged and abandoned: a NATS server that went away
/// (publishes blocked behind a reconnecting client) once kept a node alive
/// for minutes. Shards still finish closing their logs (`server::run`
/// joins them); only acks not yet published are lost, and their publishers
/// see a timeout, which means "unknown".
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(4);
/// How long shutdown waits for NATS to take the last acks (a dead NATS
/// server must not hang the exit); within [`SHUTDOWN_DEADLINE`].
pub const NATS_FLUSH_TIMEOUT: Duration = Duration::from_secs(3);
/// How long shutdown waits for the metadata node to stop.
pub const METADATA_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a create/delete (or start-up) waits for the shards to apply
/// the new partition table.
pub const SHARD_SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a create waits for every replica of the new stream to report
/// each of its partitions open or failed (this node's shards answer at
/// once; other nodes once they applied the metadata and opened). A replica
/// that has not answered by then does not fail the create: it opens (or
/// reports DiskFull on appends, and in `stream describe` on its node) when
/// it catches up. Cost: a create with an unreachable replica returns this
/// much later.
pub const CREATE_OPEN_WAIT: Duration = Duration::from_secs(10);
/// Pause between two rounds of asking the replicas of a new stream.
pub const CREATE_OPEN_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Replica failures quoted in a refused create's message (the rest are
/// counted): a create of many partitions on a full disk fails for each.
pub const CREATE_FAILURES_QUOTED_MAX: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot start the tokio runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    NatsServer(#[from] nats_server::NatsServerError),
    #[error("cannot connect to NATS at {url}: {message} (check --nats-url)")]
    NatsConnect { url: String, message: String },
    #[error("metadata: {0}")]
    Metadata(#[from] ClusterError),
    #[error("cannot listen on {addr} for {what}: {source} (is another process using it?)")]
    Listen {
        what: &'static str,
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The control core's two ring ends for one shard.
pub struct ControlLink {
    pub to_shard: RingSender<ToShard>,
    pub from_shard: RingReceiver<FromShard>,
}

/// Runs the control core on the current thread until SIGINT or SIGTERM,
/// then shuts everything down in order: stop taking NATS messages, let the
/// shards finish in-flight appends and close their logs, publish the last
/// acks, stop the metadata node and the managed nats-server.
pub fn run(
    config: ServeConfig,
    links: Vec<ControlLink>,
    limit_counters: Arc<LimitCounters>,
) -> Result<(), ControlError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ControlError::Runtime)?;
    // A LocalSet: the router owns `!Sync` ring ends and runs as a local task
    // of this one thread, as everything on the control core could.
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, run_async(config, links, limit_counters))
}

async fn run_async(
    config: ServeConfig,
    links: Vec<ControlLink>,
    limit_counters: Arc<LimitCounters>,
) -> Result<(), ControlError> {
    let (managed_nats, nats_url) = match &config.nats_url {
        Some(url) => (None, url.clone()),
        None => {
            let server = ManagedNatsServer::start(&config.data_dir.join("nats")).await?;
            let url = server.url.clone();
            (Some(server), url)
        }
    };
    affinity::pin_current_thread(config.control_cpu);
    let nats = async_nats::ConnectOptions::new()
        .name("sluice")
        .connect(nats_url.as_str())
        .await
        .map_err(|e| ControlError::NatsConnect {
            url: nats_url.clone(),
            message: e.to_string(),
        })?;
    tracing::info!(url = %nats_url, "connected to NATS");

    let metadata_config = MetadataConfig {
        bootstrap: match &config.membership {
            Membership::Alone => Bootstrap::IfPristine,
            Membership::Join(addr) => Bootstrap::Join(addr.clone()),
            Membership::Peers(peers) => Bootstrap::StaticPeers(peers.clone()),
        },
        node_timeout_ms: config.node_timeout.as_millis() as u64,
        ..MetadataConfig::new(
            config.node_id,
            &config.data_dir,
            config.raft.to_string(),
            config.listen.to_string(),
            config.shard_count(),
        )
    };
    let metadata = Arc::new(MetadataNode::start(metadata_config).await?);

    let admin_listener = tokio::net::TcpListener::bind(config.admin)
        .await
        .map_err(|source| ControlError::Listen {
            what: "the admin endpoint (--admin)",
            addr: config.admin,
            source,
        })?;

    let (router_tx, router_rx) = mpsc::channel(ROUTER_REQUESTS_CAPACITY);
    let mut to_shards = Vec::new();
    let mut event_tasks = Vec::new();
    let view = ViewBase {
        node_id: config.node_id,
        host: config.listen.ip().to_string(),
        base_port: config.listen.port(),
        shard_count: config.shard_count(),
        limits: config.limits.clone(),
        limit_counters: limit_counters.clone(),
    };
    for link in links {
        to_shards.push(link.to_shard);
        event_tasks.push(tokio::spawn(shard_events(
            link.from_shard,
            nats.clone(),
            metadata.clone(),
            router_tx.clone(),
            view.clone(),
        )));
    }
    let router = Router::new(
        nats.clone(),
        to_shards,
        (metadata.subscribe(), metadata.subscribe_lease()),
        router_rx,
        config.node_id,
        (config.limits.clone(), limit_counters.clone()),
    );
    let mut router_task = tokio::task::spawn_local(router.run());
    // Ready (admin port answering) only once every shard has opened its
    // partitions and, within a bound, once the metadata leader confirmed
    // this node's metadata (until then it leads nothing: it may have
    // restarted on metadata that is no longer current).
    sync_shards(&router_tx).await;
    if !metadata.wait_for_lease(config.node_timeout).await {
        tracing::warn!(
            waited = ?config.node_timeout,
            "the metadata leader has not confirmed this node's metadata yet (is a majority of the nodes up?); leading no partition until it does"
        );
    }
    sync_shards(&router_tx).await;
    metadata.set_status_source(status_source(router_tx.clone()));
    let admin_task = tokio::spawn(admin_http::serve(
        admin_listener,
        router_tx.clone(),
        config.node_id,
        limit_counters.clone(),
    ));
    tracing::info!(admin = %config.admin, listen = %config.listen, shards = config.shard_count(), "sluice is serving");

    wait_for_signal().await;
    tracing::info!("shutting down: finishing in-flight appends");
    let deadline = tokio::time::Instant::now() + SHUTDOWN_DEADLINE;
    let gave_up = |what: &str| {
        tracing::warn!(
            "shutdown: gave up waiting for {what} ({SHUTDOWN_DEADLINE:?} after the signal)"
        );
    };
    let (done_tx, done_rx) = oneshot::channel();
    let router_stopped = async {
        if router_tx
            .send(RouterRequest::Shutdown(done_tx))
            .await
            .is_ok()
        {
            let _ = done_rx.await;
        }
        let _ = (&mut router_task).await;
    };
    if tokio::time::timeout_at(deadline, router_stopped)
        .await
        .is_err()
    {
        gave_up("the router to hand the last NATS messages to the shards");
        router_task.abort();
    }
    let mut reports = futures::future::join_all(event_tasks.iter_mut());
    if tokio::time::timeout_at(deadline, &mut reports)
        .await
        .is_err()
    {
        gave_up("the shards' last reports and the NATS acks of their last appends");
        drop(reports);
        // Cancelled tasks drop their handles on NATS and the metadata.
        for task in event_tasks.into_iter().filter(|task| !task.is_finished()) {
            task.abort();
            let _ = task.await;
        }
    }
    admin_task.abort();
    let flush_by = deadline.min(tokio::time::Instant::now() + NATS_FLUSH_TIMEOUT);
    if tokio::time::timeout_at(flush_by, nats.flush())
        .await
        .is_err()
    {
        gave_up("NATS to take the last acks");
    }
    drop(nats);
    match Arc::try_unwrap(metadata) {
        Ok(metadata) => {
            match tokio::time::timeout(METADATA_SHUTDOWN_TIMEOUT, metadata.shutdown()).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::warn!(error = %err, "metadata shutdown"),
                Err(_) => {
                    tracing::warn!("metadata did not stop within {METADATA_SHUTDOWN_TIMEOUT:?}")
                }
            }
        }
        Err(_) => tracing::warn!("metadata still referenced at shutdown"),
    }
    if let Some(server) = managed_nats {
        server.stop().await;
    }
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[derive(Clone, Debug)]
struct ViewBase {
    node_id: NodeId,
    host: String,
    base_port: u16,
    shard_count: u32,
    limits: Limits,
    limit_counters: Arc<LimitCounters>,
}

/// Handles everything one shard sends: acks to publish, admin requests to
/// answer. Ends when the shard reports it stopped.
async fn shard_events(
    mut events: RingReceiver<FromShard>,
    nats: async_nats::Client,
    metadata: Arc<MetadataNode>,
    router: mpsc::Sender<RouterRequest>,
    view: ViewBase,
) {
    let mut batch = Vec::new();
    loop {
        batch.clear();
        if events.recv_many(&mut batch, 1024).await == 0 {
            return;
        }
        for event in batch.drain(..) {
            match event {
                FromShard::Appended {
                    stream,
                    partition,
                    result,
                    acks,
                } => {
                    let ack = bridge::AckContext {
                        stream: &stream,
                        partition,
                        node: view.node_id,
                    };
                    publish_acks(&nats, ack, &result, &acks).await
                }
                FromShard::Admin { request, reply } => {
                    let metadata = metadata.clone();
                    let router = router.clone();
                    let view = view.clone();
                    tokio::spawn(async move {
                        let answer = answer_admin(&metadata, &router, &view, request).await;
                        let _ = reply.send(answer);
                    });
                }
                FromShard::Propose { command, reply } => {
                    let metadata = metadata.clone();
                    tokio::spawn(async move {
                        let _ = reply.send(metadata.write(command).await);
                    });
                }
                FromShard::Cursor(request) => {
                    if let Err(mpsc::error::SendError(RouterRequest::Cursor(request))) =
                        router.send(RouterRequest::Cursor(request)).await
                    {
                        let _ = request.reply.send(Err(AppendFailure {
                            code: ErrorCode::ShuttingDown,
                            message: "the router has stopped".into(),
                        }));
                    }
                }
                FromShard::Stopped { shard } => {
                    tracing::info!(shard = shard.0, "shard stopped");
                    let _ = tokio::time::timeout(NATS_FLUSH_TIMEOUT, nats.flush()).await;
                    return;
                }
            }
        }
    }
}

async fn publish_acks(
    nats: &async_nats::Client,
    ack: bridge::AckContext<'_>,
    result: &Result<crate::cores::Committed, AppendFailure>,
    acks: &[Option<crate::cores::AckRoute>],
) {
    let now = TimestampMs::now();
    for (index, route) in acks.iter().enumerate() {
        let Some(route) = route else { continue };
        if let Some(payload) = bridge::ack_payload(ack, result, index, route, now) {
            if let Err(err) = nats.publish(route.inbox.clone(), payload.into()).await {
                tracing::warn!(error = %err, "cannot publish ack");
            }
        }
    }
}

async fn answer_admin(
    metadata: &MetadataNode,
    router: &mpsc::Sender<RouterRequest>,
    view: &ViewBase,
    request: AdminRequest,
) -> AdminReply {
    match request {
        AdminRequest::CreateStream(spec) => match check_cluster_limits(metadata, &spec, view) {
            Err(failure) => AdminReply::Error(failure),
            Ok(()) => create_stream(metadata, router, spec).await,
        },
        AdminRequest::DeleteStream(name) => match metadata.delete_stream(&name).await {
            Ok(record) => {
                sync_shards(router).await;
                AdminReply::Deleted(record)
            }
            Err(err) => AdminReply::Error(cluster_failure(err)),
        },
        AdminRequest::GrantAcl(rule) => {
            let command = MetadataCommand::GrantAcl {
                principal: rule.principal,
                stream_pattern: rule.stream_pattern,
                operations: rule.operations,
            };
            change_acl(metadata, router, command).await
        }
        AdminRequest::RevokeAcl(rule) => {
            let command = MetadataCommand::RevokeAcl {
                principal: rule.principal,
                stream_pattern: rule.stream_pattern,
                operations: rule.operations,
            };
            change_acl(metadata, router, command).await
        }
        AdminRequest::ListAcls { principal } => {
            let mut rules = metadata.metadata().acl_rules();
            if let Some(principal) = principal {
                rules.retain(|rule| rule.principal == principal);
            }
            AdminReply::Acls(rules)
        }
        AdminRequest::EnsureCursorStream => ensure_cursor_stream(metadata, router, view).await,
        AdminRequest::ClusterStatus => {
            AdminReply::ClusterStatus(cluster_status::gather(metadata).await)
        }
        AdminRequest::Metadata => {
            let streams = metadata.list_streams();
            let partitions: Vec<(PartitionKey, u32)> = streams
                .iter()
                .flat_map(|s| {
                    s.partitions.iter().map(move |p| {
                        (
                            PartitionKey {
                                stream_id: s.id,
                                partition: p.partition,
                            },
                            p.shard,
                        )
                    })
                })
                .collect();
            let (tx, rx) = oneshot::channel();
            let statuses = if router
                .send(RouterRequest::PartitionStatus {
                    partitions,
                    reply: tx,
                })
                .await
                .is_ok()
            {
                rx.await.unwrap_or_default()
            } else {
                HashMap::new()
            };
            AdminReply::Metadata(MetadataView {
                node_id: view.node_id,
                host: view.host.clone(),
                base_port: view.base_port,
                shard_count: view.shard_count,
                nodes: metadata.metadata().nodes().clone(),
                streams,
                statuses,
            })
        }
    }
}

/// Writes an ACL change through the metadata leader and waits until this
/// node's shards enforce it, so the change holds once the client hears of it.
async fn change_acl(
    metadata: &MetadataNode,
    router: &mpsc::Sender<RouterRequest>,
    command: MetadataCommand,
) -> AdminReply {
    let failure = |code, message: String| AdminReply::Error(AppendFailure { code, message });
    match metadata.write(command).await {
        Ok(MetadataResponse::Ok) => {
            sync_shards(router).await;
            AdminReply::AclChanged
        }
        Ok(MetadataResponse::Invalid { reason }) => failure(ErrorCode::InvalidRequest, reason),
        Ok(MetadataResponse::NotFound) => failure(
            ErrorCode::InvalidRequest,
            "no ACL rule for that principal and stream pattern (see `sluice acl list`)".into(),
        ),
        Ok(other) => failure(
            ErrorCode::Unknown,
            format!("unexpected metadata answer {other:?}"),
        ),
        Err(err) => AdminReply::Error(cluster_failure(err)),
    }
}

/// What `sluice cluster status` learns of this node's partitions: every
/// replica held here that its shard has open, as the shard reports it.
fn status_source(router: mpsc::Sender<RouterRequest>) -> StatusSource {
    Arc::new(move || {
        let router = router.clone();
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            if router.send(RouterRequest::Hosted(tx)).await.is_err() {
                return Vec::new();
            }
            let hosted = rx.await.unwrap_or_default();
            hosted
                .into_iter()
                .filter_map(|h| {
                    let status = h.status?;
                    let open_failure = status.open_failure.as_ref().map(|f| OpenFailure {
                        code: f.code.code(),
                        message: f.message.clone(),
                    });
                    Some(LocalPartitionStatus {
                        stream_id: h.key.stream_id,
                        partition: h.key.partition,
                        high_watermark: status.high_watermark.0,
                        log_start: status.log_start.0,
                        log_end: status.log_end.0,
                        leader_epoch: status.leader_epoch,
                        replicas: status
                            .replicas
                            .iter()
                            .map(|r| ReplicaLag {
                                node: r.node,
                                log_end: r.log_end.0,
                                lag: r.lag,
                                in_sync: r.in_sync,
                            })
                            .collect(),
                        open_failure,
                    })
                })
                .collect()
        })
    })
}

async fn create_stream(
    metadata: &MetadataNode,
    router: &mpsc::Sender<RouterRequest>,
    spec: crate::model::StreamSpec,
) -> AdminReply {
    match metadata.create_stream(spec).await {
        Ok(creation) => {
            let created = matches!(creation, crate::cluster::StreamCreation::Created(_));
            let record = creation.into_record();
            sync_shards(router).await;
            if created {
                let failures = replica_open_failures(metadata, router, &record).await;
                if !failures.is_empty() {
                    return undo_create(metadata, router, &record, failures).await;
                }
            }
            let nodes = metadata.metadata().nodes().clone();
            AdminReply::Created {
                record,
                created,
                nodes,
            }
        }
        Err(err) => AdminReply::Error(cluster_failure(err)),
    }
}

/// One replica of a new stream that could not open its partition.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ReplicaOpenFailure {
    node: NodeId,
    partition: u32,
    code: ErrorCode,
    message: String,
}

/// Asks every replica of a just-created stream how opening each of its
/// partitions went, until each has answered or [`CREATE_OPEN_WAIT`]
/// passes; returns the failures (empty when every replica that answered
/// opened). This node's shards are asked through the router (they applied
/// the table before this is called), other nodes with the `LocalStatus`
/// RPC; a node that cannot be reached at all (down: placement counts a
/// node alive for a while after it died) is not waited for. Stops at the
/// first round that finds a failure.
async fn replica_open_failures(
    metadata: &MetadataNode,
    router: &mpsc::Sender<RouterRequest>,
    record: &StreamRecord,
) -> Vec<ReplicaOpenFailure> {
    let local = metadata.node_id();
    let mut pending: HashMap<NodeId, Vec<u32>> = HashMap::new();
    for assignment in &record.partitions {
        for node in &assignment.replicas {
            pending.entry(*node).or_default().push(assignment.partition);
        }
    }
    let deadline = tokio::time::Instant::now() + CREATE_OPEN_WAIT;
    let mut failures = Vec::new();
    loop {
        let asks = pending.keys().map(|node| {
            let node = *node;
            async move {
                let reports = if node == local {
                    Some(local_open_reports(router, record).await)
                } else {
                    let wait = deadline
                        .saturating_duration_since(tokio::time::Instant::now())
                        .min(cluster_status::STATUS_RPC_TIMEOUT);
                    match metadata.node_status(node, wait).await {
                        Ok(statuses) => Some(
                            statuses
                                .into_iter()
                                .filter(|s| s.stream_id == record.id)
                                .map(|s| (s.partition, s.open_failure))
                                .collect(),
                        ),
                        Err(err @ ClusterError::Unreachable { .. }) => {
                            tracing::info!(node = node.get(), error = %err,
                                "not waiting for an unreachable replica to open the new partitions");
                            None
                        }
                        Err(err) => {
                            tracing::debug!(node = node.get(), error = %err, "no partition status yet");
                            Some(Vec::new())
                        }
                    }
                };
                (node, reports)
            }
        });
        for (node, reports) in futures::future::join_all(asks).await {
            let Some(reports) = reports else {
                pending.remove(&node);
                continue;
            };
            let Some(partitions) = pending.get_mut(&node) else {
                continue;
            };
            for (partition, open_failure) in reports {
                if !partitions.contains(&partition) {
                    continue;
                }
                partitions.retain(|p| *p != partition);
                if let Some(failure) = open_failure {
                    failures.push(ReplicaOpenFailure {
                        node,
                        partition,
                        code: ErrorCode::from_wire(failure.code).unwrap_or(ErrorCode::Unknown),
                        message: failure.message,
                    });
                }
            }
        }
        pending.retain(|_, partitions| !partitions.is_empty());
        if !failures.is_empty() || pending.is_empty() {
            break;
        }
        if tokio::time::Instant::now() + CREATE_OPEN_POLL_INTERVAL >= deadline {
            tracing::warn!(stream = %record.spec.name, unconfirmed = ?pending,
                "created; some replicas did not confirm their partitions open within {CREATE_OPEN_WAIT:?}");
            break;
        }
        tokio::time::sleep(CREATE_OPEN_POLL_INTERVAL).await;
    }
    failures.sort_by_key(|f| (f.partition, f.node));
    failures
}

/// How this node's shards opened the partitions of `record` they hold:
/// (partition, failure if the open failed); partitions not placed here are
/// left out.
async fn local_open_reports(
    router: &mpsc::Sender<RouterRequest>,
    record: &StreamRecord,
) -> Vec<(u32, Option<OpenFailure>)> {
    let partitions = record
        .partitions
        .iter()
        .map(|p| {
            let key = PartitionKey::of(record, p.partition);
            (key, p.shard)
        })
        .collect();
    let (tx, rx) = oneshot::channel();
    let asked = router
        .send(RouterRequest::PartitionStatus {
            partitions,
            reply: tx,
        })
        .await;
    if asked.is_err() {
        return Vec::new();
    }
    rx.await
        .unwrap_or_default()
        .into_iter()
        .map(|(key, status)| {
            let failure = status.open_failure.map(|f| OpenFailure {
                code: f.code.code(),
                message: f.message,
            });
            (key.partition, failure)
        })
        .collect()
}

/// A create some replica could not carry out: deletes the stream again
/// through the metadata leader (each replica's shard then drops the
/// partition and whatever its open left on disk) and answers the error,
/// naming each node and cause. `DiskFull` when every failure was a full
/// disk, else `PartitionFailed`.
async fn undo_create(
    metadata: &MetadataNode,
    router: &mpsc::Sender<RouterRequest>,
    record: &StreamRecord,
    failures: Vec<ReplicaOpenFailure>,
) -> AdminReply {
    let code = if failures.iter().all(|f| f.code == ErrorCode::DiskFull) {
        ErrorCode::DiskFull
    } else {
        ErrorCode::PartitionFailed
    };
    let mut message = failures
        .iter()
        .take(CREATE_FAILURES_QUOTED_MAX)
        .map(|f| format!("node {}: {}", f.node, f.message))
        .collect::<Vec<_>>()
        .join("; ");
    if failures.len() > CREATE_FAILURES_QUOTED_MAX {
        message.push_str(&format!(
            "; and {} more",
            failures.len() - CREATE_FAILURES_QUOTED_MAX
        ));
    }
    let name = &record.spec.name;
    tracing::warn!(stream = %name, %message, "a replica could not open a partition; deleting the stream again");
    // Only this incarnation: a stream re-created under the name meanwhile
    // is someone else's.
    let same = metadata.describe(name).is_some_and(|r| r.id == record.id);
    let undone = if same {
        metadata.delete_stream(name).await.map(|_| ())
    } else {
        Ok(())
    };
    match undone {
        Ok(()) => {
            sync_shards(router).await;
            message = format!("stream {name} was not created: {message}");
        }
        Err(err) => {
            message = format!(
                "stream {name} was created but cannot be used: {message}; deleting it again failed ({err}): delete it with `sluice stream delete {name}`"
            );
        }
    }
    AdminReply::Error(AppendFailure { code, message })
}

/// `streams_max` and `partitions_max` (user streams; the internal cursor
/// stream does not count), checked on the node that takes the request
/// before anything is proposed. Re-creating an existing stream is never
/// refused (it is idempotent and adds nothing).
fn check_cluster_limits(
    metadata: &MetadataNode,
    spec: &crate::model::StreamSpec,
    view: &ViewBase,
) -> Result<(), AppendFailure> {
    let current = metadata.metadata();
    if current.stream(&spec.name).is_some() {
        return Ok(());
    }
    let user_streams = || {
        current
            .streams()
            .values()
            .filter(|r| !crate::cursor::is_internal_stream(&r.spec.name))
    };
    let streams = user_streams().count();
    let partitions: usize = user_streams().map(|r| r.partitions.len()).sum();
    let limits = &view.limits;
    let refuse = |kind: LimitKind, message: String| {
        view.limit_counters.record(kind);
        Err(AppendFailure {
            code: ErrorCode::LimitExceeded,
            message: format!("{}: {message}", kind.name()),
        })
    };
    if streams >= limits.streams_max {
        return refuse(
            LimitKind::Streams,
            format!(
                "the cluster has {streams} streams, the limit is {}; delete one or raise limits.streams_max",
                limits.streams_max
            ),
        );
    }
    if partitions + spec.partitions as usize > limits.partitions_max {
        return refuse(
            LimitKind::Partitions,
            format!(
                "the cluster has {partitions} partitions, {} more would pass the limit {}; raise limits.partitions_max",
                spec.partitions, limits.partitions_max
            ),
        );
    }
    Ok(())
}

/// Creates the internal cursor stream on first use: one partition per shard
/// of this node (capped), replication factor min(3, registered nodes), key
/// compaction. Idempotent; concurrent first uses race into the same
/// metadata write, and raft orders them (the second sees `created = false`).
async fn ensure_cursor_stream(
    metadata: &MetadataNode,
    router: &mpsc::Sender<RouterRequest>,
    view: &ViewBase,
) -> AdminReply {
    if let Some(record) = metadata.describe(crate::model::CURSORS_STREAM) {
        return AdminReply::Created {
            record,
            created: false,
            nodes: metadata.metadata().nodes().clone(),
        };
    }
    let nodes = metadata.metadata().nodes().len();
    let spec = crate::cursor::cursors_stream_spec(view.shard_count, nodes);
    match metadata.create_internal_stream(spec).await {
        Ok(creation) => {
            let created = matches!(creation, crate::cluster::StreamCreation::Created(_));
            if created {
                tracing::info!(
                    stream = crate::model::CURSORS_STREAM,
                    "created the cursor stream"
                );
            }
            sync_shards(router).await;
            AdminReply::Created {
                record: creation.into_record(),
                created,
                nodes: metadata.metadata().nodes().clone(),
            }
        }
        Err(err) => AdminReply::Error(cluster_failure(err)),
    }
}

/// Waits until every shard has applied the metadata as it is now (bounded),
/// so a client can use a stream as soon as its create or delete returns.
async fn sync_shards(router: &mpsc::Sender<RouterRequest>) {
    let (tx, rx) = oneshot::channel();
    if router.send(RouterRequest::Sync(tx)).await.is_ok() {
        let _ = tokio::time::timeout(SHARD_SYNC_TIMEOUT, rx).await;
    }
}

fn cluster_failure(err: ClusterError) -> AppendFailure {
    let code = match &err {
        ClusterError::NotLeader { .. } => ErrorCode::NotLeader,
        ClusterError::InvalidSpec(_)
        | ClusterError::Rejected { .. }
        | ClusterError::Placement(_) => ErrorCode::InvalidRequest,
        ClusterError::Conflict { .. } => ErrorCode::StreamExists,
        ClusterError::NotFound { .. } => ErrorCode::StreamNotFound,
        ClusterError::Unavailable { .. }
        | ClusterError::Unreachable { .. }
        | ClusterError::Timeout { .. } => ErrorCode::Timeout,
        _ => ErrorCode::Unknown,
    };
    AppendFailure {
        code,
        message: err.to_string(),
    }
}
