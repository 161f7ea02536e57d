//! Random sequences of joins, rejoins, syncs, heartbeats, leaves, commits,
//! restarts and time against the coordinator's invariants.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use kafka_protocol::ResponseError as E;
use proptest::prelude::*;

use super::tests::{g, join_req, proto, range_assign, sync_req, test_config};
use super::*;

const CLIENTS: usize = 5;
const INITIAL_DELAY: u64 = 3_000;
/// Largest rebalance timeout of any client: no request waits longer.
const MAX_REBALANCE: u64 = 20_000;

#[derive(Clone, Debug)]
enum Action {
    /// Join (or rejoin with the id it has); `meta` picks its metadata, so
    /// that some rejoins change it.
    Join {
        client: usize,
        meta: u8,
    },
    Sync {
        client: usize,
    },
    Heartbeat {
        client: usize,
    },
    Leave {
        client: usize,
    },
    Commit {
        client: usize,
    },
    /// The client process restarts: it forgets its member id (a static
    /// client keeps its instance id).
    Restart {
        client: usize,
    },
    /// Time passes; every timer runs when due.
    Advance {
        ms: u64,
    },
}

fn action() -> impl Strategy<Value = Action> {
    let c = 0..CLIENTS;
    prop_oneof![
        4 => (c.clone(), 0u8..3).prop_map(|(client, meta)| Action::Join { client, meta }),
        4 => c.clone().prop_map(|client| Action::Sync { client }),
        3 => c.clone().prop_map(|client| Action::Heartbeat { client }),
        1 => c.clone().prop_map(|client| Action::Leave { client }),
        1 => c.clone().prop_map(|client| Action::Commit { client }),
        1 => c.prop_map(|client| Action::Restart { client }),
        3 => (0u64..12_000).prop_map(|ms| Action::Advance { ms }),
    ]
}

#[derive(Default, Debug)]
struct Client {
    member: MemberId,
    generation: i32,
    join: Option<RequestToken>,
    sync: Option<RequestToken>,
    /// Members to assign, when the last join made this client the leader.
    to_assign: Option<Vec<MemberId>>,
}

#[derive(Debug)]
struct Outstanding {
    client: usize,
    issued: u64,
    member: MemberId,
    generation: i32,
}

struct World {
    c: Coordinator,
    now: u64,
    next_token: u64,
    clients: Vec<Client>,
    outstanding: BTreeMap<RequestToken, Outstanding>,
    /// Member ids that were members once and are no more.
    removed: BTreeSet<MemberId>,
    last_members: BTreeSet<MemberId>,
    last_generation: i32,
}

impl World {
    fn new() -> Self {
        World {
            c: Coordinator::new(test_config(INITIAL_DELAY)),
            now: 0,
            next_token: 0,
            clients: (0..CLIENTS).map(|_| Client::default()).collect(),
            outstanding: BTreeMap::new(),
            removed: BTreeSet::new(),
            last_members: BTreeSet::new(),
            last_generation: 0,
        }
    }

    fn token(&mut self, client: usize, member: &MemberId, generation: i32) -> RequestToken {
        self.next_token += 1;
        let t = RequestToken(self.next_token);
        self.outstanding.insert(
            t,
            Outstanding {
                client,
                issued: self.now,
                member: member.clone(),
                generation,
            },
        );
        t
    }

    fn request(&self, client: usize, meta: u8) -> JoinRequest {
        let mut r = join_req(&self.clients[client].member.0);
        // Clients 0 and 1 speak JoinGroup v0-v3, the others v4+.
        r.require_known_member_id = client >= 2;
        if client == 4 {
            r.group_instance_id = Some(InstanceId("static-4".into()));
        }
        r.client_id = format!("c{client}");
        r.session_timeout_ms = 6_000 + 1_000 * client as i32;
        r.rebalance_timeout_ms = (MAX_REBALANCE as i32) - 2_000 * client as i32;
        r.protocols = vec![proto("range", &[meta]), proto("roundrobin", b"")];
        r
    }

