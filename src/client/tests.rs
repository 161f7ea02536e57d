//! The client against an in-process fake server: a std thread on
//! 127.0.0.1:0 that reads request frames and answers with canned bytes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;

use bytes::{Bytes, BytesMut};
use shards::batch::{decode_batch, Header};
use shards::types::TimestampMs;

use super::*;
use crate::model::nid;
use crate::protocol::create_stream::CreateStreamRequest;
use crate::protocol::delete_stream::{DeleteStreamRequest, DeleteStreamResponse};
use crate::protocol::error_response::ErrorResponse;
use crate::protocol::fetch::{FetchRequest, FetchResponse};
use crate::protocol::frame::{encode_frame, FrameKind};
use crate::protocol::list_offsets::ListOffsetsRequest;
use crate::protocol::publish::{PublishRequest, PublishResponse};

/// A request as the fake server received it.
#[derive(Debug)]
struct Received {
    kind: u8,
    correlation_id: u32,
    body: Vec<u8>,
}

/// Given a request, the bytes to answer with (empty: no answer).
type Step = Box<dyn FnOnce(&Received) -> Vec<u8> + Send>;

/// One fake shard port: accepts connections in turn and runs `steps` on them
/// (a new connection is accepted when the peer closes the current one).
struct FakePort {
    addr: SocketAddr,
    thread: JoinHandle<Vec<Received>>,
}

