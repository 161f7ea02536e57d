//! The request decoders against the `kafka-protocol` crate as oracle, and
//! against hostile input.
//!
//! For every API and every version we decode, proptest drives a sampler
//! (`decode::samples`) that sets every field the version carries; the
//! crate encodes the request, and our decoder must yield exactly what the
//! crate's own decoder yields on those (valid) bytes. The same bytes are
//! then attacked: cut at every byte, given a trailing byte, and every
//! length or count prefix the decoder met replaced by the largest value
//! (and by invalid ones): each must be an error, never a panic or an
//! allocation sized by the wire.

use std::fmt::Debug;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{
    decode_request_header_from_buffer, encode_request_header_into_buffer, Decodable, Encodable,
    StrBytes,
};
use proptest::prelude::*;

use super::*;
use crate::decode::sampler::{Sample, Sampler};
use crate::reader::trace::{self, Width};
use crate::reader::{ReadError, ARRAY_ELEMENTS_MAX};
use crate::versions::{supported, SUPPORTED_APIS};

/// A sampled header for `key` at `version`: a correlation id, a client id
/// (sometimes null), and in header v2 sometimes unknown tagged fields.
fn sample_header(key: ApiKey, version: i16, seed: u64) -> RequestHeader {
    let mut header = RequestHeader::default();
    header.request_api_key = key as i16;
    header.request_api_version = version;
    header.correlation_id = (seed as i32).wrapping_mul(7919);
    header.client_id = match seed % 3 {
        0 => None,
        1 => Some(StrBytes::from_static_str("")),
        _ => Some(StrBytes::from_string(format!("rdkafka-{seed}"))),
    };
    if key.request_header_version(version) >= 2 && seed.is_multiple_of(4) {
        header
            .unknown_tagged_fields
            .insert(7, Bytes::from_static(b"tag"));
    }
    header
}

/// Header and body encoded by the crate: one frame without size prefix.
fn encode_frame<R: Encodable>(header: &RequestHeader, body: &R, version: i16) -> Bytes {
    let mut buf = BytesMut::new();
    encode_request_header_into_buffer(&mut buf, header).expect("the crate encodes the header");
    if let Err(e) = body.encode(&mut buf, version) {
        panic!("the crate refuses a sampled request at v{version}: {e}");
    }
    buf.freeze()
}

/// What the crate's own decoder makes of a frame.
fn crate_decode<R: Decodable>(frame: &Bytes, version: i16) -> (RequestHeader, R) {
    let mut buf = frame.clone();
    let header = decode_request_header_from_buffer(&mut buf).expect("the crate decodes the header");
    let body = R::decode(&mut buf, version).expect("the crate decodes its own encoding");
    assert!(buf.is_empty(), "the crate left bytes");
    (header, body)
}

/// Replaces `frame[start..end]` with `with`.
fn splice(frame: &Bytes, start: usize, end: usize, with: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(frame.len() + with.len());
    out.put_slice(&frame[..start]);
    out.put_slice(with);
    out.put_slice(&frame[end..]);
    out.freeze()
}

/// Every hostile variant of a valid frame must be refused (and return).
fn attack(frame: &Bytes, prefixes: &[trace::Prefix]) {
    for len in 0..frame.len() {
        let cut = frame.slice(..len);
        let err = decode_request(cut).expect_err("a truncated request must not decode");
        if len < REQUEST_HEADER_PREFIX_BYTES {
            assert_eq!(err, RequestError::TooShort { len });
        } else {
            assert!(
                matches!(err, RequestError::Malformed { .. }),
                "cut at {len}: {err:?}"
            );
        }
    }
    let trailing = splice(frame, frame.len(), frame.len(), &[0]);
    assert!(matches!(
        decode_request(trailing),
        Err(RequestError::Malformed {
            reason: ReadError::TrailingBytes(1),
            ..
        })
    ));
    assert!(!prefixes.is_empty(), "every request has a client id prefix");
    for p in prefixes {
        let hostile: &[&[u8]] = match p.width {
            // Strings: the longest classic length, and negative ones.
            Width::I16 => &[&[0x7f, 0xff], &[0xff, 0xfe], &[0x80, 0x00]],
            // Arrays and bytes: 2^31 - 1 elements or bytes, and negative.
            Width::I32 => &[&[0x7f, 0xff, 0xff, 0xff], &[0xff, 0xff, 0xff, 0xfe]],
            // Compact: u32::MAX, a count just past the element limit, and a
            // varint longer than five bytes.
            Width::UVarint => &[
                &[0xff, 0xff, 0xff, 0xff, 0x0f],
                &[0xa2, 0x8d, 0x06],
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ],
        };
        for with in hostile {
            let bad = splice(frame, p.start, p.end, with);
            match decode_request(bad) {
                Err(RequestError::Malformed { .. }) => {}
                other => panic!("prefix {p:?} set to {with:02x?}: {other:?}"),
            }
        }
    }
}

