//! Support for tests, benches and tools: a shard executor without a whole
//! shard runtime, a small real filesystem to fill up, and the log fixtures
//! the tests share (a small-segment config, reading a log back).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use glommio::{LocalExecutorBuilder, Placement};

use crate::batch::{decode_batch, BatchHeader, BatchIter, DecodedRecord};
use crate::constants::IO_MEMORY_BYTES_DEFAULT;
use crate::error::LogResult;
use crate::log::{LogConfig, PartitionLog};
use crate::types::Offset;

/// Runs `future` to completion on a fresh, unpinned glommio executor on the
/// current thread (with the locked-memory budget of a real shard).
pub fn run_on_executor<T: 'static>(future: impl Future<Output = T> + 'static) -> T {
    let executor = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(IO_MEMORY_BYTES_DEFAULT)
        .make();
    match executor {
        Ok(executor) => executor.run(future),
        Err(err) => panic!("cannot start a glommio executor: {err}"),
    }
}

/// A log configuration for tests: 4 KiB segments (a handful of records
/// each, so a few appends roll, retain and compact whole segments) and an
/// index entry every 512 bytes.
pub fn small_config(dir: &Path) -> LogConfig {
    let mut config = LogConfig::new(dir);
    config.segment_bytes = 4096;
    config.index_interval_bytes = 512;
    config
}

/// Decodes concatenated whole batches, panicking on the first bad one.
pub fn decode_all(bytes: &[u8]) -> Vec<(BatchHeader, Vec<DecodedRecord>)> {
    let mut out = Vec::new();
    for item in BatchIter::new(bytes) {
        let (header, raw) = match item {
            Ok(found) => found,
            Err(err) => panic!("corrupt batch in a read slice: {err}"),
        };
        let (decoded_header, records) = match decode_batch(&Bytes::copy_from_slice(raw)) {
            Ok(decoded) => decoded,
            Err(err) => panic!("batch passed BatchIter but failed decode_batch: {err}"),
        };
        assert_eq!(header, decoded_header);
        out.push((header, records));
    }
    out
}

/// Every committed batch from `from` on, through `PartitionLog::read`,
/// `max_bytes` at a time, each with its records at or past `from` (a batch
/// may start before it). Steps over batches left empty by compaction.
/// The error of the first `read` that fails; panics on a corrupt batch, a
/// slice that disagrees with its bytes, or a read that makes no progress.
pub async fn try_read_batches_from(
    log: &PartitionLog,
    from: Offset,
    max_bytes: u64,
) -> LogResult<Vec<(BatchHeader, Vec<DecodedRecord>)>> {
    let mut out = Vec::new();
    let mut next = from;
    let mut reads = 0u64;
    while let Some(slice) = log.read(next, max_bytes)? {
        // Every read advances by at least one offset.
        reads += 1;
        assert!(
            reads <= log.log_end_offset().0.saturating_sub(from.0) + 1,
            "reading the log back made no progress at {next}"
        );
        let bytes = match slice.read_bytes().await {
            Ok(bytes) => bytes,
            Err(err) => panic!("read bytes at {next}: {err}"),
        };
        assert_eq!(bytes.len() as u64, slice.len);
        let batches = decode_all(&bytes);
        assert!(!batches.is_empty(), "read at {next} returned no batch");
        assert_eq!(batches[0].0.base_offset, slice.first_batch_offset);
        for (header, mut records) in batches {
            assert!(header.next_offset() > next, "read at {next} went backwards");
            assert!(header.next_offset() <= slice.high_watermark);
            records.retain(|r| r.offset >= next);
            next = header.next_offset();
            out.push((header, records));
        }
    }
    Ok(out)
}

/// [`try_read_batches_from`] from the log start; panics if a read fails.
pub async fn read_all(
    log: &PartitionLog,
    max_bytes: u64,
) -> Vec<(BatchHeader, Vec<DecodedRecord>)> {
    let from = log.log_start_offset();
    match try_read_batches_from(log, from, max_bytes).await {
        Ok(batches) => batches,
        Err(err) => panic!("read from {from}: {err}"),
    }
}

/// Every committed record from the log start (see [`read_all`]).
pub async fn read_records(log: &PartitionLog, max_bytes: u64) -> Vec<DecodedRecord> {
    read_all(log, max_bytes)
        .await
        .into_iter()
        .flat_map(|(_, records)| records)
        .collect()
}

