//! Consumer cursors end to end: SetCursor / FetchCursor against a real
//! `sluice serve`, routing between shards, validation, survival across
//! compaction, restarts and crashes, and `sluice consume --cursor`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::{NatsServer, Sluice};
use shards::batch::Record;
use shards::types::{Offset, TimestampMs};
use sluice::client::{Client, ClientError, FetchStart, StreamConfig};
use sluice::cursor::CURSOR_ID_BYTES_MAX;
use sluice::model::CURSORS_STREAM;
use sluice::process::die_with_parent;
use sluice::protocol::error_code::ErrorCode;
use sluice::protocol::error_response::ErrorResponse;
use sluice::protocol::frame::{encode_frame, FrameKind};
use sluice::protocol::set_cursor::SetCursorRequest;

/// Longest a test waits for a condition it polls.
const WAIT: Duration = Duration::from_secs(30);

fn client_at(addr: std::net::SocketAddr) -> Client {
    Client::connect(&addr.to_string()).expect("connect to sluice")
}

fn create(node: &Sluice, name: &str, partitions: u32) {
    let mut config = StreamConfig::new(name, name);
    config.partitions = Some(partitions);
    client_at(node.listen)
        .create_stream(&config)
        .expect("create stream");
}

fn server_code(result: Result<impl std::fmt::Debug, ClientError>) -> ErrorCode {
    match result {
        Err(ClientError::Server { code, .. }) => code,
        other => panic!("expected a server error, got {other:?}"),
    }
}

/// Every record of `__cursors` partition `partition` below its high
/// watermark.
fn cursor_log_records(node: &Sluice, partition: u32) -> usize {
    let mut client = client_at(node.listen);
    client.metadata().expect("metadata");
    let mut next = FetchStart::Earliest;
    let mut count = 0;
    for _ in 0..10_000 {
        let fetched = client
            .fetch(CURSORS_STREAM, partition, next, 1 << 20, Duration::ZERO)
            .expect("fetch the cursor log");
        count += fetched.records.len();
        if fetched.next_offset >= fetched.high_watermark {
            break;
        }
        next = FetchStart::Offset(fetched.next_offset);
    }
    count
}

#[test]
fn cursors_are_stored_and_fetched_through_any_shard_port() {
    let nats = NatsServer::start();
    let node = Sluice::start(&nats.url, 2);
    create(&node, "orders", 4);
    let mut via: Vec<Client> = (0..2).map(|k| client_at(node.shard_addr(k))).collect();

    // Before any cursor exists there is no cursor stream, and nothing stored.
    assert_eq!(
        via[0].fetch_cursor("fresh", "orders", 0).expect("fetch"),
        None
    );
    let metadata = via[0].metadata_for(&[CURSORS_STREAM]).expect("metadata");
    assert_eq!(
        metadata.stream(CURSORS_STREAM).and_then(|s| s.error),
        Some(ErrorCode::StreamNotFound),
        "a fetch must not create the cursor stream"
    );

    // Each cursor set through one shard's port and read through the other:
    // with 2 cursor partitions on 2 shards, about half of these keys are
    // owned by the shard the request did not arrive on.
    for i in 0..24u64 {
        let id = format!("consumer-{i}");
        let partition = (i % 4) as u32;
        let (writer, reader) = ((i % 2) as usize, ((i + 1) % 2) as usize);
        via[writer]
            .set_cursor(&id, "orders", partition, Offset(100 + i))
            .expect("set cursor");
        assert_eq!(
            via[reader]
                .fetch_cursor(&id, "orders", partition)
                .expect("fetch cursor"),
            Some(Offset(100 + i)),
            "{id}"
        );
        // Another partition of the same consumer is another cursor.
        assert_eq!(
            via[reader]
                .fetch_cursor(&id, "orders", (partition + 1) % 4)
                .expect("fetch cursor"),
            None
        );
    }
    via[0]
        .set_cursor("consumer-0", "orders", 0, Offset(7))
        .expect("move a cursor back");
    assert_eq!(
        via[1]
            .fetch_cursor("consumer-0", "orders", 0)
            .expect("fetch"),
        Some(Offset(7))
    );
    let described = via[0].metadata_for(&[CURSORS_STREAM]).expect("metadata");
    let cursors = described.stream(CURSORS_STREAM).expect("cursor stream");
    assert_eq!(cursors.error, None);
    assert_eq!(
        cursors.partitions.len(),
        2,
        "one cursor partition per shard"
    );
    assert!(cursors.config.compact, "the cursor stream is key-compacted");
    let shards: std::collections::HashSet<u16> =
        cursors.partitions.iter().map(|p| p.shard_index).collect();
    assert_eq!(shards.len(), 2, "cursor partitions spread over the shards");
}

