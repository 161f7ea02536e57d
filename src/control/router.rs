//! The control core's data-path task: owns the ring to every shard, the NATS
//! subscriptions of every partition, and turns arriving messages into one
//! RecordBatch per partition per wake-up.
//!
//! Single owner on purpose: each `RingSender` has exactly one producer, so
//! everything that must reach a shard (appends, partition tables, metadata
//! leases, stats requests, shutdown) goes through this task.
//!
//! It subscribes to a partition's subject only while this node leads the
//! partition *and* holds its metadata lease (`cluster::lease`): a node that
//! restarted, or was cut off, must not join a partition's queue group on
//! metadata that may be stale, where it would take (and refuse, or worse,
//! ack) messages meant for the real leader.

use std::collections::HashMap;
use std::sync::Arc;

use futures::stream::{BoxStream, SelectAll};
use futures::{FutureExt, StreamExt};
use shards::batch::{encode_batch, encoded_len, Record};
use shards::constants::{BATCH_BYTES_MAX, BATCH_RECORDS_MAX, RECORD_HEADERS_MAX};
use shards::ring::RingSender;
use shards::types::{Offset, TimestampMs};
use tokio::sync::{mpsc, oneshot, watch};

use super::bridge::{ingest, partition_subject};
use crate::cluster::MetadataLease;
use crate::cores::{
    AckRoute, AppendRequest, CommitLevel, PartitionKey, PartitionStatus, PartitionTable,
    ShardStats, ToShard, SHARD_NUDGE_INTERVAL,
};
use crate::limits::{LimitCounters, LimitKind, Limits};
use crate::model::{Metadata, NodeId};
use crate::protocol::error_code::ErrorCode;

/// Most NATS messages gathered into one routing round.
pub const MESSAGES_PER_ROUND_MAX: usize = 4096;
/// A partition's batch is cut at this size; the next messages start another.
pub const ROUTED_BATCH_BYTES_MAX: usize = 1 << 20;

/// The lease-expiry timer's first deadline, before any lease (its branch
/// is disabled until the subscriptions rely on a lease).
const LEASE_TIMER_IDLE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Requests other control-core tasks make of the router.
pub enum RouterRequest {
    Stats(oneshot::Sender<Vec<ShardStats>>),
    /// What the shards know of these partitions (key, shard); partitions
    /// not open on their shard are left out.
    PartitionStatus {
        partitions: Vec<(PartitionKey, u32)>,
        reply: oneshot::Sender<HashMap<PartitionKey, PartitionStatus>>,
    },
    /// Every partition this node holds a replica of, with what its shard
    /// knows of it (for `/metrics` and `sluice cluster status`).
    Hosted(oneshot::Sender<Vec<HostedPartition>>),
    /// Apply the newest metadata (and metadata lease), then answer once
    /// every shard has applied it: a client that created a stream can use
    /// it at once.
    Sync(oneshot::Sender<()>),
    /// Hand a cursor request to the shard that owns its partition.
    Cursor(crate::cores::CursorRequest),
    /// Stop consuming NATS, hand every shard what it already has, then tell
    /// the shards to shut down.
    Shutdown(oneshot::Sender<()>),
}

/// A partition this node holds a replica of.
#[derive(Clone, Debug)]
pub struct HostedPartition {
    pub stream: String,
    pub key: PartitionKey,
    pub leader: NodeId,
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    /// `None` when the shard does not have it open.
    pub status: Option<PartitionStatus>,
}

#[derive(Debug)]
struct Route {
    key: PartitionKey,
    stream: Arc<str>,
    partition: u32,
    shard: u32,
    /// Every partition of the stream with its shard and leader, for
    /// envelopes that name one.
    siblings: Arc<Vec<(PartitionKey, u32, NodeId)>>,
}

type Incoming = BoxStream<'static, (Arc<Route>, async_nats::Message)>;

