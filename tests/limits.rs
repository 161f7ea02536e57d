//! Resource limits against a real `sluice serve`: every limit trips with a
//! `LimitExceeded` (or `FrameTooLarge`) naming it and a
//! `sluice_limit_exceeded_total{limit=...}` count, the server's memory stays
//! bounded (measured from /proc), and other clients keep being served.
//! Limits and timeouts are configured small so the tests take seconds.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::limits::{closed_within, fetch_body, frame, raw, read_error, rss_kib, send, WireError};
use common::{NatsServer, Sluice};
use sluice::protocol::ack::{Ack, AckOutcome};

/// The tests of this file run one at a time: the idle-sockets test holds
/// thousands of ephemeral ports, and a concurrently starting node could find
/// the "free" port it picked taken by one of them.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
use shards::batch::{Header, Record};
use shards::types::{Offset, TimestampMs};
use sluice::client::{Client, ClientError, FetchStart, StreamConfig};
use sluice::protocol::error_code::ErrorCode;
use sluice::protocol::frame::FrameKind;

/// Longest any condition is polled for.
const WAIT: Duration = Duration::from_secs(30);

fn client(node: &Sluice) -> Client {
    let mut client = Client::connect(&node.listen.to_string()).expect("connect");
    client.metadata().expect("metadata");
    client
}

