//! Partition replication on the owning shard: the role each local partition
//! plays (leader or follower, per leader epoch), the leader's follower
//! tracking, high watermark and ISR proposals, the follower's fetch task,
//! and the ack-`all` wait.
//!
//! ```text
//!  leader shard                                   follower shard (other node)
//!  append → pwrite → fsync (stable)               follow task:
//!      ▲                 │                          truncate divergent tail
//!      │    Fetch(replica_id, epoch, offset=LEO)  ◄─ loop { fetch at log end
//!      │ record LEO ──► HW = min(stable, ISR LEOs)   append_replicated (fsynced)
//!      └ acks `all` once HW > batch ─── FetchResponse(HW) ──► HW = min(HW, own end)
//!                                                      checkpoint HW }
//! ```
//!
//! Everything here runs on the shard that owns the partition; state is
//! `RefCell`/`Cell` on that executor, and no borrow is held across an
//! `.await`. Roles change only in [`apply_entry`], from the partition table
//! the metadata sends and the node's metadata lease; each change bumps a
//! generation that ends the old role's tasks and fails its ack-`all`
//! waiters with NotLeader, so a node that lost leadership never acks a
//! write it can no longer commit.
//!
//! A partition the table says this node leads is led only on metadata
//! confirmed current, i.e. while the node's metadata lease holds
//! (`cluster::lease`):
//! - a leader role starts only with the lease: after a restart the
//!   metadata may be stale and another node may lead a newer epoch, so
//!   until the metadata leader confirms it the partition is
//!   `RoleKey::Unconfirmed` (no appends, no replica fetches, no
//!   OffsetForLeaderEpoch answers);
//! - a leader whose lease lapses (a metadata election, a cut-off) keeps
//!   its role and tasks, but the lease is checked against the clock where
//!   it matters: no append is admitted, the high watermark does not move
//!   (consumers read nothing new), no ISR change is proposed, and no append
//!   is acked until the lease is back — in the same role generation, so
//!   no other node can have led meanwhile — or the role changes
//!   (NotLeader) or the ack wait times out.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use futures::FutureExt;
use shards::error::LogError;
use shards::log::PartitionLog;
use shards::types::{LeaderEpoch, Offset, ShardId};

use super::isr::{ReplicaLag, ReplicaTracker};
use super::leader_client::{Fetched, LeaderClientError, LeaderConnection, ReplicaFetch};
use super::services::ServiceError;
use super::{LocalPartition, Shard};
use crate::cores::{AppendFailure, CommitLevel, PartitionEntry, PartitionTable, ReplicaProgress};
use crate::model::{MetadataCommand, MetadataResponse, NodeId};
use crate::protocol::error_code::ErrorCode;

/// Longest an ack-`all` append waits for the ISR before it is answered
/// with Timeout (outcome unknown to the publisher).
pub const ACK_ALL_WAIT_MAX: Duration = Duration::from_secs(30);
/// Long-poll time of a follower's fetch: bounds how late a follower notices
/// a high watermark that moved without new data.
pub const REPLICA_FETCH_WAIT: Duration = Duration::from_millis(500);
/// Bytes a follower asks for per fetch (memory per followed partition).
pub const REPLICA_FETCH_BYTES: u32 = 4 << 20;
/// Connecting to a leader gives up after this long (then backs off).
pub const LEADER_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Reconnect back-off: doubles from the minimum to the maximum.
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// A follower checkpoints its high watermark at most this often (a
/// checkpoint is write + fsync + rename + directory fsync); the close of
/// the log writes the final one.
pub const HW_CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);
/// How often a leader re-evaluates its ISR, as a fraction of the lag time
/// (a follower is shrunk at most lag time / 4 late), within these bounds.
const ISR_CHECKS_PER_LAG_TIME: u32 = 4;
const ISR_CHECK_INTERVAL_MIN: Duration = Duration::from_millis(25);
/// After an ISR proposal, the same change is not proposed again for this
/// long (the committed table may take a moment to arrive).
pub const ISR_PROPOSAL_RETRY: Duration = Duration::from_millis(500);

/// The replication side of one local partition.
#[derive(Default)]
pub struct Replication {
    role: RefCell<Role>,
    /// Bumped on every role change (and on close).
    generation: Cell<u64>,
    /// Tasks waiting for the generation to move (ack-`all` waiters).
    waiters: RefCell<Vec<Waker>>,
    /// While [`Role::Inactive`] because the lease does not hold: the epoch
    /// the table says this node leads (tells `Unconfirmed` from `Inactive`).
    inactive_key: Cell<Option<u32>>,
}

