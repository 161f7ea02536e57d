//! Durable openraft storage (storage-v2) for the cluster metadata, on plain
//! files in `<data_dir>/raft/`:
//!
//! ```text
//! log        raft log: magic + CRC-framed entries and purge markers
//!            (layout and recovery in log_file.rs)
//! vote       one frame: JSON Vote. Replaced durably (tmp + fsync + rename
//!            + directory fsync) before `save_vote` returns.
//! committed  one frame: JSON Option<LogId>. A hint (tmp + rename, no fsync)
//!            that lets a restarted node re-apply committed entries before
//!            it hears from a leader; a missing, stale or damaged one only
//!            delays that, and it is clamped to the last log entry.
//! snapshot   magic "SLSNAP01" + frame(JSON SnapshotMeta: last applied log
//!            id, membership, id) + frame(JSON Metadata). Replaced durably.
//! *.tmp      a replacement in progress; removed at start-up.
//! ```
//!
//! Durability story: an append is written and fdatasync'ed before
//! `LogFlushed::log_io_completed` is called, so raft never counts an entry
//! that is not on disk; a failed write or fsync makes the log unusable
//! (fail-stop) instead of being retried. The state machine itself is not
//! persisted on every apply: it is rebuilt at start-up from the snapshot
//! plus the committed log entries after it (openraft re-applies them), and
//! openraft only purges log entries that a durable snapshot covers.
//!
//! The whole unpurged log is also kept in memory for readers; the snapshot
//! policy bounds it. File I/O runs on tokio's blocking pool, never on the
//! control core's reactor thread.

mod files;
mod log_file;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::{self, Cursor};
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, EntryPayload, LogState, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    StorageError, StorageIOError,
};
use tokio::sync::watch;

use self::files::{io_error, Durability};
use self::log_file::LogFile;
use super::error::ClusterError;
use super::frame::{self, ReadError, ReadFrame};
use super::limits::{
    LOG_RECORD_BYTES_MAX, LOG_REWRITE_DEAD_BYTES_MIN, SMALL_RECORD_BYTES_MAX, SNAPSHOT_BYTES_MAX,
};
use super::types::{Entry, LogId, SnapshotMeta, StoredMembership, TypeConfig, Vote};
use crate::model::{Metadata, MetadataResponse, NodeId};

const LOG_FILE: &str = "log";
const VOTE_FILE: &str = "vote";
const COMMITTED_FILE: &str = "committed";
const SNAPSHOT_FILE: &str = "snapshot";
const SNAPSHOT_MAGIC: &[u8; 8] = b"SLSNAP01";
/// Largest snapshot file: magic, the two frame headers, the meta record and
/// the data.
const SNAPSHOT_FILE_BYTES_MAX: u64 = (SNAPSHOT_MAGIC.len()
    + 2 * frame::FRAME_HEADER_BYTES
    + LOG_RECORD_BYTES_MAX
    + SNAPSHOT_BYTES_MAX) as u64;

type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// Everything raft needs, opened and recovered from one directory.
pub(crate) struct OpenedStorage {
    pub log: LogStore,
    pub state_machine: StateMachineStore,
    /// Fires after every applied change; starts at the recovered snapshot.
    pub metadata: watch::Receiver<Arc<Metadata>>,
    /// No vote, no log, no snapshot: this node has never been part of a
    /// cluster.
    pub pristine: bool,
}

/// A snapshot as kept in memory and on disk.
#[derive(Clone)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    /// JSON `Metadata`.
    data: Vec<u8>,
}

