//! The data-shard side of the server: one instance per glommio executor.
//!
//! A shard owns the partitions the metadata placed on it (their logs, their
//! maintenance tasks), listens on its own port for the framed TCP protocol,
//! and takes appends from the control core's ring. Nothing here is shared
//! with another core: the state is `Rc`/`RefCell` on this executor, and the
//! only ways out are the ring to the control core and client sockets.

mod access;
mod cursors;
pub mod isr;
mod leader_client;
mod limits;
mod native;
mod partitions;
pub mod replication;
mod sendfile;
pub mod services;

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::oneshot;
use futures::FutureExt;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::{Latency, Shares};
use shards::batch::ValidBatch;
use shards::error::{DecodeError, LogError};
use shards::log::{CommitMode, LogConfig, PartitionLog, SyncPolicy};
use shards::maintenance::{spawn_maintenance, MaintenancePolicy};
use shards::retention::RetentionPolicy;
use shards::ring::{RingReceiver, RingSender};
use shards::types::ShardId;

use crate::cluster::{ClusterError, MetadataLease};
use crate::cores::{
    AdminReply, AdminRequest, AppendFailure, AppendRequest, CommitLevel, Committed, FromShard,
    PartitionEntry, PartitionFailure, PartitionKey, PartitionSettings, PartitionStatus,
    PartitionTable, ShardStats, ToShard, FSYNC_BUCKETS_US,
};
use crate::limits::{ConnectionGate, Limits};
use crate::model::{MetadataCommand, MetadataResponse, NodeId};
use crate::protocol::error_code::ErrorCode;
use replication::Replication;

/// A stream with a retention limit gets segments of at most a quarter of the
/// limit (bytes or age), so it never keeps more than ~1.25× what it asked for.
pub const RETENTION_SEGMENTS_PER_LIMIT: u64 = 4;
/// Smallest segment chosen for a byte limit (smaller limits round up).
pub const SEGMENT_BYTES_FOR_LIMITS_MIN: u64 = 1 << 20;
/// Shortest segment age chosen for an age limit.
pub const SEGMENT_AGE_FOR_LIMITS_MIN: Duration = Duration::from_secs(1);
/// Segment size of compacted streams: compaction only rewrites sealed
/// segments, so they must seal long before the 1 GiB default.
pub const COMPACTED_SEGMENT_BYTES_MAX: u64 = 64 << 20;

/// Messages a shard may queue for the control core before its tasks wait.
pub const OUTBOX_CAPACITY: usize = 4096;
/// Most ring messages handled per wake-up of the command loop.
pub const COMMANDS_PER_WAKE_MAX: usize = 256;
/// Relative weight of retention/compaction against serving (which has 1000).
pub const MAINTENANCE_SHARES: usize = 50;
/// How long closing a partition waits for in-flight users, in rounds of
/// `CLOSE_WAIT_ROUND` (5 s in all).
const CLOSE_WAIT_ROUNDS_MAX: usize = 500;
const CLOSE_WAIT_ROUND: Duration = Duration::from_millis(10);
/// How long a shutdown waits for received appends, in `CLOSE_WAIT_ROUND`s
/// (30 s in all).
const SHUTDOWN_APPEND_WAIT_ROUNDS_MAX: usize = 3000;
/// Pause between attempts to open a partition whose open failed (e.g. no
/// space for its directory or first segment); appends to it are answered
/// with the open error (`DiskFull`) meanwhile.
pub const PARTITION_OPEN_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// What a shard needs to know about its node.
#[derive(Clone, Debug)]
pub struct ShardSettings {
    pub data_dir: PathBuf,
    /// Shard 0's address; shard k listens on port + k.
    pub base_addr: SocketAddr,
    pub shard_count: u32,
    pub sync: SyncPolicy,
    pub segment_bytes: u64,
    /// Preallocation step of the active segments.
    pub segment_preallocate_step_bytes: u64,
    /// Credential checks of the TCP protocol (read-only, shared).
    pub auth: std::sync::Arc<crate::auth::Authenticator>,
    /// Time between retention/compaction rounds of each partition.
    pub maintenance_interval: Duration,
    pub limits: Limits,
    /// Node-wide connection admission, shared by every shard.
    pub gate: Arc<ConnectionGate>,
    /// A follower that has not caught up for this long leaves the ISR.
    pub replica_lag_time_max: Duration,
}

