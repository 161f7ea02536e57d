//! Frames: how requests and responses are delimited on a TCP connection.
//!
//! ```text
//! offset  size  field
//!      0     4  length          u32 big-endian: bytes after this field = 5 + body
//!      4     1  kind            u8, see FrameKind
//!      5     4  correlation id  u32 big-endian, chosen by the client, echoed
//!      9     n  body            flatbuffer whose root table is fixed by `kind`
//! ```
//!
//! `length` is at least [`FRAME_LENGTH_MIN`] (an empty body) and at most
//! `5 + body limit`; the decoder checks it as soon as its 4 bytes are in,
//! before it waits for or buffers the body. One exception to "everything is a
//! frame": a `FetchResponse` frame is followed by exactly `byte_count` raw
//! bytes (whole RecordBatch v2 batches) that belong to no frame.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::fmt;

use super::error_code::ErrorCode;
use super::limits::{FRAME_BODY_BYTES_MAX, FRAME_HEADER_BYTES, FRAME_LENGTH_MIN};

/// The bit set in every response kind: response = `RESPONSE_BIT | request`.
pub const RESPONSE_BIT: u8 = 0x80;

/// What a frame's body holds. A stable numbered table: a number keeps its
/// meaning forever and a retired one is never reused.
///
/// Requests are `0x01..=0x7F`; the response to request `k` is `0x80 | k`;
/// `0xFF` is [`FrameKind::ErrorResponse`], which may answer any request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    MetadataRequest = 0x01,
    CreateStreamRequest = 0x02,
    DeleteStreamRequest = 0x03,
    /// Answered by a `FetchResponse` frame plus `byte_count` raw bytes.
    FetchRequest = 0x04,
    /// Not answered at all when its ack policy is `None` (unless it fails).
    PublishRequest = 0x05,
    ListOffsetsRequest = 0x06,
    SetCursorRequest = 0x07,
    FetchCursorRequest = 0x08,
    AuthenticateRequest = 0x09,
    /// A follower asks the partition leader where an epoch ended (KIP-101).
    OffsetForLeaderEpochRequest = 0x0A,
    /// Nodes, liveness, and partition leaders, ISRs, watermarks and lag.
    ClusterStatusRequest = 0x0B,
    /// ACL management (needs admin on every stream, or a superuser).
    GrantAclRequest = 0x0C,
    RevokeAclRequest = 0x0D,
    ListAclsRequest = 0x0E,
    MetadataResponse = 0x81,
    CreateStreamResponse = 0x82,
    DeleteStreamResponse = 0x83,
    FetchResponse = 0x84,
    PublishResponse = 0x85,
    ListOffsetsResponse = 0x86,
    SetCursorResponse = 0x87,
    FetchCursorResponse = 0x88,
    AuthenticateResponse = 0x89,
    OffsetForLeaderEpochResponse = 0x8A,
    ClusterStatusResponse = 0x8B,
    GrantAclResponse = 0x8C,
    RevokeAclResponse = 0x8D,
    ListAclsResponse = 0x8E,
    ErrorResponse = 0xFF,
}

impl FrameKind {
    /// Every kind, requests first, in numeric order.
    pub const ALL: [FrameKind; 29] = [
        FrameKind::MetadataRequest,
        FrameKind::CreateStreamRequest,
        FrameKind::DeleteStreamRequest,
        FrameKind::FetchRequest,
        FrameKind::PublishRequest,
        FrameKind::ListOffsetsRequest,
        FrameKind::SetCursorRequest,
        FrameKind::FetchCursorRequest,
        FrameKind::AuthenticateRequest,
        FrameKind::OffsetForLeaderEpochRequest,
        FrameKind::ClusterStatusRequest,
        FrameKind::GrantAclRequest,
        FrameKind::RevokeAclRequest,
        FrameKind::ListAclsRequest,
        FrameKind::MetadataResponse,
        FrameKind::CreateStreamResponse,
        FrameKind::DeleteStreamResponse,
        FrameKind::FetchResponse,
        FrameKind::PublishResponse,
        FrameKind::ListOffsetsResponse,
        FrameKind::SetCursorResponse,
        FrameKind::FetchCursorResponse,
        FrameKind::AuthenticateResponse,
        FrameKind::OffsetForLeaderEpochResponse,
        FrameKind::ClusterStatusResponse,
        FrameKind::GrantAclResponse,
        FrameKind::RevokeAclResponse,
        FrameKind::ListAclsResponse,
        FrameKind::ErrorResponse,
    ];

