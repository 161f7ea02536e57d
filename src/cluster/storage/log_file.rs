//! The raft log file, `<data_dir>/raft/log`.
//!
//! ```text
//! log    := magic "SLRAFTL1" | frame*
//! frame  := u32 LE len | u32 LE crc32c(payload) | payload      (frame.rs)
//! payload:= JSON LogRecord: {"Entry": <openraft entry>} | {"Purged": <log id>}
//! ```
//!
//! Entries are appended in index order with no holes. `truncate(i)` (raft
//! dropping a conflicting uncommitted suffix) cuts the file at entry `i` with
//! `ftruncate` + fsync. `purge(id)` (raft discarding entries a snapshot
//! covers) appends a durable `Purged` marker; once the purged prefix is large
//! (see [`LOG_REWRITE_DEAD_BYTES_MIN`]) the file is rewritten without it
//! (tmp + fsync + rename + directory fsync), starting with the marker.
//!
//! Every write is fsynced before the call returns; the caller reports an
//! append flushed to raft only after that.
//!
//! Recovery reads frames from the start. A torn or CRC-failing frame ends
//! the log: the file is cut there (and the loss logged) before anything is
//! appended, so no new entry ever follows garbage. A CRC-valid record that
//! does not decode, or an entry that breaks index contiguity, is not a torn
//! write but a bug or a foreign file: start-up fails instead of guessing.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::files::{io_error, open_rw, replace_atomically, Durability};
use crate::cluster::error::ClusterError;
use crate::cluster::frame::{self, ReadError, ReadFrame, FRAME_HEADER_BYTES};
use crate::cluster::limits::{LOG_FILE_BYTES_MAX, LOG_RECORD_BYTES_MAX};
use crate::cluster::types::{Entry, LogId};

const MAGIC: &[u8; 8] = b"SLRAFTL1";
const MAGIC_BYTES: u64 = MAGIC.len() as u64;

