//! Cluster acceptance tests (issue #5): three `sluice serve` processes on
//! their own data dirs around one nats-server, an RF 3 stream with min ISR
//! 2 and ack policy `all`, a continuous publisher, faults, and a checker
//! that compares every ack with every replica's log (lost, duplicate,
//! inconsistent-offset, non-monotonic: all must be 0).
//!
//! Scenarios: partition leader SIGKILLed; follower SIGKILLed and restarted;
//! metadata (raft) leader SIGKILLed; a node isolated in a network namespace
//! with `iptables -j DROP`; a leader paused with SIGSTOP and resumed.
//!
//! Soak mode: `SLUICE_SOAK_CYCLES=N` faults per scenario and
//! `SLUICE_SOAK_SECS=S` seconds of publishing between them (README,
//! "Cluster soak test").

mod cluster_support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use cluster_support::checker::{Attempt, History, Outcome, Report};
use cluster_support::netns::NetLab;
use cluster_support::publisher::Publisher;
use cluster_support::{figure, serial, summarize, Cluster, Soak, REACT_TIMEOUT};
use shards::batch::Record;
use shards::types::TimestampMs;
use sluice::client::{Client, ClientConfig, ClientError};
use sluice::model::NodeId;
use sluice::protocol::envelope::AckPolicy;

const STREAM: &str = "chaos";
/// Acks that prove publishing makes progress in a phase.
const ACKS_PER_PHASE: usize = 100;
/// Direct publishes sent to the isolated node, side by side.
const ISOLATION_PROBES: usize = 3;

/// Publishes for at least the soak phase and until `ACKS_PER_PHASE` more
/// acks arrived.
fn publish_phase(scenario: &str, cluster: &Cluster, publisher: &Publisher, soak: Soak, what: &str) {
    let started = Instant::now();
    assert!(
        publisher.wait_for_more_acks(ACKS_PER_PHASE, REACT_TIMEOUT),
        "[{scenario}] no {ACKS_PER_PHASE} acks {what} within {REACT_TIMEOUT:?} (acked {} of {} attempts)\n{}",
        publisher.acked(),
        publisher.attempts(),
        cluster.logs()
    );
    if let Some(rest) = soak.phase.checked_sub(started.elapsed()) {
        std::thread::sleep(rest);
    }
}

fn full_isr(p: &sluice::client::PartitionMetadata) -> bool {
    p.leader.is_some() && p.isr.len() == cluster_support::REPLICATION_FACTOR as usize
}

fn finish(scenario: &str, cycles: usize, report: &Report, times: &[(&str, Vec<Duration>)]) {
    figure(
        scenario,
        format!(
            "cycles={cycles} acked={} lost={} duplicate={} inconsistent_offset={} non_monotonic={}",
            report.acked,
            report.lost,
            report.duplicate,
            report.inconsistent_offset,
            report.non_monotonic
        ),
    );
    for (name, values) in times {
        figure(scenario, format!("{name}: {}", summarize(values)));
    }
    assert!(
        report.is_clean(),
        "[{scenario}] checker found faults:\n{report}"
    );
}

/// One direct TCP publish (ack policy all) to `addr`, as an attempt for the
/// checker.
fn probe_publish(addr: String, partition: u32, payload: String) -> Attempt {
    let started = Instant::now();
    let record = Record {
        timestamp: TimestampMs(0),
        key: None,
        value: Some(Bytes::from(payload.clone())),
        headers: Vec::new(),
    };
    let config = ClientConfig {
        connect_timeout: Duration::from_secs(1),
        io_timeout: Duration::from_secs(10),
    };
    let result = Client::connect_with(&addr, config)
        .and_then(|mut c| c.publish_with_policy(STREAM, partition, &[record], AckPolicy::All));
    let outcome = match result {
        Ok((offset, _)) => Outcome::Acked { offset: offset.0 },
        Err(ClientError::Server { code, message, .. })
            if code != sluice::protocol::error_code::ErrorCode::Timeout =>
        {
            Outcome::Refused {
                code: format!("{code:?}: {message}"),
            }
        }
        Err(error) => Outcome::Unknown {
            reason: error.to_string(),
        },
    };
    Attempt {
        payload: payload.into_bytes(),
        sent: Duration::ZERO,
        answered: started.elapsed(),
        outcome,
        answered_by: None,
        leader_epoch: None,
    }
}

