//! Fetch (kind `0x04`): a `FetchResponse` frame, then exactly `byte_count`
//! bytes of whole batches, sent with `sendfile` straight from the segment
//! file.

use std::time::Duration;

use glommio::net::TcpStream;

use super::session::{write_failed, Close, Connection};
use crate::protocol::error_code::ErrorCode;
use crate::protocol::error_response::ErrorResponse;
use crate::protocol::fetch::{FetchRequest, FetchResponse};
use crate::protocol::frame::{Frame, FrameKind};
use crate::protocol::limits::{FETCH_BYTES_DEFAULT, FETCH_BYTES_MAX, FETCH_WAIT_MS_MAX};
use crate::shard_server::sendfile::send_file_range;
use crate::shard_server::services::read::{self, ReadOutcome, ReadRequest, ReplicaClaim};
use crate::shard_server::services::{partition, ServiceError};
use crate::shard_server::LocalPartition;

pub(super) async fn fetch(
    connection: &mut Connection,
    stream: &mut TcpStream,
    frame: &Frame,
) -> Result<(), Close> {
    let corr = frame.correlation_id;
    let shard = connection.shard.clone();
    let request = match FetchRequest::decode(&frame.body) {
        Ok(request) => request,
        Err(error) => return connection.send_error(stream, corr, error.into()).await,
    };
    let local = match partition::local(&shard, request.stream, request.partition) {
        Ok(local) => local,
        Err(error) => return connection.send_error(stream, corr, error.into()).await,
    };
    let read = read::read(
        &shard,
        &local,
        ReadRequest {
            start: request.start,
            max_bytes: match request.max_bytes {
                0 => FETCH_BYTES_DEFAULT,
                n => n.min(FETCH_BYTES_MAX),
            },
            max_wait: Duration::from_millis(u64::from(request.max_wait_ms.min(FETCH_WAIT_MS_MAX))),
            // A follower (replica_id = its node id) reads up to the log end;
            // consumers only what is committed.
            replica: request.replica_id.map(|node| ReplicaClaim {
                node,
                epoch: request.current_leader_epoch,
            }),
        },
    )
    .await;
    let slice = match read {
        Ok(ReadOutcome::Batches(slice)) => slice,
        Ok(ReadOutcome::OutOfRange) => {
            let body = header(
                &local,
                Some((ErrorCode::OffsetOutOfRange, "offset out of range")),
                0,
            );
            return connection
                .send_frame(stream, FrameKind::FetchResponse, corr, &body)
                .await;
        }
        Err(error) => return connection.send_error(stream, corr, error.into()).await,
    };
    let byte_count = slice.as_ref().map_or(0, |s| s.len);
    // `read` kept the slice within the in-flight limit, a u32.
    let Ok(wire_count) = u32::try_from(byte_count) else {
        let error = ServiceError::new(ErrorCode::Unknown, "read slice larger than 4 GiB");
        return connection
            .send_error(stream, corr, ErrorResponse::from(error))
            .await;
    };
    let body = header(&local, None, wire_count);
    connection
        .send_frame(stream, FrameKind::FetchResponse, corr, &body)
        .await?;
    {
        let mut stats = shard.stats.borrow_mut();
        stats.fetches += 1;
        stats.fetch_bytes += byte_count;
    }
    if let Some(slice) = slice {
        let sent = send_file_range(stream, &slice.file, slice.position.0, slice.len).await;
        let mut stats = shard.stats.borrow_mut();
        stats.sendfile_bytes += sent.sendfile_bytes;
        stats.copied_bytes += sent.copied_bytes;
        sent.result.map_err(write_failed)?;
    }
    Ok(())
}

/// The `FetchResponse` body: the partition's watermarks as they are now.
fn header(local: &LocalPartition, error: Option<(ErrorCode, &str)>, byte_count: u32) -> Vec<u8> {
    FetchResponse {
        error: error.map(|(code, _)| code),
        error_message: error
            .map(|(_, message)| message.to_owned())
            .unwrap_or_default(),
        high_watermark: Some(local.log.high_watermark()),
        log_start_offset: Some(local.log.log_start_offset()),
        byte_count,
    }
    .encode()
}
