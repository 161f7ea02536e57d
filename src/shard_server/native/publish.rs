//! Publish (kind `0x05`): one RecordBatch appended through
//! `services::append`; answered once committed under the request's ack
//! policy, or not at all for ack policy `None` (unless it fails).

use std::rc::Rc;

use shards::types::TimestampMs;

use super::Answer;
use crate::cores::CommitLevel;
use crate::protocol::envelope::AckPolicy;
use crate::protocol::error_code::ErrorCode;
use crate::protocol::error_response::ErrorResponse;
use crate::protocol::frame::{Frame, FrameKind};
use crate::protocol::publish::{PublishRequest, PublishResponse};
use crate::shard_server::services::{append, partition};
use crate::shard_server::Shard;

pub(super) async fn publish(shard: &Rc<Shard>, frame: &Frame) -> Answer {
    let request = PublishRequest::decode(&frame.body)?;
    let local = partition::local(shard, request.stream, request.partition)?;
    let batch = request
        .batch
        .ok_or_else(|| ErrorResponse::new(ErrorCode::InvalidBatch, "publish without a batch"))?;
    let quiet = request.ack_policy == Some(AckPolicy::None);
    // Absent = `all`, like plain NATS messages; `none` needs no ISR.
    let level = match request.ack_policy {
        Some(AckPolicy::Leader) | Some(AckPolicy::None) => CommitLevel::Leader,
        _ => CommitLevel::All,
    };
    let appended = append::append_batch(shard, &local, batch.to_vec(), level).await?;
    if quiet {
        return Ok(None);
    }
    let body = PublishResponse {
        base_offset: appended.base_offset,
        last_offset: appended.last_offset,
        commit_timestamp: TimestampMs::now(),
    }
    .encode();
    Ok(Some((FrameKind::PublishResponse, body)))
}
