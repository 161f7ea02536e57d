//! `DeleteStream` (kind `0x03`, answer `0x83`, an empty table).

use flatbuffers::FlatBufferBuilder;

use super::body::{read_body, DecodeError};
use super::generated::protocol as fb;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteStreamRequest<'a> {
    /// Absent on the wire reads as "" (no such stream).
    pub name: &'a str,
}

impl<'a> DeleteStreamRequest<'a> {
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::new();
        let name = Some(fbb.create_string(self.name));
        let root = fb::DeleteStreamRequest::create(&mut fbb, &fb::DeleteStreamRequestArgs { name });
        fbb.finish_minimal(root);
        fbb.finished_data().to_vec()
    }

    pub fn decode(body: &'a [u8]) -> Result<DeleteStreamRequest<'a>, DecodeError> {
        let request = read_body::<fb::DeleteStreamRequest>(body)?;
        Ok(DeleteStreamRequest {
            name: request.name().unwrap_or_default(),
        })
    }
}

/// The (empty) answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeleteStreamResponse;

impl DeleteStreamResponse {
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::with_capacity(16);
        let root = fb::DeleteStreamResponse::create(&mut fbb, &fb::DeleteStreamResponseArgs {});
        fbb.finish_minimal(root);
        fbb.finished_data().to_vec()
    }

    pub fn decode(body: &[u8]) -> Result<DeleteStreamResponse, DecodeError> {
        read_body::<fb::DeleteStreamResponse>(body)?;
        Ok(DeleteStreamResponse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_stream_round_trips() {
        let body = DeleteStreamRequest { name: "d" }.encode();
        assert_eq!(
            DeleteStreamRequest::decode(&body),
            Ok(DeleteStreamRequest { name: "d" })
        );
        assert_eq!(
            DeleteStreamResponse::decode(&DeleteStreamResponse.encode()),
            Ok(DeleteStreamResponse)
        );
    }
}
