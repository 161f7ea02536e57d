//! Partition replication end to end, with three real `sluice` processes:
//! ack-`all` publishes land byte-identical at identical offsets on every
//! replica; a killed follower leaves the ISR after the lag time and writes
//! go on with min ISR 2, are refused with NotEnoughReplicas once the ISR is
//! too small, and resume when a restarted follower catches up and rejoins;
//! a leader paused with SIGSTOP never gets an ack-`all` write acked after
//! it resumes, and its stale tail is truncated away.

mod common;
#[path = "common/replicas.rs"]
mod replicas;

use std::process::Command;
use std::time::Instant;

use common::NatsServer;
use replicas::{
    assert_replicas_identical, committed_records, leader_of, partition_state, publish, raw_publish,
    records, start_three, start_three_with, wait_for, wait_for_isr, RawPublish, ReplicaNode,
    Timing,
};
use shards::types::Offset;
use sluice::client::ClientError;
use sluice::model::NodeId;
use sluice::protocol::envelope::AckPolicy;
use sluice::protocol::error_code::ErrorCode;

/// Followers leave the ISR after 1.5 s without catching up; nodes are
/// declared dead by the controller only much later, so ISR changes in the
/// first test are the leader's own.
const ISR_TIMING: Timing = Timing {
    replica_lag_time_max_ms: 1_500,
    node_timeout_ms: 60_000,
};
/// Fast node failure detection, for the leader failover test.
const FAILOVER_TIMING: Timing = Timing {
    replica_lag_time_max_ms: 1_500,
    node_timeout_ms: 1_500,
};

fn create_stream(node: &ReplicaNode, name: &str, min_insync_replicas: u32) {
    create_stream_with(node, name, min_insync_replicas, &[]);
}

fn create_stream_with(node: &ReplicaNode, name: &str, min_insync_replicas: u32, extra: &[&str]) {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["stream", "create", name, "--subject", name])
        .args(["--replication-factor", "3"])
        .args(["--min-insync-replicas", &min_insync_replicas.to_string()])
        .args(extra)
        .args(["--server", &node.listen.to_string()])
        .output()
        .expect("run sluice");
    assert!(
        output.status.success(),
        "stream create failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn by_id(nodes: &mut [ReplicaNode], id: u64) -> &mut ReplicaNode {
    nodes.iter_mut().find(|n| n.id == id).expect("node")
}

fn server_code(result: &Result<(Offset, Offset), ClientError>) -> Option<ErrorCode> {
    match result {
        Err(ClientError::Server { code, .. }) => Some(*code),
        _ => None,
    }
}

