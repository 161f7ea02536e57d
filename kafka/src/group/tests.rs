//! Unit tests, one or more per rule of the classic group protocol.

use bytes::Bytes;
use kafka_protocol::ResponseError as E;

use super::*;

pub(super) fn test_config(initial_delay: u64) -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay_ms: initial_delay,
        min_session_timeout_ms: 1_000,
        max_session_timeout_ms: 60_000,
        instance_nonce: 7,
        limits: GroupLimits::default(),
    }
}

pub(super) fn g() -> GroupId {
    GroupId("g".into())
}

pub(super) fn proto(name: &str, meta: &[u8]) -> Protocol {
    Protocol {
        name: name.into(),
        metadata: Bytes::copy_from_slice(meta),
    }
}

/// A JoinGroup of a v4+ client (KIP-394) with session 10 s, rebalance 20 s.
pub(super) fn join_req(member: &str) -> JoinRequest {
    JoinRequest {
        group_id: g(),
        member_id: MemberId(member.into()),
        group_instance_id: None,
        protocol_type: "consumer".into(),
        protocols: vec![proto("range", b"sub")],
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 20_000,
        require_known_member_id: true,
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
    }
}

/// Drives a coordinator with a clock and token numbers.
pub(super) struct Harness {
    pub(super) c: Coordinator,
    pub(super) now: u64,
    next_token: u64,
    /// Completions not yet looked at.
    pub(super) done: Vec<Completion>,
}

impl Harness {
    pub(super) fn new(initial_delay: u64) -> Self {
        Harness {
            c: Coordinator::new(test_config(initial_delay)),
            now: 0,
            next_token: 0,
            done: Vec::new(),
        }
    }

    fn token(&mut self) -> RequestToken {
        self.next_token += 1;
        RequestToken(self.next_token)
    }

    pub(super) fn join(&mut self, req: JoinRequest) -> Result<RequestToken, GroupError> {
        let t = self.token();
        let done = self.c.join(Millis(self.now), t, req)?;
        self.done.extend(done);
        Ok(t)
    }

    pub(super) fn sync(&mut self, req: SyncRequest) -> Result<RequestToken, GroupError> {
        let t = self.token();
        let done = self.c.sync(Millis(self.now), t, req)?;
        self.done.extend(done);
        Ok(t)
    }

    /// Moves the clock to `to`, running every timer on the way exactly when
    /// it is due, as a shard sleeping until `next_deadline` would.
    pub(super) fn advance_to(&mut self, to: u64) {
        while let Some(d) = self.c.next_deadline() {
            if d.0 > to {
                break;
            }
            self.now = self.now.max(d.0);
            let done = self.c.tick(Millis(self.now));
            self.done.extend(done);
        }
        self.now = to;
    }

    pub(super) fn advance(&mut self, ms: u64) {
        self.advance_to(self.now + ms);
    }

    pub(super) fn take(&mut self, t: RequestToken) -> Option<Reply> {
        let i = self.done.iter().position(|(x, _)| *x == t)?;
        Some(self.done.remove(i).1)
    }

    pub(super) fn join_reply(&mut self, t: RequestToken) -> JoinResponse {
        match self.take(t) {
            Some(Reply::Join(r)) => r,
            other => panic!("no join reply for {t:?}: {other:?}"),
        }
    }

    pub(super) fn sync_reply(&mut self, t: RequestToken) -> SyncResponse {
        match self.take(t) {
            Some(Reply::Sync(r)) => r,
            other => panic!("no sync reply for {t:?}: {other:?}"),
        }
    }

    /// A v4 member's first join: MEMBER_ID_REQUIRED, then the rejoin.
    /// Returns the member id and the token of the waiting rejoin.
    pub(super) fn join_new(&mut self, client: &str) -> (MemberId, RequestToken) {
        let mut req = join_req("");
        req.client_id = client.into();
        let t = self.join(req.clone()).expect("first join");
        let r = self.join_reply(t);
        assert_eq!(r.error, Some(E::MemberIdRequired));
        assert!(r.member_id.0.starts_with(client));
        req.member_id = r.member_id.clone();
        let t = self.join(req).expect("rejoin");
        (r.member_id, t)
    }

    pub(super) fn heartbeat(&mut self, m: &MemberId, generation: i32) -> Result<(), E> {
        self.c
            .heartbeat(
                Millis(self.now),
                &HeartbeatRequest {
                    group_id: g(),
                    generation_id: GenerationId(generation),
                    member_id: m.clone(),
                    group_instance_id: None,
                },
            )
            .map_err(|e| e.code())
    }

    pub(super) fn leave(&mut self, members: Vec<LeaveMember>) -> LeaveResponse {
        let (r, done) = self
            .c
            .leave(
                Millis(self.now),
                &LeaveRequest {
                    group_id: g(),
                    members,
                },
            )
            .expect("leave");
        self.done.extend(done);
        r
    }

    pub(super) fn state(&self) -> GroupState {
        self.c.describe(&g()).state
    }
}

pub(super) fn sync_req(
    m: &MemberId,
    generation: i32,
    assignments: Vec<(MemberId, Bytes)>,
) -> SyncRequest {
    SyncRequest {
        group_id: g(),
        generation_id: GenerationId(generation),
        member_id: m.clone(),
        group_instance_id: None,
        protocol_type: Some("consumer".into()),
        protocol_name: Some("range".into()),
        assignments,
    }
}

fn leave_member(m: &MemberId) -> LeaveMember {
    LeaveMember {
        member_id: m.clone(),
        group_instance_id: None,
    }
}

