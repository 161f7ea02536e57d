//! The classic consumer-group coordinator: a pure, deterministic state
//! machine that a shard drives.
//!
//! It follows the behaviour of Apache Kafka's classic `GroupCoordinator`
//! (JoinGroup with the KIP-394 member-id step, SyncGroup, Heartbeat,
//! LeaveGroup, static membership from KIP-345, session and rebalance
//! timeouts) so that unmodified Kafka clients see the answers they expect.
//! It owns no clock, socket or storage:
//!
//! - time is an argument ([`Millis`]) to every call;
//! - JoinGroup and SyncGroup may have to wait for other members, so the
//!   caller hands in a [`RequestToken`] and gets answers back later as
//!   [`Completion`]s, from any call or from [`Coordinator::tick`];
//! - [`Coordinator::next_deadline`] tells the shard how long it may sleep;
//! - committed offsets are stored elsewhere (Sluice's cursor store); this
//!   module only decides whether a commit is allowed
//!   ([`Coordinator::validate_commit`]).
//!
//! An error about the request itself comes back as `Err(GroupError)`
//! before anything changed; the caller answers the request with
//! [`GroupError::code`]. Completions only ever carry answers for requests
//! that were accepted.
//!
//! Files: `state` (ids, groups, members, protocol selection), `join`
//! (JoinGroup and the rebalance), `sync` (SyncGroup), `liveness`
//! (Heartbeat, LeaveGroup, timers), `commit` (offset-commit checks),
//! `view` (DescribeGroups, ListGroups).
//!
//! Known simplifications against Kafka, all on purpose:
//! - the assignment-skipping of JoinGroup v9 is not modelled (Sluice
//!   advertises JoinGroup up to v7).

mod commit;
mod join;
mod liveness;
mod state;
mod sync;
mod view;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

pub use join::{JoinMember, JoinRequest, JoinResponse, Protocol};
pub use liveness::{HeartbeatRequest, LeaveMember, LeaveMemberResult, LeaveRequest, LeaveResponse};
pub use state::{GenerationId, GroupId, GroupState, InstanceId, MemberId};
pub use sync::{SyncRequest, SyncResponse};
pub use view::{GroupView, ListedGroup, MemberView};

use kafka_protocol::ResponseError;
use state::Group;

/// A point in time or a duration, in milliseconds. The coordinator never
/// reads a clock: the shard passes its own notion of "now".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(pub u64);

impl Millis {
    /// `self + ms`, saturating (a deadline far in the future is still a
    /// deadline, never a wrap-around into the past).
    pub fn plus(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }
}

/// The caller's handle for a request that may have to wait (JoinGroup,
/// SyncGroup); it comes back in a [`Completion`]. The coordinator never
/// interprets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestToken(pub u64);

/// The answer to a waiting request.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// The answer to a JoinGroup.
    Join(JoinResponse),
    /// The answer to a SyncGroup.
    Sync(SyncResponse),
}

/// An answer for a request accepted earlier (or just now).
pub type Completion = (RequestToken, Reply);

/// Named limits: every one bounds memory that a client could otherwise
/// grow at will.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupLimits {
    /// Groups one coordinator holds (Empty groups without members are
    /// evicted, oldest first, to make room).
    pub groups: usize,
    /// Members plus KIP-394 pending member ids per group (Kafka's
    /// `group.max.size`).
    pub members_per_group: usize,
    /// Bytes of a group id.
    pub group_id_bytes: usize,
    /// Bytes of a member id, a group instance id, a client id or a client
    /// host. Member ids this coordinator issues are always shorter.
    pub id_bytes: usize,
    /// Protocols one JoinGroup may offer.
    pub protocols: usize,
    /// Bytes of one protocol's metadata (a consumer's subscription).
    pub metadata_bytes: usize,
    /// Bytes of one member's assignment in SyncGroup.
    pub assignment_bytes: usize,
}

impl Default for GroupLimits {
    fn default() -> Self {
        GroupLimits {
            groups: 10_000,
            members_per_group: 1_000,
            group_id_bytes: 1_024,
            id_bytes: 255,
            protocols: 16,
            metadata_bytes: 1 << 20,
            assignment_bytes: 1 << 20,
        }
    }
}