#[test]
fn cursor_requests_are_validated() {
    let nats = NatsServer::start();
    let node = Sluice::start(&nats.url, 1);
    create(&node, "orders", 2);
    let mut client = client_at(node.listen);
    for bad in [
        "",
        "has space",
        "slash/id",
        "ünï",
        &"x".repeat(CURSOR_ID_BYTES_MAX + 1),
    ] {
        assert_eq!(
            server_code(client.set_cursor(bad, "orders", 0, Offset(1))),
            ErrorCode::InvalidRequest,
            "{bad:?}"
        );
        assert_eq!(
            server_code(client.fetch_cursor(bad, "orders", 0)),
            ErrorCode::InvalidRequest,
            "{bad:?}"
        );
    }
    client
        .set_cursor(&"x".repeat(CURSOR_ID_BYTES_MAX), "orders", 1, Offset(1))
        .expect("longest id");
    assert_eq!(
        server_code(client.set_cursor("c", "nope", 0, Offset(1))),
        ErrorCode::StreamNotFound
    );
    assert_eq!(
        server_code(client.set_cursor("c", "orders", 2, Offset(1))),
        ErrorCode::PartitionNotFound
    );
    assert_eq!(
        server_code(client.fetch_cursor("c", "orders", 9)),
        ErrorCode::PartitionNotFound
    );

    // A negative offset cannot be sent through the typed client.
    let body = SetCursorRequest {
        cursor_id: "c",
        stream: "orders",
        partition: 0,
        offset: Offset::ZERO,
    }
    .encode_with_wire_offset(-5);
    let (code, message) = raw_request(&node, FrameKind::SetCursorRequest, &body);
    assert_eq!(code, ErrorCode::InvalidRequest.code(), "{message}");
    assert!(message.contains("negative"), "{message}");

    // Internal names are reserved.
    for reserved in [CURSORS_STREAM, "_mine"] {
        let config = StreamConfig::new(reserved, "x");
        assert_eq!(
            server_code(client.create_stream(&config)),
            ErrorCode::InvalidRequest,
            "{reserved}"
        );
    }
}

/// Sends one frame on a fresh connection and returns the error code and
/// message of the `ErrorResponse` it gets (code 0 for any other answer).
fn raw_request(node: &Sluice, kind: FrameKind, body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(node.listen).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut frame = BytesMut::new();
    encode_frame(kind, 1, body, &mut frame).expect("frame");
    stream.write_all(&frame).expect("send");
    let mut header = [0u8; 9];
    stream.read_exact(&mut header).expect("answer header");
    let length = u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let mut answer = vec![0u8; length - 5];
    stream.read_exact(&mut answer).expect("answer body");
    if header[4] != FrameKind::ErrorResponse.code() {
        return (0, String::new());
    }
    let error = ErrorResponse::decode(&answer).expect("error body");
    (error.code.code(), error.message)
}