/// Two members joined and synced; returns (leader, follower, generation).
fn stable_pair(h: &mut Harness) -> (MemberId, MemberId, i32) {
    let (a, ta) = h.join_new("a");
    let ra = h.join_reply(ta);
    assert_eq!(ra.generation_id, GenerationId(1));
    // b's arrival rebalances: a learns it from its heartbeat and rejoins.
    let (b, tb) = h.join_new("b");
    assert_eq!(h.heartbeat(&a, 1), Err(E::RebalanceInProgress));
    let ta = h.join(join_req(&a.0)).unwrap();
    let ra = h.join_reply(ta);
    let rb = h.join_reply(tb);
    assert_eq!(ra.generation_id, GenerationId(2));
    let ts_b = h.sync(sync_req(&b, 2, vec![])).unwrap();
    let ts_a = h
        .sync(sync_req(
            &a,
            2,
            vec![
                (a.clone(), Bytes::from_static(b"A")),
                (b.clone(), Bytes::from_static(b"B")),
            ],
        ))
        .unwrap();
    assert_eq!(h.sync_reply(ts_a).assignment, Bytes::from_static(b"A"));
    assert_eq!(h.sync_reply(ts_b).assignment, Bytes::from_static(b"B"));
    assert_eq!(rb.leader, a);
    (a, b, 2)
}

#[test]
fn kip394_first_join_gets_member_id_required_then_joins() {
    let mut h = Harness::new(0);
    let (a, t) = h.join_new("app");
    let r = h.join_reply(t);
    assert_eq!(r.error, None);
    assert_eq!(r.member_id, a);
    assert_eq!(r.generation_id, GenerationId(1));
    assert_eq!(r.leader, a);
    assert_eq!(r.protocol_name.as_deref(), Some("range"));
    assert_eq!(r.protocol_type.as_deref(), Some("consumer"));
    assert_eq!(r.members.len(), 1);
    assert_eq!(r.members[0].metadata, Bytes::from_static(b"sub"));
    assert_eq!(h.state(), GroupState::CompletingRebalance);
}

#[test]
fn old_clients_get_their_member_id_at_once() {
    let mut h = Harness::new(0);
    let mut req = join_req("");
    req.require_known_member_id = false;
    let t = h.join(req).unwrap();
    let r = h.join_reply(t);
    assert_eq!(r.error, None);
    assert!(!r.member_id.is_unknown());
    assert_eq!(r.leader, r.member_id);
}

#[test]
fn a_pending_member_id_expires_after_its_session_timeout() {
    let mut h = Harness::new(0);
    let t = h.join(join_req("")).unwrap();
    let id = h.join_reply(t).member_id;
    assert_eq!(h.c.next_deadline(), Some(Millis(10_000)));
    h.advance(10_000);
    assert_eq!(h.c.next_deadline(), None);
    let err = h.join(join_req(&id.0)).unwrap_err();
    assert_eq!(err.code(), E::UnknownMemberId);
}

#[test]
fn a_pending_member_id_holds_the_join_phase_until_it_rejoins() {
    let mut h = Harness::new(0);
    let (a, _b, _) = stable_pair(&mut h);
    // c got an id but has not rejoined yet; a rejoins (as leader it forces
    // a rebalance), b rejoins: the phase still waits for c.
    let tc0 = h.join(join_req("")).unwrap();
    let c = h.join_reply(tc0).member_id;
    let ta = h.join(join_req(&a.0)).unwrap();
    let tb = h.join(join_req(&_b.0)).unwrap();
    assert!(h.done.is_empty());
    let tc = h.join(join_req(&c.0)).unwrap();
    let rc = h.join_reply(tc);
    assert_eq!(rc.generation_id, GenerationId(3));
    assert_eq!(h.join_reply(ta).members.len(), 3);
    assert!(h.join_reply(tb).members.is_empty());
}

#[test]
fn initial_delay_waits_and_is_extended_by_new_members() {
    let mut h = Harness::new(3_000);
    let (a, ta) = h.join_new("a");
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    assert!(h.done.is_empty());
    h.advance(1_000);
    let (b, tb) = h.join_new("b");
    // The first delay ends at 3 s; b arrived, so another 3 s.
    h.advance_to(2_999);
    assert!(h.done.is_empty());
    h.advance_to(5_999);
    assert!(h.done.is_empty());
    h.advance_to(6_000);
    let ra = h.join_reply(ta);
    let rb = h.join_reply(tb);
    assert_eq!(
        (ra.generation_id, rb.generation_id),
        (GenerationId(1), GenerationId(1))
    );
    assert_eq!(ra.leader, a);
    assert_eq!(ra.members.len(), 2);
    assert_eq!(rb.member_id, b);
}

#[test]
fn initial_delay_is_bounded_by_the_rebalance_timeout() {
    let mut h = Harness::new(3_000);
    let (_a, ta) = h.join_new("a");
    // A member arrives in every delay window: extensions stop once the
    // rebalance timeout (20 s) is used up.
    loop {
        h.advance(2_500);
        if let Some(Reply::Join(r)) = h.take(ta) {
            assert_eq!(r.error, None);
            assert_eq!(h.now, 20_000);
            assert_eq!(r.members.len(), 8);
            break;
        }
        assert!(h.now < 20_000, "join phase not bounded");
        let _ = h.join_new("x");
    }
}