/// Two streams, RF 3: `orders` with min ISR 2 and `strict` with min ISR 3.
/// One follower of both (a node leading neither) is killed: `orders` goes
/// on with ISR 2, `strict` refuses ack-all with NotEnoughReplicas (ack
/// leader still works); after the restart both ISRs are whole again.
/// (Killing two of three nodes would take the metadata quorum with them,
/// so "ISR too small" is shown with min ISR 3.)
#[test]
fn acks_all_replicate_identically_and_the_isr_follows_failures() {
    let nats = NatsServer::start();
    let mut nodes = start_three(&nats.url, ISR_TIMING);
    create_stream(&nodes[0], "orders", 2);
    create_stream(&nodes[0], "strict", 3);
    let leader = leader_of(&nodes[0], "orders");
    let strict_leader = leader_of(&nodes[0], "strict");
    let victim = (1..=3)
        .find(|n| *n != leader && *n != strict_leader)
        .expect("a node leading neither stream");
    let survivor = (1..=3)
        .find(|n| *n != leader && *n != victim)
        .expect("the other follower");
    wait_for_isr(&nodes[0], "orders", 0, &[1, 2, 3]);
    wait_for_isr(&nodes[0], "strict", 0, &[1, 2, 3]);

    // 1. RF 3, ack all: every acked batch is on every replica, same offsets,
    //    same bytes.
    let mut end = 0u64;
    for round in 0..20 {
        let batch = records(&format!("r{round}"), 5);
        let (base, last) = publish(by_id(&mut nodes, leader), "orders", &batch, AckPolicy::All)
            .expect("ack all publish");
        assert_eq!((base.0, last.0), (end, end + 4));
        end += 5;
    }
    let all: Vec<&ReplicaNode> = nodes.iter().collect();
    assert_replicas_identical(&all, "orders", Offset(end));
    let state = partition_state(by_id(&mut nodes, leader), "orders", 0).expect("status");
    assert_eq!(state.replica_status.len(), 3, "{state:?}");
    assert!(state.replica_status.iter().all(|r| r.in_sync), "{state:?}");

    // 2. A follower killed: it leaves the ISR after the lag time, and
    //    ack-all writes go on with min ISR 2.
    by_id(&mut nodes, victim).kill();
    let killed_at = Instant::now();
    let batch = records("one-down", 5);
    publish(by_id(&mut nodes, leader), "orders", &batch, AckPolicy::All)
        .expect("ack all with one follower down");
    end += 5;
    wait_for_isr(by_id(&mut nodes, leader), "orders", 0, &[leader, survivor]);
    let shrink = killed_at.elapsed();
    assert!(
        shrink.as_millis() >= u128::from(ISR_TIMING.replica_lag_time_max_ms) / 2,
        "shrunk after {shrink:?}, before the lag time"
    );
    println!("ISR shrink after a follower kill: {shrink:?}");
    for round in 0..5 {
        publish(
            by_id(&mut nodes, leader),
            "orders",
            &records(&format!("isr2-{round}"), 3),
            AckPolicy::All,
        )
        .expect("ack all with ISR 2");
        end += 3;
    }

    // 3. `strict` (min ISR 3) with an ISR of 2: ack-all is refused and not
    //    stored; ack-leader is still taken.
    let strict_rest: Vec<u64> = (1..=3).filter(|n| *n != victim).collect();
    wait_for_isr(by_id(&mut nodes, strict_leader), "strict", 0, &strict_rest);
    let refused = publish(
        by_id(&mut nodes, strict_leader),
        "strict",
        &records("refused", 2),
        AckPolicy::All,
    );
    assert_eq!(
        server_code(&refused),
        Some(ErrorCode::NotEnoughReplicas),
        "{refused:?}"
    );
    let (base, _) = publish(
        by_id(&mut nodes, strict_leader),
        "strict",
        &records("leader-only", 2),
        AckPolicy::Leader,
    )
    .expect("ack leader below min ISR");
    assert_eq!(base, Offset(0), "the refused batch was not stored");

    // 4. The follower restarts: it catches up and rejoins both ISRs;
    //    ack-all works again everywhere and its copy is identical.
    let rejoin_started = Instant::now();
    by_id(&mut nodes, victim).restart();
    wait_for_isr(by_id(&mut nodes, leader), "orders", 0, &[1, 2, 3]);
    wait_for_isr(by_id(&mut nodes, strict_leader), "strict", 0, &[1, 2, 3]);
    println!(
        "restarted follower back in the ISR after {:?}",
        rejoin_started.elapsed()
    );
    publish(
        by_id(&mut nodes, strict_leader),
        "strict",
        &records("whole-again", 1),
        AckPolicy::All,
    )
    .expect("ack all on strict after the rejoin");
    publish(
        by_id(&mut nodes, leader),
        "orders",
        &records("rejoined", 4),
        AckPolicy::All,
    )
    .expect("ack all after the rejoin");
    end += 4;
    let all: Vec<&ReplicaNode> = nodes.iter().collect();
    let records = assert_replicas_identical(&all, "orders", Offset(end));
    assert!(records
        .iter()
        .any(|r| r.value.as_deref() == Some(&b"one-down-4"[..])));
    assert_replicas_identical(&all, "strict", Offset(3));
}