#[test]
fn cursors_survive_compaction_restart_and_crash() {
    let nats = NatsServer::start();
    // Tiny segments and frequent maintenance: the cursor log rolls every
    // few dozen records and is compacted while the test runs.
    let mut node = Sluice::start_with_config(
        &nats.url,
        1,
        "segment_bytes = 4096\nmaintenance_interval_ms = 100\n",
    );
    create(&node, "s", 1);
    let mut client = client_at(node.listen);
    const UPDATES: u64 = 300;
    for i in 1..=UPDATES {
        client
            .set_cursor("hot", "s", 0, Offset(i))
            .expect("set hot cursor");
        if i % 10 == 0 {
            client
                .set_cursor("cold", "s", 0, Offset(i / 10))
                .expect("set cold cursor");
        }
    }
    let written = (UPDATES + UPDATES / 10) as usize;
    let deadline = Instant::now() + WAIT;
    let mut remaining = cursor_log_records(&node, 0);
    while remaining >= written / 2 {
        assert!(
            Instant::now() < deadline,
            "compaction never shrank the cursor log ({remaining} of {written} records left); log:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(100));
        remaining = cursor_log_records(&node, 0);
    }
    let expect = |node: &Sluice, what: &str| {
        let mut client = client_at(node.listen);
        assert_eq!(
            client.fetch_cursor("hot", "s", 0).expect("fetch hot"),
            Some(Offset(UPDATES)),
            "{what}"
        );
        assert_eq!(
            client.fetch_cursor("cold", "s", 0).expect("fetch cold"),
            Some(Offset(UPDATES / 10)),
            "{what}"
        );
    };
    expect(&node, "after compaction");
    node.restart();
    expect(&node, "after a clean restart");
    let mut client = client_at(node.listen);
    client
        .set_cursor("hot", "s", 0, Offset(UPDATES + 1))
        .expect("set after restart");
    node.kill();
    node.start_again();
    let mut client_after = client_at(node.listen);
    assert_eq!(
        client_after.fetch_cursor("hot", "s", 0).expect("fetch"),
        Some(Offset(UPDATES + 1)),
        "an acknowledged SetCursor survives SIGKILL"
    );
}

fn publish_values(node: &Sluice, stream: &str, count: usize) {
    let mut client = client_at(node.listen);
    client.metadata().expect("metadata");
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            timestamp: TimestampMs::now(),
            key: None,
            value: Some(Bytes::from(format!("v{i}"))),
            headers: Vec::new(),
        })
        .collect();
    client.publish(stream, 0, &records).expect("publish");
}