#[test]
fn rebalance_removes_members_that_do_not_rejoin_in_time() {
    let mut h = Harness::new(0);
    let (a, b, _) = stable_pair(&mut h);
    let ta = h.join(join_req(&a.0)).unwrap();
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    // b heartbeats but never rejoins: after the rebalance timeout (20 s) a
    // continues alone.
    for _ in 0..6 {
        h.advance(3_000);
        assert_eq!(h.heartbeat(&b, 2), Err(E::RebalanceInProgress));
    }
    h.advance_to(19_999);
    assert!(h.done.is_empty());
    h.advance(1);
    let r = h.join_reply(ta);
    assert_eq!(r.generation_id, GenerationId(3));
    assert_eq!(r.members.len(), 1);
    assert_eq!(h.heartbeat(&b, 2), Err(E::UnknownMemberId));
}

#[test]
fn all_pending_joins_complete_together_when_everyone_rejoined() {
    let mut h = Harness::new(0);
    let (a, b, _) = stable_pair(&mut h);
    let tb = h.join(join_req(&b.0)).unwrap_or_else(|e| panic!("{e}"));
    // b is a follower with unchanged metadata: answered at once, no
    // rebalance.
    let rb = h.join_reply(tb);
    assert_eq!(rb.generation_id, GenerationId(2));
    assert_eq!(h.state(), GroupState::Stable);
    // a, the leader, forces one.
    let ta = h.join(join_req(&a.0)).unwrap();
    assert!(h.done.is_empty());
    let mut changed = join_req(&b.0);
    changed.protocols = vec![proto("range", b"other")];
    let tb = h.join(changed).unwrap();
    assert_eq!(h.join_reply(ta).generation_id, GenerationId(3));
    assert_eq!(h.join_reply(tb).generation_id, GenerationId(3));
}

#[test]
fn changed_metadata_in_stable_forces_a_rebalance() {
    let mut h = Harness::new(0);
    let (_a, b, _) = stable_pair(&mut h);
    let mut changed = join_req(&b.0);
    changed.protocols = vec![proto("range", b"more topics")];
    h.join(changed).unwrap();
    assert_eq!(h.state(), GroupState::PreparingRebalance);
}

#[test]
fn protocol_is_chosen_by_member_votes() {
    let mut h = Harness::new(0);
    let mut req = join_req("");
    req.require_known_member_id = false;
    let mut r1 = req.clone();
    r1.protocols = vec![
        proto("range", b""),
        proto("roundrobin", b""),
        proto("sticky", b""),
    ];
    let mut r2 = req.clone();
    r2.protocols = vec![proto("roundrobin", b""), proto("range", b"")];
    let mut r3 = req.clone();
    r3.protocols = vec![proto("roundrobin", b""), proto("range", b"")];
    let t1 = h.join(r1).unwrap();
    let id1 = h.join_reply(t1).member_id;
    let t2 = h.join(r2).unwrap();
    let t3 = h.join(r3).unwrap();
    let mut again = join_req(&id1.0);
    again.protocols = vec![
        proto("range", b""),
        proto("roundrobin", b""),
        proto("sticky", b""),
    ];
    let t1 = h.join(again).unwrap();
    // Candidates: range, roundrobin (sticky is not supported by all);
    // votes: range 1, roundrobin 2.
    for t in [t1, t2, t3] {
        assert_eq!(h.join_reply(t).protocol_name.as_deref(), Some("roundrobin"));
    }
}

#[test]
fn inconsistent_protocols_are_refused() {
    let mut h = Harness::new(0);
    let (_a, _b, _) = stable_pair(&mut h);
    let mut other_type = join_req("");
    other_type.protocol_type = "connect".into();
    assert_eq!(
        h.join(other_type).unwrap_err().code(),
        E::InconsistentGroupProtocol
    );
    let mut no_common = join_req("");
    no_common.protocols = vec![proto("sticky", b"")];
    assert_eq!(
        h.join(no_common).unwrap_err().code(),
        E::InconsistentGroupProtocol
    );
    let mut empty = join_req("");
    empty.group_id = GroupId("fresh".into());
    empty.protocols.clear();
    assert_eq!(
        h.join(empty).unwrap_err().code(),
        E::InconsistentGroupProtocol
    );
    assert_eq!(
        h.c.describe(&GroupId("fresh".into())).state,
        GroupState::Dead
    );
}

#[test]
fn join_checks_group_id_session_timeout_and_unknown_members() {
    let mut h = Harness::new(0);
    let mut r = join_req("");
    r.group_id = GroupId(String::new());
    assert_eq!(h.join(r).unwrap_err().code(), E::InvalidGroupId);
    let mut r = join_req("");
    r.session_timeout_ms = 999;
    assert_eq!(h.join(r).unwrap_err().code(), E::InvalidSessionTimeout);
    let mut r = join_req("");
    r.session_timeout_ms = 60_001;
    assert_eq!(h.join(r).unwrap_err().code(), E::InvalidSessionTimeout);
    // A member id for a group that does not exist.
    assert_eq!(
        h.join(join_req("ghost")).unwrap_err().code(),
        E::UnknownMemberId
    );
    let (_a, _) = h.join_new("a");
    assert_eq!(
        h.join(join_req("ghost")).unwrap_err().code(),
        E::UnknownMemberId
    );
}

