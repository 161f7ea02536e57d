//! Reading flatbuffer bodies received from the network.
//!
//! Every received flatbuffer (frame body, envelope, ack) goes through
//! [`read_body`], which runs the flatbuffers verifier with this protocol's
//! limits before a single field is read. After that, the generated accessors
//! cannot read out of bounds.

use flatbuffers::{Follow, InvalidFlatbuffer, Verifiable, VerifierOptions};

use super::error_code::ErrorCode;
use super::limits::{
    FLATBUFFER_APPARENT_SIZE_FACTOR, FLATBUFFER_APPARENT_SLACK_BYTES, FLATBUFFER_DEPTH_MAX,
    FLATBUFFER_TABLES_MAX,
};

/// A received flatbuffer that does not verify as the table it should hold.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("body of {body_bytes} bytes does not verify: {source}")]
pub struct BodyError {
    pub body_bytes: usize,
    #[source]
    pub source: InvalidFlatbuffer,
}

impl BodyError {
    /// The wire code a server answers with.
    pub const fn code(&self) -> ErrorCode {
        ErrorCode::InvalidRequest
    }
}

/// Why a received body could not be decoded into its typed request or
/// response: it does not verify, or a field holds a value the protocol does
/// not allow (a negative partition, an unknown enum value, ...). Decoders
/// never clamp or wrap a value they cannot represent; they name it here.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Body(#[from] BodyError),
    /// A field out of its range. `code` is what a server answers with
    /// (usually `InvalidRequest`; `OffsetOutOfRange` for a negative fetch
    /// offset, as `docs/protocol.md` promises).
    #[error("{table}.{field}: {reason}")]
    Field {
        table: &'static str,
        field: &'static str,
        reason: String,
        code: ErrorCode,
    },
}

impl DecodeError {
    /// A field holding a value outside its range; answered `InvalidRequest`.
    pub fn field(table: &'static str, field: &'static str, reason: impl Into<String>) -> Self {
        DecodeError::Field {
            table,
            field,
            reason: reason.into(),
            code: ErrorCode::InvalidRequest,
        }
    }

    /// The wire code a server answers with.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::Body(error) => error.code(),
            DecodeError::Field { code, .. } => *code,
        }
    }
}

/// The verifier options for a buffer of `buffer_bytes` bytes.
pub fn verifier_options(buffer_bytes: usize) -> VerifierOptions {
    VerifierOptions {
        max_depth: FLATBUFFER_DEPTH_MAX,
        max_tables: FLATBUFFER_TABLES_MAX,
        max_apparent_size: buffer_bytes
            .saturating_mul(FLATBUFFER_APPARENT_SIZE_FACTOR)
            .saturating_add(FLATBUFFER_APPARENT_SLACK_BYTES),
        ignore_missing_null_terminator: false,
    }
}

/// Verifies `body` as a flatbuffer whose root is a `T` and returns that root.
///
/// ```
/// use sluice::protocol::body::read_body;
/// use sluice::protocol::generated::protocol::FetchRequest;
/// assert!(read_body::<FetchRequest>(&[0xff; 3]).is_err());
/// ```
pub fn read_body<'buf, T>(body: &'buf [u8]) -> Result<T::Inner, BodyError>
where
    T: 'buf + Follow<'buf> + Verifiable,
{
    flatbuffers::root_with_opts::<T>(&verifier_options(body.len()), body).map_err(|source| {
        BodyError {
            body_bytes: body.len(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::fetch::{FetchRequest, FetchStart};
    use crate::protocol::frame::{encode_frame, FrameDecoder, FrameKind};
    use crate::protocol::generated::protocol as fb;
    use crate::protocol::metadata::{ClusterMetadata, PartitionMetadata, StreamMetadata};
    use crate::protocol::stream_config::StreamConfig;
    use bytes::BytesMut;
    use flatbuffers::FlatBufferBuilder;
    use shards::types::TimestampMs;

    /// A request built with the generated code survives framing and verification.
    #[test]
    fn generated_request_through_a_frame() {
        let body = FetchRequest::consumer(
            "orders",
            3,
            FetchStart::Timestamp(TimestampMs(1_700_000_000_000)),
            1 << 20,
            500,
        )
        .encode();
        let mut buf = BytesMut::new();
        encode_frame(FrameKind::FetchRequest, 5, &body, &mut buf).expect("encode");
        let frame = FrameDecoder::new()
            .decode(&mut buf)
            .expect("ok")
            .expect("some");
        let request = read_body::<fb::FetchRequest>(&frame.body).expect("verifies");
        assert_eq!(request.stream(), Some("orders"));
        assert_eq!(request.partition(), 3);
        assert_eq!(request.start_kind(), fb::StartKind::Timestamp);
        assert_eq!(request.start_value(), 1_700_000_000_000);
        assert_eq!((request.max_bytes(), request.max_wait_ms()), (1 << 20, 500));
        assert_eq!(request.replica_id(), -1);
    }

    /// The nested metadata answer verifies within the depth limit, and an
    /// empty table reads as all defaults.
    #[test]
    fn nested_and_empty_bodies() {
        let metadata = ClusterMetadata {
            protocol_version: 1,
            streams: vec![StreamMetadata {
                error: None,
                config: StreamConfig::new("orders", ""),
                partitions: vec![PartitionMetadata {
                    partition: 0,
                    leader: Some(crate::model::nid(1)),
                    shard_index: 1,
                    consumer_port: 7401,
                    replicas: crate::model::nids(&[1, 2, 3]),
                    ..PartitionMetadata::default()
                }],
            }],
            ..ClusterMetadata::default()
        };
        let body = metadata.encode();
        let response = read_body::<fb::MetadataResponse>(&body).expect("verifies");
        let partition = response
            .streams()
            .and_then(|streams| streams.iter().next())
            .and_then(|stream| stream.partitions())
            .and_then(|partitions| partitions.iter().next())
            .expect("one partition");
        assert_eq!(partition.consumer_port(), 7401);
        assert_eq!(partition.high_watermark(), -1);

        let mut fbb = FlatBufferBuilder::new();
        let empty = fb::FetchRequest::create(&mut fbb, &fb::FetchRequestArgs::default());
        fbb.finish_minimal(empty);
        let request = read_body::<fb::FetchRequest>(fbb.finished_data()).expect("verifies");
        assert_eq!(request.stream(), None);
        assert_eq!(request.start_kind(), fb::StartKind::Offset);
        assert_eq!(request.replica_id(), -1);
    }

    #[test]
    fn garbage_and_empty_bodies_are_refused() {
        for body in [&[][..], &[1, 2, 3], &[0xFF; 64]] {
            let error = read_body::<fb::MetadataRequest>(body).expect_err("garbage");
            assert_eq!(error.code(), ErrorCode::InvalidRequest);
            assert_eq!(error.body_bytes, body.len());
        }
    }
}
