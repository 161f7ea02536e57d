//! ListOffsets (kind `0x06`) through `services::offsets`.

use std::rc::Rc;

use super::Answer;
use crate::protocol::frame::{Frame, FrameKind};
use crate::protocol::list_offsets::{ListOffsetsRequest, ListedOffset};
use crate::shard_server::services::{offsets, partition};
use crate::shard_server::Shard;

pub(super) async fn list_offsets(shard: &Rc<Shard>, frame: &Frame) -> Answer {
    let request = ListOffsetsRequest::decode(&frame.body)?;
    let local = partition::local(shard, request.stream, request.partition)?;
    let (offset, timestamp) = offsets::list_offset(&local.log, request.query).await?;
    Ok(Some((
        FrameKind::ListOffsetsResponse,
        ListedOffset { offset, timestamp }.encode(),
    )))
}
