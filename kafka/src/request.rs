//! Decoding one Kafka request frame: header, version check, body.
//!
//! `decode_request` takes a frame without its 4-byte size prefix (the
//! listener reads and bounds the prefix) and returns the header and a typed
//! body, or a [`RequestError`] saying how the connection should react.
//! Nothing here panics or allocates from an unchecked wire value.

use bytes::{Buf, Bytes};
use kafka_protocol::messages::*;

use crate::decode::Decode;
use crate::reader::{ReadError, ReadResult, Reader};
use crate::versions::{api_versions_reply, supported};

/// Bytes every request starts with: api key (i16), api version (i16),
/// correlation id (i32), in every header version. The client id follows.
pub const REQUEST_HEADER_PREFIX_BYTES: usize = 8;

/// A decoded request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The header (header v1, or v2 with tagged fields for flexible versions).
    pub header: RequestHeader,
    /// The body.
    pub body: RequestBody,
}

impl Request {
    /// The API of the request.
    pub fn api_key(&self) -> ApiKey {
        self.body.api_key()
    }

    /// The version of the request.
    pub fn version(&self) -> i16 {
        self.header.request_api_version
    }

    /// The correlation id to echo in the response.
    pub fn correlation_id(&self) -> i32 {
        self.header.correlation_id
    }
}

/// Why a frame is not a request we serve, and what to do about it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    /// Fewer than [`REQUEST_HEADER_PREFIX_BYTES`]: not even a correlation
    /// id to answer with. Close the connection.
    #[error("frame of {len} bytes is too short for a request header")]
    TooShort {
        /// Frame length.
        len: usize,
    },
    /// An API key Kafka does not define or we do not serve (the client did
    /// not take it from our ApiVersions answer). Close the connection, as
    /// Kafka does.
    #[error(
        "api key {api_key} (version {api_version}, correlation id {correlation_id}) is not served"
    )]
    UnknownApiKey {
        /// The key on the wire.
        api_key: i16,
        /// The version on the wire.
        api_version: i16,
        /// The correlation id on the wire.
        correlation_id: i32,
    },
    /// A version we do not decode. For ApiVersions, answer with
    /// [`RequestError::reply`] (v0, UNSUPPORTED_VERSION, KIP-511); for
    /// anything else close the connection.
    #[error(
        "{api_key:?} version {api_version} (correlation id {correlation_id}) is not supported"
    )]
    UnsupportedVersion {
        /// The API.
        api_key: ApiKey,
        /// The version on the wire.
        api_version: i16,
        /// The correlation id on the wire.
        correlation_id: i32,
    },
    /// The header or body does not decode at its version. Close the
    /// connection.
    #[error(
        "malformed {api_key:?} v{api_version} request (correlation id {correlation_id}): {reason}"
    )]
    Malformed {
        /// The API.
        api_key: ApiKey,
        /// The version.
        api_version: i16,
        /// The correlation id.
        correlation_id: i32,
        /// What was wrong, and where the reading stopped.
        reason: ReadError,
    },
}

impl RequestError {
    /// The correlation id, when the frame was long enough to carry one.
    pub fn correlation_id(&self) -> Option<i32> {
        match *self {
            Self::TooShort { .. } => None,
            Self::UnknownApiKey { correlation_id, .. }
            | Self::UnsupportedVersion { correlation_id, .. }
            | Self::Malformed { correlation_id, .. } => Some(correlation_id),
        }
    }

    /// The response frame to send before carrying on, if the protocol has
    /// one: only an ApiVersions request of a version we do not decode gets
    /// an answer (UNSUPPORTED_VERSION in the v0 layout, with our ApiVersions
    /// range, so the client retries at a version we have). `None`: close the
    /// connection.
    pub fn reply(&self) -> Option<Bytes> {
        match *self {
            Self::UnsupportedVersion {
                api_key: ApiKey::ApiVersions,
                api_version,
                correlation_id,
            } => api_versions_reply(api_version, correlation_id).ok(),
            _ => None,
        }
    }
}

