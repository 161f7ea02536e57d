//! `ErrorResponse` (kind `0xFF`): the answer any request may get instead of
//! its own response kind. Also what a server sends, with correlation id 0,
//! before it closes a connection whose byte stream it cannot parse.

use bytes::BytesMut;
use flatbuffers::FlatBufferBuilder;

use super::body::{read_body, BodyError, DecodeError};
use super::error_code::ErrorCode;
use super::frame::{encode_frame, FrameError, FrameKind};
use super::generated::protocol as fb;

/// Longest message put in an ErrorResponse; longer ones are cut (at a char
/// boundary). Keeps error frames small whatever the cause's text.
pub const ERROR_MESSAGE_BYTES_MAX: usize = 1024;

/// A decoded (or to-be-encoded) ErrorResponse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorResponse {
    /// A wire value of 0 (which no server sends) reads as [`ErrorCode::Unknown`].
    pub code: ErrorCode,
    pub message: String,
    /// For [`ErrorCode::WrongShard`]: the port of the shard that owns the
    /// partition. `None` is 0 on the wire.
    pub right_port: Option<u16>,
}

impl ErrorResponse {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorResponse {
        ErrorResponse {
            code,
            message: message.into(),
            right_port: None,
        }
    }

    /// The WrongShard answer naming `right_port`.
    pub fn wrong_shard(right_port: u16, message: impl Into<String>) -> ErrorResponse {
        ErrorResponse {
            code: ErrorCode::WrongShard,
            message: message.into(),
            right_port: Some(right_port),
        }
    }

    /// Decodes an ErrorResponse frame body.
    pub fn decode(body: &[u8]) -> Result<ErrorResponse, BodyError> {
        let response = read_body::<fb::ErrorResponse>(body)?;
        Ok(ErrorResponse {
            code: ErrorCode::from_wire(response.code()).unwrap_or(ErrorCode::Unknown),
            message: response.message().unwrap_or_default().to_owned(),
            right_port: Some(response.right_port()).filter(|port| *port != 0),
        })
    }

    /// Appends this response as a whole frame to `out`.
    pub fn encode(&self, correlation_id: u32, out: &mut BytesMut) -> Result<(), FrameError> {
        let mut fbb = FlatBufferBuilder::with_capacity(64 + ERROR_MESSAGE_BYTES_MAX);
        let message = fbb.create_string(truncate(&self.message, ERROR_MESSAGE_BYTES_MAX));
        let root = fb::ErrorResponse::create(
            &mut fbb,
            &fb::ErrorResponseArgs {
                code: self.code.code(),
                message: Some(message),
                right_port: self.right_port.unwrap_or(0),
            },
        );
        fbb.finish_minimal(root);
        encode_frame(
            FrameKind::ErrorResponse,
            correlation_id,
            fbb.finished_data(),
            out,
        )
    }
}

impl From<DecodeError> for ErrorResponse {
    /// The answer to a request whose body does not decode.
    fn from(error: DecodeError) -> ErrorResponse {
        ErrorResponse::new(error.code(), error.to_string())
    }
}

impl From<&FrameError> for ErrorResponse {
    fn from(error: &FrameError) -> ErrorResponse {
        ErrorResponse::new(error.code(), error.to_string())
    }
}

/// The longest prefix of `text` of at most `bytes_max` bytes that ends on a
/// char boundary.
fn truncate(text: &str, bytes_max: usize) -> &str {
    let mut end = text.len().min(bytes_max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::FrameDecoder;

    fn round_trip(response: &ErrorResponse, correlation_id: u32) -> ErrorResponse {
        let mut buf = BytesMut::new();
        response.encode(correlation_id, &mut buf).expect("encode");
        let frame = FrameDecoder::new()
            .decode(&mut buf)
            .expect("decode")
            .expect("complete");
        assert_eq!(frame.kind, FrameKind::ErrorResponse);
        assert_eq!(frame.correlation_id, correlation_id);
        ErrorResponse::decode(&frame.body).expect("body")
    }

    #[test]
    fn wrong_shard_round_trip() {
        let response = ErrorResponse::wrong_shard(7402, "orders/3 lives on shard 2");
        assert_eq!(round_trip(&response, 77), response);
    }

    #[test]
    fn frame_errors_become_responses() {
        let error = FrameError::UnknownKind {
            kind: 0x42,
            correlation_id: 9,
        };
        let response = ErrorResponse::from(&error);
        assert_eq!(response.code, ErrorCode::UnknownKind);
        assert_eq!(round_trip(&response, error.correlation_id()), response);
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let response = ErrorResponse::new(ErrorCode::InvalidRequest, "é".repeat(1000));
        let decoded = round_trip(&response, 1);
        assert_eq!(decoded.message.len(), ERROR_MESSAGE_BYTES_MAX);
        assert!(response.message.starts_with(&decoded.message));
        assert_eq!(truncate("aé", 2), "a");
    }
}
