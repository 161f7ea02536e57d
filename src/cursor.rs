//! Consumer cursors: what a cursor is on disk and on the wire, shared by the
//! shard that stores cursors, the control core that creates their stream,
//! and the client.
//!
//! A cursor is the next offset a consumer will read, stored under the key
//! (cursor id, stream, partition) together with the incarnation
//! ([`StreamId`]) of the stream it was saved against. A stream deleted and
//! re-created under the same name is a new incarnation: a cursor saved
//! against the old one is not a position in the new one and reads as "no
//! cursor". Cursors live in the internal stream
//! [`CURSORS_STREAM`]: key-compacted (only the last record per key is
//! kept), replicated like any stream, and placed like any stream. Each
//! SetCursor appends one record to the cursor partition chosen by
//! [`cursor_partition`] (a stable hash of the key), so all updates of one
//! cursor land in one partition, in order.
//!
//! Record layout (readable with `sluice consume __cursors`):
//! - key: `<cursor id>/<stream>/<partition>` in ASCII. Cursor ids and stream
//!   names are `[A-Za-z0-9._-]`, so `/` separates them unambiguously.
//! - value: 16 bytes: the stream's id (its incarnation) then the offset,
//!   each a big-endian `u64`; a null value (tombstone) removes the cursor.
//!   The key has no incarnation in it, so compaction keeps one record per
//!   (cursor id, stream name, partition) across incarnations, and a
//!   SetCursor on the new incarnation replaces the old one's record.
//! - legacy value: before incarnations were recorded the value was the
//!   offset alone (8 bytes) ([`CursorValue::Legacy`]); the shard folding the
//!   log gives it the stream's current incarnation.

use bytes::Bytes;

use crate::model::{StreamId, StreamSpec, CURSORS_STREAM};

/// NATS subject recorded for the cursor stream. Internal streams take no
/// NATS messages (the router does not subscribe them); the subject only
/// satisfies the stream spec.
pub const CURSORS_SUBJECT: &str = "_SLUICE.cursors";

/// Longest cursor id, in bytes. Bounds the key (and so each in-memory map
/// entry: id + stream name (≤ 255) + partition ≈ 400 bytes at worst).
pub const CURSOR_ID_BYTES_MAX: usize = 128;

/// Most partitions the cursor stream gets when it is created (one per shard
/// of the creating node up to this, so cursor traffic spreads over cores).
pub const CURSOR_PARTITIONS_MAX: u32 = 16;

/// Replication factor of the cursor stream when the cluster is large
/// enough: min(this, registered nodes) at creation.
pub const CURSOR_REPLICATION_FACTOR_MAX: u32 = 3;

/// Bytes of a stored cursor value (stream id, offset: big-endian `u64`s).
pub const CURSOR_VALUE_BYTES: usize = 16;

/// Bytes of a legacy cursor value (the offset alone, no stream id).
pub const CURSOR_LEGACY_VALUE_BYTES: usize = 8;

/// One cursor's identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CursorKey {
    pub cursor_id: String,
    pub stream: String,
    pub partition: u32,
}

/// Why a cursor id is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CursorIdError {
    #[error("cursor id must not be empty")]
    Empty,
    #[error("cursor id is {bytes} bytes, longer than {CURSOR_ID_BYTES_MAX}")]
    TooLong { bytes: usize },
    #[error("cursor id {id:?}: character {bad:?} is not one of [A-Za-z0-9._-]")]
    BadCharacter { id: String, bad: char },
}

/// 1..=[`CURSOR_ID_BYTES_MAX`] bytes of `[A-Za-z0-9._-]`.
pub fn validate_cursor_id(id: &str) -> Result<(), CursorIdError> {
    if id.is_empty() {
        return Err(CursorIdError::Empty);
    }
    if id.len() > CURSOR_ID_BYTES_MAX {
        return Err(CursorIdError::TooLong { bytes: id.len() });
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(CursorIdError::BadCharacter {
            id: id.chars().take(CURSOR_ID_BYTES_MAX).collect(),
            bad,
        });
    }
    Ok(())
}

impl CursorKey {
    /// The record key: `<cursor id>/<stream>/<partition>`.
    pub fn encode(&self) -> Bytes {
        Bytes::from(format!(
            "{}/{}/{}",
            self.cursor_id, self.stream, self.partition
        ))
    }

    /// Parses a record key; `None` for anything that is not a cursor key
    /// (a record written by something else is ignored, never trusted).
    pub fn decode(bytes: &[u8]) -> Option<CursorKey> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.splitn(3, '/');
        let (cursor_id, stream, partition) = (parts.next()?, parts.next()?, parts.next()?);
        validate_cursor_id(cursor_id).ok()?;
        if stream.is_empty() || stream.contains('/') {
            return None;
        }
        let partition: u32 = partition.parse().ok()?;
        Some(CursorKey {
            cursor_id: cursor_id.to_owned(),
            stream: stream.to_owned(),
            partition,
        })
    }
}

/// A cursor position in one incarnation of its stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredCursor {
    /// The incarnation of the stream the cursor was saved against.
    pub stream_id: StreamId,
    /// The next offset to read.
    pub offset: u64,
}

/// A non-null value read from the cursor log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CursorValue {
    Current(StoredCursor),
    /// A value written before incarnations were recorded (offset alone):
    /// which incarnation it belongs to is unknown, so it is no cursor.
    Legacy {
        offset: u64,
    },
}

