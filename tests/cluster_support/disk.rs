//! Reads a stopped node's partition straight from its segment files with
//! the storage engine's own batch decoder: what is on disk, independent of
//! any server code path.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use shards::batch::{decode_batch, BatchIter};

use super::checker::ReplicaView;

/// Largest segment file the reader loads (test nodes use 16 MiB segments).
const SEGMENT_READ_BYTES_MAX: u64 = 256 << 20;

/// `<data>/partitions/<stream>-<id>/<partition>`; `None` when this node
/// holds no directory for the stream.
pub fn partition_dir(data_dir: &Path, stream: &str, partition: u32) -> Option<PathBuf> {
    let root = data_dir.join("partitions");
    let entries = std::fs::read_dir(&root).ok()?;
    let mut matches: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.strip_prefix(stream)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    assert!(
        matches.len() <= 1,
        "several directories for stream {stream} in {}: {matches:?}",
        root.display()
    );
    matches.pop().map(|dir| dir.join(partition.to_string()))
}

/// Every record in the partition's segment files, in file order (each file
/// up to its preallocated zeros or first invalid batch).
pub fn read_partition(name: &str, dir: &Path) -> ReplicaView {
    let mut segments: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?;
            let base = name.strip_suffix(".log")?.parse::<u64>().ok()?;
            Some((base, path))
        })
        .collect();
    segments.sort();
    let mut records = Vec::new();
    for (_, path) in segments {
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(
            size <= SEGMENT_READ_BYTES_MAX,
            "{} is {size} bytes, above the reader's limit",
            path.display()
        );
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        for batch in BatchIter::new(&bytes) {
            let Ok((_, raw)) = batch else { break };
            let (_, decoded) = decode_batch(&Bytes::copy_from_slice(raw)).unwrap_or_else(|e| {
                panic!("{}: a CRC-valid batch does not decode: {e}", path.display())
            });
            records.extend(
                decoded
                    .into_iter()
                    .map(|r| (r.offset.0, r.value.map(|v| v.to_vec()).unwrap_or_default())),
            );
        }
    }
    ReplicaView {
        name: name.to_string(),
        records,
        complete: true,
    }
}