macro_rules! request_bodies {
    ($($key:ident($request:ty),)*) => {
        /// The body of a request, one variant per API we serve (the
        /// `kafka-protocol` crate's request structs).
        #[derive(Debug, Clone, PartialEq)]
        #[allow(missing_docs)] // Each variant is the API it names.
        pub enum RequestBody {
            $($key($request),)*
        }

        impl RequestBody {
            /// The API of this body.
            pub fn api_key(&self) -> ApiKey {
                match self {
                    $(Self::$key(_) => ApiKey::$key,)*
                }
            }

            /// Reads the body of `key` at `version`; `None` for an API
            /// without a decoder (kept in step with the versions table by
            /// a test).
            fn decode(key: ApiKey, r: &mut Reader, version: i16) -> ReadResult<Option<Self>> {
                Ok(Some(match key {
                    $(ApiKey::$key => Self::$key(<$request as Decode>::decode(r, version)?),)*
                    _ => return Ok(None),
                }))
            }
        }
    };
}

request_bodies! {
    Produce(ProduceRequest),
    Fetch(FetchRequest),
    ListOffsets(ListOffsetsRequest),
    Metadata(MetadataRequest),
    OffsetCommit(OffsetCommitRequest),
    OffsetFetch(OffsetFetchRequest),
    FindCoordinator(FindCoordinatorRequest),
    JoinGroup(JoinGroupRequest),
    Heartbeat(HeartbeatRequest),
    LeaveGroup(LeaveGroupRequest),
    SyncGroup(SyncGroupRequest),
    DescribeGroups(DescribeGroupsRequest),
    ListGroups(ListGroupsRequest),
    SaslHandshake(SaslHandshakeRequest),
    ApiVersions(ApiVersionsRequest),
    CreateTopics(CreateTopicsRequest),
    DeleteTopics(DeleteTopicsRequest),
    InitProducerId(InitProducerIdRequest),
    OffsetForLeaderEpoch(OffsetForLeaderEpochRequest),
    SaslAuthenticate(SaslAuthenticateRequest),
}

/// Decodes one request frame (without its size prefix).
///
/// The api key, version and correlation id are read first (bytes 0..8 in
/// every header version) so that every later error can name them; the
/// version is checked against [`crate::versions::SUPPORTED_APIS`] before the
/// rest of the header, whose layout depends on it. The body must end
/// exactly where the frame ends.
pub fn decode_request(frame: Bytes) -> Result<Request, RequestError> {
    if frame.len() < REQUEST_HEADER_PREFIX_BYTES {
        return Err(RequestError::TooShort { len: frame.len() });
    }
    let mut prefix = &frame[..REQUEST_HEADER_PREFIX_BYTES];
    let raw_key = prefix.get_i16();
    let api_version = prefix.get_i16();
    let correlation_id = prefix.get_i32();
    let unknown = RequestError::UnknownApiKey {
        api_key: raw_key,
        api_version,
        correlation_id,
    };
    let api_key = ApiKey::try_from(raw_key).map_err(|_| unknown.clone())?;
    let api = supported(api_key).ok_or(unknown.clone())?;
    if !api.decodes(api_version) {
        return Err(RequestError::UnsupportedVersion {
            api_key,
            api_version,
            correlation_id,
        });
    }
    let malformed = |reason| RequestError::Malformed {
        api_key,
        api_version,
        correlation_id,
        reason,
    };

    let mut r = Reader::new(frame);
    r.take(REQUEST_HEADER_PREFIX_BYTES).map_err(malformed)?;
    let mut header = RequestHeader::default();
    header.request_api_key = raw_key;
    header.request_api_version = api_version;
    header.correlation_id = correlation_id;
    // The client id is a classic nullable string in both header versions
    // (the header schema is not flexible for it), then v2 adds tagged fields.
    header.client_id = r.string().map_err(malformed)?;
    if api_key.request_header_version(api_version) >= 2 {
        r.unknown_tagged_fields(&mut header.unknown_tagged_fields)
            .map_err(malformed)?;
    }
    let body = RequestBody::decode(api_key, &mut r, api_version)
        .map_err(malformed)?
        .ok_or(unknown)?;
    r.finish().map_err(malformed)?;
    Ok(Request { header, body })
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