pub struct Router {
    nats: async_nats::Client,
    shards: Vec<RingSender<ToShard>>,
    /// Subscribed partitions (subject, queue group) and how to stop each
    /// subscription.
    subscribed: HashMap<PartitionKey, (String, String, futures::channel::oneshot::Sender<()>)>,
    incoming: SelectAll<Incoming>,
    metadata: watch::Receiver<Arc<Metadata>>,
    /// The metadata applied last (subscriptions are recomputed from it when
    /// the lease is gained or lost).
    applied: Arc<Metadata>,
    /// This node's metadata lease, renewed by the metadata node.
    lease: watch::Receiver<MetadataLease>,
    /// Whether the subscriptions (and the shards' roles) were last set with
    /// the lease holding.
    confirmed: bool,
    requests: mpsc::Receiver<RouterRequest>,
    /// This node's id (partition tables are relative to it).
    local_node: NodeId,
    /// The `[limits]` a single message is checked against.
    limits: Limits,
    limit_counters: Arc<LimitCounters>,
}

impl Router {
    pub fn new(
        nats: async_nats::Client,
        shards: Vec<RingSender<ToShard>>,
        (metadata, lease): (
            watch::Receiver<Arc<Metadata>>,
            watch::Receiver<MetadataLease>,
        ),
        requests: mpsc::Receiver<RouterRequest>,
        local_node: NodeId,
        (limits, limit_counters): (Limits, Arc<LimitCounters>),
    ) -> Router {
        let applied = metadata.borrow().clone();
        Router {
            nats,
            shards,
            subscribed: HashMap::new(),
            incoming: SelectAll::new(),
            applied,
            metadata,
            lease,
            confirmed: false,
            requests,
            local_node,
            limits,
            limit_counters,
        }
    }

    pub async fn run(mut self) {
        let initial = self.metadata.borrow_and_update().clone();
        self.apply_metadata(initial).await;
        self.take_lease().await;
        let mut nudge = tokio::time::interval(SHARD_NUDGE_INTERVAL);
        nudge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut lease_open = true;
        // One timer for the end of the lease, moved only when the lease is
        // (not re-armed per routing round).
        let mut lease_ends = None;
        let expiry = tokio::time::sleep(LEASE_TIMER_IDLE);
        tokio::pin!(expiry);
        loop {
            let deadline = self.lease_deadline();
            if deadline.is_some() && deadline != lease_ends {
                lease_ends = deadline;
                expiry
                    .as_mut()
                    .reset(deadline.unwrap_or_else(tokio::time::Instant::now));
            }
            tokio::select! {
                biased;
                request = self.requests.recv() => match request {
                    Some(RouterRequest::Shutdown(done)) => {
                        self.shutdown().await;
                        let _ = done.send(());
                        return;
                    }
                    Some(request) => self.handle(request).await,
                    None => {
                        self.shutdown().await;
                        return;
                    }
                },
                changed = self.metadata.changed() => {
                    if changed.is_err() {
                        continue;
                    }
                    let metadata = self.metadata.borrow_and_update().clone();
                    self.apply_metadata(metadata).await;
                }
                changed = self.lease.changed(), if lease_open => {
                    if changed.is_err() {
                        lease_open = false;
                        continue;
                    }
                    self.take_lease().await;
                }
                _ = &mut expiry, if self.confirmed => {
                    self.take_lease().await;
                }
                Some(first) = self.incoming.next(), if !self.incoming.is_empty() => {
                    self.route_round(first).await;
                }
                _ = nudge.tick() => {
                    for sender in &mut self.shards {
                        // A full ring means the shard is awake and busy.
                        let _ = sender.try_send(ToShard::Nudge);
                    }
                }
            }
        }
    }