/// `base + shard`, saturating. `shard` comes from the cluster metadata:
/// a partition placed on nodes with more shards than this one names a
/// shard this node's port range may not reach.
fn shard_port(base: u16, shard: ShardId) -> u16 {
    shard.port(base).unwrap_or(u16::MAX)
}

impl ShardSettings {
    pub fn port_of(&self, shard: ShardId) -> u16 {
        shard_port(self.base_addr.port(), shard)
    }

    fn partition_dir(&self, entry: &PartitionEntry) -> PathBuf {
        partition_dir(&self.data_dir, &entry.stream, entry.key)
    }
}

/// Characters of the stream name kept in its directory name (the id makes
/// it unique; the name is for operators, and a path component must stay
/// under 255 bytes).
const DIR_NAME_STREAM_CHARS_MAX: usize = 200;

/// `<data>/partitions/<stream>-<stream id>/<partition>`: the stream id makes
/// a deleted-then-recreated stream start from empty directories.
pub fn partition_dir(data_dir: &std::path::Path, stream: &str, key: PartitionKey) -> PathBuf {
    let name: String = stream.chars().take(DIR_NAME_STREAM_CHARS_MAX).collect();
    data_dir
        .join("partitions")
        .join(format!("{name}-{}", key.stream_id.get()))
        .join(key.partition.to_string())
}

/// The two ring ends a shard is given at start-up.
pub struct ShardLink {
    pub from_control: RingReceiver<ToShard>,
    pub to_control: RingSender<FromShard>,
}

/// A partition this shard owns.
pub struct LocalPartition {
    pub key: PartitionKey,
    pub stream: String,
    pub partition: u32,
    pub log: Rc<PartitionLog>,
    /// Leader or follower, per the partition table.
    pub replication: Replication,
}

/// A partition placed on this shard whose open failed.
#[derive(Clone, Debug)]
struct Unopened {
    /// What appends to it are answered.
    failure: AppendFailure,
    /// Its directory, removed when the partition leaves the table (the open
    /// may have made it, or part of a segment).
    dir: PathBuf,
}

/// Where a (stream, partition) named by a client lives.
pub enum Lookup {
    Local(Rc<LocalPartition>),
    /// Placed here, but its open failed (and is being retried): the error
    /// to answer with, e.g. `DiskFull`.
    Unavailable(AppendFailure),
    OtherShard {
        port: u16,
    },
    /// The partition exists but this node holds no replica of it: the
    /// client must go to its leader (answered `NotLeader`, naming it).
    OtherNode,
    PartitionNotFound,
    StreamNotFound,
}