/// `sluice_limit_exceeded_total{limit="<name>"}`.
fn trips(node: &Sluice, limit: &str) -> u64 {
    let line = format!("sluice_limit_exceeded_total{{limit=\"{limit}\"}} ");
    node.admin_get("/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(&line)?.parse().ok())
        .unwrap_or_else(|| panic!("no metric line for {limit}"))
}

fn record(value_bytes: usize, headers: Vec<Header>) -> Record {
    Record {
        timestamp: TimestampMs::now(),
        key: None,
        value: Some(Bytes::from(vec![b'v'; value_bytes])),
        headers,
    }
}

/// A client round trip that must work whatever else is going on.
fn still_serving(node: &Sluice, stream: &str) {
    let mut client = client(node);
    let (base, _) = client
        .publish(stream, 0, &[record(10, Vec::new())])
        .expect("publish while limits trip");
    let fetched = client
        .fetch(stream, 0, FetchStart::Offset(base), 1 << 16, Duration::ZERO)
        .expect("fetch while limits trip");
    assert!(fetched.records.iter().any(|r| r.offset == base));
}

fn limit_error(result: Result<impl std::fmt::Debug, ClientError>, limit: &str) {
    match result {
        Err(ClientError::Server { code, message, .. }) => {
            assert_eq!(code, ErrorCode::LimitExceeded, "{message}");
            assert!(message.starts_with(limit), "{limit}: {message}");
        }
        other => panic!("expected LimitExceeded {limit}, got {other:?}"),
    }
}

fn expect_wire_limit(error: Option<WireError>, limit: &str) {
    let error = error.unwrap_or_else(|| panic!("no error frame for {limit}"));
    assert_eq!(error.code, ErrorCode::LimitExceeded.code(), "{error:?}");
    assert!(error.message.starts_with(limit), "{error:?}");
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_frame_announcing_4_gib_is_refused_without_allocating() {
    let _serial = one_at_a_time();
    let nats = NatsServer::start();
    let node = Sluice::start(&nats.url, 1);
    let pid = node.pid().expect("pid");
    client(&node);
    let before = rss_kib(pid);
    for _ in 0..50 {
        let mut socket = raw(node.listen);
        // length u32::MAX, kind Fetch, correlation id 1, then nothing.
        send(&mut socket, &[0xff, 0xff, 0xff, 0xff, 0x04, 0, 0, 0, 1]);
        let error = read_error(&mut socket, WAIT).expect("an error frame");
        assert_eq!(error.code, ErrorCode::FrameTooLarge.code(), "{error:?}");
        assert_eq!(error.correlation_id, 0);
        assert!(closed_within(&mut socket, WAIT), "connection not closed");
    }
    let after = rss_kib(pid);
    eprintln!("RSS before {before} KiB, after 50 frames announcing 4 GiB: {after} KiB");
    assert!(
        after < before + 16 * 1024,
        "RSS grew from {before} to {after} KiB"
    );
    assert_eq!(trips(&node, "frame_body_bytes_max"), 50);
    client(&node)
        .create_stream(&StreamConfig::new("s", "s"))
        .expect("still serving");
    still_serving(&node, "s");
}

#[test]
fn thousands_of_idle_sockets_cost_little_and_the_connection_limit_trips() {
    let _serial = one_at_a_time();
    const IDLE: usize = 2000;
    const CONNECTIONS_MAX: usize = 2050;
    let nats = NatsServer::start();
    let node = Sluice::start_with_config(
        &nats.url,
        2,
        &format!("[limits]\nconnections_max = {CONNECTIONS_MAX}\n"),
    );
    let pid = node.pid().expect("pid");
    client(&node)
        .create_stream(&StreamConfig::new("s", "s"))
        .expect("create");
    still_serving(&node, "s");
    let open = |node: &Sluice| node.metric("sluice_connections_open");
    wait_until("warm-up connections to close", || open(&node) == 0);
    let before = rss_kib(pid);

    // Idle, unauthenticated sockets on both shard ports.
    let mut idle: Vec<TcpStream> = (0..IDLE)
        .map(|i| raw(node.shard_addr((i % 2) as u16)))
        .collect();
    wait_until("the server to hold every idle socket", || {
        open(&node) == IDLE as u64
    });
    let during = rss_kib(pid);
    let per_1k_kib = (during.saturating_sub(before)) * 1000 / IDLE as u64;
    eprintln!(
        "RSS with no client: {before} KiB; with {IDLE} idle sockets: {during} KiB \
         ({per_1k_kib} KiB per 1000 sockets)"
    );
    assert!(
        per_1k_kib < 8 * 1024,
        "{per_1k_kib} KiB per 1000 idle sockets (before {before}, during {during})"
    );
    still_serving(&node, "s");

    // Past the limit: each extra connection is told why and closed.
    wait_until("the probe client to close", || open(&node) == IDLE as u64);
    let mut extra: Vec<TcpStream> = (0..100).map(|_| raw(node.listen)).collect();
    let mut refused = 0;
    for socket in &mut extra {
        if let Some(error) = read_error(socket, Duration::from_millis(50)) {
            expect_wire_limit(Some(error), "connections_max");
            refused += 1;
        }
    }
    let admitted = CONNECTIONS_MAX - IDLE;
    // Sockets the server has not accepted yet answer later: wait for them.
    wait_until("every refusal to be counted", || {
        trips(&node, "connections_max") >= (100 - admitted) as u64
    });
    assert_eq!(trips(&node, "connections_max"), (100 - admitted) as u64);
    assert!(refused <= 100 - admitted, "{refused} refused");
    assert_eq!(open(&node), CONNECTIONS_MAX as u64);

    // Places are given back when sockets close.
    idle.truncate(IDLE / 2);
    drop(extra);
    wait_until("closed sockets to be released", || {
        open(&node) == (IDLE / 2) as u64
    });
    still_serving(&node, "s");
    let after = rss_kib(pid);
    eprintln!("RSS after closing half of them: {after} KiB");
}

#[test]
fn per_principal_connection_limit_trips() {
    let _serial = one_at_a_time();
    let nats = NatsServer::start();
    let node = Sluice::start_with_config(
        &nats.url,
        1,
        "[limits]\nconnections_max = 100\nconnections_per_principal_max = 5\n",
    );
    // The start-up probe's connection must be gone before counting.
    wait_until("no connection", || {
        node.metric("sluice_connections_open") == 0
    });
    let held: Vec<TcpStream> = (0..5).map(|_| raw(node.listen)).collect();
    wait_until("five connections", || {
        node.metric("sluice_connections_open") == 5
    });
    let mut sixth = raw(node.listen);
    expect_wire_limit(
        read_error(&mut sixth, WAIT),
        "connections_per_principal_max",
    );
    assert!(closed_within(&mut sixth, WAIT));
    assert_eq!(trips(&node, "connections_per_principal_max"), 1);
    drop(held);
    wait_until("connections to close", || {
        node.metric("sluice_connections_open") == 0
    });
    client(&node)
        .create_stream(&StreamConfig::new("s", "s"))
        .expect("served again");
}

#[test]
fn idle_and_slow_clients_are_timed_out_while_others_are_served() {
    let _serial = one_at_a_time();
    let nats = NatsServer::start();
    let node = Sluice::start_with_config(
        &nats.url,
        1,
        "[limits]\nidle_timeout_ms = 1500\nframe_timeout_ms = 400\n",
    );
    client(&node)
        .create_stream(&StreamConfig::new("s", "s"))
        .expect("create");

    let mut idle = raw(node.listen);
    let mut loris = raw(node.listen);
    let started = Instant::now();
    // A frame header trickled in: 3 bytes, then one more every 100 ms.
    send(&mut loris, &[0, 0, 0]);
    let trickle = std::thread::spawn(move || {
        for byte in [40u8, 4, 0, 0] {
            std::thread::sleep(Duration::from_millis(100));
            send(&mut loris, &[byte]);
        }
        loris
    });
    still_serving(&node, "s");
    let mut loris = trickle.join().expect("trickle thread");
    expect_wire_limit(read_error(&mut loris, WAIT), "frame_timeout_ms");
    let cut_after = started.elapsed();
    assert!(
        cut_after < Duration::from_millis(1400),
        "the slow frame was cut only after {cut_after:?}"
    );
    assert!(closed_within(&mut loris, WAIT));

    expect_wire_limit(read_error(&mut idle, WAIT), "idle_timeout_ms");
    assert!(closed_within(&mut idle, WAIT));
    assert!(started.elapsed() >= Duration::from_millis(1400));
    assert_eq!(trips(&node, "frame_timeout_ms"), 1);
    assert!(trips(&node, "idle_timeout_ms") >= 1);
    still_serving(&node, "s");
}

#[test]
fn consumers_that_never_read_are_cut_and_memory_stays_bounded() {
    let _serial = one_at_a_time();
    const STUCK: usize = 8;
    const FETCHES_EACH: u32 = 32;
    let nats = NatsServer::start();
    let node = Sluice::start_with_config(&nats.url, 1, "[limits]\nwrite_timeout_ms = 500\n");
    let pid = node.pid().expect("pid");
    let mut producer = client(&node);
    producer
        .create_stream(&StreamConfig::new("big", "big"))
        .expect("create");
    producer.metadata().expect("metadata");
    for _ in 0..16 {
        let batch: Vec<Record> = (0..16).map(|_| record(64 << 10, Vec::new())).collect();
        producer.publish("big", 0, &batch).expect("publish 1 MiB");
    }
    let before = rss_kib(pid);
    // Each asks for 32 MiB of fetch responses and reads none of it.
    let request = fetch_body("big", 0, 1 << 20);
    let mut stuck: Vec<TcpStream> = (0..STUCK).map(|_| raw(node.listen)).collect();
    for socket in &mut stuck {
        let mut burst = Vec::new();
        for corr in 1..=FETCHES_EACH {
            burst.extend_from_slice(&frame(FrameKind::FetchRequest, corr, &request));
        }
        send(socket, &burst);
    }
    // Others are served meanwhile.
    let mut reader = client(&node);
    let fetched = reader
        .fetch(
            "big",
            0,
            FetchStart::Offset(Offset(0)),
            1 << 20,
            Duration::ZERO,
        )
        .expect("fetch while others stall");
    assert!(!fetched.records.is_empty());
    wait_until("every stalled consumer to be cut", || {
        trips(&node, "write_timeout_ms") >= STUCK as u64
    });
    let during = rss_kib(pid);
    eprintln!(
        "RSS before {before} KiB; with {STUCK} consumers not reading {FETCHES_EACH} MiB each: {during} KiB"
    );
    assert!(
        during < before + 32 * 1024,
        "RSS grew from {before} to {during} KiB"
    );
    for socket in &mut stuck {
        assert!(
            closed_within(socket, WAIT),
            "a stalled consumer was not cut"
        );
    }
    still_serving(&node, "big");
}

#[test]
fn each_limit_trips_with_its_error_while_others_are_served() {
    let _serial = one_at_a_time();
    let nats = NatsServer::start();
    let node = Sluice::start_with_config(
        &nats.url,
        1,
        "[limits]\n\
         frame_body_bytes_max = 131072\n\
         batch_bytes_max = 65536\n\
         batch_records_max = 100\n\
         record_headers_max = 4\n\
         record_header_bytes_max = 256\n\
         fetch_inflight_bytes_max = 32768\n\
         streams_max = 3\n\
         partitions_max = 5\n\
         cursors_max = 3\n",
    );
    let mut admin = client(&node);
    let stream = |name: &str, partitions: u32| {
        let mut config = StreamConfig::new(name, name);
        config.partitions = Some(partitions);
        config
    };
    admin.create_stream(&stream("a", 1)).expect("a");
    admin.create_stream(&stream("b", 2)).expect("b");
    limit_error(admin.create_stream(&stream("c", 3)), "partitions_max");
    admin.create_stream(&stream("c", 2)).expect("c fits");
    limit_error(admin.create_stream(&stream("d", 1)), "streams_max");
    admin
        .create_stream(&stream("a", 1))
        .expect("re-creating an existing stream is never refused");
    still_serving(&node, "a");

    let mut publisher = client(&node);
    let small = |n: usize| -> Vec<Record> { (0..n).map(|_| record(10, Vec::new())).collect() };
    limit_error(publisher.publish("a", 0, &small(101)), "batch_records_max");
    publisher.publish("a", 0, &small(100)).expect("100 records");
    limit_error(
        publisher.publish("a", 0, &[record(80 << 10, Vec::new())]),
        "batch_bytes_max",
    );
    let headers = |n: usize, bytes: usize| -> Vec<Header> {
        (0..n)
            .map(|i| Header {
                key: Bytes::from(format!("h{i}")),
                value: Some(Bytes::from(vec![b'x'; bytes])),
            })
            .collect()
    };
    limit_error(
        publisher.publish("a", 0, &[record(1, headers(5, 1))]),
        "record_headers_max",
    );
    limit_error(
        publisher.publish("a", 0, &[record(1, headers(1, 300))]),
        "record_header_bytes_max",
    );
    publisher
        .publish("a", 0, &[record(1, headers(4, 50))])
        .expect("within the header limits");
    still_serving(&node, "a");

    // The same header limits for messages arriving over NATS (the bridge's
    // own subject and reply headers do not count).
    let over_nats = |count: usize, bytes: usize| -> AckOutcome {
        common::runtime().block_on(async {
            let nats_client = async_nats::connect(&nats.url).await.expect("nats");
            let mut map = async_nats::HeaderMap::new();
            for i in 0..count {
                map.insert(format!("h{i}").as_str(), "x".repeat(bytes).as_str());
            }
            let reply = nats_client
                .request_with_headers("a".to_string(), map, Bytes::from_static(b"v"))
                .await
                .expect("an ack");
            Ack::decode(&reply.payload).expect("ack decodes").outcome
        })
    };
    let nats_refusal = |outcome: AckOutcome, limit: &str| match outcome {
        AckOutcome::Failed { code, message } => {
            assert_eq!(code, ErrorCode::LimitExceeded, "{message}");
            assert!(message.contains(limit), "{message}");
        }
        committed => panic!("{limit} did not trip over NATS: {committed:?}"),
    };
    let tripped_before = trips(&node, "record_headers_max");
    nats_refusal(over_nats(5, 1), "record_headers_max");
    assert_eq!(trips(&node, "record_headers_max"), tripped_before + 1);
    nats_refusal(over_nats(1, 300), "record_header_bytes_max");
    assert!(
        matches!(over_nats(4, 50), AckOutcome::Committed { .. }),
        "within the header limits over NATS"
    );

    // A batch larger than a connection may have in flight cannot be fetched.
    let (big, _) = publisher
        .publish("b", 0, &[record(40 << 10, Vec::new())])
        .expect("40 KiB batch");
    limit_error(
        publisher.fetch("b", 0, FetchStart::Offset(big), 1 << 20, Duration::ZERO),
        "fetch_inflight_bytes_max",
    );

    // A frame above the configured frame limit.
    let mut socket = raw(node.listen);
    send(&mut socket, &[0, 3, 0, 0, 0x05, 0, 0, 0, 9]);
    let error = read_error(&mut socket, WAIT).expect("error frame");
    assert_eq!(error.code, ErrorCode::FrameTooLarge.code(), "{error:?}");

    let mut cursors = client(&node);
    for id in ["c1", "c2", "c3"] {
        cursors.set_cursor(id, "a", 0, Offset(1)).expect("cursor");
    }
    limit_error(cursors.set_cursor("c4", "a", 0, Offset(1)), "cursors_max");
    cursors
        .set_cursor("c1", "a", 0, Offset(2))
        .expect("existing cursors still move");
    assert_eq!(
        cursors.fetch_cursor("c1", "a", 0).expect("fetch"),
        Some(Offset(2))
    );
    still_serving(&node, "a");

    // The header limits tripped once over TCP and once over NATS.
    for (limit, count) in [
        ("partitions_max", 1),
        ("streams_max", 1),
        ("batch_records_max", 1),
        ("batch_bytes_max", 1),
        ("record_headers_max", 2),
        ("record_header_bytes_max", 2),
        ("fetch_inflight_bytes_max", 1),
        ("frame_body_bytes_max", 1),
        ("cursors_max", 1),
    ] {
        assert_eq!(trips(&node, limit), count, "{limit}");
    }
}

#[test]
fn authenticating_moves_a_connection_to_its_principals_limit() {
    let _serial = one_at_a_time();
    use common::auth::{auth_section, ALICE_TOKEN, ROOT_TOKEN};
    use sluice::client::Credentials;
    let nats = NatsServer::start();
    let node = Sluice::start_with_config(
        &nats.url,
        1,
        &format!(
            "{}\n[limits]\nconnections_per_principal_max = 2\n",
            auth_section()
        ),
    );
    // The start-up probe's connection must be gone before counting.
    wait_until("no connection", || {
        node.metric("sluice_connections_open") == 0
    });
    let login = |token: &str| {
        let mut client = Client::connect(&node.listen.to_string()).expect("connect");
        let result = client.authenticate(Credentials::Token(token.to_owned()));
        (client, result)
    };
    let (_alice1, first) = login(ALICE_TOKEN);
    first.expect("first alice connection");
    let (_alice2, second) = login(ALICE_TOKEN);
    second.expect("second alice connection");
    // Accepted as anonymous (one of two), refused once it becomes alice.
    let (_alice3, third) = login(ALICE_TOKEN);
    limit_error(third, "connections_per_principal_max");
    wait_until("the refused connection to close", || {
        node.metric("sluice_connections_open") == 2
    });
    let (_root, other) = login(ROOT_TOKEN);
    other.expect("another principal has its own budget");
    assert_eq!(trips(&node, "connections_per_principal_max"), 1);
}
