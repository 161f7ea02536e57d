//! Distinct types for the numbers the log deals in, so an offset is never
//! mistaken for a file position, a timestamp or a leader epoch.

use std::fmt;

/// A record's logical position in a partition: assigned by the log, dense,
/// starting at 0, never reused (compaction leaves gaps but never renumbers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Offset(pub u64);

impl Offset {
    /// The first offset of every partition.
    pub const ZERO: Offset = Offset(0);

    /// The offset after this one.
    pub fn next(self) -> Offset {
        Offset(self.0 + 1)
    }

    /// `self + delta`, for offset deltas read from a batch.
    pub fn plus(self, delta: u64) -> Offset {
        Offset(self.0 + delta)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A byte position inside one segment file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position(pub u64);

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Milliseconds since the Unix epoch, as Kafka stores them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimestampMs(pub i64);

impl TimestampMs {
    /// The wall clock now (0 if it is before 1970).
    pub fn now() -> TimestampMs {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        TimestampMs(since_epoch.as_millis() as i64)
    }
}

/// The leader epoch a batch was written under (Kafka's
/// `partitionLeaderEpoch`); -1 means "not replicated / unknown".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaderEpoch(pub i32);

impl LeaderEpoch {
    /// No epoch: data written before replication, or unknown.
    pub const NONE: LeaderEpoch = LeaderEpoch(-1);

    /// The epoch a metadata leader epoch (`u32` in the cluster metadata)
    /// has on disk and on the wire (Kafka's `int32`). Saturates at
    /// `i32::MAX` rather than wrapping: the metadata bumps the epoch once
    /// per leader change, so 2³¹ changes are out of reach, and whatever
    /// happens epochs must never go down.
    pub fn from_metadata(epoch: u32) -> LeaderEpoch {
        LeaderEpoch(i32::try_from(epoch).unwrap_or(i32::MAX))
    }
}

impl fmt::Display for LeaderEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Index of a data shard (one per data core) inside a node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(pub u32);

impl ShardId {
    /// The TCP port this shard listens on when shard 0 listens on `base`
    /// (`base + index`, the one rule for every shard port); `None` when it
    /// would pass 65535.
    pub fn port(self, base: u16) -> Option<u16> {
        u16::try_from(self.0)
            .ok()
            .and_then(|index| base.checked_add(index))
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_port_is_the_base_plus_the_index_or_none_past_65535() {
        assert_eq!(ShardId(0).port(9292), Some(9292));
        assert_eq!(ShardId(3).port(9292), Some(9295));
        assert_eq!(ShardId(1).port(u16::MAX), None, "would wrap to 0");
        assert_eq!(ShardId(70_000).port(1), None, "index past u16");
    }

    #[test]
    fn metadata_epochs_map_to_disk_epochs_without_wrapping() {
        assert_eq!(LeaderEpoch::from_metadata(0), LeaderEpoch(0));
        assert_eq!(LeaderEpoch::from_metadata(7), LeaderEpoch(7));
        let top = LeaderEpoch::from_metadata(i32::MAX as u32);
        assert_eq!(top, LeaderEpoch(i32::MAX));
        assert_eq!(
            LeaderEpoch::from_metadata(u32::MAX),
            top,
            "saturates: an epoch never goes down"
        );
    }
}
