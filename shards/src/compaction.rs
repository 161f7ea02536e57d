//! Key compaction: keep the last record per key (docs/design.md §11).
//!
//! A run builds a map `key → latest offset` from the committed log and
//! rewrites each sealed segment that holds a superseded record, dropping
//! every keyed record whose key appears again at a higher offset. What it
//! guarantees and what it leaves alone:
//!
//! * **Kept:** every record without a key; the latest record of every key.
//!   Every other keyed record in a rewritten segment is removed, except in
//!   the rare case described under "Never larger".
//! * **Offsets are never renumbered.** A rewritten batch keeps its base
//!   offset and `lastOffsetDelta`, so it still spans its original offset
//!   range; a batch left with no records is dropped (readers and recovery
//!   accept gaps between batches), except the **last batch of a segment**,
//!   which is kept even if empty so the segment still ends at the same
//!   offset: a reopened log or a `truncate_to` inside the segment then never
//!   sees an end lower than offsets already handed out.
//! * **Only committed data counts.** The map is built from records below
//!   the high watermark only (an uncommitted record may still be truncated
//!   away, and must not cause an older value to be dropped), and only
//!   sealed segments wholly below the high watermark are rewritten. The
//!   active segment is read (its committed part) to build the map, never
//!   rewritten.
//! * **Tombstones** (records with a null value) are kept like any other
//!   latest record: Kafka's `delete.retention.ms` (removing tombstones after
//!   a grace period) is not implemented, so a deleted key costs one
//!   tombstone forever.
//! * **Batch metadata.** A rewritten batch keeps its leader epoch; its
//!   timestamps are recomputed from the surviving records; producer id,
//!   epoch and sequence are reset to -1 (the engine keeps no producer
//!   state). A batch nothing was removed from is copied byte for byte.
//! * **Compressed batches** (gzip, snappy, lz4, zstd, as Kafka producers
//!   send them) are decompressed to find their records (within
//!   `DECOMPRESSED_BATCH_BYTES_MAX`) and a cleaned one is written
//!   compressed again with its own codec, as Kafka's cleaner does: written
//!   uncompressed it would usually be larger than the original and so be
//!   kept whole by the next rule, which would leave compressed topics
//!   uncompacted. The codec's output may differ from the producer's
//!   (level, framing), which no reader depends on. If the survivors cannot
//!   be re-encoded as one batch (records past the decompression limit, a
//!   compressor error), the batch is kept unchanged.
//! * **Never larger.** Re-encoding can in rare cases grow a batch (record
//!   timestamps are deltas from the first survivor); such a batch is kept
//!   unchanged, so a cleaned segment is never larger than the original.
//!
//! # Bounded memory
//!
//! The map is charged `key length + COMPACTION_KEY_ENTRY_OVERHEAD_BYTES` per
//! key, up to [`CompactionConfig::key_map_bytes_max`]. When it fills at
//! offset `E`, the run cleans the log with what it has (removal only needs
//! *some* later record with the key, so a map of a sub-range is safe), then
//! builds the next map from `E`, and so on until the high watermark: each
//! pass leaves `[log_start, E)` without duplicate keys, so the run still
//! ends with every key unique, at the cost of rewriting a prefix per pass.
//!
//! # Low impact
//!
//! Reads go through the segment files' own handles (a snapshot: a segment
//! deleted by retention meanwhile still reads), the task yields to the
//! executor between batches, and the write gate (which serialises appends)
//! is taken only to copy the segment list at the start and for each swap
//! (`PartitionLog::install_cleaned_segment`: two directory fsyncs and a
//! reopen that reads one index interval): appends are never held up by the
//! reading or the rewriting. Run it in a low-priority task queue
//! ([`crate::maintenance`]).
//!
//! # Crash safety
//!
//! The cleaned copy is written to `<base:020>.log.cleaned` (with fresh
//! `.index.cleaned` and `.timeindex.cleaned`) and fsynced before the swap
//! renames it over the original. A crash before the rename leaves the
//! original intact and `*.cleaned` files that open deletes; the swap's own
//! steps are documented on the log.

use std::collections::HashMap;
use std::rc::Rc;

use bytes::Bytes;