#[test]
fn sync_followers_wait_for_the_leader_and_get_their_part() {
    let mut h = Harness::new(0);
    let (a, ta) = h.join_new("a");
    h.join_reply(ta);
    let (b, tb) = h.join_new("b");
    let ta = h.join(join_req(&a.0)).unwrap();
    h.join_reply(ta);
    h.join_reply(tb);
    let tsb = h.sync(sync_req(&b, 2, vec![])).unwrap();
    assert!(h.done.is_empty(), "follower waits for the leader");
    assert_eq!(h.heartbeat(&b, 2), Ok(()), "heartbeats are fine meanwhile");
    let tsa = h
        .sync(sync_req(
            &a,
            2,
            vec![(b.clone(), Bytes::from_static(b"for b"))],
        ))
        .unwrap();
    let rb = h.sync_reply(tsb);
    assert_eq!(rb.error, None);
    assert_eq!(rb.assignment, Bytes::from_static(b"for b"));
    assert_eq!(rb.protocol_name.as_deref(), Some("range"));
    // The leader left itself out: it gets an empty assignment.
    assert_eq!(h.sync_reply(tsa).assignment, Bytes::new());
    assert_eq!(h.state(), GroupState::Stable);
    // A sync in Stable returns the stored part at once.
    let t = h.sync(sync_req(&b, 2, vec![])).unwrap();
    assert_eq!(h.sync_reply(t).assignment, Bytes::from_static(b"for b"));
}

#[test]
fn sync_errors() {
    let mut h = Harness::new(0);
    let (a, b, gen) = stable_pair(&mut h);
    let code = |h: &mut Harness, r| h.sync(r).unwrap_err().code();
    assert_eq!(
        code(&mut h, sync_req(&a, gen - 1, vec![])),
        E::IllegalGeneration
    );
    assert_eq!(
        code(&mut h, sync_req(&MemberId("x".into()), gen, vec![])),
        E::UnknownMemberId
    );
    let mut wrong = sync_req(&a, gen, vec![]);
    wrong.protocol_name = Some("roundrobin".into());
    assert_eq!(code(&mut h, wrong), E::InconsistentGroupProtocol);
    let mut wrong = sync_req(&a, gen, vec![]);
    wrong.protocol_type = Some("connect".into());
    assert_eq!(code(&mut h, wrong), E::InconsistentGroupProtocol);
    let mut unchecked = sync_req(&a, gen, vec![]);
    unchecked.protocol_type = None;
    unchecked.protocol_name = None;
    assert!(h.sync(unchecked).is_ok(), "v0-v4 carry no protocol");
    h.join(join_req(&a.0)).unwrap();
    assert_eq!(
        code(&mut h, sync_req(&b, gen, vec![])),
        E::RebalanceInProgress
    );
    let mut other = sync_req(&a, gen, vec![]);
    other.group_id = GroupId("nope".into());
    assert_eq!(code(&mut h, other), E::UnknownMemberId);
}

#[test]
fn a_rebalance_during_completing_rebalance_fails_waiting_syncs() {
    let mut h = Harness::new(0);
    let (a, ta) = h.join_new("a");
    h.join_reply(ta);
    let (b, tb) = h.join_new("b");
    let ta = h.join(join_req(&a.0)).unwrap();
    h.join_reply(ta);
    h.join_reply(tb);
    let tsb = h.sync(sync_req(&b, 2, vec![])).unwrap();
    // A third member arrives before the leader synced.
    let _ = h.join_new("c");
    assert_eq!(h.sync_reply(tsb).error, Some(E::RebalanceInProgress));
    assert_eq!(h.state(), GroupState::PreparingRebalance);
}

#[test]
fn a_leader_that_never_syncs_is_removed_after_the_rebalance_timeout() {
    let mut h = Harness::new(0);
    let (a, ta) = h.join_new("a");
    h.join_reply(ta);
    let (b, tb) = h.join_new("b");
    let ta = h.join(join_req(&a.0)).unwrap();
    h.join_reply(ta);
    h.join_reply(tb);
    let tsb = h.sync(sync_req(&b, 2, vec![])).unwrap();
    // a heartbeats (so its session never runs out) but never syncs.
    for _ in 0..6 {
        h.advance(3_000);
        assert_eq!(h.heartbeat(&a, 2), Ok(()));
    }
    assert!(h.done.is_empty());
    h.advance_to(20_000);
    assert_eq!(h.sync_reply(tsb).error, Some(E::RebalanceInProgress));
    assert_eq!(h.heartbeat(&a, 2), Err(E::UnknownMemberId));
    let tb = h.join(join_req(&b.0)).unwrap();
    let r = h.join_reply(tb);
    assert_eq!((r.generation_id, r.leader), (GenerationId(3), b));
}

#[test]
fn heartbeat_errors() {
    let mut h = Harness::new(0);
    let (a, b, gen) = stable_pair(&mut h);
    assert_eq!(h.heartbeat(&a, gen), Ok(()));
    assert_eq!(h.heartbeat(&a, gen - 1), Err(E::IllegalGeneration));
    assert_eq!(
        h.heartbeat(&MemberId("x".into()), gen),
        Err(E::UnknownMemberId)
    );
    let unknown_group = h.c.heartbeat(
        Millis(h.now),
        &HeartbeatRequest {
            group_id: GroupId("other".into()),
            generation_id: GenerationId(1),
            member_id: a.clone(),
            group_instance_id: None,
        },
    );
    assert_eq!(unknown_group.unwrap_err().code(), E::UnknownMemberId);
    h.join(join_req(&a.0)).unwrap();
    assert_eq!(h.heartbeat(&b, gen), Err(E::RebalanceInProgress));
}

#[test]
fn a_silent_member_is_removed_after_its_session_timeout() {
    let mut h = Harness::new(0);
    let (a, b, gen) = stable_pair(&mut h);
    // a keeps heartbeating, b goes silent.
    for _ in 0..3 {
        h.advance(3_000);
        assert_eq!(h.heartbeat(&a, gen), Ok(()));
    }
    h.advance(1_000);
    assert_eq!(
        h.state(),
        GroupState::PreparingRebalance,
        "b expired at 10 s"
    );
    assert_eq!(h.heartbeat(&a, gen), Err(E::RebalanceInProgress));
    assert_eq!(h.heartbeat(&b, gen), Err(E::UnknownMemberId));
    let ta = h.join(join_req(&a.0)).unwrap();
    let r = h.join_reply(ta);
    assert_eq!(r.generation_id, GenerationId(gen + 1));
    assert_eq!(r.members.len(), 1);
}