fn consume(node: &Sluice, args: &[&str]) -> Vec<u64> {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--server")
        .arg(node.listen.to_string())
        .arg("consume")
        .args(args)
        .output()
        .expect("run sluice consume");
    assert!(
        output.status.success(),
        "sluice consume {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    offsets(&String::from_utf8_lossy(&output.stdout))
}

fn offsets(text: &str) -> Vec<u64> {
    text.lines()
        .map(|line| {
            line.split(' ')
                .next()
                .and_then(|o| o.parse().ok())
                .unwrap_or_else(|| panic!("not a record line: {line:?}"))
        })
        .collect()
}

#[test]
fn consume_with_cursor_resumes_and_stores_its_position() {
    let nats = NatsServer::start();
    let node = Sluice::start(&nats.url, 2);
    create(&node, "events", 1);
    publish_values(&node, "events", 10);

    assert_eq!(
        consume(&node, &["events", "--cursor", "c1", "--count", "4"]),
        vec![0, 1, 2, 3]
    );
    assert_eq!(
        consume(&node, &["events", "--cursor", "c1", "--count", "4"]),
        vec![4, 5, 6, 7],
        "resumes after the last printed record"
    );
    assert_eq!(
        consume(&node, &["events", "--cursor", "c1", "--from", "latest"]),
        vec![8, 9],
        "a stored position wins over --from"
    );
    let mut client = client_at(node.listen);
    assert_eq!(
        client.fetch_cursor("c1", "events", 0).expect("fetch"),
        Some(Offset(10))
    );
    assert_eq!(
        consume(&node, &["events", "--cursor", "c2", "--from", "offset:6"]),
        vec![6, 7, 8, 9],
        "no stored position: --from decides"
    );
    assert_eq!(
        consume(&node, &["events", "--cursor", "c2"]),
        Vec::<u64>::new(),
        "nothing new"
    );

    // --follow until Ctrl-C: the position is stored on the way out.
    let mut child = die_with_parent(&mut Command::new(env!("CARGO_BIN_EXE_sluice")))
        .arg("--server")
        .arg(node.listen.to_string())
        .args(["consume", "events", "--cursor", "c3", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice consume --follow");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    while seen.len() < 10 {
        let line = lines.next().expect("a record line").expect("utf-8 line");
        seen.extend(offsets(&line));
    }
    sluice_testkit::process::send_signal(&child, libc::SIGINT);
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "consume did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(130), "exit status after Ctrl-C");
    assert_eq!(seen, (0..10).collect::<Vec<u64>>());
    assert_eq!(
        client.fetch_cursor("c3", "events", 0).expect("fetch"),
        Some(Offset(10)),
        "Ctrl-C stores the position"
    );
}

/// A cursor belongs to one incarnation of its stream: after the stream is
/// deleted and re-created under the same name, a cursor saved against the
/// old one is no cursor (FetchCursor answers none, `consume --cursor`
/// starts at `--from`), and it stops counting against `cursors_max`.
#[test]
fn a_recreated_stream_does_not_inherit_the_old_streams_cursors() {
    let nats = NatsServer::start();
    let mut node = Sluice::start_with_config(&nats.url, 1, "[limits]\ncursors_max = 2\n");
    create(&node, "s", 1);
    publish_values(&node, "s", 10);
    let mut client = client_at(node.listen);
    client
        .set_cursor("api", "s", 0, Offset(7))
        .expect("set cursor");
    assert_eq!(
        consume(&node, &["s", "--cursor", "cli", "--count", "4"]),
        vec![0, 1, 2, 3]
    );
    assert_eq!(
        client.fetch_cursor("cli", "s", 0).expect("fetch"),
        Some(Offset(4))
    );
    assert_eq!(
        server_code(client.set_cursor("third", "s", 0, Offset(0))),
        ErrorCode::LimitExceeded,
        "two cursors fill this shard"
    );

    client.delete_stream("s").expect("delete s");
    create(&node, "s", 1);
    publish_values(&node, "s", 10);
    let mut client = client_at(node.listen);
    for id in ["api", "cli"] {
        assert_eq!(
            client.fetch_cursor(id, "s", 0).expect("fetch"),
            None,
            "cursor {id} was saved against the deleted stream"
        );
    }
    assert_eq!(
        consume(&node, &["s", "--cursor", "api"]),
        (0..10).collect::<Vec<u64>>(),
        "starts at the beginning of the new stream, not at the old offset 7"
    );
    assert_eq!(
        client.fetch_cursor("api", "s", 0).expect("fetch"),
        Some(Offset(10))
    );
    client
        .set_cursor("third", "s", 0, Offset(3))
        .expect("the old stream's cursors no longer count against cursors_max");

    // The old incarnation's record of `cli` is still in the cursor log: a
    // restart folds it again, and it still is no cursor and does not count.
    node.restart();
    let mut client = client_at(node.listen);
    assert_eq!(client.fetch_cursor("cli", "s", 0).expect("fetch"), None);
    assert_eq!(
        client.fetch_cursor("api", "s", 0).expect("fetch"),
        Some(Offset(10))
    );
    assert_eq!(
        client.fetch_cursor("third", "s", 0).expect("fetch"),
        Some(Offset(3))
    );
    assert_eq!(
        server_code(client.set_cursor("fourth", "s", 0, Offset(0))),
        ErrorCode::LimitExceeded,
        "api and third fill the shard; the stale cli does not"
    );
    client
        .set_cursor("api", "s", 0, Offset(2))
        .expect("existing cursors still move");
    assert_eq!(
        client.fetch_cursor("api", "s", 0).expect("fetch"),
        Some(Offset(2))
    );
}

/// Cursor records written before cursors carried their stream's incarnation
/// (the value is the offset alone) still resume their consumers: the stream's
/// current incarnation adopts them, also after a restart.
#[test]
fn cursors_saved_before_incarnations_were_recorded_are_adopted() {
    let nats = NatsServer::start();
    let mut node = Sluice::start(&nats.url, 1);
    create(&node, "orders", 1);
    let mut client = client_at(node.listen);
    // The first SetCursor creates the cursor stream (one partition here).
    client
        .set_cursor("current", "orders", 0, Offset(3))
        .expect("set cursor");
    let legacy = Record {
        timestamp: TimestampMs::now(),
        key: Some(Bytes::from_static(b"legacy/orders/0")),
        value: Some(Bytes::copy_from_slice(&42u64.to_be_bytes())),
        headers: Vec::new(),
    };
    client
        .publish(CURSORS_STREAM, 0, &[legacy])
        .expect("plant a legacy cursor record");
    assert_eq!(
        client.fetch_cursor("legacy", "orders", 0).expect("fetch"),
        Some(Offset(42))
    );
    node.restart();
    let mut client = client_at(node.listen);
    assert_eq!(
        client.fetch_cursor("legacy", "orders", 0).expect("fetch"),
        Some(Offset(42)),
        "adopted again when the log is folded on open"
    );
    assert_eq!(
        client.fetch_cursor("current", "orders", 0).expect("fetch"),
        Some(Offset(3))
    );
}
