//! Sparse offset index of one segment (`<base_offset:020>.index`).
//!
//! Layout: a flat array of 8-byte entries, `relative_offset: u32 BE |
//! position: u32 BE`, one every `index_interval_bytes` of log, pointing at
//! the first byte of a batch whose base offset is `segment_base +
//! relative_offset`. Entries are strictly increasing in both fields.
//!
//! The index is a cache of the log, never the truth: entries are written with
//! a plain `pwrite` and never fsynced. On open, recovery keeps the longest
//! monotonic prefix, drops trailing entries that do not point at a valid
//! batch, rescans the log from the last good entry and appends what is
//! missing; an index that cannot be trusted is rebuilt from the log.
//!
//! What both indexes share lives here too: `IndexEntries<E>`, fixed-size
//! entries kept in memory and mirrored into an append-only file, with `E`
//! an `IndexEntry` that knows its layout and order (`OffsetIndexEntry`
//! here, `TimeIndexEntry` in `time_index.rs`).

use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use glommio::io::{BufferedFile, OpenOptions};

use crate::constants::{BATCH_HEADER_BYTES, OFFSET_INDEX_ENTRY_BYTES};
use crate::error::{LogError, LogResult};
use crate::io::fault::{self, FaultPoint};
use crate::io::pwrite_all;
use crate::types::{Offset, Position};

/// Most entries an index of a segment file of `file_bytes` can hold: at
/// most one per batch, and every batch is at least a header long. Bounds
/// what opening an index reads, whatever size the file claims.
pub(crate) fn index_entries_max(file_bytes: u64) -> u64 {
    file_bytes / BATCH_HEADER_BYTES as u64 + 1
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OffsetIndexEntry {
    pub(crate) offset: Offset,
    pub(crate) position: Position,
}

/// An index file kept in memory and mirrored, append-only, on disk.
pub(crate) struct IndexFile {
    path: PathBuf,
    file: BufferedFile,
}

impl IndexFile {
    pub(crate) async fn open(path: &Path, bytes_max: u64) -> LogResult<(IndexFile, Vec<u8>)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .buffered_open(path)
            .await
            .map_err(|e| LogError::glommio("open index", path, e))?;
        let size = file
            .file_size()
            .await
            .map_err(|e| LogError::glommio("stat index", path, e))?;
        let mut bytes = Vec::new();
        // The size is the disk's word: read no more than a valid index can
        // hold (what lies beyond is dropped with the invalid entries).
        let size = size.min(bytes_max);
        if size > 0 {
            let read = file
                .read_at(0, size as usize)
                .await
                .map_err(|e| LogError::glommio("read index", path, e))?;
            bytes.extend_from_slice(&read);
        }
        let index_file = IndexFile {
            path: path.to_path_buf(),
            file,
        };
        Ok((index_file, bytes))
    }

    /// Writes one entry; on failure cuts the file back to `position` so no
    /// partial entry stays behind (best effort: a partial entry left at the
    /// end is ignored on open and overwritten by the next entry).
    pub(crate) fn write_at(&self, bytes: &[u8], position: u64) -> LogResult<()> {
        let written = fault::check(FaultPoint::Write, &self.path)
            .and_then(|()| pwrite_all(self.file.as_raw_fd(), bytes, position));
        written.map_err(|e| {
            self.cut_to(position);
            LogError::io("write index", &self.path, e)
        })
    }

    /// Cuts the file to `len` bytes from an error path that cannot await.
    pub(crate) fn cut_to(&self, len: u64) {
        if let Err(err) = crate::io::ftruncate(self.file.as_raw_fd(), len) {
            tracing::warn!(path = %self.path.display(), error = %err,
                "cannot cut back an index file (recovery repairs it)");
        }
    }

    pub(crate) async fn truncate(&self, len: u64) -> LogResult<()> {
        self.file
            .truncate(len)
            .await
            .map_err(|e| LogError::glommio("truncate index", &self.path, e))
    }

    pub(crate) async fn remove(&self) -> LogResult<()> {
        self.file
            .remove()
            .await
            .map_err(|e| LogError::glommio("remove index", &self.path, e))
    }
}