    async fn handle(&mut self, request: RouterRequest) {
        match request {
            RouterRequest::Stats(reply) => {
                let mut answers = Vec::new();
                for sender in &mut self.shards {
                    let (tx, rx) = futures::channel::oneshot::channel();
                    if sender.send(ToShard::Stats(tx)).await.is_ok() {
                        answers.push(rx);
                    }
                }
                let mut stats = Vec::new();
                for answer in answers {
                    if let Ok(s) = answer.await {
                        stats.push(s);
                    }
                }
                let _ = reply.send(stats);
            }
            RouterRequest::PartitionStatus { partitions, reply } => {
                let found = self.statuses(partitions).await;
                let _ = reply.send(found);
            }
            RouterRequest::Hosted(reply) => {
                let metadata = self.metadata.borrow().clone();
                let mut hosted = Vec::new();
                for record in metadata.streams().values() {
                    for a in &record.partitions {
                        if a.replicas.contains(&self.local_node) {
                            hosted.push((
                                HostedPartition {
                                    stream: record.spec.name.clone(),
                                    key: PartitionKey::of(record, a.partition),
                                    leader: a.leader,
                                    replicas: a.replicas.clone(),
                                    isr: a.isr.clone(),
                                    status: None,
                                },
                                a.shard,
                            ));
                        }
                    }
                }
                let mut statuses = self
                    .statuses(hosted.iter().map(|(h, shard)| (h.key, *shard)).collect())
                    .await;
                let hosted = hosted
                    .into_iter()
                    .map(|(mut h, _)| {
                        h.status = statuses.remove(&h.key);
                        h
                    })
                    .collect();
                let _ = reply.send(hosted);
            }
            RouterRequest::Sync(done) => {
                if self.metadata.has_changed().unwrap_or(false) {
                    let metadata = self.metadata.borrow_and_update().clone();
                    self.apply_metadata(metadata).await;
                }
                if self.lease.has_changed().unwrap_or(false) {
                    self.take_lease().await;
                }
                let mut pending = Vec::new();
                for sender in &mut self.shards {
                    let (tx, rx) = futures::channel::oneshot::channel();
                    if sender.send(ToShard::Barrier(tx)).await.is_ok() {
                        pending.push(rx);
                    }
                }
                for rx in pending {
                    let _ = rx.await;
                }
                let _ = done.send(());
            }
            RouterRequest::Cursor(request) => {
                let sender = usize::try_from(request.shard.0)
                    .ok()
                    .and_then(|index| self.shards.get_mut(index));
                let Some(sender) = sender else {
                    let _ = request.reply.send(Err(crate::cores::AppendFailure {
                        code: ErrorCode::PartitionNotFound,
                        message: format!("no shard {} on this node", request.shard),
                    }));
                    return;
                };
                // On failure the request (and its reply sender) is dropped:
                // the asking shard sees the channel close and answers
                // ShuttingDown.
                let _ = sender.send(ToShard::Cursor(request)).await;
            }
            RouterRequest::Shutdown(_) => {}
        }
    }

    /// Asks each partition's shard what it knows of it.
    async fn statuses(
        &mut self,
        partitions: Vec<(PartitionKey, u32)>,
    ) -> HashMap<PartitionKey, PartitionStatus> {
        let mut pending = Vec::new();
        for (key, shard) in partitions {
            let Some(sender) = self.shards.get_mut(shard as usize) else {
                continue;
            };
            let (tx, rx) = futures::channel::oneshot::channel();
            if sender
                .send(ToShard::PartitionStatus { key, reply: tx })
                .await
                .is_ok()
            {
                pending.push((key, rx));
            }
        }
        let mut found = HashMap::new();
        for (key, rx) in pending {
            if let Ok(Some(status)) = rx.await {
                found.insert(key, status);
            }
        }
        found
    }

    /// Sends every shard the new partition table and (re)subscribes NATS.
    async fn apply_metadata(&mut self, metadata: Arc<Metadata>) {
        let table = PartitionTable::from_metadata(&metadata, self.local_node);
        for sender in &mut self.shards {
            let _ = sender.send(ToShard::Table(table.clone())).await;
        }
        self.applied = metadata;
        self.resubscribe().await;
    }

    /// When the lease the subscriptions rely on ends (`None` while they do
    /// not rely on one).
    fn lease_deadline(&self) -> Option<tokio::time::Instant> {
        let until = self.lease.borrow().valid_until()?;
        self.confirmed
            .then(|| tokio::time::Instant::from_std(until))
    }

    /// Passes the current lease to every shard (after the metadata it
    /// covers) and, when it was gained or lost, resubscribes: with it, the
    /// partitions this node leads; without it, none. Called when the lease
    /// is renewed and when it ends.
    async fn take_lease(&mut self) {
        // The lease covers the metadata applied before it was granted, which
        // the metadata watch already shows: apply that first, so no shard
        // leads on an older table with the new lease.
        if self.metadata.has_changed().unwrap_or(false) {
            let metadata = self.metadata.borrow_and_update().clone();
            self.apply_metadata(metadata).await;
        }
        let lease = *self.lease.borrow_and_update();
        for sender in &mut self.shards {
            let _ = sender.send(ToShard::Lease(lease)).await;
        }
        let confirmed = lease.is_valid_at(std::time::Instant::now());
        if confirmed == self.confirmed {
            return;
        }
        self.confirmed = confirmed;
        if confirmed {
            tracing::info!("metadata confirmed current by the metadata leader (lease held): leading this node's partitions");
        } else {
            tracing::warn!("metadata lease ended (the metadata leader did not confirm this node's metadata in time): leading nothing, unsubscribing until it does");
        }
        self.resubscribe().await;
    }

