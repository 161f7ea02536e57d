//! SetCursor / FetchCursor on a shard (layout and naming: `crate::cursor`).
//!
//! **Routing.** A cursor lives in the partition of [`CURSORS_STREAM`] that
//! its key hashes to, and that partition is owned by one shard. A request
//! may arrive on any shard's port: the receiving shard computes the
//! partition and, when another shard owns it, hands the request to that
//! shard through the control core's router (shard → control → shard, as
//! NATS appends travel) and relays the answer. Clients therefore need no
//! knowledge of the cursor stream's placement, at the cost of two ring hops
//! when they hit the wrong shard. A cursor partition led by another node is
//! answered with `NotLeader`.
//!
//! **State.** The owning shard keeps, per cursor partition, a map from key
//! to (log offset of the record, stream incarnation, cursor offset): a fold
//! of the partition's committed records in log order. It is built when the
//! partition opens and brought up to date before every request from
//! wherever it stopped (so records that arrived by replication are seen
//! too). A SetCursor
//! appends one record, waits until it is durable (`PartitionLog::append`
//! resolves only then), and only then updates the map and answers. Per key
//! the record with the higher log offset wins, so concurrent updates and
//! re-reads settle on what the log says. Key compaction keeps the last
//! record per key, so the fold after a restart gives the same map.
//!
//! **Incarnations.** The receiving shard resolves the request's stream name
//! to the stream's current [`StreamId`] (its partition table) and the
//! request carries it. A SetCursor stores it with the offset; a FetchCursor
//! answers the stored offset only when the ids match, so a cursor saved
//! against a deleted stream is "no cursor" for a re-created stream of the
//! same name. Records of the old incarnation are dropped from the map when
//! a partition table proves them stale (and skipped by the fold), so they
//! do not count against `limits.cursors_max`; in the log they stay until a
//! SetCursor on the new incarnation replaces them (same key). Legacy
//! records (no stream id, written before incarnations) are adopted by the
//! stream's current incarnation when the log is folded.
//!
//! **Bounds.** Cursor ids are at most `CURSOR_ID_BYTES_MAX` bytes; a shard
//! holds at most `limits.cursors_max` cursors (a SetCursor for a new key
//! beyond it is `LimitExceeded`); the rebuild reads the log in chunks of
//! [`CURSOR_READ_CHUNK_BYTES`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use bytes::Bytes;
use futures::channel::oneshot;
use shards::batch::{decode_batch, BatchIter, Record};
use shards::log::PartitionLog;
use shards::types::{Offset, ShardId, TimestampMs};

use super::limits::exceeded;
use super::services::partition::log_error_code;
use super::services::ServiceError;
use super::{LocalPartition, Lookup, Shard};
use crate::cores::{
    AdminReply, AdminRequest, AppendFailure, CursorAnswer, CursorOp, CursorRequest, FromShard,
    PartitionEntry, PartitionKey,
};
use crate::cursor::{
    cursor_partition, decode_value, encode_value, validate_cursor_id, CursorKey, CursorValue,
    StoredCursor,
};
use crate::limits::LimitKind;
use crate::model::{StreamId, CURSORS_STREAM};
use crate::protocol::error_code::ErrorCode;

/// Bytes read from the cursor log at a time while folding it into the map.
pub const CURSOR_READ_CHUNK_BYTES: u64 = 1 << 20;

/// The cursor maps of the cursor partitions this shard owns.
#[derive(Default)]
pub struct CursorTables {
    tables: RefCell<HashMap<PartitionKey, CursorTable>>,
    /// Stream incarnations as of the last partition table.
    incarnations: RefCell<Incarnations>,
}

/// One cursor partition folded into memory.
#[derive(Default)]
struct CursorTable {
    /// Key → (log offset of its newest record, stored cursor).
    cursors: HashMap<CursorKey, (Offset, StoredCursor)>,
    /// Next log offset to fold.
    folded_to: Offset,
}

/// Which stream incarnations a partition table knows: tells cursors of a
/// deleted incarnation from cursors of one the table does not know yet (a
/// shard's table may lag the shard that took the request).
#[derive(Default)]
pub struct Incarnations {
    /// Stream name → its current id.
    current: HashMap<String, StreamId>,
    /// Highest stream id in the table. Ids only grow, so the table was made
    /// after every stream with a lower id was created.
    newest: Option<StreamId>,
}