/// (a) SIGKILL the partition leader during continuous acked publishing: a
/// new leader takes over, publishing resumes; the killed node restarts,
/// truncates, catches up and rejoins the ISR; every acked message is on
/// every replica exactly once at its acked offset.
#[test]
fn partition_leader_sigkill_fails_over_without_losing_acked_messages() {
    const SCENARIO: &str = "leader-kill";
    let _serial = serial();
    let soak = Soak::from_env();
    let mut cluster = Cluster::start();
    // Through node 2: the partition leader is then not the metadata leader
    // (node 1, the bootstrap node), so this measures a partition failover
    // alone; the SIGSTOP scenario hits both leaders at once.
    cluster.create_stream(STREAM, STREAM, 1, 2);
    let publisher = Publisher::start(&cluster.nats.url, STREAM, "leader-kill");
    let live = cluster.live_consumer(STREAM, 0);
    let (mut elections, mut failovers, mut rejoins) = (Vec::new(), Vec::new(), Vec::new());
    for cycle in 0..soak.cycles {
        publish_phase(SCENARIO, &cluster, &publisher, soak, "before the kill");
        let before = cluster.wait_partition(STREAM, 0, "a full ISR", full_isr);
        let old = before.leader.expect("leader");
        let metadata_leader = cluster.metadata_leader();
        let killed_at = Instant::now();
        cluster.node_mut(old.get()).kill();
        let after = cluster.wait_partition(STREAM, 0, "a new leader", |p| {
            p.leader.is_some_and(|l| l != old) && p.leader_epoch > before.leader_epoch
        });
        elections.push(killed_at.elapsed());
        cluster.wait_partition(STREAM, 0, "the dead leader out of the ISR", |p| {
            !p.isr.contains(&old)
        });
        let failover = publisher.wait_for_ack_sent_after(killed_at, REACT_TIMEOUT);
        let failover = failover.unwrap_or_else(|| {
            panic!(
                "[{SCENARIO}] no ack after killing leader {old}\n{}",
                cluster.logs()
            )
        });
        failovers.push(failover);
        figure(
            SCENARIO,
            format!(
                "cycle {cycle}: killed leader {old} (epoch {:?}; metadata leader {metadata_leader:?}) → leader {:?} (epoch {:?}) in {:?}, first ack after the kill in {failover:?}",
                before.leader_epoch,
                after.leader,
                after.leader_epoch,
                elections.last().expect("election")
            ),
        );
        publish_phase(SCENARIO, &cluster, &publisher, soak, "after the failover");
        let restarted_at = Instant::now();
        cluster.node_mut(old.get()).spawn();
        cluster.node_mut(old.get()).wait_healthy();
        cluster.wait_partition(STREAM, 0, "the restarted node back in the ISR", |p| {
            p.isr.contains(&old) && full_isr(p)
        });
        rejoins.push(restarted_at.elapsed());
    }
    publish_phase(SCENARIO, &cluster, &publisher, soak, "at the end");
    let history = publisher.stop();
    let report = cluster.settle_and_check(STREAM, 0, &history, live.stop());
    finish(
        SCENARIO,
        soak.cycles,
        &report,
        &[
            ("election (kill → new leader in metadata)", elections),
            ("failover (kill → first ack of a later publish)", failovers),
            ("rejoin (restart → back in the ISR)", rejoins),
        ],
    );
}

