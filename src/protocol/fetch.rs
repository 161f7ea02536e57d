//! `Fetch` (kind `0x04`, answer `0x84`): a consumer's or a follower's read
//! of one partition. The answer is a `FetchResponse` frame followed, outside
//! any frame, by exactly `byte_count` raw bytes of whole RecordBatch v2
//! batches (`docs/protocol.md` §Fetch).
//!
//! This is the one place a Fetch request is encoded: the blocking client,
//! the follower's leader connection and the bench all call
//! [`FetchRequest::encode`] or, on a hot path that reuses its builder,
//! [`FetchRequest::encode_into`].

use flatbuffers::FlatBufferBuilder;
use shards::types::{LeaderEpoch, Offset, TimestampMs};

use super::body::{read_body, DecodeError};
use super::error_code::ErrorCode;
use super::generated::protocol as fb;
use super::wire;
use crate::model::NodeId;

const TABLE: &str = "FetchRequest";

/// Where a fetch starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchStart {
    /// At this offset; records below it in the first batch are skipped.
    Offset(Offset),
    /// At the log start offset.
    Earliest,
    /// At the high watermark: only records committed after the request.
    Latest,
    /// At the first record whose timestamp is at least this.
    Timestamp(TimestampMs),
}

/// One fetch. Borrowed from the received body on the server (no copy on
/// the data path).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchRequest<'a> {
    /// Absent on the wire reads as "" (no such stream).
    pub stream: &'a str,
    pub partition: u32,
    pub start: FetchStart,
    /// 0 = the server's default; the server caps it.
    pub max_bytes: u32,
    /// Long poll; 0 = answer at once; the server caps it.
    pub max_wait_ms: u32,
    /// A follower's node id (it reads up to the log end); `None` for
    /// consumers (wire -1).
    pub replica_id: Option<NodeId>,
    /// For replica fetches: the leader epoch the follower believes
    /// current; `None` (wire -1) = not checked.
    pub current_leader_epoch: Option<LeaderEpoch>,
}

impl<'a> FetchRequest<'a> {
    /// A consumer's fetch (no replica id, no epoch check).
    pub fn consumer(
        stream: &'a str,
        partition: u32,
        start: FetchStart,
        max_bytes: u32,
        max_wait_ms: u32,
    ) -> FetchRequest<'a> {
        FetchRequest {
            stream,
            partition,
            start,
            max_bytes,
            max_wait_ms,
            replica_id: None,
            current_leader_epoch: None,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::with_capacity(128 + self.stream.len());
        self.encode_into(&mut fbb);
        fbb.finished_data().to_vec()
    }

    /// Resets `fbb` and leaves this request as its finished buffer
    /// (`fbb.finished_data()`): lets a hot path reuse one builder.
    pub fn encode_into(&self, fbb: &mut FlatBufferBuilder<'_>) {
        fbb.reset();
        let (start_kind, start_value) = match self.start {
            FetchStart::Offset(offset) => (fb::StartKind::Offset, wire::offset_to_wire(offset)),
            FetchStart::Earliest => (fb::StartKind::Earliest, 0),
            FetchStart::Latest => (fb::StartKind::Latest, 0),
            FetchStart::Timestamp(at) => (fb::StartKind::Timestamp, at.0),
        };
        let stream = Some(fbb.create_string(self.stream));
        let root = fb::FetchRequest::create(
            fbb,
            &fb::FetchRequestArgs {
                stream,
                partition: wire::partition_to_wire(self.partition),
                start_kind,
                start_value,
                max_bytes: self.max_bytes,
                max_wait_ms: self.max_wait_ms,
                replica_id: wire::optional_node_id_to_wire(self.replica_id),
                current_leader_epoch: self.current_leader_epoch.map_or(-1, |epoch| epoch.0),
            },
        );
        fbb.finish_minimal(root);
    }

    /// A negative start offset is refused with `OffsetOutOfRange` (as the
    /// server always answered it); an unknown start kind, a negative
    /// partition: `InvalidRequest`. Any negative `replica_id` is a
    /// consumer and any negative epoch is "not checked".
    pub fn decode(body: &'a [u8]) -> Result<FetchRequest<'a>, DecodeError> {
        let request = read_body::<fb::FetchRequest>(body)?;
        let value = request.start_value();
        let start = match request.start_kind() {
            fb::StartKind::Offset => {
                FetchStart::Offset(Offset(u64::try_from(value).map_err(|_| {
                    DecodeError::Field {
                        table: TABLE,
                        field: "start_value",
                        reason: format!("negative offset {value}"),
                        code: ErrorCode::OffsetOutOfRange,
                    }
                })?))
            }
            fb::StartKind::Earliest => FetchStart::Earliest,
            fb::StartKind::Latest => FetchStart::Latest,
            fb::StartKind::Timestamp => FetchStart::Timestamp(TimestampMs(value)),
            other => {
                return Err(DecodeError::field(
                    TABLE,
                    "start_kind",
                    format!("unknown start kind {}", other.0),
                ))
            }
        };
        Ok(FetchRequest {
            stream: request.stream().unwrap_or_default(),
            partition: wire::partition(TABLE, request.partition())?,
            start,
            max_bytes: request.max_bytes(),
            max_wait_ms: request.max_wait_ms(),
            replica_id: NodeId::from_wire(request.replica_id()),
            current_leader_epoch: Some(request.current_leader_epoch())
                .filter(|epoch| *epoch >= 0)
                .map(LeaderEpoch),
        })
    }
}

/// The header frame of a fetch answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchResponse {
    /// Set when the fetch failed (then `byte_count` is 0).
    pub error: Option<ErrorCode>,
    /// Detail of `error`; empty (absent on the wire) on success.
    pub error_message: String,
    /// Offset after the last committed record; `None` = -1 on the wire.
    pub high_watermark: Option<Offset>,
    /// Oldest retained offset; `None` = -1 on the wire.
    pub log_start_offset: Option<Offset>,
    /// Raw bytes that follow the frame.
    pub byte_count: u32,
}