/// One fixed-size entry of an index file, stored relative to the segment's
/// base offset.
pub(crate) trait IndexEntry: Copy {
    /// Bytes of one entry on disk.
    const BYTES: usize;
    /// The entry as written, `BYTES` long.
    type Encoded: AsRef<[u8]>;
    /// The entry stored in `chunk` (`BYTES` long) of the segment at `base`.
    fn decode(chunk: &[u8], base: Offset) -> Self;
    /// The entry as stored for the segment at `base`.
    fn encode(&self, base: Offset) -> Self::Encoded;
    /// Whether the entry may follow `previous` in the file.
    fn follows(&self, previous: &Self) -> bool;
}

/// The entries of one index file, kept in memory and mirrored, append-only,
/// on disk: what the offset and the time index share.
pub(crate) struct IndexEntries<E> {
    base: Offset,
    entries: Vec<E>,
    file: IndexFile,
}

impl<E: IndexEntry> IndexEntries<E> {
    /// Opens the file, keeping the longest prefix of well-formed entries
    /// that each follow the one before and pass `keep`, and cuts the file to
    /// it. Reads at most as many entries as a segment file of `file_bytes`
    /// can have batches.
    pub(crate) async fn open(
        path: &Path,
        base: Offset,
        file_bytes: u64,
        keep: impl Fn(&E) -> bool,
    ) -> LogResult<IndexEntries<E>> {
        let bytes_max = index_entries_max(file_bytes).saturating_mul(E::BYTES as u64);
        let (file, bytes) = IndexFile::open(path, bytes_max).await?;
        let mut entries: Vec<E> = Vec::with_capacity(bytes.len() / E::BYTES);
        for chunk in bytes.chunks_exact(E::BYTES) {
            let entry = E::decode(chunk, base);
            let in_order = entries.last().is_none_or(|last| entry.follows(last));
            if !in_order || !keep(&entry) {
                break;
            }
            entries.push(entry);
        }
        let mut index = IndexEntries {
            base,
            entries,
            file,
        };
        index.persist_truncation().await?;
        Ok(index)
    }

    /// The base offset of the segment.
    pub(crate) fn base(&self) -> Offset {
        self.base
    }

    pub(crate) fn as_slice(&self) -> &[E] {
        &self.entries
    }

    pub(crate) fn last(&self) -> Option<E> {
        self.entries.last().copied()
    }

    /// Writes `entry` after the last one and keeps it.
    pub(crate) fn push(&mut self, entry: E) -> LogResult<()> {
        let file_position = (self.entries.len() * E::BYTES) as u64;
        self.file
            .write_at(entry.encode(self.base).as_ref(), file_position)?;
        self.entries.push(entry);
        Ok(())
    }

    /// Forgets the last entry, in memory and (best effort) on disk.
    pub(crate) fn pop_last(&mut self) {
        if self.entries.pop().is_some() {
            self.file.cut_to((self.entries.len() * E::BYTES) as u64);
        }
    }

    /// Keeps only the first `len` entries, in memory and on disk.
    pub(crate) async fn truncate(&mut self, len: usize) -> LogResult<()> {
        self.entries.truncate(len);
        self.persist_truncation().await
    }

    async fn persist_truncation(&mut self) -> LogResult<()> {
        self.file
            .truncate((self.entries.len() * E::BYTES) as u64)
            .await
    }

    pub(crate) async fn remove(&self) -> LogResult<()> {
        self.file.remove().await
    }
}

impl IndexEntry for OffsetIndexEntry {
    const BYTES: usize = OFFSET_INDEX_ENTRY_BYTES;
    type Encoded = [u8; OFFSET_INDEX_ENTRY_BYTES];

    fn decode(chunk: &[u8], base: Offset) -> OffsetIndexEntry {
        let relative = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        let position = u32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
        OffsetIndexEntry {
            offset: base.plus(u64::from(relative)),
            position: Position(u64::from(position)),
        }
    }

