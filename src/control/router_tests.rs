//! Unit tests of the router (`router.rs`).

use super::*;
use crate::model::StreamId;
use bytes::Bytes;
use shards::batch::{decode_batch, Header};

fn key(partition: u32) -> BatchKey {
    (
        PartitionKey {
            stream_id: StreamId::new(7),
            partition,
        },
        CommitLevel::All,
    )
}

fn record(value: &[u8]) -> Record {
    Record {
        timestamp: TimestampMs(1_000),
        key: None,
        value: Some(Bytes::copy_from_slice(value)),
        headers: Vec::new(),
    }
}

fn ack(inbox: &str) -> AckRoute {
    AckRoute {
        inbox: inbox.to_owned(),
        correlation_id: Some(format!("c-{inbox}")),
    }
}

/// A record as the bridge makes it from a NATS message on `subject`
/// (with a reply, so two bridge headers) carrying `published` headers.
fn ingested_with_headers(subject: &str, published: &[(&str, &str)]) -> (Record, usize) {
    let mut map = async_nats::HeaderMap::new();
    for (name, value) in published {
        map.append(*name, *value);
    }
    let ingested = ingest(
        subject,
        Some("_INBOX.r"),
        Some(&map),
        Bytes::from_static(b"payload"),
        TimestampMs(5),
    );
    assert_eq!(ingested.bridge_headers, 2, "subject and reply");
    (ingested.record, ingested.bridge_headers)
}

fn violation(limits: &Limits, record: &Record, bridge_headers: usize) -> Option<LimitKind> {
    let bytes = encoded_len(std::slice::from_ref(record));
    record_limit_violation(limits, record, bridge_headers, bytes).map(|(kind, _)| kind)
}

#[test]
fn queue_group_is_per_stream_and_partition_unless_a_group_is_named() {
    assert_eq!(queue_group("orders", None, 3), "sluice.orders.3");
    // Different partitions (and streams) must never share a queue group,
    // or NATS would balance one partition's messages onto another's
    // leader.
    assert_ne!(
        queue_group("orders", None, 0),
        queue_group("orders", None, 1)
    );
    assert_ne!(
        queue_group("orders", None, 0),
        queue_group("audit", None, 0)
    );
    // Streams of a consumer group share the group, whatever the stream
    // or partition: a message lands in exactly one of them.
    assert_eq!(queue_group("orders", Some("g"), 0), "g");
    assert_eq!(queue_group("audit", Some("g"), 5), "g");
}

#[test]
fn a_pending_batch_is_full_once_it_reaches_the_routed_byte_cap() {
    let mut batch = PendingBatch::new(Arc::from("s"), key(0), 0);
    assert!(batch.is_empty());
    batch.push(record(b"a"), None, ROUTED_BATCH_BYTES_MAX - 1);
    assert!(!batch.is_empty());
    assert!(!batch.is_full(), "one byte under the cap");
    batch.push(record(b"b"), None, 1);
    assert!(batch.is_full(), "exactly at the cap");
    assert_eq!(batch.bytes, ROUTED_BATCH_BYTES_MAX);
}

#[test]
fn a_pending_batch_is_full_at_the_log_record_limit() {
    // The log refuses a batch of more than BATCH_RECORDS_MAX records:
    // the router must cut before, however small the records are.
    let mut batch = PendingBatch::new(Arc::from("s"), key(0), 0);
    let empty = Record {
        timestamp: TimestampMs(0),
        key: None,
        value: None,
        headers: Vec::new(),
    };
    batch.records = vec![empty.clone(); BATCH_RECORDS_MAX - 1];
    batch.acks = vec![None; BATCH_RECORDS_MAX - 1];
    assert!(!batch.is_full());
    batch.push(empty, None, 1);
    assert_eq!(batch.records.len(), BATCH_RECORDS_MAX);
    assert!(batch.is_full());
}

