//! Every limit and default of the engine, in one place, each with the reason
//! it exists and what it costs.

/// Size of the fixed RecordBatch v2 header, from `baseOffset` to
/// `recordsCount` inclusive.
pub const BATCH_HEADER_BYTES: usize = 61;

/// Bytes before `batchLength` ends: `baseOffset` (8) + `batchLength` (4).
/// `batchLength` counts the bytes that follow it.
pub const BATCH_LENGTH_PREFIX_BYTES: usize = 12;

/// Largest batch the engine accepts or will read back (16 MiB). Bounds the
/// memory one append or one recovery step may allocate; a length field above
/// this is treated as corruption, not as a request to allocate.
pub const BATCH_BYTES_MAX: usize = 16 << 20;

/// Most bytes the records section of one compressed batch may decompress
/// to (64 MiB, four times [`BATCH_BYTES_MAX`]). Kafka producers compress
/// whole batches (gzip, snappy, lz4, zstd); every reader of such a batch
/// (validation, decoding, compaction, the server's limits) decompresses
/// the records into one buffer, which this bounds: a decompression bomb
/// (a few KiB expanding to gigabytes) is refused with
/// `DecodeError::DecompressedTooLarge` once it has produced this much,
/// never allocated further. Four times the largest batch leaves room for
/// the 3–10× that text and JSON records compress by, while one decode
/// still holds at most 64 MiB.
pub const DECOMPRESSED_BATCH_BYTES_MAX: usize = 64 << 20;

/// Largest zstd window (log2) a compressed batch may ask the decoder for.
/// zstd allocates its window from the frame header before it produces a
/// byte, so without this bound a frame could make the decoder allocate
/// 2^31 bytes; a window as large as [`DECOMPRESSED_BATCH_BYTES_MAX`] is
/// enough for any frame whose output fits the limit.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 26;

/// Most records in one batch. Bounds the `Vec<Record>` a decode allocates
/// before it has looked at the records themselves.
pub const BATCH_RECORDS_MAX: usize = 1 << 20;

/// Most headers on one record.
pub const RECORD_HEADERS_MAX: usize = 1024;

/// Default size at which the active segment is sealed and a new one begins
/// (1 GiB, like Kafka). Segments are preallocated step by step up to this
/// size (see [`SEGMENT_PREALLOCATE_STEP_BYTES_DEFAULT`]), never all at once.
pub const SEGMENT_BYTES_DEFAULT: u64 = 1 << 30;

/// What a new segment preallocates (`fallocate`) at first (256 KiB). An
/// append that would pass the preallocated end first grows it: doubling
/// from this size while the segment is small, then in whole steps of
/// [`SEGMENT_PREALLOCATE_STEP_BYTES_DEFAULT`]. So an empty partition holds
/// this much of the disk, not a whole segment (1 GiB by default), and a
/// growing one never holds more unwritten space than it has data (or a
/// step). Cost: 1,000 empty partitions hold 250 MiB; a segment reaches
/// 64 MiB after eight extensions.
pub const SEGMENT_PREALLOCATE_FIRST_BYTES: u64 = 256 << 10;

/// Largest step by which the active segment's preallocation grows (64 MiB),
/// and the granularity of its preallocated end once the segment is past
/// it. Preallocating keeps the group commit's `fdatasync` from also having
/// to journal a file-size change and a block allocation with every batch;
/// growing in bounded steps keeps a partition's reservation in proportion
/// to what it stores.
///
/// Chosen by measurement (`sluice-bench publish-direct` 128 B and 16 KiB,
/// `publish-nats` 128 B, against whole-segment preallocation, alternating
/// in one run; `docs/design.md` section 6): 64 MiB steps were within noise
/// of whole segments in every case; 4 and 16 MiB steps were within noise
/// at 16 KiB but had medians 10–16 % lower at 128 B direct (~300 MB/s, an
/// extension every 50 ms at 16 MiB), where each extension holds the write
/// gate for an `fallocate`.
///
/// Cost: each busy partition holds at most one step (64 MiB) of allocated
/// but unwritten space in its active segment, released when the segment
/// is sealed; one `fallocate` per step of appended data (16 per 1 GiB
/// segment).
pub const SEGMENT_PREALLOCATE_STEP_BYTES_DEFAULT: u64 = 64 << 20;