    fn step(&mut self, a: &Action) -> Result<(), TestCaseError> {
        let now = Millis(self.now);
        match *a {
            Action::Join { client, meta } => {
                if self.clients[client].join.is_some() {
                    return Ok(());
                }
                let req = self.request(client, meta);
                let member = req.member_id.clone();
                let t = self.token(client, &member, -1);
                match self.c.join(now, t, req) {
                    Ok(done) => {
                        self.clients[client].join = Some(t);
                        self.complete(done)?;
                    }
                    Err(e) => {
                        self.outstanding.remove(&t);
                        if e.code() == E::UnknownMemberId || e.code() == E::FencedInstanceId {
                            self.clients[client].member = MemberId::default();
                        }
                    }
                }
            }
            Action::Sync { client } => {
                let cl = &self.clients[client];
                if cl.sync.is_some() || cl.member.is_unknown() {
                    return Ok(());
                }
                let assignments = cl
                    .to_assign
                    .as_ref()
                    .map(|ms| range_assign(ms, 6))
                    .unwrap_or_default();
                let (member, generation) = (cl.member.clone(), cl.generation);
                let mut req = sync_req(&member, generation, assignments);
                req.protocol_name = None;
                if client == 4 {
                    req.group_instance_id = Some(InstanceId("static-4".into()));
                }
                let t = self.token(client, &member, generation);
                match self.c.sync(now, t, req) {
                    Ok(done) => {
                        self.clients[client].sync = Some(t);
                        self.complete(done)?;
                    }
                    Err(_) => {
                        self.outstanding.remove(&t);
                    }
                }
            }
            Action::Heartbeat { client } => {
                let cl = &self.clients[client];
                if cl.member.is_unknown() {
                    return Ok(());
                }
                let r = self.c.heartbeat(
                    now,
                    &HeartbeatRequest {
                        group_id: g(),
                        generation_id: GenerationId(cl.generation),
                        member_id: cl.member.clone(),
                        group_instance_id: None,
                    },
                );
                if let Err(e) = r {
                    let ok = [
                        E::RebalanceInProgress,
                        E::IllegalGeneration,
                        E::UnknownMemberId,
                    ];
                    prop_assert!(ok.contains(&e.code()), "heartbeat: {e:?}");
                }
            }
            Action::Leave { client } => {
                let member = std::mem::take(&mut self.clients[client].member);
                let (_, done) = self
                    .c
                    .leave(
                        now,
                        &LeaveRequest {
                            group_id: g(),
                            members: vec![LeaveMember {
                                member_id: member,
                                group_instance_id: None,
                            }],
                        },
                    )
                    .map_err(|e| TestCaseError::fail(format!("leave: {e}")))?;
                self.complete(done)?;
            }
            Action::Commit { client } => {
                let cl = &self.clients[client];
                let gen = if cl.member.is_unknown() {
                    -1
                } else {
                    cl.generation
                };
                let _ = self
                    .c
                    .validate_commit(now, &g(), GenerationId(gen), &cl.member, None);
            }
            Action::Restart { client } => {
                // Its waiting requests stay outstanding: the coordinator
                // still answers them (to a closed connection).
                let cl = &mut self.clients[client];
                cl.member = MemberId::default();
                cl.join = None;
                cl.sync = None;
                cl.to_assign = None;
            }
            Action::Advance { ms } => self.advance(self.now + ms)?,
        }
        self.check()
    }

    fn advance(&mut self, to: u64) -> Result<(), TestCaseError> {
        while let Some(d) = self.c.next_deadline() {
            if d.0 > to {
                break;
            }
            prop_assert!(d.0 >= self.now, "deadline in the past");
            self.now = d.0;
            let done = self.c.tick(Millis(self.now));
            self.complete(done)?;
            self.check()?;
        }
        self.now = to;
        Ok(())
    }

    fn complete(&mut self, done: Vec<Completion>) -> Result<(), TestCaseError> {
        let group = self.c.groups.get(&g());
        let generation = group.map_or(0, |g| g.generation.0);
        for (t, reply) in done {
            let Some(o) = self.outstanding.remove(&t) else {
                return Err(TestCaseError::fail(format!(
                    "{t:?} answered twice or never asked"
                )));
            };
            prop_assert!(
                self.now - o.issued <= MAX_REBALANCE,
                "{t:?} waited {} ms",
                self.now - o.issued
            );
            let cl = &mut self.clients[o.client];
            match reply {
                Reply::Join(r) => {
                    if r.error.is_none() {
                        prop_assert!(!self.removed.contains(&r.member_id), "join for removed");
                        prop_assert_eq!(r.generation_id.0, generation);
                    }
                    if cl.join != Some(t) {
                        continue;
                    }
                    cl.join = None;
                    match r.error {
                        None => {
                            cl.member = r.member_id.clone();
                            cl.generation = r.generation_id.0;
                            cl.to_assign = (r.leader == r.member_id && !r.members.is_empty())
                                .then(|| r.members.iter().map(|m| m.member_id.clone()).collect());
                        }
                        Some(E::MemberIdRequired) => cl.member = r.member_id,
                        Some(E::UnknownMemberId) | Some(E::FencedInstanceId) => {
                            cl.member = MemberId::default()
                        }
                        Some(_) => {}
                    }
                }
                Reply::Sync(r) => {
                    if r.error.is_none() {
                        prop_assert!(!self.removed.contains(&o.member), "sync for removed");
                        prop_assert_eq!(o.generation, generation, "sync of an old generation");
                        let state = self.c.describe(&g()).state;
                        prop_assert_eq!(state, GroupState::Stable);
                    }
                    if cl.sync == Some(t) {
                        cl.sync = None;
                    }
                }
            }
        }
        Ok(())
    }

