//! The partitions a shard holds, as the metadata's partition tables say:
//! open the ones newly placed here (retrying an open that failed), apply
//! each table's roles and the metadata lease, leave the ISR of a partition
//! moving away, and close (and delete) the ones that are gone.

// The partition-table work uses most of the shard's types: take them
// (and the parent's imports) as `mod.rs` sees them.
use super::*;

/// Opens the partitions newly placed on this shard and closes (and deletes)
/// the ones that are gone.
pub(super) async fn apply_table(shard: &Rc<Shard>, mut table: PartitionTable) {
    // ACL changes hold from the next request on, before any partition work.
    shard.access.set_acls(std::mem::take(&mut table.acls));
    let mut names: HashMap<String, Vec<PartitionEntry>> = HashMap::new();
    for entry in &table.entries {
        names
            .entry(entry.stream.clone())
            .or_default()
            .push(entry.clone());
    }
    // Cursors of deleted stream incarnations stop counting (and answering)
    // from the table that shows them gone; set before any cursor partition
    // opens below, so its fold does not load them (nor count them against
    // `cursors_max` while loading).
    let forgotten = shard
        .cursors
        .set_incarnations(cursors::Incarnations::of(&names));
    if forgotten > 0 {
        tracing::debug!(
            shard = shard.id.0,
            forgotten,
            "forgot cursors of deleted or re-created streams"
        );
    }
    let wanted: HashMap<PartitionKey, &PartitionEntry> = table
        .entries
        .iter()
        .filter(|e| e.shard == shard.id && e.replicas.contains(&table.local_node))
        .map(|e| (e.key, e))
        .collect();
    let gone: Vec<Rc<LocalPartition>> = {
        let mut partitions = shard.partitions.borrow_mut();
        let keys: Vec<PartitionKey> = partitions
            .keys()
            .filter(|k| !wanted.contains_key(k))
            .copied()
            .collect();
        keys.iter().filter_map(|k| partitions.remove(k)).collect()
    };
    for partition in gone {
        delete_partition(shard, partition).await;
    }
    shard.local_node.set(table.local_node);
    // A cursor map is kept only while this node leads its partition: a
    // replica that leads again rebuilds it from its (possibly truncated)
    // log rather than trust a map that saw records since cut.
    shard.cursors.retain(|key| {
        wanted
            .get(key)
            .is_some_and(|entry| entry.leader == table.local_node)
    });
    // A retry task notices its entry is gone and stops. What the failed
    // open left on disk goes, as a deleted partition's directory does (a
    // create undone because a replica could not open leaves nothing).
    let abandoned: Vec<PathBuf> = {
        let mut unopened = shard.unopened.borrow_mut();
        let keys: Vec<PartitionKey> = unopened
            .keys()
            .filter(|k| !wanted.contains_key(k))
            .copied()
            .collect();
        keys.iter()
            .filter_map(|k| unopened.remove(k))
            .map(|u| u.dir)
            .collect()
    };
    for dir in abandoned {
        remove_partition_dir(shard, dir).await;
    }
    for (key, entry) in &wanted {
        let known = shard.partitions.borrow().contains_key(key)
            || shard.unopened.borrow().contains_key(key);
        if known {
            continue;
        }
        match open_partition(shard, entry).await {
            Ok(local) => {
                install_partition(shard, local, entry.leader == table.local_node);
            }
            Err(err) => {
                tracing::error!(shard = shard.id.0, stream = %entry.stream,
                    partition = entry.partition, error = %err,
                    "cannot open partition; retrying every {PARTITION_OPEN_RETRY_INTERVAL:?}");
                let unopened = Unopened {
                    failure: open_failure(&shard.settings, entry, &err),
                    dir: shard.settings.partition_dir(entry),
                };
                shard.unopened.borrow_mut().insert(*key, unopened);
                glommio::spawn_local(retry_open(Rc::downgrade(shard), (*entry).clone())).detach();
            }
        }
    }
    *shard.node_client_addrs.borrow_mut() = table.node_client_addrs.clone();
    // Roles before names: a partition becomes reachable by clients only
    // once it knows whether it leads (and has set its leader epoch).
    let confirmed = shard.metadata_confirmed();
    shard.roles_confirmed.set(confirmed);
    for (key, entry) in &wanted {
        let local = shard.partitions.borrow().get(key).cloned();
        if let Some(local) = local {
            replication::apply_entry(shard, &local, entry, &table, confirmed).await;
        }
    }
    *shard.names.borrow_mut() = names;
    *shard.last_table.borrow_mut() = Some(Rc::new(table));
}

