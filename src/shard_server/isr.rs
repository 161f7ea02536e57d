//! The partition leader's view of its followers: each follower's log end
//! (its last fetch offset) and when it was last caught up, and the two
//! decisions taken from them — the high watermark (what every in-sync
//! replica has) and ISR changes (shrink the laggards, expand the caught-up).
//!
//! Pure: no I/O, no clock of its own (`now` is passed in), so the rules are
//! unit- and property-tested here and the shard only feeds it fetches and
//! table updates.
//!
//! The rules follow Kafka's:
//! * A follower is *caught up* at a fetch when its fetch offset reaches the
//!   leader's log end at that fetch, or the leader's log end at its previous
//!   fetch (under steady load the log end always moves, so "reached the end
//!   as it was when you last asked" is what catching up means).
//! * High watermark = min(leader's stable offset, log end of every ISR
//!   member). An ISR member that has not fetched since this leader took
//!   over has an unknown log end and holds the high watermark where it is.
//! * Shrink: an ISR follower not caught up for longer than the lag time.
//!   Expand: a replica outside the ISR whose log end reached both the high
//!   watermark and the start of this leader's epoch (so it holds everything
//!   this leader wrote).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use shards::types::Offset;

use crate::model::NodeId;

/// What the leader knows of one follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FollowerProgress {
    /// The follower's durable log end: the offset of its last fetch. `None`
    /// until it fetches from this leader (in this epoch).
    pub log_end: Option<Offset>,
    /// The leader's log end when this follower last fetched.
    last_fetch_leader_end: Option<Offset>,
    last_fetch_at: Option<Instant>,
    /// Last time the follower was caught up (starts at the leader's
    /// takeover, so every follower gets one lag time to show up).
    last_caught_up_at: Instant,
}

/// One replica's progress as reported by `describe` and `/metrics`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaLag {
    pub node: NodeId,
    /// `None` while the follower has not fetched from this leader yet.
    pub log_end: Option<Offset>,
    /// Leader log end minus the replica's (the leader's whole log when unknown).
    pub lag: u64,
    pub in_sync: bool,
}

/// Followers of one partition as seen by its leader, for one leader epoch.
#[derive(Clone, Debug)]
pub struct ReplicaTracker {
    local: NodeId,
    replicas: Vec<NodeId>,
    isr: Vec<NodeId>,
    /// The leader's log end when it took this epoch.
    epoch_start: Offset,
    followers: BTreeMap<NodeId, FollowerProgress>,
}

impl ReplicaTracker {
    /// A fresh view at a leader's takeover: `replicas` and `isr` from the
    /// metadata (both include `local`), `epoch_start` = the leader's log end.
    pub fn new(
        local: NodeId,
        replicas: &[NodeId],
        isr: &[NodeId],
        epoch_start: Offset,
        now: Instant,
    ) -> ReplicaTracker {
        let followers = replicas
            .iter()
            .filter(|n| **n != local)
            .map(|n| {
                (
                    *n,
                    FollowerProgress {
                        log_end: None,
                        last_fetch_leader_end: None,
                        last_fetch_at: None,
                        last_caught_up_at: now,
                    },
                )
            })
            .collect();
        ReplicaTracker {
            local,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            epoch_start,
            followers,
        }
    }

    pub fn is_replica(&self, node: NodeId) -> bool {
        self.followers.contains_key(&node)
    }

    /// Every replica, leader included, in assignment order.
    pub fn replicas(&self) -> &[NodeId] {
        &self.replicas
    }

    pub fn isr(&self) -> &[NodeId] {
        &self.isr
    }

    pub fn epoch_start(&self) -> Offset {
        self.epoch_start
    }

    pub fn follower(&self, node: NodeId) -> Option<&FollowerProgress> {
        self.followers.get(&node)
    }

    /// The committed ISR changed (the table caught up with a proposal, or
    /// the controller moved it).
    pub fn set_isr(&mut self, isr: &[NodeId]) {
        self.isr = isr.to_vec();
    }

