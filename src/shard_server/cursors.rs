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
//! to (log offset of the record, cursor offset): a fold of the partition's
//! committed records in log order. It is built when the partition opens
//! and brought up to date before every request from wherever it stopped
//! (so records that arrived by replication are seen too). A SetCursor
//! appends one record, waits until it is durable (`PartitionLog::append`
//! resolves only then), and only then updates the map and answers. Per key
//! the record with the higher log offset wins, so concurrent updates and
//! re-reads settle on what the log says. Key compaction keeps the last
//! record per key, so the fold after a restart gives the same map.
//!
//! **Bounds.** Cursor ids are at most `CURSOR_ID_BYTES_MAX` bytes; a shard
//! holds at most `limits.cursors_max` cursors (a SetCursor for a new key
//! beyond it is `LimitExceeded`); the rebuild reads the log in chunks of
//! [`CURSOR_READ_CHUNK_BYTES`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use bytes::Bytes;
use flatbuffers::FlatBufferBuilder;
use futures::channel::oneshot;
use shards::batch::{decode_batch, BatchIter, Record};
use shards::log::PartitionLog;
use shards::types::{Offset, TimestampMs};

use super::connection::{log_error_code, request_body};
use super::limits::exceeded;
use super::{LocalPartition, Lookup, Shard};
use crate::cores::{
    AdminReply, AdminRequest, AppendFailure, CursorAnswer, CursorOp, CursorRequest, FromShard,
    PartitionKey,
};
use crate::cursor::{
    cursor_partition, decode_offset, encode_offset, validate_cursor_id, CursorKey, CURSORS_STREAM,
};
use crate::limits::LimitKind;
use crate::protocol::error_code::ErrorCode;
use crate::protocol::error_response::ErrorResponse;
use crate::protocol::frame::{Frame, FrameKind};
use crate::protocol::generated::protocol as fb;

/// Bytes read from the cursor log at a time while folding it into the map.
pub const CURSOR_READ_CHUNK_BYTES: u64 = 1 << 20;

type Answer = Result<Option<(FrameKind, Vec<u8>)>, ErrorResponse>;

/// The cursor maps of the cursor partitions this shard owns.
#[derive(Default)]
pub struct CursorTables {
    tables: RefCell<HashMap<PartitionKey, CursorTable>>,
}

/// One cursor partition folded into memory.
#[derive(Default)]
struct CursorTable {
    /// Key → (log offset of its newest record, stored cursor offset).
    cursors: HashMap<CursorKey, (Offset, u64)>,
    /// Next log offset to fold.
    folded_to: Offset,
}

impl CursorTables {
    /// Forgets the tables of partitions this shard no longer owns.
    pub fn retain(&self, owned: impl Fn(&PartitionKey) -> bool) {
        self.tables.borrow_mut().retain(|key, _| owned(key));
    }

    fn total(&self) -> usize {
        self.tables.borrow().values().map(|t| t.cursors.len()).sum()
    }

