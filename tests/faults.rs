//! Disk faults, end to end: a real `sluice` process and `nats-server`.
//!
//! * A full disk (a size-capped tmpfs as the data directory; needs root to
//!   mount: fails otherwise, unless `SLUICE_SKIP_PRIVILEGED_TESTS=1`): appends are answered with
//!   `DiskFull` (NATS ack and TCP `PublishResponse` error), nothing acked is
//!   lost, the partition is not fail-stopped, appends succeed once space is
//!   freed, and a restart finds every acked record.
//! * A failed `fdatasync` (injected EIO; needs the `fault-injection` feature:
//!   `cargo test -p sluice --features fault-injection --test faults`): the
//!   partition fail-stops, publishes get `PartitionFailed`, `/metrics` and
//!   `sluice stream describe` show it, and after a restart every acked record
//!   is there and the partition takes writes again.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{runtime, NatsServer, Sluice, SluiceOptions};
use futures::StreamExt;
use shards::batch::Record;
use shards::testing::SmallTmpfs;
use shards::types::{Offset, TimestampMs};
use sluice::client::{Client, FetchStart, OffsetQuery, StreamConfig};
use sluice::protocol::ack::{Ack, AckOutcome};
use sluice::protocol::error_code::ErrorCode;

/// Longest a test waits for one ack.
const WAIT: Duration = Duration::from_secs(15);
/// Bytes of each published message value.
const VALUE_BYTES: usize = 4096;

fn client(node: &Sluice) -> Client {
    Client::connect(&node.listen.to_string()).expect("connect to sluice")
}

fn create(node: &Sluice, name: &str) {
    let mut config = StreamConfig::new(name, name);
    config.partitions = Some(1);
    client(node).create_stream(&config).expect("create stream");
}

fn value(i: u64) -> Bytes {
    let mut v = format!("{i:08}-").into_bytes();
    v.resize(VALUE_BYTES, b'x');
    Bytes::from(v)
}

/// Publishes one message with a reply inbox and waits for its ack.
async fn publish(nats: &async_nats::Client, subject: &str, payload: Bytes) -> AckOutcome {
    let inbox = nats.new_inbox();
    let mut sub = nats.subscribe(inbox.clone()).await.expect("subscribe");
    nats.publish_with_reply(subject.to_string(), inbox, payload)
        .await
        .expect("publish");
    match tokio::time::timeout(WAIT, sub.next()).await {
        Ok(Some(message)) if message.status.is_none() => {
            Ack::decode(&message.payload).expect("ack decodes").outcome
        }
        other => panic!("no ack for a publish to {subject}: {other:?}"),
    }
}

/// Every stored record of partition 0 as offset → value (bounded wait).
fn stored(node: &Sluice, stream: &str) -> BTreeMap<Offset, Bytes> {
    let mut client = client(node);
    let hw = client
        .list_offsets(stream, 0, OffsetQuery::Latest)
        .expect("offsets")
        .offset;
    let mut out = BTreeMap::new();
    let mut next = FetchStart::Earliest;
    let deadline = Instant::now() + WAIT;
    while (out.len() as u64) < hw.0 && Instant::now() < deadline {
        let result = client
            .fetch(stream, 0, next, 1 << 20, Duration::from_millis(200))
            .expect("fetch");
        for record in result.records {
            out.insert(record.offset, record.value.expect("value"));
        }
        next = FetchStart::Offset(result.next_offset);
    }
    out
}

/// Every acked record is stored at its offset, and offsets are dense.
fn assert_acked_are_stored(node: &Sluice, stream: &str, acked: &[(Offset, Bytes)]) {
    let stored = stored(node, stream);
    let offsets: Vec<u64> = stored.keys().map(|o| o.0).collect();
    let dense: Vec<u64> = (0..stored.len() as u64).collect();
    assert_eq!(offsets, dense, "offsets must stay dense");
    for (offset, value) in acked {
        assert_eq!(
            stored.get(offset),
            Some(value),
            "acked record at {offset} lost or changed; log:\n{}",
            node.log()
        );
    }
}

