//! Helpers shared by the integration tests: a deterministic PRNG, content
//! derived from seeds, segment files (the whole-log scan through the public
//! read path is `shards::testing::read_all`).
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};

use shards::batch::{BatchHeader, BatchIter};
use shards::log::{LogConfig, SyncPolicy};

/// Preallocation step of the crash and torn-tail logs: small, so the
/// active segment is extended every few appends and kills and damaged
/// tails land at, before and after step boundaries.
pub const PREALLOCATE_STEP_BYTES: u64 = 4 << 10;

/// A log that syncs every batch, with `segment_bytes` segments
/// preallocated [`PREALLOCATE_STEP_BYTES`] at a time and an index entry
/// every `index_interval_bytes` (the crash and torn-tail tests).
pub fn synced_config(dir: &Path, segment_bytes: u64, index_interval_bytes: u64) -> LogConfig {
    let mut config = LogConfig::new(dir);
    config.segment_bytes = segment_bytes;
    config.index_interval_bytes = index_interval_bytes;
    config.preallocate_step_bytes = PREALLOCATE_STEP_BYTES;
    config.sync = SyncPolicy::EveryBatch;
    config
}

/// Lets the executor run an I/O cycle so the files of a closed log are
/// really closed. glommio closes a dropped file only on its next I/O cycle
/// and `PartitionLog::close` does not close its files itself, so an
/// executor that exits right after `close` leaks every descriptor of the
/// log (three per segment); a test that reopens a log many times runs out.
pub async fn release_closed_files() {
    glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
}

/// SplitMix64: tiny, deterministic, good enough to derive test content.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`; `lo` when the range is empty.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.range(0, 100) < percent
    }
}

/// A hash of several words, for content that must be re-derivable.
pub fn mix(words: &[u64]) -> u64 {
    let mut rng = Rng::new(0x5EED);
    for &word in words {
        rng.0 ^= word;
        rng.next_u64();
    }
    rng.next_u64()
}

/// `len` pseudo-random bytes determined by `seed`.
pub fn fill(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `(base offset, path)` of every `*.log` segment in `dir`, in offset order.
pub fn segment_files(dir: &Path) -> Vec<(u64, PathBuf)> {
    let entries = std::fs::read_dir(dir).expect("list partition directory");
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.expect("directory entry").path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(stem) = name.strip_suffix(".log") else {
            continue;
        };
        if let Ok(base) = stem.parse::<u64>() {
            out.push((base, path));
        }
    }
    out.sort();
    out
}

/// Byte ranges `(position, len, header)` of the valid batches at the start
/// of a segment file's bytes (stops at the preallocated zeros or the first
/// bad batch).
pub fn batch_layout(bytes: &[u8]) -> Vec<(usize, usize, BatchHeader)> {
    let mut out = Vec::new();
    let mut position = 0;
    for item in BatchIter::new(bytes) {
        let Ok((header, raw)) = item else { break };
        out.push((position, raw.len(), header));
        position += raw.len();
    }
    out
}
