//! SetCursor (kind `0x07`) and FetchCursor (kind `0x08`) on any shard's
//! port; `shard_server::cursors` routes them to the shard that stores the
//! cursor.

use std::rc::Rc;

use super::Answer;
use crate::protocol::fetch_cursor::{FetchCursorRequest, FetchCursorResponse};
use crate::protocol::frame::{Frame, FrameKind};
use crate::protocol::set_cursor::{SetCursorRequest, SetCursorResponse};
use crate::shard_server::cursors;
use crate::shard_server::Shard;

pub(super) async fn set_cursor(shard: &Rc<Shard>, frame: &Frame) -> Answer {
    let request = SetCursorRequest::decode(&frame.body)?;
    cursors::set(
        shard,
        request.cursor_id,
        request.stream,
        request.partition,
        request.offset,
    )
    .await?;
    Ok(Some((
        FrameKind::SetCursorResponse,
        SetCursorResponse.encode(),
    )))
}

pub(super) async fn fetch_cursor(shard: &Rc<Shard>, frame: &Frame) -> Answer {
    let request = FetchCursorRequest::decode(&frame.body)?;
    let offset = cursors::get(shard, request.cursor_id, request.stream, request.partition).await?;
    Ok(Some((
        FrameKind::FetchCursorResponse,
        FetchCursorResponse { offset }.encode(),
    )))
}
