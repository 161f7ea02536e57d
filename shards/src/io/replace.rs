//! Replacing a small file (a checkpoint) durably: the new bytes go to
//! `<name>.tmp`, which is fsynced, renamed over `<name>`, and the directory
//! fsynced. Readers see the old file or the new one, never a torn mix.

// Safe code only: the syscalls live in `io` itself.
#![deny(unsafe_code)]

use std::os::unix::io::AsRawFd;
use std::path::Path;

use glommio::io::OpenOptions;

use crate::error::{LogError, LogResult};

/// How [`replace_file`] failed.
#[derive(Debug)]
pub(crate) enum ReplaceError {
    /// Before the rename: the old file is untouched (and the temporary file
    /// removed), so it still says what it said. Typically
    /// [`LogError::NoSpace`].
    NotWritten(LogError),
    /// At or after the rename: which file the directory names is unknown.
    Uncertain(LogError),
}

impl ReplaceError {
    pub(crate) fn into_inner(self) -> LogError {
        match self {
            ReplaceError::NotWritten(err) | ReplaceError::Uncertain(err) => err,
        }
    }
}

impl std::fmt::Display for ReplaceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplaceError::NotWritten(err) | ReplaceError::Uncertain(err) => err.fmt(f),
        }
    }
}

impl From<ReplaceError> for LogError {
    fn from(err: ReplaceError) -> LogError {
        err.into_inner()
    }
}

/// Replaces `dir/name` with `bytes` durably. Only one may run at a time per
/// file (callers hold their log's write gate).
pub(crate) async fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), ReplaceError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    if let Err(err) = write_synced(&tmp, bytes).await {
        if let Err(cleanup) = super::remove_if_exists(&tmp).await {
            tracing::warn!(path = %tmp.display(), error = %cleanup,
                "cannot remove a failed checkpoint");
        }
        return Err(ReplaceError::NotWritten(err));
    }
    glommio::io::rename(&tmp, &path)
        .await
        .map_err(|e| ReplaceError::Uncertain(LogError::glommio("rename checkpoint", &path, e)))?;
    super::sync_directory(dir)
        .await
        .map_err(ReplaceError::Uncertain)
}

async fn write_synced(path: &Path, bytes: &[u8]) -> LogResult<()> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .buffered_open(path)
        .await
        .map_err(|e| LogError::glommio("create checkpoint", path, e))?;
    // A few hundred bytes into the page cache: a plain `pwrite` (io_uring
    // would punt a buffered write to a worker thread); the fsync below goes
    // through io_uring.
    let written = super::fault::check(super::fault::FaultPoint::Write, path)
        .and_then(|()| super::pwrite_all(file.as_raw_fd(), bytes, 0))
        .map_err(|e| LogError::io("write checkpoint", path, e));
    let synced = match written {
        Ok(()) => file
            .fdatasync()
            .await
            .map_err(|e| LogError::glommio("sync checkpoint", path, e)),
        Err(err) => Err(err),
    };
    let _ = file.close().await;
    synced
}