/// (b) A killed follower leaves the ISR (publishing goes on with min ISR
/// 2), restarts, truncates, catches up and rejoins the ISR.
#[test]
fn killed_follower_restarts_catches_up_and_rejoins_the_isr() {
    const SCENARIO: &str = "follower-kill";
    let _serial = serial();
    let soak = Soak::from_env();
    let mut cluster = Cluster::start();
    cluster.create_stream(STREAM, STREAM, 1, 1);
    let publisher = Publisher::start(&cluster.nats.url, STREAM, "follower-kill");
    let live = cluster.live_consumer(STREAM, 0);
    let (mut shrinks, mut stalls, mut rejoins) = (Vec::new(), Vec::new(), Vec::new());
    for cycle in 0..soak.cycles {
        publish_phase(SCENARIO, &cluster, &publisher, soak, "before the kill");
        let before = cluster.wait_partition(STREAM, 0, "a full ISR", full_isr);
        let leader = before.leader.expect("leader");
        let follower = *before
            .replicas
            .iter()
            .find(|&&r| r != leader)
            .expect("a follower");
        let killed_at = Instant::now();
        cluster.node_mut(follower.get()).kill();
        let shrunk = cluster.wait_partition(STREAM, 0, "the dead follower out of the ISR", |p| {
            !p.isr.contains(&follower) && p.leader.is_some()
        });
        shrinks.push(killed_at.elapsed());
        let stall = publisher.wait_for_ack_sent_after(killed_at, REACT_TIMEOUT);
        let stall = stall.unwrap_or_else(|| {
            panic!(
                "[{SCENARIO}] no ack after killing follower {follower}\n{}",
                cluster.logs()
            )
        });
        stalls.push(stall);
        figure(
            SCENARIO,
            format!(
                "cycle {cycle}: killed follower {follower}; ISR {:?} after {:?}; first ack after the kill in {stall:?}",
                shrunk.isr,
                shrinks.last().expect("shrink")
            ),
        );
        // The follower falls behind while it is down.
        publish_phase(
            SCENARIO,
            &cluster,
            &publisher,
            soak,
            "with the follower down",
        );
        let restarted_at = Instant::now();
        cluster.node_mut(follower.get()).spawn();
        cluster.node_mut(follower.get()).wait_healthy();
        let rejoined = cluster.wait_partition(STREAM, 0, "the follower back in the ISR", |p| {
            p.isr.contains(&follower) && full_isr(p)
        });
        rejoins.push(restarted_at.elapsed());
        figure(
            SCENARIO,
            format!(
                "cycle {cycle}: follower {follower} back in the ISR {:?} after {:?} (leader {:?}, hw {:?})",
                rejoined.isr,
                rejoins.last().expect("rejoin"),
                rejoined.leader,
                rejoined.high_watermark
            ),
        );
    }
    publish_phase(SCENARIO, &cluster, &publisher, soak, "at the end");
    let history = publisher.stop();
    let (ok, describe, _) = cluster.cli(1, &["stream", "describe", STREAM]);
    assert!(ok, "stream describe failed");
    println!("{describe}");
    let report = cluster.settle_and_check(STREAM, 0, &history, live.stop());
    finish(
        SCENARIO,
        soak.cycles,
        &report,
        &[
            ("ISR shrink (kill → out of the ISR)", shrinks),
            ("ack stall (kill → first ack of a later publish)", stalls),
            ("rejoin (restart → back in the ISR)", rejoins),
        ],
    );
}

