//! SyncGroup: the leader hands out the assignment.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::ResponseError;

use super::state::{GenerationId, Group, GroupId, GroupState, InstanceId, MemberId};
use super::{
    check_len, Completion, Coordinator, Ctx, GroupError, Limit, Millis, Reply, RequestToken,
};

/// A SyncGroup request, any version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncRequest {
    /// The group.
    pub group_id: GroupId,
    /// The generation the member joined.
    pub generation_id: GenerationId,
    /// The member.
    pub member_id: MemberId,
    /// v3+: its instance id.
    pub group_instance_id: Option<InstanceId>,
    /// v5+: checked against the group's.
    pub protocol_type: Option<String>,
    /// v5+: checked against the group's.
    pub protocol_name: Option<String>,
    /// From the leader: each member's assignment (others send none).
    pub assignments: Vec<(MemberId, Bytes)>,
}

/// A SyncGroup answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncResponse {
    /// None on success.
    pub error: Option<ResponseError>,
    /// The group's protocol type (v5+).
    pub protocol_type: Option<String>,
    /// The group's protocol (v5+).
    pub protocol_name: Option<String>,
    /// This member's assignment.
    pub assignment: Bytes,
}

impl SyncResponse {
    /// An error answer.
    pub fn failed(error: ResponseError) -> Self {
        SyncResponse {
            error: Some(error),
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

impl Coordinator {
    /// SyncGroup. In CompletingRebalance the answer waits for the leader's
    /// assignment (completions, now or later); in Stable it is the stored
    /// assignment, at once.
    pub fn sync(
        &mut self,
        now: Millis,
        token: RequestToken,
        req: SyncRequest,
    ) -> Result<Vec<Completion>, GroupError> {
        let limits = &self.cfg.limits;
        check_len(
            Limit::GroupIdBytes,
            req.group_id.0.len(),
            limits.group_id_bytes,
        )?;
        check_len(Limit::MemberIdBytes, req.member_id.0.len(), limits.id_bytes)?;
        let inst = req.group_instance_id.as_ref().map_or(0, |i| i.0.len());
        check_len(Limit::IdBytes, inst, limits.id_bytes)?;
        check_len(
            Limit::AssignmentBytes,
            req.assignments.len(),
            limits.members_per_group,
        )?;
        for (_, a) in &req.assignments {
            check_len(Limit::AssignmentBytes, a.len(), limits.assignment_bytes)?;
        }
        let mut out = Vec::new();
        let gid = req.group_id.clone();
        self.with_group(now, &gid, &mut out, |g, ctx| g.sync(ctx, token, req))
            .unwrap_or(Err(ResponseError::UnknownMemberId.into()))
            .map(|()| out)
    }
}

impl Group {
    fn sync(
        &mut self,
        ctx: &mut Ctx<'_>,
        token: RequestToken,
        req: SyncRequest,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable.into());
        }
        let id = req.member_id.clone();
        self.validate_member(&id, req.group_instance_id.as_ref())?;
        if req.generation_id != self.generation {
            return Err(ResponseError::IllegalGeneration.into());
        }
        if req
            .protocol_type
            .as_ref()
            .is_some_and(|t| self.protocol_type.as_ref() != Some(t))
            || req
                .protocol_name
                .as_ref()
                .is_some_and(|p| self.protocol.as_ref() != Some(p))
        {
            return Err(ResponseError::InconsistentGroupProtocol.into());
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => Err(ResponseError::UnknownMemberId.into()),
            GroupState::PreparingRebalance => Err(ResponseError::RebalanceInProgress.into()),
            GroupState::Stable => {
                let Some(m) = self.members.get_mut(&id) else {
                    return Err(ResponseError::UnknownMemberId.into());
                };
                m.last_seen = ctx.now;
                let resp = self.ok(m_assignment(self, &id));
                ctx.out.push((token, Reply::Sync(resp)));
                Ok(())
            }
            GroupState::CompletingRebalance => {
                let Some(m) = self.members.get_mut(&id) else {
                    return Err(ResponseError::UnknownMemberId.into());
                };
                m.last_seen = ctx.now;
                if let Some(old) = m.awaiting_sync.replace(token) {
                    ctx.out.push((
                        old,
                        Reply::Sync(SyncResponse::failed(ResponseError::RebalanceInProgress)),
                    ));
                }
                self.pending_sync.remove(&id);
                if self.leader.as_ref() == Some(&id) {
                    self.set_assignment(ctx, req.assignments);
                }
                Ok(())
            }
        }
    }

    fn ok(&self, assignment: Bytes) -> SyncResponse {
        SyncResponse {
            error: None,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            assignment,
        }
    }

    /// Stores the leader's assignment (members it left out get an empty
    /// one, entries for non-members are ignored, as in Kafka), moves to
    /// Stable and answers every waiting SyncGroup.
    fn set_assignment(&mut self, ctx: &mut Ctx<'_>, assignments: Vec<(MemberId, Bytes)>) {
        let mut by_member: BTreeMap<MemberId, Bytes> = assignments.into_iter().collect();
        let generation = self.generation;
        let mut waiting = Vec::new();
        for m in self.members.values_mut() {
            m.assignment = by_member.remove(&m.id).unwrap_or_default();
            m.assignment_generation = generation;
            if let Some(t) = m.awaiting_sync.take() {
                m.last_seen = ctx.now;
                waiting.push((t, m.assignment.clone()));
            }
        }
        self.pending_sync.clear();
        self.sync_deadline = None;
        self.set_state(GroupState::Stable, ctx.now);
        for (t, a) in waiting {
            let resp = self.ok(a);
            ctx.out.push((t, Reply::Sync(resp)));
        }
    }
}

fn m_assignment(g: &Group, id: &MemberId) -> Bytes {
    g.members
        .get(id)
        .map(|m| m.assignment.clone())
        .unwrap_or_default()
}