pub struct Shard {
    pub id: ShardId,
    pub settings: ShardSettings,
    partitions: RefCell<HashMap<PartitionKey, Rc<LocalPartition>>>,
    /// Partitions placed on this shard whose open failed, with the error;
    /// a task per entry retries the open (see `retry_open`).
    unopened: RefCell<HashMap<PartitionKey, Unopened>>,
    /// The partition table applied last (a partition opened by a retry
    /// takes its role from it).
    last_table: RefCell<Option<Rc<PartitionTable>>>,
    /// Every partition of the node by name, for lookups and wrong-shard hints.
    names: RefCell<HashMap<String, Vec<PartitionEntry>>>,
    /// Client addresses of every node (shard 0), from the latest table.
    node_client_addrs: RefCell<std::collections::BTreeMap<NodeId, String>>,
    outbox: LocalSender<FromShard>,
    pub stats: RefCell<ShardStats>,
    maintenance_queue: glommio::TaskQueueHandle,
    /// Appends received from the control core and not yet answered; a
    /// shutdown waits for them (they are counted when received, before
    /// their task first runs).
    appends_in_flight: std::cell::Cell<usize>,
    /// Credentials and this shard's copy of the ACLs.
    access: access::ShardAccess,
    /// This node's id, from the last partition table.
    local_node: std::cell::Cell<NodeId>,
    /// This node's metadata lease, as the control core last sent it: a
    /// partition is led only while it holds (`cluster::lease`).
    lease: std::cell::Cell<MetadataLease>,
    /// Whether the roles were last assigned with the lease holding; when
    /// the lease is back the roles are assigned again ([`partitions::apply_lease`]).
    roles_confirmed: std::cell::Cell<bool>,
    /// Tasks waiting for the next lease message (acks paused by a lapse).
    lease_waiters: RefCell<Vec<std::task::Waker>>,
    /// Cursor maps of the cursor partitions this shard owns.
    cursors: cursors::CursorTables,
}

impl Shard {
    pub fn lookup(&self, stream: &str, partition: u32) -> Lookup {
        let names = self.names.borrow();
        let Some(entries) = names.get(stream) else {
            return Lookup::StreamNotFound;
        };
        let Some(entry) = entries.iter().find(|e| e.partition == partition) else {
            return Lookup::PartitionNotFound;
        };
        // Before the shard check: `entry.shard` is a shard of the replica
        // nodes, and a port of this node would be the wrong place to send
        // the client.
        if !entry.replicas.contains(&self.local_node.get()) {
            return Lookup::OtherNode;
        }
        if entry.shard != self.id {
            return Lookup::OtherShard {
                port: self.settings.port_of(entry.shard),
            };
        }
        if let Some(local) = self.partitions.borrow().get(&entry.key) {
            return Lookup::Local(local.clone());
        }
        match self.unopened.borrow().get(&entry.key) {
            Some(unopened) => Lookup::Unavailable(unopened.failure.clone()),
            None => Lookup::PartitionNotFound,
        }
    }

    /// Every partition of stream `name` (any shard, any node), by the last
    /// partition table; empty when there is no such stream.
    pub fn stream_entries(&self, name: &str) -> Vec<PartitionEntry> {
        self.names.borrow().get(name).cloned().unwrap_or_default()
    }

    /// The metadata entry of a partition (leader, epoch, replicas, ISR) as
    /// of the latest partition table.
    pub fn entry(&self, stream: &str, partition: u32) -> Option<PartitionEntry> {
        self.names
            .borrow()
            .get(stream)?
            .iter()
            .find(|e| e.partition == partition)
            .cloned()
    }

    pub fn local_node(&self) -> NodeId {
        self.local_node.get()
    }

    /// Whether this node's metadata is confirmed current now (its lease
    /// holds): the condition of every leader action.
    pub fn metadata_confirmed(&self) -> bool {
        self.lease.get().is_valid_at(std::time::Instant::now())
    }

    /// Resolves at the next lease message the shard applies (renewed or
    /// ended).
    pub async fn lease_changed(&self) {
        let mut registered = false;
        std::future::poll_fn(|cx| {
            if registered {
                return std::task::Poll::Ready(());
            }
            registered = true;
            self.lease_waiters.borrow_mut().push(cx.waker().clone());
            std::task::Poll::Pending
        })
        .await
    }

    /// Asks the control core (metadata) and waits for the answer.
    pub async fn admin(&self, request: AdminRequest) -> AdminReply {
        let (reply, answer) = oneshot::channel();
        let unavailable = || {
            AdminReply::Error(AppendFailure {
                code: ErrorCode::ShuttingDown,
                message: "the control core is not reachable".into(),
            })
        };
        if self
            .outbox
            .send(FromShard::Admin { request, reply })
            .await
            .is_err()
        {
            return unavailable();
        }
        answer.await.unwrap_or_else(|_| unavailable())
    }