impl Incarnations {
    /// The incarnations of a partition table's streams (by name).
    pub fn of(names: &HashMap<String, Vec<PartitionEntry>>) -> Incarnations {
        let current: HashMap<String, StreamId> = names
            .iter()
            .filter_map(|(name, entries)| Some((name.clone(), entries.first()?.key.stream_id)))
            .collect();
        let newest = current.values().copied().max();
        Incarnations { current, newest }
    }

    /// Whether a cursor of stream `name` saved against `stream_id` belongs
    /// to an incarnation this table proves gone: the name has a newer id,
    /// or the name is absent although a stream created later is present
    /// (deleted). A table that has not seen `stream_id` yet proves nothing.
    fn is_stale(&self, name: &str, stream_id: StreamId) -> bool {
        match self.current.get(name) {
            Some(current) => stream_id < *current,
            None => self.newest.is_some_and(|newest| stream_id < newest),
        }
    }

    /// The current id of stream `name`, if the table has the stream.
    fn current(&self, name: &str) -> Option<StreamId> {
        self.current.get(name).copied()
    }
}

/// The offset a stored cursor gives a request for incarnation `stream_id`:
/// none when it was saved against another incarnation.
fn position(stored: Option<StoredCursor>, stream_id: StreamId) -> Option<u64> {
    stored
        .filter(|stored| stored.stream_id == stream_id)
        .map(|stored| stored.offset)
}

impl CursorTables {
    /// Takes the stream incarnations of a new partition table and forgets
    /// the cursors it proves stale (their stream was deleted, maybe
    /// re-created), so they no longer count against `limits.cursors_max`.
    /// Returns how many were forgotten.
    pub fn set_incarnations(&self, incarnations: Incarnations) -> usize {
        let mut forgotten = 0;
        for table in self.tables.borrow_mut().values_mut() {
            let before = table.cursors.len();
            table
                .cursors
                .retain(|key, (_, stored)| !incarnations.is_stale(&key.stream, stored.stream_id));
            forgotten += before - table.cursors.len();
        }
        *self.incarnations.borrow_mut() = incarnations;
        forgotten
    }

    fn is_stale(&self, name: &str, stream_id: StreamId) -> bool {
        self.incarnations.borrow().is_stale(name, stream_id)
    }

    fn current_incarnation(&self, name: &str) -> Option<StreamId> {
        self.incarnations.borrow().current(name)
    }

    /// Forgets the tables of partitions this shard no longer owns.
    pub fn retain(&self, owned: impl Fn(&PartitionKey) -> bool) {
        self.tables.borrow_mut().retain(|key, _| owned(key));
    }

    fn total(&self) -> usize {
        self.tables.borrow().values().map(|t| t.cursors.len()).sum()
    }

    /// Applies one record at `offset` (newer log offset wins per key).
    fn apply(
        &self,
        partition: PartitionKey,
        offset: Offset,
        key: CursorKey,
        value: Option<StoredCursor>,
    ) {
        let mut tables = self.tables.borrow_mut();
        let table = tables.entry(partition).or_default();
        match table.cursors.get(&key) {
            Some((seen, _)) if *seen >= offset => {}
            _ => match value {
                Some(value) => {
                    table.cursors.insert(key, (offset, value));
                }
                None => {
                    table.cursors.remove(&key);
                }
            },
        }
    }

    fn get(&self, partition: PartitionKey, key: &CursorKey) -> Option<StoredCursor> {
        let tables = self.tables.borrow();
        tables.get(&partition)?.cursors.get(key).map(|(_, v)| *v)
    }

    fn contains(&self, partition: PartitionKey, key: &CursorKey) -> bool {
        self.tables
            .borrow()
            .get(&partition)
            .is_some_and(|t| t.cursors.contains_key(key))
    }

    fn folded_to(&self, partition: PartitionKey) -> Offset {
        self.tables
            .borrow()
            .get(&partition)
            .map_or(Offset::ZERO, |t| t.folded_to)
    }

    fn advance(&self, partition: PartitionKey, to: Offset) {
        let mut tables = self.tables.borrow_mut();
        let table = tables.entry(partition).or_default();
        table.folded_to = table.folded_to.max(to);
    }
}

