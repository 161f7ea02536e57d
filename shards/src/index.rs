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

pub(crate) struct OffsetIndex {
    base: Offset,
    entries: Vec<OffsetIndexEntry>,
    file: IndexFile,
}

impl OffsetIndex {
    /// Opens the index file, keeping the longest prefix of well-formed,
    /// strictly increasing entries that lie below `file_bytes`.
    pub(crate) async fn open(path: &Path, base: Offset, file_bytes: u64) -> LogResult<OffsetIndex> {
        let bytes_max =
            index_entries_max(file_bytes).saturating_mul(OFFSET_INDEX_ENTRY_BYTES as u64);
        let (file, bytes) = IndexFile::open(path, bytes_max).await?;
        let mut entries: Vec<OffsetIndexEntry> =
            Vec::with_capacity(bytes.len() / OFFSET_INDEX_ENTRY_BYTES);
        for chunk in bytes.chunks_exact(OFFSET_INDEX_ENTRY_BYTES) {
            let relative = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let position = u32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
            let entry = OffsetIndexEntry {
                offset: base.plus(u64::from(relative)),
                position: Position(u64::from(position)),
            };
            let increasing = entries
                .last()
                .is_none_or(|last| entry.offset > last.offset && entry.position > last.position);
            if !increasing || entry.position.0 >= file_bytes {
                break;
            }
            entries.push(entry);
        }
        let mut index = OffsetIndex {
            base,
            entries,
            file,
        };
        index.persist_truncation().await?;
        Ok(index)
    }

    pub(crate) fn entries(&self) -> &[OffsetIndexEntry] {
        &self.entries
    }

    pub(crate) fn last(&self) -> Option<OffsetIndexEntry> {
        self.entries.last().copied()
    }

    /// Position of the last indexed batch starting at or before `offset`
    /// (0 when none): where a scan for `offset` begins.
    pub(crate) fn floor_by_offset(&self, offset: Offset) -> OffsetIndexEntry {
        let at = self.entries.partition_point(|e| e.offset <= offset);
        if at == 0 {
            return self.segment_start();
        }
        self.entries[at - 1]
    }

    /// Last indexed batch starting at or before `position`.
    pub(crate) fn floor_by_position(&self, position: Position) -> OffsetIndexEntry {
        let at = self.entries.partition_point(|e| e.position <= position);
        if at == 0 {
            return self.segment_start();
        }
        self.entries[at - 1]
    }

    fn segment_start(&self) -> OffsetIndexEntry {
        OffsetIndexEntry {
            offset: self.base,
            position: Position(0),
        }
    }

    pub(crate) fn append(&mut self, offset: Offset, position: Position) -> LogResult<()> {
        debug_assert!(offset >= self.base);
        debug_assert!(self
            .entries
            .last()
            .is_none_or(|last| offset > last.offset && position > last.position));
        let relative = u32::try_from(offset.0 - self.base.0).unwrap_or(u32::MAX);
        let position_u32 = u32::try_from(position.0).unwrap_or(u32::MAX);
        let mut bytes = [0u8; OFFSET_INDEX_ENTRY_BYTES];
        bytes[..4].copy_from_slice(&relative.to_be_bytes());
        bytes[4..].copy_from_slice(&position_u32.to_be_bytes());
        let file_position = (self.entries.len() * OFFSET_INDEX_ENTRY_BYTES) as u64;
        self.file.write_at(&bytes, file_position)?;
        self.entries.push(OffsetIndexEntry { offset, position });
        Ok(())
    }

    /// Forgets the last entry, in memory and (best effort) on disk: the time
    /// index could not take its twin.
    pub(crate) fn pop_last(&mut self) {
        if self.entries.pop().is_some() {
            self.file
                .cut_to((self.entries.len() * OFFSET_INDEX_ENTRY_BYTES) as u64);
        }
    }

    /// Drops every entry at or after `position` (the log was truncated there).
    pub(crate) async fn truncate_to_position(&mut self, position: Position) -> LogResult<()> {
        let keep = self.entries.partition_point(|e| e.position < position);
        self.entries.truncate(keep);
        self.persist_truncation().await
    }

    /// Keeps only the first `len` entries (recovery found the rest stale).
    pub(crate) async fn truncate_entries(&mut self, len: usize) -> LogResult<()> {
        self.entries.truncate(len);
        self.persist_truncation().await
    }

    async fn persist_truncation(&mut self) -> LogResult<()> {
        self.file
            .truncate((self.entries.len() * OFFSET_INDEX_ENTRY_BYTES) as u64)
            .await
    }

    pub(crate) async fn remove(&self) -> LogResult<()> {
        self.file.remove().await
    }
}
