//! Whether an OffsetCommit may be stored. Storing is not done here: group
//! offsets live in Sluice's cursor store.

use kafka_protocol::ResponseError;

use super::state::{GenerationId, Group, GroupId, GroupState, InstanceId, MemberId};
use super::{check_len, Coordinator, Ctx, GroupError, Limit, Millis};

impl Coordinator {
    /// Checks an OffsetCommit (Kafka's `validateOffsetCommit` and the state
    /// rules of `doCommitOffsets`). `Ok` means store the offsets.
    ///
    /// - generation -1, empty member id and no instance id is a "simple"
    ///   commit (a consumer using `assign()`): allowed while the group has
    ///   no members; an unknown group is created Empty for it, as Kafka
    ///   does, so that it shows in ListGroups;
    /// - otherwise the member and generation must be current:
    ///   UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID, ILLEGAL_GENERATION;
    /// - REBALANCE_IN_PROGRESS in CompletingRebalance (the member has its
    ///   new generation but not its assignment yet). During
    ///   PreparingRebalance a current member may still commit: consumers
    ///   commit what they processed before they rejoin.
    ///
    /// A member's commit also counts as a sign of life.
    pub fn validate_commit(
        &mut self,
        now: Millis,
        group_id: &GroupId,
        generation: GenerationId,
        member_id: &MemberId,
        instance_id: Option<&InstanceId>,
    ) -> Result<(), GroupError> {
        let limits = &self.cfg.limits;
        check_len(Limit::GroupIdBytes, group_id.0.len(), limits.group_id_bytes)?;
        check_len(Limit::MemberIdBytes, member_id.0.len(), limits.id_bytes)?;
        if group_id.0.is_empty() {
            return Err(ResponseError::InvalidGroupId.into());
        }
        if !self.groups.contains_key(group_id) {
            if generation.0 >= 0 {
                // A generation of a group this coordinator does not know:
                // the group is gone (or this coordinator restarted).
                return Err(ResponseError::IllegalGeneration.into());
            }
            self.ensure_group(now, group_id)?;
        }
        let mut out = Vec::new();
        let r = self
            .with_group(now, group_id, &mut out, |g, ctx| {
                g.validate_commit(ctx, generation, member_id, instance_id)
            })
            .unwrap_or(Err(ResponseError::CoordinatorNotAvailable));
        r.map_err(GroupError::Kafka)
    }
}

impl Group {
    fn validate_commit(
        &mut self,
        ctx: &mut Ctx<'_>,
        generation: GenerationId,
        member_id: &MemberId,
        instance_id: Option<&InstanceId>,
    ) -> Result<(), ResponseError> {
        if self.state == GroupState::Dead {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        let simple = generation.0 < 0 && member_id.is_unknown() && instance_id.is_none();
        if simple {
            // Only members may commit for a group that has them.
            return if self.state == GroupState::Empty {
                Ok(())
            } else {
                Err(ResponseError::UnknownMemberId)
            };
        }
        self.validate_member(member_id, instance_id)?;
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.last_seen = ctx.now;
        }
        Ok(())
    }
}