/// (c) The metadata (raft) leader is SIGKILLed: create, describe and delete
/// keep working through the surviving nodes, and the restarted node
/// catches up with what changed while it was down.
#[test]
fn metadata_leader_sigkill_keeps_metadata_operations_working() {
    const SCENARIO: &str = "metadata-leader-kill";
    let _serial = serial();
    let soak = Soak::from_env();
    let mut cluster = Cluster::start();
    cluster.create_stream("before-0", "before.0", 1, 1);
    let mut recoveries = Vec::new();
    for cycle in 0..soak.cycles {
        let leader = cluster_support::poll(REACT_TIMEOUT, || cluster.metadata_leader());
        let leader = leader.unwrap_or_else(|| {
            panic!(
                "[{SCENARIO}] `sluice cluster status --json` never named a metadata leader\n{}",
                cluster.logs()
            )
        });
        let survivor = (1..=3).find(|&id| id != leader).expect("survivor");
        let killed_at = Instant::now();
        cluster.node_mut(leader).kill();
        // Create (placement computed on the new leader): retried until an
        // election has happened.
        let created = format!("during-{cycle}");
        let subject = format!("during.{cycle}");
        let ok = cluster_support::poll(REACT_TIMEOUT, || {
            let (ok, _, stderr) = cluster.cli(
                survivor,
                &[
                    "stream",
                    "create",
                    &created,
                    "--subject",
                    &subject,
                    "--replication-factor",
                    "2",
                ],
            );
            if !ok {
                eprintln!("[{SCENARIO}] create via node {survivor}: {}", stderr.trim());
            }
            ok.then_some(())
        });
        assert!(
            ok.is_some(),
            "[{SCENARIO}] no stream create succeeded after killing metadata leader {leader}\n{}",
            cluster.logs()
        );
        recoveries.push(killed_at.elapsed());
        // Describe on every surviving node (followers answer or forward).
        for id in cluster.running_ids() {
            let seen = cluster_support::poll(REACT_TIMEOUT, || {
                let (ok, stdout, _) = cluster.cli(id, &["stream", "describe", &created]);
                (ok && stdout.contains(&created)).then_some(())
            });
            assert!(
                seen.is_some(),
                "[{SCENARIO}] node {id} cannot describe {created}"
            );
        }
        // Delete the stream made before the kill, through the other survivor.
        let other = cluster
            .running_ids()
            .into_iter()
            .find(|&id| id != survivor)
            .expect("other");
        let before = format!("before-{cycle}");
        let (ok, _, stderr) = cluster.cli(other, &["stream", "delete", &before]);
        assert!(
            ok,
            "[{SCENARIO}] delete {before} via node {other}: {stderr}"
        );
        let (ok, _, _) = cluster.cli(survivor, &["stream", "describe", &before]);
        assert!(
            !ok,
            "[{SCENARIO}] {before} still described after its delete"
        );
        figure(
            SCENARIO,
            format!(
                "cycle {cycle}: killed metadata leader {leader}; first successful create after {:?}; new metadata leader {:?}",
                recoveries.last().expect("recovery"),
                cluster.metadata_leader()
            ),
        );
        // The killed node comes back and catches up with both changes, and
        // a metadata write through it works.
        cluster.node_mut(leader).spawn();
        cluster.node_mut(leader).wait_healthy();
        let caught_up = cluster_support::poll(REACT_TIMEOUT, || {
            let (has_new, _, _) = cluster.cli(leader, &["stream", "describe", &created]);
            let (has_old, _, _) = cluster.cli(leader, &["stream", "describe", &before]);
            (has_new && !has_old).then_some(())
        });
        assert!(
            caught_up.is_some(),
            "[{SCENARIO}] restarted node {leader} did not catch up\n{}",
            cluster.logs()
        );
        let next = format!("before-{}", cycle + 1);
        let next_subject = format!("before.{}", cycle + 1);
        let (ok, _, stderr) = cluster.cli(
            leader,
            &[
                "stream",
                "create",
                &next,
                "--subject",
                &next_subject,
                "--replication-factor",
                "3",
            ],
        );
        assert!(
            ok,
            "[{SCENARIO}] create through the restarted node {leader}: {stderr}"
        );
    }
    figure(SCENARIO, format!("cycles={} PASS", soak.cycles));
    figure(
        SCENARIO,
        format!(
            "metadata recovery (kill → first successful create): {}",
            summarize(&recoveries)
        ),
    );
}

