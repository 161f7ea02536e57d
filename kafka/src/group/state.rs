//! Ids, group and member state, protocol selection, member removal.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use kafka_protocol::ResponseError;

use super::join::{JoinResponse, Protocol};
use super::sync::SyncResponse;
use super::{Ctx, Millis, Reply, RequestToken};

/// A group id, as the client sent it (any string Kafka allows).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId(pub String);

/// A member id; the empty string is Kafka's "unknown member id".
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberId(pub String);

impl MemberId {
    /// Kafka's `UNKNOWN_MEMBER_ID`: the client has no id yet.
    pub fn is_unknown(&self) -> bool {
        self.0.is_empty()
    }
}

/// A `group.instance.id` (KIP-345 static membership).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceId(pub String);

/// A group generation; 0 before the first rebalance completes, -1 in
/// requests that are not part of a generation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GenerationId(pub i32);

/// The group states of Kafka's classic protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupState {
    /// No members (offsets may still be committed).
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Join phase done; waiting for the leader's assignment.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
    /// Deleted; only seen for unknown groups.
    Dead,
}

impl GroupState {
    /// The name Kafka uses in DescribeGroups and ListGroups.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) id: MemberId,
    pub(crate) instance_id: Option<InstanceId>,
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    pub(crate) session_timeout: u64,
    pub(crate) rebalance_timeout: u64,
    pub(crate) protocols: Vec<Protocol>,
    pub(crate) assignment: Bytes,
    /// The generation `assignment` was given in.
    pub(crate) assignment_generation: GenerationId,
    /// Order of arrival: picks the leader and the protocol deterministically.
    pub(crate) join_seq: u64,
    pub(crate) awaiting_join: Option<RequestToken>,
    pub(crate) awaiting_sync: Option<RequestToken>,
    pub(crate) last_seen: Millis,
}

impl Member {
    pub(crate) fn metadata_for(&self, protocol: Option<&str>) -> Bytes {
        protocol
            .and_then(|name| self.protocols.iter().find(|p| p.name == name))
            .map(|p| p.metadata.clone())
            .unwrap_or_default()
    }

    /// When the session times out, if it can: a member waiting for the
    /// join phase or for the leader's assignment is kept alive (those
    /// phases have their own timers), as in Kafka.
    pub(crate) fn session_deadline(&self) -> Option<Millis> {
        if self.awaiting_join.is_some() || self.awaiting_sync.is_some() {
            None
        } else {
            Some(self.last_seen.plus(self.session_timeout))
        }
    }
}

#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) id: GroupId,
    pub(crate) state: GroupState,
    /// When `state` last changed (eviction picks the oldest idle group).
    pub(crate) state_since: Millis,
    pub(crate) generation: GenerationId,
    pub(crate) protocol_type: Option<String>,
    pub(crate) protocol: Option<String>,
    pub(crate) leader: Option<MemberId>,
    pub(crate) members: BTreeMap<MemberId, Member>,
    /// Instance id → member id of the static members.
    pub(crate) statics: BTreeMap<InstanceId, MemberId>,
    /// KIP-394: ids handed out with MEMBER_ID_REQUIRED, not yet rejoined,
    /// with the time they expire.
    pub(crate) pending: BTreeMap<MemberId, Millis>,
    /// End of the join phase (PreparingRebalance).
    pub(crate) join_deadline: Option<Millis>,
    /// Some while the initial delay of an empty group runs: what is left
    /// of the rebalance timeout for extensions.
    pub(crate) initial_delay_remaining: Option<u64>,
    /// A member arrived during the current initial delay.
    pub(crate) new_member_added: bool,
    /// Members that have not sent SyncGroup since the join phase ended
    /// (CompletingRebalance), and when they are given up.
    pub(crate) pending_sync: BTreeSet<MemberId>,
    pub(crate) sync_deadline: Option<Millis>,
    pub(crate) next_join_seq: u64,
    /// The deadline the coordinator's timer index holds for this group.
    pub(crate) armed: Option<Millis>,
}

impl Group {
    pub(crate) fn new(id: GroupId, now: Millis) -> Self {
        Group {
            id,
            state: GroupState::Empty,
            state_since: now,
            generation: GenerationId(0),
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            statics: BTreeMap::new(),
            pending: BTreeMap::new(),
            join_deadline: None,
            initial_delay_remaining: None,
            new_member_added: false,
            pending_sync: BTreeSet::new(),
            sync_deadline: None,
            next_join_seq: 0,
            armed: None,
        }
    }

    pub(crate) fn set_state(&mut self, state: GroupState, now: Millis) {
        self.state = state;
        self.state_since = now;
    }

    /// Empty, with nobody waiting: safe to evict.
    pub(crate) fn is_idle(&self) -> bool {
        self.state == GroupState::Empty && self.members.is_empty() && self.pending.is_empty()
    }

