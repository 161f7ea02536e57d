//! Support for tests, benches and tools: a shard executor without a whole
//! shard runtime, and a small real filesystem to fill up.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use glommio::{LocalExecutorBuilder, Placement};

use crate::constants::IO_MEMORY_BYTES_DEFAULT;


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