impl FetchResponse {
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::with_capacity(64 + self.error_message.len());
        let error_message =
            (!self.error_message.is_empty()).then(|| fbb.create_string(&self.error_message));
        let root = fb::FetchResponse::create(
            &mut fbb,
            &fb::FetchResponseArgs {
                error_code: self.error.map_or(0, ErrorCode::code),
                error_message,
                high_watermark: wire::optional_offset_to_wire(self.high_watermark),
                log_start_offset: wire::optional_offset_to_wire(self.log_start_offset),
                byte_count: self.byte_count,
            },
        );
        fbb.finish_minimal(root);
        fbb.finished_data().to_vec()
    }

    pub fn decode(body: &[u8]) -> Result<FetchResponse, DecodeError> {
        let response = read_body::<fb::FetchResponse>(body)?;
        Ok(FetchResponse {
            error: ErrorCode::from_wire(response.error_code()),
            error_message: response.error_message().unwrap_or_default().to_owned(),
            high_watermark: wire::optional_offset(
                "FetchResponse",
                "high_watermark",
                response.high_watermark(),
            )?,
            log_start_offset: wire::optional_offset(
                "FetchResponse",
                "log_start_offset",
                response.log_start_offset(),
            )?,
            byte_count: response.byte_count(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_request_fields() {
        let body =
            FetchRequest::consumer("s", 2, FetchStart::Offset(Offset(41)), 1 << 20, 500).encode();
        let request = read_body::<fb::FetchRequest>(&body).expect("verifies");
        assert_eq!(request.stream(), Some("s"));
        assert_eq!((request.partition(), request.start_value()), (2, 41));
        assert_eq!(request.start_kind(), fb::StartKind::Offset);
        assert_eq!(request.replica_id(), -1);
        let body =
            FetchRequest::consumer("s", 0, FetchStart::Timestamp(TimestampMs(9)), 0, 0).encode();
        let request = read_body::<fb::FetchRequest>(&body).expect("verifies");
        assert_eq!(
            (request.start_kind(), request.start_value()),
            (fb::StartKind::Timestamp, 9)
        );
    }

    #[test]
    fn requests_and_answers_round_trip() {
        let replica = FetchRequest {
            stream: "orders",
            partition: 3,
            start: FetchStart::Offset(Offset(7)),
            max_bytes: 1 << 20,
            max_wait_ms: 500,
            replica_id: NodeId::new(2),
            current_leader_epoch: Some(LeaderEpoch(4)),
        };
        let body = replica.encode();
        assert_eq!(FetchRequest::decode(&body), Ok(replica));
        let mut fbb = FlatBufferBuilder::new();
        replica.encode_into(&mut fbb);
        replica.encode_into(&mut fbb);
        assert_eq!(
            fbb.finished_data(),
            &body[..],
            "a reused builder encodes the same"
        );
        let answer = FetchResponse {
            error: Some(ErrorCode::OffsetOutOfRange),
            error_message: "offset out of range".into(),
            high_watermark: Some(Offset(10)),
            log_start_offset: Some(Offset(2)),
            byte_count: 0,
        };
        assert_eq!(FetchResponse::decode(&answer.encode()), Ok(answer));
    }

    #[test]
    fn out_of_range_fields_are_typed_errors() {
        let mut fbb = FlatBufferBuilder::new();
        let root = fb::FetchRequest::create(
            &mut fbb,
            &fb::FetchRequestArgs {
                start_value: -3,
                ..Default::default()
            },
        );
        fbb.finish_minimal(root);
        let error = FetchRequest::decode(fbb.finished_data()).expect_err("negative offset");
        assert_eq!(error.code(), ErrorCode::OffsetOutOfRange);
        let mut fbb = FlatBufferBuilder::new();
        let root = fb::FetchRequest::create(
            &mut fbb,
            &fb::FetchRequestArgs {
                partition: -1,
                ..Default::default()
            },
        );
        fbb.finish_minimal(root);
        let error = FetchRequest::decode(fbb.finished_data()).expect_err("negative partition");
        assert_eq!(error.code(), ErrorCode::InvalidRequest);
    }
}