#[test]
fn the_summed_record_sizes_bound_the_encoded_batch() {
    // The router cuts on the sum of each record's size as a batch of its
    // own; that sum must never be below what the batch really encodes
    // to, or a routed batch could exceed ROUTED_BATCH_BYTES_MAX.
    let mut batch = PendingBatch::new(Arc::from("s"), key(0), 0);
    for i in 0..50u8 {
        let mut r = record(&vec![i; usize::from(i) * 3]);
        r.timestamp = TimestampMs(1_000 + i64::from(i) * 1_000_003);
        r.key = (i % 2 == 0).then(|| Bytes::from(vec![i; 5]));
        r.headers = vec![Header {
            key: Bytes::from_static(b"h"),
            value: Some(Bytes::from(i.to_string())),
        }];
        let bytes = encoded_len(std::slice::from_ref(&r));
        batch.push(r, None, bytes);
    }
    let summed = batch.bytes;
    let request = batch.into_request();
    assert!(
        request.batch.len() <= summed,
        "encoded {} > summed {summed}",
        request.batch.len()
    );
}

#[test]
fn a_request_holds_every_record_in_order_with_one_ack_route_each() {
    let mut batch = PendingBatch::new(Arc::from("orders"), key(4), 1);
    let acks = [Some(ack("a")), None, Some(ack("c"))];
    for (i, a) in acks.iter().enumerate() {
        let r = record(format!("v{i}").as_bytes());
        let bytes = encoded_len(std::slice::from_ref(&r));
        batch.push(r, a.clone(), bytes);
    }
    let request = batch.into_request();
    assert_eq!(request.key, key(4).0);
    assert_eq!(request.partition, 4);
    assert_eq!(request.stream, "orders");
    assert_eq!(request.level, CommitLevel::All);
    let (header, records) = decode_batch(&Bytes::from(request.batch)).expect("valid batch");
    assert_eq!(header.base_offset, Offset::ZERO, "the log assigns offsets");
    let values: Vec<_> = records.iter().map(|r| r.value.clone()).collect();
    assert_eq!(
        values,
        vec![
            Some(Bytes::from_static(b"v0")),
            Some(Bytes::from_static(b"v1")),
            Some(Bytes::from_static(b"v2"))
        ]
    );
    // Acks are matched to records by position: same count, same order.
    assert_eq!(request.acks.len(), records.len());
    assert_eq!(request.acks, acks.to_vec());
}

#[test]
fn flush_moves_a_batch_to_its_own_shard_once() {
    let mut groups: HashMap<BatchKey, PendingBatch> = HashMap::new();
    for (partition, shard) in [(0, 1u32), (1, 0u32)] {
        let mut batch = PendingBatch::new(Arc::from("s"), key(partition), shard);
        batch.push(record(b"x"), Some(ack("i")), 10);
        groups.insert(key(partition), batch);
    }
    let mut ready: Vec<Vec<ToShard>> = vec![Vec::new(), Vec::new()];
    flush_batch(&mut groups, &mut ready, key(0));
    assert!(!groups.contains_key(&key(0)));
    assert!(groups.contains_key(&key(1)), "other batches stay pending");
    assert!(ready[0].is_empty());
    assert_eq!(ready[1].len(), 1);
    match &ready[1][0] {
        ToShard::Append(request) => {
            assert_eq!(request.partition, 0);
            assert_eq!(request.acks.len(), 1);
        }
        _ => panic!("expected an append"),
    }
    // `order` may list a key twice after a cut: the second flush must
    // send nothing (no duplicate append).
    flush_batch(&mut groups, &mut ready, key(0));
    assert_eq!(ready[1].len(), 1);
    assert!(ready[0].is_empty());
}

#[test]
fn a_plain_message_within_the_default_limits_passes() {
    let (record, bridge) = ingested_with_headers("orders.0", &[("trace", "abc")]);
    assert_eq!(violation(&Limits::default(), &record, bridge), None);
}

