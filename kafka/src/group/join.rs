//! JoinGroup and the join phase of a rebalance.

use bytes::Bytes;
use kafka_protocol::ResponseError;

use super::state::{GenerationId, Group, GroupId, GroupState, InstanceId, Member, MemberId};
use super::{
    check_len, Completion, Coordinator, Ctx, GroupError, Limit, Millis, Reply, RequestToken,
};

/// One protocol a member offers, in its order of preference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Protocol {
    /// The protocol name (for consumers, the assignor: "range", ...).
    pub name: String,
    /// Opaque to the coordinator (a consumer's subscription).
    pub metadata: Bytes,
}

/// A JoinGroup request, any version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinRequest {
    /// The group.
    pub group_id: GroupId,
    /// Empty on the first join.
    pub member_id: MemberId,
    /// v5+: the static member's instance id.
    pub group_instance_id: Option<InstanceId>,
    /// e.g. "consumer".
    pub protocol_type: String,
    /// Offered protocols, preferred first.
    pub protocols: Vec<Protocol>,
    /// Milliseconds without a heartbeat after which the member is removed.
    pub session_timeout_ms: i32,
    /// v1+: how long a rebalance waits for this member; v0 clients send
    /// nothing, and Kafka uses the session timeout.
    pub rebalance_timeout_ms: i32,
    /// KIP-394: true for JoinGroup v4+, where a first join gets
    /// MEMBER_ID_REQUIRED and a member id to rejoin with.
    pub require_known_member_id: bool,
    /// The client id from the request header.
    pub client_id: String,
    /// The client's address, for DescribeGroups.
    pub client_host: String,
}

/// A member as the leader sees it in its JoinGroup answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinMember {
    /// The member.
    pub member_id: MemberId,
    /// Its instance id, if static.
    pub group_instance_id: Option<InstanceId>,
    /// Its metadata for the selected protocol.
    pub metadata: Bytes,
}

/// A JoinGroup answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinResponse {
    /// None on success.
    pub error: Option<ResponseError>,
    /// The new generation (-1 on error).
    pub generation_id: GenerationId,
    /// The group's protocol type.
    pub protocol_type: Option<String>,
    /// The selected protocol.
    pub protocol_name: Option<String>,
    /// The leader's member id.
    pub leader: MemberId,
    /// The member's id (also set with MEMBER_ID_REQUIRED).
    pub member_id: MemberId,
    /// Every member with its metadata, for the leader only.
    pub members: Vec<JoinMember>,
}

impl JoinResponse {
    /// An error answer, Kafka's layout: generation -1, no leader.
    pub fn failed(member_id: MemberId, error: ResponseError) -> Self {
        JoinResponse {
            error: Some(error),
            generation_id: GenerationId(-1),
            protocol_type: None,
            protocol_name: None,
            leader: MemberId::default(),
            member_id,
            members: Vec::new(),
        }
    }
}

impl JoinRequest {
    fn check_limits(&self, cfg: &super::GroupLimits) -> Result<(), GroupError> {
        check_len(
            Limit::GroupIdBytes,
            self.group_id.0.len(),
            cfg.group_id_bytes,
        )?;
        check_len(Limit::MemberIdBytes, self.member_id.0.len(), cfg.id_bytes)?;
        let inst = self.group_instance_id.as_ref().map_or(0, |i| i.0.len());
        check_len(Limit::IdBytes, inst, cfg.id_bytes)?;
        check_len(Limit::IdBytes, self.client_id.len(), cfg.id_bytes)?;
        check_len(Limit::IdBytes, self.client_host.len(), cfg.id_bytes)?;
        check_len(Limit::IdBytes, self.protocol_type.len(), cfg.id_bytes)?;
        check_len(Limit::Protocols, self.protocols.len(), cfg.protocols)?;
        for p in &self.protocols {
            check_len(Limit::IdBytes, p.name.len(), cfg.id_bytes)?;
            check_len(Limit::MetadataBytes, p.metadata.len(), cfg.metadata_bytes)?;
        }
        Ok(())
    }
}

