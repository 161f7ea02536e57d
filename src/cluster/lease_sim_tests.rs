//! A deterministic simulation of the rule "no leading on unconfirmed
//! metadata" (`lease.rs`) under restarts, network partitions and metadata
//! leader changes.
//!
//! The pieces that decide are the production ones: [`Liveness`] (what the
//! metadata leader thinks is alive, with its grace period per term),
//! [`controller::plan`] (who gets deposed and who succeeds), the state
//! machine's `apply` (which refuses stale commands), [`MetadataLease`] and
//! the heartbeat interval. What is modelled: time (1 ms ticks), a raft log
//! of committed metadata states, which node leads the metadata, which nodes
//! are up and which are cut off, RPC delays, how far behind each node's
//! applied metadata is, and each node's confirmation rounds.
//!
//! A node *acts* as the leader of a partition when it is up, holds a valid
//! lease and its applied metadata names it the leader — what the router
//! (subscriptions) and the shard (appends, acks, high watermark) require.
//! The invariant, checked at every tick: a node acting as a partition's
//! leader acts in the partition's newest committed leader epoch (so at most
//! one node acts for a partition, and never in a superseded epoch).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::controller;
use super::lease::MetadataLease;
use super::liveness::{heartbeat_interval, Liveness};
use crate::model::{
    nid, Metadata, MetadataResponse, NodeId, PartitionAssignment, StreamId, StreamRecord,
    StreamSpec,
};

const NODES: [NodeId; 3] = [nid(1), nid(2), nid(3)];
const NODE_TIMEOUT: Duration = Duration::from_millis(2000);
const TICK: Duration = Duration::from_millis(1);
/// A metadata election completes this long after the leader is gone.
const ELECTION_TIME: Duration = Duration::from_millis(1500);

/// What the simulation may do to a node at a moment.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// SIGKILL, restarted after the duration (its applied metadata is
    /// what it had on disk; no lease).
    Restart(NodeId, Duration),
    /// Cut off from every other node for the duration, then healed.
    Isolate(NodeId, Duration),
    /// Kill the metadata leader (whoever it is then), restarted after the
    /// duration.
    RestartMetadataLeader(Duration),
}

struct Node {
    up: bool,
    isolated: bool,
    /// Index into the committed log of the metadata this node applied.
    applied: usize,
    /// When this node next catches up with the committed log (replication
    /// delay), while up and reachable.
    catch_up_at: Instant,
    lease: MetadataLease,
    liveness: Liveness,
    next_round: Instant,
    round: Option<Round>,
}

/// A confirmation round in flight.
struct Round {
    sent_at: Instant,
    /// The metadata leader's read index and when the answer arrives
    /// (`None`: the round failed, it ends at the lease bound).
    answer: Option<(usize, Instant)>,
}

struct Sim {
    start: Instant,
    now: Instant,
    rng: u64,
    /// Committed metadata states: entry i is the state after i commands.
    log: Vec<Metadata>,
    leader: Option<NodeId>,
    term: u64,
    /// When the metadata lost its leader (an election is under way).
    leaderless_since: Option<Instant>,
    next_controller_run: Instant,
    nodes: BTreeMap<NodeId, Node>,
    /// Pending restarts and heals.
    timers: Vec<(Instant, Timer)>,
    /// For the check that the simulation can fail: act without a lease.
    ignore_lease: bool,
    /// Moments a node acted as leader, by (node, epoch), for the reports.
    acted: BTreeMap<(NodeId, u32), usize>,
}

#[derive(Clone, Copy, Debug)]
enum Timer {
    Start(NodeId),
    Heal(NodeId),
}

/// One stream, three partitions led by nodes 1, 2 and 3, RF 3.
fn initial_metadata() -> Metadata {
    let mut m = Metadata::default();
    let spec = StreamSpec {
        replication_factor: 3,
        partitions: 3,
        ..StreamSpec::new("s", "s")
    };
    let partitions = (0..3u32)
        .map(|p| {
            let leader = NODES[p as usize];
            let mut replicas = NODES.to_vec();
            replicas.rotate_left(p as usize);
            PartitionAssignment {
                stream: "s".into(),
                partition: p,
                leader,
                replicas: replicas.clone(),
                isr: replicas,
                leader_epoch: 0,
                isr_version: 0,
                shard: 0,
            }
        })
        .collect();
    m.streams.insert(
        "s".into(),
        StreamRecord {
            id: StreamId::new(1),
            spec,
            partitions,
            created_at_ms: 0,
        },
    );
    m
}