/// Smallest preallocation step a configuration may ask for (one page):
/// below it, every append would need its own `fallocate`.
pub const SEGMENT_PREALLOCATE_STEP_BYTES_MIN: u64 = 4096;

/// Smallest segment size a configuration may ask for (one page; tests and
/// small deployments use it). It holds any small batch (at least a batch
/// header, asserted below), but not necessarily the largest one: a batch
/// larger than the configured segment size is refused with
/// `LogError::BatchTooLarge` instead of rolling, so a roll always makes
/// progress. The default segment size holds the largest batch (asserted
/// below).
pub const SEGMENT_BYTES_MIN: u64 = 4096;

/// Default age after which the active segment is rolled (7 days).
pub const SEGMENT_AGE_MS_DEFAULT: u64 = 7 * 24 * 3600 * 1000;

/// Bytes of log between two offset-index (and time-index) entries. A read
/// scans at most this many bytes of batch headers past an index hit; each
/// entry costs 8 bytes in memory and on disk (4 KiB → 0.2 % overhead).
pub const INDEX_INTERVAL_BYTES_DEFAULT: u64 = 4096;

/// Size of one offset-index entry on disk: relative offset u32 + position u32.
pub const OFFSET_INDEX_ENTRY_BYTES: usize = 8;

/// Size of one time-index entry on disk: timestamp i64 + relative offset u32.
pub const TIME_INDEX_ENTRY_BYTES: usize = 12;

/// Most bytes read at once when scanning batch headers during a lookup (the
/// window is one index interval plus a header, in pages, up to this).
pub const HEADER_SCAN_CHUNK_BYTES: usize = 64 << 10;

/// Bytes read at once by recovery when validating a segment tail.
pub const RECOVERY_READ_CHUNK_BYTES: usize = 1 << 20;

/// Locked memory glommio registers for io_uring buffers. The default
/// (10 MiB) exceeds the 8 MiB RLIMIT_MEMLOCK of common VMs, in which case
/// glommio silently falls back; 2 MiB always registers.
pub const IO_MEMORY_BYTES_DEFAULT: usize = 2 << 20;

/// Capacity of one SPSC ring, in items. A full ring applies back-pressure to
/// its producer; at ~100 bytes per item this bounds a ring's memory.
pub const RING_CAPACITY_DEFAULT: usize = 64 * 1024;

/// Largest segment: positions in the offset index are u32.
pub const SEGMENT_BYTES_MAX: u64 = (1 << 31) - 1;

/// Most memory one compaction's key map (key → latest offset) may use
/// (32 MiB). When it fills, that run compacts only the part of the log the
/// map covers and the next run continues; without the bound a partition
/// with many distinct keys could take the shard's memory.
pub const COMPACTION_KEY_MAP_BYTES_MAX: usize = 32 << 20;

/// What one key-map entry is charged beyond its key bytes: the `Bytes`
/// handle, the offset, the hash-table slot and the allocation header.
pub const COMPACTION_KEY_ENTRY_OVERHEAD_BYTES: usize = 64;

/// Bytes compaction reads from a segment at once (one buffer per run; a
/// batch larger than this is read whole, up to `BATCH_BYTES_MAX`).
pub const COMPACTION_READ_CHUNK_BYTES: usize = 1 << 20;

/// Default period of the maintenance task (retention then compaction).
/// Both are cheap when there is nothing to do: retention looks at segment
/// metadata only, compaction reads the log to build its key map.
pub const MAINTENANCE_INTERVAL_MS_DEFAULT: u64 = 5 * 60 * 1000;

/// Suggested shares for the maintenance task queue: against glommio's
/// default 1000 for the data path, maintenance gets ~5 % of a busy core and
/// all of an idle one.
pub const MAINTENANCE_SHARES_DEFAULT: usize = 50;

/// Shortest period the maintenance task accepts: a zero interval would make
/// it spin through rounds that find nothing to do.
pub const MAINTENANCE_INTERVAL_MS_MIN: u64 = 1;

