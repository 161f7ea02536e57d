//! Support for tests, benches and tools: a shard executor without a whole
//! shard runtime, and a small real filesystem to fill up.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use glommio::{LocalExecutorBuilder, Placement};

use crate::constants::IO_MEMORY_BYTES_DEFAULT;

pub mod ports;

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
    /// Mounts a `mib` MiB tmpfs. `None` when not running as root (mounting
    /// needs it) or the mount fails: the caller skips its test then.
    pub fn mount(mib: u64) -> Option<SmallTmpfs> {
        if !is_root() {
            return None;
        }
        let parent = TempDir::new().ok()?;
        let dir = parent.0.join("mnt");
        std::fs::create_dir(&dir).ok()?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&dir)
            .status()
            .ok()?
            .success();
        mounted.then_some(SmallTmpfs {
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
