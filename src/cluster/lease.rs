//! The metadata lease: how long this node may act as a partition leader on
//! the metadata it has applied.
//!
//! A node's applied metadata can trail the raft leader's committed state: a
//! restarted node replays its own log before it hears from the leader, an
//! isolated node hears nothing, a new raft leader may not have applied what
//! its predecessor committed. Leading on such metadata — subscribing to a
//! partition's subject, taking appends, serving replica fetches, advancing
//! the high watermark — at an epoch that was already superseded lets a stale
//! node ack writes the real leader never sees, which the stale node then
//! truncates when it learns the new epoch.
//!
//! **The rule.** A node acts as a partition leader only while it holds an
//! unexpired lease. A lease comes from a confirmation round
//! (`MetadataCore::confirm_round`): at `sent_at` the node asks the metadata
//! leader (itself, when it leads) for a read index; the leader confirms its
//! leadership with a quorum (openraft's `get_read_log_id`, a heartbeat round
//! started after the request arrived) and answers its commit index, at least
//! the first entry of its own term; the node waits until it has applied that
//! index; it then holds the lease until `sent_at + lease_duration`.
//!
//! **Why that is safe.** Until the lease ends, no other node can have been
//! made the leader of a partition this node leads in its applied metadata:
//! - everything committed before `sent_at` is applied here;
//! - after `sent_at`, leadership moves away from a node by `ChangeLeader`,
//!   which the controller proposes only for a node the metadata leader has
//!   not heard from for `node_timeout`; the confirming leader heard this
//!   node at or after `sent_at`, and a later metadata leader (elected after
//!   the confirming quorum round) gives every node `node_timeout` of grace
//!   from its election (`Liveness::leading_in`). So no successor is appointed
//!   before `sent_at + node_timeout`;
//! - the other leadership change, `LeaveIsr`, is proposed by the leader
//!   itself.
//!
//! The lease is [`LEASE_FRACTION_PERCENT`] of `node_timeout`: the rest
//! covers the rate drift between two machines' monotonic clocks. Nothing
//! else needs margin: a shard checks the lease against its clock when it
//! admits an append, again right before it acks one, and on every replica
//! fetch, and a successor starts taking writes only after a `ChangeLeader`
//! proposed after `node_timeout` has been committed and applied.
//!
//! **Cost.** While no metadata leader answers (an election after the
//! metadata leader died) no lease is renewed; a partition leader keeps
//! leading through an election only if its lease outlasts it, i.e. if
//! `node_timeout` × 90 % exceeds the heartbeat interval plus the raft
//! election timeout (default: 4.5 s against 1 s + 1–2 s). A failed round is
//! retried every [`LEASE_RETRY_INTERVAL`], so the lease comes back as soon
//! as the new leader has committed its first entry.

use std::time::{Duration, Instant};

/// The lease lasts this percentage of `node_timeout` from the start of the
/// confirmation round that granted it. The tenth left is the margin for
/// clock-rate drift (real clocks drift by well under 0.1 %); with a
/// round every quarter timeout, three rounds in a row can fail before a
/// healthy leader's lease lapses.
pub const LEASE_FRACTION_PERCENT: u32 = 90;

/// After a failed confirmation round (no leader, leader unreachable,
/// election under way) the next one starts after this long instead of a
/// whole heartbeat interval: the lease is running out.
pub const LEASE_RETRY_INTERVAL: Duration = Duration::from_millis(100);

/// How long a confirmation round's lease lasts for `node_timeout`.
pub fn lease_duration(node_timeout: Duration) -> Duration {
    node_timeout * LEASE_FRACTION_PERCENT / 100
}

/// Until when this node's applied metadata is confirmed current (see the
/// module docs). `Copy`, so every shard holds its own copy and checks it
/// against its own clock reading, with no shared state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetadataLease {
    valid_until: Option<Instant>,
}

impl MetadataLease {
    /// No lease: the state of a node that has not been confirmed since it
    /// started.
    pub const NONE: MetadataLease = MetadataLease { valid_until: None };

    /// A lease granted by a round started at `sent_at`.
    pub fn granted(sent_at: Instant, node_timeout: Duration) -> MetadataLease {
        MetadataLease {
            valid_until: Some(sent_at + lease_duration(node_timeout)),
        }
    }

    /// Whether the lease holds at `now` (it ends at `valid_until`, exclusive).
    pub fn is_valid_at(&self, now: Instant) -> bool {
        self.valid_until.is_some_and(|until| now < until)
    }

    pub fn valid_until(&self) -> Option<Instant> {
        self.valid_until
    }

    /// The later of two leases (a slow round finishing after a faster one
    /// must not shorten the lease).
    pub fn max(self, other: MetadataLease) -> MetadataLease {
        if other.valid_until > self.valid_until {
            other
        } else {
            self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_a_fraction_of_the_node_timeout_from_the_round_start() {
        let t0 = Instant::now();
        let lease = MetadataLease::granted(t0, Duration::from_secs(10));
        assert_eq!(lease.valid_until(), Some(t0 + Duration::from_secs(9)));
        assert!(lease.is_valid_at(t0));
        assert!(lease.is_valid_at(t0 + Duration::from_millis(8999)));
        assert!(!lease.is_valid_at(t0 + Duration::from_secs(9)));
        assert!(!MetadataLease::NONE.is_valid_at(t0));
    }

    #[test]
    fn max_keeps_the_later_lease() {
        let t0 = Instant::now();
        let early = MetadataLease::granted(t0, Duration::from_secs(1));
        let late = MetadataLease::granted(t0 + Duration::from_secs(1), Duration::from_secs(1));
        assert_eq!(early.max(late), late);
        assert_eq!(late.max(early), late);
        assert_eq!(MetadataLease::NONE.max(early), early);
        assert_eq!(early.max(MetadataLease::NONE), early);
    }

    #[test]
    fn the_lease_ends_before_the_controller_may_declare_the_node_dead() {
        let timeout = Duration::from_millis(1500);
        assert!(lease_duration(timeout) < timeout);
    }
}
