//! Heartbeat, LeaveGroup and the timers: session expiry of members and of
//! KIP-394 pending ids, the end of a join phase, members that never synced.

use kafka_protocol::ResponseError;

use super::state::{GenerationId, Group, GroupId, GroupState, InstanceId, MemberId};
use super::{check_len, Completion, Coordinator, Ctx, GroupError, Limit, Millis};

/// A Heartbeat request, any version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatRequest {
    /// The group.
    pub group_id: GroupId,
    /// The member's generation.
    pub generation_id: GenerationId,
    /// The member.
    pub member_id: MemberId,
    /// v3+: its instance id.
    pub group_instance_id: Option<InstanceId>,
}

/// One member leaving. LeaveGroup v0–v2 carry exactly one, with no
/// instance id; v3+ carry a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaveMember {
    /// The member id; may be empty in v3+ when the instance id is given.
    pub member_id: MemberId,
    /// The instance id of a static member.
    pub group_instance_id: Option<InstanceId>,
}

/// A LeaveGroup request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaveRequest {
    /// The group.
    pub group_id: GroupId,
    /// Who leaves.
    pub members: Vec<LeaveMember>,
}

/// The outcome for one leaving member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaveMemberResult {
    /// As in the request.
    pub member_id: MemberId,
    /// As in the request.
    pub group_instance_id: Option<InstanceId>,
    /// None if it left.
    pub error: Option<ResponseError>,
}

/// A LeaveGroup answer. For v0–v2 the server answers with the single
/// member's error as the top-level error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaveResponse {
    /// Top-level error.
    pub error: Option<ResponseError>,
    /// Per member, in request order.
    pub members: Vec<LeaveMemberResult>,
}

impl Coordinator {
    /// Heartbeat. `Ok` is Kafka's NONE. During a join phase the answer is
    /// REBALANCE_IN_PROGRESS: that is how members learn to rejoin.
    pub fn heartbeat(&mut self, now: Millis, req: &HeartbeatRequest) -> Result<(), GroupError> {
        let limits = &self.cfg.limits;
        check_len(
            Limit::GroupIdBytes,
            req.group_id.0.len(),
            limits.group_id_bytes,
        )?;
        check_len(Limit::MemberIdBytes, req.member_id.0.len(), limits.id_bytes)?;
        let mut out = Vec::new();
        let r = self
            .with_group(now, &req.group_id, &mut out, |g, ctx| g.heartbeat(ctx, req))
            .unwrap_or(Err(ResponseError::UnknownMemberId));
        debug_assert!(out.is_empty(), "a heartbeat completes nothing");
        r.map_err(GroupError::Kafka)
    }

    /// LeaveGroup. Returns the answer and the completions the departures
    /// caused (other members' joins finishing a rebalance).
    pub fn leave(
        &mut self,
        now: Millis,
        req: &LeaveRequest,
    ) -> Result<(LeaveResponse, Vec<Completion>), GroupError> {
        let limits = &self.cfg.limits;
        check_len(
            Limit::GroupIdBytes,
            req.group_id.0.len(),
            limits.group_id_bytes,
        )?;
        let mut out = Vec::new();
        let resp = match self.with_group(now, &req.group_id, &mut out, |g, ctx| g.leave(ctx, req)) {
            Some(r) => r,
            None => LeaveResponse {
                error: None,
                members: req
                    .members
                    .iter()
                    .map(|m| result(m, Some(ResponseError::UnknownMemberId)))
                    .collect(),
            },
        };
        Ok((resp, out))
    }
}

fn result(m: &LeaveMember, error: Option<ResponseError>) -> LeaveMemberResult {
    LeaveMemberResult {
        member_id: m.member_id.clone(),
        group_instance_id: m.group_instance_id.clone(),
        error,
    }
}

/// Which timer is due.
enum Due {
    Pending(MemberId),
    Session(MemberId),
    Join,
    Sync,
}

impl Group {
    fn heartbeat(
        &mut self,
        ctx: &mut Ctx<'_>,
        req: &HeartbeatRequest,
    ) -> Result<(), ResponseError> {
        if self.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        self.validate_member(&req.member_id, req.group_instance_id.as_ref())?;
        if req.generation_id != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        let Some(m) = self.members.get_mut(&req.member_id) else {
            return Err(ResponseError::UnknownMemberId);
        };
        m.last_seen = ctx.now;
        match self.state {
            GroupState::PreparingRebalance => Err(ResponseError::RebalanceInProgress),
            // Clients may heartbeat between their JoinGroup answer and
            // SyncGroup; that is a normal heartbeat.
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
            GroupState::Empty | GroupState::Dead => Err(ResponseError::UnknownMemberId),
        }
    }