    /// The byte on the wire.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// Whether a client sends this kind.
    pub const fn is_request(self) -> bool {
        self.code() & RESPONSE_BIT == 0
    }

    /// The kind that answers this request on success; `None` for responses.
    pub fn response(self) -> Option<FrameKind> {
        if !self.is_request() {
            return None;
        }
        FrameKind::try_from(self.code() | RESPONSE_BIT).ok()
    }

    /// The flatbuffers root table of this kind's body (the kind's name).
    pub const fn table_name(self) -> &'static str {
        match self {
            FrameKind::MetadataRequest => "MetadataRequest",
            FrameKind::CreateStreamRequest => "CreateStreamRequest",
            FrameKind::DeleteStreamRequest => "DeleteStreamRequest",
            FrameKind::FetchRequest => "FetchRequest",
            FrameKind::PublishRequest => "PublishRequest",
            FrameKind::ListOffsetsRequest => "ListOffsetsRequest",
            FrameKind::SetCursorRequest => "SetCursorRequest",
            FrameKind::FetchCursorRequest => "FetchCursorRequest",
            FrameKind::AuthenticateRequest => "AuthenticateRequest",
            FrameKind::OffsetForLeaderEpochRequest => "OffsetForLeaderEpochRequest",
            FrameKind::ClusterStatusRequest => "ClusterStatusRequest",
            FrameKind::GrantAclRequest => "GrantAclRequest",
            FrameKind::RevokeAclRequest => "RevokeAclRequest",
            FrameKind::ListAclsRequest => "ListAclsRequest",
            FrameKind::MetadataResponse => "MetadataResponse",
            FrameKind::CreateStreamResponse => "CreateStreamResponse",
            FrameKind::DeleteStreamResponse => "DeleteStreamResponse",
            FrameKind::FetchResponse => "FetchResponse",
            FrameKind::PublishResponse => "PublishResponse",
            FrameKind::ListOffsetsResponse => "ListOffsetsResponse",
            FrameKind::SetCursorResponse => "SetCursorResponse",
            FrameKind::FetchCursorResponse => "FetchCursorResponse",
            FrameKind::AuthenticateResponse => "AuthenticateResponse",
            FrameKind::OffsetForLeaderEpochResponse => "OffsetForLeaderEpochResponse",
            FrameKind::ClusterStatusResponse => "ClusterStatusResponse",
            FrameKind::GrantAclResponse => "GrantAclResponse",
            FrameKind::RevokeAclResponse => "RevokeAclResponse",
            FrameKind::ListAclsResponse => "ListAclsResponse",
            FrameKind::ErrorResponse => "ErrorResponse",
        }
    }
}

impl TryFrom<u8> for FrameKind {
    /// The unknown byte.
    type Error = u8;

    fn try_from(code: u8) -> Result<Self, Self::Error> {
        FrameKind::ALL
            .iter()
            .copied()
            .find(|kind| kind.code() == code)
            .ok_or(code)
    }
}

impl fmt::Display for FrameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:#04x})", self.table_name(), self.code())
    }
}

/// One decoded frame. `body` is a zero-copy slice of the read buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub correlation_id: u32,
    pub body: Bytes,
}

impl Frame {
    /// Appends this frame to `out`; see [`encode_frame`].
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), FrameError> {
        encode_frame(self.kind, self.correlation_id, &self.body, out)
    }
}