/// Opens (creating if needed) the raft storage in `dir` and recovers it.
pub(crate) async fn open(dir: &Path) -> Result<OpenedStorage, ClusterError> {
    let dir = dir.to_path_buf();
    let loaded = blocking(move || load(&dir)).await??;
    let Loaded {
        dir,
        log_file,
        recovered,
        vote,
        committed,
        snapshot,
    } = loaded;
    let pristine = vote.is_none()
        && recovered.entries.is_empty()
        && recovered.last_purged.is_none()
        && snapshot.is_none();
    let (metadata, last_applied, membership) = match &snapshot {
        Some((stored, metadata)) => (
            metadata.clone(),
            stored.meta.last_log_id,
            stored.meta.last_membership.clone(),
        ),
        None => (Metadata::default(), None, StoredMembership::default()),
    };
    let metadata = Arc::new(metadata);
    let (publisher, receiver) = watch::channel(metadata.clone());
    let log = LogStore {
        log_path: dir.join(LOG_FILE),
        dir: dir.clone(),
        file: Some(log_file),
        cache: Arc::new(Mutex::new(LogCache {
            entries: recovered.entries,
            last_purged: recovered.last_purged,
        })),
        vote,
        committed,
    };
    let state_machine = StateMachineStore {
        last_applied,
        membership,
        metadata,
        publisher,
        snapshots: Arc::new(SnapshotSlot {
            path: dir.join(SNAPSHOT_FILE),
            state: tokio::sync::Mutex::new(SlotState {
                current: snapshot.map(|(stored, _)| stored),
                built: 0,
            }),
        }),
    };
    Ok(OpenedStorage {
        log,
        state_machine,
        metadata: receiver,
        pristine,
    })
}

struct Loaded {
    dir: PathBuf,
    log_file: LogFile,
    recovered: log_file::Recovered,
    vote: Option<Vote>,
    committed: Option<LogId>,
    snapshot: Option<(StoredSnapshot, Metadata)>,
}

fn load(dir: &Path) -> Result<Loaded, ClusterError> {
    files::prepare_dir(dir)?;
    let (log_file, recovered) = LogFile::open(&dir.join(LOG_FILE), LOG_REWRITE_DEAD_BYTES_MIN)?;
    let vote = files::read_record::<Vote>(&dir.join(VOTE_FILE), SMALL_RECORD_BYTES_MAX)?;
    let committed = match files::read_record::<Option<LogId>>(
        &dir.join(COMMITTED_FILE),
        SMALL_RECORD_BYTES_MAX,
    ) {
        Ok(committed) => committed.flatten(),
        Err(e) => {
            tracing::warn!(error = %e, "ignoring the committed-index hint");
            None
        }
    };
    let snapshot = read_snapshot(&dir.join(SNAPSHOT_FILE))?;
    tracing::info!(
        dir = %dir.display(),
        entries = recovered.entries.len(),
        last_purged = ?recovered.last_purged,
        vote = ?vote,
        committed = ?committed,
        snapshot = ?snapshot.as_ref().map(|(s, _)| &s.meta.last_log_id),
        "opened raft storage"
    );
    Ok(Loaded {
        dir: dir.to_path_buf(),
        log_file,
        recovered,
        vote,
        committed,
        snapshot,
    })
}

fn read_snapshot(path: &Path) -> Result<Option<(StoredSnapshot, Metadata)>, ClusterError> {
    let corrupt = |reason: String| ClusterError::Corrupt {
        path: path.to_path_buf(),
        position: 0,
        reason,
    };
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("stat", path)(e)),
    };
    if len > SNAPSHOT_FILE_BYTES_MAX {
        return Err(corrupt(format!(
            "{len} bytes exceeds the limit of {SNAPSHOT_FILE_BYTES_MAX}"
        )));
    }
    let bytes = std::fs::read(path).map_err(io_error("read", path))?;
    let Some(mut rest) = bytes.strip_prefix(SNAPSHOT_MAGIC.as_slice()) else {
        return Err(corrupt("not a Sluice snapshot (bad magic)".into()));
    };
    let mut next_frame = |max: usize| match frame::read_frame(&mut rest, max) {
        Ok(ReadFrame::Frame(payload)) => Ok(payload),
        Ok(ReadFrame::End | ReadFrame::Torn { .. }) => Err(corrupt("truncated snapshot".into())),
        Err(ReadError::Corrupt(e)) => Err(corrupt(e.to_string())),
        Err(ReadError::Io(e)) => Err(io_error("read", path)(e)),
    };
    let meta_bytes = next_frame(LOG_RECORD_BYTES_MAX)?;
    let data = next_frame(SNAPSHOT_BYTES_MAX)?;
    let meta: SnapshotMeta = frame::decode(&meta_bytes).map_err(|e| corrupt(e.to_string()))?;
    let metadata: Metadata = frame::decode(&data).map_err(|e| corrupt(e.to_string()))?;
    Ok(Some((StoredSnapshot { meta, data }, metadata)))
}