    /// Subscribes to the partitions this node leads in the applied metadata
    /// while the lease holds (none without it) and unsubscribes the rest.
    async fn resubscribe(&mut self) {
        let metadata = self.applied.clone();
        let mut wanted: HashMap<PartitionKey, (Arc<Route>, String, String)> = HashMap::new();
        for record in metadata.streams().values() {
            if crate::cursor::is_internal_stream(&record.spec.name) {
                // Internal streams are written by the server only, never
                // from NATS.
                continue;
            }
            let stream: Arc<str> = Arc::from(record.spec.name.as_str());
            let siblings: Arc<Vec<(PartitionKey, u32, NodeId)>> = Arc::new(
                record
                    .partitions
                    .iter()
                    .map(|p| {
                        let key = PartitionKey::of(record, p.partition);
                        (key, p.shard, p.leader)
                    })
                    .collect(),
            );
            for assignment in &record.partitions {
                // Only the partition leader takes a partition's messages,
                // and only on metadata confirmed current.
                if assignment.leader != self.local_node || !self.confirmed {
                    continue;
                }
                let key = PartitionKey::of(record, assignment.partition);
                let route = Arc::new(Route {
                    key,
                    stream: stream.clone(),
                    partition: assignment.partition,
                    shard: assignment.shard,
                    siblings: siblings.clone(),
                });
                let subject = partition_subject(&record.spec.subject, assignment.partition);
                let queue = queue_group(
                    &record.spec.name,
                    record.spec.group.as_deref(),
                    assignment.partition,
                );
                wanted.insert(key, (route, subject, queue));
            }
        }
        let stale: Vec<PartitionKey> = self
            .subscribed
            .iter()
            .filter(|(key, (subject, group, _))| {
                wanted
                    .get(key)
                    .is_none_or(|(_, s, g)| s != subject || g != group)
            })
            .map(|(key, _)| *key)
            .collect();
        for key in stale {
            if let Some((subject, _, cancel)) = self.subscribed.remove(&key) {
                let _ = cancel.send(());
                tracing::info!(%subject, "unsubscribed");
            }
        }
        for (key, (route, subject, group)) in wanted {
            if self.subscribed.contains_key(&key) {
                continue;
            }
            let subscription = self
                .nats
                .queue_subscribe(subject.clone(), group.clone())
                .await;
            match subscription {
                Ok(subscriber) => {
                    let (cancel, cancelled) = futures::channel::oneshot::channel::<()>();
                    let route_for_stream = route.clone();
                    let stream = subscriber
                        .take_until(cancelled)
                        .map(move |message| (route_for_stream.clone(), message))
                        .boxed();
                    self.incoming.push(stream);
                    tracing::info!(%subject, %group, stream = %route.stream,
                        partition = route.partition, "subscribed");
                    self.subscribed.insert(key, (subject, group, cancel));
                }
                Err(err) => tracing::error!(%subject, error = %err, "cannot subscribe"),
            }
        }
    }