#[derive(Serialize)]
enum LogRecordRef<'a> {
    Entry(&'a Entry),
    Purged(&'a LogId),
}

#[derive(Deserialize)]
enum LogRecord {
    Entry(Entry),
    Purged(LogId),
}

/// What recovery found in the file.
pub(super) struct Recovered {
    pub entries: BTreeMap<u64, Entry>,
    pub last_purged: Option<LogId>,
}

/// The open log file. Blocking: every method runs on tokio's blocking pool.
pub(super) struct LogFile {
    path: PathBuf,
    file: File,
    /// Logical (and physical) end of the file.
    len: u64,
    /// Start of each unpurged entry's frame, by raft index.
    entry_pos: BTreeMap<u64, u64>,
    last_purged: Option<LogId>,
    /// End of the last `Purged` marker ([`MAGIC_BYTES`] if none): a
    /// truncation below it must write the marker again.
    purge_marker_end: u64,
    /// See [`LOG_REWRITE_DEAD_BYTES_MIN`]; a field so tests can force
    /// rewrites.
    rewrite_dead_bytes_min: u64,
}

impl LogFile {
    /// Opens (creating if needed) and recovers the log at `path`.
    pub fn open(
        path: &Path,
        rewrite_dead_bytes_min: u64,
    ) -> Result<(LogFile, Recovered), ClusterError> {
        let existing_len = match std::fs::metadata(path) {
            Ok(m) => Some(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_error("stat", path)(e)),
        };
        if existing_len.is_none_or(|len| len < MAGIC_BYTES) {
            if let Some(len) = existing_len {
                tracing::warn!(path = %path.display(), len, "raft log shorter than its header; starting it anew");
            }
            replace_atomically(path, MAGIC, Durability::Durable)?;
        }
        let file = open_rw(path)?;
        let mut log = LogFile {
            path: path.to_path_buf(),
            file,
            len: MAGIC_BYTES,
            entry_pos: BTreeMap::new(),
            last_purged: None,
            purge_marker_end: MAGIC_BYTES,
            rewrite_dead_bytes_min,
        };
        let recovered = log.recover()?;
        Ok((log, recovered))
    }

    fn corrupt(&self, position: u64, reason: impl Into<String>) -> ClusterError {
        ClusterError::Corrupt {
            path: self.path.clone(),
            position,
            reason: reason.into(),
        }
    }

    /// Replays the file into entries, then cuts any torn or corrupt tail.
    fn recover(&mut self) -> Result<Recovered, ClusterError> {
        let file_len = self
            .file
            .metadata()
            .map_err(io_error("stat", &self.path))?
            .len();
        if file_len > LOG_FILE_BYTES_MAX {
            return Err(self.corrupt(
                0,
                format!("{file_len} bytes exceeds the limit of {LOG_FILE_BYTES_MAX}"),
            ));
        }
        let file = self.file.try_clone().map_err(io_error("dup", &self.path))?;
        let mut reader = BufReader::new(file);
        reader
            .seek(SeekFrom::Start(0))
            .map_err(io_error("seek", &self.path))?;
        let mut magic = [0u8; MAGIC.len()];
        reader
            .read_exact(&mut magic)
            .map_err(io_error("read", &self.path))?;
        if &magic != MAGIC {
            return Err(self.corrupt(0, "not a Sluice raft log (bad magic)"));
        }
        let mut entries: BTreeMap<u64, Entry> = BTreeMap::new();
        let mut pos = MAGIC_BYTES;
        while let Some(payload) = self.next_valid_frame(&mut reader, pos)? {
            let record: LogRecord = frame::decode(&payload)
                .map_err(|e| self.corrupt(pos, format!("undecodable record: {e}")))?;
            let end = pos + (FRAME_HEADER_BYTES + payload.len()) as u64;
            self.replay(&mut entries, record, pos, end)?;
            pos = end;
        }
        self.len = pos;
        if pos < file_len {
            tracing::warn!(
                path = %self.path.display(),
                valid_bytes = pos,
                dropped_bytes = file_len - pos,
                last_index = ?entries.keys().next_back(),
                "cutting the raft log after its last valid record"
            );
            self.file
                .set_len(pos)
                .map_err(io_error("truncate", &self.path))?;
            self.file
                .sync_all()
                .map_err(io_error("fsync", &self.path))?;
        }
        Ok(Recovered {
            entries,
            last_purged: self.last_purged,
        })
    }

    /// The next frame's payload, or `None` at the end of the valid log (the
    /// end of the file, a torn frame or a CRC failure).
    fn next_valid_frame(
        &self,
        reader: &mut impl Read,
        pos: u64,
    ) -> Result<Option<Vec<u8>>, ClusterError> {
        let path = self.path.display();
        match frame::read_frame(reader, LOG_RECORD_BYTES_MAX) {
            Ok(ReadFrame::Frame(payload)) => Ok(Some(payload)),
            Ok(ReadFrame::End) => Ok(None),
            Ok(ReadFrame::Torn { available }) => {
                tracing::warn!(%path, position = pos, available, "torn record at the end of the raft log");
                Ok(None)
            }
            Err(ReadError::Corrupt(e)) => {
                tracing::warn!(%path, position = pos, error = %e, "corrupt record in the raft log; the log ends here");
                Ok(None)
            }
            Err(ReadError::Io(e)) => Err(io_error("read", &self.path)(e)),
        }
    }

    /// Applies one recovered record found at `pos..end`.
    fn replay(
        &mut self,
        entries: &mut BTreeMap<u64, Entry>,
        record: LogRecord,
        pos: u64,
        end: u64,
    ) -> Result<(), ClusterError> {
        match record {
            LogRecord::Entry(entry) => {
                let index = entry.log_id.index;
                if let Some(last) = self.last_index(entries) {
                    // Indexes are read from the file: after u64::MAX no
                    // entry can follow.
                    if last.checked_add(1) != Some(index) {
                        return Err(self
                            .corrupt(pos, format!("entry {index} does not follow entry {last}")));
                    }
                }
                self.entry_pos.insert(index, pos);
                entries.insert(index, entry);
            }
            LogRecord::Purged(upto) => {
                *entries = split_after(entries, upto.index);
                self.entry_pos = split_after(&mut self.entry_pos, upto.index);
                if self.last_purged.is_none_or(|p| p.index < upto.index) {
                    self.last_purged = Some(upto);
                }
                self.purge_marker_end = end;
            }
        }
        Ok(())
    }

    /// Index of the entry the next one must follow, if anything constrains it.
    fn last_index(&self, entries: &BTreeMap<u64, Entry>) -> Option<u64> {
        match entries.keys().next_back() {
            Some(last) => Some(*last),
            None => self.last_purged.map(|p| p.index),
        }
    }

    /// Appends `entries` and fsyncs. On error nothing is known about the
    /// file's tail; the caller must stop using it (fail-stop).
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), ClusterError> {
        let mut buf = Vec::new();
        let mut positions = Vec::with_capacity(entries.len());
        for entry in entries {
            positions.push((entry.log_id.index, self.len + buf.len() as u64));
            frame::encode_into(&mut buf, &LogRecordRef::Entry(entry), LOG_RECORD_BYTES_MAX)
                .map_err(|e| {
                    self.corrupt(
                        self.len,
                        format!("refusing to append entry {}: {e}", entry.log_id),
                    )
                })?;
        }
        self.write_tail(&buf)?;
        self.entry_pos.extend(positions);
        Ok(())
    }

    /// Writes `bytes` at the end and fsyncs.
    fn write_tail(&mut self, bytes: &[u8]) -> Result<(), ClusterError> {
        let new_len = self.len + bytes.len() as u64;
        if new_len > LOG_FILE_BYTES_MAX {
            return Err(self.corrupt(
                self.len,
                format!(
                    "log would grow past {LOG_FILE_BYTES_MAX} bytes; is snapshotting disabled?"
                ),
            ));
        }
        self.file
            .write_all_at(bytes, self.len)
            .map_err(io_error("write", &self.path))?;
        self.file
            .sync_data()
            .map_err(io_error("fdatasync", &self.path))?;
        self.len = new_len;
        Ok(())
    }

    /// Removes entries from `since` on (inclusive), durably.
    pub fn truncate(&mut self, since: u64) -> Result<(), ClusterError> {
        // The first entry at or after `since` (raft never truncates purged
        // entries, so normally this is `since` itself).
        let Some((_, &pos)) = self.entry_pos.range(since..).next() else {
            return Ok(());
        };
        self.file
            .set_len(pos)
            .map_err(io_error("truncate", &self.path))?;
        self.file
            .sync_all()
            .map_err(io_error("fsync", &self.path))?;
        self.len = pos;
        self.entry_pos.split_off(&since);
        if self.purge_marker_end > pos {
            if let Some(purged) = self.last_purged {
                self.append_purge_marker(purged)?;
            }
        }
        Ok(())
    }

    /// Purges entries up to `upto` (inclusive), durably.
    pub fn purge(&mut self, upto: LogId) -> Result<(), ClusterError> {
        if self.last_purged.is_some_and(|p| p.index >= upto.index) {
            return Ok(());
        }
        self.append_purge_marker(upto)?;
        self.entry_pos = split_after(&mut self.entry_pos, upto.index);
        self.last_purged = Some(upto);
        let live_start = self.entry_pos.values().next().copied().unwrap_or(self.len);
        let dead = live_start - MAGIC_BYTES;
        if dead >= self.rewrite_dead_bytes_min && dead * 2 >= self.len - MAGIC_BYTES {
            self.rewrite_from(live_start)?;
        }
        Ok(())
    }

    fn append_purge_marker(&mut self, upto: LogId) -> Result<(), ClusterError> {
        let marker = frame::encode(&LogRecordRef::Purged(&upto), LOG_RECORD_BYTES_MAX)
            .map_err(|e| self.corrupt(self.len, e.to_string()))?;
        self.write_tail(&marker)?;
        self.purge_marker_end = self.len;
        Ok(())
    }

    /// Replaces the file by: magic, a marker for the current purge point,
    /// and the bytes from `live_start` to the end.
    fn rewrite_from(&mut self, live_start: u64) -> Result<(), ClusterError> {
        let purged = self.last_purged.expect("rewrite only after a purge");
        let mut buf = MAGIC.to_vec();
        frame::encode_into(
            &mut buf,
            &LogRecordRef::Purged(&purged),
            LOG_RECORD_BYTES_MAX,
        )
        .map_err(|e| self.corrupt(0, e.to_string()))?;
        let header_len = buf.len() as u64;
        let tail_len = (self.len - live_start) as usize;
        buf.resize(header_len as usize + tail_len, 0);
        self.file
            .read_exact_at(&mut buf[header_len as usize..], live_start)
            .map_err(io_error("read", &self.path))?;
        replace_atomically(&self.path, &buf, Durability::Durable)?;
        self.file = open_rw(&self.path)?;
        let moved = |pos: u64| pos - live_start + header_len;
        for pos in self.entry_pos.values_mut() {
            *pos = moved(*pos);
        }
        self.purge_marker_end = if self.purge_marker_end > live_start {
            moved(self.purge_marker_end)
        } else {
            header_len
        };
        tracing::info!(path = %self.path.display(), dropped_bytes = live_start - MAGIC_BYTES, new_len = buf.len(), "rewrote the raft log without its purged prefix");
        self.len = buf.len() as u64;
        Ok(())
    }

    #[cfg(test)]
    pub fn len(&self) -> u64 {
        self.len
    }
}

