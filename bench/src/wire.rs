//! The hot-path side of the Sluice TCP protocol (`docs/protocol.md`) for
//! the bench: pipelined Publish requests and Fetch requests whose raw batch
//! bytes land in a reusable buffer.
//!
//! `sluice::client::Client` is the general client (metadata, stream
//! management, shard-aware routing); it decodes every fetched record into
//! owned values and runs one request at a time, which would measure the
//! client rather than the server. This module frames requests itself (with
//! `sluice::protocol`'s header encoder and its request encoders, writing
//! into one reused flatbuffer builder), allows several requests in flight on
//! a connection, and leaves fetched bytes as they came (the caller walks and
//! CRC-checks the batches). Every length the server sends is checked against
//! the protocol limits before anything is allocated for it.

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use flatbuffers::FlatBufferBuilder;
use shards::types::Offset;
use sluice::protocol::error_response::ErrorResponse;
use sluice::protocol::fetch::{FetchRequest, FetchResponse, FetchStart};
use sluice::protocol::frame::{encode_frame_header, FrameKind};
use sluice::protocol::limits::{
    FETCH_BYTES_MAX, FRAME_BODY_BYTES_MAX, FRAME_HEADER_BYTES, FRAME_LENGTH_MIN,
};
use sluice::protocol::publish::{PublishRequest, PublishResponse, PUBLISH_OVERHEAD_BYTES};

/// Read buffer of a connection; raw fetch bytes larger than this bypass it.
const READ_BUFFER_BYTES: usize = 256 << 10;

/// A server answer that is an `ErrorResponse` rather than the expected body.
#[derive(Debug)]
pub struct Refused(pub ErrorResponse);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.0.code, self.0.message)
    }
}

/// The answer to one fetch, its raw bytes left in the caller's buffer.
#[derive(Clone, Copy, Debug)]
pub struct Fetched {
    /// Raw batch bytes now at the start of the buffer.
    pub bytes: usize,
    /// A partition-level error (`OffsetOutOfRange`) carried in the response.
    pub error_code: u16,
}

/// One blocking connection to one shard port. Requests go out through its
/// [`WireSender`], answers come in through its [`WireReceiver`]; the two
/// halves can be split onto two threads so that answers are timed when
/// they arrive, whatever the sending side is doing.
pub struct Wire {
    pub tx: WireSender,
    pub rx: WireReceiver,
}

/// The sending half of a [`Wire`].
pub struct WireSender {
    addr: SocketAddr,
    writer: TcpStream,
    next_correlation_id: u32,
    out: Vec<u8>,
    fbb: FlatBufferBuilder<'static>,
    /// Bytes the builder was created with (it grows by doubling beyond).
    fbb_capacity: usize,
}

/// The receiving half of a [`Wire`].
pub struct WireReceiver {
    addr: SocketAddr,
    reader: BufReader<TcpStream>,
    body: Vec<u8>,
}

impl Wire {
    /// Connects with `io_timeout` as the read and write timeout of every
    /// request (a long-polling fetch should be sent with a wait well below
    /// it).
    pub fn connect(addr: SocketAddr, io_timeout: Duration) -> Result<Wire> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("connect to {addr}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(io_timeout))?;
        stream.set_write_timeout(Some(io_timeout))?;
        let writer = stream.try_clone()?;
        Ok(Wire {
            tx: WireSender {
                addr,
                writer,
                next_correlation_id: 1,
                out: Vec::new(),
                fbb: FlatBufferBuilder::with_capacity(1024),
                fbb_capacity: 1024,
            },
            rx: WireReceiver {
                addr,
                reader: BufReader::with_capacity(READ_BUFFER_BYTES, stream),
                body: Vec::new(),
            },
        })
    }
}

impl WireSender {
    fn take_correlation_id(&mut self) -> u32 {
        let id = self.next_correlation_id;
        self.next_correlation_id = id.checked_add(1).unwrap_or(1);
        id
    }

    /// Writes the finished flatbuffer as one frame of `kind`.
    fn send_built(&mut self, kind: FrameKind) -> Result<u32> {
        let correlation_id = self.take_correlation_id();
        let body = self.fbb.finished_data();
        let header = encode_frame_header(kind, correlation_id, body.len())
            .map_err(|e| anyhow!("{kind}: {e}"))?;
        self.out.clear();
        self.out.extend_from_slice(&header);
        self.out.extend_from_slice(body);
        self.writer
            .write_all(&self.out)
            .with_context(|| format!("send {kind} to {}", self.addr))?;
        Ok(correlation_id)
    }