/// The oracle property for one API at one version and seed.
fn check<R>(key: ApiKey, version: i16, seed: u64, wrap: fn(R) -> RequestBody)
where
    R: Sample + Encodable + Decodable + PartialEq + Debug,
{
    let sampled = R::sample(&mut Sampler::new(seed), version).expect("sampling");
    let header = sample_header(key, version, seed);
    let frame = encode_frame(&header, &sampled, version);
    let (crate_header, crate_body) = crate_decode::<R>(&frame, version);
    assert_eq!(
        crate_body, sampled,
        "the sample survives the crate's round trip"
    );

    let (ours, prefixes) = trace::record(|| decode_request(frame.clone()));
    let ours = ours.unwrap_or_else(|e| panic!("{key:?} v{version}: {e}\n{frame:02x?}"));
    assert_eq!(ours.header, crate_header);
    assert_eq!(ours.body, wrap(crate_body));
    assert_eq!(ours.api_key(), key);
    assert_eq!(ours.version(), version);
    assert_eq!(ours.correlation_id(), header.correlation_id);

    attack(&frame, &prefixes);
}

/// Every version we decode of one API, for one seed.
fn check_all_versions<R>(key: ApiKey, seed: u64, wrap: fn(R) -> RequestBody)
where
    R: Sample + Encodable + Decodable + PartialEq + Debug,
{
    let api = supported(key).expect("a served API");
    for version in api.decode_min..=api.max {
        check::<R>(key, version, seed, wrap);
    }
}

macro_rules! oracle_tests {
    ($($test:ident: $key:ident($request:ty),)*) => {
        proptest! {
            #![proptest_config(ProptestConfig::with_cases(48))]
            $(
                #[test]
                fn $test(seed in any::<u64>()) {
                    check_all_versions::<$request>(ApiKey::$key, seed, RequestBody::$key);
                }
            )*
        }

        /// The oracle tests cover exactly the served APIs.
        #[test]
        fn oracle_tests_cover_every_served_api() {
            let mut tested = vec![$(ApiKey::$key as i16),*];
            let mut served: Vec<i16> = SUPPORTED_APIS.iter().map(|a| a.key as i16).collect();
            tested.sort_unstable();
            served.sort_unstable();
            assert_eq!(tested, served);
        }
    };
}

oracle_tests! {
    oracle_produce: Produce(ProduceRequest),
    oracle_fetch: Fetch(FetchRequest),
    oracle_list_offsets: ListOffsets(ListOffsetsRequest),
    oracle_metadata: Metadata(MetadataRequest),
    oracle_offset_commit: OffsetCommit(OffsetCommitRequest),
    oracle_offset_fetch: OffsetFetch(OffsetFetchRequest),
    oracle_find_coordinator: FindCoordinator(FindCoordinatorRequest),
    oracle_join_group: JoinGroup(JoinGroupRequest),
    oracle_heartbeat: Heartbeat(HeartbeatRequest),
    oracle_leave_group: LeaveGroup(LeaveGroupRequest),
    oracle_sync_group: SyncGroup(SyncGroupRequest),
    oracle_describe_groups: DescribeGroups(DescribeGroupsRequest),
    oracle_list_groups: ListGroups(ListGroupsRequest),
    oracle_sasl_handshake: SaslHandshake(SaslHandshakeRequest),
    oracle_api_versions: ApiVersions(ApiVersionsRequest),
    oracle_create_topics: CreateTopics(CreateTopicsRequest),
    oracle_delete_topics: DeleteTopics(DeleteTopicsRequest),
    oracle_init_producer_id: InitProducerId(InitProducerIdRequest),
    oracle_offset_for_leader_epoch: OffsetForLeaderEpoch(OffsetForLeaderEpochRequest),
    oracle_sasl_authenticate: SaslAuthenticate(SaslAuthenticateRequest),
}

fn prefix(key: i16, version: i16, correlation_id: i32) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_i16(key);
    buf.put_i16(version);
    buf.put_i32(correlation_id);
    buf
}

#[test]
fn too_short_for_a_header() {
    for len in 0..REQUEST_HEADER_PREFIX_BYTES {
        let frame = Bytes::from(vec![0u8; len]);
        let err = decode_request(frame).unwrap_err();
        assert_eq!(err, RequestError::TooShort { len });
        assert_eq!(err.correlation_id(), None);
        assert_eq!(err.reply(), None);
    }
}

