//! The FetchResponse, laid out for `sendfile`.
//!
//! A Kafka FetchResponse carries each partition's records as the last
//! regular field of the partition, so a response is: a prefix of encoded
//! fields, one partition's record bytes, the glue up to the next
//! partition's records, and so on. The shard reads the record bytes
//! straight from the segment file; this module writes everything else.
//!
//! [`FetchResponseLayout::new`] takes every partition's answer *with the
//! length* of its file range (not the bytes), encodes the size prefix, the
//! response header and all non-record fields into one buffer, and records
//! where in that buffer each partition's records go. The writer then walks
//! [`FetchResponseLayout::pieces`]: write a buffer slice, `sendfile` a
//! range, write the next slice...
//!
//! The layout is hand-written for the versions Sluice serves (4–12, header
//! v0 up to v11, v1 from v12) and checked byte for byte against
//! `kafka-protocol`'s own `FetchResponse` encoder with the record bytes in
//! memory (the tests below).

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::fetch_response::{EpochEndOffset, LeaderIdAndEpoch};
use kafka_protocol::protocol::Encodable;

/// The Fetch versions this layout encodes: librdkafka needs v4 for message
/// format v2, and v13+ names topics by id, which Sluice does not assign.
pub const FETCH_VERSIONS: std::ops::RangeInclusive<i16> = 4..=12;

/// First version with the flexible (tagged-field) encoding.
const FIRST_FLEXIBLE_VERSION: i16 = 12;

/// What one partition of a Fetch answers, with the length of its records
/// instead of the records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionAnswer {
    /// The partition index.
    pub partition_index: i32,
    /// Kafka error code; 0 = none.
    pub error_code: i16,
    /// The high watermark: offsets below it are committed.
    pub high_watermark: i64,
    /// With no transactions, the high watermark (librdkafka defaults to
    /// read_committed and stops here).
    pub last_stable_offset: i64,
    /// The log start offset (v5+).
    pub log_start_offset: i64,
    /// Where the fetcher's last fetched epoch diverges from this log
    /// (KIP-320, v12+): (epoch, end offset).
    pub diverging_epoch: Option<(i32, i64)>,
    /// The current leader when the request went to the wrong broker or had
    /// a stale epoch (KIP-951 hint, v12+): (leader broker id, leader epoch).
    pub current_leader: Option<(i32, i32)>,
    /// How many record bytes follow (whole batches, from the segment file).
    /// Never "null": an empty partition answers zero bytes (librdkafka
    /// rejects a null record set).
    pub records_len: u32,
}

/// One topic's partitions in a Fetch answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicAnswer {
    /// The topic name (a Sluice stream name).
    pub name: String,
    /// Every partition the request named, in request order.
    pub partitions: Vec<PartitionAnswer>,
}

/// The response-level fields of a Fetch answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchAnswer {
    /// Throttle time; Sluice does not throttle, so 0.
    pub throttle_time_ms: i32,
    /// Top-level error (v7+).
    pub error_code: i16,
    /// Fetch session id (v7+); 0 = no session (Sluice keeps none).
    pub session_id: i32,
    /// The topics, in request order.
    pub topics: Vec<TopicAnswer>,
}

/// Why a layout cannot be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    /// The version is outside [`FETCH_VERSIONS`].
    #[error("Fetch version {0} is not served (4..=12)")]
    UnsupportedVersion(i16),
    /// The response would be larger than a Kafka frame can say.
    #[error("Fetch response of {0} bytes exceeds the i32 frame size")]
    TooLarge(u64),
    /// A string or count does not fit its wire field.
    #[error("field too long for the wire: {0}")]
    FieldTooLong(&'static str),
}

/// Where one partition's records go in the response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordsSlot {
    /// Index of the topic in [`FetchAnswer::topics`].
    pub topic: usize,
    /// Index of the partition in that topic's `partitions`.
    pub partition: usize,
    /// Offset in the layout buffer after which the records are sent.
    at: usize,
    /// Record bytes to send.
    pub len: u32,
}