use crate::batch::{
    decode_batch, encode_batch_preserving_offsets, encode_batch_preserving_offsets_compressed,
    peek_total_bytes, set_leader_epoch, validate_batch, BatchHeader, Compression, DecodedRecord,
};
use crate::constants::{
    BATCH_LENGTH_PREFIX_BYTES, COMPACTION_KEY_ENTRY_OVERHEAD_BYTES, COMPACTION_KEY_MAP_BYTES_MAX,
    COMPACTION_READ_CHUNK_BYTES, SEGMENT_BYTES_MAX,
};
use crate::error::{DecodeError, LogError, LogResult};
use crate::log::{CompactionView, PartitionLog, SegmentSnapshot};
use crate::segment::{Segment, SegmentConfig, SegmentFile};
use crate::types::{Offset, Position};

/// Limits of one compaction run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactionConfig {
    /// Memory the key map may use; see "Bounded memory" in the module docs.
    pub key_map_bytes_max: usize,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            key_map_bytes_max: COMPACTION_KEY_MAP_BYTES_MAX,
        }
    }
}

/// What one compaction run did. Byte counts are summed over the segment
/// rewrites (a segment rewritten by two passes of one run counts twice).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactionOutcome {
    /// Sealed segments replaced by a compacted copy.
    pub segments_rewritten: usize,
    /// Records dropped because a later record has the same key.
    pub records_removed: u64,
    /// Size of the rewritten segments before the run.
    pub bytes_before: u64,
    /// Size of their replacements.
    pub bytes_after: u64,
}

/// Compacts `log` with the default limits: see the module docs. Returns at
/// once (an empty outcome) when a compaction of this log is already running.
pub async fn compact(log: &PartitionLog) -> LogResult<CompactionOutcome> {
    compact_with(log, &CompactionConfig::default()).await
}

/// [`compact`] with explicit limits.
pub async fn compact_with(
    log: &PartitionLog,
    config: &CompactionConfig,
) -> LogResult<CompactionOutcome> {
    let mut outcome = CompactionOutcome::default();
    let Some(_guard) = log.try_begin_compaction() else {
        tracing::debug!(dir = %log.dir().display(), "compaction already running");
        return Ok(outcome);
    };
    let mut view = log.compaction_view().await?;
    match run_passes(log, &mut view, config, &mut outcome).await {
        Ok(()) => {
            tracing::debug!(dir = %view.dir.display(), ?outcome, "compaction done");
            Ok(outcome)
        }
        // A truncation changed files under the run (a read hit the cut, or
        // a swap was refused); the next run starts from the new state.
        Err(err) if log.truncation_generation() != view.truncation_generation => {
            tracing::debug!(dir = %view.dir.display(), error = %err,
                "log truncated during compaction; run abandoned");
            Ok(outcome)
        }
        Err(err) => Err(err),
    }
}

/// Builds key maps from the log start to the high watermark, one per pass
/// (one pass unless the map fills), and after each rewrites the cleanable
/// segments holding records it supersedes. `view` is kept current.
async fn run_passes(
    log: &PartitionLog,
    view: &mut CompactionView,
    config: &CompactionConfig,
    outcome: &mut CompactionOutcome,
) -> LogResult<()> {
    let high_watermark = view.high_watermark;
    let cleanable = view
        .segments
        .iter()
        .take_while(|s| !s.active && s.next_offset <= high_watermark)
        .count();
    let Some(first) = view.segments.first().filter(|_| cleanable > 0) else {
        return Ok(());
    };
    let mut map_from = first.base;
    loop {
        let map = build_key_map(view, cleanable, map_from, config).await?;
        if map.end < high_watermark {
            tracing::info!(dir = %view.dir.display(), map_end = map.end.0, keys = map.latest.len(),
                "compaction key map full; cleaning in several passes");
        }
        for index in 0..cleanable {
            let segment = &view.segments[index];
            if segment.base >= map.end {
                break;
            }
            let superseded = if segment.base < map_from {
                count_superseded(segment, &map).await?
            } else {
                map.superseded[index]
            };
            if superseded == 0 {
                continue;
            }
            let Some(rewrite) = rewrite_segment(log, view, segment, &map).await? else {
                continue;
            };
            outcome.segments_rewritten += 1;
            outcome.records_removed += rewrite.records_removed;
            outcome.bytes_before += segment.size;
            outcome.bytes_after += rewrite.installed.size;
            view.segments[index] = rewrite.installed;
        }
        if map.end >= high_watermark {
            return Ok(());
        }
        map_from = map.end;
    }
}

