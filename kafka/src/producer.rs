//! Idempotent producers: per-partition sequence state.
//!
//! An idempotent Kafka producer stamps every batch with its producer id,
//! producer epoch and the sequence number of its first record (the batch
//! header's `producerId`, `producerEpoch`, `baseSequence`), counting per
//! partition from 0. The partition leader keeps, per producer, the latest
//! epoch and the last [`BATCHES_RETAINED`] batches it appended. A batch is
//! then exactly one of:
//!
//! - **next in sequence**: appended, and remembered;
//! - **a retry of a remembered batch** (same epoch, same first and last
//!   sequence): not appended again, answered with the offset it got the
//!   first time — this is what makes a retried produce store a record once;
//! - **out of order, fenced or unknown**: refused with the Kafka error the
//!   client acts on.
//!
//! The state is a function of the log: [`ProducerStates::record`] is fed
//! every appended batch, and a new leader (or a restarted node) rebuilds the
//! state by feeding it the batch headers of its log in order. It is pure:
//! no I/O, time is an argument.

use std::collections::{HashMap, VecDeque};

/// Batches remembered per producer: Kafka's limit on in-flight requests of
/// an idempotent producer (`max.in.flight.requests.per.connection` ≤ 5),
/// so every batch a producer may retry is still known.
pub const BATCHES_RETAINED: usize = 5;

/// Producers remembered per partition before the least recently active is
/// forgotten. A forgotten producer's next batch is refused with
/// `UNKNOWN_PRODUCER_ID`, which makes clients reset their sequence (KIP-360),
/// so memory stays bounded whatever clients do.
pub const PRODUCERS_PER_PARTITION_MAX: usize = 8_192;

/// How long a producer with no appends is remembered (Kafka's
/// `producer.id.expiration.ms` default: one day).
pub const PRODUCER_EXPIRY_MS: i64 = 24 * 60 * 60 * 1000;

/// A producer id from InitProducerId; negative = not idempotent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProducerId(pub i64);

/// A producer epoch: bumped when a producer restarts its sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProducerEpoch(pub i16);

/// The producer identity and sequence range of one batch, from its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSequence {
    /// `producerId` of the batch header.
    pub producer_id: ProducerId,
    /// `producerEpoch` of the batch header.
    pub producer_epoch: ProducerEpoch,
    /// `baseSequence` of the batch header.
    pub base_sequence: i32,
    /// Records in the batch (`lastOffsetDelta + 1`), at least 1.
    pub record_count: u32,
}

impl BatchSequence {
    /// Whether the batch takes part in idempotence at all.
    pub fn is_idempotent(&self) -> bool {
        self.producer_id.0 >= 0
    }

    /// The sequence of the batch's last record; sequences wrap from
    /// `i32::MAX` to 0, as in Kafka.
    pub fn last_sequence(&self) -> i32 {
        let span = self.record_count.saturating_sub(1) as i64;
        wrap_sequence(self.base_sequence as i64 + span)
    }
}

fn wrap_sequence(value: i64) -> i32 {
    (value.rem_euclid(i32::MAX as i64 + 1)) as i32
}

/// Where a remembered batch was stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredBatch {
    /// First sequence of the batch.
    pub first_sequence: i32,
    /// Last sequence of the batch.
    pub last_sequence: i32,
    /// Offset of its first record in the partition.
    pub base_offset: i64,
    /// Its timestamp as stored (append time or max create time), for the
    /// produce answer's `log_append_time_ms`.
    pub timestamp_ms: i64,
}

/// What to do with a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Append it (then [`ProducerStates::record`] it).
    Append,
    /// Do not append: it is a retry of this stored batch.
    Duplicate(StoredBatch),
}

/// Why a batch is refused; each maps to the Kafka error code the client
/// handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    /// An epoch older than the producer's current one: a zombie producer
    /// (`INVALID_PRODUCER_EPOCH`, 47).
    #[error("producer epoch {got} is older than the current epoch {current}")]
    FencedEpoch {
        /// The epoch the batch carries.
        got: i16,
        /// The producer's current epoch.
        current: i16,
    },
    /// A gap or an overlap in the sequence (`OUT_OF_ORDER_SEQUENCE_NUMBER`,
    /// 45).
    #[error("sequence {got} out of order, expected {expected}")]
    OutOfOrder {
        /// The batch's first sequence.
        got: i32,
        /// The sequence that would have been next.
        expected: i32,
    },
    /// A producer this partition does not know sent a batch that does not
    /// start its sequence (`UNKNOWN_PRODUCER_ID`, 59): its state expired or
    /// was evicted; the client resets (KIP-360).
    #[error("unknown producer id {0} with a sequence that does not start at 0")]
    UnknownProducer(i64),
}

