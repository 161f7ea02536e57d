//! One segment of a partition log: `<base_offset:020>.log` plus its offset
//! and time indexes.
//!
//! A segment file is a sequence of RecordBatch v2 batches with increasing
//! offsets, starting at byte 0, followed (while active) by preallocated
//! zeros. Preallocation grows with the segment
//! (`SegmentConfig::preallocation_target`): a new segment gets a small
//! first size, an append that would pass the preallocated end first extends
//! it (doubling, then in steps of `preallocate_step_bytes`), so the file
//! size of an active segment is one of those sizes (or anything at all
//! after a crash, a full disk or a failed extension). Its logical end is found by
//! scanning CRC-checked batches, never by trusting the file size: a zero
//! length field, the end of the file, or a batch that fails its checks ends
//! the log. When a segment is sealed it is truncated to its logical end and
//! fsynced, so sealed segments have exact sizes.

use std::os::unix::io::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{BufferedFile, OpenOptions};

use crate::batch::BatchHeader;
use crate::constants::{
    BATCH_HEADER_BYTES, HEADER_SCAN_CHUNK_BYTES, RECOVERY_READ_CHUNK_BYTES,
    SEGMENT_PREALLOCATE_FIRST_BYTES,
};
use crate::error::{DecodeError, LogError, LogResult};
use crate::index::OffsetIndex;
use crate::io::fault::{self, FaultPoint};
use crate::io::{pread_full, pwrite_all, remove_if_exists};
use crate::time_index::TimeIndex;
use crate::types::{Offset, Position, TimestampMs};

mod recovery;

pub(crate) use recovery::RecoveryScan;
pub use recovery::SegmentRecovery;

/// File names of a segment with the given base offset.
pub(crate) fn segment_file_name(base: Offset, extension: &str) -> String {
    format!("{:020}.{extension}", base.0)
}

/// Parses `<base_offset:020>.log` back into its base offset.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<Offset> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok().map(Offset)
}

/// Suffix of the files compaction writes next to a sealed segment
/// (`<base_offset:020>.log.cleaned`, `.index.cleaned`, `.timeindex.cleaned`)
/// before swapping them in. Any found on open are leftovers of a compaction
/// that crashed before its swap and are deleted.
pub const CLEANED_SUFFIX: &str = ".cleaned";

/// Name of the cleaned copy of a segment file (`<base:020>.<extension>.cleaned`).
pub(crate) fn cleaned_file_name(base: Offset, extension: &str) -> String {
    format!("{}{CLEANED_SUFFIX}", segment_file_name(base, extension))
}

/// Whether `name` is a compaction leftover (`<base:020>.<ext>.cleaned`).
pub(crate) fn is_cleaned_file_name(name: &str) -> bool {
    name.strip_suffix(CLEANED_SUFFIX)
        .and_then(|stem| stem.get(..20))
        .is_some_and(|digits| digits.bytes().all(|b| b.is_ascii_digit()))
}

/// Extensions of the three files that make up a segment.
pub(crate) const SEGMENT_FILE_EXTENSIONS: [&str; 3] = ["log", "index", "timeindex"];

/// The open segment file, shared (on this shard only) between the log and
/// any read slice in flight, so a file deleted by retention stays readable
/// until the last reader is done.
pub struct SegmentFile {
    path: PathBuf,
    file: BufferedFile,
}