/// Takes a renewed (or expired) metadata lease; when whether it holds
/// differs from when the roles were last assigned, assigns them again from
/// the last table: partitions this node leads start or stop leading.
pub(super) async fn apply_lease(shard: &Rc<Shard>, lease: MetadataLease) {
    shard.lease.set(lease);
    for waker in shard.lease_waiters.borrow_mut().drain(..) {
        waker.wake();
    }
    let confirmed = shard.metadata_confirmed();
    if confirmed == shard.roles_confirmed.get() {
        return;
    }
    shard.roles_confirmed.set(confirmed);
    if !confirmed {
        // A lapse pauses leaders where they act (see `replication`); it
        // does not end their roles.
        return;
    }
    let Some(table) = shard.last_table.borrow().clone() else {
        return;
    };
    tracing::debug!(
        shard = shard.id.0,
        confirmed,
        "metadata lease changed; reassigning roles"
    );
    for entry in table.entries.iter().filter(|e| e.shard == shard.id) {
        let local = shard.partitions.borrow().get(&entry.key).cloned();
        if let Some(local) = local {
            replication::apply_entry(shard, &local, entry, &table, confirmed).await;
        }
    }
}

/// Makes an opened partition visible to appends and fetches (`leads`:
/// this node leads it, so the cursor map of `__cursors` is rebuilt now).
fn install_partition(shard: &Rc<Shard>, local: LocalPartition, leads: bool) -> Rc<LocalPartition> {
    let local = Rc::new(local);
    shard
        .partitions
        .borrow_mut()
        .insert(local.key, local.clone());
    if local.stream == crate::model::CURSORS_STREAM && leads {
        // Rebuild the cursor map now rather than on first use.
        let (shard, local) = (shard.clone(), local.clone());
        glommio::spawn_local(async move {
            if let Err(err) = cursors::catch_up(&shard, &local).await {
                tracing::warn!(error = %err.message, "cannot load cursors");
            }
        })
        .detach();
    }
    local
}

/// What an append to a partition that could not be opened is told (and a
/// create that placed it here): `DiskFull` when there was no space, which
/// for a new partition means no room for its directory or the first
/// preallocation step of its first segment.
fn open_failure(
    settings: &ShardSettings,
    entry: &PartitionEntry,
    err: &shards::error::LogError,
) -> AppendFailure {
    let name = format!("{}/{}", entry.stream, entry.partition);
    let message = match err {
        shards::error::LogError::NoSpace { .. } => {
            // What a new partition needs first (see `log_config`).
            let config = log_config(settings, &settings.partition_dir(entry), &entry.settings);
            let need = config.first_preallocation_bytes();
            format!(
                "no space left on device creating partition {name} (need {need} bytes for its first segment): {err}"
            )
        }
        _ => format!("cannot open partition {name}: {err}"),
    };
    AppendFailure {
        code: services::partition::log_error_code(err),
        message,
    }
}

/// Removes the directory of a partition that left this shard without ever
/// opening (blocking, so off the shard).
async fn remove_partition_dir(shard: &Rc<Shard>, dir: PathBuf) {
    let result = glommio::executor()
        .spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        })
        .await;
    if let Err(err) = result {
        tracing::warn!(shard = shard.id.0, error = %err, "cannot remove partition directory");
    }
}