#[test]
fn the_last_member_leaving_empties_the_group() {
    let mut h = Harness::new(0);
    let (a, ta) = h.join_new("a");
    h.join_reply(ta);
    let t = h.sync(sync_req(&a, 1, vec![])).unwrap();
    h.sync_reply(t);
    let r = h.leave(vec![leave_member(&a)]);
    assert_eq!(r.members[0].error, None);
    assert_eq!(h.state(), GroupState::Empty);
    assert_eq!(h.c.next_deadline(), None);
}

#[test]
fn leave_in_batches_with_per_member_errors() {
    let mut h = Harness::new(0);
    let (a, b, _) = stable_pair(&mut h);
    let tp = h.join(join_req("")).unwrap();
    let pending = h.join_reply(tp).member_id;
    let r = h.leave(vec![
        leave_member(&b),
        leave_member(&MemberId("ghost".into())),
        leave_member(&pending),
        LeaveMember {
            member_id: MemberId::default(),
            group_instance_id: Some(InstanceId("nobody".into())),
        },
    ]);
    assert_eq!(r.error, None);
    let errors: Vec<_> = r.members.iter().map(|m| m.error).collect();
    assert_eq!(
        errors,
        vec![
            None,
            Some(E::UnknownMemberId),
            None,
            Some(E::UnknownMemberId)
        ]
    );
    assert_eq!(h.heartbeat(&a, 2), Err(E::RebalanceInProgress));
    let unknown =
        h.c.leave(
            Millis(0),
            &LeaveRequest {
                group_id: GroupId("none".into()),
                members: vec![leave_member(&a)],
            },
        )
        .unwrap()
        .0;
    assert_eq!(unknown.error, None);
    assert_eq!(unknown.members[0].error, Some(E::UnknownMemberId));
}

#[test]
fn leaving_answers_the_members_own_waiting_join() {
    let mut h = Harness::new(0);
    let (a, b, _) = stable_pair(&mut h);
    let ta = h.join(join_req(&a.0)).unwrap();
    let r = h.leave(vec![leave_member(&a)]);
    assert_eq!(r.members[0].error, None);
    assert_eq!(h.join_reply(ta).error, Some(E::UnknownMemberId));
    let tb = h.join(join_req(&b.0)).unwrap();
    let rb = h.join_reply(tb);
    assert_eq!(rb.leader, b, "a new leader among those who rejoined");
}

fn static_join(instance: &str, member: &str) -> JoinRequest {
    let mut r = join_req(member);
    r.group_instance_id = Some(InstanceId(instance.into()));
    r
}

#[test]
fn static_member_restart_replaces_the_old_member_without_rebalance() {
    let mut h = Harness::new(0);
    let t = h.join(static_join("i1", "")).unwrap();
    let r = h.join_reply(t);
    assert_eq!(r.error, None, "static members skip KIP-394");
    let old = r.member_id;
    let t = h
        .sync(sync_req(
            &old,
            1,
            vec![(old.clone(), Bytes::from_static(b"P"))],
        ))
        .unwrap();
    h.sync_reply(t);
    // The process restarts: same instance id, no member id.
    let t = h.join(static_join("i1", "")).unwrap();
    let r = h.join_reply(t);
    assert_eq!(r.error, None);
    assert_ne!(r.member_id, old);
    assert_eq!(r.generation_id, GenerationId(1), "no rebalance");
    assert_eq!(
        r.leader, old,
        "Kafka answers with the leader id it announced"
    );
    assert_eq!(h.state(), GroupState::Stable);
    let new = r.member_id;
    let t = h.sync(sync_req(&new, 1, vec![])).unwrap();
    assert_eq!(
        h.sync_reply(t).assignment,
        Bytes::from_static(b"P"),
        "keeps its part"
    );
    // The old incarnation is fenced.
    let hb = h.c.heartbeat(
        Millis(h.now),
        &HeartbeatRequest {
            group_id: g(),
            generation_id: GenerationId(1),
            member_id: old.clone(),
            group_instance_id: Some(InstanceId("i1".into())),
        },
    );
    assert_eq!(hb.unwrap_err().code(), E::FencedInstanceId);
    assert_eq!(
        h.join(static_join("i1", &old.0)).unwrap_err().code(),
        E::FencedInstanceId
    );
    let mut s = sync_req(&old, 1, vec![]);
    s.group_instance_id = Some(InstanceId("i1".into()));
    assert_eq!(h.sync(s).unwrap_err().code(), E::FencedInstanceId);
    // Leaving by instance id.
    let r = h.leave(vec![LeaveMember {
        member_id: MemberId::default(),
        group_instance_id: Some(InstanceId("i1".into())),
    }]);
    assert_eq!(r.members[0].error, None);
    assert_eq!(h.state(), GroupState::Empty);
}

#[test]
fn static_member_restart_with_another_protocol_rebalances() {
    let mut h = Harness::new(0);
    let t = h.join(static_join("i1", "")).unwrap();
    let old = h.join_reply(t).member_id;
    let t = h.sync(sync_req(&old, 1, vec![])).unwrap();
    h.sync_reply(t);
    let mut r = static_join("i1", "");
    r.protocols = vec![proto("roundrobin", b"")];
    let t = h.join(r).unwrap();
    let r = h.join_reply(t);
    assert_eq!(r.generation_id, GenerationId(2));
    assert_eq!(r.protocol_name.as_deref(), Some("roundrobin"));
}