#[derive(Default)]
enum Role {
    /// No assignment applied yet, or the partition is closing.
    #[default]
    Inactive,
    Leader(LeaderRole),
    Follower(FollowerRole),
}

struct LeaderRole {
    epoch: u32,
    min_insync_replicas: u32,
    tracker: ReplicaTracker,
    /// Version of the committed ISR the tracker holds: proposals name it.
    isr_version: u64,
    proposal_in_flight: bool,
    last_proposal_at: Option<Instant>,
    /// Periodic ISR check and leader HW checkpoint.
    checker: Option<glommio::Task<()>>,
}

struct FollowerRole {
    leader: NodeId,
    epoch: u32,
    leader_addr: Option<SocketAddr>,
    task: Option<glommio::Task<()>>,
}

/// What identifies a role: a change of any of it restarts replication.
#[derive(Clone, Debug, PartialEq, Eq)]
enum RoleKey {
    Inactive,
    Leader {
        epoch: u32,
        replicas: Vec<NodeId>,
    },
    Follower {
        leader: NodeId,
        epoch: u32,
        leader_addr: Option<SocketAddr>,
    },
    /// The table says this node leads at `epoch`, but the node's metadata
    /// lease does not hold: it may be stale, so nothing is led (the role is
    /// [`Role::Inactive`]) until a confirmation round renews the lease.
    Unconfirmed {
        epoch: u32,
    },
}