    /// What this shard knows of partition `key` now: its own log's
    /// watermarks and the epoch of the partition table it applied, or why
    /// it could not be opened.
    pub fn partition_status(&self, key: PartitionKey) -> Option<PartitionStatus> {
        if let Some(unopened) = self.unopened.borrow().get(&key) {
            return Some(PartitionStatus {
                open_failure: Some(unopened.failure.clone()),
                ..PartitionStatus::default()
            });
        }
        let local = self.partitions.borrow().get(&key).cloned()?;
        let leader_epoch = self
            .names
            .borrow()
            .get(&local.stream)
            .and_then(|entries| entries.iter().find(|e| e.key == key))
            .map_or(0, |entry| entry.leader_epoch);
        Some(PartitionStatus {
            high_watermark: local.log.high_watermark(),
            log_start: local.log.log_start_offset(),
            log_end: local.log.log_end_offset(),
            leader_epoch,
            replicas: replication::replica_progress(&local),
            failure: local.log.failure().map(|f| PartitionFailure {
                cause: f.cause,
                at: f.at,
            }),
            open_failure: None,
        })
    }

    /// Asks the control core to write `command` through the metadata leader.
    pub async fn propose(
        &self,
        command: MetadataCommand,
    ) -> Result<MetadataResponse, ClusterError> {
        let (reply, answer) = oneshot::channel();
        let unavailable = || ClusterError::Rejected {
            reason: "the control core is not reachable".into(),
        };
        if self
            .outbox
            .send(FromShard::Propose { command, reply })
            .await
            .is_err()
        {
            return Err(unavailable());
        }
        answer.await.unwrap_or_else(|_| Err(unavailable()))
    }

    /// "led by node N at HOST:PORT" for a partition, for NotLeader errors.
    pub fn leader_hint(&self, stream: &str, partition: u32) -> String {
        let names = self.names.borrow();
        let Some(entry) = names
            .get(stream)
            .and_then(|entries| entries.iter().find(|e| e.partition == partition))
        else {
            return "its leader is unknown here (refresh metadata)".into();
        };
        let addr = self
            .node_client_addrs
            .borrow()
            .get(&entry.leader)
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .and_then(|a| Some(SocketAddr::new(a.ip(), entry.shard.port(a.port())?)));
        match addr {
            Some(addr) => format!("it is led by node {} at {addr}", entry.leader),
            None => format!("it is led by node {}", entry.leader),
        }
    }

    async fn send_to_control(&self, message: FromShard) {
        // Fails only when the forwarder is gone, i.e. during shutdown.
        let _ = self.outbox.send(message).await;
    }

    fn snapshot_stats(&self) -> ShardStats {
        let mut stats = self.stats.borrow().clone();
        let partitions = self.partitions.borrow();
        stats.shard = self.id;
        stats.partitions = partitions.len() as u64;
        stats.fsync_buckets = vec![0; FSYNC_BUCKETS_US.len() + 1];
        stats.fsync_sum_us = 0;
        stats.failed_partitions = 0;
        for partition in partitions.values() {
            let fsync = partition.log.fsync_stats();
            for (i, count) in fsync.buckets.iter().enumerate() {
                if let Some(slot) = stats.fsync_buckets.get_mut(i) {
                    *slot += count;
                }
            }
            stats.fsync_sum_us += fsync.sum_us;
            stats.failed_partitions += u64::from(partition.log.is_failed());
        }
        stats
    }
}