/// Why bytes could not be decoded into (or encoded as) a frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length field is too small to hold kind and correlation id. Fatal:
    /// the stream cannot be resynchronised.
    #[error("frame length field {length} is below the minimum {FRAME_LENGTH_MIN}")]
    LengthTooSmall { length: u32 },
    /// The length field announces more than the receiver accepts. Fatal.
    #[error("frame length field {length} exceeds the limit {length_max}")]
    TooLarge { length: u32, length_max: u32 },
    /// A complete frame of a kind this build does not know; it was consumed,
    /// so the connection can go on.
    #[error("unknown frame kind {kind:#04x} (correlation id {correlation_id})")]
    UnknownKind { kind: u8, correlation_id: u32 },
    /// A body handed to the encoder is larger than [`FRAME_BODY_BYTES_MAX`].
    #[error("frame body of {body_bytes} bytes exceeds the limit {FRAME_BODY_BYTES_MAX}")]
    BodyTooLarge { body_bytes: usize },
}

impl FrameError {
    /// The wire code to answer with.
    pub const fn code(&self) -> ErrorCode {
        match self {
            FrameError::LengthTooSmall { .. } => ErrorCode::BadFrame,
            FrameError::TooLarge { .. } | FrameError::BodyTooLarge { .. } => {
                ErrorCode::FrameTooLarge
            }
            FrameError::UnknownKind { .. } => ErrorCode::UnknownKind,
        }
    }

    /// Whether the byte stream is lost (answer, then close the connection).
    /// After a fatal error the buffer is left as it was, and decoding it
    /// again returns the same error.
    pub const fn is_fatal(&self) -> bool {
        !matches!(self, FrameError::UnknownKind { .. })
    }

    /// The correlation id to answer with: the frame's when it was read, else 0.
    pub const fn correlation_id(&self) -> u32 {
        match self {
            FrameError::UnknownKind { correlation_id, .. } => *correlation_id,
            _ => 0,
        }
    }
}

/// Splits frames off the front of a read buffer, checking every length
/// against the limit before waiting for, or buffering, the body.
///
/// Stateless between calls apart from its limit, which a server lowers
/// ([`FRAME_BODY_BYTES_UNAUTHENTICATED_MAX`](super::limits::FRAME_BODY_BYTES_UNAUTHENTICATED_MAX))
/// until a connection has authenticated.
#[derive(Clone, Debug)]
pub struct FrameDecoder {
    body_bytes_max: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new()
    }
}

impl FrameDecoder {
    /// A decoder that accepts bodies up to [`FRAME_BODY_BYTES_MAX`].
    pub const fn new() -> FrameDecoder {
        FrameDecoder {
            body_bytes_max: FRAME_BODY_BYTES_MAX,
        }
    }

    /// A decoder with a lower body limit (values above
    /// [`FRAME_BODY_BYTES_MAX`] are lowered to it).
    pub fn with_body_bytes_max(body_bytes_max: usize) -> FrameDecoder {
        FrameDecoder {
            body_bytes_max: body_bytes_max.min(FRAME_BODY_BYTES_MAX),
        }
    }

    /// Changes the limit for the frames decoded from now on (e.g. raise it
    /// once the connection has authenticated); clamped like
    /// [`FrameDecoder::with_body_bytes_max`].
    pub fn set_body_bytes_max(&mut self, body_bytes_max: usize) {
        self.body_bytes_max = body_bytes_max.min(FRAME_BODY_BYTES_MAX);
    }

    pub const fn body_bytes_max(&self) -> usize {
        self.body_bytes_max
    }

    /// Largest acceptable length field: kind + correlation id + body limit.
    fn length_max(&self) -> u32 {
        // The body limit is clamped to FRAME_BODY_BYTES_MAX, far below u32::MAX.
        u32::try_from(self.body_bytes_max)
            .unwrap_or(u32::MAX)
            .saturating_add(FRAME_LENGTH_MIN)
    }

