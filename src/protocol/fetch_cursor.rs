//! `FetchCursor` (kind `0x08`, answer `0x88`): a stored consumer position.

use flatbuffers::FlatBufferBuilder;
use shards::types::Offset;

use super::body::{read_body, DecodeError};
use super::generated::protocol as fb;
use super::wire;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchCursorRequest<'a> {
    /// Absent on the wire reads as "" (refused by the id rules).
    pub cursor_id: &'a str,
    pub stream: &'a str,
    pub partition: u32,
}

impl<'a> FetchCursorRequest<'a> {
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::new();
        let cursor_id = Some(fbb.create_string(self.cursor_id));
        let stream = Some(fbb.create_string(self.stream));
        let root = fb::FetchCursorRequest::create(
            &mut fbb,
            &fb::FetchCursorRequestArgs {
                cursor_id,
                stream,
                partition: wire::partition_to_wire(self.partition),
            },
        );
        fbb.finish_minimal(root);
        fbb.finished_data().to_vec()
    }

    pub fn decode(body: &'a [u8]) -> Result<FetchCursorRequest<'a>, DecodeError> {
        let request = read_body::<fb::FetchCursorRequest>(body)?;
        Ok(FetchCursorRequest {
            cursor_id: request.cursor_id().unwrap_or_default(),
            stream: request.stream().unwrap_or_default(),
            partition: wire::partition("FetchCursorRequest", request.partition())?,
        })
    }
}

/// The stored position; `None` (wire -1) when none is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchCursorResponse {
    pub offset: Option<Offset>,
}

impl FetchCursorResponse {
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::with_capacity(32);
        let root = fb::FetchCursorResponse::create(
            &mut fbb,
            &fb::FetchCursorResponseArgs {
                offset: wire::optional_offset_to_wire(self.offset),
            },
        );
        fbb.finish_minimal(root);
        fbb.finished_data().to_vec()
    }

    pub fn decode(body: &[u8]) -> Result<FetchCursorResponse, DecodeError> {
        let response = read_body::<fb::FetchCursorResponse>(body)?;
        Ok(FetchCursorResponse {
            offset: wire::optional_offset("FetchCursorResponse", "offset", response.offset())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_cursor_round_trips() {
        let request = FetchCursorRequest {
            cursor_id: "c",
            stream: "s",
            partition: 1,
        };
        assert_eq!(FetchCursorRequest::decode(&request.encode()), Ok(request));
        for offset in [None, Some(Offset(3))] {
            let answer = FetchCursorResponse { offset };
            assert_eq!(FetchCursorResponse::decode(&answer.encode()), Ok(answer));
        }
    }
}