    /// Records a fetch at `fetch_offset` by `node` (a replica: the caller
    /// checked) while the leader's log end is `leader_end`. `fetch_offset`
    /// is at most `leader_end` (the caller refuses anything beyond).
    pub fn record_fetch(
        &mut self,
        node: NodeId,
        fetch_offset: Offset,
        leader_end: Offset,
        now: Instant,
    ) {
        debug_assert!(fetch_offset <= leader_end);
        let Some(follower) = self.followers.get_mut(&node) else {
            return;
        };
        if fetch_offset >= leader_end {
            follower.last_caught_up_at = follower.last_caught_up_at.max(now);
        } else if let (Some(previous_end), Some(previous_at)) =
            (follower.last_fetch_leader_end, follower.last_fetch_at)
        {
            if fetch_offset >= previous_end {
                follower.last_caught_up_at = follower.last_caught_up_at.max(previous_at);
            }
        }
        follower.log_end = Some(fetch_offset);
        follower.last_fetch_leader_end = Some(leader_end);
        follower.last_fetch_at = Some(now);
    }

    /// The high watermark the ISR allows: min(`leader_stable`, log end of
    /// every ISR follower). `None` while an ISR follower's log end is
    /// unknown (the high watermark then stays where it is).
    pub fn high_watermark(&self, leader_stable: Offset) -> Option<Offset> {
        let mut hw = leader_stable;
        for node in self.isr.iter().filter(|n| **n != self.local) {
            // An ISR member that is not a replica cannot happen in valid
            // metadata; treat it as unknown rather than ignoring it.
            let end = self.followers.get(node)?.log_end?;
            hw = hw.min(end);
        }
        Some(hw)
    }

    /// The ISR this leader should propose, if it differs from the current
    /// one: laggards (not caught up within `lag_time_max`) removed, caught-up
    /// replicas (log end ≥ `high_watermark` and ≥ the epoch start) added.
    /// Replica order is kept; the leader always stays.
    pub fn proposed_isr(
        &self,
        now: Instant,
        lag_time_max: Duration,
        high_watermark: Offset,
    ) -> Option<Vec<NodeId>> {
        let proposed: Vec<NodeId> = self
            .replicas
            .iter()
            .copied()
            .filter(|node| {
                if *node == self.local {
                    return true;
                }
                let Some(follower) = self.followers.get(node) else {
                    return false;
                };
                if self.isr.contains(node) {
                    now.saturating_duration_since(follower.last_caught_up_at) <= lag_time_max
                } else {
                    follower
                        .log_end
                        .is_some_and(|end| end >= high_watermark && end >= self.epoch_start)
                }
            })
            .collect();
        let same =
            proposed.len() == self.isr.len() && proposed.iter().all(|n| self.isr.contains(n));
        (!same).then_some(proposed)
    }