/// The stored value of a cursor.
pub fn encode_value(cursor: StoredCursor) -> Bytes {
    let mut value = Vec::with_capacity(CURSOR_VALUE_BYTES);
    value.extend_from_slice(&cursor.stream_id.get().to_be_bytes());
    value.extend_from_slice(&cursor.offset.to_be_bytes());
    Bytes::from(value)
}

/// Reads a stored value: `None` for anything but 16 (current) or 8
/// (legacy) bytes.
pub fn decode_value(value: &[u8]) -> Option<CursorValue> {
    let u64_at = |at: usize| -> u64 {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&value[at..at + 8]);
        u64::from_be_bytes(bytes)
    };
    match value.len() {
        CURSOR_VALUE_BYTES => Some(CursorValue::Current(StoredCursor {
            stream_id: StreamId::new(u64_at(0)),
            offset: u64_at(8),
        })),
        CURSOR_LEGACY_VALUE_BYTES => Some(CursorValue::Legacy { offset: u64_at(0) }),
        _ => None,
    }
}

/// The cursor partition that holds `key`, out of `partitions` (≥ 1):
/// CRC-32C of the encoded key, modulo the partition count. Stable across
/// versions and nodes (it decides where a cursor's history is).
pub fn cursor_partition(key: &CursorKey, partitions: u32) -> u32 {
    debug_assert!(partitions > 0);
    crc32c::crc32c(&key.encode()) % partitions.max(1)
}

/// The cursor stream's spec for a node with `shard_count` shards in a
/// cluster of `nodes` registered nodes.
pub fn cursors_stream_spec(shard_count: u32, nodes: usize) -> StreamSpec {
    let mut spec = StreamSpec::new(CURSORS_STREAM, CURSORS_SUBJECT);
    spec.partitions = shard_count.clamp(1, CURSOR_PARTITIONS_MAX);
    spec.replication_factor = u32::try_from(nodes)
        .unwrap_or(u32::MAX)
        .clamp(1, CURSOR_REPLICATION_FACTOR_MAX);
    spec.compact = true;
    spec
}

/// Whether `name` is an internal stream (reserved prefix `_`).
pub fn is_internal_stream(name: &str) -> bool {
    name.starts_with('_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, stream: &str, partition: u32) -> CursorKey {
        CursorKey {
            cursor_id: id.into(),
            stream: stream.into(),
            partition,
        }
    }

    #[test]
    fn keys_round_trip_and_foreign_keys_are_refused() {
        let k = key("billing-1", "orders.eu", 7);
        assert_eq!(k.encode().as_ref(), b"billing-1/orders.eu/7");
        assert_eq!(CursorKey::decode(&k.encode()), Some(k));
        for bad in [
            &b""[..],
            b"a",
            b"a/b",
            b"a/b/x",
            b"a/b/-1",
            b"/b/1",
            b"a//1",
            b"a b/s/1",
            b"\xff/s/1",
        ] {
            assert_eq!(CursorKey::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn cursor_ids() {
        for good in [
            "a",
            "consumer-1",
            "A.b_c-9",
            &"x".repeat(CURSOR_ID_BYTES_MAX),
        ] {
            assert_eq!(validate_cursor_id(good), Ok(()), "{good}");
        }
        assert_eq!(validate_cursor_id(""), Err(CursorIdError::Empty));
        assert_eq!(
            validate_cursor_id(&"x".repeat(CURSOR_ID_BYTES_MAX + 1)),
            Err(CursorIdError::TooLong {
                bytes: CURSOR_ID_BYTES_MAX + 1
            })
        );
        for bad in ["a/b", "a b", "ü", "a\n"] {
            assert!(validate_cursor_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn values_round_trip_legacy_values_are_told_apart_and_other_lengths_refused() {
        for (stream_id, offset) in [(1, 0), (7, 42), (u64::MAX, u64::MAX)] {
            let cursor = StoredCursor {
                stream_id: StreamId::new(stream_id),
                offset,
            };
            let value = encode_value(cursor);
            assert_eq!(value.len(), CURSOR_VALUE_BYTES);
            assert_eq!(decode_value(&value), Some(CursorValue::Current(cursor)));
        }
        // Pinned layout: stream id, then offset, both big-endian.
        let value = encode_value(StoredCursor {
            stream_id: StreamId::new(0x0102),
            offset: 0x0304,
        });
        assert_eq!(
            value.as_ref(),
            &[0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 3, 4][..]
        );
        // The pre-incarnation format: the offset alone.
        assert_eq!(
            decode_value(&9u64.to_be_bytes()),
            Some(CursorValue::Legacy { offset: 9 })
        );
        for len in [0, 1, 7, 9, 15, 17, 24] {
            assert_eq!(decode_value(&vec![0; len]), None, "{len} bytes");
        }
    }

    /// Pinned: changing the hash moves every stored cursor's history.
    #[test]
    fn partition_choice_is_stable_and_in_range() {
        let k = key("c", "s", 0);
        assert_eq!(cursor_partition(&k, 1), 0);
        assert_eq!(
            cursor_partition(&k, 16),
            crc32c::crc32c(b"c/s/0") % 16,
            "hash of the encoded key"
        );
        for p in 0..100 {
            assert!(cursor_partition(&key("c", "s", p), 3) < 3);
        }
    }

    #[test]
    fn stream_spec_scales_with_the_cluster() {
        let spec = cursors_stream_spec(2, 1);
        assert_eq!((spec.partitions, spec.replication_factor), (2, 1));
        assert!(spec.compact && is_internal_stream(&spec.name));
        let spec = cursors_stream_spec(64, 5);
        assert_eq!(
            (spec.partitions, spec.replication_factor),
            (CURSOR_PARTITIONS_MAX, 3)
        );
    }
}
