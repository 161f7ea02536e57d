//! Blocking helpers for the small cluster files: atomic replacement and
//! single-record files. Called on tokio's blocking pool, never on the
//! control core's reactor thread.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cluster::error::ClusterError;
use crate::cluster::frame::{self, ReadError, ReadFrame};

/// Suffix of files being written by [`replace_atomically`]. Left-overs of a
/// crash are removed at start-up.
pub const TMP_SUFFIX: &str = ".tmp";

pub fn io_error<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> ClusterError + 'a {
    move |source| ClusterError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Whether a file is only written, or written and made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// tmp + fsync + rename + directory fsync: after return the new content
    /// survives a crash, and a crash at any point leaves the old or the new
    /// content, never a mix.
    Durable,
    /// tmp + rename, no fsync: for hints whose loss or staleness is harmless.
    /// After a crash the file may be old, new, empty or garbage, so readers
    /// must treat a bad record as absent.
    Hint,
}

/// Replaces `path` with `bytes` (see [`Durability`]).
pub fn replace_atomically(
    path: &Path,
    bytes: &[u8],
    durability: Durability,
) -> Result<(), ClusterError> {
    let tmp = tmp_path(path);
    let mut file = File::create(&tmp).map_err(io_error("create", &tmp))?;
    file.write_all(bytes).map_err(io_error("write", &tmp))?;
    if durability == Durability::Durable {
        file.sync_all().map_err(io_error("fsync", &tmp))?;
    }
    drop(file);
    fs::rename(&tmp, path).map_err(io_error("rename", &tmp))?;
    if durability == Durability::Durable {
        sync_parent_dir(path)?;
    }
    Ok(())
}

pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(TMP_SUFFIX);
    path.with_file_name(name)
}

/// fsyncs the directory holding `path`, so a rename or create in it is
/// durable.
pub fn sync_parent_dir(path: &Path) -> Result<(), ClusterError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let handle = File::open(dir).map_err(io_error("open directory", dir))?;
    handle.sync_all().map_err(io_error("fsync directory", dir))
}

/// Writes `value` as a single-frame file.
pub fn write_record<T: Serialize>(
    path: &Path,
    value: &T,
    payload_max: usize,
    durability: Durability,
) -> Result<(), ClusterError> {
    let bytes = frame::encode(value, payload_max).map_err(|e| ClusterError::Corrupt {
        path: path.to_path_buf(),
        position: 0,
        reason: format!("refusing to write: {e}"),
    })?;
    replace_atomically(path, &bytes, durability)
}

/// Reads a single-frame file. `Ok(None)` when it does not exist; a torn,
/// corrupt or undecodable record is an error naming the file.
pub fn read_record<T: DeserializeOwned>(
    path: &Path,
    payload_max: usize,
) -> Result<Option<T>, ClusterError> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("open", path)(e)),
    };
    let corrupt = |reason: String| ClusterError::Corrupt {
        path: path.to_path_buf(),
        position: 0,
        reason,
    };
    let payload = match frame::read_frame(&mut file, payload_max) {
        Ok(ReadFrame::Frame(payload)) => payload,
        Ok(ReadFrame::End) => return Err(corrupt("empty file".into())),
        Ok(ReadFrame::Torn { available }) => {
            return Err(corrupt(format!("torn record ({available} bytes)")))
        }
        Err(ReadError::Corrupt(e)) => return Err(corrupt(e.to_string())),
        Err(ReadError::Io(e)) => return Err(io_error("read", path)(e)),
    };
    frame::decode(&payload)
        .map(Some)
        .map_err(|e| corrupt(e.to_string()))
}

/// Creates `dir` (and parents), makes its entry durable, and removes
/// left-over temporary files.
pub fn prepare_dir(dir: &Path) -> Result<(), ClusterError> {
    fs::create_dir_all(dir).map_err(io_error("create directory", dir))?;
    // Make the directory's own entry durable before files in it count.
    sync_parent_dir(dir)?;
    let entries = fs::read_dir(dir).map_err(io_error("list directory", dir))?;
    for entry in entries {
        let entry = entry.map_err(io_error("list directory", dir))?;
        let path = entry.path();
        if path.to_string_lossy().ends_with(TMP_SUFFIX) {
            tracing::info!(path = %path.display(), "removing left-over temporary file");
            fs::remove_file(&path).map_err(io_error("remove", &path))?;
        }
    }
    Ok(())
}

/// Opens `path` for reading and positional writing.
pub fn open_rw(path: &Path) -> Result<File, ClusterError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_error("open", path))
}
