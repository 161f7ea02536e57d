//! Kafka broker ids for Sluice's (node, shard) pairs.
//!
//! Every data shard of every node is its own Kafka broker, so that a
//! client's ordinary leader routing sends each partition's Fetch and
//! Produce to the core that owns its files. A broker id must be an `i32`,
//! unique in the cluster and stable across restarts; node ids are
//! configured (never generated) and a node's shard index is its position
//! among its cores, so `node × SHARDS_PER_NODE_MAX + shard` is all three.

/// Shards per node a broker id can name. Far above any core count Sluice
/// runs on (a 64-core box runs at most 63 data shards), and small enough
/// that node ids up to about two million fit an `i32`.
pub const SHARDS_PER_NODE_MAX: u32 = 1024;

/// The largest node id that has broker ids.
pub const NODE_ID_MAX: u64 = (i32::MAX as u64) / SHARDS_PER_NODE_MAX as u64 - 1;

/// A Kafka broker id of one (node, shard).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BrokerId(i32);

/// Why a (node, shard) has no broker id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BrokerIdError {
    /// The node id is too large for a broker id.
    #[error("node id {0} is above {NODE_ID_MAX}, the largest that can be a Kafka broker; use a smaller node_id to serve Kafka clients")]
    NodeTooLarge(u64),
    /// The shard index is too large for a broker id.
    #[error("shard {0} is at or above {SHARDS_PER_NODE_MAX} shards per node")]
    ShardTooLarge(u32),
}

impl BrokerId {
    /// The broker id of `shard` on `node`.
    pub fn of(node: u64, shard: u32) -> Result<BrokerId, BrokerIdError> {
        if node > NODE_ID_MAX {
            return Err(BrokerIdError::NodeTooLarge(node));
        }
        if shard >= SHARDS_PER_NODE_MAX {
            return Err(BrokerIdError::ShardTooLarge(shard));
        }
        let id = node * u64::from(SHARDS_PER_NODE_MAX) + u64::from(shard);
        // NODE_ID_MAX keeps every id of every shard inside i32.
        Ok(BrokerId(i32::try_from(id).expect("bounded by NODE_ID_MAX")))
    }

    /// The wire value.
    pub fn get(self) -> i32 {
        self.0
    }

    /// The (node, shard) a wire broker id names; `None` for ids Sluice does
    /// not hand out (negative: "no leader").
    pub fn node_and_shard(wire: i32) -> Option<(u64, u32)> {
        let id = u32::try_from(wire).ok()?;
        Some((
            u64::from(id / SHARDS_PER_NODE_MAX),
            id % SHARDS_PER_NODE_MAX,
        ))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn limits_are_enforced() {
        assert_eq!(BrokerId::of(1, 0).map(BrokerId::get), Ok(1024));
        assert_eq!(BrokerId::of(1, 3).map(BrokerId::get), Ok(1027));
        assert!(BrokerId::of(NODE_ID_MAX, SHARDS_PER_NODE_MAX - 1).is_ok());
        assert_eq!(
            BrokerId::of(NODE_ID_MAX + 1, 0),
            Err(BrokerIdError::NodeTooLarge(NODE_ID_MAX + 1))
        );
        assert_eq!(
            BrokerId::of(1, SHARDS_PER_NODE_MAX),
            Err(BrokerIdError::ShardTooLarge(SHARDS_PER_NODE_MAX))
        );
        assert_eq!(BrokerId::node_and_shard(-1), None);
    }

    proptest! {
        #[test]
        fn broker_ids_round_trip_and_are_unique(
            a in (0..=NODE_ID_MAX, 0..SHARDS_PER_NODE_MAX),
            b in (0..=NODE_ID_MAX, 0..SHARDS_PER_NODE_MAX),
        ) {
            let id_a = BrokerId::of(a.0, a.1).expect("in range");
            let id_b = BrokerId::of(b.0, b.1).expect("in range");
            prop_assert!(id_a.get() >= 0);
            prop_assert_eq!(BrokerId::node_and_shard(id_a.get()), Some(a));
            prop_assert_eq!(id_a == id_b, a == b);
        }
    }
}