impl FakePort {
    fn start(steps: Vec<Step>) -> FakePort {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let thread = std::thread::spawn(move || {
            let mut received = Vec::new();
            let mut steps = steps.into_iter();
            let mut pending = steps.next();
            while pending.is_some() {
                let (mut socket, _) = listener.accept().expect("accept");
                while let Some(step) = pending.take() {
                    let Some(request) = read_request(&mut socket) else {
                        pending = Some(step);
                        break; // the client closed this connection
                    };
                    let answer = step(&request);
                    received.push(request);
                    socket.write_all(&answer).expect("answer");
                    pending = steps.next();
                }
            }
            received
        });
        FakePort { addr, thread }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn join(self) -> Vec<Received> {
        self.thread.join().expect("fake server thread")
    }
}

fn read_request(socket: &mut TcpStream) -> Option<Received> {
    let mut header = [0u8; 9];
    socket.read_exact(&mut header).ok()?;
    let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let mut body = vec![0u8; length as usize - 5];
    socket.read_exact(&mut body).ok()?;
    Some(Received {
        kind: header[4],
        correlation_id: u32::from_be_bytes([header[5], header[6], header[7], header[8]]),
        body,
    })
}

fn frame(kind: FrameKind, correlation_id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_frame(kind, correlation_id, body, &mut out).expect("frame");
    out.to_vec()
}

fn error_frame(correlation_id: u32, error: ErrorResponse) -> Vec<u8> {
    let mut out = BytesMut::new();
    error.encode(correlation_id, &mut out).expect("encode");
    out.to_vec()
}

/// A FetchResponse frame followed by `raw`.
fn fetch_answer(correlation_id: u32, high_watermark: u64, log_start: u64, raw: &[u8]) -> Vec<u8> {
    let body = FetchResponse {
        high_watermark: Some(Offset(high_watermark)),
        log_start_offset: Some(Offset(log_start)),
        byte_count: u32::try_from(raw.len()).expect("small test batch"),
        ..FetchResponse::default()
    }
    .encode();
    let mut answer = frame(FrameKind::FetchResponse, correlation_id, &body);
    answer.extend_from_slice(raw);
    answer
}

fn record(value: &str) -> Record {
    Record {
        timestamp: TimestampMs(1_700_000_000_000),
        key: Some(Bytes::from_static(b"k")),
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        headers: vec![Header {
            key: Bytes::from_static(b"nats.subject"),
            value: Some(Bytes::from_static(b"orders")),
        }],
    }
}

/// A stored batch of `values` starting at `base`.
fn batch(base: u64, values: &[&str]) -> Vec<u8> {
    let records: Vec<Record> = values.iter().map(|v| record(v)).collect();
    let mut out = Vec::new();
    encode_batch(Offset(base), &records, &mut out);
    out
}

fn values(records: &[DecodedRecord]) -> Vec<(u64, &[u8])> {
    records
        .iter()
        .map(|r| (r.offset.0, r.value.as_deref().unwrap_or_default()))
        .collect()
}

fn metadata_answer(correlation_id: u32, ports: &[u16]) -> Vec<u8> {
    let partitions = ports
        .iter()
        .enumerate()
        .map(|(index, port)| PartitionMetadata {
            partition: index as u32,
            leader: Some(nid(1)),
            leader_epoch: Some(0),
            shard_index: index as u16,
            consumer_port: *port,
            replicas: vec![nid(1)],
            isr: vec![nid(1)],
            high_watermark: Some(Offset(10 * index as u64)),
            log_start_offset: None,
            failure: None,
        })
        .collect();
    let metadata = ClusterMetadata {
        protocol_version: 1,
        cluster_id: None,
        brokers: vec![BrokerMetadata {
            node_id: nid(1),
            host: "127.0.0.1".into(),
            port_base: ports[0],
            shard_count: ports.len() as u16,
        }],
        streams: vec![StreamMetadata {
            error: None,
            config: StreamConfig {
                partitions: Some(ports.len() as u32),
                replication_factor: Some(1),
                retention_bytes: Limit::Unlimited,
                ..StreamConfig::new("orders", "orders.>")
            },
            partitions,
        }],
    };
    frame(
        FrameKind::MetadataResponse,
        correlation_id,
        &metadata.encode(),
    )
}

fn client_for(port: &FakePort) -> Client {
    let config = ClientConfig {
        connect_timeout: Duration::from_secs(2),
        io_timeout: Duration::from_secs(5),
    };
    Client::connect_with(&port.addr.to_string(), config).expect("connect")
}

#[test]
fn fetch_decodes_two_batches_and_skips_records_below_the_start() {
    let mut raw = batch(0, &["a", "b", "c"]);
    raw.extend(batch(3, &["d", "e"]));
    let server = FakePort::start(vec![Box::new(move |request: &Received| {
        fetch_answer(request.correlation_id, 5, 0, &raw)
    })]);
    let mut client = client_for(&server);
    let fetched = client
        .fetch(
            "orders",
            2,
            FetchStart::Offset(Offset(1)),
            4096,
            Duration::from_millis(250),
        )
        .expect("fetch");
    assert_eq!(
        values(&fetched.records),
        vec![(1, &b"b"[..]), (2, b"c"), (3, b"d"), (4, b"e")]
    );
    assert_eq!(
        (
            fetched.high_watermark,
            fetched.log_start,
            fetched.next_offset
        ),
        (Offset(5), Offset(0), Offset(5))
    );
    let header = &fetched.records[0].headers[0];
    assert_eq!(header.key.as_ref(), b"nats.subject");

    let received = server.join();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].kind, FrameKind::FetchRequest.code());
    assert_ne!(received[0].correlation_id, 0);
    let request = FetchRequest::decode(&received[0].body).expect("verifies");
    assert_eq!((request.stream, request.partition), ("orders", 2));
    assert_eq!(request.start, FetchStart::Offset(Offset(1)));
    assert_eq!((request.max_bytes, request.max_wait_ms), (4096, 250));
}

#[test]
fn empty_fetch_continues_where_it_started() {
    let server = FakePort::start(vec![
        Box::new(|request: &Received| fetch_answer(request.correlation_id, 7, 2, &[])),
        Box::new(|request: &Received| fetch_answer(request.correlation_id, 7, 2, &[])),
    ]);
    let mut client = client_for(&server);
    let at_head = client
        .fetch("s", 0, FetchStart::Offset(Offset(7)), 0, Duration::ZERO)
        .expect("fetch");
    assert!(at_head.records.is_empty());
    assert_eq!(at_head.next_offset, Offset(7));
    let latest = client
        .fetch("s", 0, FetchStart::Latest, 0, Duration::ZERO)
        .expect("fetch");
    assert_eq!(latest.next_offset, Offset(7));
    let received = server.join();
    assert_eq!(received[1].correlation_id, received[0].correlation_id + 1);
}

