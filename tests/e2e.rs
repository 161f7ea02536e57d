//! End-to-end: real `nats-server` and `sluice serve` processes on free
//! loopback ports, driven through NATS (async-nats) and the TCP protocol
//! (`sluice::client`).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{runtime, NatsServer, Sluice};
use futures::StreamExt;
use shards::batch::{DecodedRecord, Record};
use shards::types::{Offset, TimestampMs};
use sluice::client::{Client, FetchStart, StreamConfig};
use sluice::protocol::ack::{Ack, AckOutcome};
use sluice::protocol::envelope::{encode_envelope, Envelope, Header};

/// Longest a test waits for an ack or a record.
const WAIT: Duration = Duration::from_secs(15);

fn client(node: &Sluice) -> Client {
    Client::connect(&node.listen.to_string()).expect("connect to sluice")
}

fn create(node: &Sluice, name: &str, subject: &str, group: Option<&str>, partitions: u32) {
    let mut config = StreamConfig::new(name, subject);
    config.group = group.map(str::to_string);
    config.partitions = Some(partitions);
    client(node).create_stream(&config).expect("create stream");
}

fn header<'a>(record: &'a DecodedRecord, key: &str) -> Option<&'a [u8]> {
    record
        .headers
        .iter()
        .find(|h| h.key.as_ref() == key.as_bytes())
        .and_then(|h| h.value.as_deref())
}

/// Every record of a partition from `from` up to `count` records (bounded).
fn read_records(node: &Sluice, stream: &str, partition: u32, count: usize) -> Vec<DecodedRecord> {
    let mut client = client(node);
    let mut out = Vec::new();
    let mut next = FetchStart::Earliest;
    let deadline = Instant::now() + WAIT;
    while out.len() < count && Instant::now() < deadline {
        let result = client
            .fetch(stream, partition, next, 1 << 20, Duration::from_millis(500))
            .expect("fetch");
        out.extend(result.records);
        next = FetchStart::Offset(result.next_offset);
    }
    out
}

/// Publishes `payload` with a reply inbox and collects acks for `grace`
/// after the first one.
async fn request_acks(
    nats: &async_nats::Client,
    subject: &str,
    payload: Bytes,
    headers: Option<async_nats::HeaderMap>,
    expected: usize,
) -> Vec<Ack> {
    let inbox = nats.new_inbox();
    let mut acks_sub = nats
        .subscribe(inbox.clone())
        .await
        .expect("subscribe inbox");
    match headers {
        Some(h) => nats
            .publish_with_reply_and_headers(subject.to_string(), inbox, h, payload)
            .await
            .expect("publish"),
        None => nats
            .publish_with_reply(subject.to_string(), inbox, payload)
            .await
            .expect("publish"),
    }
    let mut acks = Vec::new();
    while acks.len() < expected {
        match tokio::time::timeout(WAIT, acks_sub.next()).await {
            // NATS answers "no responders" (a status message) when nothing
            // subscribes to the subject: no stream, so no ack.
            Ok(Some(message)) if message.status.is_some() => break,
            Ok(Some(message)) => acks.push(Ack::decode(&message.payload).expect("ack decodes")),
            _ => break,
        }
    }
    acks
}

fn committed_offset(ack: &Ack) -> Offset {
    match &ack.outcome {
        AckOutcome::Committed { offset, .. } => *offset,
        AckOutcome::Failed { code, message } => panic!("ack failed: {code:?} {message}"),
    }
}

#[test]
fn nats_publish_with_reply_is_acked_with_its_offset() {
    let nats_server = NatsServer::start();
    let node = Sluice::start(&nats_server.url, 2);
    create(&node, "orders", "orders", None, 1);
    runtime().block_on(async {
        let nats = async_nats::connect(&nats_server.url).await.expect("nats");
        for i in 0..5u64 {
            let acks =
                request_acks(&nats, "orders", Bytes::from(format!("order {i}")), None, 1).await;
            assert_eq!(acks.len(), 1, "ack {i}; log:\n{}", node.log());
            assert_eq!(acks[0].stream, "orders");
            assert_eq!(acks[0].partition, 0);
            assert_eq!(committed_offset(&acks[0]), Offset(i));
        }
        // No stream on this subject: nothing stored, no ack.
        let acks = request_acks(&nats, "nobody.listens", Bytes::from_static(b"x"), None, 1).await;
        assert!(acks.is_empty());
    });
    let records = read_records(&node, "orders", 0, 5);
    let values: Vec<&[u8]> = records.iter().filter_map(|r| r.value.as_deref()).collect();
    assert_eq!(
        values,
        vec![
            &b"order 0"[..],
            b"order 1",
            b"order 2",
            b"order 3",
            b"order 4"
        ]
    );
    assert_eq!(header(&records[0], "nats.subject"), Some(&b"orders"[..]));
}