/// Environment variable that lets tests needing root or system tools
/// (tmpfs mounts, network namespaces, iptables) skip when set to `1`.
/// Without it such a test *fails* when it cannot run, so a CI machine that
/// lost its privileges does not pass by testing nothing.
pub const SKIP_PRIVILEGED_ENV: &str = "SLUICE_SKIP_PRIVILEGED_TESTS";

/// Whether `value` (the environment variable [`SKIP_PRIVILEGED_ENV`], if
/// set) asks privileged tests to skip: only the explicit `1` does.
pub fn skip_privileged_requested(value: Option<&str>) -> bool {
    value.map(str::trim) == Some("1")
}

/// Called by a test whose privileged prerequisite is missing, before it
/// returns early: prints why it skipped when [`SKIP_PRIVILEGED_ENV`]` = 1`,
/// and otherwise panics (fails the test) naming what is missing and how to
/// skip deliberately.
pub fn privileged_unavailable(test: &str, reason: &str) {
    let value = std::env::var(SKIP_PRIVILEGED_ENV).ok();
    match privileged_verdict(value.as_deref(), test, reason) {
        Ok(skipped) => eprintln!("{skipped}"),
        Err(failure) => panic!("{failure}"),
    }
}

/// What [`privileged_unavailable`] does for the variable's `value`: `Ok`
/// with the line to print when skipping, `Err` with the failure message.
fn privileged_verdict(value: Option<&str>, test: &str, reason: &str) -> Result<String, String> {
    if skip_privileged_requested(value) {
        return Ok(format!(
            "{test}: skipped ({SKIP_PRIVILEGED_ENV}=1): {reason}"
        ));
    }
    Err(format!(
        "{test} cannot run: {reason}. Run the tests as root with the tools \
         installed (tools/test installs them), or set {SKIP_PRIVILEGED_ENV}=1 \
         to skip the privileged tests on purpose"
    ))
}

/// Whether this process runs with an effective user id of 0 (mounts,
/// network namespaces and iptables need it).
#[allow(unsafe_code)]
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A size-capped tmpfs mounted on a fresh directory, for tests of a full
/// disk; unmounted (and the directory removed) on drop.
pub struct SmallTmpfs {
    dir: PathBuf,
    _parent: TempDir,
}

impl SmallTmpfs {
    /// Mounts a `mib` MiB tmpfs. The error says why it could not (not
    /// root, `mount` missing or failing); the caller passes it to
    /// [`privileged_unavailable`].
    pub fn mount(mib: u64) -> Result<SmallTmpfs, String> {
        if !is_root() {
            return Err("mounting a size-capped tmpfs needs root".into());
        }
        let parent = TempDir::new().map_err(|e| format!("temporary directory: {e}"))?;
        let dir = parent.0.join("mnt");
        std::fs::create_dir(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&dir)
            .status()
            .map_err(|e| format!("running mount: {e}"))?;
        if !status.success() {
            return Err(format!("mount -t tmpfs {} failed: {status}", dir.display()));
        }
        Ok(SmallTmpfs {
            dir,
            _parent: parent,
        })
    }

    /// The mount point.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// A new directory under the system temporary directory, removed with its
/// contents on drop (`tempfile` is only a dev-dependency of this crate).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<TempDir> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        loop {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.subsec_nanos());
            let name = format!(
                "shards-test-{}-{}-{nanos}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            let path = std::env::temp_dir().join(name);
            // `create_dir` fails on an existing name, so the directory is
            // ours even in a shared /tmp.
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(TempDir(path)),
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(err) => return Err(err),
            }
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_explicit_1_skips_privileged_tests() {
        assert!(skip_privileged_requested(Some("1")));
        assert!(skip_privileged_requested(Some(" 1\n")));
        for value in [None, Some(""), Some("0"), Some("true"), Some("yes")] {
            assert!(!skip_privileged_requested(value), "{value:?}");
        }
    }

    #[test]
    fn a_missing_privilege_fails_the_test_unless_skipping_was_asked_for() {
        let failure = privileged_verdict(None, "t", "needs root").expect_err("must fail");
        assert!(failure.contains("t cannot run: needs root"), "{failure}");
        assert!(
            failure.contains("SLUICE_SKIP_PRIVILEGED_TESTS=1"),
            "{failure}"
        );
        assert!(privileged_verdict(Some("0"), "t", "needs root").is_err());
        let skipped = privileged_verdict(Some("1"), "t", "needs root").expect("skips");
        assert!(skipped.contains("skipped"), "{skipped}");
    }
}