fn write_snapshot(path: &Path, snapshot: &StoredSnapshot) -> Result<(), ClusterError> {
    let mut bytes = SNAPSHOT_MAGIC.to_vec();
    let refuse = |e: frame::FrameError| ClusterError::Corrupt {
        path: path.to_path_buf(),
        position: 0,
        reason: format!("refusing to write snapshot: {e}"),
    };
    frame::encode_into(&mut bytes, &snapshot.meta, LOG_RECORD_BYTES_MAX).map_err(refuse)?;
    frame::append_payload(&mut bytes, &snapshot.data, SNAPSHOT_BYTES_MAX).map_err(refuse)?;
    files::replace_atomically(path, &bytes, Durability::Durable)
}

/// Runs blocking file work off the reactor thread.
async fn blocking<R: Send + 'static>(
    work: impl FnOnce() -> R + Send + 'static,
) -> Result<R, ClusterError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ClusterError::Raft {
            reason: format!("storage task failed: {e}"),
        })
}

fn any(e: &ClusterError) -> AnyError {
    AnyError::new(e)
}

/// Unpurged entries, shared by the log store and its readers. The lock is
/// never held across an await.
struct LogCache {
    entries: BTreeMap<u64, Entry>,
    last_purged: Option<LogId>,
}

fn read_entries<RB: RangeBounds<u64>>(cache: &Mutex<LogCache>, range: &RB) -> Vec<Entry> {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    if start >= end {
        return Vec::new();
    }
    let cache = cache.lock().expect("raft log cache lock poisoned");
    cache
        .entries
        .range(start..end)
        .map(|(_, e)| e.clone())
        .collect()
}

/// The raft log and vote ([`RaftLogStorage`]).
pub(crate) struct LogStore {
    dir: PathBuf,
    log_path: PathBuf,
    /// `None` once a write failed: fail-stop.
    file: Option<LogFile>,
    cache: Arc<Mutex<LogCache>>,
    vote: Option<Vote>,
    committed: Option<LogId>,
}

impl LogStore {
    /// Runs `op` on the log file on the blocking pool. After an error the
    /// file is dropped and every later call fails.
    async fn with_file<R: Send + 'static>(
        &mut self,
        op: impl FnOnce(&mut LogFile) -> Result<R, ClusterError> + Send + 'static,
    ) -> Result<R, ClusterError> {
        let Some(mut file) = self.file.take() else {
            return Err(ClusterError::LogFailed {
                path: self.log_path.clone(),
            });
        };
        let (file, result) = blocking(move || {
            let result = op(&mut file);
            (file, result)
        })
        .await?;
        match &result {
            Ok(_) => self.file = Some(file),
            Err(e) => {
                tracing::error!(error = %e, "raft log write failed; the log is now read-only")
            }
        }
        result
    }

    fn last_log_id(&self) -> Option<LogId> {
        let cache = self.cache.lock().expect("raft log cache lock poisoned");
        cache
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(cache.last_purged)
    }
}