#[test]
fn wildcard_stream_keeps_each_subject_and_two_streams_each_get_a_copy() {
    let nats_server = NatsServer::start();
    let node = Sluice::start(&nats_server.url, 2);
    create(&node, "all-foo", "foo.*", None, 1);
    create(&node, "copy-a", "foo.a", None, 1);
    create(&node, "copy-b", "foo.a", None, 1);
    runtime().block_on(async {
        let nats = async_nats::connect(&nats_server.url).await.expect("nats");
        let acks = request_acks(&nats, "foo.a", Bytes::from_static(b"A"), None, 3).await;
        let streams: HashSet<String> = acks.iter().map(|a| a.stream.clone()).collect();
        assert_eq!(
            streams,
            ["all-foo", "copy-a", "copy-b"]
                .iter()
                .map(|s| s.to_string())
                .collect()
        );
        let acks = request_acks(&nats, "foo.b", Bytes::from_static(b"B"), None, 1).await;
        assert_eq!(acks[0].stream, "all-foo");
    });
    let all = read_records(&node, "all-foo", 0, 2);
    assert_eq!(all.len(), 2);
    assert_eq!(header(&all[0], "nats.subject"), Some(&b"foo.a"[..]));
    assert_eq!(header(&all[1], "nats.subject"), Some(&b"foo.b"[..]));
    for stream in ["copy-a", "copy-b"] {
        let records = read_records(&node, stream, 0, 1);
        assert_eq!(records.len(), 1, "{stream}");
        assert_eq!(records[0].value.as_deref(), Some(&b"A"[..]));
    }
}

#[test]
fn group_splits_messages_between_its_streams_without_loss_or_duplicates() {
    let nats_server = NatsServer::start();
    let node = Sluice::start(&nats_server.url, 2);
    create(&node, "g1", "jobs", Some("workers"), 1);
    create(&node, "g2", "jobs", Some("workers"), 1);
    const COUNT: usize = 200;
    runtime().block_on(async {
        let nats = async_nats::connect(&nats_server.url).await.expect("nats");
        for i in 0..COUNT {
            let acks = request_acks(&nats, "jobs", Bytes::from(format!("job-{i}")), None, 1).await;
            assert_eq!(acks.len(), 1, "job {i}");
        }
    });
    let mut seen = BTreeMap::new();
    let mut per_stream = Vec::new();
    for stream in ["g1", "g2"] {
        let hw = client(&node)
            .list_offsets(stream, 0, sluice::client::OffsetQuery::Latest)
            .expect("offsets")
            .offset;
        let records = read_records(&node, stream, 0, hw.0 as usize);
        per_stream.push(records.len());
        for r in records {
            *seen.entry(r.value.expect("value")).or_insert(0) += 1;
        }
    }
    assert_eq!(seen.len(), COUNT, "lost messages");
    assert!(seen.values().all(|&n| n == 1), "duplicated messages");
    assert_eq!(per_stream.iter().sum::<usize>(), COUNT);
    assert!(
        per_stream.iter().all(|&n| n > 0),
        "the queue group must split messages between both streams: {per_stream:?}"
    );
}