#[test]
fn commit_checks() {
    let mut h = Harness::new(0);
    let now = Millis(0);
    let none = MemberId::default();
    let other = GroupId("assign-only".into());
    // Simple commit for an unknown group: allowed, and the group appears.
    assert_eq!(
        h.c.validate_commit(now, &other, GenerationId(-1), &none, None),
        Ok(())
    );
    assert_eq!(h.c.describe(&other).state, GroupState::Empty);
    // A generation for an unknown group.
    let err =
        h.c.validate_commit(
            now,
            &GroupId("x".into()),
            GenerationId(3),
            &MemberId("m".into()),
            None,
        )
        .unwrap_err();
    assert_eq!(err.code(), E::IllegalGeneration);

    let (a, ta) = h.join_new("a");
    h.join_reply(ta);
    let check = |h: &mut Harness, gen: i32, m: &MemberId| {
        h.c.validate_commit(Millis(h.now), &g(), GenerationId(gen), m, None)
            .map_err(|e| e.code())
    };
    assert_eq!(
        check(&mut h, 1, &a),
        Err(E::RebalanceInProgress),
        "CompletingRebalance"
    );
    assert_eq!(
        check(&mut h, -1, &none),
        Err(E::UnknownMemberId),
        "group has members"
    );
    let t = h.sync(sync_req(&a, 1, vec![])).unwrap();
    h.sync_reply(t);
    assert_eq!(check(&mut h, 1, &a), Ok(()));
    assert_eq!(check(&mut h, 0, &a), Err(E::IllegalGeneration));
    assert_eq!(
        check(&mut h, 1, &MemberId("b".into())),
        Err(E::UnknownMemberId)
    );
    // During PreparingRebalance the current generation may still commit.
    let _ = h.join_new("b");
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    assert_eq!(check(&mut h, 1, &a), Ok(()));
}

#[test]
fn describe_and_list() {
    let mut h = Harness::new(0);
    let (a, b, _) = stable_pair(&mut h);
    let v = h.c.describe(&g());
    assert_eq!(v.state_name, "Stable");
    assert_eq!(v.protocol_type, "consumer");
    assert_eq!(v.protocol, "range");
    let ids: Vec<_> = v.members.iter().map(|m| m.member_id.clone()).collect();
    assert_eq!(ids, vec![a.clone(), b]);
    assert_eq!(v.members[0].assignment, Bytes::from_static(b"A"));
    assert_eq!(v.members[0].metadata, Bytes::from_static(b"sub"));
    assert_eq!(v.members[0].client_id, "client", "as of its last join");
    assert_eq!(v.members[0].client_host, "/127.0.0.1");
    h.join(join_req(&a.0)).unwrap();
    let v = h.c.describe(&g());
    assert_eq!(v.state_name, "PreparingRebalance");
    assert_eq!(v.protocol, "");
    assert_eq!(v.members[0].assignment, Bytes::new());
    assert_eq!(h.c.describe(&GroupId("zz".into())).state_name, "Dead");
    h.c.validate_commit(
        Millis(0),
        &GroupId("e".into()),
        GenerationId(-1),
        &MemberId::default(),
        None,
    )
    .unwrap();
    let all = h.c.list(&[]);
    assert_eq!(all.len(), 2);
    let empty = h.c.list(&["empty".to_string()]);
    assert_eq!(empty.len(), 1);
    assert_eq!(empty[0].group_id, GroupId("e".into()));
    assert_eq!(empty[0].protocol_type, "");
    assert_eq!(
        GroupState::CompletingRebalance.as_str(),
        "CompletingRebalance"
    );
}

#[test]
fn delete_group() {
    let mut h = Harness::new(0);
    let (_a, _t) = h.join_new("a");
    assert_eq!(h.c.delete_group(&g()).unwrap_err().code(), E::NonEmptyGroup);
    assert_eq!(
        h.c.delete_group(&GroupId("x".into())).unwrap_err().code(),
        E::GroupIdNotFound
    );
    let e = GroupId("e".into());
    h.c.validate_commit(Millis(0), &e, GenerationId(-1), &MemberId::default(), None)
        .unwrap();
    assert_eq!(h.c.delete_group(&e), Ok(()));
    assert_eq!(h.c.describe(&e).state, GroupState::Dead);
}