/// SIGSTOP the partition leader: the controller moves leadership (new
/// epoch) and the new leader takes ack-all writes. A publish sent to the
/// paused leader (buffered in its socket) is handled when it resumes,
/// before its metadata catches up: it may be written locally, but it is
/// never acked — its followers fetch from the new leader, so its high
/// watermark cannot move — and its tail is truncated when it learns it is
/// a follower.
#[test]
fn a_paused_leader_never_acks_after_resuming_and_its_tail_is_truncated() {
    let nats = NatsServer::start();
    let mut nodes = start_three(&nats.url, FAILOVER_TIMING);
    create_stream(&nodes[0], "payments", 2);
    let old_leader = leader_of(&nodes[0], "payments");
    wait_for_isr(&nodes[0], "payments", 0, &[1, 2, 3]);
    let mut end = 0u64;
    for round in 0..5 {
        publish(
            by_id(&mut nodes, old_leader),
            "payments",
            &records(&format!("before-{round}"), 2),
            AckPolicy::All,
        )
        .expect("ack all");
        end += 2;
    }

    by_id(&mut nodes, old_leader).pause();
    let observer = nodes.iter().find(|n| n.id != old_leader).expect("node").id;
    let new_leader = wait_for("a new leader", || {
        let state = partition_state(by_id(&mut nodes, observer), "payments", 0)?;
        state.leader.map(NodeId::get).filter(|l| *l != old_leader)
    });
    publish(
        by_id(&mut nodes, new_leader),
        "payments",
        &records("new-leader", 3),
        AckPolicy::All,
    )
    .expect("ack all on the new leader");
    end += 3;

    let stale_addr = by_id(&mut nodes, old_leader).listen;
    let stale = std::thread::spawn(move || {
        raw_publish(stale_addr, "payments", &records("stale", 2), AckPolicy::All)
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    by_id(&mut nodes, old_leader).resume();
    let answer = stale.join().expect("stale publish thread");
    assert!(
        matches!(
            answer,
            RawPublish::Refused(
                ErrorCode::NotLeader | ErrorCode::Timeout | ErrorCode::NotEnoughReplicas
            )
        ),
        "the stale leader answered {answer:?}"
    );
    println!("stale leader answered {answer:?}");

    // Everyone converges on the new leader's log: the stale batch is gone.
    let all: Vec<&ReplicaNode> = nodes.iter().collect();
    let records = assert_replicas_identical(&all, "payments", Offset(end));
    assert!(records
        .iter()
        .all(|r| !r.value.as_deref().unwrap_or_default().starts_with(b"stale")));
    // Whether the stale batch reached the old leader's log before its
    // metadata caught up (both orders are safe; the log says which ran).
    println!(
        "old leader truncated a stale tail: {}",
        by_id(&mut nodes, old_leader)
            .log()
            .contains("truncated the divergent tail")
    );
}

/// A follower that was down while the leader's retention deleted the
/// records it needs next cannot catch up record by record (offsets are never
/// renumbered): it restarts its log empty at the leader's log start,
/// replicates from there and rejoins the ISR.
#[test]
fn a_follower_behind_the_leaders_log_start_restarts_there_and_rejoins() {
    // 64 KiB segments, retention checked every 200 ms.
    const CONFIG: &str = "segment_bytes = 65536\nmaintenance_interval_ms = 200\n";
    let nats = NatsServer::start();
    let mut nodes = start_three_with(&nats.url, ISR_TIMING, CONFIG);
    create_stream_with(&nodes[0], "short", 2, &["--retention-messages", "200"]);
    let leader = leader_of(&nodes[0], "short");
    let victim = (1..=3).find(|n| *n != leader).expect("a follower");
    wait_for_isr(&nodes[0], "short", 0, &[1, 2, 3]);
    // 20 records of 1 KiB per batch: three batches per segment.
    let batch = |round: usize| {
        let mut batch = records(&format!("r{round}"), 20);
        for record in &mut batch {
            let mut value = record.value.take().expect("value").to_vec();
            value.resize(1024, b'.');
            record.value = Some(value.into());
        }
        batch
    };
    let mut end = 0u64;
    let mut round = 0;
    let mut publish_rounds = |nodes: &mut [ReplicaNode], count: usize| {
        for _ in 0..count {
            let (base, _) = publish(by_id(nodes, leader), "short", &batch(round), AckPolicy::All)
                .expect("ack all publish");
            assert_eq!(base, Offset(end));
            end += 20;
            round += 1;
        }
        end
    };
    publish_rounds(&mut nodes, 5);

    by_id(&mut nodes, victim).kill();
    let end_while_down = publish_rounds(&mut nodes, 40);
    let leader_start = wait_for("leader retention past the follower's end", || {
        let state = partition_state(by_id(&mut nodes, leader), "short", 0)?;
        state.log_start_offset.filter(|start| *start > 100)
    });
    assert!(
        leader_start <= end_while_down - 200,
        "retention keeps 200 records"
    );

    by_id(&mut nodes, victim).restart();
    wait_for_isr(by_id(&mut nodes, leader), "short", 0, &[1, 2, 3]);
    let end = publish_rounds(&mut nodes, 1);
    let (leader_hw, expected) = committed_records(by_id(&mut nodes, leader), "short");
    assert_eq!(leader_hw, Offset(end));
    let follower = by_id(&mut nodes, victim);
    let (hw, restarted) = wait_for("the follower to commit the last batch", || {
        let (hw, records) = committed_records(follower, "short");
        (hw == Offset(end)).then_some((hw, records))
    });
    assert_eq!(hw, Offset(end));
    let first = restarted.first().expect("records on the follower").offset;
    assert!(
        first.0 >= leader_start,
        "starts at the leader's log start or later: {first:?}"
    );
    // Dense from its start, and the same records as the leader's.
    for (index, record) in restarted.iter().enumerate() {
        assert_eq!(record.offset, Offset(first.0 + index as u64));
    }
    let overlap: Vec<_> = expected.iter().filter(|r| r.offset >= first).collect();
    assert!(
        overlap
            .iter()
            .copied()
            .eq(restarted.iter().filter(|r| r.offset >= overlap[0].offset)),
        "the follower serves other records than the leader"
    );
    assert!(
        follower
            .log()
            .contains("restarting the local log at the leader's log start"),
        "{}",
        follower.log()
    );
}

/// A partition-addressed request sent to a node that holds no replica of
/// the partition is answered `NotLeader` naming the leader
/// (docs/protocol.md §6, step 3), not `PartitionNotFound`; a client whose
/// first server is such a node follows it (metadata refresh) and reads the
/// data from the leader.
#[test]
fn a_client_whose_first_server_holds_no_replica_reaches_the_leader() {
    let nats_server = NatsServer::start();
    let nodes = start_three(&nats_server.url, ISR_TIMING);
    const STREAM: &str = "elsewhere";
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["stream", "create", STREAM, "--subject", STREAM])
        .args(["--replication-factor", "1"])
        .args(["--server", &nodes[0].listen.to_string()])
        .output()
        .expect("run sluice");
    assert!(
        output.status.success(),
        "stream create failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let leader_id = leader_of(&nodes[0], STREAM);
    let leader = nodes.iter().find(|n| n.id == leader_id).expect("leader");
    let sent = records("routed", 5);
    publish(leader, STREAM, &sent, AckPolicy::Leader).expect("publish on the leader");

    for other in nodes.iter().filter(|n| n.id != leader_id) {
        // Each node learns the stream from the metadata at its own pace.
        wait_for("the stream in every node's metadata", || {
            let answer = raw_publish(other.listen, STREAM, &sent[..1], AckPolicy::Leader);
            (answer != RawPublish::Refused(ErrorCode::StreamNotFound)).then_some(())
        });
        // What the node itself answers: NotLeader (nothing stored).
        assert_eq!(
            raw_publish(other.listen, STREAM, &sent[..1], AckPolicy::Leader),
            RawPublish::Refused(ErrorCode::NotLeader),
            "publish at node {} (leader {leader_id})",
            other.id
        );
        // A fresh client bootstrapped on the wrong node reaches the data.
        let mut client = sluice::client::Client::connect(&other.listen.to_string())
            .expect("connect to a node without the partition");
        let fetched = client
            .fetch(
                STREAM,
                0,
                sluice::client::FetchStart::Earliest,
                1 << 20,
                std::time::Duration::ZERO,
            )
            .unwrap_or_else(|e| panic!("fetch through node {}: {e}", other.id));
        let values: Vec<_> = fetched.records.iter().map(|r| r.value.clone()).collect();
        let expected: Vec<_> = sent.iter().map(|r| r.value.clone()).collect();
        assert_eq!(values, expected, "records read through node {}", other.id);
    }
}