/// (d) The partition leader is isolated in its own network namespace with
/// `iptables -j DROP`: it leaves the ISR, a new leader takes over, it
/// cannot ack writes on its own, and it rejoins after the network heals.
#[test]
fn isolated_node_leaves_the_isr_acks_nothing_alone_and_rejoins_after_healing() {
    const SCENARIO: &str = "network-isolation";
    const ISOLATED: u64 = 3;
    let isolated_node = NodeId::new(ISOLATED).expect("a node id");
    let _serial = serial();
    if let Some(reason) = NetLab::unavailable() {
        shards::testing::privileged_unavailable(SCENARIO, &reason);
        return;
    }
    let soak = Soak::from_env();
    let lab = NetLab::create().unwrap_or_else(|e| panic!("[{SCENARIO}] namespace set-up: {e}"));
    let mut cluster = Cluster::start_with_lab(lab, ISOLATED);
    // Asked through node 3, with three partitions spread over the nodes:
    // node 3 leads one of them. Leadership does not move back after the
    // first cycle, so later soak cycles isolate a follower of it instead.
    cluster.create_stream(STREAM, STREAM, 3, ISOLATED);
    let partition = (0..3)
        .find(|&p| cluster.partition(STREAM, p).and_then(|m| m.leader) == Some(isolated_node))
        .unwrap_or_else(|| {
            panic!("[{SCENARIO}] placement gave node {ISOLATED} no partition to lead")
        });
    let subject = if partition == 0 {
        STREAM.to_string()
    } else {
        format!("{STREAM}.{partition}")
    };
    let publisher = Publisher::start(&cluster.nats.url, &subject, "isolation");
    let live = cluster.live_consumer(STREAM, partition);
    let mut probes = History::default();
    let (mut leaves, mut failovers, mut rejoins) = (Vec::new(), Vec::new(), Vec::new());
    for cycle in 0..soak.cycles {
        publish_phase(SCENARIO, &cluster, &publisher, soak, "before the isolation");
        let before = cluster.wait_partition(STREAM, partition, "a full ISR", full_isr);
        cluster.lab.as_ref().expect("lab").isolate();
        // From the moment the DROP rules are in place.
        let isolated_at = Instant::now();
        let after = cluster.wait_partition_from(
            STREAM,
            partition,
            &[ISOLATED],
            "the isolated node out of the ISR",
            |p| !p.isr.contains(&isolated_node) && p.leader.is_some_and(|l| l != isolated_node),
        );
        leaves.push(isolated_at.elapsed());
        let failover = publisher.wait_for_ack_sent_after(isolated_at, REACT_TIMEOUT);
        let failover = failover.unwrap_or_else(|| {
            panic!(
                "[{SCENARIO}] no ack after isolating node {ISOLATED}\n{}",
                cluster.logs()
            )
        });
        failovers.push(failover);
        // Writes sent straight to the isolated node (from inside its
        // namespace, side by side) must not be acked: it cannot reach its
        // ISR.
        let was_leader = before.leader == Some(isolated_node);
        let addr = cluster.node(ISOLATED).listen.to_string();
        let lab = cluster.lab.as_ref().expect("lab");
        let attempts: Vec<Attempt> = std::thread::scope(|scope| {
            let probes: Vec<_> = (0..ISOLATION_PROBES)
                .map(|i| {
                    let (addr, payload) = (addr.clone(), format!("isolation-probe-{cycle}-{i}"));
                    scope.spawn(move || {
                        lab.run_inside(move || probe_publish(addr, partition, payload))
                    })
                })
                .collect();
            probes
                .into_iter()
                .map(|p| p.join().expect("probe thread"))
                .collect()
        });
        for attempt in attempts {
            assert!(
                !matches!(attempt.outcome, Outcome::Acked { .. }),
                "[{SCENARIO}] the isolated node acked a write on its own: {attempt:?}"
            );
            figure(
                SCENARIO,
                format!(
                    "cycle {cycle}: probe to the isolated node → {:?}",
                    attempt.outcome
                ),
            );
            probes.attempts.push(attempt);
        }
        figure(
            SCENARIO,
            format!(
                "cycle {cycle}: isolated node {ISOLATED} (leader: {was_leader}); ISR {:?}, leader {:?} after {:?}; first ack after in {failover:?}",
                after.isr,
                after.leader,
                leaves.last().expect("leave")
            ),
        );
        publish_phase(SCENARIO, &cluster, &publisher, soak, "during the isolation");
        let healed_at = Instant::now();
        cluster.lab.as_ref().expect("lab").heal();
        cluster.wait_partition(STREAM, partition, "the healed node back in the ISR", |p| {
            p.isr.contains(&isolated_node) && full_isr(p)
        });
        rejoins.push(healed_at.elapsed());
    }
    publish_phase(SCENARIO, &cluster, &publisher, soak, "at the end");
    let mut history = publisher.stop();
    history.merge(probes);
    let report = cluster.settle_and_check(STREAM, partition, &history, live.stop());
    finish(
        SCENARIO,
        soak.cycles,
        &report,
        &[
            ("ISR leave (isolate → out of the ISR, new leader)", leaves),
            (
                "failover (isolate → first ack of a later publish)",
                failovers,
            ),
            ("rejoin (heal → back in the ISR)", rejoins),
        ],
    );
}

