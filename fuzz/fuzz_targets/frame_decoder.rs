//! The TCP frame decoder and the body verification every request goes
//! through, on arbitrary bytes from the network.
//!
//! Properties: never panics; a decoded frame re-encodes to exactly the bytes
//! it consumed; feeding the same bytes in small chunks yields the same frames
//! and the same error; a fatal error consumes nothing; request bodies either
//! verify as their kind's table or give a typed error.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sluice::protocol::body::read_body;
use sluice::protocol::frame::{Frame, FrameDecoder, FrameError, FrameKind};
use sluice::protocol::generated::protocol as fb;

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

/// Verifies the body as the server (requests) or client (responses) does,
/// and reads every field a handler reads.
fn check_body(frame: &Frame) {
    let body = &frame.body[..];
    match frame.kind {
        FrameKind::MetadataRequest => {
            if let Ok(req) = read_body::<fb::MetadataRequest>(body) {
                for name in req.streams().iter().flatten() {
                    std::hint::black_box(name.len());
                }
            }
        }
        FrameKind::CreateStreamRequest => {
            if let Ok(req) = read_body::<fb::CreateStreamRequest>(body) {
                if let Some(config) = req.config() {
                    std::hint::black_box((config.name(), config.subject(), config.group()));
                }
            }
        }
        FrameKind::DeleteStreamRequest => {
            if let Ok(req) = read_body::<fb::DeleteStreamRequest>(body) {
                std::hint::black_box(req.name());
            }
        }
        FrameKind::FetchRequest => {
            if let Ok(req) = read_body::<fb::FetchRequest>(body) {
                std::hint::black_box((req.stream(), req.partition(), req.start_kind()));
            }
        }
        FrameKind::PublishRequest => {
            if let Ok(req) = read_body::<fb::PublishRequest>(body) {
                if let Some(batch) = req.batch() {
                    // The shard validates every published batch.
                    let _ = shards::batch::validate_records(batch.bytes());
                }
                std::hint::black_box((req.stream(), req.ack_policy()));
            }
        }
        FrameKind::ListOffsetsRequest => {
            if let Ok(req) = read_body::<fb::ListOffsetsRequest>(body) {
                std::hint::black_box((req.stream(), req.kind(), req.timestamp_ms()));
            }
        }
        FrameKind::MetadataResponse => {
            if let Ok(resp) = read_body::<fb::MetadataResponse>(body) {
                for stream in resp.streams().iter().flatten() {
                    for partition in stream.partitions().iter().flatten() {
                        std::hint::black_box(partition.replicas().map(|r| r.len()));
                    }
                }
            }
        }
        FrameKind::ErrorResponse => {
            if let Ok(resp) = read_body::<fb::ErrorResponse>(body) {
                std::hint::black_box((resp.code(), resp.message()));
            }
        }
        _ => {}
    }
}