#[test]
fn consume_from_earliest_offset_timestamp_latest_with_long_poll() {
    let nats_server = NatsServer::start();
    let node = Sluice::start(&nats_server.url, 1);
    create(&node, "events", "events", None, 1);
    let mut c = client(&node);
    let record = |i: u64, ts: i64| Record {
        timestamp: TimestampMs(ts),
        key: Some(Bytes::from(format!("k{i}"))),
        value: Some(Bytes::from(format!("v{i}"))),
        headers: Vec::new(),
    };
    let first: Vec<Record> = (0..10).map(|i| record(i, 1_000 + i as i64 * 10)).collect();
    assert_eq!(
        c.publish("events", 0, &first).expect("publish"),
        (Offset(0), Offset(9))
    );

    let earliest = c
        .fetch("events", 0, FetchStart::Earliest, 1 << 20, Duration::ZERO)
        .expect("fetch");
    assert_eq!(earliest.records.len(), 10);
    let from_7 = c
        .fetch(
            "events",
            0,
            FetchStart::Offset(Offset(7)),
            1 << 20,
            Duration::ZERO,
        )
        .expect("fetch");
    assert_eq!(
        from_7
            .records
            .iter()
            .map(|r| r.offset.0)
            .collect::<Vec<_>>(),
        vec![7, 8, 9]
    );
    let by_time = c
        .fetch(
            "events",
            0,
            FetchStart::Timestamp(TimestampMs(1_045)),
            1 << 20,
            Duration::ZERO,
        )
        .expect("fetch");
    assert_eq!(by_time.records.first().map(|r| r.offset), Some(Offset(5)));

    // Latest: nothing yet; a long poll wakes when a new record commits.
    let latest = c
        .fetch("events", 0, FetchStart::Latest, 1 << 20, Duration::ZERO)
        .expect("fetch");
    assert!(latest.records.is_empty());
    assert_eq!(latest.high_watermark, Offset(10));
    let addr = node.listen.to_string();
    let publisher = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let mut c = Client::connect(&addr).expect("connect");
        c.publish("events", 0, &[record(10, 5_000)])
            .expect("publish")
    });
    let started = Instant::now();
    let woken = c
        .fetch(
            "events",
            0,
            FetchStart::Offset(Offset(10)),
            1 << 20,
            Duration::from_secs(10),
        )
        .expect("long poll");
    let waited = started.elapsed();
    assert_eq!(
        publisher.join().expect("publisher"),
        (Offset(10), Offset(10))
    );
    assert_eq!(
        woken.records.len(),
        1,
        "long poll returned without the new record"
    );
    assert!(
        waited < Duration::from_secs(8),
        "long poll was not woken: {waited:?}"
    );
    assert!(
        waited >= Duration::from_millis(200),
        "long poll did not wait: {waited:?}"
    );
    // And a long poll with nothing arriving returns empty after max wait.
    let started = Instant::now();
    let empty = c
        .fetch(
            "events",
            0,
            FetchStart::Offset(Offset(11)),
            1 << 20,
            Duration::from_millis(300),
        )
        .expect("fetch");
    assert!(empty.records.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[test]
fn restart_keeps_streams_and_data_and_envelopes_round_trip() {
    let nats_server = NatsServer::start();
    let mut node = Sluice::start(&nats_server.url, 2);
    create(&node, "keyed", "keyed", None, 2);
    runtime().block_on(async {
        let nats = async_nats::connect(&nats_server.url).await.expect("nats");
        let envelope = Envelope {
            key: Some(Bytes::from_static(b"user-7")),
            headers: vec![Header {
                key: "trace".into(),
                value: Some(Bytes::from_static(b"t-1")),
            }],
            value: Some(Bytes::from_static(b"hello")),
            correlation_id: Some("c-42".into()),
            partition: Some(1),
            ..Envelope::default()
        };
        let payload = Bytes::from(encode_envelope(&envelope).expect("envelope"));
        let acks = request_acks(&nats, "keyed", payload, None, 1).await;
        assert_eq!(acks.len(), 1);
        assert_eq!(acks[0].partition, 1, "envelope names partition 1");
        assert_eq!(acks[0].correlation_id.as_deref(), Some("c-42"));
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("x-nats", "yes");
        let acks = request_acks(
            &nats,
            "keyed.1",
            Bytes::from_static(b"plain"),
            Some(headers),
            1,
        )
        .await;
        assert_eq!(committed_offset(&acks[0]), Offset(1));
    });
    node.restart();
    let records = read_records(&node, "keyed", 1, 2);
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].key.as_deref(), Some(&b"user-7"[..]));
    assert_eq!(records[0].value.as_deref(), Some(&b"hello"[..]));
    assert_eq!(header(&records[0], "trace"), Some(&b"t-1"[..]));
    assert_eq!(records[1].value.as_deref(), Some(&b"plain"[..]));
    assert_eq!(header(&records[1], "x-nats"), Some(&b"yes"[..]));
    let metadata = client(&node).metadata().expect("metadata");
    assert!(
        metadata.stream("keyed").is_some(),
        "stream survives restart"
    );
    // Publishing continues at the next offset after the restart.
    runtime().block_on(async {
        let nats = async_nats::connect(&nats_server.url).await.expect("nats");
        let acks = request_acks(&nats, "keyed.1", Bytes::from_static(b"after"), None, 1).await;
        assert_eq!(committed_offset(&acks[0]), Offset(2));
    });
}