    /// Takes `first` and every message already waiting (up to a limit),
    /// groups them by partition, and sends one batch per partition.
    async fn route_round(&mut self, first: (Arc<Route>, async_nats::Message)) {
        let now = TimestampMs::now();
        // One batch per partition and commit level: an ack-`all` batch may
        // be refused (too few in-sync replicas) or wait for the ISR, and
        // must not take `leader` records with it.
        let mut groups: HashMap<BatchKey, PendingBatch> = HashMap::new();
        let mut order: Vec<BatchKey> = Vec::new();
        let mut next = Some(first);
        let mut taken = 0;
        let mut ready: Vec<Vec<ToShard>> = (0..self.shards.len()).map(|_| Vec::new()).collect();
        while let Some((route, message)) = next.take() {
            taken += 1;
            let ingested = ingest(
                message.subject.as_str(),
                message.reply.as_ref().map(|r| r.as_str()),
                message.headers.as_ref(),
                message.payload,
                now,
            );
            let target = match ingested.partition_override {
                Some(p) => route
                    .siblings
                    .iter()
                    .find(|(k, _, _)| k.partition == p)
                    .copied(),
                None => Some((route.key, route.shard, self.local_node)),
            };
            let record_bytes = encoded_len(std::slice::from_ref(&ingested.record));
            let violation = record_limit_violation(
                &self.limits,
                &ingested.record,
                ingested.bridge_headers,
                record_bytes,
            );
            if let Some((kind, detail)) = violation {
                // Refuse this message alone: it must not poison the batch
                // it would share with other publishers' messages.
                self.limit_counters.record(kind);
                let reason = format!("{}: {detail}", kind.name());
                tracing::debug!(stream = %route.stream, %reason, "message refused");
                if let Some(ack) = ingested.ack {
                    self.nack(&route, ack, ErrorCode::LimitExceeded, &reason)
                        .await;
                }
            } else {
                match target {
                    Some((_, _, leader)) if leader != self.local_node => {
                        if let Some(ack) = ingested.ack {
                            let reason = format!(
                                "the envelope names a partition led by node {leader}; publish on that partition's subject"
                            );
                            self.nack(&route, ack, ErrorCode::NotLeader, &reason).await;
                        }
                    }
                    Some((_, shard, _)) if shard as usize >= self.shards.len() => {
                        // Placed on a shard this node does not run (it was
                        // restarted with fewer cores): refuse it, never
                        // leave the publisher waiting for an ack.
                        if let Some(ack) = ingested.ack {
                            let reason = format!(
                                "the partition is placed on shard {shard}, but this node runs {} shard(s) (see --cores)",
                                self.shards.len()
                            );
                            self.nack(&route, ack, ErrorCode::PartitionNotFound, &reason)
                                .await;
                        }
                    }
                    Some((partition_key, shard, _)) => {
                        let key = (partition_key, ingested.level);
                        // Cut the batch before a record that would overflow it.
                        let overflows = groups.get(&key).is_some_and(|p| {
                            !p.is_empty() && p.bytes + record_bytes > ROUTED_BATCH_BYTES_MAX
                        });
                        if overflows {
                            flush_batch(&mut groups, &mut ready, key);
                        }
                        // `order` may list a key twice after a cut; the final
                        // flush finds nothing the second time.
                        let pending = groups.entry(key).or_insert_with(|| {
                            order.push(key);
                            PendingBatch::new(route.stream.clone(), key, shard)
                        });
                        pending.push(ingested.record, ingested.ack, record_bytes);
                        if pending.is_full() {
                            flush_batch(&mut groups, &mut ready, key);
                        }
                    }
                    None => {
                        tracing::debug!(stream = %route.stream, "envelope names a partition the stream lacks; dropped");
                        if let Some(ack) = ingested.ack {
                            self.nack(
                                &route,
                                ack,
                                ErrorCode::PartitionNotFound,
                                "no such partition",
                            )
                            .await;
                        }
                    }
                }
            }
            if taken < MESSAGES_PER_ROUND_MAX {
                next = self.incoming.next().now_or_never().flatten();
            }
        }
        for key in order {
            flush_batch(&mut groups, &mut ready, key);
        }
        for (shard, mut items) in ready.into_iter().enumerate() {
            if items.is_empty() {
                continue;
            }
            if let Some(sender) = self.shards.get_mut(shard) {
                if sender.send_many(&mut items).await.is_err() {
                    tracing::error!(
                        shard,
                        "shard ring closed; messages not stored (no acks sent)"
                    );
                }
            }
        }
    }

    async fn nack(&self, route: &Route, ack: AckRoute, code: ErrorCode, message: &str) {
        let failure = Err(crate::cores::AppendFailure {
            code,
            message: format!("stream {}: {message}", route.stream),
        });
        let context = super::bridge::AckContext {
            stream: &route.stream,
            partition: route.partition,
            node: self.local_node,
        };
        if let Some(payload) =
            super::bridge::ack_payload(context, &failure, 0, &ack, TimestampMs::now())
        {
            let _ = self.nats.publish(ack.inbox, payload.into()).await;
        }
    }

    async fn shutdown(&mut self) {
        for (_, (_, _, cancel)) in self.subscribed.drain() {
            let _ = cancel.send(());
        }
        // Route what is already buffered in the subscriptions.
        while let Some(Some(first)) = self.incoming.next().now_or_never() {
            self.route_round(first).await;
        }
        for sender in &mut self.shards {
            let _ = sender.send(ToShard::Shutdown).await;
        }
    }
}