#[test]
fn the_header_count_limit_counts_only_published_headers() {
    let limits = Limits {
        record_headers_max: 2,
        ..Limits::default()
    };
    // Two bridge headers plus two published: at the limit, not over.
    let (record, bridge) = ingested_with_headers("orders.0", &[("a", "1"), ("b", "2")]);
    assert_eq!(record.headers.len(), 4);
    assert_eq!(violation(&limits, &record, bridge), None);
    let (record, bridge) = ingested_with_headers("orders.0", &[("a", "1"), ("b", "2"), ("c", "3")]);
    let bytes = encoded_len(std::slice::from_ref(&record));
    let (kind, detail) =
        record_limit_violation(&limits, &record, bridge, bytes).expect("over the limit");
    assert_eq!(kind, LimitKind::RecordHeaders);
    assert_eq!(kind.name(), "record_headers_max");
    assert!(detail.contains("3 headers"), "{detail}");
    assert!(detail.contains("limit is 2"), "{detail}");
}

#[test]
fn the_header_count_never_passes_the_engine_ceiling_with_bridge_headers() {
    // Configured at the engine's ceiling, the published headers plus the
    // bridge's must still fit RECORD_HEADERS_MAX, which the log checks.
    let limits = Limits {
        record_headers_max: RECORD_HEADERS_MAX,
        ..Limits::default()
    };
    let mut record = record(b"v");
    record.headers = (0..RECORD_HEADERS_MAX)
        .map(|i| Header {
            key: Bytes::from(format!("h{i}")),
            value: None,
        })
        .collect();
    // 2 bridge headers + (RECORD_HEADERS_MAX - 2) published: fits.
    assert_eq!(violation(&limits, &record, 2), None);
    record.headers.push(Header {
        key: Bytes::from_static(b"one-more"),
        value: None,
    });
    assert_eq!(
        violation(&limits, &record, 2),
        Some(LimitKind::RecordHeaders)
    );
}

#[test]
fn the_header_bytes_limit_counts_only_published_headers() {
    let limits = Limits {
        record_header_bytes_max: 10,
        ..Limits::default()
    };
    // The bridge's subject header alone is far over 10 bytes: not counted.
    let long_subject = format!("orders.{}", "x".repeat(100));
    let (record, bridge) = ingested_with_headers(&long_subject, &[]);
    assert_eq!(violation(&limits, &record, bridge), None);
    // key + value = 10 bytes: at the limit.
    let (record, bridge) = ingested_with_headers("orders.0", &[("k", "123456789")]);
    assert_eq!(violation(&limits, &record, bridge), None);
    let (record, bridge) = ingested_with_headers("orders.0", &[("k", "1234567890")]);
    let bytes = encoded_len(std::slice::from_ref(&record));
    let (kind, detail) =
        record_limit_violation(&limits, &record, bridge, bytes).expect("over the limit");
    assert_eq!(kind, LimitKind::RecordHeaderBytes);
    assert_eq!(kind.name(), "record_header_bytes_max");
    assert!(detail.contains("11 bytes"), "{detail}");
}

#[test]
fn a_record_needing_a_batch_over_the_limit_is_refused() {
    let limits = Limits {
        batch_bytes_max: 100,
        ..Limits::default()
    };
    let r = record(b"v");
    assert_eq!(record_limit_violation(&limits, &r, 0, 100), None);
    let (kind, detail) = record_limit_violation(&limits, &r, 0, 101).expect("over");
    assert_eq!(kind, LimitKind::BatchBytes);
    assert_eq!(kind.name(), "batch_bytes_max");
    assert!(detail.contains("101-byte batch"), "{detail}");
    assert!(detail.contains("limit is 100"), "{detail}");
    // A limit configured above the engine's ceiling is capped by it: the
    // log would refuse the batch anyway.
    let unbounded = Limits {
        batch_bytes_max: usize::MAX,
        ..Limits::default()
    };
    assert_eq!(
        record_limit_violation(&unbounded, &r, 0, BATCH_BYTES_MAX),
        None
    );
    assert_eq!(
        record_limit_violation(&unbounded, &r, 0, BATCH_BYTES_MAX + 1).map(|(k, _)| k),
        Some(LimitKind::BatchBytes)
    );
}