impl Sim {
    fn new(seed: u64, ignore_lease: bool) -> Sim {
        let start = Instant::now();
        let nodes = NODES
            .iter()
            .map(|&id| {
                let node = Node {
                    up: true,
                    isolated: false,
                    applied: 0,
                    catch_up_at: start,
                    // Everyone starts confirmed: the faults come later.
                    lease: MetadataLease::granted(start, NODE_TIMEOUT),
                    liveness: Liveness::new(id, NODE_TIMEOUT),
                    next_round: start + Duration::from_millis(id.get() * 7),
                    round: None,
                };
                (id, node)
            })
            .collect();
        Sim {
            start,
            now: start,
            rng: seed | 1,
            log: vec![initial_metadata()],
            leader: Some(nid(1)),
            term: 1,
            leaderless_since: None,
            next_controller_run: start,
            nodes,
            timers: Vec::new(),
            ignore_lease,
            acted: BTreeMap::new(),
        }
    }

    fn random(&mut self, below: u64) -> u64 {
        // xorshift64: deterministic per seed.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % below.max(1)
    }

    fn rpc_delay(&mut self) -> Duration {
        Duration::from_millis(1 + self.random(40))
    }

    fn reachable(&self, a: NodeId, b: NodeId) -> bool {
        let (a, b) = (&self.nodes[&a], &self.nodes[&b]);
        a.up && b.up && !a.isolated && !b.isolated
    }

    /// Whether the metadata leader can reach a majority (itself and one
    /// more of three).
    fn leader_has_quorum(&self) -> bool {
        let Some(leader) = self.leader else {
            return false;
        };
        self.nodes[&leader].up
            && NODES
                .iter()
                .any(|&n| n != leader && self.reachable(leader, n))
    }

    fn last(&self) -> usize {
        self.log.len() - 1
    }

    fn inject(&mut self, fault: Fault) {
        match fault {
            Fault::Restart(node, down) => self.kill(node, down),
            Fault::Isolate(node, duration) => {
                let n = self.nodes.get_mut(&node).expect("node");
                if n.up && !n.isolated {
                    n.isolated = true;
                    self.timers.push((self.now + duration, Timer::Heal(node)));
                }
            }
            Fault::RestartMetadataLeader(down) => {
                if let Some(leader) = self.leader {
                    self.kill(leader, down);
                }
            }
        }
    }

    fn kill(&mut self, node: NodeId, down: Duration) {
        let now = self.now;
        let n = self.nodes.get_mut(&node).expect("node");
        if !n.up {
            return;
        }
        n.up = false;
        n.round = None;
        self.timers.push((now + down, Timer::Start(node)));
    }

    fn step(&mut self) -> Result<(), String> {
        self.now += TICK;
        let now = self.now;
        let due: Vec<Timer> = self
            .timers
            .iter()
            .filter(|(at, _)| *at <= now)
            .map(|(_, t)| *t)
            .collect();
        self.timers.retain(|(at, _)| *at > now);
        for timer in due {
            match timer {
                Timer::Start(id) => {
                    let catch_up = self.rpc_delay() * 10;
                    let n = self.nodes.get_mut(&id).expect("node");
                    // Restarted: the metadata it applied before dying (on
                    // disk), no lease, a fresh liveness table.
                    n.up = true;
                    n.lease = MetadataLease::NONE;
                    n.liveness = Liveness::new(id, NODE_TIMEOUT);
                    n.catch_up_at = now + catch_up;
                    n.next_round = now;
                }
                Timer::Heal(id) => {
                    let catch_up = self.rpc_delay();
                    let n = self.nodes.get_mut(&id).expect("node");
                    n.isolated = false;
                    n.catch_up_at = now + catch_up;
                }
            }
        }
        self.elect();
        self.replicate();
        self.rounds();
        self.control();
        self.check()
    }

    /// Loses the metadata leader when it is down or cut off; elects the
    /// most caught-up reachable node once the election time has passed and
    /// a majority is reachable.
    fn elect(&mut self) {
        let now = self.now;
        if self.leader.is_some() && !self.leader_has_quorum() {
            self.leader = None;
            self.leaderless_since = Some(now);
        }
        let Some(since) = self.leaderless_since else {
            return;
        };
        if now.saturating_duration_since(since) < ELECTION_TIME {
            return;
        }
        let candidate = NODES
            .iter()
            .copied()
            .filter(|&n| NODES.iter().any(|&o| o != n && self.reachable(n, o)))
            .max_by_key(|n| self.nodes[n].applied);
        if let Some(candidate) = candidate {
            // Raft: the new leader holds every committed entry; it commits
            // a blank entry of its term before anything else.
            self.leader = Some(candidate);
            self.term += 1;
            self.leaderless_since = None;
            let blank = self.log[self.last()].clone();
            self.log.push(blank);
            self.nodes.get_mut(&candidate).expect("node").applied = self.last();
        }
    }

