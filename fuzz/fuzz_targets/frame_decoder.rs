//! The TCP frame decoder and the body verification every request goes
//! through, on arbitrary bytes from the network.
//!
//! Properties: never panics; a decoded frame re-encodes to exactly the bytes
//! it consumed; feeding the same bytes in small chunks yields the same frames
//! and the same error; a fatal error consumes nothing; request bodies either
//! decode through their kind's typed decoder or give a typed error.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sluice::protocol::acl::{AclChange, AclChangeRequest, ListAclsRequest, ListAclsResponse};
use sluice::protocol::authenticate::{AuthenticateRequest, AuthenticateResponse};
use sluice::protocol::cluster_status::{ClusterStatus, ClusterStatusRequest};
use sluice::protocol::create_stream::{CreateStreamRequest, CreatedStream};
use sluice::protocol::delete_stream::DeleteStreamRequest;
use sluice::protocol::error_response::ErrorResponse;
use sluice::protocol::fetch::{FetchRequest, FetchResponse};
use sluice::protocol::fetch_cursor::{FetchCursorRequest, FetchCursorResponse};
use sluice::protocol::frame::{Frame, FrameDecoder, FrameError, FrameKind};
use sluice::protocol::list_offsets::{ListOffsetsRequest, ListedOffset};
use sluice::protocol::metadata::{ClusterMetadata, MetadataRequest};
use sluice::protocol::offset_for_leader_epoch::{EpochAnswer, EpochQuery};
use sluice::protocol::publish::{PublishRequest, PublishResponse};
use sluice::protocol::set_cursor::SetCursorRequest;

/// Frames decoded from one input, at most (each consumes ≥ 9 bytes anyway).
const FRAMES_MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&limit_selector, stream)) = data.split_first() else {
        return;
    };
    // Small limits make the "too large" path reachable with small inputs.
    let body_max = match limit_selector % 4 {
        0 => 0,
        1 => 64,
        2 => 64 << 10,
        _ => usize::MAX,
    };
    let whole = decode_all(body_max, stream, stream.len().max(1));
    let chunk = usize::from(limit_selector / 4) % 7 + 1;
    let chunked = decode_all(body_max, stream, chunk);
    assert_eq!(whole, chunked, "chunked decoding must agree");
    for (frame, raw) in &whole.0 {
        let mut again = BytesMut::new();
        frame.encode(&mut again).expect("a decoded frame re-encodes");
        assert_eq!(&again[..], &raw[..], "re-encoding must give the same bytes");
        check_body(frame);
    }
});

type Decoded = (Vec<(Frame, Vec<u8>)>, Option<FrameError>, usize);

/// Feeds `stream` to a decoder `chunk` bytes at a time, as a socket would;
/// returns the frames (with the bytes each consumed), the error that ended
/// decoding, and how many bytes were left undecoded.
fn decode_all(body_max: usize, stream: &[u8], chunk: usize) -> Decoded {
    let mut decoder = FrameDecoder::with_body_bytes_max(body_max);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut fed = 0;
    loop {
        let before = buf.clone();
        match decoder.decode(&mut buf) {
            Ok(Some(frame)) => {
                let consumed = before.len() - buf.len();
                frames.push((frame, before[..consumed].to_vec()));
                if frames.len() >= FRAMES_MAX {
                    return (frames, None, buf.len() + stream.len() - fed);
                }
            }
            Ok(None) => {
                assert_eq!(buf, before, "an incomplete frame consumes nothing");
                if fed == stream.len() {
                    return (frames, None, buf.len());
                }
                let end = (fed + chunk).min(stream.len());
                buf.extend_from_slice(&stream[fed..end]);
                fed = end;
            }
            Err(err) if err.is_fatal() => {
                assert_eq!(buf, before, "a fatal error consumes nothing");
                return (frames, Some(err), buf.len() + stream.len() - fed);
            }
            Err(FrameError::UnknownKind { kind, .. }) => {
                assert!(FrameKind::try_from(kind).is_err());
                assert!(buf.len() < before.len(), "an unknown kind consumes its frame");
            }
            Err(other) => panic!("non-fatal error other than UnknownKind: {other:?}"),
        }
    }
}

/// Decodes the body with the typed decoder the server (requests) or the
/// client (responses) uses: every field is range-checked there, so a body
/// either decodes or gives a typed error, and never panics.
fn check_body(frame: &Frame) {
    let body = &frame.body[..];
    match frame.kind {
        FrameKind::MetadataRequest => keep(MetadataRequest::decode(body)),
        FrameKind::CreateStreamRequest => keep(CreateStreamRequest::decode(body)),
        FrameKind::DeleteStreamRequest => keep(DeleteStreamRequest::decode(body)),
        FrameKind::FetchRequest => keep(FetchRequest::decode(body)),
        FrameKind::PublishRequest => {
            if let Ok(Some(batch)) = PublishRequest::decode(body).map(|r| r.batch) {
                // The shard validates every published batch.
                let _ = shards::batch::validate_records(batch);
            }
        }
        FrameKind::ListOffsetsRequest => keep(ListOffsetsRequest::decode(body)),
        FrameKind::SetCursorRequest => keep(SetCursorRequest::decode(body)),
        FrameKind::FetchCursorRequest => keep(FetchCursorRequest::decode(body)),
        FrameKind::AuthenticateRequest => keep(AuthenticateRequest::decode(body)),
        FrameKind::OffsetForLeaderEpochRequest => keep(EpochQuery::decode(body)),
        FrameKind::ClusterStatusRequest => keep(ClusterStatusRequest::decode(body)),
        FrameKind::GrantAclRequest => keep(AclChangeRequest::decode(AclChange::Grant, body)),
        FrameKind::RevokeAclRequest => keep(AclChangeRequest::decode(AclChange::Revoke, body)),
        FrameKind::ListAclsRequest => keep(ListAclsRequest::decode(body)),
        FrameKind::MetadataResponse => keep(ClusterMetadata::decode(body)),
        FrameKind::CreateStreamResponse => keep(CreatedStream::decode(body)),
        FrameKind::FetchResponse => keep(FetchResponse::decode(body)),
        FrameKind::PublishResponse => keep(PublishResponse::decode(body)),
        FrameKind::ListOffsetsResponse => keep(ListedOffset::decode(body)),
        FrameKind::FetchCursorResponse => keep(FetchCursorResponse::decode(body)),
        FrameKind::AuthenticateResponse => keep(AuthenticateResponse::decode(body)),
        FrameKind::OffsetForLeaderEpochResponse => keep(EpochAnswer::decode(body)),
        FrameKind::ClusterStatusResponse => keep(ClusterStatus::decode(body)),
        FrameKind::ListAclsResponse => keep(ListAclsResponse::decode(body)),
        FrameKind::ErrorResponse => keep(ErrorResponse::decode(body)),
        _ => {}
    }
}

/// Keeps the optimiser from dropping a decode whose result is unused.
fn keep<T, E>(decoded: Result<T, E>) {
    std::hint::black_box(decoded.is_ok());
    drop(decoded);
}