/// Folds the committed records of a cursor partition not yet in its map
/// (all of them on the first call after open). Records that are not cursor
/// records are skipped with a warning, never trusted.
pub async fn catch_up(shard: &Shard, local: &LocalPartition) -> Result<(), AppendFailure> {
    let log: &PartitionLog = &local.log;
    let mut next = shard
        .cursors
        .folded_to(local.key)
        .max(log.log_start_offset());
    while next < log.high_watermark() {
        let slice = match log.read(next, CURSOR_READ_CHUNK_BYTES) {
            Ok(Some(slice)) => slice,
            Ok(None) => break,
            Err(err) => return Err(failure(log_error_code(&err), err.to_string())),
        };
        let bytes = Bytes::from(
            slice
                .read_bytes()
                .await
                .map_err(|err| failure(log_error_code(&err), err.to_string()))?,
        );
        let mut advanced = next;
        for batch in BatchIter::new(&bytes) {
            let (header, batch) = batch.map_err(|err| {
                failure(
                    ErrorCode::PartitionFailed,
                    format!("cursor log batch at {}: {err}", next.0),
                )
            })?;
            let (_, records) = decode_batch(&bytes.slice_ref(batch)).map_err(|err| {
                failure(
                    ErrorCode::PartitionFailed,
                    format!("cursor log batch: {err}"),
                )
            })?;
            for record in records.into_iter().filter(|r| r.offset >= next) {
                fold_record(shard, local.key, record);
            }
            advanced = advanced.max(header.next_offset());
        }
        if advanced == next {
            break; // nothing readable past `next` yet
        }
        shard.cursors.advance(local.key, advanced);
        next = advanced;
    }
    Ok(())
}

fn fold_record(shard: &Shard, partition: PartitionKey, record: shards::batch::DecodedRecord) {
    let Some(key) = record.key.as_deref().and_then(CursorKey::decode) else {
        tracing::warn!(
            offset = record.offset.0,
            "cursor log: record without a cursor key; skipped"
        );
        return;
    };
    // A record that is no cursor (tombstone, legacy, stale incarnation)
    // still removes what older records of its key stored.
    let value = match record.value.as_deref() {
        None => None,
        Some(bytes) => match decode_value(bytes) {
            Some(CursorValue::Current(stored))
                if shard.cursors.is_stale(&key.stream, stored.stream_id) =>
            {
                tracing::debug!(
                    offset = record.offset.0,
                    cursor = ?key,
                    stream_id = %stored.stream_id,
                    "cursor log: cursor of a deleted stream incarnation; not loaded"
                );
                None
            }
            Some(CursorValue::Current(stored)) => Some(stored),
            // Written before cursors carried their stream's incarnation:
            // adopted by the stream's current one, so an upgrade does not
            // send every consumer back to its start position (the old
            // behaviour, for the rare stream re-created before upgrading).
            Some(CursorValue::Legacy { offset }) => {
                let current = shard.cursors.current_incarnation(&key.stream);
                tracing::debug!(
                    offset = record.offset.0,
                    cursor = ?key,
                    adopted_by = ?current,
                    "cursor log: value without a stream id (written before cursors \
                     were tied to a stream incarnation)"
                );
                current.map(|stream_id| StoredCursor { stream_id, offset })
            }
            None => {
                tracing::warn!(
                    offset = record.offset.0,
                    "cursor log: value is neither 16 nor 8 bytes; skipped"
                );
                return;
            }
        },
    };
    let new_key = value.is_some() && !shard.cursors.contains(partition, &key);
    if new_key && shard.cursors.total() >= shard.settings.limits.cursors_max {
        tracing::warn!(
            limit = shard.settings.limits.cursors_max,
            "cursor log holds more cursors than limits.cursors_max; the excess is not loaded"
        );
        return;
    }
    shard.cursors.apply(partition, record.offset, key, value);
}

fn failure(code: ErrorCode, message: String) -> AppendFailure {
    AppendFailure { code, message }
}

/// SetCursor: stores `offset` (the next offset to read) for `cursor_id` on
/// `stream`/`partition`, durably, on the shard that owns the cursor.
pub async fn set(
    shard: &Rc<Shard>,
    cursor_id: &str,
    stream: &str,
    partition: u32,
    offset: Offset,
) -> Result<(), ServiceError> {
    let (key, stream_id) = checked_key(shard, cursor_id, stream, partition)?;
    let op = CursorOp::Set {
        key,
        stream_id,
        offset: offset.0,
    };
    route(shard, op, true).await?;
    Ok(())
}