fn tcp_record(i: u64) -> Record {
    Record {
        timestamp: TimestampMs::now(),
        key: None,
        value: Some(value(i)),
        headers: Vec::new(),
    }
}

/// Writes 1 MiB chunks into `path` until the filesystem is full.
fn fill(path: &Path) -> u64 {
    use std::io::Write;
    let mut file = std::fs::File::create(path).expect("filler");
    let chunk = vec![0x5au8; 1 << 20];
    let mut written = 0u64;
    for _ in 0..4096 {
        match file.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    let _ = file.sync_all();
    written
}

#[test]
fn a_full_disk_answers_disk_full_loses_nothing_acked_and_resumes() {
    let tmpfs = match SmallTmpfs::mount(48) {
        Ok(tmpfs) => tmpfs,
        Err(reason) => {
            shards::testing::privileged_unavailable("a_full_disk_answers_disk_full", &reason);
            return;
        }
    };
    let nats_server = NatsServer::start();
    let options = SluiceOptions {
        data_dir: Some(tmpfs.dir().join("data")),
        // Small segments so the full disk is met at a roll too.
        config_extra: "segment_bytes = 1048576".into(),
        env: Vec::new(),
    };
    let mut node = Sluice::start_with(&nats_server.url, 1, options);
    create(&node, "full");
    let filler = tmpfs.dir().join("filler");
    let rt = runtime();
    let (mut acked, rejected) = rt.block_on(async {
        let nats = async_nats::connect(&nats_server.url).await.expect("nats");
        let mut acked = Vec::new();
        for i in 0..20u64 {
            match publish(&nats, "full", value(i)).await {
                AckOutcome::Committed { offset, .. } => acked.push((offset, value(i))),
                AckOutcome::Failed { code, message } => panic!("{code:?}: {message}"),
            }
        }
        assert!(fill(&filler) > 0, "the filler wrote nothing");
        // The active segment's preallocation still holds a little; then the
        // disk is full: publish until DiskFull answers come back.
        let mut rejected = 0;
        let mut i = 20u64;
        while rejected < 5 && i < 2_000 {
            match publish(&nats, "full", value(i)).await {
                AckOutcome::Committed { offset, .. } => acked.push((offset, value(i))),
                AckOutcome::Failed { code, message } => {
                    assert_eq!(code, ErrorCode::DiskFull, "{message}");
                    rejected += 1;
                }
            }
            i += 1;
        }
        (acked, rejected)
    });
    assert_eq!(rejected, 5, "the disk never filled; log:\n{}", node.log());
    eprintln!(
        "full disk: {} publishes acked, then {rejected} answered DiskFull",
        acked.len()
    );
    // The TCP protocol answers the same way.
    let err = client(&node)
        .publish("full", 0, &[tcp_record(9_999)])
        .expect_err("the disk is full");
    assert_eq!(err.code(), Some(ErrorCode::DiskFull), "{err}");
    assert_eq!(
        node.metric("sluice_failed_partitions"),
        0,
        "ENOSPC is not a fail-stop"
    );
    assert!(node.metric("sluice_append_errors_total") >= 6);
    assert_acked_are_stored(&node, "full", &acked);

    std::fs::remove_file(&filler).expect("free space");
    rt.block_on(async {
        let nats = async_nats::connect(&nats_server.url).await.expect("nats");
        for i in 5_000..5_040u64 {
            match publish(&nats, "full", value(i)).await {
                AckOutcome::Committed { offset, .. } => acked.push((offset, value(i))),
                AckOutcome::Failed { code, message } => {
                    panic!("after freeing space: {code:?}: {message}")
                }
            }
        }
    });
    let (base, last) = client(&node)
        .publish("full", 0, &[tcp_record(6_000)])
        .expect("TCP publish after freeing space");
    assert_eq!(base, last);
    acked.push((base, value(6_000)));

    node.restart();
    assert_acked_are_stored(&node, "full", &acked);
    let hw = client(&node)
        .list_offsets("full", 0, OffsetQuery::Latest)
        .expect("offsets")
        .offset;
    assert_eq!(
        hw.0,
        acked.len() as u64,
        "nothing but acked records was stored"
    );
    node.stop();
}

#[cfg(feature = "fault-injection")]
#[test]
fn an_fdatasync_eio_fail_stops_the_partition_and_shows_in_metrics_and_describe() {
    use shards::io::fault::FAULTS_FILE_ENV;

    let nats_server = NatsServer::start();
    let rules_dir = tempfile::tempdir().expect("tempdir");
    let rules = rules_dir.path().join("faults");
    let options = SluiceOptions {
        env: vec![(FAULTS_FILE_ENV.into(), rules.display().to_string())],
        ..SluiceOptions::default()
    };
    let mut node = Sluice::start_with(&nats_server.url, 1, options);
    create(&node, "eio");
    create(&node, "healthy");
    let rt = runtime();
    let acked = rt.block_on(async {
        let nats = async_nats::connect(&nats_server.url).await.expect("nats");
        let mut acked = Vec::new();
        for i in 0..20u64 {
            match publish(&nats, "eio", value(i)).await {
                AckOutcome::Committed { offset, .. } => acked.push((offset, value(i))),
                AckOutcome::Failed { code, message } => panic!("{code:?}: {message}"),
            }
        }
        // Only the "eio" partition's files: <data>/partitions/eio-<id>/0/.
        std::fs::write(&rules, "fdatasync EIO /partitions/eio-\n").expect("arm the fault");
        for i in 20..25u64 {
            match publish(&nats, "eio", value(i)).await {
                AckOutcome::Failed { code, .. } => assert_eq!(code, ErrorCode::PartitionFailed),
                AckOutcome::Committed { offset, .. } => {
                    panic!("acked {offset} although its fdatasync failed")
                }
            }
        }
        match publish(&nats, "healthy", value(0)).await {
            AckOutcome::Committed { offset, .. } => assert_eq!(offset, Offset(0)),
            AckOutcome::Failed { code, message } => {
                panic!("other partitions go on: {code:?} {message}")
            }
        }
        acked
    });
    let err = client(&node)
        .publish("eio", 0, &[tcp_record(99)])
        .expect_err("fail-stopped");
    assert_eq!(err.code(), Some(ErrorCode::PartitionFailed), "{err}");
    assert_eq!(node.metric("sluice_failed_partitions"), 1);
    let describe = sluice_cli(&node, &["stream", "describe", "eio"]);
    assert!(
        describe.contains("failed: fdatasync EIO at 20"),
        "describe must show the fail-stop:\n{describe}"
    );
    // Committed records stay readable while the partition is stopped.
    assert_acked_are_stored(&node, "eio", &acked);

    std::fs::remove_file(&rules).expect("disarm");
    node.restart();
    assert_eq!(node.metric("sluice_failed_partitions"), 0);
    assert_acked_are_stored(&node, "eio", &acked);
    let describe = sluice_cli(&node, &["stream", "describe", "eio"]);
    assert!(!describe.contains("failed:"), "{describe}");
    let (base, _) = client(&node)
        .publish("eio", 0, &[tcp_record(100)])
        .expect("the reopened partition takes writes");
    assert!(base >= Offset(20));
    node.stop();
}

/// Runs the `sluice` CLI against `node`; its standard output.
#[cfg(feature = "fault-injection")]
fn sluice_cli(node: &Sluice, args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .arg("--server")
        .arg(node.listen.to_string())
        .output()
        .expect("run sluice");
    assert!(
        output.status.success(),
        "sluice {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