    /// Takes the next complete frame off the front of `buf`.
    ///
    /// `Ok(None)`: more bytes are needed (nothing consumed). A fatal error
    /// leaves `buf` untouched; [`FrameError::UnknownKind`] consumes its frame.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(length_field) = buf.get(..4) else {
            return Ok(None);
        };
        let mut length_bytes = [0u8; 4];
        length_bytes.copy_from_slice(length_field);
        let length = u32::from_be_bytes(length_bytes);
        if length < FRAME_LENGTH_MIN {
            return Err(FrameError::LengthTooSmall { length });
        }
        let length_max = self.length_max();
        if length > length_max {
            return Err(FrameError::TooLarge { length, length_max });
        }
        // length <= length_max < 2^25, so this cannot overflow usize.
        let frame_bytes = FRAME_HEADER_BYTES - FRAME_LENGTH_MIN as usize + length as usize;
        if buf.len() < frame_bytes {
            return Ok(None);
        }
        let mut frame = buf.split_to(frame_bytes);
        frame.advance(4);
        let kind = frame.get_u8();
        let correlation_id = frame.get_u32();
        let kind = FrameKind::try_from(kind).map_err(|kind| FrameError::UnknownKind {
            kind,
            correlation_id,
        })?;
        Ok(Some(Frame {
            kind,
            correlation_id,
            body: frame.freeze(),
        }))
    }
}

/// The 9-byte header for a frame with a body of `body_bytes`, for callers
/// that write header and body separately (vectored writes, a flatbuffer
/// builder's finished slice).
pub fn encode_frame_header(
    kind: FrameKind,
    correlation_id: u32,
    body_bytes: usize,
) -> Result<[u8; FRAME_HEADER_BYTES], FrameError> {
    if body_bytes > FRAME_BODY_BYTES_MAX {
        return Err(FrameError::BodyTooLarge { body_bytes });
    }
    let length = u32::try_from(body_bytes)
        .map_err(|_| FrameError::BodyTooLarge { body_bytes })?
        .saturating_add(FRAME_LENGTH_MIN);
    let mut header = [0u8; FRAME_HEADER_BYTES];
    let mut cursor = &mut header[..];
    cursor.put_u32(length);
    cursor.put_u8(kind.code());
    cursor.put_u32(correlation_id);
    Ok(header)
}