    fn encode(&self, base: Offset) -> Self::Encoded {
        let relative = u32::try_from(self.offset.0 - base.0).unwrap_or(u32::MAX);
        let position = u32::try_from(self.position.0).unwrap_or(u32::MAX);
        let mut bytes = [0u8; OFFSET_INDEX_ENTRY_BYTES];
        bytes[..4].copy_from_slice(&relative.to_be_bytes());
        bytes[4..].copy_from_slice(&position.to_be_bytes());
        bytes
    }

    fn follows(&self, previous: &OffsetIndexEntry) -> bool {
        self.offset > previous.offset && self.position > previous.position
    }
}

pub(crate) struct OffsetIndex {
    entries: IndexEntries<OffsetIndexEntry>,
}

impl OffsetIndex {
    /// Opens the index file, keeping the longest prefix of well-formed,
    /// strictly increasing entries that lie below `file_bytes`.
    pub(crate) async fn open(path: &Path, base: Offset, file_bytes: u64) -> LogResult<OffsetIndex> {
        let entries = IndexEntries::open(path, base, file_bytes, |entry: &OffsetIndexEntry| {
            entry.position.0 < file_bytes
        })
        .await?;
        Ok(OffsetIndex { entries })
    }

    pub(crate) fn entries(&self) -> &[OffsetIndexEntry] {
        self.entries.as_slice()
    }

    pub(crate) fn last(&self) -> Option<OffsetIndexEntry> {
        self.entries.last()
    }

    /// Position of the last indexed batch starting at or before `offset`
    /// (0 when none): where a scan for `offset` begins.
    pub(crate) fn floor_by_offset(&self, offset: Offset) -> OffsetIndexEntry {
        let at = self.entries().partition_point(|e| e.offset <= offset);
        if at == 0 {
            return self.segment_start();
        }
        self.entries()[at - 1]
    }

    /// Last indexed batch starting at or before `position`.
    pub(crate) fn floor_by_position(&self, position: Position) -> OffsetIndexEntry {
        let at = self.entries().partition_point(|e| e.position <= position);
        if at == 0 {
            return self.segment_start();
        }
        self.entries()[at - 1]
    }

    fn segment_start(&self) -> OffsetIndexEntry {
        OffsetIndexEntry {
            offset: self.entries.base(),
            position: Position(0),
        }
    }

    pub(crate) fn append(&mut self, offset: Offset, position: Position) -> LogResult<()> {
        debug_assert!(offset >= self.entries.base());
        let entry = OffsetIndexEntry { offset, position };
        debug_assert!(self.last().is_none_or(|last| entry.follows(&last)));
        self.entries.push(entry)
    }

    /// Forgets the last entry, in memory and (best effort) on disk: the time
    /// index could not take its twin.
    pub(crate) fn pop_last(&mut self) {
        self.entries.pop_last();
    }

    /// Drops every entry at or after `position` (the log was truncated there).
    pub(crate) async fn truncate_to_position(&mut self, position: Position) -> LogResult<()> {
        let keep = self.entries().partition_point(|e| e.position < position);
        self.entries.truncate(keep).await
    }

    /// Keeps only the first `len` entries (recovery found the rest stale).
    pub(crate) async fn truncate_entries(&mut self, len: usize) -> LogResult<()> {
        self.entries.truncate(len).await
    }