/// Retries opening a partition whose open failed (a full disk must not
/// leave it closed until a restart) until it opens or leaves this shard's
/// table. Holds the shard weakly so a shutdown is never kept waiting.
async fn retry_open(shard: std::rc::Weak<Shard>, entry: PartitionEntry) {
    loop {
        glommio::timer::sleep(PARTITION_OPEN_RETRY_INTERVAL).await;
        let Some(shard) = shard.upgrade() else {
            return;
        };
        if !shard.unopened.borrow().contains_key(&entry.key) {
            return;
        }
        let opened = open_partition(&shard, &entry).await;
        // The table may have changed while the open ran.
        let still_wanted = shard.unopened.borrow().contains_key(&entry.key);
        match opened {
            Ok(local) if still_wanted => {
                shard.unopened.borrow_mut().remove(&entry.key);
                tracing::info!(shard = shard.id.0, stream = %entry.stream,
                    partition = entry.partition, "partition opened after a retry");
                // Its role (leader or follower, epoch) from the table the
                // shard applied last, as `apply_table` gives every partition.
                let table = shard.last_table.borrow().clone();
                let current = table
                    .as_ref()
                    .and_then(|t| t.entries.iter().find(|e| e.key == entry.key).cloned());
                let leads = match (&table, &current) {
                    (Some(table), Some(current)) => current.leader == table.local_node,
                    _ => false,
                };
                let local = install_partition(&shard, local, leads);
                if let (Some(table), Some(current)) = (table, current) {
                    let confirmed = shard.roles_confirmed.get();
                    replication::apply_entry(&shard, &local, &current, &table, confirmed).await;
                }
                return;
            }
            // It left the table while this open ran; `apply_table` may have
            // removed its directory before the open made it again.
            Ok(local) => {
                delete_partition(&shard, Rc::new(local)).await;
                return;
            }
            Err(err) if still_wanted => {
                tracing::debug!(shard = shard.id.0, stream = %entry.stream,
                    partition = entry.partition, error = %err, "partition still cannot be opened");
                if let Some(unopened) = shard.unopened.borrow_mut().get_mut(&entry.key) {
                    unopened.failure = open_failure(&shard.settings, &entry, &err);
                }
            }
            Err(_) => {
                remove_partition_dir(&shard, shard.settings.partition_dir(&entry)).await;
                return;
            }
        }
    }
}

async fn open_partition(
    shard: &Rc<Shard>,
    entry: &PartitionEntry,
) -> Result<LocalPartition, shards::error::LogError> {
    let dir = shard.settings.partition_dir(entry);
    let data_dir = shard.settings.data_dir.clone();
    let to_create = dir.clone();
    // The partition directory and every ancestor up to the data directory
    // must survive a power loss with the first acked records in them.
    glommio::executor()
        .spawn_blocking(move || create_dir_durably(&data_dir, &to_create))
        .await
        .map_err(|e| shards::error::LogError::io("create partition directory", dir.clone(), e))?;
    let mut config = log_config(&shard.settings, &dir, &entry.settings);
    // The high watermark is the replication layer's: what every in-sync
    // replica has (for a single replica, what is durable here).
    config.commit = CommitMode::Replicated;
    let (log, report) = PartitionLog::open(config).await?;
    if !report.repaired.is_empty() || report.mid_log_corruption {
        tracing::warn!(stream = %entry.stream, partition = entry.partition, ?report, "partition recovered");
    }
    // Lost acknowledged data: neither lead nor count in the ISR until the
    // normal follower path has re-fetched it and the leader expands the ISR.
    if report.needs_refetch() && entry.isr.contains(&shard.local_node()) {
        glommio::spawn_local(leave_isr(shard.clone(), entry.clone())).detach();
    }
    let log = Rc::new(log);
    let settings = &entry.settings;
    let policy = MaintenancePolicy {
        retention: RetentionPolicy {
            max_age: settings.retention_age_ms.map(Duration::from_millis),
            max_bytes: settings.retention_bytes,
            max_messages: settings.retention_messages,
        },
        compact: settings.compact,
        interval: shard.settings.maintenance_interval,
    };
    if settings.compact || !policy.retention.is_unlimited() {
        spawn_maintenance(log.clone(), policy, shard.maintenance_queue);
    }
    tracing::info!(shard = shard.id.0, stream = %entry.stream, partition = entry.partition,
        log_end = log.log_end_offset().0, "partition open");
    Ok(LocalPartition {
        key: entry.key,
        stream: entry.stream.clone(),
        partition: entry.partition,
        log,
        replication: Replication::default(),
    })
}

/// Attempts to report a replica that lost data (`LeaveIsr`) while the
/// metadata leader is unreachable, one per [`LEAVE_ISR_RETRY_DELAY`].
pub const LEAVE_ISR_ATTEMPTS_MAX: u32 = 60;
pub const LEAVE_ISR_RETRY_DELAY: Duration = Duration::from_secs(1);

/// Proposes `LeaveIsr` for this node's copy of `entry` (bounded retries).
async fn leave_isr(shard: Rc<Shard>, entry: PartitionEntry) {
    let node = shard.local_node();
    for attempt in 1..=LEAVE_ISR_ATTEMPTS_MAX {
        let command = MetadataCommand::LeaveIsr {
            stream: entry.stream.clone(),
            stream_id: entry.key.stream_id,
            partition: entry.partition,
            node,
        };
        match shard.propose(command).await {
            Ok(response) => {
                tracing::warn!(stream = %entry.stream, partition = entry.partition, node = node.get(),
                    ?response, "replica lost acknowledged data: reported LeaveIsr; it re-fetches before it may rejoin");
                return;
            }
            Err(err) => {
                tracing::warn!(stream = %entry.stream, partition = entry.partition, attempt,
                    error = %err, "cannot report LeaveIsr yet; retrying");
                glommio::timer::sleep(LEAVE_ISR_RETRY_DELAY).await;
            }
        }
    }
    tracing::error!(stream = %entry.stream, partition = entry.partition, node = node.get(),
        "gave up reporting LeaveIsr: this replica lost acknowledged data and is still in the ISR");
}