/// Reads one frame's kind and error code (u16 at the start of an
/// ErrorResponse body is not fixed; decode with the protocol module).
fn read_frame(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 9];
    stream.read_exact(&mut head).ok()?;
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let mut body = vec![0u8; len.checked_sub(5)?];
    stream.read_exact(&mut body).ok()?;
    Some((head[4], body))
}

#[test]
fn garbage_and_oversized_frames_are_refused_and_others_keep_being_served() {
    let nats_server = NatsServer::start();
    let node = Sluice::start(&nats_server.url, 1);
    create(&node, "safe", "safe", None, 1);
    let mut healthy = client(&node);
    healthy
        .publish(
            "safe",
            0,
            &[Record {
                timestamp: TimestampMs(1),
                key: None,
                value: Some(Bytes::from_static(b"ok")),
                headers: Vec::new(),
            }],
        )
        .expect("publish");

    // A frame announcing 2^32-1 bytes: error frame, then the connection closes.
    let mut evil = TcpStream::connect(node.listen).expect("connect");
    evil.set_read_timeout(Some(WAIT)).expect("timeout");
    evil.write_all(&[0xFF, 0xFF, 0xFF, 0xFF, 0x04, 0, 0, 0, 1])
        .expect("write");
    let (kind, body) = read_frame(&mut evil).expect("an error frame");
    assert_eq!(kind, 0xFF);
    let error = sluice::protocol::error_response::ErrorResponse::decode(&body).expect("decodes");
    assert_eq!(error.code, sluice::protocol::ErrorCode::FrameTooLarge);
    let mut rest = Vec::new();
    assert_eq!(
        evil.read_to_end(&mut rest).unwrap_or(0),
        0,
        "connection closed"
    );

    // Garbage: a well-sized frame of an unknown kind, then random bytes.
    let mut garbage = TcpStream::connect(node.listen).expect("connect");
    garbage.set_read_timeout(Some(WAIT)).expect("timeout");
    garbage
        .write_all(&[0, 0, 0, 9, 0x42, 0, 0, 0, 7, 1, 2, 3, 4])
        .expect("write");
    let (kind, _) = read_frame(&mut garbage).expect("an error frame");
    assert_eq!(kind, 0xFF);
    // A Fetch whose body is not a flatbuffer.
    garbage
        .write_all(&[
            0, 0, 0, 13, 0x04, 0, 0, 0, 8, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4,
        ])
        .expect("write");
    let (kind, _) = read_frame(&mut garbage).expect("an error frame");
    assert_eq!(kind, 0xFF);
    // A too-short length field: BadFrame, then the connection is closed.
    garbage.write_all(&[0, 0, 0, 1, 0]).expect("write");
    let (kind, body) = read_frame(&mut garbage).expect("an error frame");
    assert_eq!(kind, 0xFF);
    let error = sluice::protocol::error_response::ErrorResponse::decode(&body).expect("decodes");
    assert_eq!(error.code, sluice::protocol::ErrorCode::BadFrame);
    let mut rest = Vec::new();
    assert_eq!(
        garbage.read_to_end(&mut rest).unwrap_or(0),
        0,
        "connection closed"
    );

    // The healthy client never noticed.
    let fetched = healthy
        .fetch("safe", 0, FetchStart::Earliest, 1 << 20, Duration::ZERO)
        .expect("fetch");
    assert_eq!(fetched.records.len(), 1);
    assert!(node.metric("sluice_protocol_errors_total") >= 3);
}