/// The NATS queue group of a partition's subscription. Every node that may
/// lead the partition subscribes in the same group, so while leadership
/// moves (old leader not yet unsubscribed, new one subscribed) NATS hands
/// each message to one of them only. Streams of a consumer group share the
/// group's name, so a message lands in exactly one of those streams.
fn queue_group(stream: &str, group: Option<&str>, partition: u32) -> String {
    match group {
        Some(group) => group.to_owned(),
        None => format!("sluice.{stream}.{partition}"),
    }
}

/// A routing round's batches: one per partition and commit level.
type BatchKey = (PartitionKey, CommitLevel);

/// Moves the pending batch of `key` (if any) to its shard's outgoing list.
fn flush_batch(
    groups: &mut HashMap<BatchKey, PendingBatch>,
    ready: &mut [Vec<ToShard>],
    key: BatchKey,
) {
    if let Some(batch) = groups.remove(&key) {
        // `route_round` refuses records for shards this node does not run,
        // so every batch has a slot.
        debug_assert!(
            (batch.shard as usize) < ready.len(),
            "batch for a missing shard"
        );
        if let Some(slot) = ready.get_mut(batch.shard as usize) {
            slot.push(ToShard::Append(batch.into_request()));
        }
    }
}

/// The limit a message's record trips, if any: the configured header limits
/// on the headers its publisher sent (NATS headers and envelope headers, not
/// the bridge's own subject and reply headers), the engine's ceiling on all
/// of them, and the batch size it would need alone.
fn record_limit_violation(
    limits: &Limits,
    record: &Record,
    bridge_headers: usize,
    record_bytes: usize,
) -> Option<(LimitKind, String)> {
    let published = record.headers.get(bridge_headers..).unwrap_or_default();
    let headers_max = limits
        .record_headers_max
        .min(RECORD_HEADERS_MAX.saturating_sub(bridge_headers));
    if published.len() > headers_max {
        return Some((
            LimitKind::RecordHeaders,
            format!(
                "the message has {} headers, the limit is {headers_max}",
                published.len()
            ),
        ));
    }
    let header_bytes: usize = published
        .iter()
        .map(|h| h.key.len() + h.value.as_ref().map_or(0, |v| v.len()))
        .sum();
    if header_bytes > limits.record_header_bytes_max {
        return Some((
            LimitKind::RecordHeaderBytes,
            format!(
                "the message's headers are {header_bytes} bytes, the limit is {}",
                limits.record_header_bytes_max
            ),
        ));
    }
    let batch_bytes_max = limits.batch_bytes_max.min(BATCH_BYTES_MAX);
    if record_bytes > batch_bytes_max {
        return Some((
            LimitKind::BatchBytes,
            format!(
                "the message needs a {record_bytes}-byte batch, the limit is {batch_bytes_max}"
            ),
        ));
    }
    None
}

/// Records of one partition gathered in one routing round.
struct PendingBatch {
    stream: Arc<str>,
    key: BatchKey,
    shard: u32,
    records: Vec<Record>,
    acks: Vec<Option<AckRoute>>,
    bytes: usize,
}

impl PendingBatch {
    fn new(stream: Arc<str>, key: BatchKey, shard: u32) -> PendingBatch {
        PendingBatch {
            stream,
            key,
            shard,
            records: Vec::new(),
            acks: Vec::new(),
            bytes: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn push(&mut self, record: Record, ack: Option<AckRoute>, record_bytes: usize) {
        self.bytes += record_bytes;
        self.records.push(record);
        self.acks.push(ack);
    }

    fn is_full(&self) -> bool {
        self.bytes >= ROUTED_BATCH_BYTES_MAX || self.records.len() >= BATCH_RECORDS_MAX
    }

    fn into_request(self) -> AppendRequest {
        // `bytes` sums each record's size as a batch of its own: an upper
        // bound of the batch, known without another pass over the records.
        let mut batch = Vec::with_capacity(self.bytes);
        encode_batch(Offset::ZERO, &self.records, &mut batch);
        let (key, level) = self.key;
        AppendRequest {
            key,
            stream: self.stream.to_string(),
            partition: key.partition,
            batch,
            acks: self.acks,
            level,
        }
    }
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;
