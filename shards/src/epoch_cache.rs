//! The leader-epoch cache of one partition: where each leader epoch's data
//! starts in the log (Kafka's `leader-epoch-checkpoint`, KIP-101).
//!
//! A returning follower must not trust its high-watermark checkpoint to
//! decide what to keep: two quick failovers can make it drop committed data
//! or keep a tail the new leader never had. Instead it asks the leader where
//! the follower's latest epoch ended in the *leader's* log
//! ([`EpochCache::end_offset_for_epoch`]) and truncates there
//! ([`follower_truncation_offset`]).
//!
//! ## Entries
//!
//! An ordered list of `(epoch, start offset)`: epochs strictly increase,
//! start offsets strictly increase, every start offset is the base offset of
//! the first batch written under that epoch. Batches stamped with a negative
//! epoch ([`LeaderEpoch::NONE`], a log that was never replicated) carry no
//! epoch information and add nothing. The log refuses a batch whose epoch is
//! below the latest entry's (a stale leader), so the list is always the fold
//! of [`EpochCache::assign`] over the log's batch headers — which is how it
//! is rebuilt when the file is missing or damaged.
//!
//! ## File layout (`leader-epoch-checkpoint`, big-endian)
//!
//! ```text
//! magic "SLEC" (4) | version u16 = 1 | count u32 | count × (epoch i32, start offset u64) | crc32c u32
//! ```
//!
//! The CRC-32C covers every byte before it. The file is replaced whole
//! (temp file, fsync, rename, directory fsync); it changes only when an
//! epoch begins, a truncation removes entries, or retention moves the log
//! start, so its cost never lands on the steady append path.

use std::path::Path;

use glommio::io::BufferedFile;

use crate::error::{LogError, LogResult};
use crate::io::replace::{replace_file, ReplaceError};
use crate::types::{LeaderEpoch, Offset};

/// Name of the leader-epoch checkpoint in a partition directory.
pub const LEADER_EPOCH_FILE: &str = "leader-epoch-checkpoint";

/// Most entries a checkpoint file may hold (12 bytes each, so at most
/// 12 MiB read on open). One entry per leader change that wrote data: a
/// partition reaching this has had a million leaders; a larger count read
/// from disk is treated as corruption (and the cache rebuilt from the log)
/// rather than as a request to allocate.
pub const EPOCH_ENTRIES_MAX: usize = 1 << 20;

const MAGIC: [u8; 4] = *b"SLEC";
const VERSION: u16 = 1;
const HEADER_BYTES: usize = 4 + 2 + 4;
const ENTRY_BYTES: usize = 4 + 8;
const CRC_BYTES: usize = 4;

/// One leader epoch and the offset of its first batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEntry {
    /// The leader epoch.
    pub epoch: LeaderEpoch,
    /// Offset of the first batch written in it.
    pub start_offset: Offset,
}

/// Why a checkpoint file was not accepted (the cache is then rebuilt).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EpochFileError {
    /// The file size does not match a header, a whole number of entries
    /// and the CRC.
    #[error("{len} bytes is not a valid checkpoint length")]
    BadLength {
        /// The file's size.
        len: usize,
    },
    /// The file does not start with `SLEC` and a known version.
    #[error("bad magic or version")]
    BadMagic,
    /// More entries than a checkpoint may hold.
    #[error("{count} entries exceed the limit {max}")]
    TooManyEntries {
        /// The count the file declares.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The trailing CRC-32C does not match the contents.
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// The CRC at the end of the file.
        stored: u32,
        /// The CRC of the bytes before it.
        computed: u32,
    },
    /// Epochs or start offsets do not strictly increase.
    #[error("entries are not strictly increasing at entry {index}")]
    NotMonotonic {
        /// The first entry out of order, from 0.
        index: usize,
    },
}

/// The in-memory cache. Pure: the partition log persists it with
/// `write_checkpoint` (crate-private) whenever [`EpochCache::assign`],
/// [`EpochCache::truncate_from_end`] or [`EpochCache::truncate_from_start`]
/// report a change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EpochCache {
    entries: Vec<EpochEntry>,
}