    pub(crate) async fn remove(&self) -> LogResult<()> {
        self.entries.remove().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::run_on_executor;

    const BASE: Offset = Offset(100);

    fn entry(offset: u64, position: u64) -> OffsetIndexEntry {
        OffsetIndexEntry {
            offset: Offset(offset),
            position: Position(position),
        }
    }

    /// Raw on-disk bytes of entries `(relative offset, position)`.
    fn raw(entries: &[(u32, u32)]) -> Vec<u8> {
        entries
            .iter()
            .flat_map(|(relative, position)| {
                let mut bytes = relative.to_be_bytes().to_vec();
                bytes.extend_from_slice(&position.to_be_bytes());
                bytes
            })
            .collect()
    }

    fn file_len(path: &Path) -> u64 {
        std::fs::metadata(path).expect("stat index").len()
    }

    /// Index at `path` with entries at offsets 110, 120, 130 and positions
    /// 200, 400, 600.
    async fn three_entries(path: &Path) -> OffsetIndex {
        let mut index = OffsetIndex::open(path, BASE, 0).await.expect("open");
        for (offset, position) in [(110, 200), (120, 400), (130, 600)] {
            index
                .append(Offset(offset), Position(position))
                .expect("append");
        }
        index
    }

    #[test]
    fn lookups_take_the_last_entry_at_or_before_the_target() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("i.index");
        run_on_executor(async move {
            let index = three_entries(&path).await;
            let start = entry(100, 0);
            // Before the first entry: the segment start.
            assert_eq!(index.floor_by_offset(Offset(100)), start);
            assert_eq!(index.floor_by_offset(Offset(109)), start);
            // Exact hits and between entries.
            assert_eq!(index.floor_by_offset(Offset(110)), entry(110, 200));
            assert_eq!(index.floor_by_offset(Offset(119)), entry(110, 200));
            assert_eq!(index.floor_by_offset(Offset(120)), entry(120, 400));
            assert_eq!(index.floor_by_offset(Offset(130)), entry(130, 600));
            // After the last.
            assert_eq!(index.floor_by_offset(Offset(1_000_000)), entry(130, 600));

            assert_eq!(index.floor_by_position(Position(199)), start);
            assert_eq!(index.floor_by_position(Position(200)), entry(110, 200));
            assert_eq!(index.floor_by_position(Position(599)), entry(120, 400));
            assert_eq!(index.floor_by_position(Position(u64::MAX)), entry(130, 600));
            assert_eq!(index.last(), Some(entry(130, 600)));
        });
    }