impl SegmentFile {
    /// The segment file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw descriptor, for `sendfile`. Valid while `self` is alive.
    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    pub(crate) async fn read_exact_at(&self, position: Position, len: usize) -> LogResult<Vec<u8>> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let want = (len - out.len()).min(RECOVERY_READ_CHUNK_BYTES);
            let chunk = self
                .file
                .read_at(position.0 + out.len() as u64, want)
                .await
                .map_err(|e| LogError::glommio("read segment", &self.path, e))?;
            if chunk.is_empty() {
                return Err(LogError::io(
                    "read segment",
                    &self.path,
                    std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
                ));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    pub(crate) async fn truncate(&self, len: u64) -> LogResult<()> {
        self.file
            .truncate(len)
            .await
            .map_err(|e| LogError::glommio("truncate segment", &self.path, e))
    }

    pub(crate) async fn fdatasync(&self) -> LogResult<()> {
        fault::check(FaultPoint::Fdatasync, &self.path)
            .map_err(|e| LogError::io("fdatasync", &self.path, e))?;
        self.file
            .fdatasync()
            .await
            .map_err(|e| LogError::glommio("fdatasync", &self.path, e))
    }
}

/// Why [`Segment::append`] wrote nothing.
#[derive(Debug)]
pub(crate) enum SegmentAppendError {
    /// The write failed (e.g. `ENOSPC`) and whatever part of it reached the
    /// file was cut off again: the segment is exactly as before the call.
    Rejected(LogError),
    /// The write failed and its partial bytes could not be removed: stale
    /// bytes may follow the logical end, so the segment must not take more
    /// appends until it is reopened (recovery cuts them off).
    TailUnclean(LogError),
}

impl From<SegmentAppendError> for LogError {
    fn from(err: SegmentAppendError) -> LogError {
        match err {
            SegmentAppendError::Rejected(err) | SegmentAppendError::TailUnclean(err) => err,
        }
    }
}

/// Where a batch lives and what it holds, as far as lookups need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BatchLocation {
    pub(crate) position: Position,
    pub(crate) header: BatchHeader,
}

impl BatchLocation {
    pub(crate) fn end(&self) -> Position {
        Position(self.position.0 + self.header.total_bytes() as u64)
    }
}

#[derive(Clone, Debug)]
pub(crate) struct SegmentConfig {
    pub(crate) segment_bytes: u64,
    pub(crate) index_interval_bytes: u64,
    pub(crate) preallocate: bool,
    /// Preallocation grows in whole steps of this many bytes (capped at
    /// `segment_bytes`).
    pub(crate) preallocate_step_bytes: u64,
    /// [`Segment::create`] fails with [`LogError::NoSpace`] (removing what
    /// it made) when it cannot preallocate the first step, instead of
    /// going on without preallocation. Set only for the first segment of a
    /// new log: see `LogConfig::require_first_preallocation`.
    pub(crate) first_step_required: bool,
}

impl SegmentConfig {
    /// How far to preallocate so that `end` bytes fit: the first size
    /// ([`SEGMENT_PREALLOCATE_FIRST_BYTES`], at most one step) doubled until
    /// it holds `end` while that stays within one step, else the step
    /// boundary at or after `end`; capped at the segment size. The cap
    /// never cuts below `end`: a roll keeps `end ≤ segment_bytes`.
    pub(crate) fn preallocation_target(&self, end: u64) -> u64 {
        let step = self.preallocate_step_bytes.max(1);
        let mut target = self.first_preallocation_bytes();
        while target < end && target <= step / 2 {
            target *= 2;
        }
        if target < end {
            target = end.div_ceil(step).saturating_mul(step);
        }
        target.min(self.segment_bytes).max(end)
    }

    /// What a new segment preallocates.
    pub(crate) fn first_preallocation_bytes(&self) -> u64 {
        SEGMENT_PREALLOCATE_FIRST_BYTES
            .min(self.preallocate_step_bytes)
            .min(self.segment_bytes)
            .max(1)
    }
}

pub(crate) struct Segment {
    base: Offset,
    file: Rc<SegmentFile>,
    /// Logical end: bytes of whole batches written.
    size: u64,
    next_offset: Offset,
    max_timestamp: TimestampMs,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
    bytes_since_index_entry: u64,
    index_interval_bytes: u64,
    /// Bytes the file is known to span (preallocated, or written by
    /// appends past a preallocation that fell short); 0 once sealed. An
    /// append that would end past it extends the preallocation first.
    preallocated_bytes: u64,
}

