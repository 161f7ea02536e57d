//! Nodes: their ids and what the cluster knows about each.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Identifies a Sluice node in the cluster (and in raft). Stable across
/// restarts: it is configured, never generated.
///
/// At most [`NodeId::MAX`] (`i64::MAX`): the wire protocol carries node ids
/// as Kafka's `int64`, with -1 for "none", so every id must have a
/// non-negative `i64` form. The bound is checked where ids enter — the
/// configuration, the wire, and deserialization (an id is stored as the
/// plain `u64` it always was, so raft logs, snapshots and RPCs keep their
/// format) — which makes [`NodeId::to_wire`] total. There is no
/// `TryFrom<u64>`: openraft's storage test suite needs `From<u64>`, which
/// only test builds have; [`NodeId::new`] is the checked conversion.
///
/// `Debug` prints the bare number too, as when ids were plain `u64`s: ISR
/// lists in logs and error messages read `[1, 2]`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeId(u64);

/// A number that is not a node id: above [`NodeId::MAX`] or negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not a node id (0..={max})", max = NodeId::MAX.0)]
pub struct InvalidNodeId(pub i128);

impl NodeId {
    /// The largest node id: the largest the wire's `int64` holds.
    pub const MAX: NodeId = NodeId(i64::MAX.unsigned_abs());

    /// The id `raw`; `None` above [`NodeId::MAX`].
    pub const fn new(raw: u64) -> Option<NodeId> {
        if raw <= NodeId::MAX.0 {
            Some(NodeId(raw))
        } else {
            None
        }
    }

    /// The id as configured and stored.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The id as the wire protocol carries it (`int64`, never negative).
    pub fn to_wire(self) -> i64 {
        // Never saturates: the constructors keep every id at or below
        // i64::MAX.
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }

    /// The id a wire `int64` names; `None` for a negative value (-1 is
    /// the wire's "no node").
    pub fn from_wire(value: i64) -> Option<NodeId> {
        u64::try_from(value).ok().map(NodeId)
    }
}

impl TryFrom<i64> for NodeId {
    type Error = InvalidNodeId;

    fn try_from(value: i64) -> Result<NodeId, InvalidNodeId> {
        NodeId::from_wire(value).ok_or(InvalidNodeId(i128::from(value)))
    }
}

impl Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<NodeId, D::Error> {
        let raw = u64::deserialize(deserializer)?;
        NodeId::new(raw).ok_or_else(|| serde::de::Error::custom(InvalidNodeId(i128::from(raw))))
    }
}

impl From<NodeId> for u64 {
    fn from(id: NodeId) -> u64 {
        id.0
    }
}

impl From<NodeId> for i64 {
    fn from(id: NodeId) -> i64 {
        id.to_wire()
    }
}

/// Parses a decimal id as written in `sluice.toml` and on command lines.
impl FromStr for NodeId {
    type Err = String;

    fn from_str(text: &str) -> Result<NodeId, String> {
        let raw: u64 = text.parse().map_err(|e| format!("node id {text:?}: {e}"))?;
        NodeId::new(raw).ok_or_else(|| InvalidNodeId(i128::from(raw)).to_string())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What the cluster knows about a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub raft_addr: String,
    pub client_addr: String,
    /// Data shards on the node; shard `k` listens on `client port + k`.
    pub shard_count: u32,
}

/// openraft's storage test suite (`cluster/storage.rs`) makes node ids from
/// `u64`s; production code converts with the checked constructors instead.
#[cfg(test)]
impl From<u64> for NodeId {
    fn from(raw: u64) -> NodeId {
        nid(raw)
    }
}

/// The node id `raw`, for tests (panics above [`NodeId::MAX`]).
#[cfg(test)]
pub(crate) const fn nid(raw: u64) -> NodeId {
    match NodeId::new(raw) {
        Some(id) => id,
        None => panic!("not a node id"),
    }
}

/// Node ids, for tests: `nids(&[1, 2])`.
#[cfg(test)]
pub(crate) fn nids(raw: &[u64]) -> Vec<NodeId> {
    raw.iter().map(|id| nid(*id)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_stop_at_the_wire_maximum() {
        assert_eq!(NodeId::new(0).map(NodeId::get), Some(0));
        assert_eq!(NodeId::MAX.to_wire(), i64::MAX);
        assert_eq!(NodeId::new(NodeId::MAX.get() + 1), None);
        assert_eq!(NodeId::new(u64::MAX), None);
        assert_eq!(NodeId::from_wire(-1), None);
        assert_eq!(NodeId::from_wire(7).map(NodeId::get), Some(7));
        assert_eq!("42".parse::<NodeId>().map(NodeId::get), Ok(42));
        assert!("9223372036854775808".parse::<NodeId>().is_err());
        assert!("-1".parse::<NodeId>().is_err());
        assert_eq!(format!("{:?}", [NodeId::MAX]), "[9223372036854775807]");
    }

    #[test]
    fn ids_serialize_as_the_plain_u64_they_always_were() {
        let id = NodeId::new(3).unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "3");
        assert_eq!(serde_json::from_str::<NodeId>("3").unwrap(), id);
        // As map keys (the metadata's node table) JSON writes them as strings.
        let map = std::collections::BTreeMap::from([(id, 1)]);
        assert_eq!(serde_json::to_string(&map).unwrap(), r#"{"3":1}"#);
        let back: std::collections::BTreeMap<NodeId, i32> =
            serde_json::from_str(r#"{"3":1}"#).unwrap();
        assert_eq!(back, map);
        assert!(serde_json::from_str::<NodeId>("9223372036854775808").is_err());
    }
}