impl SequenceError {
    /// The Kafka error code.
    pub fn kafka_code(&self) -> i16 {
        match self {
            SequenceError::FencedEpoch { .. } => 47,
            SequenceError::OutOfOrder { .. } => 45,
            SequenceError::UnknownProducer(_) => 59,
        }
    }
}

#[derive(Clone, Debug)]
struct ProducerEntry {
    epoch: ProducerEpoch,
    /// Oldest first; at most [`BATCHES_RETAINED`].
    batches: VecDeque<StoredBatch>,
    last_append_ms: i64,
}

impl ProducerEntry {
    fn next_sequence(&self) -> Option<i32> {
        self.batches
            .back()
            .map(|batch| wrap_sequence(batch.last_sequence as i64 + 1))
    }
}

/// The idempotence state of one partition.
#[derive(Clone, Debug, Default)]
pub struct ProducerStates {
    producers: HashMap<ProducerId, ProducerEntry>,
}

impl ProducerStates {
    /// No producers known.
    pub fn new() -> ProducerStates {
        ProducerStates::default()
    }

    /// Producers currently remembered.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether no producer is remembered.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Decides what to do with a batch a client produced. Does not change
    /// the state: call [`ProducerStates::record`] once it is appended.
    pub fn admit(&self, batch: &BatchSequence) -> Result<Admission, SequenceError> {
        if !batch.is_idempotent() {
            return Ok(Admission::Append);
        }
        let Some(entry) = self.producers.get(&batch.producer_id) else {
            return if batch.base_sequence == 0 {
                Ok(Admission::Append)
            } else {
                Err(SequenceError::UnknownProducer(batch.producer_id.0))
            };
        };
        if batch.producer_epoch < entry.epoch {
            return Err(SequenceError::FencedEpoch {
                got: batch.producer_epoch.0,
                current: entry.epoch.0,
            });
        }
        if batch.producer_epoch > entry.epoch {
            // A new epoch starts its sequence again.
            return if batch.base_sequence == 0 {
                Ok(Admission::Append)
            } else {
                Err(SequenceError::OutOfOrder {
                    got: batch.base_sequence,
                    expected: 0,
                })
            };
        }
        let last_sequence = batch.last_sequence();
        if let Some(stored) = entry.batches.iter().find(|stored| {
            stored.first_sequence == batch.base_sequence && stored.last_sequence == last_sequence
        }) {
            return Ok(Admission::Duplicate(*stored));
        }
        let expected = entry.next_sequence().unwrap_or(0);
        if batch.base_sequence == expected {
            Ok(Admission::Append)
        } else {
            Err(SequenceError::OutOfOrder {
                got: batch.base_sequence,
                expected,
            })
        }
    }

    /// Remembers a batch stored at `base_offset`: one the leader appended
    /// after [`ProducerStates::admit`], or one read back from the log while
    /// rebuilding (in log order). `now_ms` is when it was appended (for
    /// expiry; the batch's timestamp when rebuilding).
    pub fn record(
        &mut self,
        batch: &BatchSequence,
        base_offset: i64,
        timestamp_ms: i64,
        now_ms: i64,
    ) {
        if !batch.is_idempotent() {
            return;
        }
        if !self.producers.contains_key(&batch.producer_id)
            && self.producers.len() >= PRODUCERS_PER_PARTITION_MAX
        {
            self.evict_least_recent();
        }
        let stored = StoredBatch {
            first_sequence: batch.base_sequence,
            last_sequence: batch.last_sequence(),
            base_offset,
            timestamp_ms,
        };
        let entry = self
            .producers
            .entry(batch.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: batch.producer_epoch,
                batches: VecDeque::with_capacity(BATCHES_RETAINED),
                last_append_ms: now_ms,
            });
        if batch.producer_epoch != entry.epoch {
            // The log is the truth: a newer epoch (or, only when rebuilding
            // from a log written by several leaders, any other one) resets
            // the remembered batches.
            entry.epoch = batch.producer_epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == BATCHES_RETAINED {
            entry.batches.pop_front();
        }
        entry.batches.push_back(stored);
        entry.last_append_ms = entry.last_append_ms.max(now_ms);
        debug_assert!(entry.batches.len() <= BATCHES_RETAINED);
        debug_assert!(self.producers.len() <= PRODUCERS_PER_PARTITION_MAX);
    }

    /// Forgets producers with no append for [`PRODUCER_EXPIRY_MS`].
    pub fn expire(&mut self, now_ms: i64) {
        self.producers
            .retain(|_, entry| now_ms.saturating_sub(entry.last_append_ms) < PRODUCER_EXPIRY_MS);
    }

