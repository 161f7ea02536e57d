//! Every limit and fixed size of the wire protocol, each with why it exists
//! and what it costs. `docs/protocol.md` §Limits repeats them for clients.
//!
//! Every length or count read from the network is checked against one of
//! these before anything is allocated for it.

/// Protocol version this build speaks. Sent in `AuthenticateRequest` /
/// `AuthenticateResponse` and `MetadataResponse`. Flatbuffers tables evolve
/// by adding fields, so the version only changes for an incompatible change.
pub const PROTOCOL_VERSION: u16 = 1;

/// Bytes of the frame's length field (`u32`, big-endian).
pub const FRAME_LENGTH_FIELD_BYTES: usize = 4;

/// Bytes counted by the length field before the body: kind (`u8`) +
/// correlation id (`u32`). The smallest legal length field value.
pub const FRAME_LENGTH_MIN: u32 = 5;

/// Bytes of a whole frame header: length + kind + correlation id.
pub const FRAME_HEADER_BYTES: usize = FRAME_LENGTH_FIELD_BYTES + FRAME_LENGTH_MIN as usize;

/// Largest RecordBatch a Publish request may carry: 16 MiB, the storage
/// engine's batch limit (`shards::constants::BATCH_BYTES_MAX`).
pub const PUBLISH_BATCH_BYTES_MAX: usize = 16 << 20;

/// Largest frame body: 16 MiB + 64 KiB, so that a Publish carrying a
/// maximal batch still fits with its stream name and flatbuffer overhead.
/// A connection buffers at most one frame of this size while it arrives, so
/// this times the connection limit bounds the server's read-buffer memory.
pub const FRAME_BODY_BYTES_MAX: usize = PUBLISH_BATCH_BYTES_MAX + (64 << 10);

/// Largest whole frame on the wire: header + body.
pub const FRAME_BYTES_MAX: usize = FRAME_HEADER_BYTES + FRAME_BODY_BYTES_MAX;

/// Largest frame body a server accepts before the connection has
/// authenticated (when authentication is on): 64 KiB. An anonymous peer can
/// make the server buffer no more than this per connection.
pub const FRAME_BODY_BYTES_UNAUTHENTICATED_MAX: usize = 64 << 10;

/// Fetch `max_bytes` used when a request says 0: 1 MiB.
pub const FETCH_BYTES_DEFAULT: u32 = 1 << 20;

/// Cap on a fetch's `max_bytes`, and so on `byte_count`: 32 MiB. A fetch
/// answers at least one whole batch even when it is larger than `max_bytes`
/// (so a consumer always makes progress), and batches are at most 16 MiB,
/// so `byte_count` never exceeds this. A client may refuse a larger
/// `byte_count` as a protocol violation. The server sends these bytes with
/// `sendfile` and buffers none of them; a client buffers at most this much.
pub const FETCH_BYTES_MAX: u32 = 32 << 20;

/// Cap on a fetch's `max_wait_ms`: 30 s. A long-polling fetch holds one
/// waiter on the owning shard; the cap bounds how long it may, and keeps
/// clients from mistaking a dead server for an idle log for long.
pub const FETCH_WAIT_MS_MAX: u32 = 30_000;

/// Largest NATS payload Sluice reads as an envelope or writes as an ack:
/// 64 MiB, the NATS server's hard `max_payload` ceiling. Bounds what one
/// envelope decode may copy.
pub const NATS_PAYLOAD_BYTES_MAX: usize = 64 << 20;

/// Most headers one envelope may carry (the engine's per-record limit,
/// `shards::constants::RECORD_HEADERS_MAX`; the bridge still checks the
/// record's total once NATS headers are added). Bounds the header `Vec`.
pub const ENVELOPE_HEADERS_MAX: usize = 1024;

/// Longest stream name, in bytes.
pub const STREAM_NAME_BYTES_MAX: usize = 255;

/// Deepest table nesting a received flatbuffer may have. The deepest schema
/// path is MetadataResponse → StreamMetadata → StreamConfig (3); the margin
/// leaves room for evolution while bounding the verifier's recursion.
pub const FLATBUFFER_DEPTH_MAX: usize = 16;

/// Most tables a received flatbuffer may hold: 1 Mi, enough for a Metadata
/// response describing every partition of a large cluster. Bounds
/// verification time (a frame is at most 16 MiB anyway).
pub const FLATBUFFER_TABLES_MAX: usize = 1 << 20;

/// A received flatbuffer's "apparent size" (bytes visited with shared
/// substructures counted each time they are referenced) may be at most this
/// many times its real size (plus [`FLATBUFFER_APPARENT_SLACK_BYTES`]).
/// An honest buffer stays below 2×; a crafted one whose tables all point at
/// one large vector is rejected instead of amplifying into a huge copy.
pub const FLATBUFFER_APPARENT_SIZE_FACTOR: usize = 2;

/// Fixed allowance added to the apparent-size bound, for tiny buffers whose
/// shared vtables are a large fraction of their size.
pub const FLATBUFFER_APPARENT_SLACK_BYTES: usize = 4096;