/// One step of writing the response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Encoded bytes to write as they are.
    Bytes(&'a [u8]),
    /// The records of one partition: `len` bytes from its file range.
    Records(RecordsSlot),
}

/// A FetchResponse, size prefix included, minus the record bytes.
#[derive(Debug)]
pub struct FetchResponseLayout {
    buf: BytesMut,
    slots: Vec<RecordsSlot>,
    total_len: u64,
}

impl FetchResponseLayout {
    /// Encodes `answer` as a FetchResponse of `version` for the request
    /// `correlation_id`, leaving room for each partition's records.
    pub fn new(
        version: i16,
        correlation_id: i32,
        answer: &FetchAnswer,
    ) -> Result<FetchResponseLayout, LayoutError> {
        if !FETCH_VERSIONS.contains(&version) {
            return Err(LayoutError::UnsupportedVersion(version));
        }
        let flexible = version >= FIRST_FLEXIBLE_VERSION;
        let mut w = Writer {
            buf: BytesMut::with_capacity(64 + 64 * answer.topics.len()),
            flexible,
        };
        let mut slots = Vec::new();

        // Size prefix, patched at the end.
        w.buf.put_i32(0);
        // Response header: v0 = correlation id; v1 adds tagged fields.
        w.buf.put_i32(correlation_id);
        w.tagged_none();

        w.buf.put_i32(answer.throttle_time_ms);
        if version >= 7 {
            w.buf.put_i16(answer.error_code);
            w.buf.put_i32(answer.session_id);
        }
        w.array_len(answer.topics.len())?;
        for (topic_index, topic) in answer.topics.iter().enumerate() {
            w.string(&topic.name)?;
            w.array_len(topic.partitions.len())?;
            for (partition_index, partition) in topic.partitions.iter().enumerate() {
                w.buf.put_i32(partition.partition_index);
                w.buf.put_i16(partition.error_code);
                w.buf.put_i64(partition.high_watermark);
                w.buf.put_i64(partition.last_stable_offset);
                if version >= 5 {
                    w.buf.put_i64(partition.log_start_offset);
                }
                // Aborted transactions: null (Sluice has no transactions).
                w.null_array();
                if version >= 11 {
                    // preferred_read_replica: -1, consumers read the leader.
                    w.buf.put_i32(-1);
                }
                w.records_len(partition.records_len)?;
                slots.push(RecordsSlot {
                    topic: topic_index,
                    partition: partition_index,
                    at: w.buf.len(),
                    len: partition.records_len,
                });
                if flexible {
                    w.partition_tags(version, partition)?;
                }
            }
            w.tagged_none();
        }
        w.tagged_none();

        let records: u64 = slots.iter().map(|slot| u64::from(slot.len)).sum();
        let total_len = w.buf.len() as u64 + records;
        let size = total_len - 4;
        let size = i32::try_from(size).map_err(|_| LayoutError::TooLarge(total_len))?;
        w.buf[0..4].copy_from_slice(&size.to_be_bytes());
        Ok(FetchResponseLayout {
            buf: w.buf,
            slots,
            total_len,
        })
    }

    /// Bytes on the wire: size prefix, header, fields and records.
    pub fn total_len(&self) -> u64 {
        self.total_len
    }

    /// Where each partition's records go, in wire order.
    pub fn slots(&self) -> &[RecordsSlot] {
        &self.slots
    }

    /// The response in wire order. Zero-length record slots are included
    /// (the writer skips them).
    pub fn pieces(&self) -> impl Iterator<Item = Piece<'_>> + '_ {
        let mut start = 0;
        let mut pieces = Vec::with_capacity(self.slots.len() * 2 + 1);
        for slot in &self.slots {
            if slot.at > start {
                pieces.push(Piece::Bytes(&self.buf[start..slot.at]));
            }
            pieces.push(Piece::Records(*slot));
            start = slot.at;
        }
        if start < self.buf.len() {
            pieces.push(Piece::Bytes(&self.buf[start..]));
        }
        pieces.into_iter()
    }
}