/// Latest offset of every key in `[from, end)`.
struct KeyMap {
    latest: HashMap<Bytes, Offset>,
    /// What `latest` is charged against the limit.
    bytes: usize,
    /// The map covers every record below this (from its start): the high
    /// watermark, or where the map filled up.
    end: Offset,
    /// Per cleanable segment, how many of its records at or after the map's
    /// start a later record in the map supersedes.
    superseded: Vec<u64>,
}

impl KeyMap {
    /// Whether a later record with the same key exists (in the map's range).
    fn supersedes(&self, record: &DecodedRecord) -> bool {
        record.key.as_ref().is_some_and(|key| {
            self.latest
                .get(&key[..])
                .is_some_and(|&latest| latest > record.offset)
        })
    }

    /// Records `key` at `offset` (offsets arrive in increasing order);
    /// `false`, recording nothing, when a new key would exceed `bytes_max`.
    /// The first key always fits, so every pass makes progress.
    fn insert(
        &mut self,
        key: &Bytes,
        offset: Offset,
        cleanable: &[SegmentSnapshot],
        bytes_max: usize,
    ) -> bool {
        if let Some(latest) = self.latest.get_mut(&key[..]) {
            let previous = std::mem::replace(latest, offset);
            let at = cleanable.partition_point(|s| s.base <= previous);
            if at > 0 && previous < cleanable[at - 1].next_offset {
                self.superseded[at - 1] += 1;
            }
            return true;
        }
        let cost = key.len() + COMPACTION_KEY_ENTRY_OVERHEAD_BYTES;
        if !self.latest.is_empty() && self.bytes + cost > bytes_max {
            return false;
        }
        self.bytes += cost;
        // A copy: a slice would pin the whole read buffer it came from.
        self.latest.insert(Bytes::copy_from_slice(key), offset);
        true
    }
}

/// Builds the map of committed records from `from` on, until the high
/// watermark or the memory limit.
async fn build_key_map(
    view: &CompactionView,
    cleanable: usize,
    from: Offset,
    config: &CompactionConfig,
) -> LogResult<KeyMap> {
    let high_watermark = view.high_watermark;
    let mut map = KeyMap {
        latest: HashMap::new(),
        bytes: 0,
        end: high_watermark,
        superseded: vec![0; cleanable],
    };
    let first = view.segments.partition_point(|s| s.next_offset <= from);
    for segment in &view.segments[first..] {
        let mut reader = BatchReader::new(segment);
        while let Some((header, records)) = reader.next_decoded().await? {
            if header.next_offset() <= from {
                continue;
            }
            for record in records.iter().filter(|r| r.offset >= from) {
                if record.offset >= high_watermark {
                    return Ok(map);
                }
                let Some(key) = &record.key else {
                    continue;
                };
                let fits = map.insert(
                    key,
                    record.offset,
                    &view.segments[..cleanable],
                    config.key_map_bytes_max,
                );
                if !fits {
                    map.end = record.offset;
                    return Ok(map);
                }
            }
            glommio::executor().yield_if_needed().await;
        }
    }
    Ok(map)
}

/// Records of `segment` that `map` supersedes (a read-only pass, for
/// segments below the map's start).
async fn count_superseded(segment: &SegmentSnapshot, map: &KeyMap) -> LogResult<u64> {
    let mut reader = BatchReader::new(segment);
    let mut count = 0;
    while let Some((_, records)) = reader.next_decoded().await? {
        count += records.iter().filter(|r| map.supersedes(r)).count() as u64;
        glommio::executor().yield_if_needed().await;
    }
    Ok(count)
}

struct Rewrite {
    records_removed: u64,
    /// The segment as it is in the log now.
    installed: SegmentSnapshot,
}