    fn leave(&mut self, ctx: &mut Ctx<'_>, req: &LeaveRequest) -> LeaveResponse {
        if self.state == GroupState::Dead {
            return LeaveResponse {
                error: Some(ResponseError::CoordinatorNotAvailable),
                members: Vec::new(),
            };
        }
        let mut results = Vec::with_capacity(req.members.len());
        for lm in &req.members {
            let error = self.leave_one(ctx, lm).err();
            results.push(result(lm, error));
        }
        LeaveResponse {
            error: None,
            members: results,
        }
    }

    fn leave_one(&mut self, ctx: &mut Ctx<'_>, lm: &LeaveMember) -> Result<(), ResponseError> {
        if lm.member_id.is_unknown() {
            // v3+: a static member may leave by instance id alone.
            let Some(inst) = &lm.group_instance_id else {
                return Err(ResponseError::UnknownMemberId);
            };
            let Some(id) = self.statics.get(inst).cloned() else {
                return Err(ResponseError::UnknownMemberId);
            };
            self.remove_member_and_update(ctx, &id, ResponseError::UnknownMemberId);
            return Ok(());
        }
        if self.pending.remove(&lm.member_id).is_some() {
            self.try_complete_join(ctx);
            return Ok(());
        }
        self.validate_member(&lm.member_id, lm.group_instance_id.as_ref())?;
        self.remove_member_and_update(ctx, &lm.member_id, ResponseError::UnknownMemberId);
        Ok(())
    }

    /// The earliest timer due at `now`, if any. Ties go to expiries
    /// before phase ends, so a phase ends without the dead.
    fn due(&self, now: Millis) -> Option<Due> {
        let mut best: Option<(Millis, u8, Due)> = None;
        let mut consider = |at: Millis, rank: u8, due: Due| {
            if at <= now && best.as_ref().is_none_or(|(b, r, _)| (at, rank) < (*b, *r)) {
                best = Some((at, rank, due));
            }
        };
        for (id, at) in &self.pending {
            consider(*at, 0, Due::Pending(id.clone()));
        }
        for m in self.members.values() {
            if let Some(at) = m.session_deadline() {
                consider(at, 0, Due::Session(m.id.clone()));
            }
        }
        match self.state {
            GroupState::PreparingRebalance => {
                if let Some(at) = self.join_deadline {
                    consider(at, 1, Due::Join);
                }
            }
            GroupState::CompletingRebalance => {
                if let Some(at) = self.sync_deadline {
                    consider(at, 1, Due::Sync);
                }
            }
            _ => {}
        }
        best.map(|(_, _, d)| d)
    }

    /// Handles every timer due at `ctx.now`, earliest first.
    pub(crate) fn fire_timers(&mut self, ctx: &mut Ctx<'_>) {
        // Each step removes a member or pending id, or ends or extends a
        // phase (an extension lies in the future or uses up the remaining
        // budget), so this terminates; the bound is a safety net.
        let mut budget = 2 * (self.members.len() + self.pending.len()) + 16;
        while budget > 0 {
            budget -= 1;
            let Some(due) = self.due(ctx.now) else {
                return;
            };
            match due {
                Due::Pending(id) => {
                    self.pending.remove(&id);
                    self.try_complete_join(ctx);
                }
                Due::Session(id) => {
                    self.remove_member_and_update(ctx, &id, ResponseError::UnknownMemberId)
                }
                Due::Join => self.join_timer(ctx),
                Due::Sync => {
                    // Members that never sent SyncGroup (above all a
                    // silent leader) are given up; the rest rejoin.
                    let stale: Vec<MemberId> = self.pending_sync.iter().cloned().collect();
                    self.sync_deadline = None;
                    for id in &stale {
                        self.remove_member_raw(ctx, id, ResponseError::UnknownMemberId);
                    }
                    if self.state == GroupState::CompletingRebalance {
                        self.prepare_rebalance(ctx);
                        self.try_complete_join(ctx);
                    }
                }
            }
        }
    }
}