/// Removes and returns the entries above `index` (what a purge up to
/// `index` keeps); `index` may be `u64::MAX`, which keeps nothing.
pub(super) fn split_after<V>(map: &mut BTreeMap<u64, V>, index: u64) -> BTreeMap<u64, V> {
    match index.checked_add(1) {
        Some(first_kept) => map.split_off(&first_kept),
        None => BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::model::nid;
    use crate::model::MetadataCommand;

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, nid(1)), index),
            payload: EntryPayload::Normal(MetadataCommand::DeleteStream {
                name: format!("s{index}"),
            }),
        }
    }

    fn indexes(r: &Recovered) -> Vec<u64> {
        r.entries.keys().copied().collect()
    }

    #[test]
    fn append_truncate_purge_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (mut log, rec) = LogFile::open(&path, u64::MAX).unwrap();
        assert!(rec.entries.is_empty() && rec.last_purged.is_none());
        log.append(&(0..10).map(entry).collect::<Vec<_>>()).unwrap();
        log.truncate(7).unwrap();
        log.append(&[entry(7)]).unwrap();
        log.purge(entry(3).log_id).unwrap();
        drop(log);

        let (mut log, rec) = LogFile::open(&path, u64::MAX).unwrap();
        assert_eq!(indexes(&rec), vec![4, 5, 6, 7]);
        assert_eq!(rec.last_purged, Some(entry(3).log_id));
        // A truncation below the purge marker must keep the purge durable.
        log.truncate(5).unwrap();
        drop(log);
        let (_, rec) = LogFile::open(&path, u64::MAX).unwrap();
        assert_eq!(indexes(&rec), vec![4]);
        assert_eq!(rec.last_purged, Some(entry(3).log_id));
    }

    #[test]
    fn purge_rewrites_the_file_when_the_dead_prefix_dominates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (mut log, _) = LogFile::open(&path, 0).unwrap();
        log.append(&(0..20).map(entry).collect::<Vec<_>>()).unwrap();
        let before = log.len();
        log.purge(entry(15).log_id).unwrap();
        assert!(log.len() < before / 2, "{} !< {}", log.len(), before / 2);
        log.append(&[entry(20)]).unwrap();
        log.truncate(18).unwrap();
        drop(log);
        let (_, rec) = LogFile::open(&path, 0).unwrap();
        assert_eq!(indexes(&rec), vec![16, 17]);
        assert_eq!(rec.last_purged, Some(entry(15).log_id));
        // Purging past the last entry (a snapshot installed from a leader).
        let (mut log, _) = LogFile::open(&path, 0).unwrap();
        log.purge(entry(30).log_id).unwrap();
        log.append(&[entry(31)]).unwrap();
        drop(log);
        let (_, rec) = LogFile::open(&path, 0).unwrap();
        assert_eq!(indexes(&rec), vec![31]);
    }

    #[test]
    fn torn_and_corrupt_tails_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (mut log, _) = LogFile::open(&path, u64::MAX).unwrap();
        log.append(&(0..5).map(entry).collect::<Vec<_>>()).unwrap();
        let full = log.len();
        drop(log);
        // Torn: a few bytes off the end lose the last entry only.
        let f = File::options().write(true).open(&path).unwrap();
        f.set_len(full - 3).unwrap();
        drop(f);
        let (mut log, rec) = LogFile::open(&path, u64::MAX).unwrap();
        assert_eq!(indexes(&rec), vec![0, 1, 2, 3]);
        // The cut happened before the next append: the new entry is readable.
        log.append(&[entry(4)]).unwrap();
        let good = log.len();
        drop(log);
        // Corrupt: garbage after the last record is cut, entries kept.
        let f = File::options().write(true).open(&path).unwrap();
        f.write_all_at(&[0xff; 40], good).unwrap();
        drop(f);
        let (_, rec) = LogFile::open(&path, u64::MAX).unwrap();
        assert_eq!(indexes(&rec), vec![0, 1, 2, 3, 4]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good);
    }

    #[test]
    fn purge_marker_at_the_last_index_is_read_back_not_a_panic() {
        // A CRC-valid `Purged` record naming index u64::MAX (a snapshot
        // from a peer may claim it) used to overflow `index + 1`.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (mut log, _) = LogFile::open(&path, u64::MAX).unwrap();
        log.append(&(0..3).map(entry).collect::<Vec<_>>()).unwrap();
        log.purge(entry(u64::MAX).log_id).unwrap();
        drop(log);
        let (_, rec) = LogFile::open(&path, u64::MAX).unwrap();
        assert!(rec.entries.is_empty());
        assert_eq!(rec.last_purged, Some(entry(u64::MAX).log_id));
    }

    #[test]
    fn entry_after_the_last_index_is_corruption_not_a_panic() {
        // Entry u64::MAX followed by another: `last + 1` used to overflow.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let (mut log, _) = LogFile::open(&path, u64::MAX).unwrap();
        log.append(&[entry(u64::MAX), entry(0)]).unwrap();
        drop(log);
        assert!(matches!(
            LogFile::open(&path, u64::MAX),
            Err(ClusterError::Corrupt { .. })
        ));
    }

    #[test]
    fn foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, b"definitely not a raft log").unwrap();
        assert!(matches!(
            LogFile::open(&path, u64::MAX),
            Err(ClusterError::Corrupt { .. })
        ));
    }
}