impl EpochCache {
    /// Every entry, oldest epoch first.
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// The newest entry, if the log has any data stamped with an epoch.
    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// The newest epoch, if any.
    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.latest().map(|e| e.epoch)
    }

    /// Whether a batch stamped `epoch` may follow the log's batches: a
    /// negative epoch always may (it carries no epoch information), any
    /// other must not be below the latest entry's.
    pub fn admits(&self, epoch: LeaderEpoch) -> bool {
        epoch.0 < 0 || self.latest_epoch().is_none_or(|latest| epoch >= latest)
    }

    /// The entry a batch stamped `epoch` starting at `base` would add, if
    /// it starts a new epoch. The caller has checked [`Self::admits`].
    pub fn entry_for_batch(&self, epoch: LeaderEpoch, base: Offset) -> Option<EpochEntry> {
        if epoch.0 < 0 || self.latest_epoch().is_some_and(|latest| latest >= epoch) {
            return None;
        }
        Some(EpochEntry {
            epoch,
            start_offset: base,
        })
    }

    /// Records that a batch stamped `epoch` starts at `base`; true when this
    /// added an entry (the batch starts a new epoch). A batch below the
    /// latest epoch is ignored here (the log refuses it before writing).
    pub fn assign(&mut self, epoch: LeaderEpoch, base: Offset) -> bool {
        let Some(entry) = self.entry_for_batch(epoch, base) else {
            return false;
        };
        debug_assert!(self.latest().is_none_or(|l| l.start_offset < base));
        self.entries.push(entry);
        true
    }

    /// Drops every entry that starts at or after `end` (a truncation of the
    /// log to `end`); true when anything was removed.
    pub fn truncate_from_end(&mut self, end: Offset) -> bool {
        let keep = self.entries.partition_point(|e| e.start_offset < end);
        let changed = keep < self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// The log now starts at `start`: entries before it collapse into one
    /// that starts exactly there (the epoch of the data at `start` is the
    /// latest of them), unless an entry already starts there. True when
    /// anything changed.
    pub fn truncate_from_start(&mut self, start: Offset) -> bool {
        let before = self.entries.partition_point(|e| e.start_offset < start);
        if before == 0 {
            return false;
        }
        let covering = self.entries[before - 1].epoch;
        let exact = self
            .entries
            .get(before)
            .is_some_and(|e| e.start_offset == start);
        self.entries.drain(..before);
        if !exact {
            self.entries.insert(
                0,
                EpochEntry {
                    epoch: covering,
                    start_offset: start,
                },
            );
        }
        true
    }

    /// Kafka's `OffsetForLeaderEpoch` answer for a log ending at `log_end`
    /// whose leader is at `current_epoch` (which may not have written yet;
    /// it then counts as an epoch starting at `log_end`, as if Kafka's
    /// become-leader entry had been written):
    ///
    /// * `requested` is the latest epoch → `(requested, log_end)`;
    /// * otherwise the largest known epoch ≤ `requested` and the start
    ///   offset of the first epoch above `requested`;
    /// * `requested` is below every known epoch → `(requested, start of the
    ///   first epoch)`: nothing the follower wrote under it can be on the
    ///   leader past that point;
    /// * `requested` is negative, above every known epoch, or nothing is
    ///   known → `None` (Kafka's undefined epoch and offset).
    pub fn end_offset_for_epoch(
        &self,
        requested: LeaderEpoch,
        log_end: Offset,
        current_epoch: LeaderEpoch,
    ) -> Option<(LeaderEpoch, Offset)> {
        if requested.0 < 0 {
            return None;
        }
        let pending = self.entry_for_batch(current_epoch, log_end).filter(|e| {
            self.latest()
                .is_none_or(|l| l.start_offset <= e.start_offset)
        });
        let latest = pending.or(self.latest())?;
        if latest.epoch == requested {
            return Some((requested, log_end));
        }
        let higher_at = self.entries.partition_point(|e| e.epoch <= requested);
        let higher = match self.entries.get(higher_at) {
            Some(entry) => *entry,
            None => pending.filter(|p| p.epoch > requested)?,
        };
        let floor = higher_at.checked_sub(1).map(|i| self.entries[i].epoch);
        Some((floor.unwrap_or(requested), higher.start_offset))
    }

    /// Makes the cache agree with a log holding `[log_start, log_end)`:
    /// entries at or past the end are dropped (their batches were lost or
    /// cut by recovery) and entries before the start collapsed. True when
    /// anything changed.
    pub fn fit_to_log(&mut self, log_start: Offset, log_end: Offset) -> bool {
        let cut = self.truncate_from_end(log_end);
        let collapsed = self.truncate_from_start(log_start);
        cut || collapsed
    }

    /// The checkpoint bytes (layout in the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(HEADER_BYTES + self.entries.len() * ENTRY_BYTES + CRC_BYTES);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        for entry in &self.entries {
            out.extend_from_slice(&entry.epoch.0.to_be_bytes());
            out.extend_from_slice(&entry.start_offset.0.to_be_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Parses checkpoint bytes, checking length, magic, CRC and order.
    pub fn decode(bytes: &[u8]) -> Result<EpochCache, EpochFileError> {
        let bad_length = EpochFileError::BadLength { len: bytes.len() };
        if bytes.len() < HEADER_BYTES + CRC_BYTES {
            return Err(bad_length);
        }
        let (body, crc) = bytes.split_at(bytes.len() - CRC_BYTES);
        if body[..4] != MAGIC || u16::from_be_bytes([body[4], body[5]]) != VERSION {
            return Err(EpochFileError::BadMagic);
        }
        let count = u32::from_be_bytes([body[6], body[7], body[8], body[9]]) as usize;
        if count > EPOCH_ENTRIES_MAX {
            return Err(EpochFileError::TooManyEntries {
                count,
                max: EPOCH_ENTRIES_MAX,
            });
        }
        if body.len() != HEADER_BYTES + count * ENTRY_BYTES {
            return Err(bad_length);
        }
        let stored = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
        let computed = crc32c::crc32c(body);
        if stored != computed {
            return Err(EpochFileError::CrcMismatch { stored, computed });
        }
        let mut entries: Vec<EpochEntry> = Vec::with_capacity(count);
        for (index, raw) in body[HEADER_BYTES..].chunks_exact(ENTRY_BYTES).enumerate() {
            let mut epoch = [0u8; 4];
            let mut start = [0u8; 8];
            epoch.copy_from_slice(&raw[..4]);
            start.copy_from_slice(&raw[4..]);
            let entry = EpochEntry {
                epoch: LeaderEpoch(i32::from_be_bytes(epoch)),
                start_offset: Offset(u64::from_be_bytes(start)),
            };
            let ordered = entry.epoch.0 >= 0
                && entries.last().is_none_or(|prev| {
                    prev.epoch < entry.epoch && prev.start_offset < entry.start_offset
                });
            if !ordered {
                return Err(EpochFileError::NotMonotonic { index });
            }
            entries.push(entry);
        }
        Ok(EpochCache { entries })
    }

    #[cfg(test)]
    pub(crate) fn from_entries(entries: &[(i32, u64)]) -> EpochCache {
        let mut cache = EpochCache::default();
        for &(epoch, start) in entries {
            assert!(cache.assign(LeaderEpoch(epoch), Offset(start)));
        }
        cache
    }
}

/// What a follower does after the leader answered its `OffsetForLeaderEpoch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Truncation {
    /// Truncate to this offset and start fetching there.
    Complete(Offset),
    /// Truncate to `offset`, then ask the leader again for `epoch`: the
    /// leader answered an epoch the follower never had, so the follower's
    /// data under its own older epoch still has to be checked (KIP-279).
    AskAgain {
        /// Where to truncate now.
        offset: Offset,
        /// The epoch to ask the leader about next.
        epoch: LeaderEpoch,
    },
}