#[test]
fn large_fetches_go_out_by_sendfile() {
    let nats_server = NatsServer::start();
    let node = Sluice::start(&nats_server.url, 1);
    create(&node, "bulk", "bulk", None, 1);
    let mut c = client(&node);
    let value = Bytes::from(vec![7u8; 64 << 10]);
    for _ in 0..32 {
        let records: Vec<Record> = (0..4)
            .map(|_| Record {
                timestamp: TimestampMs(1),
                key: None,
                value: Some(value.clone()),
                headers: Vec::new(),
            })
            .collect();
        c.publish("bulk", 0, &records).expect("publish");
    }
    let mut total = 0usize;
    let mut next = FetchStart::Earliest;
    while total < 128 {
        let result = c
            .fetch("bulk", 0, next, 4 << 20, Duration::ZERO)
            .expect("fetch");
        assert!(!result.records.is_empty());
        total += result.records.len();
        next = FetchStart::Offset(result.next_offset);
    }
    let sent = node.metric("sluice_fetch_sendfile_bytes_total");
    let copied = node.metric("sluice_fetch_copied_bytes_total");
    assert!(
        sent + copied >= 8 << 20,
        "sendfile {sent} + copied {copied}"
    );
    assert!(
        sent > copied,
        "most bytes must go by sendfile: sendfile {sent}, copied {copied}"
    );
}

#[test]
fn sigterm_with_publishes_in_flight_loses_no_acked_message() {
    let nats_server = NatsServer::start();
    let mut node = Sluice::start(&nats_server.url, 2);
    create(&node, "inflight", "inflight", None, 1);
    let acked: Vec<(Offset, Bytes)> = runtime().block_on(async {
        let nats = async_nats::connect(&nats_server.url).await.expect("nats");
        let inbox = nats.new_inbox();
        let mut acks = nats
            .subscribe(format!("{inbox}.*"))
            .await
            .expect("subscribe");
        let mut acked = Vec::new();
        let record_ack = |message: async_nats::Message, acked: &mut Vec<(Offset, Bytes)>| {
            if message.status.is_some() {
                return; // "no responders" once the node is gone
            }
            let ack = Ack::decode(&message.payload).expect("ack");
            if let AckOutcome::Committed { offset, .. } = ack.outcome {
                let i: u32 = message
                    .subject
                    .rsplit('.')
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("index");
                acked.push((offset, Bytes::from(format!("m{i}"))));
            }
        };
        for i in 0..2_000u32 {
            nats.publish_with_reply(
                "inflight",
                format!("{inbox}.{i}"),
                Bytes::from(format!("m{i}")),
            )
            .await
            .expect("publish");
            if i == 1_000 {
                // Stop while publishes are in flight, once acks are flowing.
                nats.flush().await.expect("flush");
                if let Ok(Some(message)) = tokio::time::timeout(WAIT, acks.next()).await {
                    record_ack(message, &mut acked);
                }
                node.stop();
            }
        }
        let _ = nats.flush().await;
        while let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_secs(2), acks.next()).await
        {
            record_ack(message, &mut acked);
        }
        acked
    });
    assert!(
        !acked.is_empty(),
        "some publishes were acked before the stop"
    );
    node.start_again();
    let hw = client(&node)
        .list_offsets("inflight", 0, sluice::client::OffsetQuery::Latest)
        .expect("offsets")
        .offset;
    let records = read_records(&node, "inflight", 0, hw.0 as usize);
    let stored: BTreeMap<Offset, Bytes> = records
        .into_iter()
        .map(|r| (r.offset, r.value.expect("value")))
        .collect();
    for (offset, value) in &acked {
        assert_eq!(
            stored.get(offset),
            Some(value),
            "acked message at {offset} lost or changed"
        );
    }
}