    /// Reachable followers apply the committed log after their delay.
    fn replicate(&mut self) {
        let Some(leader) = self.leader else {
            return;
        };
        let last = self.last();
        let now = self.now;
        for id in NODES {
            if id == leader || !self.reachable(leader, id) {
                continue;
            }
            let n = self.nodes.get_mut(&id).expect("node");
            if n.applied < last && now >= n.catch_up_at {
                n.applied = last;
            }
            if n.applied < last && n.catch_up_at < now {
                // Next batch of entries arrives a raft heartbeat later.
                n.catch_up_at = now + Duration::from_millis(50);
            }
        }
    }

    /// Confirmation rounds (`MetadataCore::confirm_round`), one per node.
    fn rounds(&mut self) {
        let now = self.now;
        let interval = heartbeat_interval(NODE_TIMEOUT);
        for id in NODES {
            if !self.nodes[&id].up {
                continue;
            }
            if self.nodes[&id].round.is_none() && now >= self.nodes[&id].next_round {
                let answer = self.ask_read_index(id);
                self.nodes.get_mut(&id).expect("node").round = Some(Round {
                    sent_at: now,
                    answer,
                });
            }
            let n = self.nodes.get_mut(&id).expect("node");
            let Some(round) = &n.round else { continue };
            let bound = MetadataLease::granted(round.sent_at, NODE_TIMEOUT);
            match round.answer {
                Some((read_index, arrives)) if now >= arrives && n.applied >= read_index => {
                    n.lease = n.lease.max(bound);
                    n.round = None;
                    n.next_round = now + interval;
                }
                _ if !bound.is_valid_at(now) => {
                    n.round = None;
                    n.next_round = now + Duration::from_millis(100);
                }
                _ => {}
            }
        }
    }

    /// The heartbeat: the leader notes the sender alive (when the request
    /// reaches it) and answers its read index after a quorum round.
    fn ask_read_index(&mut self, id: NodeId) -> Option<(usize, Instant)> {
        let leader = self.leader?;
        if !self.leader_has_quorum() {
            return None;
        }
        if id != leader && !self.reachable(leader, id) {
            return None;
        }
        let there = self.rpc_delay();
        let back = self.rpc_delay();
        let heard = self.now + there;
        let term = self.term;
        let liveness = &self.nodes[&leader].liveness;
        liveness.leading_in(term, heard);
        liveness.heard_from(id, heard);
        // The read index covers everything committed by the time the quorum
        // round (after the request arrived) ends.
        Some((self.last(), heard + back))
    }

    /// The controller on the metadata leader: plan from the (applied,
    /// confirmed current) metadata and commit what the state machine takes.
    fn control(&mut self) {
        let now = self.now;
        if now < self.next_controller_run {
            return;
        }
        self.next_controller_run = now + heartbeat_interval(NODE_TIMEOUT);
        let Some(leader) = self.leader else { return };
        if !self.leader_has_quorum() {
            return;
        }
        let liveness = &self.nodes[&leader].liveness;
        liveness.leading_in(self.term, now);
        let mut metadata = self.log[self.last()].clone();
        let commands = controller::plan(&metadata, |n| liveness.is_alive(n, now));
        for command in commands {
            if metadata.apply(&command).response == MetadataResponse::Ok {
                self.log.push(metadata.clone());
            }
        }
        let last = self.last();
        self.nodes.get_mut(&leader).expect("node").applied = last;
    }

    /// The invariant: whoever acts as a partition's leader acts in its
    /// newest committed epoch.
    fn check(&mut self) -> Result<(), String> {
        let newest = &self.log[self.last()];
        for id in NODES {
            let n = &self.nodes[&id];
            let confirmed = self.ignore_lease || n.lease.is_valid_at(self.now);
            if !n.up || !confirmed {
                continue;
            }
            let applied = &self.log[n.applied];
            for a in &applied.streams()["s"].partitions {
                if a.leader != id {
                    continue;
                }
                *self.acted.entry((id, a.leader_epoch)).or_default() += 1;
                let current = &newest.streams()["s"].partitions[a.partition as usize];
                if (current.leader, current.leader_epoch) != (id, a.leader_epoch) {
                    return Err(format!(
                        "at {:?}: node {id} acts as leader of partition {} in epoch {} on \
                         metadata index {} of {}, but the newest committed metadata has node {} \
                         leading epoch {}",
                        self.now - self.start,
                        a.partition,
                        a.leader_epoch,
                        n.applied,
                        self.last(),
                        current.leader,
                        current.leader_epoch
                    ));
                }
            }
        }
        Ok(())
    }