impl Coordinator {
    /// JoinGroup. Answers come back as completions for `token`, now (the
    /// member's generation is unchanged, or MEMBER_ID_REQUIRED) or when
    /// the join phase ends (from a later call or `tick`). Completions for
    /// other members' requests may come back too.
    pub fn join(
        &mut self,
        now: Millis,
        token: RequestToken,
        req: JoinRequest,
    ) -> Result<Vec<Completion>, GroupError> {
        req.check_limits(&self.cfg.limits)?;
        if req.group_id.0.is_empty() {
            return Err(ResponseError::InvalidGroupId.into());
        }
        // Negative timeouts are below any minimum; compare in u64.
        let session = u64::try_from(req.session_timeout_ms).unwrap_or(0);
        if session < self.cfg.min_session_timeout_ms || session > self.cfg.max_session_timeout_ms {
            return Err(ResponseError::InvalidSessionTimeout.into());
        }
        if !self.groups.contains_key(&req.group_id) {
            if !req.member_id.is_unknown() {
                return Err(ResponseError::UnknownMemberId.into());
            }
            // Check protocols before creating a group that would stay
            // behind empty.
            if req.protocol_type.is_empty() || req.protocols.is_empty() {
                return Err(ResponseError::InconsistentGroupProtocol.into());
            }
            self.ensure_group(now, &req.group_id)?;
        }
        let fresh = if req.member_id.is_unknown() {
            Some(self.new_member_id(&req.client_id))
        } else {
            None
        };
        let mut out = Vec::new();
        let gid = req.group_id.clone();
        let r = self
            .with_group(now, &gid, &mut out, |g, ctx| g.join(ctx, token, req, fresh))
            .unwrap_or(Err(ResponseError::UnknownMemberId.into()));
        r.map(|()| out)
    }
}