/// FetchCursor: the stored position, `None` when there is none for the
/// stream as it is now.
pub async fn get(
    shard: &Rc<Shard>,
    cursor_id: &str,
    stream: &str,
    partition: u32,
) -> Result<Option<Offset>, ServiceError> {
    let (key, stream_id) = checked_key(shard, cursor_id, stream, partition)?;
    let stored = route(shard, CursorOp::Fetch { key, stream_id }, false).await?;
    Ok(stored.map(Offset))
}

/// Validates the fields of a cursor request: id, an existing stream and
/// partition. Returns the key and the stream's current incarnation.
fn checked_key(
    shard: &Shard,
    cursor_id: &str,
    stream: &str,
    partition: u32,
) -> Result<(CursorKey, StreamId), ServiceError> {
    validate_cursor_id(cursor_id)
        .map_err(|err| ServiceError::new(ErrorCode::InvalidRequest, err.to_string()))?;
    let partition_not_found = || {
        ServiceError::new(
            ErrorCode::PartitionNotFound,
            format!("stream {stream} has no partition {partition}"),
        )
    };
    match shard.lookup(stream, partition) {
        Lookup::StreamNotFound => Err(ServiceError::new(
            ErrorCode::StreamNotFound,
            format!("no stream named {stream:?}"),
        )),
        Lookup::PartitionNotFound => Err(partition_not_found()),
        _ => {
            let entry = shard
                .entry(stream, partition)
                .ok_or_else(partition_not_found)?;
            let key = CursorKey {
                cursor_id: cursor_id.to_owned(),
                stream: stream.to_owned(),
                partition,
            };
            Ok((key, entry.key.stream_id))
        }
    }
}

/// Finds the cursor's partition and runs `op` on its owning shard (here or
/// through the control core). `create`: make the cursor stream if it does
/// not exist yet (a fetch without one just finds nothing).
async fn route(shard: &Rc<Shard>, op: CursorOp, create: bool) -> Result<Option<u64>, ServiceError> {
    let key = match &op {
        CursorOp::Set { key, .. } | CursorOp::Fetch { key, .. } => key.clone(),
    };
    let mut entries = shard.stream_entries(CURSORS_STREAM);
    if entries.is_empty() {
        if !create {
            return Ok(None);
        }
        match shard.admin(AdminRequest::EnsureCursorStream).await {
            AdminReply::Created { .. } => {}
            AdminReply::Error(err) => return Err(ServiceError::new(err.code, err.message)),
            _ => return Err(ServiceError::new(ErrorCode::Unknown, "unexpected answer")),
        }
        entries = shard.stream_entries(CURSORS_STREAM);
    }
    let partitions = entries.len() as u32;
    if partitions == 0 {
        return Err(ServiceError::new(
            ErrorCode::PartitionFailed,
            "the cursor stream is not open on this node yet; retry",
        ));
    }
    let index = cursor_partition(&key, partitions);
    let Some(entry) = entries.iter().find(|e| e.partition == index) else {
        return Err(ServiceError::new(
            ErrorCode::PartitionNotFound,
            format!("cursor partition {index} is missing"),
        ));
    };
    if entry.leader != shard.local_node.get() {
        return Err(ServiceError::new(
            ErrorCode::NotLeader,
            format!(
                "cursor partition {index} is led by node {}; send cursor requests there",
                entry.leader
            ),
        ));
    }
    let answer = if entry.shard == shard.id {
        execute(shard, op).await
    } else {
        forward(shard, entry.shard, op).await
    };
    answer.map_err(|err| {
        if err.code == ErrorCode::LimitExceeded {
            ServiceError::new(err.code, err.message)
        } else {
            ServiceError::new(err.code, format!("cursor: {}", err.message))
        }
    })
}

async fn forward(shard: &Shard, owner: ShardId, op: CursorOp) -> CursorAnswer {
    let (reply, answer) = oneshot::channel();
    let request = CursorRequest {
        shard: owner,
        op,
        reply,
    };
    shard.send_to_control(FromShard::Cursor(request)).await;
    answer.await.unwrap_or_else(|_| {
        Err(failure(
            ErrorCode::ShuttingDown,
            "the shard owning the cursor did not answer (shutting down?)".into(),
        ))
    })
}