/// Writes the survivors of `segment` to its `*.cleaned` copy and swaps it
/// in. `None` when there was nothing to remove after all or the segment
/// changed meanwhile (deleted by retention, truncated); the copy is removed.
async fn rewrite_segment(
    log: &PartitionLog,
    view: &CompactionView,
    segment: &SegmentSnapshot,
    map: &KeyMap,
) -> LogResult<Option<Rewrite>> {
    let config = SegmentConfig {
        segment_bytes: SEGMENT_BYTES_MAX,
        index_interval_bytes: view.index_interval_bytes,
        preallocate: false,
        preallocate_step_bytes: SEGMENT_BYTES_MAX,
        first_step_required: false,
    };
    let mut cleaned = Segment::create_cleaned(&view.dir, segment.base, &config).await?;
    let written = match write_survivors(&mut cleaned, segment, map).await {
        Ok(removed) => cleaned.seal().await.map(|()| removed),
        Err(err) => Err(err),
    };
    debug_assert!(written.is_err() || cleaned.next_offset() == segment.next_offset);
    debug_assert!(written.is_err() || cleaned.size() <= segment.size);
    drop(cleaned);
    let records_removed = match written {
        Ok(removed) if removed > 0 => removed,
        Ok(_) => {
            Segment::remove_cleaned_files(&view.dir, segment.base).await?;
            return Ok(None);
        }
        Err(err) => {
            discard_copy(view, segment.base).await;
            return Err(err);
        }
    };
    let installed = log
        .install_cleaned_segment(segment.base, &segment.file, view.truncation_generation)
        .await;
    match installed {
        Ok(Some(installed)) => {
            tracing::debug!(dir = %view.dir.display(), segment = segment.base.0, records_removed,
                bytes_before = segment.size, bytes_after = installed.size, "segment compacted");
            Ok(Some(Rewrite {
                records_removed,
                installed,
            }))
        }
        Ok(None) => {
            Segment::remove_cleaned_files(&view.dir, segment.base).await?;
            Ok(None)
        }
        Err(err) => {
            discard_copy(view, segment.base).await;
            Err(err)
        }
    }
}

/// Best-effort removal of a cleaned copy on an error path (the error being
/// returned matters more; a leftover is removed on open anyway).
async fn discard_copy(view: &CompactionView, base: Offset) {
    if let Err(err) = Segment::remove_cleaned_files(&view.dir, base).await {
        tracing::warn!(dir = %view.dir.display(), segment = base.0, error = %err,
            "cannot remove compaction copy");
    }
}

/// Appends the surviving records of `segment`, batch by batch, to
/// `cleaned`; returns how many records were removed.
async fn write_survivors(
    cleaned: &mut Segment,
    segment: &SegmentSnapshot,
    map: &KeyMap,
) -> LogResult<u64> {
    let mut reader = BatchReader::new(segment);
    let mut removed = 0u64;
    let mut encoded = Vec::new();
    while let Some((position, raw)) = reader.next_raw().await? {
        let (header, records) = reader.decode(position, &raw)?;
        let before = records.len();
        let survivors: Vec<DecodedRecord> =
            records.into_iter().filter(|r| !map.supersedes(r)).collect();
        let last_in_segment = reader.at_end();
        if survivors.len() == before {
            cleaned.append(&raw, &header)?;
        } else if survivors.is_empty() && !last_in_segment {
            removed += before as u64;
        } else {
            encoded.clear();
            let fits = encode_survivors(&header, &survivors, &mut encoded);
            if !fits || encoded.len() > raw.len() {
                cleaned.append(&raw, &header)?;
            } else {
                set_leader_epoch(&mut encoded, header.leader_epoch);
                // Verify right before writing.
                let new_header = validate_batch(&encoded).map_err(|source| LogError::Corrupt {
                    path: cleaned.file().path().to_path_buf(),
                    position: Position(cleaned.size()),
                    source,
                })?;
                cleaned.append(&encoded, &new_header)?;
                removed += (before - survivors.len()) as u64;
            }
        }
        glommio::executor().yield_if_needed().await;
    }
    Ok(removed)
}