/// Coordinator settings, named after Kafka's broker settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupConfig {
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of
    /// an empty group waits for more members (extended by the same delay
    /// while members keep arriving, up to the rebalance timeout).
    pub initial_rebalance_delay_ms: u64,
    /// `group.min.session.timeout.ms`.
    pub min_session_timeout_ms: u64,
    /// `group.max.session.timeout.ms`.
    pub max_session_timeout_ms: u64,
    /// Part of every member id this coordinator issues. Member ids must not
    /// repeat across restarts of the coordinator (a client of the previous
    /// incarnation still holds its id), so the shard sets this to
    /// something new each time, e.g. its start time.
    pub instance_nonce: u64,
    /// The limits.
    pub limits: GroupLimits,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            initial_rebalance_delay_ms: 3_000,
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            instance_nonce: 0,
            limits: GroupLimits::default(),
        }
    }
}

/// Which named limit a request exceeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// [`GroupLimits::groups`].
    Groups,
    /// [`GroupLimits::members_per_group`].
    MembersPerGroup,
    /// [`GroupLimits::group_id_bytes`].
    GroupIdBytes,
    /// [`GroupLimits::id_bytes`] for a member id.
    MemberIdBytes,
    /// [`GroupLimits::id_bytes`] for anything else: an instance id, client
    /// id, client host, protocol type or protocol name.
    IdBytes,
    /// [`GroupLimits::protocols`].
    Protocols,
    /// [`GroupLimits::metadata_bytes`].
    MetadataBytes,
    /// [`GroupLimits::assignment_bytes`], or more assignments than
    /// [`GroupLimits::members_per_group`].
    AssignmentBytes,
}

/// Why a request was refused before it changed anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// A Kafka protocol error, answered as is.
    #[error("group request refused: {0}")]
    Kafka(ResponseError),
    /// A named limit.
    #[error("group request over the limit {what:?}: {len} > {max}")]
    Limit {
        /// The limit.
        what: Limit,
        /// What the request asked for.
        len: usize,
        /// The limit's value.
        max: usize,
    },
}

impl GroupError {
    /// The Kafka error code to answer with.
    pub fn code(&self) -> ResponseError {
        match self {
            GroupError::Kafka(e) => *e,
            GroupError::Limit { what, .. } => match what {
                // Retriable: the client backs off and retries, maybe on a
                // coordinator with room by then.
                Limit::Groups => ResponseError::CoordinatorNotAvailable,
                Limit::MembersPerGroup => ResponseError::GroupMaxSizeReached,
                Limit::GroupIdBytes => ResponseError::InvalidGroupId,
                // Longer than any id this coordinator issues.
                Limit::MemberIdBytes => ResponseError::UnknownMemberId,
                Limit::IdBytes
                | Limit::Protocols
                | Limit::MetadataBytes
                | Limit::AssignmentBytes => ResponseError::InvalidRequest,
            },
        }
    }
}

impl From<ResponseError> for GroupError {
    fn from(e: ResponseError) -> Self {
        GroupError::Kafka(e)
    }
}

pub(crate) fn check_len(what: Limit, len: usize, max: usize) -> Result<(), GroupError> {
    if len > max {
        Err(GroupError::Limit { what, len, max })
    } else {
        Ok(())
    }
}

/// Everything a group operation needs besides the group: settings, the
/// time, and where to put answers for waiting requests.
pub(crate) struct Ctx<'a> {
    pub(crate) cfg: &'a GroupConfig,
    pub(crate) now: Millis,
    pub(crate) out: &'a mut Vec<Completion>,
}

/// The coordinator of every group one shard owns.
#[derive(Debug)]
pub struct Coordinator {
    cfg: GroupConfig,
    groups: BTreeMap<GroupId, Group>,
    /// Each group's earliest timer, indexed so that `tick` and
    /// `next_deadline` do not scan every group. A group's entry is kept
    /// equal to `Group::armed` by `rearm` after every operation on it.
    timers: BTreeSet<(Millis, GroupId)>,
    /// Makes member ids unique within this incarnation.
    next_member_seq: u64,
}

impl Coordinator {
    /// An empty coordinator.
    pub fn new(cfg: GroupConfig) -> Self {
        Coordinator {
            cfg,
            groups: BTreeMap::new(),
            timers: BTreeSet::new(),
            next_member_seq: 0,
        }
    }