#[test]
fn limits_are_named_and_typed() {
    let mut cfg = test_config(0);
    cfg.limits.members_per_group = 2;
    cfg.limits.groups = 2;
    cfg.limits.metadata_bytes = 8;
    cfg.limits.assignment_bytes = 4;
    let mut h = Harness::new(0);
    h.c = Coordinator::new(cfg);
    let (a, ta) = h.join_new("a");
    h.join_reply(ta);
    // One pending id fills the group; a third is refused.
    let t = h.join(join_req("")).unwrap();
    h.join_reply(t);
    let err = h.join(join_req("")).unwrap_err();
    assert!(matches!(
        err,
        GroupError::Limit {
            what: Limit::MembersPerGroup,
            len: 3,
            max: 2
        }
    ));
    assert_eq!(err.code(), E::GroupMaxSizeReached);
    let mut big = join_req(&a.0);
    big.protocols = vec![proto("range", b"123456789")];
    let err = h.join(big).unwrap_err();
    assert!(matches!(
        err,
        GroupError::Limit {
            what: Limit::MetadataBytes,
            ..
        }
    ));
    let err = h.join(join_req(&"m".repeat(256))).unwrap_err();
    assert_eq!(err.code(), E::UnknownMemberId);
    let err = h
        .sync(sync_req(
            &a,
            1,
            vec![(a.clone(), Bytes::from_static(b"12345"))],
        ))
        .unwrap_err();
    assert!(matches!(
        err,
        GroupError::Limit {
            what: Limit::AssignmentBytes,
            ..
        }
    ));
    // Groups: the idle Empty group is evicted for a new one; the busy one
    // is not.
    let none = MemberId::default();
    let e1 = GroupId("e1".into());
    let e2 = GroupId("e2".into());
    h.c.validate_commit(Millis(0), &e1, GenerationId(-1), &none, None)
        .unwrap();
    h.c.validate_commit(Millis(1), &e2, GenerationId(-1), &none, None)
        .unwrap();
    assert_eq!(h.c.describe(&e1).state, GroupState::Dead, "evicted");
    assert_eq!(h.c.describe(&g()).state, GroupState::CompletingRebalance);
    let mut r = join_req("");
    r.group_id = GroupId("busy".into());
    h.c.join(Millis(2), RequestToken(99), r).unwrap();
    let mut r = join_req("");
    r.group_id = GroupId("busy2".into());
    let err = h.c.join(Millis(2), RequestToken(100), r).unwrap_err();
    assert!(matches!(
        err,
        GroupError::Limit {
            what: Limit::Groups,
            ..
        }
    ));
    assert_eq!(err.code(), E::CoordinatorNotAvailable);
}

/// A range assignor over sorted members, as a consumer leader would run.
pub(super) fn range_assign(members: &[MemberId], partitions: u32) -> Vec<(MemberId, Bytes)> {
    let mut sorted = members.to_vec();
    sorted.sort();
    let n = sorted.len() as u32;
    sorted
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let parts: Vec<u8> = (0..partitions)
                .filter(|p| p % n == i as u32)
                .map(|p| p as u8)
                .collect();
            (m.clone(), Bytes::from(parts))
        })
        .collect()
}