#[test]
fn wrong_shard_redirects_once_and_the_route_is_remembered() {
    let right = FakePort::start(vec![
        Box::new(|request: &Received| {
            fetch_answer(request.correlation_id, 1, 0, &batch(0, &["x"]))
        }),
        Box::new(|request: &Received| fetch_answer(request.correlation_id, 1, 0, &[])),
    ]);
    let right_port = right.port();
    let wrong = FakePort::start(vec![Box::new(move |request: &Received| {
        error_frame(
            request.correlation_id,
            ErrorResponse::wrong_shard(right_port, "orders/1 lives on shard 1"),
        )
    })]);
    let mut client = client_for(&wrong);
    let fetched = client
        .fetch("orders", 1, FetchStart::Earliest, 0, Duration::ZERO)
        .expect("redirected fetch");
    assert_eq!(values(&fetched.records), vec![(0, &b"x"[..])]);
    // The next request for that partition goes straight to the right port.
    let again = client
        .fetch(
            "orders",
            1,
            FetchStart::Offset(Offset(1)),
            0,
            Duration::ZERO,
        )
        .expect("fetch");
    assert_eq!(again.next_offset, Offset(1));
    assert_eq!(wrong.join().len(), 1);
    assert_eq!(right.join().len(), 2);
}

#[test]
fn a_second_wrong_shard_is_an_error() {
    let second = FakePort::start(vec![Box::new(|request: &Received| {
        error_frame(
            request.correlation_id,
            ErrorResponse::wrong_shard(1, "again"),
        )
    })]);
    let second_port = second.port();
    let first = FakePort::start(vec![Box::new(move |request: &Received| {
        error_frame(
            request.correlation_id,
            ErrorResponse::wrong_shard(second_port, "go"),
        )
    })]);
    let mut client = client_for(&first);
    let error = client
        .list_offsets("s", 0, OffsetQuery::Latest)
        .expect_err("no second redirect");
    assert_eq!(error.code(), Some(ErrorCode::WrongShard));
    first.join();
    second.join();
}

#[test]
fn metadata_is_decoded_and_picks_the_partition_port() {
    let shard1 = FakePort::start(vec![Box::new(|request: &Received| {
        let body = ListedOffset {
            offset: Offset(42),
            timestamp: Some(TimestampMs(1_700_000_000_000)),
        }
        .encode();
        frame(
            FrameKind::ListOffsetsResponse,
            request.correlation_id,
            &body,
        )
    })]);
    let shard1_port = shard1.port();
    let shard0 = FakePort::start(vec![Box::new(move |request: &Received| {
        metadata_answer(request.correlation_id, &[0, shard1_port])
    })]);
    let shard0_port = shard0.port();
    let mut client = client_for(&shard0);
    let metadata = client.metadata().expect("metadata");
    assert_eq!(metadata.protocol_version, 1);
    assert_eq!(
        metadata.brokers,
        vec![BrokerMetadata {
            node_id: nid(1),
            host: "127.0.0.1".into(),
            port_base: 0,
            shard_count: 2,
        }]
    );
    let stream = metadata.stream("orders").expect("orders");
    assert_eq!(stream.error, None);
    assert_eq!(stream.config.subject, "orders.>");
    assert_eq!(stream.config.partitions, Some(2));
    assert_eq!(stream.config.retention_bytes, Limit::Unlimited);
    assert_eq!(stream.config.retention_age_ms, Limit::ServerDefault);
    let partition = &stream.partitions[1];
    assert_eq!(
        (
            partition.leader,
            partition.shard_index,
            partition.consumer_port
        ),
        (Some(nid(1)), 1, shard1_port)
    );
    assert_eq!(partition.high_watermark, Some(Offset(10)));
    assert_eq!(partition.log_start_offset, None);
    assert_eq!(
        (partition.replicas.clone(), partition.isr.clone()),
        (vec![nid(1)], vec![nid(1)])
    );

    let listed = client
        .list_offsets("orders", 1, OffsetQuery::Timestamp(TimestampMs(5)))
        .expect("list offsets goes to shard 1 directly");
    assert_eq!(listed.offset, Offset(42));
    assert_eq!(listed.timestamp, Some(TimestampMs(1_700_000_000_000)));
    let received = shard1.join();
    let request = ListOffsetsRequest::decode(&received[0].body).expect("verifies");
    assert_eq!(request.query, OffsetQuery::Timestamp(TimestampMs(5)));
    assert_eq!(shard0.join().len(), 1);
    assert_ne!(shard0_port, shard1_port);
}