    /// The settings.
    pub fn config(&self) -> &GroupConfig {
        &self.cfg
    }

    /// The earliest time at which [`Coordinator::tick`] has work to do.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.timers.first().map(|(at, _)| *at)
    }

    /// Runs every timer due at `now`: session expiry of members and of
    /// pending member ids, the end of a join phase, members that never sent
    /// SyncGroup. Returns the answers this produced.
    pub fn tick(&mut self, now: Millis) -> Vec<Completion> {
        let mut out = Vec::new();
        let due: Vec<GroupId> = self
            .timers
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, g)| g.clone())
            .collect();
        for gid in due {
            if let Some(group) = self.groups.get_mut(&gid) {
                let mut ctx = Ctx {
                    cfg: &self.cfg,
                    now,
                    out: &mut out,
                };
                group.fire_timers(&mut ctx);
            }
            self.rearm(&gid);
        }
        out
    }

    /// Deletes an Empty group (DeleteGroups): `GROUP_ID_NOT_FOUND` when
    /// unknown, `NON_EMPTY_GROUP` while it has members.
    pub fn delete_group(&mut self, group_id: &GroupId) -> Result<(), GroupError> {
        let Some(group) = self.groups.get(group_id) else {
            return Err(ResponseError::GroupIdNotFound.into());
        };
        if group.state != GroupState::Empty || !group.pending.is_empty() {
            return Err(ResponseError::NonEmptyGroup.into());
        }
        self.drop_group(group_id);
        Ok(())
    }

    /// A fresh member id: the client id (shortened) as Kafka does, so
    /// operators recognise it, then what makes it unique.
    fn new_member_id(&mut self, client_id: &str) -> MemberId {
        self.next_member_seq += 1;
        let mut prefix: String = client_id.chars().take(64).collect();
        if prefix.is_empty() {
            prefix.push_str("member");
        }
        MemberId(format!(
            "{prefix}-{:016x}-{:x}",
            self.cfg.instance_nonce, self.next_member_seq
        ))
    }

    /// Makes sure a group exists, creating an Empty one if there is room.
    fn ensure_group(&mut self, now: Millis, group_id: &GroupId) -> Result<(), GroupError> {
        if self.groups.contains_key(group_id) {
            return Ok(());
        }
        if self.groups.len() >= self.cfg.limits.groups {
            // Evict the Empty group idle the longest: it holds no member
            // and no waiting request, and its offsets live elsewhere.
            let victim = self
                .groups
                .values()
                .filter(|g| g.is_idle())
                .min_by_key(|g| (g.state_since, g.id.clone()))
                .map(|g| g.id.clone());
            match victim {
                Some(v) => self.drop_group(&v),
                None => {
                    return Err(GroupError::Limit {
                        what: Limit::Groups,
                        len: self.groups.len() + 1,
                        max: self.cfg.limits.groups,
                    })
                }
            }
        }
        self.groups
            .insert(group_id.clone(), Group::new(group_id.clone(), now));
        Ok(())
    }

    fn drop_group(&mut self, group_id: &GroupId) {
        if let Some(g) = self.groups.remove(group_id) {
            if let Some(at) = g.armed {
                self.timers.remove(&(at, group_id.clone()));
            }
        }
    }

    /// Brings the timer index in line with the group's earliest deadline.
    fn rearm(&mut self, group_id: &GroupId) {
        let Some(g) = self.groups.get_mut(group_id) else {
            return;
        };
        let next = g.next_deadline();
        if next == g.armed {
            return;
        }
        if let Some(at) = g.armed {
            self.timers.remove(&(at, group_id.clone()));
        }
        if let Some(at) = next {
            self.timers.insert((at, group_id.clone()));
        }
        g.armed = next;
    }

    /// Runs `f` on an existing group with a context, then re-arms its timer.
    fn with_group<T>(
        &mut self,
        now: Millis,
        group_id: &GroupId,
        out: &mut Vec<Completion>,
        f: impl FnOnce(&mut Group, &mut Ctx<'_>) -> T,
    ) -> Option<T> {
        let group = self.groups.get_mut(group_id)?;
        let mut ctx = Ctx {
            cfg: &self.cfg,
            now,
            out,
        };
        let r = f(group, &mut ctx);
        self.rearm(group_id);
        Some(r)
    }
}
