//! The APIs and versions this server serves, and the ApiVersions answer.
//!
//! One table ([`SUPPORTED_APIS`]) says what is advertised and what is
//! decoded; it is checked at compile time against the `kafka-protocol`
//! crate's version ranges, so we never advertise a version the crate (and so
//! our generated decoders and its response encoders) does not know.
//!
//! Why the ranges are what they are: every client sends ApiVersions first
//! and picks, per API, the highest version both sides know. Old librdkafka
//! (up to 2.11.0) enables a feature only if one exact version lies in the
//! broker's range (message format v2 needs Produce 3 and Fetch 4; groups
//! need FindCoordinator 0, OffsetCommit 1..2, OffsetFetch 1 and
//! Join/Sync/Heartbeat/Leave 0; idempotence needs InitProducerId 0), and
//! kafka-python 2.x never goes past the last non-flexible version of an API,
//! so both encodings must work. Metadata stops at 12 and Fetch at 12 because
//! later versions name topics by id, which Sluice does not assign.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, Message};

use crate::response::{frame_response, EncodeError};

/// Kafka's UNSUPPORTED_VERSION error code.
pub const UNSUPPORTED_VERSION: i16 = 35;

/// One API we serve: the versions advertised in ApiVersions, and the lowest
/// version actually decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupportedApi {
    /// The API.
    pub key: ApiKey,
    /// Lowest version advertised.
    pub min: i16,
    /// Highest version advertised and decoded.
    pub max: i16,
    /// Lowest version decoded: equal to `min` except for Produce.
    pub decode_min: i16,
}

impl SupportedApi {
    /// Whether requests of `version` are decoded (and so served).
    pub fn decodes(&self, version: i16) -> bool {
        (self.decode_min..=self.max).contains(&version)
    }
}

macro_rules! supported_apis {
    ($($key:ident($request:ty): $min:literal ..= $max:literal $(, decode from $decode_min:literal)?;)*) => {
        /// Every API we serve, in ApiVersions order (by key).
        ///
        /// Ranges are the ones clients need (see the module docs), clamped to
        /// the crate's: OffsetCommit from 2, OffsetFetch 1, CreateTopics 2,
        /// DeleteTopics 1, ListOffsets 1 are where the crate (Kafka 4.1's
        /// schemas) starts, and each of them still includes the version old
        /// clients require. Produce is advertised from 0 because librdkafka
        /// up to 2.11.0 enables compression only when Produce 0 is in range,
        /// but versions 0-2 (message formats v0/v1, which Kafka 4 also
        /// refuses, KAFKA-18659) are answered as unsupported.
        pub const SUPPORTED_APIS: &[SupportedApi] = &[$(
            SupportedApi {
                key: ApiKey::$key,
                min: $min,
                max: $max,
                decode_min: supported_apis!(@decode_min $min $(, $decode_min)?),
            },
        )*];

        // Compile-time: every decoded version is one the crate defines for
        // the request (so the generated decoder and the crate's response
        // encoder know it), and the ranges are well-formed.
        const _: () = {$(
            assert!($min <= supported_apis!(@decode_min $min $(, $decode_min)?));
            assert!(supported_apis!(@decode_min $min $(, $decode_min)?) <= $max);
            assert!(<$request as Message>::VERSIONS.min <= supported_apis!(@decode_min $min $(, $decode_min)?));
            assert!($max <= <$request as Message>::VERSIONS.max);
        )*};
    };
    (@decode_min $min:literal) => { $min };
    (@decode_min $min:literal, $decode_min:literal) => { $decode_min };
}

supported_apis! {
    Produce(ProduceRequest): 0..=9, decode from 3;
    Fetch(FetchRequest): 4..=12;
    ListOffsets(ListOffsetsRequest): 1..=7;
    Metadata(MetadataRequest): 0..=12;
    OffsetCommit(OffsetCommitRequest): 2..=8;
    OffsetFetch(OffsetFetchRequest): 1..=7;
    FindCoordinator(FindCoordinatorRequest): 0..=3;
    JoinGroup(JoinGroupRequest): 0..=7;
    Heartbeat(HeartbeatRequest): 0..=4;
    LeaveGroup(LeaveGroupRequest): 0..=5;
    SyncGroup(SyncGroupRequest): 0..=5;
    DescribeGroups(DescribeGroupsRequest): 0..=5;
    ListGroups(ListGroupsRequest): 0..=4;
    SaslHandshake(SaslHandshakeRequest): 0..=1;
    ApiVersions(ApiVersionsRequest): 0..=4;
    CreateTopics(CreateTopicsRequest): 2..=7;
    DeleteTopics(DeleteTopicsRequest): 1..=6;
    InitProducerId(InitProducerIdRequest): 0..=4;
    OffsetForLeaderEpoch(OffsetForLeaderEpochRequest): 2..=4;
    SaslAuthenticate(SaslAuthenticateRequest): 0..=2;
}

/// The table entry of `key`, if we serve it.
pub fn supported(key: ApiKey) -> Option<&'static SupportedApi> {
    SUPPORTED_APIS.iter().find(|api| api.key == key)
}

/// The ApiVersions response body (without size prefix or header) for a
/// request of `request_version`; [`api_versions_reply`] frames it.
///
/// For a version we decode: no error, every API of [`SUPPORTED_APIS`],
/// encoded at that version. For any other (a newer client): KIP-511's
/// answer, UNSUPPORTED_VERSION with our ApiVersions entry, in the v0
/// layout every client can read, so it retries at a version we have.
///
/// Tagged fields are written only when they hold a non-default value (the
/// crate's encoder already does so, and the response sets none): Debian's
/// kcat 1.7.1 fails on an ApiVersions v3 answer carrying default-valued
/// tagged fields. The encoder's `Result` is passed on, not unwrapped: it
/// cannot fail for these fixed contents (a test encodes every version), but
/// a failure closes one connection rather than the shard.
pub fn api_versions_response(request_version: i16) -> Result<Bytes, EncodeError> {
    let ours = supported(ApiKey::ApiVersions).filter(|api| api.decodes(request_version));
    let (version, error_code, apis): (i16, i16, Vec<&SupportedApi>) = match ours {
        Some(_) => (request_version, 0, SUPPORTED_APIS.iter().collect()),
        None => (
            0,
            UNSUPPORTED_VERSION,
            supported(ApiKey::ApiVersions).into_iter().collect(),
        ),
    };
    let mut response = ApiVersionsResponse::default();
    response.error_code = error_code;
    response.api_keys = apis
        .into_iter()
        .map(|api| {
            let mut entry = ApiVersion::default();
            entry.api_key = api.key as i16;
            entry.min_version = api.min;
            entry.max_version = api.max;
            entry
        })
        .collect();
    response.throttle_time_ms = 0;
    let mut body = BytesMut::new();
    response
        .encode(&mut body, version)
        .map_err(|e| EncodeError::new(ApiKey::ApiVersions, version, e))?;
    Ok(body.freeze())
}

/// The whole ApiVersions response frame (size prefix, v0 header, body) for
/// a request of `request_version` with `correlation_id`.
pub fn api_versions_reply(request_version: i16, correlation_id: i32) -> Result<Bytes, EncodeError> {
    let body = api_versions_response(request_version)?;
    // The response header of ApiVersions is v0 whatever the version.
    frame_response(ApiKey::ApiVersions, request_version, correlation_id, &body)
}

#[cfg(test)]
#[path = "versions_tests.rs"]
mod tests;
