//! Which nodes are alive, as the metadata leader sees it.
//!
//! Every node sends the leader a heartbeat (a control RPC) every
//! [`heartbeat_interval`]; a node the leader has not heard from for
//! `node_timeout` is dead. openraft 0.9's metrics were not usable for this:
//! they expose, per follower, only the last *matched log id*, which does
//! not move while the metadata is idle, and the leader-wide
//! `millis_since_quorum_ack` says nothing about a single node. A heartbeat
//! also proves more than raft does: the node's control core is running.
//!
//! A new leader knows nothing of the past, so it gives every node a grace
//! period of one `node_timeout` from the moment it took over
//! ([`Liveness::leading_in`]) before it declares anyone dead.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::model::NodeId;

/// Heartbeats per node timeout: a node is declared dead only after several
/// consecutive heartbeats were missed.
pub const HEARTBEATS_PER_TIMEOUT: u32 = 4;
/// Bounds of the heartbeat interval whatever the timeout.
pub const HEARTBEAT_INTERVAL_MIN: Duration = Duration::from_millis(50);
pub const HEARTBEAT_INTERVAL_MAX: Duration = Duration::from_secs(1);

/// How often a node heartbeats (and the controller looks) for a timeout.
pub fn heartbeat_interval(node_timeout: Duration) -> Duration {
    (node_timeout / HEARTBEATS_PER_TIMEOUT).clamp(HEARTBEAT_INTERVAL_MIN, HEARTBEAT_INTERVAL_MAX)
}

/// Last heartbeat per node. Control-plane only (a few updates per second
/// per node), hence a plain mutex.
#[derive(Debug)]
pub struct Liveness {
    local: NodeId,
    timeout: Duration,
    state: Mutex<LivenessState>,
}

#[derive(Debug)]
struct LivenessState {
    /// When this node last started to track liveness (became leader).
    since: Instant,
    /// The raft term in which this node started tracking.
    term: Option<u64>,
    last_seen: HashMap<NodeId, Instant>,
}

impl Liveness {
    pub fn new(local: NodeId, timeout: Duration) -> Liveness {
        Liveness {
            local,
            timeout,
            state: Mutex::new(LivenessState {
                since: Instant::now(),
                term: None,
                last_seen: HashMap::new(),
            }),
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Called with the raft term whenever this node acts as leader: the
    /// first call in a new term starts a new grace period (heartbeats went
    /// to the previous leader until now).
    pub fn leading_in(&self, term: u64, now: Instant) {
        let mut state = self.lock();
        if state.term != Some(term) {
            state.term = Some(term);
            state.since = now;
            state.last_seen.clear();
        }
    }

    pub fn heard_from(&self, node: NodeId, now: Instant) {
        self.lock().last_seen.insert(node, now);
    }

    /// Whether `node` counts as alive at `now`.
    pub fn is_alive(&self, node: NodeId, now: Instant) -> bool {
        if node == self.local {
            return true;
        }
        let state = self.lock();
        let last = state
            .last_seen
            .get(&node)
            .copied()
            .unwrap_or(state.since)
            .max(state.since);
        now.saturating_duration_since(last) <= self.timeout
    }

    /// Liveness of each of `nodes` at `now`.
    pub fn snapshot(
        &self,
        nodes: impl Iterator<Item = NodeId>,
        now: Instant,
    ) -> BTreeMap<NodeId, bool> {
        nodes.map(|n| (n, self.is_alive(n, now))).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LivenessState> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (single inserts/clears), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::nid;

    #[test]
    fn grace_period_then_timeout_then_heartbeat() {
        let t0 = Instant::now();
        let timeout = Duration::from_millis(1000);
        let liveness = Liveness::new(nid(1), timeout);
        liveness.leading_in(6, t0);
        assert!(
            liveness.is_alive(nid(2), t0 + Duration::from_millis(900)),
            "grace period"
        );
        assert!(!liveness.is_alive(nid(2), t0 + Duration::from_millis(1100)));
        assert!(
            liveness.is_alive(nid(1), t0 + Duration::from_secs(100)),
            "self is alive"
        );
        liveness.heard_from(nid(2), t0 + Duration::from_millis(1500));
        assert!(liveness.is_alive(nid(2), t0 + Duration::from_millis(2400)));
        assert!(!liveness.is_alive(nid(2), t0 + Duration::from_millis(2600)));
        // A new leadership forgets old heartbeats but grants a new grace.
        liveness.leading_in(7, t0 + Duration::from_secs(10));
        liveness.leading_in(7, t0 + Duration::from_secs(11));
        assert!(liveness.is_alive(nid(2), t0 + Duration::from_millis(10_500)));
        assert!(!liveness.is_alive(nid(2), t0 + Duration::from_millis(11_100)));
    }

    #[test]
    fn heartbeat_interval_is_a_fraction_of_the_timeout_within_bounds() {
        assert_eq!(
            heartbeat_interval(Duration::from_secs(2)),
            Duration::from_millis(500)
        );
        assert_eq!(
            heartbeat_interval(Duration::from_millis(10)),
            HEARTBEAT_INTERVAL_MIN
        );
        assert_eq!(
            heartbeat_interval(Duration::from_secs(60)),
            HEARTBEAT_INTERVAL_MAX
        );
    }
}