#[test]
fn publish_sends_one_valid_batch() {
    let server = FakePort::start(vec![Box::new(|request: &Received| {
        let publish = PublishRequest::decode(&request.body).expect("verifies");
        assert_eq!((publish.stream, publish.partition), ("orders", 3));
        assert_eq!(publish.ack_policy, None);
        let batch = Bytes::copy_from_slice(publish.batch.expect("batch"));
        let (header, records) = decode_batch(&batch).expect("valid batch");
        assert_eq!((header.base_offset, records.len()), (Offset(0), 2));
        let body = PublishResponse {
            base_offset: Offset(10),
            last_offset: Offset(11),
            commit_timestamp: TimestampMs(1),
        }
        .encode();
        frame(FrameKind::PublishResponse, request.correlation_id, &body)
    })]);
    let mut client = client_for(&server);
    let offsets = client
        .publish("orders", 3, &[record("one"), record("two")])
        .expect("publish");
    assert_eq!(offsets, (Offset(10), Offset(11)));
    server.join();

    let error = client.publish("orders", 0, &[]).expect_err("empty");
    assert!(matches!(error, ClientError::InvalidRequest(_)), "{error}");
    let error = client
        .publish_with_policy("orders", 0, &[record("x")], AckPolicy::None)
        .expect_err("fire and forget");
    assert!(matches!(error, ClientError::InvalidRequest(_)), "{error}");
}

#[test]
fn server_errors_keep_the_connection() {
    let server = FakePort::start(vec![
        Box::new(|request: &Received| {
            let config = CreateStreamRequest::decode(&request.body)
                .expect("verifies")
                .config;
            assert_eq!(
                (config.name.as_str(), config.subject.as_str()),
                ("orders", "orders")
            );
            error_frame(
                request.correlation_id,
                ErrorResponse::new(ErrorCode::StreamExists, "subject differs"),
            )
        }),
        Box::new(|request: &Received| {
            let name = DeleteStreamRequest::decode(&request.body)
                .expect("verifies")
                .name
                .to_owned();
            assert_eq!(name, "orders");
            frame(
                FrameKind::DeleteStreamResponse,
                request.correlation_id,
                &DeleteStreamResponse.encode(),
            )
        }),
    ]);
    let mut client = client_for(&server);
    let error = client
        .create_stream(&StreamConfig::new("orders", "orders"))
        .expect_err("exists");
    assert_eq!(error.code(), Some(ErrorCode::StreamExists));
    assert_eq!(error.to_string(), "StreamExists (10): subject differs");
    client
        .delete_stream("orders")
        .expect("delete on the same connection");
    server.join();
}