/// Reads entries for replication tasks.
pub(crate) struct LogReader {
    cache: Arc<Mutex<LogCache>>,
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry>> {
        Ok(read_entries(&self.cache, &range))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry>> {
        Ok(read_entries(&self.cache, &range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged_log_id = self
            .cache
            .lock()
            .expect("raft log cache lock poisoned")
            .last_purged;
        Ok(LogState {
            last_purged_log_id,
            last_log_id: self.last_log_id(),
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            cache: self.cache.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> StorageResult<()> {
        let path = self.dir.join(VOTE_FILE);
        let value = *vote;
        blocking(move || {
            files::write_record(&path, &value, SMALL_RECORD_BYTES_MAX, Durability::Durable)
        })
        .await
        .and_then(|r| r)
        .map_err(|e| StorageIOError::write_vote(any(&e)))?;
        self.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote>> {
        Ok(self.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> StorageResult<()> {
        let path = self.dir.join(COMMITTED_FILE);
        let written = blocking(move || {
            files::write_record(&path, &committed, SMALL_RECORD_BYTES_MAX, Durability::Hint)
        })
        .await
        .and_then(|r| r);
        if let Err(e) = written {
            // Only a hint: losing it delays re-application, nothing more.
            tracing::warn!(error = %e, "could not save the committed-index hint");
        }
        self.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId>> {
        let last = self.last_log_id();
        match (self.committed, last) {
            (Some(committed), Some(last)) if committed.index > last.index => {
                tracing::warn!(%committed, %last, "committed hint is past the end of the log (lost tail); clamping");
                Ok(Some(last))
            }
            (Some(committed), None) => {
                tracing::warn!(%committed, "committed hint but no log; ignoring it");
                Ok(None)
            }
            (committed, _) => Ok(committed),
        }
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let written = self
            .with_file(move |file| file.append(&entries).map(|()| entries))
            .await;
        match written {
            Ok(entries) => {
                {
                    let mut cache = self.cache.lock().expect("raft log cache lock poisoned");
                    for entry in entries {
                        cache.entries.insert(entry.log_id.index, entry);
                    }
                }
                // Only now, after fdatasync returned: the entries are durable.
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(any(&e)).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> StorageResult<()> {
        let since = log_id.index;
        self.with_file(move |file| file.truncate(since))
            .await
            .map_err(|e| StorageIOError::write_logs(any(&e)))?;
        let mut cache = self.cache.lock().expect("raft log cache lock poisoned");
        cache.entries.split_off(&since);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> StorageResult<()> {
        self.with_file(move |file| file.purge(log_id))
            .await
            .map_err(|e| StorageIOError::write_logs(any(&e)))?;
        let mut cache = self.cache.lock().expect("raft log cache lock poisoned");
        if cache.last_purged.is_none_or(|p| p.index < log_id.index) {
            cache.entries = log_file::split_after(&mut cache.entries, log_id.index);
            cache.last_purged = Some(log_id);
        }
        Ok(())
    }
}

/// The current snapshot, shared by the state machine and the snapshot
/// builders it hands out. The lock serialises snapshot file writes, so a
/// slow build can never overwrite a newer installed snapshot.
struct SnapshotSlot {
    path: PathBuf,
    state: tokio::sync::Mutex<SlotState>,
}

struct SlotState {
    current: Option<StoredSnapshot>,
    /// Snapshots built by this process, for unique snapshot ids.
    built: u64,
}

impl SnapshotSlot {
    async fn store(
        &self,
        slot: &mut SlotState,
        snapshot: StoredSnapshot,
    ) -> Result<(), ClusterError> {
        let path = self.path.clone();
        let snapshot =
            blocking(move || write_snapshot(&path, &snapshot).map(|()| snapshot)).await??;
        slot.current = Some(snapshot);
        Ok(())
    }
}

fn to_snapshot(stored: &StoredSnapshot) -> Snapshot<TypeConfig> {
    Snapshot {
        meta: stored.meta.clone(),
        snapshot: Box::new(Cursor::new(stored.data.clone())),
    }
}

/// The metadata state machine ([`RaftStateMachine`]). Owned by openraft's
/// state-machine task; everyone else reads the metadata through the watch
/// channel it publishes to.
pub(crate) struct StateMachineStore {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    /// Copy-on-write: the first change of an apply batch clones it if a
    /// subscriber still holds the published version.
    metadata: Arc<Metadata>,
    publisher: watch::Sender<Arc<Metadata>>,
    snapshots: Arc<SnapshotSlot>,
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> StorageResult<(Option<LogId>, StoredMembership)> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<MetadataResponse>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        let mut changed = false;
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => MetadataResponse::Ok,
                EntryPayload::Normal(command) => {
                    let applied = Arc::make_mut(&mut self.metadata).apply(&command);
                    changed |= applied.changed;
                    applied.response
                }
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), membership);
                    MetadataResponse::Ok
                }
            };
            responses.push(response);
        }
        if changed {
            self.publisher.send_replace(self.metadata.clone());
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            metadata: self.metadata.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let read_err = |reason: String| {
            StorageIOError::read_snapshot(Some(meta.signature()), AnyError::error(reason))
        };
        if data.len() > SNAPSHOT_BYTES_MAX {
            return Err(read_err(format!(
                "snapshot of {} bytes exceeds the limit of {SNAPSHOT_BYTES_MAX}",
                data.len()
            ))
            .into());
        }
        let metadata: Metadata = frame::decode(&data).map_err(|e| read_err(e.to_string()))?;
        let mut slot = self.snapshots.state.lock().await;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.snapshots
            .store(&mut slot, stored)
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), any(&e)))?;
        self.metadata = Arc::new(metadata);
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.publisher.send_replace(self.metadata.clone());
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let slot = self.snapshots.state.lock().await;
        Ok(slot.current.as_ref().map(to_snapshot))
    }
}

/// A frozen view of the state machine, turned into a durable snapshot on
/// openraft's snapshot task.
pub(crate) struct SnapshotBuilder {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    metadata: Arc<Metadata>,
    snapshots: Arc<SnapshotSlot>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let metadata = self.metadata.clone();
        let data = blocking(move || serde_json::to_vec(&*metadata))
            .await
            .map_err(|e| StorageIOError::read_state_machine(any(&e)))?
            .map_err(|e| StorageIOError::read_state_machine(AnyError::new(&e)))?;
        if data.len() > SNAPSHOT_BYTES_MAX {
            let reason = format!(
                "snapshot of {} bytes exceeds the limit of {SNAPSHOT_BYTES_MAX}",
                data.len()
            );
            return Err(StorageIOError::write_snapshot(None, AnyError::error(reason)).into());
        }
        let mut slot = self.snapshots.state.lock().await;
        if let Some(current) = &slot.current {
            if current.meta.last_log_id >= self.last_applied {
                // Never replace a snapshot with an older one.
                return Ok(to_snapshot(current));
            }
        }
        slot.built += 1;
        let snapshot_id = match self.last_applied {
            Some(last) => format!("{}-{}-{}", last.leader_id, last.index, slot.built),
            None => format!("--{}", slot.built),
        };
        let stored = StoredSnapshot {
            meta: SnapshotMeta {
                last_log_id: self.last_applied,
                last_membership: self.membership.clone(),
                snapshot_id,
            },
            data,
        };
        let snapshot = to_snapshot(&stored);
        let signature = stored.meta.signature();
        self.snapshots
            .store(&mut slot, stored)
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(signature), any(&e)))?;
        tracing::info!(last_log_id = ?self.last_applied, "built a metadata snapshot");
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::{StoreBuilder, Suite};

    use super::*;

    /// Fresh storage in a temporary directory (kept alive by the guard).
    struct TempStorage;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for TempStorage {
        async fn build(&self) -> StorageResult<(tempfile::TempDir, LogStore, StateMachineStore)> {
            let dir = tempfile::tempdir().map_err(|e| StorageIOError::read(AnyError::new(&e)))?;
            let opened = open(dir.path())
                .await
                .map_err(|e| StorageIOError::read(any(&e)))?;
            Ok((dir, opened.log, opened.state_machine))
        }
    }

    /// openraft's storage contract: its own test suite.
    #[test]
    fn storage_passes_the_openraft_suite() {
        Suite::test_all(TempStorage).unwrap();
    }
}
