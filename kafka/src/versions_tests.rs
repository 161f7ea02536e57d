use bytes::Buf;
use kafka_protocol::messages::metadata_response::MetadataResponse;
use kafka_protocol::protocol::Decodable;

use super::*;
use crate::response::encode_response;

/// The ranges issue 14 asks for (see the module docs of `versions.rs`), written out again
/// so a slip in the table shows here: (key, advertised min, max, decoded min).
const EXPECTED: &[(ApiKey, i16, i16, i16)] = &[
    (ApiKey::ApiVersions, 0, 4, 0),
    (ApiKey::Metadata, 0, 12, 0),
    (ApiKey::ListOffsets, 1, 7, 1),
    (ApiKey::Fetch, 4, 12, 4),
    (ApiKey::OffsetForLeaderEpoch, 2, 4, 2),
    (ApiKey::FindCoordinator, 0, 3, 0),
    (ApiKey::JoinGroup, 0, 7, 0),
    (ApiKey::SyncGroup, 0, 5, 0),
    (ApiKey::Heartbeat, 0, 4, 0),
    (ApiKey::LeaveGroup, 0, 5, 0),
    (ApiKey::OffsetCommit, 2, 8, 2),
    (ApiKey::OffsetFetch, 1, 7, 1),
    (ApiKey::DescribeGroups, 0, 5, 0),
    (ApiKey::ListGroups, 0, 4, 0),
    (ApiKey::CreateTopics, 2, 7, 2),
    (ApiKey::DeleteTopics, 1, 6, 1),
    (ApiKey::Produce, 0, 9, 3),
    (ApiKey::InitProducerId, 0, 4, 0),
    (ApiKey::SaslHandshake, 0, 1, 0),
    (ApiKey::SaslAuthenticate, 0, 2, 0),
];

#[test]
fn the_table_is_the_one_asked_for() {
    assert_eq!(SUPPORTED_APIS.len(), EXPECTED.len());
    for &(key, min, max, decode_min) in EXPECTED {
        let api = supported(key).unwrap_or_else(|| panic!("{key:?} missing"));
        assert_eq!(
            (api.min, api.max, api.decode_min),
            (min, max, decode_min),
            "{key:?}"
        );
    }
    let mut keys: Vec<i16> = SUPPORTED_APIS.iter().map(|a| a.key as i16).collect();
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "sorted by key, no duplicates"
    );
    keys.dedup();
    assert_eq!(keys.len(), SUPPORTED_APIS.len());
}

#[test]
fn every_advertised_range_lies_in_the_crates() {
    // The compile-time assertions, once more through the runtime API, plus
    // the one deliberate exception: Produce 0-2 advertised, not decoded.
    for api in SUPPORTED_APIS {
        let crate_range = api.key.valid_versions();
        assert!(api.max <= crate_range.max, "{:?}", api.key);
        assert!(api.decode_min >= crate_range.min, "{:?}", api.key);
        if api.min < crate_range.min {
            assert_eq!(api.key, ApiKey::Produce);
        }
        assert!(
            !api.decodes(api.decode_min - 1) && api.decodes(api.decode_min) && api.decodes(api.max)
        );
        assert!(!api.decodes(api.max + 1));
    }
}

#[test]
fn api_versions_answers_every_version_we_decode() {
    for version in 0..=4 {
        let body = api_versions_response(version).unwrap();
        let mut buf = body.clone();
        let response = ApiVersionsResponse::decode(&mut buf, version).unwrap();
        assert!(buf.is_empty());
        assert_eq!(response.error_code, 0);
        assert_eq!(response.throttle_time_ms, 0);
        let entries: Vec<(i16, i16, i16)> = response
            .api_keys
            .iter()
            .map(|k| (k.api_key, k.min_version, k.max_version))
            .collect();
        let expected: Vec<(i16, i16, i16)> = SUPPORTED_APIS
            .iter()
            .map(|a| (a.key as i16, a.min, a.max))
            .collect();
        assert_eq!(entries, expected, "v{version}");
        assert!(response.supported_features.is_empty());
        assert_eq!(response.finalized_features_epoch, -1);
        assert!(response.unknown_tagged_fields.is_empty());
        if version >= 3 {
            // Flexible: each entry and the response end with an empty
            // tagged-field section, and nothing else is written: no
            // default-valued tagged field (kcat 1.7.1 reads them as an
            // underflow). Layout: error (2), compact count (1), entries of
            // key, min, max (2 each) + tags (1), throttle (4), tags (1).
            assert_eq!(body.len(), 2 + 1 + SUPPORTED_APIS.len() * 7 + 4 + 1);
            assert_eq!(body.last(), Some(&0));
        }
    }
}

#[test]
fn api_versions_of_an_unknown_version_is_kip_511() {
    for version in [5, 6, i16::MAX, -1, i16::MIN] {
        let body = api_versions_response(version).unwrap();
        let mut buf = body.clone();
        let response = ApiVersionsResponse::decode(&mut buf, 0).unwrap();
        assert!(buf.is_empty(), "v0 layout");
        assert_eq!(response.error_code, UNSUPPORTED_VERSION);
        assert_eq!(response.api_keys.len(), 1);
        let entry = &response.api_keys[0];
        assert_eq!(
            (entry.api_key, entry.min_version, entry.max_version),
            (18, 0, 4)
        );
    }
}

#[test]
fn api_versions_replies_have_a_v0_header_even_when_flexible() {
    let reply = api_versions_reply(3, 0x0102_0304).unwrap();
    let mut buf = reply.clone();
    assert_eq!(buf.get_i32() as usize, reply.len() - 4);
    assert_eq!(buf.get_i32(), 0x0102_0304);
    // No header tagged-field byte: the body (error code 0) follows at once.
    assert_eq!(buf.get_i16(), 0);
    let mut body = reply.slice(8..);
    ApiVersionsResponse::decode(&mut body, 3).unwrap();
    assert!(body.is_empty());
}

#[test]
fn encode_response_writes_the_response_header_of_the_version() {
    let mut metadata = MetadataResponse::default();
    metadata.throttle_time_ms = 5;
    // Metadata v8 has header v0, v9+ header v1 (a tagged-field byte).
    for (version, header_len) in [(8, 4), (9, 5), (12, 5)] {
        let frame = encode_response(ApiKey::Metadata, version, 99, &metadata).unwrap();
        let mut buf = frame.clone();
        assert_eq!(buf.get_i32() as usize, frame.len() - 4);
        assert_eq!(buf.get_i32(), 99);
        if header_len == 5 {
            assert_eq!(buf.get_u8(), 0);
        }
        let decoded = MetadataResponse::decode(&mut buf, version).unwrap();
        assert!(buf.is_empty());
        assert_eq!(decoded, metadata);
    }
    let api_versions = api_versions_response(4).unwrap();
    let framed = frame_response(ApiKey::ApiVersions, 4, 1, &api_versions).unwrap();
    assert_eq!(framed.len(), 4 + 4 + api_versions.len());
}

#[test]
fn encode_response_reports_what_the_encoder_refuses() {
    // A field Metadata v0 cannot carry.
    let mut metadata = MetadataResponse::default();
    metadata.throttle_time_ms = 5;
    metadata.cluster_authorized_operations = 0;
    let err = encode_response(ApiKey::Metadata, 0, 1, &metadata).unwrap_err();
    assert_eq!((err.api_key, err.version), (ApiKey::Metadata, 0));
}