#[test]
fn offset_out_of_range_carries_the_watermarks() {
    let server = FakePort::start(vec![Box::new(|request: &Received| {
        let body = FetchResponse {
            error: Some(ErrorCode::OffsetOutOfRange),
            error_message: "offset 99 is above the high watermark 5".into(),
            high_watermark: Some(Offset(5)),
            log_start_offset: Some(Offset(2)),
            byte_count: 0,
        }
        .encode();
        frame(FrameKind::FetchResponse, request.correlation_id, &body)
    })]);
    let mut client = client_for(&server);
    let error = client
        .fetch("s", 0, FetchStart::Offset(Offset(99)), 0, Duration::ZERO)
        .expect_err("out of range");
    match error {
        ClientError::OffsetOutOfRange {
            log_start,
            high_watermark,
            ..
        } => assert_eq!((log_start, high_watermark), (Offset(2), Offset(5))),
        other => panic!("unexpected {other:?}"),
    }
    server.join();
}

#[test]
fn oversized_lengths_are_protocol_violations_and_drop_the_connection() {
    let server = FakePort::start(vec![
        // A frame length far above the limit: refused before allocating.
        Box::new(|_: &Received| vec![0xFF, 0xFF, 0xFF, 0xFF, 0x84, 0, 0, 0, 1]),
        // A fetch announcing more raw bytes than any fetch may carry.
        Box::new(|request: &Received| {
            let body = FetchResponse {
                high_watermark: Some(Offset(1)),
                log_start_offset: Some(Offset(0)),
                byte_count: FETCH_BYTES_MAX + 1,
                ..FetchResponse::default()
            }
            .encode();
            frame(FrameKind::FetchResponse, request.correlation_id, &body)
        }),
        // A response with somebody else's correlation id.
        Box::new(|request: &Received| fetch_answer(request.correlation_id + 7, 0, 0, &[])),
        // A corrupt batch (one flipped bit under the CRC).
        Box::new(|request: &Received| {
            let mut raw = batch(0, &["a"]);
            let last = raw.len() - 1;
            raw[last] ^= 1;
            fetch_answer(request.correlation_id, 1, 0, &raw)
        }),
    ]);
    let mut client = client_for(&server);
    for what in [
        "huge frame",
        "huge byte_count",
        "wrong correlation id",
        "bad crc",
    ] {
        let error = client
            .fetch("s", 0, FetchStart::Earliest, 0, Duration::ZERO)
            .expect_err(what);
        assert!(
            matches!(error, ClientError::Protocol { .. }),
            "{what}: {error:?}"
        );
    }
    // Each violation dropped the connection: four connections were accepted.
    assert_eq!(server.join().len(), 4);
}

#[test]
fn timeouts_and_refused_connections_are_typed() {
    let silent = FakePort::start(vec![Box::new(|_: &Received| {
        std::thread::sleep(Duration::from_millis(500));
        Vec::new()
    })]);
    let mut client = Client::connect_with(
        &silent.addr.to_string(),
        ClientConfig {
            connect_timeout: Duration::from_secs(1),
            io_timeout: Duration::from_millis(100),
        },
    )
    .expect("connect");
    let error = client.metadata().expect_err("no answer");
    assert!(matches!(error, ClientError::Timeout { .. }), "{error:?}");
    drop(client);
    silent.join();

    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let error = Client::connect(&addr.to_string()).err().expect("refused");
    assert!(matches!(error, ClientError::Connect { .. }), "{error:?}");
    let error = Client::connect("no-port-here").err().expect("unresolvable");
    assert!(matches!(error, ClientError::Resolve { .. }), "{error:?}");
}

#[test]
fn timestamp_start_skips_older_records_of_the_first_batch() {
    let records: Vec<Record> = (0..3)
        .map(|i| Record {
            timestamp: TimestampMs(100 + i),
            ..record("v")
        })
        .collect();
    let mut raw = Vec::new();
    encode_batch(Offset(0), &records, &mut raw);
    let (found, end) = decode_fetched(
        &Bytes::from(raw),
        FetchStart::Timestamp(TimestampMs(101)),
        Offset(0),
    )
    .expect("decode");
    assert_eq!(
        found.iter().map(|r| r.offset.0).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(end, Some(Offset(3)));
}
