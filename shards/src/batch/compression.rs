//! Compressed records: the codec named by a batch's attribute bits 0–2 and
//! the decompression of the records section (everything after the 61-byte
//! header) into one buffer bounded by [`DECOMPRESSED_BATCH_BYTES_MAX`].
//!
//! Kafka producers compress the records of a batch as one stream; the
//! header stays uncompressed and the CRC covers the compressed bytes. The
//! log stores such a batch exactly as it arrived (a Kafka consumer gets it
//! back untouched); only readers of the records decompress, each time.
//!
//! The crates are the ones `kafka-protocol` uses for its compression
//! features, so the workspace builds one of each: `flate2` (gzip, pure-Rust
//! miniz_oxide backend), `snap` (snappy, pure Rust), `lz4` (bindings to the
//! reference liblz4, whose frame format Kafka's v2 batches use) and `zstd`
//! (bindings to the reference libzstd).
//!
//! # Bounded output
//!
//! No decoder is trusted with the size: streaming decoders (gzip, lz4,
//! zstd) are read into a buffer that grows by doubling but never past the
//! limit, and one byte more is asked for at the limit to tell a stream
//! that ends there from a bomb; snappy blocks declare their decompressed
//! length up front, which is checked before the block's buffer exists.
//! zstd's window, which it allocates from the frame header before writing
//! any output, is bounded by [`ZSTD_WINDOW_LOG_MAX`].

use std::fmt;
use std::io::{ErrorKind, Read};

use crate::constants::{DECOMPRESSED_BATCH_BYTES_MAX, ZSTD_WINDOW_LOG_MAX};
use crate::error::DecodeError;

/// Attribute bits 0–2 of a batch: its compression codec.
pub(super) const COMPRESSION_MASK: i16 = 0x07;

/// The compression codec of a batch (attribute bits 0–2; Kafka's codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    /// 0: records stored as they are.
    None,
    /// 1: gzip (RFC 1952).
    Gzip,
    /// 2: snappy, as raw blocks (librdkafka) or xerial-framed blocks (the
    /// Java client).
    Snappy,
    /// 3: the LZ4 frame format.
    Lz4,
    /// 4: zstd.
    Zstd,
}