/// Appends fields in the fixed or the flexible encoding.
struct Writer {
    buf: BytesMut,
    flexible: bool,
}

impl Writer {
    fn uvarint(&mut self, mut value: u32) {
        while value >= 0x80 {
            self.buf.put_u8((value as u8 & 0x7f) | 0x80);
            value >>= 7;
        }
        self.buf.put_u8(value as u8);
    }

    /// An empty tagged-field section (flexible versions only).
    fn tagged_none(&mut self) {
        if self.flexible {
            self.buf.put_u8(0);
        }
    }

    fn array_len(&mut self, len: usize) -> Result<(), LayoutError> {
        let len = i32::try_from(len).map_err(|_| LayoutError::FieldTooLong("array"))?;
        if self.flexible {
            // Compact arrays carry length + 1 (0 = null).
            self.uvarint(len as u32 + 1);
        } else {
            self.buf.put_i32(len);
        }
        Ok(())
    }

    fn null_array(&mut self) {
        if self.flexible {
            self.buf.put_u8(0);
        } else {
            self.buf.put_i32(-1);
        }
    }

    fn string(&mut self, value: &str) -> Result<(), LayoutError> {
        if self.flexible {
            let len = u32::try_from(value.len())
                .ok()
                .filter(|len| *len < u32::MAX)
                .ok_or(LayoutError::FieldTooLong("topic name"))?;
            self.uvarint(len + 1);
        } else {
            let len =
                i16::try_from(value.len()).map_err(|_| LayoutError::FieldTooLong("topic name"))?;
            self.buf.put_i16(len);
        }
        self.buf.put_slice(value.as_bytes());
        Ok(())
    }

    fn records_len(&mut self, len: u32) -> Result<(), LayoutError> {
        let len = i32::try_from(len).map_err(|_| LayoutError::FieldTooLong("records"))?;
        if self.flexible {
            self.uvarint(len as u32 + 1);
        } else {
            self.buf.put_i32(len);
        }
        Ok(())
    }

    /// The partition's tagged fields (v12+), in tag order, each written only
    /// when it differs from its default (as Kafka does: older librdkafka
    /// chokes on default-valued tagged fields).
    fn partition_tags(
        &mut self,
        version: i16,
        partition: &PartitionAnswer,
    ) -> Result<(), LayoutError> {
        let diverging = partition
            .diverging_epoch
            .map(|(epoch, end_offset)| {
                EpochEndOffset::default()
                    .with_epoch(epoch)
                    .with_end_offset(end_offset)
            })
            .filter(|value| *value != EpochEndOffset::default());
        let leader = partition
            .current_leader
            .map(|(leader_id, leader_epoch)| {
                LeaderIdAndEpoch::default()
                    .with_leader_id(leader_id.into())
                    .with_leader_epoch(leader_epoch)
            })
            .filter(|value| *value != LeaderIdAndEpoch::default());
        let count = u32::from(diverging.is_some()) + u32::from(leader.is_some());
        self.uvarint(count);
        if let Some(value) = diverging {
            self.tagged_struct(0, version, &value)?;
        }
        if let Some(value) = leader {
            self.tagged_struct(1, version, &value)?;
        }
        Ok(())
    }

    fn tagged_struct<T: Encodable>(
        &mut self,
        tag: u32,
        version: i16,
        value: &T,
    ) -> Result<(), LayoutError> {
        let size = value
            .compute_size(version)
            .map_err(|_| LayoutError::FieldTooLong("tagged field"))?;
        let size = u32::try_from(size).map_err(|_| LayoutError::FieldTooLong("tagged field"))?;
        self.uvarint(tag);
        self.uvarint(size);
        value
            .encode(&mut self.buf, version)
            .map_err(|_| LayoutError::FieldTooLong("tagged field"))
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Buf, Bytes};
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{FetchResponse, ResponseHeader, TopicName};
    use kafka_protocol::protocol::{Decodable, StrBytes};
    use proptest::prelude::*;