// How the limits relate, checked at compile time so that changing one
// cannot silently break a promise another one's doc makes.

// A batch header is part of a batch, and the length prefix part of a header.
const _: () = assert!(BATCH_LENGTH_PREFIX_BYTES < BATCH_HEADER_BYTES);
const _: () = assert!(BATCH_HEADER_BYTES <= BATCH_BYTES_MAX);
// The smallest segment holds a batch (of small records), so a log
// configured with it still takes appends.
const _: () = assert!(BATCH_HEADER_BYTES as u64 <= SEGMENT_BYTES_MIN);
// The largest batch fits a segment of the default size and of the largest
// size, so under defaults no valid batch is `BatchTooLarge`.
const _: () = assert!(BATCH_BYTES_MAX as u64 <= SEGMENT_BYTES_DEFAULT);
const _: () = assert!(BATCH_BYTES_MAX as u64 <= SEGMENT_BYTES_MAX);
// Whatever records fit an uncompressed batch also fit a compressed one's
// decompressed records, so compressing never makes a batch unreadable.
const _: () = assert!(BATCH_BYTES_MAX - BATCH_HEADER_BYTES <= DECOMPRESSED_BATCH_BYTES_MAX);
// Record and section lengths are i32 varints in the format.
const _: () = assert!(DECOMPRESSED_BATCH_BYTES_MAX <= i32::MAX as usize);
// zstd's window never needs to exceed the output, and the output is
// bounded by the limit: the window bound is the limit, rounded up.
const _: () = assert!(1usize << ZSTD_WINDOW_LOG_MAX >= DECOMPRESSED_BATCH_BYTES_MAX);
const _: () = assert!(1usize << (ZSTD_WINDOW_LOG_MAX - 1) < DECOMPRESSED_BATCH_BYTES_MAX);
// Segment sizes: the default is a valid configuration.
const _: () = assert!(SEGMENT_BYTES_MIN <= SEGMENT_BYTES_DEFAULT);
const _: () = assert!(SEGMENT_BYTES_DEFAULT <= SEGMENT_BYTES_MAX);
// Positions in the offset index are u32.
const _: () = assert!(SEGMENT_BYTES_MAX <= u32::MAX as u64);
// Relative offsets in the index are u32: a segment rolls before its
// offsets pass u32::MAX less one batch's worth of records.
const _: () = assert!((BATCH_RECORDS_MAX as u64) < u32::MAX as u64);
// Preallocation: first step ≥ the smallest step ≤ the default step ≤ a
// segment, so the doubling from the first step reaches the step.
const _: () = assert!(SEGMENT_PREALLOCATE_STEP_BYTES_MIN <= SEGMENT_PREALLOCATE_FIRST_BYTES);
const _: () = assert!(SEGMENT_PREALLOCATE_FIRST_BYTES <= SEGMENT_PREALLOCATE_STEP_BYTES_DEFAULT);
const _: () = assert!(SEGMENT_PREALLOCATE_STEP_BYTES_DEFAULT <= SEGMENT_BYTES_DEFAULT);
// A header scan window holds at least one index interval plus a header,
// and recovery reads at least one batch header at a time.
const _: () =
    assert!(INDEX_INTERVAL_BYTES_DEFAULT as usize + BATCH_HEADER_BYTES <= HEADER_SCAN_CHUNK_BYTES);
const _: () = assert!(BATCH_HEADER_BYTES <= RECOVERY_READ_CHUNK_BYTES);
// Index entries are whole fields: u32 + u32, and i64 + u32.
const _: () = assert!(OFFSET_INDEX_ENTRY_BYTES == 4 + 4);
const _: () = assert!(TIME_INDEX_ENTRY_BYTES == 8 + 4);
// Compaction's key map holds at least one entry; maintenance has a period.
const _: () = assert!(COMPACTION_KEY_ENTRY_OVERHEAD_BYTES < COMPACTION_KEY_MAP_BYTES_MAX);
const _: () = assert!(MAINTENANCE_INTERVAL_MS_MIN <= MAINTENANCE_INTERVAL_MS_DEFAULT);