/// OffsetForLeaderEpoch (kind 0x0A) on a single node: the partition leader
/// answers; a current epoch newer than the leader's is refused as
/// UnknownLeaderEpoch, an older one (when there is one) as FencedLeaderEpoch.
/// The leader stamps its batches with its epoch, so that epoch ends at the
/// log end; a negative or newer epoch is undefined.
#[test]
fn offset_for_leader_epoch_is_answered_by_the_partition_leader() {
    use shards::types::LeaderEpoch;
    use sluice::protocol::ErrorCode;
    let nats_server = NatsServer::start();
    let node = Sluice::start(&nats_server.url, 1);
    create(&node, "epochs", "epochs", None, 1);
    let mut c = client(&node);
    let record = Record {
        timestamp: TimestampMs(1_000),
        key: None,
        value: Some(Bytes::from_static(b"v")),
        headers: Vec::new(),
    };
    c.publish("epochs", 0, &[record]).expect("publish");
    let metadata = c.metadata_for(&["epochs"]).expect("metadata");
    let partition = metadata.streams[0].partitions[0].clone();
    let current = partition.leader_epoch.expect("leader epoch") as u32;
    let leader = partition.leader.expect("leader");

    let epoch = LeaderEpoch(current as i32);
    let answer = c
        .offset_for_leader_epoch("epochs", 0, epoch, Some(leader), Some(current))
        .expect("answer");
    assert_eq!(
        answer,
        Some((epoch, Offset(1))),
        "the latest epoch ends at the log end"
    );
    let beyond = c
        .offset_for_leader_epoch("epochs", 0, LeaderEpoch(epoch.0 + 1), None, None)
        .expect("answer");
    assert_eq!(
        beyond, None,
        "an epoch newer than the leader's is undefined"
    );
    let unchecked = c
        .offset_for_leader_epoch("epochs", 0, LeaderEpoch::NONE, None, None)
        .expect("answer");
    assert_eq!(unchecked, None);

    let newer = c
        .offset_for_leader_epoch("epochs", 0, LeaderEpoch(0), Some(leader), Some(current + 1))
        .expect_err("a newer current epoch is refused");
    assert_eq!(newer.code(), Some(ErrorCode::UnknownLeaderEpoch));
    if let Some(older) = current.checked_sub(1) {
        let fenced = c
            .offset_for_leader_epoch("epochs", 0, LeaderEpoch(0), Some(leader), Some(older))
            .expect_err("a stale current epoch is fenced");
        assert_eq!(fenced.code(), Some(ErrorCode::FencedLeaderEpoch));
    }
    let missing = c
        .offset_for_leader_epoch("epochs", 5, LeaderEpoch(0), None, None)
        .expect_err("no such partition");
    assert_eq!(missing.code(), Some(ErrorCode::PartitionNotFound));
}

/// A replica whose log ends below its high-watermark checkpoint lost
/// acknowledged data: on open it reports `LeaveIsr` through the metadata
/// leader. Here it is the only in-sync replica, so the state machine keeps it
/// (unclean election is off) and says so; the partition stays readable.
#[test]
fn a_replica_that_lost_its_tail_reports_leave_isr() {
    let nats_server = NatsServer::start();
    let mut node = Sluice::start(&nats_server.url, 1);
    create(&node, "tail", "tail", None, 1);
    let record = Record {
        timestamp: TimestampMs(1_000),
        key: None,
        value: Some(Bytes::from_static(b"v")),
        headers: Vec::new(),
    };
    client(&node)
        .publish("tail", 0, &[record])
        .expect("publish");
    node.stop();
    let checkpoint = std::fs::read_dir(node.data_dir.join("partitions"))
        .expect("partitions dir")
        .map(|e| e.expect("entry").path().join("0").join("high-watermark"))
        .find(|p| p.exists())
        .expect("a high-watermark checkpoint");
    // Claim offsets up to 1000 were committed: the log (end 1) lost them.
    let hw = 1000u64.to_be_bytes();
    let mut bytes = hw.to_vec();
    bytes.extend_from_slice(&crc32c::crc32c(&hw).to_be_bytes());
    std::fs::write(&checkpoint, bytes).expect("write checkpoint");
    node.start_again();
    let deadline = Instant::now() + WAIT;
    while !node.log().contains("reported LeaveIsr") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = node.log();
    assert!(log.contains("reported LeaveIsr"), "{log}");
    assert!(
        log.contains("the only in-sync replica lost acknowledged data"),
        "{log}"
    );
    let records = read_records(&node, "tail", 0, 1);
    assert_eq!(records.len(), 1);
}