#[test]
fn unknown_and_unserved_api_keys_carry_the_correlation_id() {
    // 21 is DeleteRecords: a Kafka API we do not serve; 999 and -1 are not
    // Kafka APIs at all.
    for key in [21, 999, -1, i16::MAX] {
        let frame = prefix(key, 0, 42).freeze();
        let err = decode_request(frame).unwrap_err();
        assert_eq!(
            err,
            RequestError::UnknownApiKey {
                api_key: key,
                api_version: 0,
                correlation_id: 42
            }
        );
        assert_eq!(err.correlation_id(), Some(42));
        assert_eq!(err.reply(), None, "unknown keys close the connection");
    }
}

#[test]
fn produce_below_3_is_advertised_but_unsupported() {
    let api = supported(ApiKey::Produce).unwrap();
    assert_eq!((api.min, api.decode_min, api.max), (0, 3, 9));
    for version in [0, 1, 2, 10, -1] {
        let frame = prefix(ApiKey::Produce as i16, version, 9).freeze();
        let err = decode_request(frame).unwrap_err();
        assert_eq!(
            err,
            RequestError::UnsupportedVersion {
                api_key: ApiKey::Produce,
                api_version: version,
                correlation_id: 9
            }
        );
        assert_eq!(err.reply(), None, "only ApiVersions is answered");
    }
}

#[test]
fn unsupported_versions_of_every_api_are_refused_before_the_body() {
    for api in SUPPORTED_APIS {
        for version in [api.decode_min - 1, api.max + 1, i16::MIN, i16::MAX] {
            // Whatever follows the prefix is not read.
            let mut frame = prefix(api.key as i16, version, -5);
            frame.put_slice(&[0xff; 3]);
            let err = decode_request(frame.freeze()).unwrap_err();
            assert_eq!(
                err,
                RequestError::UnsupportedVersion {
                    api_key: api.key,
                    api_version: version,
                    correlation_id: -5
                }
            );
        }
    }
}

#[test]
fn an_unsupported_api_versions_version_is_answered_in_v0() {
    // A client newer than us: ApiVersions v5 with a body we cannot read.
    let mut frame = prefix(ApiKey::ApiVersions as i16, 5, 77);
    frame.put_slice(b"\x00\x05hello\x00");
    let err = decode_request(frame.freeze()).unwrap_err();
    let reply = err.reply().expect("ApiVersions gets an answer");
    let mut buf = reply.clone();
    let size = bytes::Buf::get_i32(&mut buf);
    assert_eq!(size as usize, reply.len() - 4);
    assert_eq!(
        bytes::Buf::get_i32(&mut buf),
        77,
        "header v0: correlation id only"
    );
    let response = ApiVersionsResponse::decode(&mut buf, 0).unwrap();
    assert!(buf.is_empty());
    assert_eq!(response.error_code, crate::versions::UNSUPPORTED_VERSION);
    assert_eq!(response.api_keys.len(), 1);
    let entry = &response.api_keys[0];
    assert_eq!(
        (entry.api_key, entry.min_version, entry.max_version),
        (ApiKey::ApiVersions as i16, 0, 4)
    );
}

#[test]
fn malformed_body_names_api_version_and_correlation_id() {
    // Metadata v1: client id "", then an array count of 2 with no elements.
    let mut frame = prefix(ApiKey::Metadata as i16, 1, 1234);
    frame.put_i16(0);
    frame.put_i32(2);
    let err = decode_request(frame.freeze()).unwrap_err();
    assert!(matches!(
        err,
        RequestError::Malformed {
            api_key: ApiKey::Metadata,
            api_version: 1,
            correlation_id: 1234,
            reason: ReadError::ElementsExceedBytes { count: 2, .. },
        }
    ));
    assert_eq!(err.reply(), None);
}

#[test]
fn array_counts_above_the_limit_are_refused_even_when_the_bytes_are_there() {
    // ARRAY_ELEMENTS_MAX + 1 Metadata topics of 2 bytes each would fit in
    // the frame; the named limit still refuses the count.
    let count = ARRAY_ELEMENTS_MAX + 1;
    let mut frame = prefix(ApiKey::Metadata as i16, 1, 1);
    frame.put_i16(-1);
    frame.put_i32(count as i32);
    frame.put_bytes(0, count * 2);
    let err = decode_request(frame.freeze()).unwrap_err();
    assert!(matches!(
        err,
        RequestError::Malformed {
            reason: ReadError::TooManyElements { .. },
            ..
        }
    ));
}