    /// Sends a Publish of one encoded RecordBatch; returns its correlation
    /// id. The answer is read with [`WireReceiver::recv_publish`], in order.
    pub fn send_publish(&mut self, stream: &str, partition: u32, batch: &[u8]) -> Result<u32> {
        let needed = batch.len() + PUBLISH_OVERHEAD_BYTES;
        if needed > self.fbb_capacity {
            // Grow once to the batch size instead of doubling up to it.
            self.fbb = FlatBufferBuilder::with_capacity(needed);
            self.fbb_capacity = needed;
        }
        PublishRequest {
            stream,
            partition,
            ack_policy: None,
            batch: Some(batch),
        }
        .encode_into(&mut self.fbb);
        self.send_built(FrameKind::PublishRequest)
    }

    /// Sends a Fetch from `offset`.
    pub fn send_fetch(
        &mut self,
        stream: &str,
        partition: u32,
        offset: u64,
        max_bytes: u32,
        max_wait_ms: u32,
    ) -> Result<u32> {
        FetchRequest::consumer(
            stream,
            partition,
            FetchStart::Offset(Offset(offset)),
            max_bytes,
            max_wait_ms,
        )
        .encode_into(&mut self.fbb);
        self.send_built(FrameKind::FetchRequest)
    }
}

impl WireReceiver {
    /// Reads the answer to the publish with `correlation_id`: the offsets
    /// (base, last), or the server's refusal.
    pub fn recv_publish(&mut self, correlation_id: u32) -> Result<Result<(u64, u64), Refused>> {
        match self.recv_answer(FrameKind::PublishRequest, correlation_id)? {
            Err(refused) => Ok(Err(refused)),
            Ok(()) => {
                let response = PublishResponse::decode(&self.body)
                    .map_err(|e| anyhow!("PublishResponse from {}: {e}", self.addr))?;
                Ok(Ok((response.base_offset.0, response.last_offset.0)))
            }
        }
    }

    /// Reads the answer to a fetch: the header, then exactly `byte_count`
    /// raw bytes into `raw` (replacing its contents).
    pub fn recv_fetch(
        &mut self,
        correlation_id: u32,
        raw: &mut Vec<u8>,
    ) -> Result<Result<Fetched, Refused>> {
        if let Err(refused) = self.recv_answer(FrameKind::FetchRequest, correlation_id)? {
            return Ok(Err(refused));
        }
        let response = FetchResponse::decode(&self.body)
            .map_err(|e| anyhow!("FetchResponse from {}: {e}", self.addr))?;
        if response.byte_count > FETCH_BYTES_MAX {
            bail!(
                "fetch from {} announces {} bytes, above the {FETCH_BYTES_MAX} limit",
                self.addr,
                response.byte_count
            );
        }
        let fetched = Fetched {
            // At most FETCH_BYTES_MAX (32 MiB), checked above.
            bytes: response.byte_count as usize,
            error_code: response.error.map_or(0, |code| code.code()),
        };
        raw.resize(fetched.bytes, 0);
        self.reader
            .read_exact(&mut raw[..fetched.bytes])
            .with_context(|| format!("read fetched batches from {}", self.addr))?;
        Ok(Ok(fetched))
    }

    /// Reads one frame, which must answer `request` with `correlation_id`;
    /// its body is left in `self.body`.
    fn recv_answer(
        &mut self,
        request: FrameKind,
        correlation_id: u32,
    ) -> Result<Result<(), Refused>> {
        let mut header = [0u8; FRAME_HEADER_BYTES];
        self.reader
            .read_exact(&mut header)
            .with_context(|| format!("read answer to {request} from {}", self.addr))?;
        let [l0, l1, l2, l3, kind, c0, c1, c2, c3] = header;
        let length = u32::from_be_bytes([l0, l1, l2, l3]);
        let answer_id = u32::from_be_bytes([c0, c1, c2, c3]);
        let body_bytes = length
            .checked_sub(FRAME_LENGTH_MIN)
            .map(|b| b as usize)
            .filter(|b| *b <= FRAME_BODY_BYTES_MAX)
            .ok_or_else(|| anyhow!("frame length {length} from {} is out of range", self.addr))?;
        self.body.resize(body_bytes, 0);
        self.reader
            .read_exact(&mut self.body)
            .with_context(|| format!("read answer to {request} from {}", self.addr))?;
        if kind == FrameKind::ErrorResponse.code()
            && (answer_id == correlation_id || answer_id == 0)
        {
            let error = ErrorResponse::decode(&self.body)
                .map_err(|e| anyhow!("ErrorResponse from {}: {e}", self.addr))?;
            return Ok(Err(Refused(error)));
        }
        let expected = request.response().map(FrameKind::code);
        if Some(kind) != expected || answer_id != correlation_id {
            bail!(
                "{} answered {request} #{correlation_id} with kind {kind:#04x} #{answer_id}",
                self.addr
            );
        }
        Ok(Ok(()))
    }
}