    /// The join phase waits at most this long: the largest rebalance
    /// timeout of the members.
    pub(crate) fn rebalance_timeout(&self) -> u64 {
        self.members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(0)
    }

    /// Members in order of arrival.
    pub(crate) fn members_in_order(&self) -> Vec<&Member> {
        let mut v: Vec<&Member> = self.members.values().collect();
        v.sort_by_key(|m| m.join_seq);
        v
    }

    /// Kafka's rule for a JoinGroup's protocols: a group without members
    /// takes any (non-empty) protocol type; otherwise the type must match
    /// and one of the offered protocols must be supported by every other
    /// member.
    pub(crate) fn supports(
        &self,
        protocol_type: &str,
        protocols: &[Protocol],
        joining: Option<&MemberId>,
    ) -> bool {
        if protocol_type.is_empty() || protocols.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        protocols.iter().any(|p| {
            self.members
                .values()
                .filter(|m| Some(&m.id) != joining)
                .all(|m| m.protocols.iter().any(|q| q.name == p.name))
        })
    }

    /// Kafka's protocol selection: among the protocols every member
    /// supports, each member votes for the first in its own preference
    /// order; most votes wins, ties go to the earliest member's preference.
    pub(crate) fn select_protocol(&self) -> Option<String> {
        let ordered = self.members_in_order();
        let first = ordered.first()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|p| p.name.as_str())
            .filter(|name| {
                ordered
                    .iter()
                    .all(|m| m.protocols.iter().any(|q| q.name == *name))
            })
            .collect();
        if candidates.is_empty() {
            // Cannot happen (joins are checked with `supports`); answer
            // something rather than nothing.
            return first.protocols.first().map(|p| p.name.clone());
        }
        let mut votes = vec![0usize; candidates.len()];
        for m in &ordered {
            if let Some(i) = m
                .protocols
                .iter()
                .find_map(|p| candidates.iter().position(|c| *c == p.name))
            {
                votes[i] += 1;
            }
        }
        let mut best = 0;
        for (i, v) in votes.iter().enumerate() {
            if *v > votes[best] {
                best = i;
            }
        }
        Some(candidates[best].to_string())
    }

    /// KIP-345's member check (ClassicGroup.validateMember): with an
    /// instance id, the id must map to this member id (else it is fenced);
    /// without, the member must exist.
    pub(crate) fn validate_member(
        &self,
        member_id: &MemberId,
        instance_id: Option<&InstanceId>,
    ) -> Result<(), ResponseError> {
        match instance_id {
            Some(inst) => match self.statics.get(inst) {
                None => Err(ResponseError::UnknownMemberId),
                Some(owner) if owner != member_id => Err(ResponseError::FencedInstanceId),
                Some(_) => Ok(()),
            },
            None if self.members.contains_key(member_id) => Ok(()),
            None => Err(ResponseError::UnknownMemberId),
        }
    }

    /// Removes a member and answers whatever it was waiting for with
    /// `error`; picks a new leader if needed. Does not react to the change
    /// (see `remove_member_and_update`).
    pub(crate) fn remove_member_raw(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: &MemberId,
        error: ResponseError,
    ) -> Option<Member> {
        let mut m = self.members.remove(id)?;
        if let Some(inst) = &m.instance_id {
            if self.statics.get(inst) == Some(id) {
                self.statics.remove(inst);
            }
        }
        self.pending_sync.remove(id);
        if let Some(t) = m.awaiting_join.take() {
            ctx.out
                .push((t, Reply::Join(JoinResponse::failed(id.clone(), error))));
        }
        if let Some(t) = m.awaiting_sync.take() {
            ctx.out.push((t, Reply::Sync(SyncResponse::failed(error))));
        }
        if self.leader.as_ref() == Some(id) {
            self.leader = self.members_in_order().first().map(|m| m.id.clone());
        }
        Some(m)
    }

    /// Removes a member (LeaveGroup, session expiry) and starts or advances
    /// the rebalance its departure calls for.
    pub(crate) fn remove_member_and_update(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: &MemberId,
        error: ResponseError,
    ) {
        if self.remove_member_raw(ctx, id, error).is_none() {
            return;
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(ctx);
                self.try_complete_join(ctx);
            }
            GroupState::PreparingRebalance => self.try_complete_join(ctx),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// The group's earliest timer.
    pub(crate) fn next_deadline(&self) -> Option<Millis> {
        let members = self.members.values().filter_map(|m| m.session_deadline());
        let pending = self.pending.values().copied();
        let phase = match self.state {
            GroupState::PreparingRebalance => self.join_deadline,
            GroupState::CompletingRebalance => self.sync_deadline,
            _ => None,
        };
        members.chain(pending).chain(phase).min()
    }
}