    /// Applies one record at `offset` (newer log offset wins per key).
    fn apply(&self, partition: PartitionKey, offset: Offset, key: CursorKey, value: Option<u64>) {
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

    fn get(&self, partition: PartitionKey, key: &CursorKey) -> Option<u64> {
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
    let value = match record.value.as_deref() {
        None => None,
        Some(bytes) => match decode_offset(bytes) {
            Some(offset) => Some(offset),
            None => {
                tracing::warn!(
                    offset = record.offset.0,
                    "cursor log: value is not 8 bytes; skipped"
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

/// SetCursor (kind 7) on any shard's port.
pub async fn set_cursor(shard: &Rc<Shard>, frame: &Frame) -> Answer {
    let request = request_body::<fb::SetCursorRequest>(frame)?;
    let key = checked_key(
        shard,
        request.cursor_id(),
        request.stream(),
        request.partition(),
    )?;
    let offset = u64::try_from(request.offset()).map_err(|_| {
        ErrorResponse::new(
            ErrorCode::InvalidRequest,
            format!(
                "offset {} is negative; a cursor is the next offset to read (>= 0)",
                request.offset()
            ),
        )
    })?;
    route(shard, CursorOp::Set { key, offset }, true).await?;
    let mut fbb = FlatBufferBuilder::with_capacity(16);
    let root = fb::SetCursorResponse::create(&mut fbb, &fb::SetCursorResponseArgs {});
    fbb.finish(root, None);
    Ok(Some((
        FrameKind::SetCursorResponse,
        fbb.finished_data().to_vec(),
    )))
}

/// FetchCursor (kind 8) on any shard's port.
pub async fn fetch_cursor(shard: &Rc<Shard>, frame: &Frame) -> Answer {
    let request = request_body::<fb::FetchCursorRequest>(frame)?;
    let key = checked_key(
        shard,
        request.cursor_id(),
        request.stream(),
        request.partition(),
    )?;
    let stored = route(shard, CursorOp::Fetch { key }, false).await?;
    let mut fbb = FlatBufferBuilder::with_capacity(32);
    let root = fb::FetchCursorResponse::create(
        &mut fbb,
        &fb::FetchCursorResponseArgs {
            offset: stored.map_or(-1, |o| o.min(i64::MAX as u64) as i64),
        },
    );
    fbb.finish(root, None);
    Ok(Some((
        FrameKind::FetchCursorResponse,
        fbb.finished_data().to_vec(),
    )))
}

/// Validates the fields of a cursor request: id, an existing stream and
/// partition.
fn checked_key(
    shard: &Shard,
    cursor_id: Option<&str>,
    stream: Option<&str>,
    partition: i32,
) -> Result<CursorKey, ErrorResponse> {
    let cursor_id = cursor_id.unwrap_or_default();
    validate_cursor_id(cursor_id)
        .map_err(|err| ErrorResponse::new(ErrorCode::InvalidRequest, err.to_string()))?;
    let stream = stream.unwrap_or_default();
    let partition = u32::try_from(partition).map_err(|_| {
        ErrorResponse::new(
            ErrorCode::InvalidRequest,
            format!("partition {partition} is negative"),
        )
    })?;
    match shard.lookup(stream, partition) {
        Lookup::StreamNotFound => Err(ErrorResponse::new(
            ErrorCode::StreamNotFound,
            format!("no stream named {stream:?}"),
        )),
        Lookup::PartitionNotFound => Err(ErrorResponse::new(
            ErrorCode::PartitionNotFound,
            format!("stream {stream} has no partition {partition}"),
        )),
        _ => Ok(CursorKey {
            cursor_id: cursor_id.to_owned(),
            stream: stream.to_owned(),
            partition,
        }),
    }
}

/// Finds the cursor's partition and runs `op` on its owning shard (here or
/// through the control core). `create`: make the cursor stream if it does
/// not exist yet (a fetch without one just finds nothing).
async fn route(
    shard: &Rc<Shard>,
    op: CursorOp,
    create: bool,
) -> Result<Option<u64>, ErrorResponse> {
    let key = match &op {
        CursorOp::Set { key, .. } | CursorOp::Fetch { key } => key.clone(),
    };
    let mut entries = shard.stream_entries(CURSORS_STREAM);
    if entries.is_empty() {
        if !create {
            return Ok(None);
        }
        match shard.admin(AdminRequest::EnsureCursorStream).await {
            AdminReply::Created { .. } => {}
            AdminReply::Error(err) => return Err(ErrorResponse::new(err.code, err.message)),
            _ => return Err(ErrorResponse::new(ErrorCode::Unknown, "unexpected answer")),
        }
        entries = shard.stream_entries(CURSORS_STREAM);
    }
    let partitions = entries.len() as u32;
    if partitions == 0 {
        return Err(ErrorResponse::new(
            ErrorCode::PartitionFailed,
            "the cursor stream is not open on this node yet; retry",
        ));
    }
    let index = cursor_partition(&key, partitions);
    let Some(entry) = entries.iter().find(|e| e.partition == index) else {
        return Err(ErrorResponse::new(
            ErrorCode::PartitionNotFound,
            format!("cursor partition {index} is missing"),
        ));
    };
    if entry.leader != shard.local_node.get() {
        return Err(ErrorResponse::new(
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
            ErrorResponse::new(err.code, err.message)
        } else {
            ErrorResponse::new(err.code, format!("cursor: {}", err.message))
        }
    })
}

async fn forward(shard: &Shard, owner: u32, op: CursorOp) -> CursorAnswer {
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
        CursorOp::Set { key, .. } | CursorOp::Fetch { key } => key,
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
    catch_up(shard, &local).await?;
    match op {
        CursorOp::Fetch { key } => Ok(shard.cursors.get(local.key, &key)),
        CursorOp::Set { key, offset } => {
            if !shard.cursors.contains(local.key, &key)
                && shard.cursors.total() >= shard.settings.limits.cursors_max
            {
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
                value: Some(encode_offset(offset)),
                headers: Vec::new(),
            };
            // Like any append: only on the partition leader, resolved once
            // the in-sync replicas have it (the cursor stream is replicated).
            let records = [record];
            let mut batch = Vec::with_capacity(shards::batch::encoded_len(&records));
            shards::batch::encode_batch(shards::types::Offset::ZERO, &records, &mut batch);
            let appended =
                super::append_committed(shard, &local, batch, crate::cores::CommitLevel::All)
                    .await?;
            shard
                .cursors
                .apply(local.key, appended.base_offset, key, Some(offset));
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::StreamId;

    fn key(id: &str) -> CursorKey {
        CursorKey {
            cursor_id: id.into(),
            stream: "s".into(),
            partition: 0,
        }
    }

    #[test]
    fn newer_log_offsets_win_and_tombstones_remove() {
        let tables = CursorTables::default();
        let p = PartitionKey {
            stream_id: StreamId::new(1),
            partition: 0,
        };
        tables.apply(p, Offset(5), key("a"), Some(50));
        tables.apply(p, Offset(3), key("a"), Some(30)); // older record: ignored
        assert_eq!(tables.get(p, &key("a")), Some(50));
        tables.apply(p, Offset(6), key("a"), Some(60));
        assert_eq!(tables.get(p, &key("a")), Some(60));
        tables.apply(p, Offset(7), key("a"), None);
        assert_eq!(tables.get(p, &key("a")), None);
        assert_eq!(tables.total(), 0);
        tables.advance(p, Offset(8));
        tables.advance(p, Offset(4));
        assert_eq!(tables.folded_to(p), Offset(8));
        tables.retain(|_| false);
        assert_eq!(tables.folded_to(p), Offset::ZERO);
    }
}