impl Segment {
    pub(crate) async fn create(
        dir: &Path,
        base: Offset,
        config: &SegmentConfig,
    ) -> LogResult<Segment> {
        let names = SEGMENT_FILE_EXTENSIONS.map(|ext| dir.join(segment_file_name(base, ext)));
        Segment::create_files(base, names, config).await
    }

    /// Creates the cleaned copy of segment `base` that compaction fills
    /// (`*.cleaned` names, see [`CLEANED_SUFFIX`]), first removing any
    /// leftover of an interrupted compaction so no stale index entry survives.
    pub(crate) async fn create_cleaned(
        dir: &Path,
        base: Offset,
        config: &SegmentConfig,
    ) -> LogResult<Segment> {
        Segment::remove_cleaned_files(dir, base).await?;
        let names = SEGMENT_FILE_EXTENSIONS.map(|ext| dir.join(cleaned_file_name(base, ext)));
        Segment::create_files(base, names, config).await
    }

    /// Removes the `*.cleaned` files of segment `base`, those that exist.
    pub(crate) async fn remove_cleaned_files(dir: &Path, base: Offset) -> LogResult<()> {
        for ext in SEGMENT_FILE_EXTENSIONS {
            remove_if_exists(&dir.join(cleaned_file_name(base, ext))).await?;
        }
        Ok(())
    }