impl Truncation {
    /// The offset to truncate to, whichever the case.
    pub fn offset(self) -> Offset {
        match self {
            Truncation::Complete(offset) | Truncation::AskAgain { offset, .. } => offset,
        }
    }
}

/// The KIP-101/KIP-279 follower step, as a pure function.
///
/// * `leader_answer`: the leader's `end_offset_for_epoch` for the epoch the
///   follower asked about (its latest), `None` when the leader could not
///   answer (undefined);
/// * `follower_answer`: the follower's *own* `end_offset_for_epoch` for the
///   epoch the leader answered with (ignored when the leader had none);
/// * `log_end` and `high_watermark`: the follower's.
///
/// The leader answering the same epoch the follower has → keep everything
/// below both ends. The leader answering a smaller epoch the follower also
/// has → the same. An epoch the follower never had → truncate to where the
/// follower's largest epoch below it ends and ask again with that epoch. No
/// epoch on the follower at or below the leader's → truncate to the leader's
/// end. No answer → fall back to the high watermark (pre-KIP-101 behaviour;
/// only reached when neither side has epoch information).
pub fn follower_truncation_offset(
    leader_answer: Option<(LeaderEpoch, Offset)>,
    follower_answer: Option<(LeaderEpoch, Offset)>,
    log_end: Offset,
    high_watermark: Offset,
) -> Truncation {
    let Some((leader_epoch, leader_end)) = leader_answer else {
        return Truncation::Complete(high_watermark.min(log_end));
    };
    match follower_answer {
        Some((epoch, follower_end)) if epoch == leader_epoch => {
            Truncation::Complete(leader_end.min(follower_end).min(log_end))
        }
        Some((epoch, follower_end)) => Truncation::AskAgain {
            offset: leader_end.min(follower_end).min(log_end),
            epoch,
        },
        None => Truncation::Complete(leader_end.min(log_end)),
    }
}