impl Replication {
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    fn bump(&self) {
        self.generation.set(self.generation.get() + 1);
        for waker in self.waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// Resolves once the role changes after `generation`.
    async fn changed_since(&self, generation: u64) {
        poll_fn(|cx| {
            if self.generation.get() != generation {
                return Poll::Ready(());
            }
            let mut waiters = self.waiters.borrow_mut();
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    fn key(&self) -> RoleKey {
        match &*self.role.borrow() {
            Role::Inactive => self
                .inactive_key
                .get()
                .map_or(RoleKey::Inactive, |epoch| RoleKey::Unconfirmed { epoch }),
            Role::Leader(leader) => RoleKey::Leader {
                epoch: leader.epoch,
                replicas: leader_replicas(&leader.tracker),
            },
            Role::Follower(follower) => RoleKey::Follower {
                leader: follower.leader,
                epoch: follower.epoch,
                leader_addr: follower.leader_addr,
            },
        }
    }

    /// Follower progress as the leader sees it; `None` on a follower.
    pub fn progress(&self, leader_end: Offset) -> Option<Vec<ReplicaLag>> {
        match &*self.role.borrow() {
            Role::Leader(leader) => Some(leader.tracker.progress(leader_end)),
            _ => None,
        }
    }

    pub fn is_leader(&self) -> bool {
        matches!(&*self.role.borrow(), Role::Leader(_))
    }
}

/// Every replica's progress where this node leads the partition (the
/// leader first); empty on a follower. A follower that has not fetched
/// from this leader yet shows log end 0.
pub fn replica_progress(local: &LocalPartition) -> Vec<ReplicaProgress> {
    local
        .replication
        .progress(local.log.log_end_offset())
        .unwrap_or_default()
        .into_iter()
        .map(|lag| ReplicaProgress {
            node: lag.node,
            log_end: lag.log_end.unwrap_or(Offset::ZERO),
            lag: lag.lag,
            in_sync: lag.in_sync,
        })
        .collect()
}

fn leader_replicas(tracker: &ReplicaTracker) -> Vec<NodeId> {
    tracker.replicas().to_vec()
}

/// The address of `node`'s shard `shard` from the table (`None` when the
/// node registered no address or it is not an IP address and port).
fn shard_addr(table: &PartitionTable, node: NodeId, shard: ShardId) -> Option<SocketAddr> {
    let base: SocketAddr = table.node_client_addrs.get(&node)?.parse().ok()?;
    let port = shard.port(base.port())?;
    Some(SocketAddr::new(base.ip(), port))
}

/// The role `table` gives this node for `entry`; `confirmed`: the node's
/// metadata lease holds (else a partition it leads in `table` is not led).
fn role_key(entry: &PartitionEntry, table: &PartitionTable, confirmed: bool) -> RoleKey {
    let local = table.local_node;
    if !entry.replicas.contains(&local) {
        RoleKey::Inactive
    } else if entry.leader == local && !confirmed {
        RoleKey::Unconfirmed {
            epoch: entry.leader_epoch,
        }
    } else if entry.leader == local {
        RoleKey::Leader {
            epoch: entry.leader_epoch,
            replicas: entry.replicas.clone(),
        }
    } else {
        RoleKey::Follower {
            leader: entry.leader,
            epoch: entry.leader_epoch,
            leader_addr: shard_addr(table, entry.leader, entry.shard),
        }
    }
}

/// Brings a local partition's role in line with its table entry and the
/// metadata lease (`confirmed`: it holds): a new leader epoch or leader,
/// new replicas, a new leader address or a lease gained or lost restart
/// replication; an ISR or `min_insync_replicas` change updates the leader
/// in place (and may advance the high watermark).
pub async fn apply_entry(
    shard: &Rc<Shard>,
    local: &Rc<LocalPartition>,
    entry: &PartitionEntry,
    table: &PartitionTable,
    confirmed: bool,
) {
    let mut key = role_key(entry, table, confirmed);
    let replication = &local.replication;
    if let (
        RoleKey::Unconfirmed { epoch },
        RoleKey::Leader {
            epoch: led,
            replicas,
        },
    ) = (&key, replication.key())
    {
        // Confirmed once at this epoch: a lapse of the lease does not end
        // the role, it pauses it (checked at every use).
        if *epoch == led && replicas == entry.replicas {
            key = RoleKey::Leader {
                epoch: led,
                replicas,
            };
        }
    }
    if replication.key() == key {
        if let Role::Leader(leader) = &mut *replication.role.borrow_mut() {
            leader.tracker.set_isr(&entry.isr);
            leader.isr_version = entry.isr_version;
            leader.min_insync_replicas = entry.min_insync_replicas;
        }
        advance_leader_high_watermark(shard, local);
        return;
    }
    stop(local).await;
    let generation = replication.generation();
    let role = match key {
        RoleKey::Inactive => Role::Inactive,
        RoleKey::Unconfirmed { epoch } => {
            tracing::info!(stream = %local.stream, partition = local.partition, epoch,
                "this node leads the partition in its metadata, which is not confirmed current \
                 (no metadata lease): not leading until the metadata leader confirms it");
            replication.inactive_key.set(Some(epoch));
            Role::Inactive
        }
        RoleKey::Leader { epoch, replicas } => {
            // Stamp the new epoch before the first append of this leader.
            local
                .log
                .set_leader_epoch(LeaderEpoch::from_metadata(epoch));
            let tracker = ReplicaTracker::new(
                table.local_node,
                &replicas,
                &entry.isr,
                local.log.log_end_offset(),
                Instant::now(),
            );
            tracing::info!(stream = %local.stream, partition = local.partition, epoch,
                isr = ?entry.isr, log_end = local.log.log_end_offset().0, "leading partition");
            let checker =
                glommio::spawn_local(check_isr_loop(shard.clone(), local.clone(), generation));
            Role::Leader(LeaderRole {
                epoch,
                min_insync_replicas: entry.min_insync_replicas,
                tracker,
                isr_version: entry.isr_version,
                proposal_in_flight: false,
                last_proposal_at: None,
                checker: Some(checker),
            })
        }
        RoleKey::Follower {
            leader,
            epoch,
            leader_addr,
        } => {
            tracing::info!(stream = %local.stream, partition = local.partition, leader = leader.get(), epoch,
                addr = ?leader_addr, "following partition");
            let task = leader_addr.map(|addr| {
                glommio::spawn_local(follow(
                    shard.clone(),
                    local.clone(),
                    Following {
                        local_node: table.local_node,
                        leader,
                        epoch,
                        addr,
                        generation,
                    },
                ))
            });
            if leader_addr.is_none() {
                tracing::warn!(stream = %local.stream, partition = local.partition,
                    leader = leader.get(),
                    "the leader has no usable client address in the metadata; not fetching");
            }
            Role::Follower(FollowerRole {
                leader,
                epoch,
                leader_addr,
                task,
            })
        }
    };
    *replication.role.borrow_mut() = role;
    advance_leader_high_watermark(shard, local);
}

/// Ends the current role: its tasks are cancelled (and have stopped when
/// this returns), its ack-`all` waiters fail with NotLeader.
pub async fn stop(local: &LocalPartition) {
    let replication = &local.replication;
    replication.bump();
    replication.inactive_key.set(None);
    let old = std::mem::take(&mut *replication.role.borrow_mut());
    let task = match old {
        Role::Inactive => None,
        Role::Leader(mut leader) => leader.checker.take(),
        Role::Follower(mut follower) => follower.task.take(),
    };
    if let Some(task) = task {
        task.cancel().await;
    }
}

/// Leader: the high watermark the ISR allows, applied to the log. Not
/// while the metadata lease has lapsed: a successor may be chosen once it
/// ends, and consumers must not see records it may not have.
pub fn advance_leader_high_watermark(shard: &Shard, local: &LocalPartition) {
    if !shard.metadata_confirmed() {
        return;
    }
    let hw = match &*local.replication.role.borrow() {
        Role::Leader(leader) => leader.tracker.high_watermark(local.log.stable_offset()),
        _ => None,
    };
    if let Some(hw) = hw {
        local.log.advance_high_watermark(hw);
    }
}

/// An append admitted by [`admit_append`]: the role generation it must
/// still be in when it is acked, and the leader epoch it is written in.
#[derive(Clone, Copy, Debug)]
pub struct Admitted {
    pub generation: u64,
    pub epoch: u32,
}

/// Checks that this node may take an append at `level` now; returns the
/// role generation the append must still be in when it is acked.
pub fn admit_append(
    shard: &Shard,
    local: &LocalPartition,
    level: CommitLevel,
    leader_hint: impl FnOnce() -> String,
) -> Result<Admitted, AppendFailure> {
    if !shard.metadata_confirmed() {
        return Err(unconfirmed(local));
    }
    match &*local.replication.role.borrow() {
        Role::Leader(leader) => {
            let isr = leader.tracker.isr().len() as u32;
            if level == CommitLevel::All && isr < leader.min_insync_replicas {
                return Err(AppendFailure {
                    code: ErrorCode::NotEnoughReplicas,
                    message: format!(
                        "partition {} of {} has {isr} in-sync replica(s), min_insync_replicas \
                         is {}; not stored (retry later, or publish with ack policy leader)",
                        local.partition, local.stream, leader.min_insync_replicas
                    ),
                });
            }
            Ok(Admitted {
                generation: local.replication.generation(),
                epoch: leader.epoch,
            })
        }
        _ => Err(AppendFailure {
            code: ErrorCode::NotLeader,
            message: format!(
                "this node does not lead partition {} of {}: {}",
                local.partition,
                local.stream,
                leader_hint()
            ),
        }),
    }
}

/// What an append is told when the node's metadata lease does not hold.
fn unconfirmed(local: &LocalPartition) -> AppendFailure {
    AppendFailure {
        code: ErrorCode::NotLeader,
        message: format!(
            "this node cannot confirm it still leads partition {} of {}: its metadata is not \
             confirmed current by the metadata leader (restarting or cut off); refresh \
             metadata and retry",
            local.partition, local.stream
        ),
    }
}

/// After a local append of offsets up to `last` resolved (durable here):
/// waits until it is committed at `level` (for `All`, the high watermark
/// covers it) *and* the metadata lease holds, while this node still leads
/// in the same role generation. A lease that lapsed meanwhile (a metadata
/// election) only delays the ack: if it comes back in the same generation
/// no other node led in between. A role change answers NotLeader; after
/// [`ACK_ALL_WAIT_MAX`] the answer is Timeout (outcome unknown).
pub async fn commit_appended(
    shard: &Shard,
    local: &LocalPartition,
    last: Offset,
    level: CommitLevel,
    generation: u64,
) -> Result<(), AppendFailure> {
    advance_leader_high_watermark(shard, local);
    // Armed only once the append has to wait: an ack-`leader` append with
    // the lease held (the common case) returns without a timer.
    let mut deadline = None;
    loop {
        if local.replication.generation() != generation {
            return Err(AppendFailure {
                code: ErrorCode::NotLeader,
                message: format!(
                    "leadership of partition {} of {} moved before the write was committed; \
                     its outcome is unknown (refresh metadata and retry on the new leader)",
                    local.partition, local.stream
                ),
            });
        }
        if local.log.is_failed() || local.log.is_closed() {
            return Err(AppendFailure {
                code: ErrorCode::PartitionFailed,
                message: "the partition stopped before the write was committed".into(),
            });
        }
        let committed = level == CommitLevel::Leader || local.log.high_watermark() > last;
        let confirmed = shard.metadata_confirmed();
        if committed && confirmed {
            return Ok(());
        }
        let replicated = async {
            match committed {
                false => local.log.wait_for_data(last).await,
                true => std::future::pending().await,
            }
        }
        .fuse();
        let lease = async {
            match confirmed {
                false => shard.lease_changed().await,
                true => std::future::pending().await,
            }
        }
        .fuse();
        let moved = local.replication.changed_since(generation).fuse();
        let mut deadline = deadline
            .get_or_insert_with(|| Box::pin(glommio::timer::sleep(ACK_ALL_WAIT_MAX).fuse()));
        futures::pin_mut!(replicated, lease, moved);
        futures::select! {
            _ = replicated => {}
            _ = lease => {}
            _ = moved => {}
            _ = deadline => {
                let message = match confirmed {
                    true => format!(
                        "the in-sync replicas did not confirm within {ACK_ALL_WAIT_MAX:?}; \
                         the write may or may not be committed"
                    ),
                    false => format!(
                        "the metadata leader did not confirm this node's leadership within \
                         {ACK_ALL_WAIT_MAX:?}; the write may or may not be committed"
                    ),
                };
                return Err(AppendFailure { code: ErrorCode::Timeout, message });
            }
        }
    }
}

/// Leader side of a replica fetch at `offset` by `node` claiming
/// `epoch`: checks the claim, records the follower's log end and advances
/// the high watermark (and proposes an ISR expansion when it caught up).
pub fn admit_replica_fetch(
    shard: &Rc<Shard>,
    local: &Rc<LocalPartition>,
    node: NodeId,
    epoch: i32,
    offset: Offset,
) -> Result<(), ServiceError> {
    {
        let mut role = local.replication.role.borrow_mut();
        // Served while the lease has lapsed too (the follower keeps up and
        // stays in sync), but the high watermark stays put meanwhile.
        let Role::Leader(leader) = &mut *role else {
            return Err(ServiceError::new(
                ErrorCode::NotLeader,
                format!(
                    "this node does not lead partition {} of {}",
                    local.partition, local.stream
                ),
            ));
        };
        let ours = i64::from(leader.epoch);
        if i64::from(epoch) < ours {
            return Err(ServiceError::new(
                ErrorCode::FencedLeaderEpoch,
                format!("leader epoch {epoch} is older than the current {ours}"),
            ));
        }
        if i64::from(epoch) > ours {
            return Err(ServiceError::new(
                ErrorCode::UnknownLeaderEpoch,
                format!("leader epoch {epoch} is newer than this node's {ours}"),
            ));
        }
        if !leader.tracker.is_replica(node) {
            return Err(ServiceError::new(
                ErrorCode::NotReplica,
                format!(
                    "node {node} is not a follower of partition {} of {}",
                    local.partition, local.stream
                ),
            ));
        }
        let leader_end = local.log.log_end_offset();
        if offset > leader_end || offset < local.log.log_start_offset() {
            // The read answers OffsetOutOfRange with the watermarks.
            return Ok(());
        }
        leader
            .tracker
            .record_fetch(node, offset, leader_end, Instant::now());
    }
    advance_leader_high_watermark(shard, local);
    maybe_propose_isr(shard, local);
    Ok(())
}

/// Leader: the next replica fetch answer, up to the log end. At the end
/// of the log it long-polls until new data is written, the high watermark
/// moves past what the follower was last told, or `max_wait` passes.
pub async fn read_for_replica(
    log: &PartitionLog,
    start: Offset,
    max_bytes: u64,
    max_wait: Duration,
) -> Result<Option<shards::log::ReadSlice>, LogError> {
    if let Some(slice) = log.read_for_replica(start, max_bytes)? {
        return Ok(Some(slice));
    }
    if max_wait.is_zero() {
        return Ok(None);
    }
    let hw_seen = log.high_watermark();
    let timer = glommio::timer::sleep(max_wait).fuse();
    let written = log.wait_for_log_end(start).fuse();
    let committed = log.wait_for_data(hw_seen).fuse();
    futures::pin_mut!(timer, written, committed);
    futures::select! {
        _ = written => {},
        _ = committed => {},
        _ = timer => {},
    }
    log.read_for_replica(start, max_bytes)
}

/// Proposes the ISR the tracker wants, if it differs from the committed
/// one and no proposal is in flight or fresh.
fn maybe_propose_isr(shard: &Rc<Shard>, local: &Rc<LocalPartition>) {
    if !shard.metadata_confirmed() {
        // The ISR this leader tracks may be stale; so may its leadership.
        return;
    }
    let now = Instant::now();
    let command = {
        let mut role = local.replication.role.borrow_mut();
        let Role::Leader(leader) = &mut *role else {
            return;
        };
        if leader.proposal_in_flight
            || leader
                .last_proposal_at
                .is_some_and(|at| now.saturating_duration_since(at) < ISR_PROPOSAL_RETRY)
        {
            return;
        }
        let hw = local.log.high_watermark();
        let Some(isr) = leader
            .tracker
            .proposed_isr(now, shard.settings.replica_lag_time_max, hw)
        else {
            return;
        };
        leader.proposal_in_flight = true;
        leader.last_proposal_at = Some(now);
        tracing::info!(stream = %local.stream, partition = local.partition,
            from = ?leader.tracker.isr(), to = ?isr, "proposing ISR change");
        MetadataCommand::UpdateIsr {
            stream: local.stream.clone(),
            stream_id: local.key.stream_id,
            partition: local.partition,
            leader_epoch: leader.epoch,
            isr_version: Some(leader.isr_version),
            isr,
        }
    };
    let generation = local.replication.generation();
    glommio::spawn_local(propose_isr(
        shard.clone(),
        local.clone(),
        command,
        generation,
    ))
    .detach();
}

async fn propose_isr(
    shard: Rc<Shard>,
    local: Rc<LocalPartition>,
    command: MetadataCommand,
    generation: u64,
) {
    let outcome = shard.propose(command).await;
    match &outcome {
        Ok(MetadataResponse::Ok) => {}
        Ok(MetadataResponse::Conflict { reason }) => {
            tracing::info!(stream = %local.stream, partition = local.partition, %reason,
                "ISR change refused (leadership or ISR moved on); waiting for the new table")
        }
        other => tracing::warn!(stream = %local.stream, partition = local.partition,
            outcome = ?other, "ISR change failed"),
    }
    if local.replication.generation() == generation {
        if let Role::Leader(leader) = &mut *local.replication.role.borrow_mut() {
            leader.proposal_in_flight = false;
        }
    }
}

/// Leader: re-evaluates the ISR every fraction of the lag time (a silent
/// follower sends no fetch that would trigger it) and checkpoints the
/// high watermark when it moved.
async fn check_isr_loop(shard: Rc<Shard>, local: Rc<LocalPartition>, generation: u64) {
    let interval =
        (shard.settings.replica_lag_time_max / ISR_CHECKS_PER_LAG_TIME).max(ISR_CHECK_INTERVAL_MIN);
    let mut checkpointed = local.log.high_watermark();
    let mut last_checkpoint = Instant::now();
    while local.replication.generation() == generation && !local.log.is_closed() {
        glommio::timer::sleep(interval).await;
        advance_leader_high_watermark(&shard, &local);
        maybe_propose_isr(&shard, &local);
        let hw = local.log.high_watermark();
        if hw != checkpointed && last_checkpoint.elapsed() >= HW_CHECKPOINT_INTERVAL {
            if let Err(err) = local.log.checkpoint_high_watermark().await {
                tracing::warn!(stream = %local.stream, partition = local.partition,
                    error = %err, "cannot checkpoint the high watermark");
            }
            checkpointed = hw;
            last_checkpoint = Instant::now();
        }
    }
}

/// What a follow task needs to know.
struct Following {
    local_node: NodeId,
    leader: NodeId,
    epoch: u32,
    addr: SocketAddr,
    generation: u64,
}

/// Why one session with the leader ended.
enum SessionEnd {
    /// Reconnect after the back-off (network trouble, leader restarting).
    Retry(String),
    /// The log is closed or failed: stop following.
    Stop,
}

/// Follower: connects to the leader's shard (bounded back-off), truncates
/// the divergent tail once, then fetches and appends until the role ends
/// (the task is cancelled) or the log stops.
async fn follow(shard: Rc<Shard>, local: Rc<LocalPartition>, following: Following) {
    let mut backoff = RECONNECT_BACKOFF_MIN;
    let mut truncated = false;
    let mut last_checkpoint = (local.log.high_watermark(), Instant::now());
    while local.replication.generation() == following.generation {
        let node_token = shard.settings.auth.node_token();
        let connected =
            LeaderConnection::connect(following.addr, LEADER_CONNECT_TIMEOUT, node_token).await;
        let end = match connected {
            Ok(mut connection) => {
                let truncation = if truncated {
                    Ok(())
                } else {
                    truncate_divergent_tail(&local, &following, &mut connection).await
                };
                match truncation {
                    Ok(()) => {
                        truncated = true;
                        backoff = RECONNECT_BACKOFF_MIN;
                        replicate(
                            &shard,
                            &local,
                            &following,
                            &mut connection,
                            &mut last_checkpoint,
                        )
                        .await
                    }
                    Err(end) => end,
                }
            }
            Err(err) => SessionEnd::Retry(err.to_string()),
        };
        match end {
            SessionEnd::Stop => return,
            SessionEnd::Retry(reason) => {
                tracing::debug!(stream = %local.stream, partition = local.partition,
                    leader = following.leader.get(), %reason, ?backoff, "replica fetch interrupted");
                glommio::timer::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
            }
        }
    }
}

/// Rounds of OffsetForLeaderEpoch one truncation may take (each round
/// moves to a smaller epoch, so this bounds a pathological exchange).
const EPOCH_ROUNDS_MAX: usize = 16;

/// Drops the part of the log that may diverge from the leader's before
/// fetching, by leader epoch (KIP-101/279): asks the leader where the
/// follower's latest epoch ends in its log and truncates there (repeating
/// with an older epoch when the leader never had this one). Without epoch
/// information on either side it falls back to the high watermark.
async fn truncate_divergent_tail(
    local: &LocalPartition,
    following: &Following,
    connection: &mut LeaderConnection,
) -> Result<(), SessionEnd> {
    use crate::protocol::offset_for_leader_epoch::EpochQuery;
    use shards::epoch_cache::{follower_truncation_offset, Truncation};
    let log = &local.log;
    let mut asked = log.latest_epoch();
    for _ in 0..EPOCH_ROUNDS_MAX {
        let leader_answer = match asked {
            None => None,
            Some(epoch) => {
                let query = EpochQuery {
                    stream: &local.stream,
                    partition: local.partition,
                    replica_id: Some(following.local_node),
                    leader_epoch: epoch,
                    current_leader_epoch: Some(following.epoch),
                };
                connection
                    .offset_for_leader_epoch(&query, LEADER_CONNECT_TIMEOUT + REPLICA_FETCH_WAIT)
                    .await
                    .map_err(|err| SessionEnd::Retry(err.to_string()))?
            }
        };
        let follower_answer = leader_answer.and_then(|(epoch, _)| log.end_offset_for_epoch(epoch));
        let truncation = follower_truncation_offset(
            leader_answer,
            follower_answer,
            log.log_end_offset(),
            log.high_watermark(),
        );
        let target = truncation.offset();
        if target < log.log_end_offset() {
            let end = log
                .truncate_to(target)
                .await
                .map_err(|_| SessionEnd::Stop)?;
            tracing::info!(stream = %local.stream, partition = local.partition,
                asked_epoch = ?asked, leader_answer = ?leader_answer, truncated_to = end.0,
                "truncated the divergent tail by leader epoch");
        }
        match truncation {
            Truncation::Complete(_) => return Ok(()),
            Truncation::AskAgain { epoch, .. } => asked = Some(epoch),
        }
    }
    Err(SessionEnd::Retry(
        "leader epoch negotiation did not converge".into(),
    ))
}

/// The fallback for a divergence found while fetching: everything above the
/// high watermark (the committed prefix is the same on every replica).
async fn truncate_to_high_watermark(local: &LocalPartition) -> Result<(), LogError> {
    let hw = local.log.high_watermark();
    if local.log.log_end_offset() > hw {
        let end = local.log.truncate_to(hw).await?;
        tracing::info!(stream = %local.stream, partition = local.partition,
            truncated_to = end.0, "truncated the uncommitted tail before following");
    }
    Ok(())
}

/// Fetch/append rounds on one connection until something goes wrong.
async fn replicate(
    shard: &Rc<Shard>,
    local: &LocalPartition,
    following: &Following,
    connection: &mut LeaderConnection,
    last_checkpoint: &mut (Offset, Instant),
) -> SessionEnd {
    let log = &local.log;
    loop {
        // Everything below the log end is durable: only this task appends
        // to a follower's log, and `append_replicated` resolves once synced.
        let offset = log.log_end_offset();
        let request = ReplicaFetch {
            stream: &local.stream,
            partition: local.partition,
            offset,
            replica_id: following.local_node,
            leader_epoch: following.epoch,
            max_bytes: REPLICA_FETCH_BYTES,
            max_wait: REPLICA_FETCH_WAIT,
        };
        let Fetched {
            high_watermark,
            batches,
        } = match connection.fetch(&request).await {
            Ok(fetched) => fetched,
            Err(LeaderClientError::Refused {
                code: ErrorCode::OffsetOutOfRange,
                high_watermark,
                log_start,
                ..
            }) => return out_of_range(local, offset, high_watermark, log_start).await,
            Err(err) => return SessionEnd::Retry(err.to_string()),
        };
        if !batches.is_empty() {
            let bytes = batches.len() as u64;
            match log.append_replicated(&batches).await {
                Ok(_) => shard.stats.borrow_mut().replicated_bytes += bytes,
                Err(LogError::NonContiguous { expected, got }) => {
                    // Our log end falls inside one of the leader's batches:
                    // the logs diverged. Truncate to the committed prefix.
                    tracing::warn!(stream = %local.stream, partition = local.partition,
                        expected = expected.0, got = got.0, "leader batches do not continue our log");
                    return match truncate_to_high_watermark(local).await {
                        Ok(()) => SessionEnd::Retry("diverged".into()),
                        Err(_) => SessionEnd::Stop,
                    };
                }
                Err(err) if log.is_failed() || log.is_closed() => {
                    tracing::error!(stream = %local.stream, partition = local.partition,
                        error = %err, "replicated append failed; stopping");
                    return SessionEnd::Stop;
                }
                Err(err) => return SessionEnd::Retry(err.to_string()),
            }
        }
        log.advance_high_watermark(high_watermark.min(log.log_end_offset()));
        let hw = log.high_watermark();
        if hw != last_checkpoint.0 && last_checkpoint.1.elapsed() >= HW_CHECKPOINT_INTERVAL {
            if let Err(err) = log.checkpoint_high_watermark().await {
                tracing::warn!(stream = %local.stream, partition = local.partition,
                    error = %err, "cannot checkpoint the high watermark");
            }
            *last_checkpoint = (hw, Instant::now());
        }
    }
}

/// The leader says our fetch offset is outside its log.
async fn out_of_range(
    local: &LocalPartition,
    offset: Offset,
    leader_hw: Option<Offset>,
    leader_start: Option<Offset>,
) -> SessionEnd {
    if let Some(start) = leader_start.filter(|start| offset < *start) {
        // Retention on the leader removed what we need next. Everything we
        // hold is older than anything the leader keeps (offsets are never
        // renumbered): start over empty at the leader's log start, as a
        // Kafka follower does.
        tracing::warn!(stream = %local.stream, partition = local.partition,
            offset = offset.0, leader_log_start = start.0,
            "the leader's retention removed the records this replica needs next; \
             restarting the local log at the leader's log start");
        return match local.log.reset_to(start).await {
            Ok(()) => SessionEnd::Retry("restarted at the leader's log start".into()),
            Err(err) => {
                tracing::error!(stream = %local.stream, partition = local.partition,
                    error = %err, "cannot restart the local log; stopping replication");
                SessionEnd::Stop
            }
        };
    }
    // Our log runs past the leader's end: an uncommitted tail the leader
    // never had. Drop it down to what both sides have committed.
    let target = leader_hw
        .unwrap_or(Offset::ZERO)
        .min(local.log.high_watermark());
    match local.log.truncate_to(target).await {
        Ok(end) => {
            tracing::warn!(stream = %local.stream, partition = local.partition,
                truncated_to = end.0, "log ran past the leader's; truncated");
            SessionEnd::Retry("truncated past the leader's end".into())
        }
        Err(_) => SessionEnd::Stop,
    }
}

#[cfg(test)]
#[path = "replication_tests.rs"]
mod tests;
