//! Conversions between the engine's values and the wire's integers, used by
//! every body codec of this module.
//!
//! The wire has signed integers with `-1` sentinels (`docs/protocol.md`
//! §conventions); the engine has unsigned newtypes. Decoding is checked: a
//! value outside its range is a [`DecodeError`] naming table and field,
//! never a wrapped number. Encoding a value the wire cannot hold saturates
//! at the wire type's maximum (the engine never gets near those limits, and
//! a saturated value is still a valid, ordered one; a wrapped one would be
//! negative and mean "none").

use shards::types::{LeaderEpoch, Offset};

use super::body::DecodeError;
use crate::model::NodeId;

/// An offset as `int64`.
pub fn offset_to_wire(offset: Offset) -> i64 {
    i64::try_from(offset.0).unwrap_or(i64::MAX)
}

/// An optional offset as `int64`, `None` = -1.
pub fn optional_offset_to_wire(offset: Option<Offset>) -> i64 {
    offset.map_or(-1, offset_to_wire)
}

/// A count or id held as `u64` in the engine, as `int64`.
pub fn u64_to_wire(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// An optional `u64` as `int64`, `None` = -1.
pub fn optional_u64_to_wire(value: Option<u64>) -> i64 {
    value.map_or(-1, u64_to_wire)
}

/// Node ids as `int64`s.
pub fn node_ids_to_wire(ids: &[NodeId]) -> Vec<i64> {
    ids.iter().map(|id| id.to_wire()).collect()
}

/// An optional node id as `int64`, `None` = -1.
pub fn optional_node_id_to_wire(id: Option<NodeId>) -> i64 {
    id.map_or(-1, NodeId::to_wire)
}

/// A partition id as `int32`. Callers check ids above `i32::MAX` before
/// encoding (the client refuses them); none exist in the metadata.
pub fn partition_to_wire(partition: u32) -> i32 {
    i32::try_from(partition).unwrap_or(i32::MAX)
}

/// A metadata leader epoch (`u32`) as the wire's `int32`.
pub fn epoch_to_wire(epoch: u32) -> i32 {
    LeaderEpoch::from_metadata(epoch).0
}

/// A `u32` count as `uint16` (shard counts).
pub fn u32_to_u16(value: u32) -> u16 {
    u16::try_from(value).unwrap_or(u16::MAX)
}

/// A required partition id: non-negative.
pub fn partition(table: &'static str, value: i32) -> Result<u32, DecodeError> {
    u32::try_from(value)
        .map_err(|_| DecodeError::field(table, "partition", format!("negative partition {value}")))
}

/// A required offset: non-negative.
pub fn offset(table: &'static str, field: &'static str, value: i64) -> Result<Offset, DecodeError> {
    u64::try_from(value)
        .map(Offset)
        .map_err(|_| DecodeError::field(table, field, format!("{value} is negative")))
}

/// An offset where -1 means "none"; any other negative value is an error.
pub fn optional_offset(
    table: &'static str,
    field: &'static str,
    value: i64,
) -> Result<Option<Offset>, DecodeError> {
    match value {
        -1 => Ok(None),
        value => offset(table, field, value).map(Some),
    }
}

/// A required node id: non-negative.
pub fn node_id(
    table: &'static str,
    field: &'static str,
    value: i64,
) -> Result<NodeId, DecodeError> {
    NodeId::from_wire(value)
        .ok_or_else(|| DecodeError::field(table, field, format!("{value} is negative")))
}

/// A node id where -1 means "none"; any other negative value is an error.
pub fn optional_node_id(
    table: &'static str,
    field: &'static str,
    value: i64,
) -> Result<Option<NodeId>, DecodeError> {
    match value {
        -1 => Ok(None),
        value => node_id(table, field, value).map(Some),
    }
}

/// A list of node ids (replicas, ISR members): each non-negative.
pub fn node_ids(
    table: &'static str,
    field: &'static str,
    ids: Option<flatbuffers::Vector<'_, i64>>,
) -> Result<Vec<NodeId>, DecodeError> {
    ids.iter()
        .flatten()
        .map(|id| node_id(table, field, id))
        .collect()
}

/// A strings vector as owned strings; absent = empty.
pub fn strings(
    names: Option<flatbuffers::Vector<'_, flatbuffers::ForwardsUOffset<&str>>>,
) -> Vec<String> {
    names.iter().flatten().map(str::to_owned).collect()
}

/// Writes `names` as a strings vector; absent when empty (the wire's
/// "every stream").
pub fn create_names<'a>(
    fbb: &mut flatbuffers::FlatBufferBuilder<'a>,
    names: &[impl AsRef<str>],
) -> Option<flatbuffers::WIPOffset<flatbuffers::Vector<'a, flatbuffers::ForwardsUOffset<&'a str>>>>
{
    let names: Vec<_> = names
        .iter()
        .map(|name| fbb.create_string(name.as_ref()))
        .collect();
    (!names.is_empty()).then(|| fbb.create_vector(&names))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinels_and_ranges() {
        assert_eq!(optional_offset("T", "f", -1), Ok(None));
        assert_eq!(optional_offset("T", "f", 7), Ok(Some(Offset(7))));
        assert!(optional_offset("T", "f", -2).is_err());
        assert!(partition("T", -1).is_err());
        assert_eq!(offset_to_wire(Offset(u64::MAX)), i64::MAX);
        assert_eq!(partition_to_wire(u32::MAX), i32::MAX);
        assert_eq!(epoch_to_wire(u32::MAX), i32::MAX);
        assert_eq!(optional_node_id("T", "f", -1), Ok(None));
        assert!(node_id("T", "f", -5).is_err());
    }
}