/// Runs one shard until the control core says `Shutdown` (or goes away).
pub async fn run_shard(shard_id: ShardId, settings: ShardSettings, link: ShardLink) {
    let ShardLink {
        mut from_control,
        to_control,
    } = link;
    let (outbox, outbox_rx) = local_channel::new_bounded(OUTBOX_CAPACITY);
    let forwarder = glommio::spawn_local(forward_to_control(outbox_rx, to_control)).detach();
    let maintenance_queue = glommio::executor().create_task_queue(
        Shares::Static(MAINTENANCE_SHARES),
        Latency::NotImportant,
        "maintenance",
    );
    let shard = Rc::new(Shard {
        id: shard_id,
        settings: settings.clone(),
        partitions: RefCell::new(HashMap::new()),
        unopened: RefCell::new(HashMap::new()),
        last_table: RefCell::new(None),
        names: RefCell::new(HashMap::new()),
        node_client_addrs: RefCell::new(Default::default()),
        outbox,
        stats: RefCell::new(ShardStats::default()),
        maintenance_queue,
        appends_in_flight: std::cell::Cell::new(0),
        access: access::ShardAccess::new(settings.auth.clone()),
        local_node: std::cell::Cell::new(NodeId::default()),
        lease: std::cell::Cell::new(MetadataLease::NONE),
        roles_confirmed: std::cell::Cell::new(false),
        lease_waiters: RefCell::new(Vec::new()),
        cursors: cursors::CursorTables::default(),
    });
    let addr = SocketAddr::new(settings.base_addr.ip(), settings.port_of(shard_id));
    let listener = match glommio::net::TcpListener::bind(addr) {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(shard = shard_id.0, %addr, error = %err,
                "cannot listen; is another process using the port? (see --listen)");
            shard
                .send_to_control(FromShard::Stopped { shard: shard_id })
                .await;
            drop(shard);
            let _ = forwarder.await;
            return;
        }
    };
    tracing::info!(shard = shard_id.0, %addr, "shard listening");
    let acceptor = glommio::spawn_local(native::accept_loop(shard.clone(), listener)).detach();

    let mut commands = Vec::with_capacity(COMMANDS_PER_WAKE_MAX);
    'serve: loop {
        commands.clear();
        if from_control
            .recv_many(&mut commands, COMMANDS_PER_WAKE_MAX)
            .await
            == 0
        {
            break; // control core gone
        }
        for command in commands.drain(..) {
            match command {
                ToShard::Table(table) => partitions::apply_table(&shard, table).await,
                ToShard::Lease(lease) => partitions::apply_lease(&shard, lease).await,
                ToShard::Append(request) => {
                    shard
                        .appends_in_flight
                        .set(shard.appends_in_flight.get() + 1);
                    glommio::spawn_local(append(shard.clone(), request)).detach();
                }
                ToShard::PartitionStatus { key, reply } => {
                    let _ = reply.send(shard.partition_status(key));
                }
                ToShard::Stats(reply) => {
                    let _ = reply.send(shard.snapshot_stats());
                }
                ToShard::Cursor(request) => {
                    glommio::spawn_local(cursors::serve_forwarded(shard.clone(), request)).detach();
                }
                ToShard::Barrier(reply) => {
                    let _ = reply.send(());
                }
                ToShard::Nudge => {}
                ToShard::Shutdown => break 'serve,
            }
        }
    }
    acceptor.cancel();
    // Finish what was received before the shutdown: those publishers get
    // their acks (bounded wait).
    for _ in 0..SHUTDOWN_APPEND_WAIT_ROUNDS_MAX {
        if shard.appends_in_flight.get() == 0 {
            break;
        }
        glommio::timer::sleep(CLOSE_WAIT_ROUND).await;
    }
    partitions::close_all(&shard).await;
    shard
        .send_to_control(FromShard::Stopped { shard: shard_id })
        .await;
    drop(shard);
    let _ = forwarder.await;
}

/// Moves outbox messages onto the ring, several per wake-up.
async fn forward_to_control(outbox: LocalReceiver<FromShard>, mut ring: RingSender<FromShard>) {
    let mut batch = Vec::new();
    while let Some(first) = outbox.recv().await {
        batch.push(first);
        while batch.len() < COMMANDS_PER_WAKE_MAX {
            match outbox.recv().now_or_never() {
                Some(Some(more)) => batch.push(more),
                _ => break,
            }
        }
        // `Stopped` is the shard's last word (the control core stops
        // reading after it): end here rather than wait for every sender to
        // drop, which a client connection still open at shutdown (its task
        // holds the shard) would delay without bound.
        let stopped = batch.iter().any(|m| matches!(m, FromShard::Stopped { .. }));
        if ring.send_many(&mut batch).await.is_err() || stopped {
            return;
        }
    }
}