    /// Every replica's progress against the leader's log end (the leader
    /// itself first, lag 0).
    pub fn progress(&self, leader_end: Offset) -> Vec<ReplicaLag> {
        let mut all = vec![ReplicaLag {
            node: self.local,
            log_end: Some(leader_end),
            lag: 0,
            in_sync: true,
        }];
        for (node, follower) in &self.followers {
            all.push(ReplicaLag {
                node: *node,
                log_end: follower.log_end,
                lag: leader_end
                    .0
                    .saturating_sub(follower.log_end.map_or(0, |end| end.0)),
                in_sync: self.isr.contains(node),
            });
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{nid, nids};
    use proptest::prelude::*;

    const LAG: Duration = Duration::from_secs(2);

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    fn tracker(start: Instant) -> ReplicaTracker {
        ReplicaTracker::new(
            nid(1),
            &[nid(1), nid(2), nid(3)],
            &[nid(1), nid(2), nid(3)],
            Offset(10),
            start,
        )
    }

    #[test]
    fn high_watermark_waits_for_every_isr_member() {
        let t0 = Instant::now();
        let mut tracker = tracker(t0);
        assert_eq!(
            tracker.high_watermark(Offset(20)),
            None,
            "no follower fetched yet"
        );
        tracker.record_fetch(nid(2), Offset(15), Offset(20), t0);
        assert_eq!(
            tracker.high_watermark(Offset(20)),
            None,
            "follower 3 unknown"
        );
        tracker.record_fetch(nid(3), Offset(12), Offset(20), t0);
        assert_eq!(tracker.high_watermark(Offset(20)), Some(Offset(12)));
        tracker.record_fetch(nid(3), Offset(20), Offset(20), t0);
        assert_eq!(tracker.high_watermark(Offset(20)), Some(Offset(15)));
        // The leader's own stable offset bounds it too.
        tracker.record_fetch(nid(2), Offset(20), Offset(20), t0);
        assert_eq!(tracker.high_watermark(Offset(18)), Some(Offset(18)));
        // Out of the ISR, a follower no longer holds the watermark back.
        tracker.record_fetch(nid(3), Offset(19), Offset(25), t0);
        assert_eq!(tracker.high_watermark(Offset(25)), Some(Offset(19)));
        tracker.set_isr(&[nid(1), nid(2)]);
        assert_eq!(tracker.high_watermark(Offset(25)), Some(Offset(20)));
    }

    #[test]
    fn sole_leader_commits_what_it_has_synced() {
        let tracker =
            ReplicaTracker::new(nid(1), &[nid(1)], &[nid(1)], Offset::ZERO, Instant::now());
        assert_eq!(tracker.high_watermark(Offset(7)), Some(Offset(7)));
        assert_eq!(tracker.proposed_isr(Instant::now(), LAG, Offset(7)), None);
    }

    #[test]
    fn silent_follower_is_shrunk_after_the_lag_time() {
        let t0 = Instant::now();
        let mut tracker = tracker(t0);
        tracker.record_fetch(nid(2), Offset(10), Offset(10), at(t0, 100));
        tracker.record_fetch(nid(3), Offset(10), Offset(10), at(t0, 100));
        assert_eq!(tracker.proposed_isr(at(t0, 2000), LAG, Offset(10)), None);
        // Follower 2 keeps fetching; 3 goes silent after 100 ms.
        tracker.record_fetch(nid(2), Offset(10), Offset(10), at(t0, 2500));
        assert_eq!(
            tracker.proposed_isr(at(t0, 2101), LAG, Offset(10)),
            Some(nids(&[1, 2]))
        );
    }

    #[test]
    fn slow_follower_that_keeps_fetching_is_shrunk_too() {
        let t0 = Instant::now();
        let mut tracker = tracker(t0);
        tracker.record_fetch(nid(3), Offset(10), Offset(10), at(t0, 0));
        // The leader's log end runs ahead; follower 3 fetches but never
        // reaches even the previous fetch's log end.
        let mut leader_end = 10;
        for step in 1..=30u64 {
            leader_end += 100;
            tracker.record_fetch(
                nid(2),
                Offset(leader_end),
                Offset(leader_end),
                at(t0, step * 100),
            );
            tracker.record_fetch(
                nid(3),
                Offset(10 + step),
                Offset(leader_end),
                at(t0, step * 100),
            );
        }
        assert_eq!(
            tracker.proposed_isr(at(t0, 3000), LAG, Offset(11)),
            Some(nids(&[1, 2]))
        );
    }

    #[test]
    fn follower_reaching_previous_log_end_counts_as_caught_up() {
        let t0 = Instant::now();
        let mut tracker = tracker(t0);
        tracker.record_fetch(nid(2), Offset(10), Offset(10), at(t0, 0));
        tracker.record_fetch(nid(3), Offset(10), Offset(10), at(t0, 0));
        // Under load the follower is always one fetch behind the log end,
        // but it reaches the log end of its previous fetch every time.
        let mut leader_end = 10;
        for step in 1..=50u64 {
            let previous = leader_end;
            leader_end += 5;
            tracker.record_fetch(
                nid(2),
                Offset(previous),
                Offset(leader_end),
                at(t0, step * 100),
            );
            tracker.record_fetch(
                nid(3),
                Offset(leader_end),
                Offset(leader_end),
                at(t0, step * 100),
            );
        }
        assert_eq!(tracker.proposed_isr(at(t0, 5000), LAG, Offset(255)), None);
    }

    #[test]
    fn expansion_needs_the_high_watermark_and_the_epoch_start() {
        let t0 = Instant::now();
        let mut tracker = ReplicaTracker::new(
            nid(1),
            &[nid(1), nid(2), nid(3)],
            &[nid(1), nid(2)],
            Offset(10),
            t0,
        );
        tracker.record_fetch(nid(2), Offset(30), Offset(30), t0);
        tracker.record_fetch(nid(3), Offset(8), Offset(30), t0);
        assert_eq!(
            tracker.proposed_isr(t0, LAG, Offset(8)),
            None,
            "below epoch start"
        );
        tracker.record_fetch(nid(3), Offset(25), Offset(30), t0);
        assert_eq!(tracker.proposed_isr(t0, LAG, Offset(30)), None, "below HW");
        assert_eq!(
            tracker.proposed_isr(t0, LAG, Offset(25)),
            Some(nids(&[1, 2, 3]))
        );
    }

    #[test]
    fn progress_reports_lag_and_membership() {
        let t0 = Instant::now();
        let mut tracker = ReplicaTracker::new(
            nid(1),
            &[nid(1), nid(2), nid(3)],
            &[nid(1), nid(2)],
            Offset(0),
            t0,
        );
        tracker.record_fetch(nid(2), Offset(40), Offset(50), t0);
        let progress = tracker.progress(Offset(50));
        assert_eq!(progress.len(), 3);
        assert_eq!((progress[0].node, progress[0].lag), (nid(1), 0));
        assert_eq!(
            (progress[1].node, progress[1].lag, progress[1].in_sync),
            (nid(2), 10, true)
        );
        assert_eq!(
            (
                progress[2].node,
                progress[2].log_end,
                progress[2].lag,
                progress[2].in_sync
            ),
            (nid(3), None, 50, false)
        );
    }

    /// One step the leader sees: a follower's fetch or time passing.
    #[derive(Clone, Debug)]
    enum Step {
        Append(u64),
        Fetch { node: NodeId, behind: u64 },
        Sleep(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (1u64..50).prop_map(Step::Append),
            (2u64..=3, 0u64..100).prop_map(|(node, behind)| Step::Fetch {
                node: nid(node),
                behind
            }),
            (1u64..1500).prop_map(Step::Sleep),
        ]
    }

    proptest! {
        /// Against a simple model: the high watermark never exceeds what
        /// any ISR member has (nor the leader's stable offset), and equals
        /// the minimum once every ISR member has fetched; a proposed ISR
        /// always keeps the leader, only names replicas, drops exactly the
        /// ISR members silent for longer than the lag time, and adds only
        /// replicas at or past the high watermark.
        #[test]
        fn tracker_matches_model(steps in proptest::collection::vec(step(), 1..80)) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut leader_end = 0u64;
            let mut tracker = ReplicaTracker::new(nid(1), &[nid(1), nid(2), nid(3)], &[nid(1), nid(2), nid(3)], Offset(0), t0);
            // Model: last fetch offset and last caught-up time per follower.
            let mut ends: BTreeMap<NodeId, u64> = BTreeMap::new();
            let mut previous_end: BTreeMap<NodeId, (u64, Instant)> = BTreeMap::new();
            let mut caught_up: BTreeMap<NodeId, Instant> = [(nid(2), t0), (nid(3), t0)].into();
            for step in steps {
                match step {
                    Step::Append(n) => leader_end += n,
                    Step::Sleep(ms) => now += Duration::from_millis(ms),
                    Step::Fetch { node, behind } => {
                        let offset = leader_end.saturating_sub(behind).max(ends.get(&node).copied().unwrap_or(0));
                        tracker.record_fetch(node, Offset(offset), Offset(leader_end), now);
                        if offset >= leader_end {
                            caught_up.insert(node, now);
                        } else if let Some((prev_end, prev_at)) = previous_end.get(&node) {
                            if offset >= *prev_end {
                                let entry = caught_up.get_mut(&node).unwrap();
                                *entry = (*entry).max(*prev_at);
                            }
                        }
                        ends.insert(node, offset);
                        previous_end.insert(node, (leader_end, now));
                    }
                }
                let stable = leader_end;
                let isr: Vec<NodeId> = tracker.isr().to_vec();
                let model_hw = isr.iter().filter(|n| **n != nid(1))
                    .map(|n| ends.get(n).copied())
                    .try_fold(stable, |hw, end| end.map(|e| hw.min(e)));
                prop_assert_eq!(tracker.high_watermark(Offset(stable)), model_hw.map(Offset));
                let hw = model_hw.unwrap_or(0);
                if let Some(proposed) = tracker.proposed_isr(now, LAG, Offset(hw)) {
                    prop_assert!(proposed.contains(&nid(1)));
                    for node in [2, 3] {
                        let silent = now.saturating_duration_since(caught_up[&nid(node)]) > LAG;
                        if isr.contains(&nid(node)) {
                            prop_assert_eq!(proposed.contains(&nid(node)), !silent);
                        } else if proposed.contains(&nid(node)) {
                            prop_assert!(ends[&nid(node)] >= hw);
                        }
                    }
                    // Apply it, as the metadata would.
                    tracker.set_isr(&proposed);
                }
            }
        }
    }
}