/// Encodes the survivors of the batch `header` into `out`, with the
/// batch's own codec (see "Compressed batches" in the module docs).
/// Returns false when they cannot be written as one batch (too large once
/// re-encoded, or the compressor failed): the caller then keeps the batch
/// unchanged.
fn encode_survivors(header: &BatchHeader, survivors: &[DecodedRecord], out: &mut Vec<u8>) -> bool {
    if header.compression == Compression::None {
        // Survivors of an uncompressed batch are no larger than it.
        encode_batch_preserving_offsets(
            header.base_offset,
            header.last_offset_delta,
            survivors,
            out,
        );
        return true;
    }
    match encode_batch_preserving_offsets_compressed(
        header.base_offset,
        header.last_offset_delta,
        survivors,
        header.compression,
        out,
    ) {
        Ok(()) => true,
        Err(err) => {
            tracing::warn!(base_offset = header.base_offset.0, error = %err,
                "compaction keeps a compressed batch unchanged");
            false
        }
    }
}

/// Reads the whole batches of a segment snapshot in order, a chunk at a
/// time. Everything below the snapshot size was checked on open or append,
/// so a batch that fails its checks here is corruption.
struct BatchReader {
    file: Rc<SegmentFile>,
    end: u64,
    position: u64,
    chunk: Bytes,
    chunk_start: u64,
}

impl BatchReader {
    fn new(segment: &SegmentSnapshot) -> BatchReader {
        BatchReader {
            file: segment.file.clone(),
            end: segment.size,
            position: 0,
            chunk: Bytes::new(),
            chunk_start: 0,
        }
    }

    fn at_end(&self) -> bool {
        self.position >= self.end
    }

    /// The next batch and where it starts; `None` at the end.
    async fn next_raw(&mut self) -> LogResult<Option<(Position, Bytes)>> {
        if self.at_end() {
            return Ok(None);
        }
        let remaining = self.end - self.position;
        if !self.buffered(BATCH_LENGTH_PREFIX_BYTES) {
            self.fill(COMPACTION_READ_CHUNK_BYTES).await?;
        }
        let at = (self.position - self.chunk_start) as usize;
        let total = peek_total_bytes(&self.chunk[at..]).map_err(|e| self.corrupt(e))?;
        if total as u64 > remaining {
            return Err(self.corrupt(DecodeError::Truncated {
                needed: total,
                available: remaining as usize,
            }));
        }
        if !self.buffered(total) {
            self.fill(total.max(COMPACTION_READ_CHUNK_BYTES)).await?;
        }
        let at = (self.position - self.chunk_start) as usize;
        let batch = self.chunk.slice(at..at + total);
        let position = Position(self.position);
        self.position += total as u64;
        Ok(Some((position, batch)))
    }

    /// The next batch, decoded.
    async fn next_decoded(&mut self) -> LogResult<Option<(BatchHeader, Vec<DecodedRecord>)>> {
        match self.next_raw().await? {
            Some((position, raw)) => self.decode(position, &raw).map(Some),
            None => Ok(None),
        }
    }

    fn decode(
        &self,
        position: Position,
        raw: &Bytes,
    ) -> LogResult<(BatchHeader, Vec<DecodedRecord>)> {
        decode_batch(raw).map_err(|source| LogError::Corrupt {
            path: self.file.path().to_path_buf(),
            position,
            source,
        })
    }

    /// Whether `len` bytes from the current position are in the chunk.
    fn buffered(&self, len: usize) -> bool {
        let chunk_end = self.chunk_start + self.chunk.len() as u64;
        self.position >= self.chunk_start && self.position + len as u64 <= chunk_end
    }

    /// Reads up to `want` bytes from the current position (never past the
    /// snapshot end).
    async fn fill(&mut self, want: usize) -> LogResult<()> {
        let len = (self.end - self.position).min(want as u64) as usize;
        let bytes = self
            .file
            .read_exact_at(Position(self.position), len)
            .await?;
        self.chunk = Bytes::from(bytes);
        self.chunk_start = self.position;
        Ok(())
    }

    fn corrupt(&self, source: DecodeError) -> LogError {
        LogError::Corrupt {
            path: self.file.path().to_path_buf(),
            position: Position(self.position),
            source,
        }
    }
}

#[cfg(test)]
#[path = "compaction_tests.rs"]
mod tests;