    #[test]
    fn appended_entries_are_found_again_after_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("i.index");
        run_on_executor(async move {
            drop(three_entries(&path).await);
            assert_eq!(file_len(&path), 3 * OFFSET_INDEX_ENTRY_BYTES as u64);
            let index = OffsetIndex::open(&path, BASE, 10_000)
                .await
                .expect("reopen");
            assert_eq!(
                index.entries(),
                &[entry(110, 200), entry(120, 400), entry(130, 600)]
            );
        });
    }

    #[test]
    fn truncation_drops_entries_at_and_after_the_cut_on_disk_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("i.index");
        run_on_executor(async move {
            let mut index = three_entries(&path).await;
            // A cut inside a batch keeps the entry of that batch.
            index
                .truncate_to_position(Position(401))
                .await
                .expect("cut");
            assert_eq!(index.entries().len(), 2);
            // A cut at a batch start drops that batch's entry.
            index
                .truncate_to_position(Position(400))
                .await
                .expect("cut");
            assert_eq!(index.entries(), &[entry(110, 200)]);
            assert_eq!(file_len(&path), OFFSET_INDEX_ENTRY_BYTES as u64);
            // The next entry goes right after the kept one.
            index.append(Offset(125), Position(450)).expect("append");
            drop(index);
            let mut index = OffsetIndex::open(&path, BASE, 10_000)
                .await
                .expect("reopen");
            assert_eq!(index.entries(), &[entry(110, 200), entry(125, 450)]);

            index.truncate_entries(0).await.expect("cut");
            assert!(index.entries().is_empty());
            assert_eq!(file_len(&path), 0);
        });
    }

    #[test]
    fn pop_last_forgets_the_entry_on_disk_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("i.index");
        run_on_executor(async move {
            let mut index = three_entries(&path).await;
            index.pop_last();
            assert_eq!(index.last(), Some(entry(120, 400)));
            drop(index);
            let index = OffsetIndex::open(&path, BASE, 10_000)
                .await
                .expect("reopen");
            assert_eq!(index.entries(), &[entry(110, 200), entry(120, 400)]);
        });
    }

    /// Opens an index file holding `bytes` for a segment of `file_bytes`;
    /// returns its entries and the file's length afterwards.
    fn open_raw(bytes: Vec<u8>, file_bytes: u64) -> (Vec<OffsetIndexEntry>, u64) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("i.index");
        std::fs::write(&path, bytes).expect("write index");
        run_on_executor(async move {
            let index = OffsetIndex::open(&path, BASE, file_bytes)
                .await
                .expect("open");
            (index.entries().to_vec(), file_len(&path))
        })
    }

    #[test]
    fn open_cuts_at_the_first_entry_that_does_not_increase() {
        let entry_bytes = OFFSET_INDEX_ENTRY_BYTES as u64;
        // Offset going back.
        let (entries, len) = open_raw(raw(&[(10, 100), (20, 200), (15, 300), (30, 400)]), 1000);
        assert_eq!(entries, [entry(110, 100), entry(120, 200)]);
        assert_eq!(len, 2 * entry_bytes, "the bad suffix is cut from the file");
        // Offset repeated.
        let (entries, _) = open_raw(raw(&[(10, 100), (10, 200)]), 1000);
        assert_eq!(entries, [entry(110, 100)]);
        // Position not increasing.
        let (entries, len) = open_raw(raw(&[(10, 100), (20, 100), (30, 300)]), 1000);
        assert_eq!(entries, [entry(110, 100)]);
        assert_eq!(len, entry_bytes);
    }

    #[test]
    fn open_refuses_entries_pointing_at_or_past_the_segment_end() {
        let (entries, len) = open_raw(raw(&[(10, 100), (20, 999), (30, 1000)]), 1000);
        assert_eq!(entries, [entry(110, 100), entry(120, 999)]);
        assert_eq!(len, 2 * OFFSET_INDEX_ENTRY_BYTES as u64);
        let (entries, len) = open_raw(raw(&[(10, 100)]), 0);
        assert!(
            entries.is_empty(),
            "an empty segment has no batches to index"
        );
        assert_eq!(len, 0);
    }

    #[test]
    fn a_partial_trailing_entry_is_ignored_and_cut() {
        let mut bytes = raw(&[(10, 100), (20, 200)]);
        bytes.extend_from_slice(&[0, 0, 0, 30, 0]);
        let (entries, len) = open_raw(bytes, 1000);
        assert_eq!(entries, [entry(110, 100), entry(120, 200)]);
        assert_eq!(len, 2 * OFFSET_INDEX_ENTRY_BYTES as u64);
    }

    #[test]
    fn open_reads_no_more_entries_than_the_segment_can_have_batches() {
        // A segment of 610 bytes holds at most 610 / 61 = 10 batches (+1
        // for rounding); an index claiming 40 valid entries is cut there.
        let file_bytes = 10 * BATCH_HEADER_BYTES as u64;
        let max = index_entries_max(file_bytes);
        assert_eq!(max, 11);
        let claimed: Vec<(u32, u32)> = (1..=40).map(|i| (i, i * 10)).collect();
        let (entries, len) = open_raw(raw(&claimed), file_bytes);
        assert_eq!(entries.len() as u64, max);
        assert_eq!(len, max * OFFSET_INDEX_ENTRY_BYTES as u64);
        assert_eq!(index_entries_max(0), 1);
    }

    #[test]
    fn garbage_opens_as_a_valid_prefix_without_panicking() {
        // Deterministic pseudo-random bytes (xorshift), several seeds.
        for seed in 1..=20u64 {
            let mut state = seed;
            let bytes: Vec<u8> = (0..4096)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let file_bytes = 1 << 20;
            let (entries, len) = open_raw(bytes, file_bytes);
            assert_eq!(len, (entries.len() * OFFSET_INDEX_ENTRY_BYTES) as u64);
            for pair in entries.windows(2) {
                assert!(pair[0].offset < pair[1].offset, "seed {seed}");
                assert!(pair[0].position < pair[1].position, "seed {seed}");
            }
            assert!(entries.iter().all(|e| e.position.0 < file_bytes));
            assert!(entries.iter().all(|e| e.offset >= BASE));
        }
    }
}