/// Segment settings for a partition: retention and compaction act on whole
/// sealed segments, so a stream with a limit gets segments small and young
/// enough for the limit to bite (Kafka leaves this to the operator).
fn log_config(
    settings: &ShardSettings,
    dir: &std::path::Path,
    partition: &PartitionSettings,
) -> LogConfig {
    let mut config = LogConfig::new(dir);
    config.sync = settings.sync;
    config.segment_bytes = settings.segment_bytes;
    config.preallocate_step_bytes = settings.segment_preallocate_step_bytes;
    // A new partition that cannot preallocate its first step is refused
    // (its open fails with DiskFull, retried every second, and a create
    // placing it here is undone) rather than opened to refuse appends:
    // the creator learns now, and the step is small. A partition with data
    // opens on a full disk all the same.
    config.require_first_preallocation = true;
    if let Some(bytes) = partition.retention_bytes {
        let per_segment = (bytes / RETENTION_SEGMENTS_PER_LIMIT).max(SEGMENT_BYTES_FOR_LIMITS_MIN);
        config.segment_bytes = config.segment_bytes.min(per_segment);
    }
    if partition.compact {
        config.segment_bytes = config.segment_bytes.min(COMPACTED_SEGMENT_BYTES_MAX);
    }
    if let Some(age_ms) = partition.retention_age_ms {
        let age = Duration::from_millis(age_ms / RETENTION_SEGMENTS_PER_LIMIT)
            .max(SEGMENT_AGE_FOR_LIMITS_MIN);
        config.segment_age = config.segment_age.min(age);
    }
    config
}

/// Creates `dir` and fsyncs every directory from its parent up to
/// `data_dir`, so the new entries are durable. Blocking: runs off the shard.
fn create_dir_durably(data_dir: &std::path::Path, dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut current = dir.parent();
    while let Some(parent) = current {
        std::fs::File::open(parent)?.sync_all()?;
        if parent == data_dir || !parent.starts_with(data_dir) {
            break;
        }
        current = parent.parent();
    }
    Ok(())
}

async fn delete_partition(shard: &Rc<Shard>, partition: Rc<LocalPartition>) {
    let dir = partition.log.dir();
    close_partition(partition).await;
    let result = glommio::executor()
        .spawn_blocking(move || std::fs::remove_dir_all(dir))
        .await;
    if let Err(err) = result {
        tracing::warn!(shard = shard.id.0, error = %err, "cannot remove partition directory");
    }
}

/// Closes a partition's log once nothing else uses it: in-flight appends and
/// fetches hold it for a moment; waits a bounded time for them to finish.
async fn close_partition(partition: Rc<LocalPartition>) {
    let stream = partition.stream.clone();
    let index = partition.partition;
    // Follower fetches and ISR checks end first (they hold the log).
    replication::stop(&partition).await;
    // Long polls end and new appends are refused, so the users let go soon.
    partition.log.stop_accepting();
    let mut log = partition.log.clone();
    drop(partition);
    for _ in 0..CLOSE_WAIT_ROUNDS_MAX {
        match Rc::try_unwrap(log) {
            Ok(owned) => {
                if let Err(err) = owned.close().await {
                    tracing::warn!(%stream, partition = index, error = %err, "close failed");
                }
                return;
            }
            Err(shared) => {
                log = shared;
                glommio::timer::sleep(CLOSE_WAIT_ROUND).await;
            }
        }
    }
    tracing::warn!(%stream, partition = index, "log still in use after waiting; dropping it (every resolved append is already durable)");
}

pub(super) async fn close_all(shard: &Rc<Shard>) {
    shard.unopened.borrow_mut().clear();
    let all: Vec<Rc<LocalPartition>> = shard
        .partitions
        .borrow_mut()
        .drain()
        .map(|(_, p)| p)
        .collect();
    for partition in all {
        close_partition(partition).await;
    }
}