    /// Forgets everything (before rebuilding from a truncated log).
    pub fn clear(&mut self) {
        self.producers.clear();
    }

    fn evict_least_recent(&mut self) {
        let oldest = self
            .producers
            .iter()
            .min_by_key(|(id, entry)| (entry.last_append_ms, **id))
            .map(|(id, _)| *id);
        if let Some(id) = oldest {
            self.producers.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn batch(producer: i64, epoch: i16, base_sequence: i32, count: u32) -> BatchSequence {
        BatchSequence {
            producer_id: ProducerId(producer),
            producer_epoch: ProducerEpoch(epoch),
            base_sequence,
            record_count: count,
        }
    }

    #[test]
    fn non_idempotent_batches_are_always_appended_and_never_remembered() {
        let mut states = ProducerStates::new();
        let plain = batch(-1, -1, -1, 3);
        assert_eq!(states.admit(&plain), Ok(Admission::Append));
        states.record(&plain, 0, 0, 0);
        assert!(states.is_empty());
    }

    #[test]
    fn a_retry_is_answered_with_its_first_offset() {
        let mut states = ProducerStates::new();
        let first = batch(7, 0, 0, 3);
        assert_eq!(states.admit(&first), Ok(Admission::Append));
        states.record(&first, 100, 5, 5);
        let second = batch(7, 0, 3, 2);
        assert_eq!(states.admit(&second), Ok(Admission::Append));
        states.record(&second, 103, 6, 6);
        let stored = StoredBatch {
            first_sequence: 0,
            last_sequence: 2,
            base_offset: 100,
            timestamp_ms: 5,
        };
        assert_eq!(states.admit(&first), Ok(Admission::Duplicate(stored)));
        assert_eq!(
            states.admit(&batch(7, 0, 6, 1)),
            Err(SequenceError::OutOfOrder {
                got: 6,
                expected: 5
            })
        );
        assert_eq!(states.admit(&batch(7, 0, 5, 1)), Ok(Admission::Append));
    }

    #[test]
    fn only_the_last_five_batches_are_duplicates() {
        let mut states = ProducerStates::new();
        for i in 0..7 {
            let b = batch(1, 0, i, 1);
            assert_eq!(states.admit(&b), Ok(Admission::Append));
            states.record(&b, i64::from(i), 0, 0);
        }
        assert_eq!(
            states.admit(&batch(1, 0, 1, 1)),
            Err(SequenceError::OutOfOrder {
                got: 1,
                expected: 7
            })
        );
        assert!(matches!(
            states.admit(&batch(1, 0, 2, 1)),
            Ok(Admission::Duplicate(_))
        ));
    }

    #[test]
    fn epochs_fence_and_restart_the_sequence() {
        let mut states = ProducerStates::new();
        states.record(&batch(1, 3, 0, 10), 0, 0, 0);
        assert_eq!(
            states.admit(&batch(1, 2, 10, 1)),
            Err(SequenceError::FencedEpoch { got: 2, current: 3 })
        );
        assert_eq!(
            states.admit(&batch(1, 4, 10, 1)),
            Err(SequenceError::OutOfOrder {
                got: 10,
                expected: 0
            })
        );
        assert_eq!(states.admit(&batch(1, 4, 0, 1)), Ok(Admission::Append));
        states.record(&batch(1, 4, 0, 1), 10, 0, 0);
        // The old epoch's batches are no longer duplicates: they are fenced.
        assert!(matches!(
            states.admit(&batch(1, 3, 0, 10)),
            Err(SequenceError::FencedEpoch { .. })
        ));
    }

    #[test]
    fn an_unknown_producer_must_start_at_zero() {
        let states = ProducerStates::new();
        assert_eq!(states.admit(&batch(9, 0, 0, 1)), Ok(Admission::Append));
        let refused = states.admit(&batch(9, 0, 4, 1)).unwrap_err();
        assert_eq!(refused, SequenceError::UnknownProducer(9));
        assert_eq!(refused.kafka_code(), 59);
    }

    #[test]
    fn sequences_wrap_after_i32_max() {
        let mut states = ProducerStates::new();
        let near_end = batch(1, 0, i32::MAX - 1, 3);
        assert_eq!(near_end.last_sequence(), 0);
        states.record(&near_end, 0, 0, 0);
        assert_eq!(states.admit(&batch(1, 0, 1, 1)), Ok(Admission::Append));
    }

    #[test]
    fn expiry_and_the_producer_cap_bound_memory() {
        let mut states = ProducerStates::new();
        states.record(&batch(1, 0, 0, 1), 0, 0, 0);
        states.record(&batch(2, 0, 0, 1), 1, 0, PRODUCER_EXPIRY_MS);
        states.expire(PRODUCER_EXPIRY_MS + 1);
        assert_eq!(states.len(), 1);
        assert!(matches!(
            states.admit(&batch(1, 0, 1, 1)),
            Err(SequenceError::UnknownProducer(1))
        ));

        let mut states = ProducerStates::new();
        for id in 0..PRODUCERS_PER_PARTITION_MAX as i64 + 10 {
            states.record(&batch(id, 0, 0, 1), id, 0, id);
        }
        assert_eq!(states.len(), PRODUCERS_PER_PARTITION_MAX);
        // The least recently active went first.
        assert!(matches!(
            states.admit(&batch(0, 0, 1, 1)),
            Err(SequenceError::UnknownProducer(0))
        ));
        assert_eq!(
            states.admit(&batch(PRODUCERS_PER_PARTITION_MAX as i64 + 9, 0, 1, 1)),
            Ok(Admission::Append)
        );
    }

    /// What a producer sends: a new batch, or a resend of one of its last
    /// few batches (a retry after a lost answer).
    #[derive(Clone, Debug)]
    enum Send {
        New { producer: u8, count: u32 },
        Retry { producer: u8, back: usize },
        Bump { producer: u8 },
    }

    fn send_strategy() -> impl Strategy<Value = Send> {
        prop_oneof![
            3 => (0u8..4, 1u32..5).prop_map(|(producer, count)| Send::New { producer, count }),
            2 => (0u8..4, 0usize..BATCHES_RETAINED).prop_map(|(producer, back)| Send::Retry { producer, back }),
            1 => (0u8..4).prop_map(|producer| Send::Bump { producer }),
        ]
    }

    /// The model's producer: epoch, next sequence, batches sent in this
    /// epoch as (first sequence, record count).
    type ModelProducer = (i16, i32, Vec<(i32, u32)>);

    proptest! {
        /// Against a model log: every record a producer sends is stored
        /// exactly once however often it is retried, a retry gets the
        /// offset of the first store, and rebuilding the state from the log
        /// decides every later batch the same way as the live state.
        #[test]
        fn retries_store_each_record_once(sends in proptest::collection::vec(send_strategy(), 1..200)) {
            let mut live = ProducerStates::new();
            // Per producer: epoch, next sequence, sent batches (seq, count).
            let mut producers: HashMap<u8, ModelProducer> = HashMap::new();
            let mut log: Vec<(BatchSequence, i64)> = Vec::new();
            let mut next_offset = 0i64;
            let mut first_offset: HashMap<(u8, i16, i32), i64> = HashMap::new();
            for send in sends {
                let (producer, b) = match send {
                    Send::New { producer, count } => {
                        let state = producers.entry(producer).or_insert((0, 0, Vec::new()));
                        let b = batch(i64::from(producer), state.0, state.1, count);
                        state.2.push((state.1, count));
                        state.1 = wrap_sequence(state.1 as i64 + count as i64);
                        (producer, b)
                    }
                    Send::Retry { producer, back } => {
                        let Some(state) = producers.get(&producer) else { continue };
                        let Some(&(seq, count)) = state.2.iter().rev().nth(back) else { continue };
                        (producer, batch(i64::from(producer), state.0, seq, count))
                    }
                    Send::Bump { producer } => {
                        let state = producers.entry(producer).or_insert((0, 0, Vec::new()));
                        state.0 += 1;
                        state.1 = 0;
                        state.2.clear();
                        continue;
                    }
                };
                match live.admit(&b).expect("a well-behaved producer is never refused") {
                    Admission::Append => {
                        prop_assert!(first_offset.insert((producer, b.producer_epoch.0, b.base_sequence), next_offset).is_none());
                        live.record(&b, next_offset, 0, 0);
                        log.push((b, next_offset));
                        next_offset += i64::from(b.record_count);
                    }
                    Admission::Duplicate(stored) => {
                        prop_assert_eq!(Some(&stored.base_offset), first_offset.get(&(producer, b.producer_epoch.0, b.base_sequence)));
                    }
                }
            }
            let mut rebuilt = ProducerStates::new();
            for (b, offset) in &log {
                rebuilt.record(b, *offset, 0, 0);
            }
            for producer in 0u8..4 {
                for epoch in 0i16..3 {
                    for seq in 0..12 {
                        let b = batch(i64::from(producer), epoch, seq, 1);
                        prop_assert_eq!(live.admit(&b), rebuilt.admit(&b));
                    }
                }
            }
        }
    }
}