impl Group {
    fn join(
        &mut self,
        ctx: &mut Ctx<'_>,
        token: RequestToken,
        req: JoinRequest,
        fresh: Option<MemberId>,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable.into());
        }
        match fresh {
            Some(new_id) => self.join_new(ctx, token, req, new_id),
            None => self.join_known(ctx, token, req),
        }
    }

    /// Kafka's "accept joining member": a new member needs room; members
    /// and pending ids count alike, so the group cannot grow past the limit
    /// through either.
    fn check_room(&self, ctx: &Ctx<'_>) -> Result<(), GroupError> {
        let n = self.members.len() + self.pending.len();
        let max = ctx.cfg.limits.members_per_group;
        if n >= max {
            return Err(GroupError::Limit {
                what: Limit::MembersPerGroup,
                len: n + 1,
                max,
            });
        }
        Ok(())
    }

    fn join_new(
        &mut self,
        ctx: &mut Ctx<'_>,
        token: RequestToken,
        req: JoinRequest,
        new_id: MemberId,
    ) -> Result<(), GroupError> {
        let replaced = req
            .group_instance_id
            .as_ref()
            .and_then(|inst| self.statics.get(inst).cloned());
        // A restarted static member is checked against the others, not
        // against its own previous self.
        if !self.supports(&req.protocol_type, &req.protocols, replaced.as_ref()) {
            return Err(ResponseError::InconsistentGroupProtocol.into());
        }
        if req.group_instance_id.is_some() {
            if let Some(old) = replaced {
                self.replace_static(ctx, token, req, old, new_id);
                return Ok(());
            }
            // A static member skips KIP-394: its instance id already
            // identifies it across restarts.
            self.check_room(ctx)?;
            self.add_member_and_rebalance(ctx, token, req, new_id);
            return Ok(());
        }
        self.check_room(ctx)?;
        if req.require_known_member_id {
            // KIP-394: hand out the id and forget the request; the member
            // counts (for completing the join phase) only once it rejoins,
            // and the id expires after a session timeout if it never does.
            let timeout = u64::try_from(req.session_timeout_ms).unwrap_or(0);
            self.pending.insert(new_id.clone(), ctx.now.plus(timeout));
            ctx.out.push((
                token,
                Reply::Join(JoinResponse::failed(
                    new_id,
                    ResponseError::MemberIdRequired,
                )),
            ));
            return Ok(());
        }
        self.add_member_and_rebalance(ctx, token, req, new_id);
        Ok(())
    }

    fn join_known(
        &mut self,
        ctx: &mut Ctx<'_>,
        token: RequestToken,
        req: JoinRequest,
    ) -> Result<(), GroupError> {
        let id = req.member_id.clone();
        if self.pending.contains_key(&id) {
            if !self.supports(&req.protocol_type, &req.protocols, None) {
                return Err(ResponseError::InconsistentGroupProtocol.into());
            }
            if let Some(inst) = &req.group_instance_id {
                // Pending ids are only given to dynamic members; an
                // instance id taken by someone else must not be stolen.
                if self.statics.contains_key(inst) {
                    return Err(ResponseError::FencedInstanceId.into());
                }
            }
            self.add_member_and_rebalance(ctx, token, req, id);
            return Ok(());
        }
        self.validate_member(&id, req.group_instance_id.as_ref())?;
        if !self.supports(&req.protocol_type, &req.protocols, Some(&id)) {
            return Err(ResponseError::InconsistentGroupProtocol.into());
        }
        let Some(member) = self.members.get(&id) else {
            return Err(ResponseError::UnknownMemberId.into());
        };
        let same = member.protocols == req.protocols;
        let is_leader = self.leader.as_ref() == Some(&id);
        match self.state {
            GroupState::PreparingRebalance => self.update_member_and_rebalance(ctx, token, req),
            // Same metadata: the member probably lost the first answer;
            // give it the current generation again.
            GroupState::CompletingRebalance if same => self.answer_current(ctx, token, &id, true),
            // A leader's rejoin forces a rebalance: that is how it reacts
            // to changes it sees and the coordinator does not (topics).
            GroupState::Stable if same && !is_leader => self.answer_current(ctx, token, &id, false),
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.update_member_and_rebalance(ctx, token, req)
            }
            GroupState::Empty | GroupState::Dead => {
                return Err(ResponseError::UnknownMemberId.into());
            }
        }
        Ok(())
    }

    /// Answers a join with the current generation, without a rebalance.
    /// The leader gets the member list only if it is to (re)compute the
    /// assignment (`with_members`).
    fn answer_current(
        &mut self,
        ctx: &mut Ctx<'_>,
        token: RequestToken,
        id: &MemberId,
        with_members: bool,
    ) {
        if let Some(m) = self.members.get_mut(id) {
            m.last_seen = ctx.now;
        }
        let leader = self.leader.clone().unwrap_or_default();
        let members = if with_members && &leader == id {
            self.member_list()
        } else {
            Vec::new()
        };
        let resp = self.ok_response(id.clone(), leader, members);
        ctx.out.push((token, Reply::Join(resp)));
    }

    fn ok_response(
        &self,
        member_id: MemberId,
        leader: MemberId,
        members: Vec<JoinMember>,
    ) -> JoinResponse {
        JoinResponse {
            error: None,
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader,
            member_id,
            members,
        }
    }

    fn member_list(&self) -> Vec<JoinMember> {
        self.members_in_order()
            .into_iter()
            .map(|m| JoinMember {
                member_id: m.id.clone(),
                group_instance_id: m.instance_id.clone(),
                metadata: m.metadata_for(self.protocol.as_deref()),
            })
            .collect()
    }

    fn add_member_and_rebalance(
        &mut self,
        ctx: &mut Ctx<'_>,
        token: RequestToken,
        req: JoinRequest,
        id: MemberId,
    ) {
        self.pending.remove(&id);
        if self.members.is_empty() {
            self.protocol_type = Some(req.protocol_type.clone());
        }
        if let Some(inst) = &req.group_instance_id {
            self.statics.insert(inst.clone(), id.clone());
        }
        if self.leader.is_none() {
            self.leader = Some(id.clone());
        }
        if self.state == GroupState::PreparingRebalance && self.initial_delay_remaining.is_some() {
            self.new_member_added = true;
        }
        self.next_join_seq += 1;
        let member = Member {
            id: id.clone(),
            instance_id: req.group_instance_id,
            client_id: req.client_id,
            client_host: req.client_host,
            session_timeout: u64::try_from(req.session_timeout_ms).unwrap_or(0),
            rebalance_timeout: u64::try_from(req.rebalance_timeout_ms).unwrap_or(0),
            protocols: req.protocols,
            assignment: Bytes::new(),
            assignment_generation: GenerationId(-1),
            join_seq: self.next_join_seq,
            awaiting_join: Some(token),
            awaiting_sync: None,
            last_seen: ctx.now,
        };
        self.members.insert(id, member);
        self.maybe_prepare_rebalance(ctx);
        self.try_complete_join(ctx);
    }

    fn update_member_and_rebalance(
        &mut self,
        ctx: &mut Ctx<'_>,
        token: RequestToken,
        req: JoinRequest,
    ) {
        let Some(m) = self.members.get_mut(&req.member_id) else {
            return;
        };
        m.protocols = req.protocols;
        m.session_timeout = u64::try_from(req.session_timeout_ms).unwrap_or(0);
        m.rebalance_timeout = u64::try_from(req.rebalance_timeout_ms).unwrap_or(0);
        m.client_id = req.client_id;
        m.client_host = req.client_host;
        m.last_seen = ctx.now;
        if let Some(old) = m.awaiting_join.replace(token) {
            // A second join from the same member replaces the first (its
            // connection is likely gone); the first still gets an answer.
            ctx.out.push((
                old,
                Reply::Join(JoinResponse::failed(
                    req.member_id.clone(),
                    ResponseError::RebalanceInProgress,
                )),
            ));
        }
        self.maybe_prepare_rebalance(ctx);
        self.try_complete_join(ctx);
    }

    /// KIP-345: a known instance id joins with a new member id (the
    /// client restarted). The new id takes over the old member, which is
    /// fenced. In Stable, if the protocol the group would select is
    /// unchanged, the member gets the current generation and keeps its
    /// assignment: no rebalance (the point of static membership).
    fn replace_static(
        &mut self,
        ctx: &mut Ctx<'_>,
        token: RequestToken,
        req: JoinRequest,
        old_id: MemberId,
        new_id: MemberId,
    ) {
        let Some(mut m) = self.members.remove(&old_id) else {
            return;
        };
        if let Some(t) = m.awaiting_join.take() {
            ctx.out.push((
                t,
                Reply::Join(JoinResponse::failed(
                    old_id.clone(),
                    ResponseError::FencedInstanceId,
                )),
            ));
        }
        if let Some(t) = m.awaiting_sync.take() {
            ctx.out.push((
                t,
                Reply::Sync(super::SyncResponse::failed(ResponseError::FencedInstanceId)),
            ));
        }
        // The old leader id is what the group told everyone; Kafka answers
        // with it so that the restarted member does not recompute an
        // assignment for an unchanged generation.
        let current_leader = self.leader.clone().unwrap_or_default();
        if self.leader.as_ref() == Some(&old_id) {
            self.leader = Some(new_id.clone());
        }
        if self.pending_sync.remove(&old_id) {
            self.pending_sync.insert(new_id.clone());
        }
        if let Some(inst) = &req.group_instance_id {
            self.statics.insert(inst.clone(), new_id.clone());
        }
        m.id = new_id.clone();
        m.protocols = req.protocols;
        m.session_timeout = u64::try_from(req.session_timeout_ms).unwrap_or(0);
        m.rebalance_timeout = u64::try_from(req.rebalance_timeout_ms).unwrap_or(0);
        m.client_id = req.client_id;
        m.client_host = req.client_host;
        m.last_seen = ctx.now;
        m.awaiting_join = Some(token);
        self.members.insert(new_id.clone(), m);
        match self.state {
            GroupState::Stable if self.select_protocol() == self.protocol => {
                if let Some(m) = self.members.get_mut(&new_id) {
                    m.awaiting_join = None;
                }
                let members = if self.leader.as_ref() == Some(&new_id) {
                    self.member_list()
                } else {
                    Vec::new()
                };
                let resp = self.ok_response(new_id, current_leader, members);
                ctx.out.push((token, Reply::Join(resp)));
            }
            _ => {
                self.maybe_prepare_rebalance(ctx);
                self.try_complete_join(ctx);
            }
        }
    }

    pub(crate) fn maybe_prepare_rebalance(&mut self, ctx: &mut Ctx<'_>) {
        if matches!(
            self.state,
            GroupState::Empty | GroupState::Stable | GroupState::CompletingRebalance
        ) {
            self.prepare_rebalance(ctx);
        }
    }

    /// Starts a join phase. Members waiting for their assignment learn
    /// that it will not come (REBALANCE_IN_PROGRESS) and rejoin.
    pub(crate) fn prepare_rebalance(&mut self, ctx: &mut Ctx<'_>) {
        if self.state == GroupState::CompletingRebalance {
            for m in self.members.values_mut() {
                if let Some(t) = m.awaiting_sync.take() {
                    // Waiting for the leader was a sign of life: the
                    // session starts over from here.
                    m.last_seen = ctx.now;
                    ctx.out.push((
                        t,
                        Reply::Sync(super::SyncResponse::failed(
                            ResponseError::RebalanceInProgress,
                        )),
                    ));
                }
            }
            self.pending_sync.clear();
            self.sync_deadline = None;
        }
        let rebalance = self.rebalance_timeout();
        let delay = ctx.cfg.initial_rebalance_delay_ms;
        if self.state == GroupState::Empty && delay > 0 {
            // group.initial.rebalance.delay.ms: a starting application's
            // consumers arrive one by one; waiting a little saves a
            // rebalance per arrival.
            self.join_deadline = Some(ctx.now.plus(delay));
            self.initial_delay_remaining = Some(rebalance.saturating_sub(delay));
        } else {
            self.join_deadline = Some(ctx.now.plus(rebalance));
            self.initial_delay_remaining = None;
        }
        self.new_member_added = false;
        self.set_state(GroupState::PreparingRebalance, ctx.now);
    }

    /// Ends the join phase early once every member has rejoined and no
    /// KIP-394 id is outstanding (never during the initial delay, which
    /// exists to wait).
    pub(crate) fn try_complete_join(&mut self, ctx: &mut Ctx<'_>) {
        if self.state == GroupState::PreparingRebalance
            && self.initial_delay_remaining.is_none()
            && self.pending.is_empty()
            && self.members.values().all(|m| m.awaiting_join.is_some())
        {
            self.complete_join(ctx);
        }
    }

    /// The join-phase timer fired.
    pub(crate) fn join_timer(&mut self, ctx: &mut Ctx<'_>) {
        if let Some(remaining) = self.initial_delay_remaining {
            if self.new_member_added && remaining > 0 {
                let delay = ctx.cfg.initial_rebalance_delay_ms.min(remaining).max(1);
                self.join_deadline = Some(ctx.now.plus(delay));
                self.initial_delay_remaining = Some(remaining.saturating_sub(delay));
                self.new_member_added = false;
                return;
            }
        }
        self.complete_join(ctx);
    }

    /// Ends the join phase: dynamic members that did not rejoin are
    /// removed, the generation advances, every waiting join is answered
    /// together. Static members that did not rejoin stay (KIP-345: a
    /// static member restarting within its session timeout keeps its
    /// place); their session timeout removes them if they never return.
    pub(crate) fn complete_join(&mut self, ctx: &mut Ctx<'_>) {
        let gone: Vec<MemberId> = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none() && m.instance_id.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            self.remove_member_raw(ctx, &id, ResponseError::UnknownMemberId);
        }
        if !self.members.is_empty() && self.members.values().all(|m| m.awaiting_join.is_none()) {
            // Only absent static members are left: nobody could lead or
            // receive the new generation. Wait another rebalance timeout,
            // as Kafka does; sessions expire the absent meanwhile.
            self.join_deadline = Some(ctx.now.plus(self.rebalance_timeout().max(1)));
            self.initial_delay_remaining = None;
            return;
        }
        self.join_deadline = None;
        self.initial_delay_remaining = None;
        self.new_member_added = false;
        self.generation = GenerationId(self.generation.0.saturating_add(1));
        if self.members.is_empty() {
            self.protocol = None;
            self.leader = None;
            self.set_state(GroupState::Empty, ctx.now);
            return;
        }
        self.protocol = self.select_protocol();
        // The leader must be someone who receives this answer.
        let leader_ok = self
            .leader
            .as_ref()
            .and_then(|l| self.members.get(l))
            .is_some_and(|m| m.awaiting_join.is_some());
        if !leader_ok {
            self.leader = self
                .members_in_order()
                .into_iter()
                .find(|m| m.awaiting_join.is_some())
                .map(|m| m.id.clone());
        }
        self.set_state(GroupState::CompletingRebalance, ctx.now);
        self.pending_sync = self.members.keys().cloned().collect();
        // A leader that never sends SyncGroup would leave every follower
        // waiting; Kafka gives up on members that have not synced within
        // the rebalance timeout.
        self.sync_deadline = Some(ctx.now.plus(self.rebalance_timeout()));
        let leader = self.leader.clone().unwrap_or_default();
        let list = self.member_list();
        let ids: Vec<MemberId> = self
            .members_in_order()
            .iter()
            .map(|m| m.id.clone())
            .collect();
        for id in ids {
            let members = if id == leader {
                list.clone()
            } else {
                Vec::new()
            };
            let resp = self.ok_response(id.clone(), leader.clone(), members);
            if let Some(m) = self.members.get_mut(&id) {
                if let Some(t) = m.awaiting_join.take() {
                    m.last_seen = ctx.now;
                    ctx.out.push((t, Reply::Join(resp)));
                }
            }
        }
    }
}
