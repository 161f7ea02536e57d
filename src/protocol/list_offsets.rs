//! `ListOffsets` (kind `0x06`, answer `0x86`): the log start, the high
//! watermark, or the first offset at or after a timestamp.

use flatbuffers::FlatBufferBuilder;
use shards::types::{Offset, TimestampMs};

use super::body::{read_body, DecodeError};
use super::generated::protocol as fb;
use super::wire;

const TABLE: &str = "ListOffsetsRequest";

/// What `ListOffsets` looks up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetQuery {
    Earliest,
    Latest,
    /// The first record whose timestamp is at least this.
    Timestamp(TimestampMs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListOffsetsRequest<'a> {
    /// Absent on the wire reads as "" (no such stream).
    pub stream: &'a str,
    pub partition: u32,
    pub query: OffsetQuery,
}

impl<'a> ListOffsetsRequest<'a> {
    pub fn encode(&self) -> Vec<u8> {
        let (kind, timestamp_ms) = match self.query {
            OffsetQuery::Earliest => (fb::OffsetKind::Earliest, 0),
            OffsetQuery::Latest => (fb::OffsetKind::Latest, 0),
            OffsetQuery::Timestamp(at) => (fb::OffsetKind::Timestamp, at.0),
        };
        let mut fbb = FlatBufferBuilder::new();
        let stream = Some(fbb.create_string(self.stream));
        let root = fb::ListOffsetsRequest::create(
            &mut fbb,
            &fb::ListOffsetsRequestArgs {
                stream,
                partition: wire::partition_to_wire(self.partition),
                kind,
                timestamp_ms,
            },
        );
        fbb.finish_minimal(root);
        fbb.finished_data().to_vec()
    }

    pub fn decode(body: &'a [u8]) -> Result<ListOffsetsRequest<'a>, DecodeError> {
        let request = read_body::<fb::ListOffsetsRequest>(body)?;
        let query = match request.kind() {
            fb::OffsetKind::Earliest => OffsetQuery::Earliest,
            fb::OffsetKind::Latest => OffsetQuery::Latest,
            fb::OffsetKind::Timestamp => {
                OffsetQuery::Timestamp(TimestampMs(request.timestamp_ms()))
            }
            other => {
                return Err(DecodeError::field(
                    TABLE,
                    "kind",
                    format!("unknown offset kind {}", other.0),
                ))
            }
        };
        Ok(ListOffsetsRequest {
            stream: request.stream().unwrap_or_default(),
            partition: wire::partition(TABLE, request.partition())?,
            query,
        })
    }
}

/// The answer to `ListOffsets`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListedOffset {
    pub offset: Offset,
    /// For [`OffsetQuery::Timestamp`]: the timestamp of the record at
    /// `offset`; `None` when no record is that recent (then `offset` is the
    /// high watermark) and for the other queries.
    pub timestamp: Option<TimestampMs>,
}

impl ListedOffset {
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::with_capacity(64);
        let root = fb::ListOffsetsResponse::create(
            &mut fbb,
            &fb::ListOffsetsResponseArgs {
                offset: wire::offset_to_wire(self.offset),
                timestamp_ms: self.timestamp.map_or(-1, |at| at.0),
            },
        );
        fbb.finish_minimal(root);
        fbb.finished_data().to_vec()
    }

    pub fn decode(body: &[u8]) -> Result<ListedOffset, DecodeError> {
        let response = read_body::<fb::ListOffsetsResponse>(body)?;
        Ok(ListedOffset {
            offset: wire::offset("ListOffsetsResponse", "offset", response.offset())?,
            timestamp: Some(response.timestamp_ms())
                .filter(|ms| *ms >= 0)
                .map(TimestampMs),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_offsets_round_trips() {
        let request = ListOffsetsRequest {
            stream: "s",
            partition: 4,
            query: OffsetQuery::Timestamp(TimestampMs(5)),
        };
        assert_eq!(ListOffsetsRequest::decode(&request.encode()), Ok(request));
        let answer = ListedOffset {
            offset: Offset(8),
            timestamp: Some(TimestampMs(5)),
        };
        assert_eq!(ListedOffset::decode(&answer.encode()), Ok(answer));
    }
}