    use super::*;

    /// The response with `records[i]` in slot i, as one buffer.
    fn assemble(layout: &FetchResponseLayout, records: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in layout.pieces() {
            match piece {
                Piece::Bytes(bytes) => out.extend_from_slice(bytes),
                Piece::Records(slot) => {
                    let index = layout
                        .slots()
                        .iter()
                        .position(|s| *s == slot)
                        .expect("slot");
                    assert_eq!(records[index].len(), slot.len as usize);
                    out.extend_from_slice(&records[index]);
                }
            }
        }
        assert_eq!(out.len() as u64, layout.total_len());
        out
    }

    /// What `kafka-protocol` encodes for the same answer with the records in
    /// memory: the oracle.
    fn oracle(
        version: i16,
        correlation_id: i32,
        answer: &FetchAnswer,
        records: &[Vec<u8>],
    ) -> Vec<u8> {
        let mut next = records.iter();
        let topics = answer
            .topics
            .iter()
            .map(|topic| {
                let partitions = topic
                    .partitions
                    .iter()
                    .map(|p| {
                        let mut data = PartitionData::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(p.error_code)
                            .with_high_watermark(p.high_watermark)
                            .with_last_stable_offset(p.last_stable_offset)
                            .with_aborted_transactions(None)
                            .with_records(Some(Bytes::from(next.next().expect("records").clone())));
                        if version >= 5 {
                            data = data.with_log_start_offset(p.log_start_offset);
                        }
                        if version >= 12 {
                            if let Some((epoch, end_offset)) = p.diverging_epoch {
                                data = data.with_diverging_epoch(
                                    EpochEndOffset::default()
                                        .with_epoch(epoch)
                                        .with_end_offset(end_offset),
                                );
                            }
                            if let Some((leader, epoch)) = p.current_leader {
                                data = data.with_current_leader(
                                    LeaderIdAndEpoch::default()
                                        .with_leader_id(leader.into())
                                        .with_leader_epoch(epoch),
                                );
                            }
                        }
                        data
                    })
                    .collect();
                FetchableTopicResponse::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.name.clone())))
                    .with_partitions(partitions)
            })
            .collect();
        let mut response = FetchResponse::default()
            .with_throttle_time_ms(answer.throttle_time_ms)
            .with_responses(topics);
        if version >= 7 {
            response = response
                .with_error_code(answer.error_code)
                .with_session_id(answer.session_id);
        }
        let header = ResponseHeader::default().with_correlation_id(correlation_id);
        let header_version = if version >= 12 { 1 } else { 0 };
        let mut body = BytesMut::new();
        header.encode(&mut body, header_version).expect("header");
        response.encode(&mut body, version).expect("body");
        let mut out = (body.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(&body);
        out
    }

    fn answer(partitions: &[(i32, u32)]) -> FetchAnswer {
        FetchAnswer {
            throttle_time_ms: 0,
            error_code: 0,
            session_id: 0,
            topics: vec![TopicAnswer {
                name: "orders".into(),
                partitions: partitions
                    .iter()
                    .map(|&(index, len)| PartitionAnswer {
                        partition_index: index,
                        error_code: 0,
                        high_watermark: 10,
                        last_stable_offset: 10,
                        log_start_offset: 0,
                        diverging_epoch: None,
                        current_leader: None,
                        records_len: len,
                    })
                    .collect(),
            }],
        }
    }

    #[test]
    fn one_partition_v12_ends_with_three_empty_tag_sections() {
        let answer = answer(&[(0, 5)]);
        let layout = FetchResponseLayout::new(12, 7, &answer).expect("layout");
        let bytes = assemble(&layout, &[b"abcde".to_vec()]);
        assert_eq!(&bytes[bytes.len() - 8..], b"abcde\0\0\0");
        assert_eq!(bytes, oracle(12, 7, &answer, &[b"abcde".to_vec()]));
    }

    #[test]
    fn empty_partitions_answer_empty_not_null_records() {
        for version in FETCH_VERSIONS {
            let answer = answer(&[(0, 0), (1, 0)]);
            let layout = FetchResponseLayout::new(version, 1, &answer).expect("layout");
            let bytes = assemble(&layout, &[vec![], vec![]]);
            let mut body = Bytes::from(bytes[4..].to_vec());
            let header_version = if version >= 12 { 1 } else { 0 };
            ResponseHeader::decode(&mut body, header_version).expect("header");
            let decoded = FetchResponse::decode(&mut body, version).expect("body");
            assert_eq!(body.remaining(), 0);
            for partition in &decoded.responses[0].partitions {
                assert_eq!(partition.records, Some(Bytes::new()), "v{version}");
            }
        }
    }

    #[test]
    fn versions_outside_the_served_range_are_refused() {
        assert_eq!(
            FetchResponseLayout::new(3, 1, &answer(&[])).unwrap_err(),
            LayoutError::UnsupportedVersion(3)
        );
        assert_eq!(
            FetchResponseLayout::new(13, 1, &answer(&[])).unwrap_err(),
            LayoutError::UnsupportedVersion(13)
        );
    }

    #[test]
    fn a_response_past_the_i32_frame_size_is_refused() {
        let answer = answer(&[(0, i32::MAX as u32), (1, 16)]);
        assert!(matches!(
            FetchResponseLayout::new(11, 1, &answer),
            Err(LayoutError::TooLarge(_))
        ));
    }

    fn partition_strategy() -> impl Strategy<Value = (PartitionAnswer, Vec<u8>)> {
        (
            any::<i32>(),
            any::<i16>(),
            any::<i64>(),
            any::<i64>(),
            any::<i64>(),
            proptest::option::of((any::<i32>(), any::<i64>())),
            proptest::option::of((any::<i32>(), any::<i32>())),
            proptest::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(
                |(index, error, hw, lso, start, diverging, leader, records)| {
                    (
                        PartitionAnswer {
                            partition_index: index,
                            error_code: error,
                            high_watermark: hw,
                            last_stable_offset: lso,
                            log_start_offset: start,
                            diverging_epoch: diverging,
                            current_leader: leader,
                            records_len: records.len() as u32,
                        },
                        records,
                    )
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Every served version, any fields, up to 200 partitions (so the
        /// compact array lengths need two varint bytes): the layout with
        /// the records spliced in equals kafka-protocol's own encoding.
        #[test]
        fn layout_matches_the_crate_encoder(
            version in FETCH_VERSIONS,
            correlation_id in any::<i32>(),
            throttle in any::<i32>(),
            error in any::<i16>(),
            session in any::<i32>(),
            topics in proptest::collection::vec(
                ("[a-zA-Z0-9._-]{0,200}", proptest::collection::vec(partition_strategy(), 0..70)),
                0..4,
            ),
        ) {
            let mut records = Vec::new();
            let answer = FetchAnswer {
                throttle_time_ms: throttle,
                error_code: if version >= 7 { error } else { 0 },
                session_id: if version >= 7 { session } else { 0 },
                topics: topics
                    .into_iter()
                    .map(|(name, partitions)| TopicAnswer {
                        name,
                        partitions: partitions
                            .into_iter()
                            .map(|(partition, bytes)| {
                                records.push(bytes);
                                partition
                            })
                            .collect(),
                    })
                    .collect(),
            };
            let layout = FetchResponseLayout::new(version, correlation_id, &answer).expect("layout");
            prop_assert_eq!(assemble(&layout, &records), oracle(version, correlation_id, &answer, &records));
        }
    }
}