#[test]
fn a_produce_request_keeps_its_records_zero_copy() {
    let mut partition = produce_request::PartitionProduceData::default();
    partition.index = 3;
    partition.records = Some(Bytes::from_static(b"opaque record batch bytes"));
    let mut topic = produce_request::TopicProduceData::default();
    topic.name = TopicName(StrBytes::from_static_str("orders"));
    topic.partition_data = vec![partition];
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 30_000;
    request.topic_data = vec![topic];
    for version in 3..=9 {
        let header = sample_header(ApiKey::Produce, version, 1);
        let frame = encode_frame(&header, &request, version);
        let decoded = decode_request(frame.clone()).unwrap();
        let RequestBody::Produce(produce) = decoded.body else {
            panic!("not a produce request");
        };
        let records = produce.topic_data[0].partition_data[0]
            .records
            .as_ref()
            .unwrap();
        assert_eq!(&records[..], b"opaque record batch bytes");
        let frame_range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
        assert!(
            frame_range.contains(&(records.as_ptr() as usize)),
            "records are a slice of the frame"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Arbitrary bytes: any answer but a panic.
    #[test]
    fn arbitrary_frames_never_panic(frame in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_request(Bytes::from(frame));
    }

    /// Arbitrary bodies behind a valid prefix of a served API and version,
    /// so the body decoders (not only the prefix checks) see the noise.
    #[test]
    fn arbitrary_bodies_never_panic(
        api in 0..SUPPORTED_APIS.len(),
        version_pick in any::<u16>(),
        client_id in proptest::option::of("[a-z]{0,8}"),
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let api = &SUPPORTED_APIS[api];
        let span = (api.max - api.decode_min + 1) as u16;
        let version = api.decode_min + (version_pick % span) as i16;
        let mut frame = prefix(api.key as i16, version, 1);
        match &client_id {
            Some(id) => {
                frame.put_i16(id.len() as i16);
                frame.put_slice(id.as_bytes());
            }
            None => frame.put_i16(-1),
        }
        frame.put_slice(&body);
        match decode_request(frame.freeze()) {
            Ok(request) => prop_assert_eq!(request.api_key(), api.key),
            Err(err) => {
                let malformed = matches!(err, RequestError::Malformed { .. });
                prop_assert!(malformed, "{:?}", err);
            }
        }
    }
}

/// The seed corpus of the `kafka_request` fuzz target: one sampled request
/// per API at its lowest and highest decoded version.
fn seed_frames() -> Vec<(String, Bytes)> {
    fn frame<R: Sample + Encodable>(key: ApiKey, version: i16) -> Bytes {
        let seed = 0x5eed_0000 + (key as u64) * 100 + version as u64;
        let body = R::sample(&mut Sampler::new(seed), version).expect("sampling");
        encode_frame(&sample_header(key, version, seed), &body, version)
    }
    macro_rules! frames {
        ($($key:ident($request:ty),)*) => {{
            let mut out = Vec::new();
            $(
                let api = supported(ApiKey::$key).expect("served");
                for version in [api.decode_min, api.max] {
                    out.push((
                        format!("{}-v{version}", stringify!($key)),
                        frame::<$request>(ApiKey::$key, version),
                    ));
                }
            )*
            out
        }};
    }
    frames! {
        Produce(ProduceRequest), Fetch(FetchRequest), ListOffsets(ListOffsetsRequest),
        Metadata(MetadataRequest), OffsetCommit(OffsetCommitRequest),
        OffsetFetch(OffsetFetchRequest), FindCoordinator(FindCoordinatorRequest),
        JoinGroup(JoinGroupRequest), Heartbeat(HeartbeatRequest), LeaveGroup(LeaveGroupRequest),
        SyncGroup(SyncGroupRequest), DescribeGroups(DescribeGroupsRequest),
        ListGroups(ListGroupsRequest), SaslHandshake(SaslHandshakeRequest),
        ApiVersions(ApiVersionsRequest), CreateTopics(CreateTopicsRequest),
        DeleteTopics(DeleteTopicsRequest), InitProducerId(InitProducerIdRequest),
        OffsetForLeaderEpoch(OffsetForLeaderEpochRequest),
        SaslAuthenticate(SaslAuthenticateRequest),
    }
}

/// `fuzz/corpus/kafka_request/` holds [`seed_frames`];
/// `SLUICE_WRITE_FUZZ_SEEDS=1` rewrites them. Each must still decode.
#[test]
fn fuzz_seeds_are_current_and_decode() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/kafka_request");
    let seeds = seed_frames();
    if std::env::var_os("SLUICE_WRITE_FUZZ_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, frame) in &seeds {
            std::fs::write(dir.join(name), frame).unwrap();
        }
    }
    for (name, frame) in seeds {
        let stored = std::fs::read(dir.join(&name)).unwrap_or_else(|e| panic!("seed {name}: {e}"));
        assert_eq!(
            stored, frame,
            "seed {name} is stale: rerun with SLUICE_WRITE_FUZZ_SEEDS=1"
        );
        decode_request(frame).unwrap_or_else(|e| panic!("seed {name}: {e}"));
    }
}
