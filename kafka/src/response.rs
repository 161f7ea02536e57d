//! Response framing: size prefix, response header, body.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::Encodable;

/// A response the `kafka-protocol` encoder refused (a field set that the
/// version cannot carry, or a size past the protocol's limits): a handler
/// bug, answered by closing the connection, never by a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode the {api_key:?} v{version} response: {reason}")]
pub struct EncodeError {
    /// The API of the response.
    pub api_key: ApiKey,
    /// The version it was encoded at.
    pub version: i16,
    /// What the encoder said.
    pub reason: String,
}

impl EncodeError {
    pub(crate) fn new(api_key: ApiKey, version: i16, reason: impl std::fmt::Display) -> Self {
        Self {
            api_key,
            version,
            reason: reason.to_string(),
        }
    }
}

/// Bytes of the response header of `api_key` at `version`: v0 is the
/// correlation id, v1 (flexible versions) adds an empty tagged-field count.
fn header_len(api_key: ApiKey, version: i16) -> usize {
    match api_key.response_header_version(version) {
        0 => 4,
        _ => 5,
    }
}

fn put_header(out: &mut BytesMut, api_key: ApiKey, version: i16, correlation_id: i32) {
    out.put_i32(correlation_id);
    if header_len(api_key, version) == 5 {
        // No tagged fields in the header.
        out.put_u8(0);
    }
}

fn size_prefix(api_key: ApiKey, version: i16, len: usize) -> Result<i32, EncodeError> {
    i32::try_from(len).map_err(|_| {
        EncodeError::new(
            api_key,
            version,
            format!("{len} bytes exceed the i32 size prefix"),
        )
    })
}

/// One response frame: `size: i32 | header | body`, `body` encoded at
/// `version`, with the response header version the API defines for it
/// (always v0 for ApiVersions, v1 for other flexible versions).
pub fn encode_response<T: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<Bytes, EncodeError> {
    let body_len = body
        .compute_size(version)
        .map_err(|e| EncodeError::new(api_key, version, e))?;
    let len = header_len(api_key, version) + body_len;
    let size = size_prefix(api_key, version, len)?;
    let mut out = BytesMut::with_capacity(4 + len);
    out.put_i32(size);
    put_header(&mut out, api_key, version, correlation_id);
    body.encode(&mut out, version)
        .map_err(|e| EncodeError::new(api_key, version, e))?;
    if out.len() != 4 + len {
        // compute_size and encode disagreeing would send a frame whose
        // prefix lies; refuse it instead.
        return Err(EncodeError::new(
            api_key,
            version,
            "encoded size differs from computed size",
        ));
    }
    Ok(out.freeze())
}

/// One response frame around an already encoded `body`.
pub fn frame_response(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &[u8],
) -> Result<Bytes, EncodeError> {
    let len = header_len(api_key, version) + body.len();
    let size = size_prefix(api_key, version, len)?;
    let mut out = BytesMut::with_capacity(4 + len);
    out.put_i32(size);
    put_header(&mut out, api_key, version, correlation_id);
    out.put_slice(body);
    Ok(out.freeze())
}