/// Writes the checkpoint durably (see [`replace_file`]; on
/// [`ReplaceError::NotWritten`] the previous checkpoint still describes the
/// log). Only one may run at a time per directory (the partition log calls
/// it under its write gate).
pub(crate) async fn write_checkpoint(dir: &Path, cache: &EpochCache) -> Result<(), ReplaceError> {
    replace_file(dir, LEADER_EPOCH_FILE, &cache.encode()).await
}

/// Reads the checkpoint: `Ok(None)` when it is missing or damaged (logged;
/// the caller rebuilds the cache from the log), an error only when the
/// directory cannot be read at all.
pub(crate) async fn read_checkpoint(dir: &Path) -> LogResult<Option<EpochCache>> {
    let path = dir.join(LEADER_EPOCH_FILE);
    let file = match BufferedFile::open(&path).await {
        Ok(file) => file,
        Err(_) => return Ok(None),
    };
    let size = file
        .file_size()
        .await
        .map_err(|e| LogError::glommio("stat epoch checkpoint", &path, e))?;
    let max = (HEADER_BYTES + EPOCH_ENTRIES_MAX * ENTRY_BYTES + CRC_BYTES) as u64;
    if size > max {
        tracing::warn!(path = %path.display(), size, "oversized leader-epoch checkpoint ignored");
        let _ = file.close().await;
        return Ok(None);
    }
    let read = file
        .read_at(0, size as usize)
        .await
        .map_err(|e| LogError::glommio("read epoch checkpoint", &path, e));
    let _ = file.close().await;
    let bytes = read?;
    match EpochCache::decode(&bytes) {
        Ok(cache) => Ok(Some(cache)),
        Err(err) => {
            tracing::warn!(path = %path.display(), error = %err,
                "damaged leader-epoch checkpoint ignored; rebuilding it from the log");
            Ok(None)
        }
    }
}

#[cfg(test)]
#[path = "epoch_cache_tests.rs"]
mod tests;
