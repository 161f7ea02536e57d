//! Metadata (kind `0x01`): the control core's view, described by
//! `services::metadata` for what the session may see.

use super::Answer;
use crate::protocol::frame::{Frame, FrameKind};
use crate::protocol::metadata::MetadataRequest;
use crate::shard_server::services::metadata;
use crate::shard_server::Shard;

pub(super) async fn metadata(
    shard: &Shard,
    frame: &Frame,
    visible: impl Fn(&str) -> bool,
) -> Answer {
    let request = MetadataRequest::decode(&frame.body)?;
    let view = metadata::view(shard).await?;
    let described = metadata::describe(&view, &request.streams, visible);
    Ok(Some((FrameKind::MetadataResponse, described.encode())))
}
