//! OffsetForLeaderEpoch (kind `0x0A`, KIP-101): where the asked epoch ended
//! in this leader's log (`services::offsets::end_offset_for_epoch`). A
//! refusal travels in the answer's `error_code`, not as an ErrorResponse.

use shards::types::LeaderEpoch;

use super::Answer;
use crate::protocol::frame::{Frame, FrameKind};
use crate::protocol::offset_for_leader_epoch::{EpochAnswer, EpochQuery};
use crate::shard_server::services::{offsets, partition};
use crate::shard_server::Shard;

pub(super) fn offset_for_leader_epoch(shard: &Shard, frame: &Frame) -> Answer {
    let query = EpochQuery::decode(&frame.body)?;
    let local = partition::local(shard, query.stream, query.partition)?;
    let current = query.current_leader_epoch.map(LeaderEpoch::from_metadata);
    let answer = match offsets::end_offset_for_epoch(shard, &local, query.leader_epoch, current) {
        Ok(end) => EpochAnswer { error: None, end },
        Err(code) => EpochAnswer {
            error: Some(code),
            end: None,
        },
    };
    Ok(Some((
        FrameKind::OffsetForLeaderEpochResponse,
        answer.encode(),
    )))
}