    fn run(&mut self, faults: &[(Duration, Fault)], total: Duration) -> Result<(), String> {
        let mut pending: Vec<(Duration, Fault)> = faults.to_vec();
        pending.sort_by_key(|(at, _)| *at);
        let mut pending = pending.into_iter().peekable();
        while self.now - self.start < total {
            while let Some((_, fault)) = pending.next_if(|(at, _)| *at <= self.now - self.start) {
                self.inject(fault);
            }
            self.step()?;
        }
        Ok(())
    }

    /// The leader epoch of each partition in the newest metadata.
    fn epochs(&self) -> Vec<(NodeId, u32)> {
        self.log[self.last()].streams()["s"]
            .partitions
            .iter()
            .map(|a| (a.leader, a.leader_epoch))
            .collect()
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

#[test]
fn a_restarted_leader_waits_for_confirmation_and_follows_the_new_epoch() {
    let mut sim = Sim::new(7, false);
    // Node 2 (leader of partition 1) is down long enough to be deposed.
    sim.run(
        &[(secs(1.0), Fault::Restart(nid(2), secs(4.0)))],
        secs(12.0),
    )
    .expect("invariant");
    let epochs = sim.epochs();
    assert_ne!(epochs[1].0, nid(2), "partition 1 moved away from node 2");
    assert_eq!(epochs[1].1, 1, "one new epoch");
    assert!(
        sim.nodes[&nid(2)].lease.is_valid_at(sim.now),
        "the restarted node is confirmed again"
    );
}

#[test]
fn a_healed_leader_stopped_before_it_was_replaced() {
    let mut sim = Sim::new(11, false);
    sim.run(
        &[(secs(1.0), Fault::Isolate(nid(3), secs(5.0)))],
        secs(12.0),
    )
    .expect("invariant");
    let epochs = sim.epochs();
    assert_ne!(
        epochs[2].0,
        nid(3),
        "partition 2 moved away from the cut-off node"
    );
    assert!(sim.nodes[&nid(3)].lease.is_valid_at(sim.now));
}

#[test]
fn a_metadata_leader_change_keeps_one_leader_per_partition() {
    let mut sim = Sim::new(13, false);
    sim.run(
        &[
            (secs(1.0), Fault::RestartMetadataLeader(secs(0.5))),
            (secs(5.0), Fault::RestartMetadataLeader(secs(4.0))),
            (secs(12.0), Fault::Isolate(nid(2), secs(3.0))),
        ],
        secs(20.0),
    )
    .expect("invariant");
    assert!(sim.leader.is_some(), "a metadata leader at the end");
}

/// The simulation can fail: acting on unconfirmed metadata (the behaviour
/// before the lease) is caught at the first stale act.
#[test]
fn without_the_lease_a_restarted_leader_acts_on_stale_metadata() {
    let mut sim = Sim::new(7, true);
    let verdict = sim.run(
        &[(secs(1.0), Fault::Restart(nid(2), secs(4.0)))],
        secs(12.0),
    );
    let error = verdict.expect_err("a stale leader is caught");
    assert!(
        error.contains("node 2 acts as leader of partition 1 in epoch 0"),
        "{error}"
    );
}

fn fault() -> impl Strategy<Value = (Duration, Fault)> {
    let at = (0u64..25_000).prop_map(Duration::from_millis);
    let node = 1u64..=3;
    let span = (10u64..6_000).prop_map(Duration::from_millis);
    let kind = prop_oneof![
        (node.clone(), span.clone()).prop_map(|(n, d)| Fault::Restart(nid(n), d)),
        (node, span.clone()).prop_map(|(n, d)| Fault::Isolate(nid(n), d)),
        span.prop_map(Fault::RestartMetadataLeader),
    ];
    (at, kind)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random restarts, cut-offs and metadata leader changes: nobody ever
    /// acts as a partition leader in a superseded epoch.
    #[test]
    fn no_node_leads_on_unconfirmed_metadata(
        seed in any::<u64>(),
        faults in proptest::collection::vec(fault(), 1..8),
    ) {
        let mut sim = Sim::new(seed, false);
        let verdict = sim.run(&faults, Duration::from_secs(40));
        prop_assert!(verdict.is_ok(), "{}", verdict.unwrap_err());
    }
}