impl Compression {
    /// The codec of Kafka code `code`; `UnknownCompression` for 5–7 (and
    /// anything wider than the three attribute bits).
    pub fn from_code(code: u8) -> Result<Compression, DecodeError> {
        match code {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Gzip),
            2 => Ok(Compression::Snappy),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            codec => Err(DecodeError::UnknownCompression { codec }),
        }
    }

    /// Kafka's code for the codec: the value of attribute bits 0–2.
    pub fn code(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// Kafka's name of the codec (`compression.type`).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The records section `compressed`, decompressed with `codec` into a new
/// buffer of at most [`DECOMPRESSED_BATCH_BYTES_MAX`] bytes. Errors:
/// `DecompressedTooLarge` past the limit, `BadCompressedRecords` for
/// anything the decoder refuses (corrupt or truncated streams).
/// `Compression::None` returns a copy (callers borrow instead).
pub(super) fn decompress(codec: Compression, compressed: &[u8]) -> Result<Vec<u8>, DecodeError> {
    decompress_with_limit(codec, compressed, DECOMPRESSED_BATCH_BYTES_MAX)
}

/// [`decompress`] with an explicit limit (tests use small ones).
pub(super) fn decompress_with_limit(
    codec: Compression,
    compressed: &[u8],
    limit: usize,
) -> Result<Vec<u8>, DecodeError> {
    let bad = |reason: String| DecodeError::BadCompressedRecords { codec, reason };
    match codec {
        Compression::None => {
            if compressed.len() > limit {
                return Err(too_large(codec, limit));
            }
            Ok(compressed.to_vec())
        }
        // Kafka's Java reader (GZIPInputStream) reads concatenated members
        // as one stream; MultiGzDecoder does the same.
        Compression::Gzip => read_bounded(
            codec,
            flate2::read::MultiGzDecoder::new(compressed),
            compressed.len(),
            limit,
        ),
        Compression::Snappy => snappy(compressed, limit),
        Compression::Lz4 => {
            let mut decoder = lz4::Decoder::new(compressed).map_err(|e| bad(e.to_string()))?;
            let out = read_bounded(codec, &mut decoder, compressed.len(), limit)?;
            // The decoder reports a frame cut short as an early end of
            // stream; `finish` tells the two apart. Bytes after the frame's
            // end mark are ignored, as Kafka's Java reader does.
            decoder
                .finish()
                .1
                .map_err(|_| bad("the LZ4 frame is truncated".to_owned()))?;
            Ok(out)
        }
        Compression::Zstd => {
            let mut decoder =
                zstd::stream::read::Decoder::new(compressed).map_err(|e| bad(e.to_string()))?;
            decoder
                .window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(|e| bad(e.to_string()))?;
            read_bounded(codec, decoder, compressed.len(), limit)
        }
    }
}

fn too_large(codec: Compression, max: usize) -> DecodeError {
    DecodeError::DecompressedTooLarge { codec, max }
}

/// Reads `reader` to its end into a buffer of at most `limit` bytes. The
/// buffer starts at a guess from the input size and doubles, each step
/// capped at the limit, so a bomb costs at most `limit` bytes of memory,
/// never the size it claims.
fn read_bounded(
    codec: Compression,
    mut reader: impl Read,
    input_len: usize,
    limit: usize,
) -> Result<Vec<u8>, DecodeError> {
    // Typical ratios are 2–10×; start at 4× and let doubling do the rest.
    let mut out: Vec<u8> = Vec::with_capacity(input_len.saturating_mul(4).max(64).min(limit));
    let mut filled = 0usize;
    loop {
        if filled == out.len() {
            if filled >= limit {
                // The buffer holds the limit: the stream must end here.
                let mut probe = [0u8; 1];
                return match read_retrying(&mut reader, &mut probe) {
                    Ok(0) => Ok(out),
                    Ok(_) => Err(too_large(codec, limit)),
                    Err(e) => Err(DecodeError::BadCompressedRecords {
                        codec,
                        reason: e.to_string(),
                    }),
                };
            }
            let grow_to = out
                .capacity()
                .max(filled.saturating_mul(2))
                .max(64)
                .min(limit);
            // Exact: `resize` alone may round the capacity up past the limit.
            out.reserve_exact(grow_to - out.len());
            out.resize(grow_to, 0);
        }
        match read_retrying(&mut reader, &mut out[filled..]) {
            Ok(0) => {
                out.truncate(filled);
                return Ok(out);
            }
            Ok(n) => filled += n,
            Err(e) => {
                return Err(DecodeError::BadCompressedRecords {
                    codec,
                    reason: e.to_string(),
                })
            }
        }
    }
}

fn read_retrying(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match reader.read(buf) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// The xerial snappy-java stream header: magic, then version and the
/// oldest compatible version (both i32, not checked: Kafka's reader
/// accepts any).
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_BYTES: usize = 16;

/// Snappy as Kafka clients write it: the Java client wraps raw snappy
/// blocks in xerial framing (the header, then `u32` big-endian length +
/// block, repeated); librdkafka writes one raw block. As in snappy-java,
/// input that does not start with the xerial magic is one raw block.
fn snappy(compressed: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let codec = Compression::Snappy;
    let bad = |reason: &str| DecodeError::BadCompressedRecords {
        codec,
        reason: reason.to_owned(),
    };
    if !compressed.starts_with(XERIAL_MAGIC) {
        let mut out = Vec::new();
        snappy_block(compressed, &mut out, limit)?;
        return Ok(out);
    }
    let mut rest = compressed
        .get(XERIAL_HEADER_BYTES..)
        .ok_or_else(|| bad("xerial header is truncated"))?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let Some((length, after)) = rest.split_first_chunk::<4>() else {
            return Err(bad("xerial block length is truncated"));
        };
        let length = u32::from_be_bytes(*length) as usize;
        let block = after
            .get(..length)
            .ok_or_else(|| bad("xerial block runs past the records"))?;
        snappy_block(block, &mut out, limit)?;
        rest = &after[length..];
    }
    Ok(out)
}

/// Appends one raw snappy block to `out`. The block declares its
/// decompressed length first; it is checked against what is left of the
/// limit before any buffer is made for it.
fn snappy_block(block: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), DecodeError> {
    let codec = Compression::Snappy;
    let bad = |e: snap::Error| DecodeError::BadCompressedRecords {
        codec,
        reason: e.to_string(),
    };
    let len = snap::raw::decompress_len(block).map_err(bad)?;
    let start = out.len();
    if len > limit.saturating_sub(start) {
        return Err(too_large(codec, limit));
    }
    let needed = start + len;
    if needed > out.capacity() {
        // Doubling keeps many small xerial blocks linear; exact, capped
        // at the limit, keeps the buffer within it.
        let grow_to = needed.max(out.capacity().saturating_mul(2)).min(limit);
        out.reserve_exact(grow_to - start);
    }
    out.resize(needed, 0);
    let written = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(bad)?;
    out.truncate(start + written);
    Ok(())
}

/// Compresses `raw` with `codec` onto `out` as Kafka clients would, so that
/// any Kafka reader takes it: gzip as one member, snappy in xerial framing
/// (what Kafka's Java client writes, readable by librdkafka too), an LZ4
/// frame of independent blocks, one zstd frame. Used by compaction to write
/// a cleaned batch with the codec it had. `Compression::None` copies.
pub(super) fn compress(
    codec: Compression,
    raw: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), std::io::Error> {
    use std::io::Write;
    match codec {
        Compression::None => out.extend_from_slice(raw),
        Compression::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            encoder.write_all(raw)?;
            encoder.finish()?;
        }
        Compression::Snappy => {
            out.extend_from_slice(XERIAL_MAGIC);
            // version 1, compatible from version 1 (snappy-java's values).
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            let mut encoder = snap::raw::Encoder::new();
            for chunk in raw.chunks(XERIAL_BLOCK_BYTES) {
                let compressed = encoder
                    .compress_vec(chunk)
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                let length = u32::try_from(compressed.len())
                    .map_err(|_| std::io::Error::other("snappy block too large"))?;
                out.extend_from_slice(&length.to_be_bytes());
                out.extend_from_slice(&compressed);
            }
        }
        Compression::Lz4 => {
            let mut encoder = lz4::EncoderBuilder::new()
                .block_mode(lz4::BlockMode::Independent)
                .build(out)?;
            encoder.write_all(raw)?;
            let (_, result) = encoder.finish();
            result?;
        }
        Compression::Zstd => {
            let mut encoder = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)?;
            encoder.write_all(raw)?;
            encoder.finish()?;
        }
    }
    Ok(())
}

/// Uncompressed bytes per xerial block (snappy-java's default).
const XERIAL_BLOCK_BYTES: usize = 32 << 10;

/// zstd's default level, which Kafka's producers use too.
const ZSTD_LEVEL: i32 = 3;
