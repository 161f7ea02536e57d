//! Kafka request decoding (`sluice_kafka::request::decode_request`) on
//! arbitrary frames, as a Kafka listener receives them after the size
//! prefix.
//!
//! Properties: never panics and never allocates from an unchecked count
//! (libFuzzer's RSS limit catches that); an error carries the correlation id
//! whenever the frame has one, and only an unsupported ApiVersions version
//! gets a reply, which the `kafka-protocol` crate reads as a v0
//! UNSUPPORTED_VERSION answer; a request we accept is accepted identically
//! by the crate's own decoder (the oracle), and re-encoding it with the
//! crate and decoding again gives the same request.
#![no_main]

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiVersionsResponse, RequestHeader};
use kafka_protocol::protocol::{
    decode_request_header_from_buffer, encode_request_header_into_buffer, Decodable, Encodable,
};
use libfuzzer_sys::fuzz_target;
use sluice_kafka::request::{decode_request, Request, RequestBody, RequestError};

fuzz_target!(|data: &[u8]| {
    let frame = Bytes::copy_from_slice(data);
    match decode_request(frame.clone()) {
        Ok(request) => {
            oracle(&frame, &request);
            round_trip(&request);
        }
        Err(err) => {
            assert_eq!(err.correlation_id().is_some(), data.len() >= 8, "{err:?}");
            if let Some(reply) = err.reply() {
                assert!(matches!(
                    err,
                    RequestError::UnsupportedVersion {
                        api_key: kafka_protocol::messages::ApiKey::ApiVersions,
                        ..
                    }
                ));
                let mut body = reply.slice(8..);
                let response = ApiVersionsResponse::decode(&mut body, 0).expect("a v0 reply");
                assert_eq!(response.error_code, 35);
                assert!(body.is_empty());
            }
        }
    }
});

macro_rules! each_body {
    ($body:expr, $r:ident => $e:expr) => {
        match $body {
            RequestBody::Produce($r) => $e,
            RequestBody::Fetch($r) => $e,
            RequestBody::ListOffsets($r) => $e,
            RequestBody::Metadata($r) => $e,
            RequestBody::OffsetCommit($r) => $e,
            RequestBody::OffsetFetch($r) => $e,
            RequestBody::FindCoordinator($r) => $e,
            RequestBody::JoinGroup($r) => $e,
            RequestBody::Heartbeat($r) => $e,
            RequestBody::LeaveGroup($r) => $e,
            RequestBody::SyncGroup($r) => $e,
            RequestBody::DescribeGroups($r) => $e,
            RequestBody::ListGroups($r) => $e,
            RequestBody::SaslHandshake($r) => $e,
            RequestBody::ApiVersions($r) => $e,
            RequestBody::CreateTopics($r) => $e,
            RequestBody::DeleteTopics($r) => $e,
            RequestBody::InitProducerId($r) => $e,
            RequestBody::OffsetForLeaderEpoch($r) => $e,
            RequestBody::SaslAuthenticate($r) => $e,
        }
    };
}

/// The crate's decoder on bytes we accepted (so every count in them is
/// already known to fit) must read the same request.
fn oracle(frame: &Bytes, request: &Request) {
    let mut buf = frame.clone();
    let header = decode_request_header_from_buffer(&mut buf).expect("the crate reads the header");
    assert_eq!(header, request.header);
    let version = request.version();
    each_body!(&request.body, ours => {
        let theirs = decode_same(ours, &mut buf, version);
        assert_eq!(&theirs, ours);
    });
    assert!(buf.is_empty(), "the crate read the same bytes");
}

fn decode_same<T: Decodable>(_: &T, buf: &mut Bytes, version: i16) -> T {
    T::decode(buf, version).expect("the crate reads what we accepted")
}

/// Re-encoded by the crate, the request decodes to itself.
fn round_trip(request: &Request) {
    let mut buf = BytesMut::new();
    let header: &RequestHeader = &request.header;
    encode_request_header_into_buffer(&mut buf, header).expect("the header re-encodes");
    let version = request.version();
    each_body!(&request.body, body => body.encode(&mut buf, version).expect("the body re-encodes"));
    let again = decode_request(buf.freeze()).expect("a re-encoded request decodes");
    assert_eq!(&again, request);
}