/// Issue 14's acceptance shape: three members over 6 partitions; one
/// leaves, one dies silently; after each rebalance the members' parts
/// cover every partition exactly once.
#[test]
fn three_members_six_partitions_leave_and_silent_death() {
    let mut h = Harness::new(3_000);
    let (m1, t1) = h.join_new("c1");
    let (m2, t2) = h.join_new("c2");
    let (m3, t3) = h.join_new("c3");
    // c2 and c3 arrived during the initial delay: it is extended once.
    h.advance(3_000);
    assert!(h.done.is_empty());
    h.advance(3_000);
    let round = |h: &mut Harness, joins: Vec<(MemberId, RequestToken)>| {
        let replies: Vec<_> = joins
            .iter()
            .map(|(m, t)| (m.clone(), h.join_reply(*t)))
            .collect();
        let leader = replies[0].1.leader.clone();
        let generation = replies[0].1.generation_id;
        let mut syncs = Vec::new();
        for (m, r) in &replies {
            assert_eq!(r.error, None);
            assert_eq!(r.generation_id, generation);
            let assignments = if *m == leader {
                let ids: Vec<MemberId> = r.members.iter().map(|x| x.member_id.clone()).collect();
                assert_eq!(ids.len(), replies.len());
                range_assign(&ids, 6)
            } else {
                Vec::new()
            };
            syncs.push((
                m.clone(),
                h.sync(sync_req(m, generation.0, assignments)).unwrap(),
            ));
        }
        let mut covered = Vec::new();
        let mut parts = std::collections::BTreeMap::new();
        for (m, t) in syncs {
            let r = h.sync_reply(t);
            assert_eq!(r.error, None);
            covered.extend(r.assignment.iter().copied());
            parts.insert(m, r.assignment);
        }
        covered.sort();
        assert_eq!(
            covered,
            (0..6).collect::<Vec<u8>>(),
            "every partition exactly once"
        );
        assert_eq!(h.state(), GroupState::Stable);
        (generation.0, parts)
    };
    let (mut gen, mut parts) = round(
        &mut h,
        vec![(m1.clone(), t1), (m2.clone(), t2), (m3.clone(), t3)],
    );
    assert_eq!(gen, 1);
    assert_eq!(parts.len(), 3);
    // m3 leaves; m1 and m2 learn it from their heartbeats and rejoin.
    h.advance(1_000);
    h.leave(vec![leave_member(&m3)]);
    assert_eq!(h.heartbeat(&m1, gen), Err(E::RebalanceInProgress));
    assert_eq!(h.heartbeat(&m2, gen), Err(E::RebalanceInProgress));
    let t1 = h.join(join_req(&m1.0)).unwrap();
    let t2 = h.join(join_req(&m2.0)).unwrap();
    (gen, parts) = round(&mut h, vec![(m1.clone(), t1), (m2.clone(), t2)]);
    assert_eq!((gen, parts.len()), (2, 2));
    // m2 is SIGKILLed: no heartbeat, no leave. m1 keeps heartbeating.
    let mut rebalancing = false;
    for _ in 0..6 {
        h.advance(3_000);
        match h.heartbeat(&m1, gen) {
            Ok(()) => {}
            Err(E::RebalanceInProgress) => {
                rebalancing = true;
                break;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(rebalancing, "m2's session timed out");
    let t1 = h.join(join_req(&m1.0)).unwrap();
    (gen, parts) = round(&mut h, vec![(m1.clone(), t1)]);
    assert_eq!(gen, 3);
    assert_eq!(parts[&m1], Bytes::from((0..6).collect::<Vec<u8>>()));
}

#[test]
fn a_rejoin_in_completing_rebalance_with_the_same_metadata_gets_the_generation_again() {
    let mut h = Harness::new(0);
    let (a, ta) = h.join_new("a");
    let first = h.join_reply(ta);
    // The leader lost its answer and joins again: same generation, same
    // member list, no new rebalance.
    let ta = h.join(join_req(&a.0)).unwrap();
    let again = h.join_reply(ta);
    assert_eq!(again, first);
    assert_eq!(h.state(), GroupState::CompletingRebalance);
}

#[test]
fn a_second_join_from_the_same_member_replaces_the_first() {
    let mut h = Harness::new(0);
    let (a, b, _) = stable_pair(&mut h);
    let t1 = h.join(join_req(&a.0)).unwrap();
    let t2 = h.join(join_req(&a.0)).unwrap();
    assert_eq!(h.join_reply(t1).error, Some(E::RebalanceInProgress));
    let tb = h.join(join_req(&b.0)).unwrap();
    assert_eq!(h.join_reply(t2).generation_id, GenerationId(3));
    assert_eq!(h.join_reply(tb).generation_id, GenerationId(3));
}

#[test]
fn tick_does_nothing_before_the_next_deadline() {
    let mut h = Harness::new(0);
    let (a, b, _) = stable_pair(&mut h);
    let d = h.c.next_deadline().unwrap();
    assert_eq!(d, Millis(h.now + 10_000), "the earliest session expiry");
    assert!(h.c.tick(Millis(d.0 - 1)).is_empty());
    assert_eq!(h.state(), GroupState::Stable);
    h.now = d.0 - 1;
    assert_eq!(h.heartbeat(&a, 2), Ok(()));
    assert_eq!(h.heartbeat(&b, 2), Ok(()));
    assert_eq!(h.c.next_deadline(), Some(Millis(d.0 - 1 + 10_000)));
}

#[test]
fn leaving_with_someone_elses_instance_id_is_fenced() {
    let mut h = Harness::new(0);
    let t = h.join(static_join("i1", "")).unwrap();
    let m = h.join_reply(t).member_id;
    let r = h.leave(vec![LeaveMember {
        member_id: MemberId("impostor".into()),
        group_instance_id: Some(InstanceId("i1".into())),
    }]);
    assert_eq!(r.members[0].error, Some(E::FencedInstanceId));
    let r = h.leave(vec![LeaveMember {
        member_id: m,
        group_instance_id: Some(InstanceId("i1".into())),
    }]);
    assert_eq!(r.members[0].error, None);
}

#[test]
fn an_absent_static_member_keeps_its_place_through_a_rebalance() {
    let mut h = Harness::new(0);
    let (a, ta) = h.join_new("a");
    h.join_reply(ta);
    let mut s_req = static_join("s", "");
    s_req.session_timeout_ms = 30_000;
    let ts = h.join(s_req.clone()).unwrap();
    let ta = h.join(join_req(&a.0)).unwrap();
    h.join_reply(ta);
    let s = h.join_reply(ts).member_id;
    let t = h.sync(sync_req(&a, 2, vec![])).unwrap();
    h.sync_reply(t);
    // s's process goes down. b arrives; a rejoins; s cannot.
    let (b, tb) = h.join_new("b");
    let ta = h.join(join_req(&a.0)).unwrap();
    h.advance(20_000);
    let ra = h.join_reply(ta);
    h.join_reply(tb);
    assert_eq!(ra.generation_id, GenerationId(3));
    assert_eq!(ra.leader, a);
    let listed: Vec<_> = ra.members.iter().map(|m| m.member_id.clone()).collect();
    assert_eq!(
        listed,
        vec![a.clone(), s.clone(), b.clone()],
        "s is still a member"
    );
    let t = h
        .sync(sync_req(
            &a,
            3,
            vec![
                (s.clone(), Bytes::from_static(b"S")),
                (b.clone(), Bytes::from_static(b"B")),
            ],
        ))
        .unwrap();
    h.sync_reply(t);
    assert_eq!(h.state(), GroupState::Stable);
    // s restarts within its session timeout: it takes its place back,
    // with its part, and nobody rebalances.
    let t = h.join(s_req.clone()).unwrap();
    let r = h.join_reply(t);
    assert_eq!(r.generation_id, GenerationId(3));
    let t = h.sync(sync_req(&r.member_id, 3, vec![])).unwrap();
    assert_eq!(h.sync_reply(t).assignment, Bytes::from_static(b"S"));
    assert_eq!(h.state(), GroupState::Stable);
}

#[test]
fn a_static_member_that_never_returns_is_removed_by_its_session_timeout() {
    let mut h = Harness::new(0);
    let mut s_req = static_join("s", "");
    s_req.session_timeout_ms = 30_000;
    let ts = h.join(s_req.clone()).unwrap();
    let s = h.join_reply(ts).member_id;
    let (a, ta) = h.join_new("a");
    s_req.member_id = s.clone();
    let ts = h.join(s_req).unwrap();
    h.join_reply(ta);
    h.join_reply(ts);
    let t = h.sync(sync_req(&s, 2, vec![])).unwrap();
    let ta = h.sync(sync_req(&a, 2, vec![])).unwrap();
    h.sync_reply(t);
    h.sync_reply(ta);
    // s goes down; a leaves. When the phase ends only the absent static
    // member is left: the group waits until its session expires (30 s
    // after its last sign of life), then empties.
    h.leave(vec![leave_member(&a)]);
    h.advance(25_000);
    assert_eq!(h.state(), GroupState::PreparingRebalance);
    assert_eq!(h.c.describe(&g()).members.len(), 1);
    h.advance(5_000);
    assert_eq!(h.state(), GroupState::Empty);
    assert!(h.done.is_empty());
}