    /// Creates a segment whose log, offset index and time index live at
    /// `paths` (in that order).
    async fn create_files(
        base: Offset,
        paths: [PathBuf; 3],
        config: &SegmentConfig,
    ) -> LogResult<Segment> {
        let created = Segment::try_create_files(base, &paths, config).await;
        let exists = matches!(&created, Err(LogError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::AlreadyExists);
        if created.is_err() && !exists {
            // A half-made segment (e.g. the disk filled between its files)
            // would make the next attempt fail on `create_new`: remove it.
            for path in &paths {
                if let Err(err) = remove_if_exists(path).await {
                    tracing::warn!(path = %path.display(), error = %err,
                        "cannot remove a partly created segment file");
                }
            }
        }
        created
    }

    async fn try_create_files(
        base: Offset,
        paths: &[PathBuf; 3],
        config: &SegmentConfig,
    ) -> LogResult<Segment> {
        let [path, index_path, time_index_path] = paths;
        fault::check(FaultPoint::Create, path)
            .map_err(|e| LogError::io("create segment", path, e))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .buffered_open(path)
            .await
            .map_err(|e| LogError::glommio("create segment", path, e))?;
        let path = path.clone();
        let offset_index = OffsetIndex::open(index_path, base, 0).await?;
        let time_index = TimeIndex::open(time_index_path, base, 0).await?;
        let file = SegmentFile { path, file };
        let mut preallocated_bytes = 0;
        if config.preallocate {
            let first_step = config.first_preallocation_bytes();
            preallocated_bytes = if config.first_step_required {
                file.preallocate_exactly(first_step).await?;
                first_step
            } else {
                file.preallocate(first_step).await?
            };
        }
        let indexes = (offset_index, time_index);
        Ok(Segment::empty(
            base,
            file,
            indexes,
            config,
            preallocated_bytes,
        ))
    }

    /// A segment holding no batches yet (recovery finds its end on open).
    fn empty(
        base: Offset,
        file: SegmentFile,
        (offset_index, time_index): (OffsetIndex, TimeIndex),
        config: &SegmentConfig,
        preallocated_bytes: u64,
    ) -> Segment {
        Segment {
            base,
            file: Rc::new(file),
            size: 0,
            next_offset: base,
            max_timestamp: TimestampMs(-1),
            offset_index,
            time_index,
            bytes_since_index_entry: 0,
            index_interval_bytes: config.index_interval_bytes,
            preallocated_bytes,
        }
    }

    /// Opens an existing segment and recovers its logical end: batches after
    /// the last index entry are length- and CRC-checked; the first bad one
    /// and everything after it is discarded. `min_base` is the lowest offset
    /// the first batch may have (the previous segment's end).
    pub(crate) async fn open(
        dir: &Path,
        base: Offset,
        config: &SegmentConfig,
        active: bool,
        scan: RecoveryScan,
    ) -> LogResult<(Segment, SegmentRecovery)> {
        let path = dir.join(segment_file_name(base, "log"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .buffered_open(&path)
            .await
            .map_err(|e| LogError::glommio("open segment", &path, e))?;
        let file_bytes = file
            .file_size()
            .await
            .map_err(|e| LogError::glommio("stat segment", &path, e))?;
        let offset_index = OffsetIndex::open(
            &dir.join(segment_file_name(base, "index")),
            base,
            file_bytes,
        )
        .await?;
        let time_index = TimeIndex::open(
            &dir.join(segment_file_name(base, "timeindex")),
            base,
            file_bytes,
        )
        .await?;
        let file = SegmentFile { path, file };
        let indexes = (offset_index, time_index);
        let mut segment = Segment::empty(base, file, indexes, config, file_bytes);
        let recovery = segment.recover(file_bytes, scan).await?;
        if active {
            if config.preallocate {
                segment.fit_preallocation(config).await?;
            }
        } else if file_bytes != segment.size {
            segment.seal().await?;
        }
        Ok((segment, recovery))
    }

    /// Makes the active segment's preallocation one step past its logical
    /// end: grows it (best effort) when it is shorter, and gives back what
    /// lies beyond when it is longer — a segment preallocated whole by an
    /// older version, or a step taken just before a crash. Past the logical
    /// end there are only zeros here (recovery discarded anything else), so
    /// cutting them loses nothing; the cut need not be durable, since a
    /// longer file after a crash only has more zeros for recovery to skip.
    async fn fit_preallocation(&mut self, config: &SegmentConfig) -> LogResult<()> {
        let target = config.preallocation_target(self.size);
        if self.preallocated_bytes > target {
            self.truncate_file(target).await?;
            self.preallocated_bytes = target;
        } else if self.preallocated_bytes < target {
            self.preallocate(target).await?;
        }
        Ok(())
    }

    async fn truncate_file(&self, len: u64) -> LogResult<()> {
        self.file
            .file
            .truncate(len)
            .await
            .map_err(|e| LogError::glommio("truncate segment", &self.file.path, e))
    }

    /// Preallocates up to `bytes`, best effort: see [`SegmentFile::preallocate`].
    async fn preallocate(&mut self, bytes: u64) -> LogResult<()> {
        let reached = self.file.preallocate(bytes).await?;
        self.note_preallocated(reached);
        Ok(())
    }

    /// The preallocation an append of `next_batch_bytes` needs first, if
    /// the active segment's preallocated end is short of it: the step
    /// boundary to extend to. `None` when it fits (or preallocation is off).
    pub(crate) fn preallocation_needed(
        &self,
        next_batch_bytes: u64,
        config: &SegmentConfig,
    ) -> Option<u64> {
        let end = self.size.saturating_add(next_batch_bytes);
        (config.preallocate && end > self.preallocated_bytes)
            .then(|| config.preallocation_target(end))
    }

    /// Records that the file now spans `reached` bytes (what an extension
    /// through the shared file handle reached; see
    /// [`SegmentFile::preallocate`]).
    pub(crate) fn note_preallocated(&mut self, reached: u64) {
        self.preallocated_bytes = reached.max(self.size);
    }

    /// Appends one validated batch at the logical end. The bytes reach the
    /// page cache, not the disk: durability is the log's group commit.
    ///
    /// All or nothing: when the write fails (a full disk fails it part-way)
    /// the bytes that did land are cut off again, so the segment ends where
    /// it ended before and no half batch can ever be found after it.
    pub(crate) fn append(
        &mut self,
        batch: &[u8],
        header: &BatchHeader,
    ) -> Result<Position, SegmentAppendError> {
        debug_assert_eq!(batch.len(), header.total_bytes());
        debug_assert!(header.base_offset >= self.next_offset);
        let position = Position(self.size);
        let written = fault::check(FaultPoint::Write, &self.file.path)
            .and_then(|()| pwrite_all(self.file.raw_fd(), batch, position.0));
        if let Err(err) = written {
            let err = LogError::io("append to segment", &self.file.path, err);
            return Err(self.discard_failed_write(err));
        }
        self.note_appended(header, position, batch.len() as u64);
        Ok(position)
    }

    /// Undoes a failed `pwrite` at the logical end by cutting the file there.
    /// That also gives back this segment's preallocation (the next append
    /// tries to preallocate its step again): zeroing the range instead could
    /// itself need space the disk does not have.
    fn discard_failed_write(&mut self, err: LogError) -> SegmentAppendError {
        match crate::io::ftruncate(self.file.raw_fd(), self.size) {
            Ok(()) => {
                self.preallocated_bytes = self.size;
                SegmentAppendError::Rejected(err)
            }
            Err(cut) => {
                tracing::error!(segment = %self.file.path.display(), error = %cut,
                    "cannot cut off a failed append");
                SegmentAppendError::TailUnclean(err)
            }
        }
    }

    /// Accounts for a batch written at `position`, adding index entries when
    /// due. Index entries are a rebuildable cache: one that cannot be written
    /// (full disk) is skipped, costing lookup speed, never data; the next
    /// batch tries again.
    fn note_appended(&mut self, header: &BatchHeader, position: Position, bytes: u64) {
        if self.bytes_since_index_entry >= self.index_interval_bytes
            && position.0 > 0
            && self.append_index_entries(header.base_offset, position)
        {
            self.bytes_since_index_entry = 0;
        }
        self.size = position.0 + bytes;
        self.bytes_since_index_entry += bytes;
        self.next_offset = header.next_offset();
        self.max_timestamp = self.max_timestamp.max(header.max_timestamp);
    }

    /// Appends one entry to both indexes, or to neither (recovery only trusts
    /// the indexes when their last entries agree). Returns whether it did.
    fn append_index_entries(&mut self, offset: Offset, position: Position) -> bool {
        let written = self.offset_index.append(offset, position).and_then(|()| {
            self.time_index
                .append(self.max_timestamp, offset)
                .inspect_err(|_| self.offset_index.pop_last())
        });
        match written {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(segment = %self.file.path.display(), error = %err,
                    "index entry skipped; lookups in this segment scan a little further");
                false
            }
        }
    }

    /// Truncates the file to its logical end and makes that durable. Called
    /// when the segment stops being the active one.
    pub(crate) async fn seal(&mut self) -> LogResult<()> {
        self.file.truncate(self.size).await?;
        self.mark_sealed();
        self.file.fdatasync().await
    }

    /// Records that the file was truncated to its logical end (see
    /// [`Self::seal`]; the log seals through the shared file handle).
    pub(crate) fn mark_sealed(&mut self) {
        self.preallocated_bytes = 0;
    }

    /// Removes every batch at or after the one containing `offset`; returns
    /// the new end offset (≤ `offset`). Durable when it returns.
    pub(crate) async fn truncate_to(
        &mut self,
        offset: Offset,
        config: &SegmentConfig,
    ) -> LogResult<Offset> {
        let Some(location) = self.locate(offset)? else {
            return Ok(self.next_offset);
        };
        self.offset_index
            .truncate_to_position(location.position)
            .await?;
        self.time_index
            .truncate_to_offset(location.header.base_offset)
            .await?;
        self.size = location.position.0;
        self.discard_tail().await?;
        let file_bytes = self.size;
        let recovery = self
            .recover(file_bytes, RecoveryScan::FromLastIndexEntry)
            .await?;
        debug_assert_eq!(recovery.truncated_bytes, 0);
        if config.preallocate {
            self.fit_preallocation(config).await?;
        }
        Ok(self.next_offset)
    }

    /// Scans batch headers from `from` (a batch start) until `stop_at`
    /// says so; returns the location it stopped at, or `None` when it
    /// reached the end of the segment's batches first.
    fn scan_headers(
        &self,
        from: Position,
        mut stop_at: impl FnMut(&BatchLocation) -> bool,
    ) -> LogResult<Option<BatchLocation>> {
        let mut position = from.0;
        // An index hit is at most one interval (plus a header) before the
        // batch a lookup wants: read that much at once, in whole pages.
        let interval_window =
            (self.index_interval_bytes as usize + BATCH_HEADER_BYTES).next_multiple_of(4096);
        let mut window = vec![
            0u8;
            interval_window
                .min(HEADER_SCAN_CHUNK_BYTES)
                .min(self.size as usize)
                .max(BATCH_HEADER_BYTES)
        ];
        let mut window_start = u64::MAX;
        let mut window_len = 0usize;
        while position < self.size {
            let in_window = position >= window_start
                && position + BATCH_HEADER_BYTES as u64 <= window_start + window_len as u64;
            if !in_window {
                window_start = position;
                window_len = pread_full(self.file.raw_fd(), &mut window, position)
                    .map_err(|e| LogError::io("read segment", &self.file.path, e))?;
                if window_len < BATCH_HEADER_BYTES {
                    return Err(self.corrupt(
                        position,
                        DecodeError::Truncated {
                            needed: BATCH_HEADER_BYTES,
                            available: window_len,
                        },
                    ));
                }
            }
            let at = (position - window_start) as usize;
            let header = BatchHeader::parse(&window[at..at + BATCH_HEADER_BYTES])
                .map_err(|e| self.corrupt(position, e))?;
            let location = BatchLocation {
                position: Position(position),
                header,
            };
            if stop_at(&location) {
                return Ok(Some(location));
            }
            position += header.total_bytes() as u64;
        }
        Ok(None)
    }

    fn corrupt(&self, position: u64, source: DecodeError) -> LogError {
        LogError::Corrupt {
            path: self.file.path.clone(),
            position: Position(position),
            source,
        }
    }

    /// The batch holding `offset`, or the first batch after it when
    /// compaction removed it; `None` when `offset` is past the end.
    pub(crate) fn locate(&self, offset: Offset) -> LogResult<Option<BatchLocation>> {
        if offset >= self.next_offset {
            return Ok(None);
        }
        let start = self.verified(self.offset_index.floor_by_offset(offset));
        self.scan_headers(start, |loc| loc.header.last_offset() >= offset)
    }

    /// Calls `visit` with every batch header, in order (reads headers only).
    pub(crate) fn for_each_header(&self, mut visit: impl FnMut(&BatchHeader)) -> LogResult<()> {
        self.scan_headers(Position(0), |location| {
            visit(&location.header);
            false
        })?;
        Ok(())
    }

    /// The entry's position if a batch with the entry's offset starts there;
    /// otherwise (a damaged index) the segment start, so a lookup stays
    /// correct, only slower. Indexes are rebuilt on the next crash recovery.
    fn verified(&self, entry: crate::index::OffsetIndexEntry) -> Position {
        if entry.position.0 == 0 {
            return Position(0);
        }
        let mut header = [0u8; BATCH_HEADER_BYTES];
        let matches = pread_full(self.file.raw_fd(), &mut header, entry.position.0)
            .is_ok_and(|read| read == BATCH_HEADER_BYTES)
            && BatchHeader::parse(&header).is_ok_and(|h| h.base_offset == entry.offset);
        if matches {
            return entry.position;
        }
        tracing::warn!(segment = %self.file.path.display(), offset = entry.offset.0,
            position = entry.position.0, "offset index entry does not match the log; scanning from the segment start");
        Position(0)
    }

    /// The end of the last whole batch that starts at or after `from` and
    /// ends at or before `limit`; `from` itself when the first batch is
    /// already longer than `limit - from`.
    pub(crate) fn batch_boundary_at_or_before(
        &self,
        from: Position,
        limit: Position,
    ) -> LogResult<Position> {
        if limit.0 >= self.size {
            return Ok(Position(self.size));
        }
        let hint = self.offset_index.floor_by_position(limit);
        let scan_from = if hint.position > from && self.verified(hint) == hint.position {
            hint.position
        } else {
            from
        };
        let mut boundary = scan_from;
        self.scan_headers(scan_from, |loc| {
            if loc.end() > limit {
                return true;
            }
            boundary = loc.end();
            false
        })?;
        Ok(boundary)
    }

    /// First batch holding a record with timestamp ≥ `target`.
    pub(crate) fn locate_by_timestamp(
        &self,
        target: TimestampMs,
    ) -> LogResult<Option<BatchLocation>> {
        if self.max_timestamp < target {
            return Ok(None);
        }
        let start_offset = self.time_index.scan_start(target);
        let start = self.verified(self.offset_index.floor_by_offset(start_offset));
        self.scan_headers(start, |loc| loc.header.max_timestamp >= target)
    }

    pub(crate) async fn remove_files(&self) -> LogResult<()> {
        self.file
            .file
            .remove()
            .await
            .map_err(|e| LogError::glommio("remove segment", &self.file.path, e))?;
        self.offset_index.remove().await?;
        self.time_index.remove().await
    }

    pub(crate) fn info(&self, active: bool) -> SegmentInfo {
        SegmentInfo {
            base_offset: self.base,
            next_offset: self.next_offset,
            size_bytes: self.size,
            max_timestamp: self.max_timestamp,
            active,
        }
    }

    pub(crate) fn base(&self) -> Offset {
        self.base
    }
    pub(crate) fn size(&self) -> u64 {
        self.size
    }
    pub(crate) fn next_offset(&self) -> Offset {
        self.next_offset
    }
    pub(crate) fn file(&self) -> &Rc<SegmentFile> {
        &self.file
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.size == 0
    }
}

/// Summary of one segment for retention, compaction and `describe`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Offset of the segment's first record (its file name).
    pub base_offset: Offset,
    /// Offset after its last record.
    pub next_offset: Offset,
    /// Bytes of batches in it (not the preallocated size).
    pub size_bytes: u64,
    /// The largest record timestamp in it (retention by age uses it).
    pub max_timestamp: TimestampMs,
    /// Whether this is the segment appends go to.
    pub active: bool,
}

impl SegmentFile {
    /// `fallocate`s the file to `bytes` (it never shrinks it), or fails:
    /// [`LogError::NoSpace`] on a full disk, in which case part of the range
    /// may have been kept.
    async fn preallocate_exactly(&self, bytes: u64) -> LogResult<()> {
        fault::check(FaultPoint::Preallocate, &self.path)
            .map_err(|e| LogError::io("preallocate segment", &self.path, e))?;
        self.file
            .pre_allocate(bytes, false)
            .await
            .map_err(|e| LogError::glommio("preallocate segment", &self.path, e))
    }

    /// Preallocates the file to `bytes`, best effort: on a full disk
    /// (`ENOSPC`, `EDQUOT`) the segment simply stays shorter and appends
    /// extend it, each one failing cleanly when nothing fits. A full disk
    /// must never stop a log from opening, rolling or appending while a
    /// small append would fit. Returns the bytes the file spans afterwards.
    /// Other errors (`EIO`) are returned: the caller refuses what needed
    /// the space, and nothing was written.
    pub(crate) async fn preallocate(&self, bytes: u64) -> LogResult<u64> {
        match self.preallocate_exactly(bytes).await {
            Ok(()) => Ok(bytes),
            Err(LogError::NoSpace { .. }) => {
                tracing::warn!(segment = %self.path.display(), bytes,
                    "no space to preallocate the segment; appending without preallocation");
                // A failed fallocate may have kept part of the range.
                self.file
                    .file_size()
                    .await
                    .map_err(|e| LogError::glommio("stat segment", &self.path, e))
            }
            Err(err) => Err(err),
        }
    }
}

#[cfg(test)]
mod tests;