async fn append(shard: Rc<Shard>, request: AppendRequest) {
    let AppendRequest {
        key,
        stream,
        partition,
        batch,
        acks,
        level,
    } = request;
    let local = shard.partitions.borrow().get(&key).cloned();
    let unopened = shard.unopened.borrow().get(&key).cloned();
    let bytes = batch.len() as u64;
    let result = match (local, unopened) {
        (None, Some(unopened)) => Err(unopened.failure),
        (None, None) => Err(AppendFailure {
            code: ErrorCode::PartitionNotFound,
            message: format!("partition {partition} of stream {stream} is not on this shard"),
        }),
        (Some(local), _) => append_committed(&shard, &local, ValidBatch::check(batch), level)
            .await
            .map(|a| Committed {
                base_offset: a.base_offset,
                leader_epoch: a.leader_epoch,
            }),
    };
    {
        let mut stats = shard.stats.borrow_mut();
        match &result {
            Ok(_) => {
                stats.appends += 1;
                stats.append_records += acks.len() as u64;
                stats.append_bytes += bytes;
            }
            Err(_) => stats.append_errors += 1,
        }
    }
    shard
        .send_to_control(FromShard::Appended {
            stream,
            partition,
            result,
            acks,
        })
        .await;
    shard
        .appends_in_flight
        .set(shard.appends_in_flight.get().saturating_sub(1));
}

/// Appends `batch` as the partition leader and waits until it is committed
/// at `level`: refused on a non-leader (NotLeader) and, for `All`, when the
/// ISR is smaller than `min_insync_replicas` (NotEnoughReplicas).
///
/// `batch` comes already validated ([`ValidBatch::check`]), or with the
/// reason it is not: that reason is answered (`InvalidBatch`) only once the
/// append is admitted, so a malformed batch sent to a follower still gets
/// `NotLeader`, as when the log itself validated it.
pub async fn append_committed(
    shard: &Shard,
    local: &LocalPartition,
    batch: Result<ValidBatch, DecodeError>,
    level: CommitLevel,
) -> Result<LeaderCommit, AppendFailure> {
    let admitted = replication::admit_append(shard, local, level, || {
        shard.leader_hint(&local.stream, local.partition)
    })?;
    let failure = |err: LogError| AppendFailure {
        code: services::partition::log_error_code(&err),
        message: err.to_string(),
    };
    let batch = batch.map_err(|err| failure(LogError::InvalidBatch(err)))?;
    let appended = local.log.append_valid(batch).await.map_err(failure)?;
    replication::commit_appended(
        shard,
        local,
        appended.last_offset,
        level,
        admitted.generation,
    )
    .await?;
    Ok(LeaderCommit {
        base_offset: appended.base_offset,
        last_offset: appended.last_offset,
        leader_epoch: admitted.epoch,
    })
}

/// An append this node committed as the partition leader.
#[derive(Clone, Copy, Debug)]
pub struct LeaderCommit {
    pub base_offset: shards::types::Offset,
    pub last_offset: shards::types::Offset,
    /// The leader epoch it was written and acked in.
    pub leader_epoch: u32,
}

#[cfg(test)]
mod tests {
    use super::{shard_port, ShardId};

    #[test]
    fn shard_port_of_a_bigger_node_saturates_not_a_panic() {
        // This node listens at 65000; the metadata places a partition on
        // shard 600 of nodes with more shards: 65000 + 600 overflowed u16.
        assert_eq!(shard_port(7400, ShardId(3)), 7403);
        assert_eq!(shard_port(65_000, ShardId(600)), u16::MAX);
        assert_eq!(shard_port(1, ShardId(u32::MAX)), u16::MAX);
    }
}