    /// The invariants, checked after every step and timer.
    fn check(&mut self) -> Result<(), TestCaseError> {
        // The timer index matches every group's earliest deadline.
        for (id, grp) in &self.c.groups {
            prop_assert_eq!(grp.armed, grp.next_deadline());
            if let Some(at) = grp.armed {
                prop_assert!(self.c.timers.contains(&(at, id.clone())));
            }
        }
        prop_assert_eq!(
            self.c.timers.len(),
            self.c.groups.values().filter(|g| g.armed.is_some()).count()
        );
        let Some(grp) = self.c.groups.get(&g()) else {
            return Ok(());
        };
        prop_assert!(
            grp.generation.0 >= self.last_generation,
            "generation went back"
        );
        self.last_generation = grp.generation.0;
        let members: BTreeSet<MemberId> = grp.members.keys().cloned().collect();
        for gone in self.last_members.difference(&members) {
            self.removed.insert(gone.clone());
        }
        prop_assert!(members.is_disjoint(&self.removed), "a removed id came back");
        self.last_members = members;
        prop_assert!(grp.members.len() + grp.pending.len() <= CLIENTS * 8);
        match grp.state {
            GroupState::Empty => prop_assert!(grp.members.is_empty()),
            GroupState::Dead => prop_assert!(false, "Dead group kept"),
            _ => {}
        }
        // Exactly one leader whenever there are members (a join phase may
        // be left with only KIP-394 pending ids, and then none).
        match grp.leader.as_ref() {
            Some(l) => prop_assert!(grp.members.contains_key(l), "leader not a member"),
            None => prop_assert!(grp.members.is_empty(), "members without a leader"),
        }
        for m in grp.members.values() {
            match grp.state {
                GroupState::Stable => {
                    prop_assert_eq!(m.assignment_generation, grp.generation);
                    prop_assert!(m.awaiting_join.is_none() && m.awaiting_sync.is_none());
                }
                GroupState::CompletingRebalance => prop_assert!(m.awaiting_join.is_none()),
                GroupState::PreparingRebalance => prop_assert!(m.awaiting_sync.is_none()),
                _ => {}
            }
            if let Some(inst) = &m.instance_id {
                prop_assert_eq!(grp.statics.get(inst), Some(&m.id));
            }
        }
        for (inst, id) in &grp.statics {
            prop_assert_eq!(
                grp.members.get(id).and_then(|m| m.instance_id.as_ref()),
                Some(inst)
            );
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_group_histories_keep_the_invariants(actions in prop::collection::vec(action(), 1..120)) {
        let mut w = World::new();
        for a in &actions {
            w.step(a)?;
        }
        // Nobody acts any more: every waiting request is answered in
        // bounded time and the group ends up Empty.
        let end = w.now + 4 * MAX_REBALANCE;
        w.advance(end)?;
        prop_assert!(w.outstanding.is_empty(), "unanswered: {:?}", w.outstanding);
        let state = w.c.describe(&g()).state;
        prop_assert!(
            matches!(state, GroupState::Empty | GroupState::Dead),
            "{:?}",
            state
        );
    }
}

/// Everyone behaving like a real consumer (rejoin on
/// REBALANCE_IN_PROGRESS, sync after join, heartbeat every 3 s) reaches
/// Stable with every partition assigned once.
#[test]
fn well_behaved_clients_converge() {
    let mut w = World::new();
    let meta = 0;
    for client in 0..CLIENTS {
        w.step(&Action::Join { client, meta }).unwrap();
    }
    for _ in 0..40 {
        for client in 0..CLIENTS {
            if w.clients[client].join.is_none() {
                let stale = w.c.heartbeat(
                    Millis(w.now),
                    &HeartbeatRequest {
                        group_id: g(),
                        generation_id: GenerationId(w.clients[client].generation),
                        member_id: w.clients[client].member.clone(),
                        group_instance_id: None,
                    },
                );
                if stale.is_err() || w.clients[client].member.is_unknown() {
                    w.step(&Action::Join { client, meta }).unwrap();
                } else {
                    w.step(&Action::Sync { client }).unwrap();
                }
            }
        }
        w.step(&Action::Advance { ms: 1_000 }).unwrap();
    }
    let grp = &w.c.groups[&g()];
    assert_eq!(grp.state, GroupState::Stable);
    assert_eq!(grp.members.len(), CLIENTS);
    let mut parts: Vec<u8> = grp
        .members
        .values()
        .flat_map(|m| m.assignment.iter().copied())
        .collect();
    parts.sort();
    assert_eq!(parts, (0..6).collect::<Vec<u8>>());
    let _ = Bytes::new();
}