/// (e) The partition leader is paused with SIGSTOP: a new leader is
/// elected; once resumed, the old leader's stale writes are fenced (never
/// acked unless on the ISR), it truncates and rejoins.
#[test]
fn sigstopped_leader_is_fenced_after_resuming() {
    const SCENARIO: &str = "leader-pause";
    let _serial = serial();
    let soak = Soak::from_env();
    let mut cluster = Cluster::start();
    cluster.create_stream(STREAM, STREAM, 1, 1);
    let publisher = Publisher::start(&cluster.nats.url, STREAM, "leader-pause");
    let live = cluster.live_consumer(STREAM, 0);
    let mut probes = History::default();
    let (mut elections, mut failovers, mut rejoins) = (Vec::new(), Vec::new(), Vec::new());
    for cycle in 0..soak.cycles {
        publish_phase(SCENARIO, &cluster, &publisher, soak, "before the pause");
        let before = cluster.wait_partition(STREAM, 0, "a full ISR", full_isr);
        let old = before.leader.expect("leader");
        let metadata_leader = cluster.metadata_leader();
        let paused_at = Instant::now();
        cluster.node(old.get()).pause();
        let after = cluster.wait_partition_from(STREAM, 0, &[old.get()], "a new leader", |p| {
            p.leader.is_some_and(|l| l != old) && p.leader_epoch > before.leader_epoch
        });
        elections.push(paused_at.elapsed());
        let failover = publisher.wait_for_ack_sent_after(paused_at, REACT_TIMEOUT);
        let failover = failover.unwrap_or_else(|| {
            panic!(
                "[{SCENARIO}] no ack after pausing leader {old}\n{}",
                cluster.logs()
            )
        });
        failovers.push(failover);
        publish_phase(
            SCENARIO,
            &cluster,
            &publisher,
            soak,
            "while the old leader is paused",
        );
        // Resume and immediately write to the old leader directly: it may
        // still think it leads; whatever it answers, the checker holds it
        // to the ISR's log.
        let resumed_at = Instant::now();
        cluster.node(old.get()).resume();
        let attempt = probe_publish(
            cluster.node(old.get()).listen.to_string(),
            0,
            format!("stale-probe-{cycle}"),
        );
        figure(
            SCENARIO,
            format!(
                "cycle {cycle}: direct publish to the resumed old leader → {:?}",
                attempt.outcome
            ),
        );
        probes.attempts.push(attempt);
        cluster.wait_partition(STREAM, 0, "the old leader back in the ISR", |p| {
            p.isr.contains(&old) && full_isr(p)
        });
        rejoins.push(resumed_at.elapsed());
        figure(
            SCENARIO,
            format!(
                "cycle {cycle}: paused leader {old} (epoch {:?}; metadata leader {metadata_leader:?}) → leader {:?} (epoch {:?}) in {:?}; first ack after the pause in {failover:?}",
                before.leader_epoch,
                after.leader,
                after.leader_epoch,
                elections.last().expect("election")
            ),
        );
    }
    publish_phase(SCENARIO, &cluster, &publisher, soak, "at the end");
    let mut history = publisher.stop();
    history.merge(probes);
    let report = cluster.settle_and_check(STREAM, 0, &history, live.stop());
    finish(
        SCENARIO,
        soak.cycles,
        &report,
        &[
            ("election (pause → new leader in metadata)", elections),
            ("failover (pause → first ack of a later publish)", failovers),
            ("rejoin (resume → back in the ISR)", rejoins),
        ],
    );
}