/// Appends one frame to `out`. Fails (appending nothing) when the body is
/// larger than [`FRAME_BODY_BYTES_MAX`].
pub fn encode_frame(
    kind: FrameKind,
    correlation_id: u32,
    body: &[u8],
    out: &mut BytesMut,
) -> Result<(), FrameError> {
    let header = encode_frame_header(kind, correlation_id, body.len())?;
    out.reserve(header.len() + body.len());
    out.put_slice(&header);
    out.put_slice(body);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::limits::{FRAME_BODY_BYTES_UNAUTHENTICATED_MAX, FRAME_BYTES_MAX};
    use proptest::prelude::*;

    fn encoded(kind: FrameKind, correlation_id: u32, body: &[u8]) -> BytesMut {
        let mut buf = BytesMut::new();
        encode_frame(kind, correlation_id, body, &mut buf).expect("encode");
        buf
    }

    #[test]
    fn round_trip() {
        let mut buf = encoded(FrameKind::FetchRequest, 0xDEAD_BEEF, b"body bytes");
        assert_eq!(buf.len(), FRAME_HEADER_BYTES + 10);
        assert_eq!(
            buf.get(..FRAME_HEADER_BYTES),
            Some(&[0, 0, 0, 15, 0x04, 0xDE, 0xAD, 0xBE, 0xEF][..])
        );
        let frame = FrameDecoder::new()
            .decode(&mut buf)
            .expect("ok")
            .expect("some");
        assert_eq!(
            frame,
            Frame {
                kind: FrameKind::FetchRequest,
                correlation_id: 0xDEAD_BEEF,
                body: Bytes::from_static(b"body bytes"),
            }
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn empty_body_and_back_to_back_frames() {
        let mut buf = encoded(FrameKind::MetadataRequest, 1, b"");
        Frame {
            kind: FrameKind::ErrorResponse,
            correlation_id: 2,
            body: Bytes::from_static(b"x"),
        }
        .encode(&mut buf)
        .expect("encode");
        let mut decoder = FrameDecoder::new();
        let first = decoder.decode(&mut buf).expect("ok").expect("some");
        assert_eq!(
            (first.kind, first.correlation_id),
            (FrameKind::MetadataRequest, 1)
        );
        assert!(first.body.is_empty());
        let second = decoder.decode(&mut buf).expect("ok").expect("some");
        assert_eq!(
            (second.kind, second.body.as_ref()),
            (FrameKind::ErrorResponse, &b"x"[..])
        );
        assert_eq!(decoder.decode(&mut buf), Ok(None));
    }

    #[test]
    fn partial_frames_wait_until_complete() {
        let whole = encoded(FrameKind::PublishRequest, 7, &[0xAA; 100]);
        let mut decoder = FrameDecoder::new();
        let mut buf = BytesMut::new();
        for (index, byte) in whole.iter().enumerate() {
            assert_eq!(decoder.decode(&mut buf), Ok(None), "after {index} bytes");
            assert_eq!(buf.len(), index, "nothing consumed while incomplete");
            buf.extend_from_slice(&[*byte]);
        }
        let frame = decoder.decode(&mut buf).expect("ok").expect("some");
        assert_eq!(frame.body.len(), 100);
        assert!(buf.is_empty());
    }

    #[test]
    fn huge_length_is_rejected_from_the_length_field_alone() {
        let mut buf = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        let capacity = buf.capacity();
        let error = FrameDecoder::new().decode(&mut buf).expect_err("too large");
        assert_eq!(
            error,
            FrameError::TooLarge {
                length: u32::MAX,
                length_max: u32::try_from(FRAME_BYTES_MAX - 4).expect("fits"),
            }
        );
        assert_eq!(error.code(), ErrorCode::FrameTooLarge);
        assert!(error.is_fatal());
        assert_eq!(buf.capacity(), capacity, "nothing allocated for the body");
        assert_eq!(buf.len(), 4, "buffer left as it was");
    }

    #[test]
    fn limit_is_exact_and_adjustable() {
        let at_limit = encoded(FrameKind::PublishRequest, 1, &vec![0; FRAME_BODY_BYTES_MAX]);
        let mut buf = at_limit.clone();
        assert!(FrameDecoder::new().decode(&mut buf).expect("ok").is_some());

        let mut small = FrameDecoder::with_body_bytes_max(FRAME_BODY_BYTES_UNAUTHENTICATED_MAX);
        let mut buf = encoded(FrameKind::AuthenticateRequest, 1, &vec![0; 70_000]);
        assert!(matches!(
            small.decode(&mut buf),
            Err(FrameError::TooLarge { .. })
        ));
        small.set_body_bytes_max(usize::MAX);
        assert_eq!(small.body_bytes_max(), FRAME_BODY_BYTES_MAX);
        assert!(small.decode(&mut buf).expect("ok").is_some());

        let mut out = BytesMut::new();
        assert_eq!(
            encode_frame(
                FrameKind::PublishRequest,
                1,
                &vec![0; FRAME_BODY_BYTES_MAX + 1],
                &mut out
            ),
            Err(FrameError::BodyTooLarge {
                body_bytes: FRAME_BODY_BYTES_MAX + 1
            })
        );
        assert!(out.is_empty());
    }

    #[test]
    fn length_below_header_is_bad_frame() {
        for length in 0..FRAME_LENGTH_MIN {
            let mut buf = BytesMut::from(&length.to_be_bytes()[..]);
            let error = FrameDecoder::new().decode(&mut buf).expect_err("bad");
            assert_eq!(error, FrameError::LengthTooSmall { length });
            assert_eq!(error.code(), ErrorCode::BadFrame);
        }
    }

    #[test]
    fn unknown_kind_is_consumed_and_the_stream_goes_on() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0, 0, 0, 7, 0x42, 0, 0, 0, 9, 1, 2]);
        buf.extend_from_slice(&encoded(FrameKind::MetadataRequest, 10, b"m"));
        let mut decoder = FrameDecoder::new();
        let error = decoder.decode(&mut buf).expect_err("unknown");
        assert_eq!(
            error,
            FrameError::UnknownKind {
                kind: 0x42,
                correlation_id: 9
            }
        );
        assert_eq!(
            (error.code(), error.is_fatal(), error.correlation_id()),
            (ErrorCode::UnknownKind, false, 9)
        );
        let next = decoder.decode(&mut buf).expect("ok").expect("some");
        assert_eq!(next.correlation_id, 10);
    }

    #[test]
    fn kinds_table_is_consistent() {
        for kind in FrameKind::ALL {
            assert_eq!(FrameKind::try_from(kind.code()), Ok(kind));
            if kind.is_request() {
                let response = kind.response().expect("every request has a response");
                assert_eq!(response.code(), kind.code() | RESPONSE_BIT);
                assert_eq!(
                    response.table_name().strip_suffix("Response"),
                    kind.table_name().strip_suffix("Request")
                );
            } else {
                assert_eq!(kind.response(), None);
            }
        }
        let requests = FrameKind::ALL
            .iter()
            .filter(|kind| kind.is_request())
            .count();
        // Every request has its response, plus ErrorResponse.
        assert_eq!(requests * 2 + 1, FrameKind::ALL.len());
        assert!(FrameKind::ALL.contains(&FrameKind::OffsetForLeaderEpochRequest));
        // One response per request, plus ErrorResponse.
        assert_eq!(requests * 2 + 1, FrameKind::ALL.len());
        assert_eq!(FrameKind::ErrorResponse.code(), 0xFF);
        assert_eq!(FrameKind::try_from(0x00), Err(0x00));
        assert_eq!(FrameKind::try_from(0x80), Err(0x80));
    }

    proptest! {
        /// Whatever arrives, in whatever pieces: no panic, and every frame
        /// handed out respects the limit.
        #[test]
        fn garbage_never_panics(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16),
            body_bytes_max in 0usize..256,
        ) {
            let mut decoder = FrameDecoder::with_body_bytes_max(body_bytes_max);
            let mut buf = BytesMut::new();
            for chunk in chunks {
                buf.extend_from_slice(&chunk);
                loop {
                    match decoder.decode(&mut buf) {
                        Ok(Some(frame)) => prop_assert!(frame.body.len() <= body_bytes_max),
                        Ok(None) => break,
                        Err(error) if error.is_fatal() => return Ok(()),
                        Err(_) => {}
                    }
                }
            }
        }

        #[test]
        fn arbitrary_frames_round_trip(
            kind in proptest::sample::select(FrameKind::ALL.to_vec()),
            correlation_id in any::<u32>(),
            body in proptest::collection::vec(any::<u8>(), 0..512),
            split in any::<usize>(),
        ) {
            let whole = encoded(kind, correlation_id, &body);
            let split = split % (whole.len() + 1);
            let mut decoder = FrameDecoder::new();
            let mut buf = BytesMut::from(whole.get(..split).expect("split"));
            if split < whole.len() {
                prop_assert_eq!(decoder.decode(&mut buf), Ok(None));
            }
            buf.extend_from_slice(whole.get(split..).expect("split"));
            let frame = decoder.decode(&mut buf).expect("ok").expect("some");
            prop_assert_eq!(frame, Frame { kind, correlation_id, body: Bytes::from(body) });
        }
    }
}
