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
