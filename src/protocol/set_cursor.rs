//! `SetCursor` (kind `0x07`, answer `0x87`, an empty table): stores a
//! consumer position, the next offset to read.

use flatbuffers::FlatBufferBuilder;
use shards::types::Offset;

use super::body::{read_body, DecodeError};
use super::generated::protocol as fb;
use super::wire;

const TABLE: &str = "SetCursorRequest";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetCursorRequest<'a> {
    /// Absent on the wire reads as "" (refused by the id rules).
    pub cursor_id: &'a str,
    pub stream: &'a str,
    pub partition: u32,
    /// The next offset the consumer reads.
    pub offset: Offset,
}

impl<'a> SetCursorRequest<'a> {
    pub fn encode(&self) -> Vec<u8> {
        self.encode_with_wire_offset(wire::offset_to_wire(self.offset))
    }

    /// This request with `offset` written as given, which may be negative:
    /// only for tests that check the server refuses what no typed caller
    /// can send.
    #[doc(hidden)]
    pub fn encode_with_wire_offset(&self, offset: i64) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::new();
        let cursor_id = Some(fbb.create_string(self.cursor_id));
        let stream = Some(fbb.create_string(self.stream));
        let root = fb::SetCursorRequest::create(
            &mut fbb,
            &fb::SetCursorRequestArgs {
                cursor_id,
                stream,
                partition: wire::partition_to_wire(self.partition),
                offset,
            },
        );
        fbb.finish_minimal(root);
        fbb.finished_data().to_vec()
    }

    pub fn decode(body: &'a [u8]) -> Result<SetCursorRequest<'a>, DecodeError> {
        let request = read_body::<fb::SetCursorRequest>(body)?;
        let offset = u64::try_from(request.offset()).map(Offset).map_err(|_| {
            DecodeError::field(
                TABLE,
                "offset",
                format!(
                    "offset {} is negative; a cursor is the next offset to read (>= 0)",
                    request.offset()
                ),
            )
        })?;
        Ok(SetCursorRequest {
            cursor_id: request.cursor_id().unwrap_or_default(),
            stream: request.stream().unwrap_or_default(),
            partition: wire::partition(TABLE, request.partition())?,
            offset,
        })
    }
}

/// The (empty) answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetCursorResponse;

impl SetCursorResponse {
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::with_capacity(16);
        let root = fb::SetCursorResponse::create(&mut fbb, &fb::SetCursorResponseArgs {});
        fbb.finish_minimal(root);
        fbb.finished_data().to_vec()
    }

    pub fn decode(body: &[u8]) -> Result<SetCursorResponse, DecodeError> {
        read_body::<fb::SetCursorResponse>(body)?;
        Ok(SetCursorResponse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_cursor_round_trips_and_refuses_negative_offsets() {
        let request = SetCursorRequest {
            cursor_id: "c",
            stream: "orders",
            partition: 0,
            offset: Offset(5),
        };
        assert_eq!(SetCursorRequest::decode(&request.encode()), Ok(request));
        let error =
            SetCursorRequest::decode(&request.encode_with_wire_offset(-5)).expect_err("negative");
        assert!(error.to_string().contains("negative"), "{error}");
        assert_eq!(
            SetCursorResponse::decode(&SetCursorResponse.encode()),
            Ok(SetCursorResponse)
        );
    }
}