/// Runs a cursor request forwarded by the control core.
pub async fn serve_forwarded(shard: Rc<Shard>, request: CursorRequest) {
    let answer = execute(&shard, request.op).await;
    let _ = request.reply.send(answer);
}

/// Runs `op` on this shard, which owns the cursor's partition.
async fn execute(shard: &Shard, op: CursorOp) -> CursorAnswer {
    let key = match &op {
        CursorOp::Set { key, .. } | CursorOp::Fetch { key, .. } => key,
    };
    let entries = shard.stream_entries(CURSORS_STREAM);
    let index = cursor_partition(key, entries.len().max(1) as u32);
    let local = match shard.lookup(CURSORS_STREAM, index) {
        Lookup::Local(local) => local,
        _ => {
            return Err(failure(
                ErrorCode::NotLeader,
                format!("cursor partition {index} moved; retry"),
            ))
        }
    };
    // Answered only by the partition's leader on confirmed metadata: a
    // node restarting on stale metadata (or cut off) may miss cursors its
    // successor stored.
    if !local.replication.is_leader() || !shard.metadata_confirmed() {
        return Err(failure(
            ErrorCode::NotLeader,
            format!(
                "this node does not lead cursor partition {index} on confirmed metadata; \
                 refresh metadata and retry"
            ),
        ));
    }
    catch_up(shard, &local).await?;
    match op {
        CursorOp::Fetch { key, stream_id } => {
            let stored = shard.cursors.get(local.key, &key);
            let offset = position(stored, stream_id);
            if let (Some(stored), None) = (stored, offset) {
                tracing::debug!(cursor = ?key, stored = %stored.stream_id, asked = %stream_id,
                    "cursor saved against another incarnation of its stream; no cursor");
            }
            Ok(offset)
        }
        CursorOp::Set {
            key,
            stream_id,
            offset,
        } => {
            let stored = shard.cursors.get(local.key, &key);
            let newer = stored.filter(|stored| stored.stream_id > stream_id);
            if newer.is_some() || shard.cursors.is_stale(&key.stream, stream_id) {
                // The request was checked against an older partition table
                // than this shard's (or than the stored cursor's): the
                // incarnation it names is gone.
                return Err(failure(
                    ErrorCode::StreamNotFound,
                    format!(
                        "stream {} (id {stream_id}) was deleted or re-created; retry",
                        key.stream
                    ),
                ));
            }
            if stored.is_none() && shard.cursors.total() >= shard.settings.limits.cursors_max {
                let error = exceeded(
                    &shard.settings.gate.counters,
                    LimitKind::Cursors,
                    &format!(
                        "this shard holds {} cursors, its limit",
                        shard.settings.limits.cursors_max
                    ),
                );
                return Err(failure(error.code, error.message));
            }
            let record = Record {
                timestamp: TimestampMs::now(),
                key: Some(key.encode()),
                value: Some(encode_value(StoredCursor { stream_id, offset })),
                headers: Vec::new(),
            };
            // Like any append: only on the partition leader, resolved once
            // the in-sync replicas have it (the cursor stream is replicated).
            let records = [record];
            let mut batch = Vec::with_capacity(shards::batch::encoded_len(&records));
            shards::batch::encode_batch(shards::types::Offset::ZERO, &records, &mut batch);
            let batch = shards::batch::ValidBatch::check(batch);
            let appended =
                super::append_committed(shard, &local, batch, crate::cores::CommitLevel::All)
                    .await?;
            let stored = StoredCursor { stream_id, offset };
            shard
                .cursors
                .apply(local.key, appended.base_offset, key, Some(stored));
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cores::PartitionSettings;
    use crate::model::nid;

    fn key(id: &str) -> CursorKey {
        CursorKey {
            cursor_id: id.into(),
            stream: "s".into(),
            partition: 0,
        }
    }

    fn at(stream_id: u64, offset: u64) -> StoredCursor {
        StoredCursor {
            stream_id: StreamId::new(stream_id),
            offset,
        }
    }

    fn cursor_partition_key() -> PartitionKey {
        PartitionKey {
            stream_id: StreamId::new(1),
            partition: 0,
        }
    }

    #[test]
    fn newer_log_offsets_win_and_tombstones_remove() {
        let tables = CursorTables::default();
        let p = cursor_partition_key();
        tables.apply(p, Offset(5), key("a"), Some(at(2, 50)));
        tables.apply(p, Offset(3), key("a"), Some(at(2, 30))); // older record: ignored
        assert_eq!(tables.get(p, &key("a")), Some(at(2, 50)));
        tables.apply(p, Offset(6), key("a"), Some(at(2, 60)));
        assert_eq!(tables.get(p, &key("a")), Some(at(2, 60)));
        tables.apply(p, Offset(7), key("a"), None);
        assert_eq!(tables.get(p, &key("a")), None);
        assert_eq!(tables.total(), 0);
        tables.advance(p, Offset(8));
        tables.advance(p, Offset(4));
        assert_eq!(tables.folded_to(p), Offset(8));
        tables.retain(|_| false);
        assert_eq!(tables.folded_to(p), Offset::ZERO);
    }

    #[test]
    fn a_cursor_answers_only_for_the_incarnation_it_was_saved_against() {
        assert_eq!(position(Some(at(3, 42)), StreamId::new(3)), Some(42));
        assert_eq!(
            position(Some(at(3, 42)), StreamId::new(4)),
            None,
            "saved against a deleted incarnation: no cursor"
        );
        assert_eq!(position(None, StreamId::new(3)), None);
    }

    fn names(streams: &[(&str, u64)]) -> HashMap<String, Vec<PartitionEntry>> {
        streams
            .iter()
            .map(|(name, id)| {
                let entry = PartitionEntry {
                    key: PartitionKey {
                        stream_id: StreamId::new(*id),
                        partition: 0,
                    },
                    stream: (*name).into(),
                    partition: 0,
                    shard: ShardId(0),
                    settings: PartitionSettings {
                        retention_age_ms: None,
                        retention_bytes: None,
                        retention_messages: None,
                        compact: false,
                    },
                    leader: nid(1),
                    leader_epoch: 0,
                    replicas: Vec::new(),
                    isr: Vec::new(),
                    isr_version: 0,
                    min_insync_replicas: 1,
                };
                ((*name).to_owned(), vec![entry])
            })
            .collect()
    }

    #[test]
    fn a_table_proves_an_incarnation_stale_only_when_it_knows_a_newer_stream() {
        let incarnations = Incarnations::of(&names(&[("s", 5), ("t", 7)]));
        assert!(incarnations.is_stale("s", StreamId::new(4)), "re-created");
        assert!(!incarnations.is_stale("s", StreamId::new(5)), "current");
        assert!(
            !incarnations.is_stale("s", StreamId::new(6)),
            "newer than the table (it lags): not stale"
        );
        assert!(
            incarnations.is_stale("gone", StreamId::new(6)),
            "absent while stream 7 was created after it: deleted"
        );
        assert!(
            !incarnations.is_stale("gone", StreamId::new(8)),
            "absent but newer than anything the table knows"
        );
        assert!(!Incarnations::default().is_stale("s", StreamId::new(1)));
    }

    #[test]
    fn cursors_of_deleted_incarnations_are_forgotten_and_stop_counting() {
        let tables = CursorTables::default();
        let p = cursor_partition_key();
        let of = |stream: &str, id: &str| CursorKey {
            cursor_id: id.into(),
            stream: stream.into(),
            partition: 0,
        };
        tables.apply(p, Offset(0), of("s", "old"), Some(at(2, 10)));
        tables.apply(p, Offset(1), of("s", "new"), Some(at(5, 3)));
        tables.apply(p, Offset(2), of("gone", "c"), Some(at(3, 1)));
        tables.apply(p, Offset(3), of("t", "c"), Some(at(7, 1)));
        tables.apply(p, Offset(4), of("unseen", "c"), Some(at(9, 1)));
        assert_eq!(tables.total(), 5);
        let forgotten = tables.set_incarnations(Incarnations::of(&names(&[("s", 5), ("t", 7)])));
        assert_eq!(forgotten, 2, "s@2 (re-created) and gone@3 (deleted)");
        assert_eq!(tables.total(), 3);
        assert_eq!(tables.get(p, &of("s", "old")), None);
        assert_eq!(tables.get(p, &of("s", "new")), Some(at(5, 3)));
        assert_eq!(tables.get(p, &of("t", "c")), Some(at(7, 1)));
        assert_eq!(
            tables.get(p, &of("unseen", "c")),
            Some(at(9, 1)),
            "a stream newer than the table is kept"
        );
        assert!(tables.is_stale("s", StreamId::new(2)));
    }
}
