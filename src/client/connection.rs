//! One blocking TCP connection to one port: frames out, frames (and a
//! fetch's raw bytes) in, one request at a time.
//!
//! Every length read from the socket is checked against the protocol limits
//! before a buffer is allocated for it.

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::Bytes;

use super::error::ClientError;
use super::ClientConfig;
use crate::protocol::error_response::ErrorResponse;
use crate::protocol::frame::{encode_frame_header, FrameKind};
use crate::protocol::limits::{FRAME_BODY_BYTES_MAX, FRAME_HEADER_BYTES, FRAME_LENGTH_MIN};

/// Read buffer of a connection: small frames and batch headers come in one
/// `read` each; large bodies bypass it.
const READ_BUFFER_BYTES: usize = 64 << 10;

/// What a request got back.
pub(super) enum Response {
    /// The request's own response kind; the body is verified by the caller.
    Body(Bytes),
    /// An `ErrorResponse` with the request's correlation id.
    Error(ErrorResponse),
}

pub(super) struct Connection {
    addr: SocketAddr,
    reader: BufReader<TcpStream>,
    io_timeout: Duration,
    /// The read timeout currently set on the socket (saves a syscall when
    /// it does not change).
    read_timeout: Duration,
    /// Correlation id of the next request; never 0 (the server's id for
    /// errors not tied to a request).
    next_correlation_id: u32,
}

impl Connection {
    pub(super) fn open(addr: SocketAddr, config: &ClientConfig) -> Result<Connection, ClientError> {
        let connect = |source| ClientError::Connect { addr, source };
        let stream = TcpStream::connect_timeout(&addr, config.connect_timeout).map_err(connect)?;
        stream.set_nodelay(true).map_err(connect)?;
        stream
            .set_write_timeout(Some(config.io_timeout))
            .map_err(connect)?;
        stream
            .set_read_timeout(Some(config.io_timeout))
            .map_err(connect)?;
        Ok(Connection {
            addr,
            reader: BufReader::with_capacity(READ_BUFFER_BYTES, stream),
            io_timeout: config.io_timeout,
            read_timeout: config.io_timeout,
            next_correlation_id: 1,
        })
    }

    pub(super) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends one request and reads its answer. `extra_wait` is added to the
    /// read timeout (a long-polling fetch may legitimately take that long).
    pub(super) fn request(
        &mut self,
        kind: FrameKind,
        body: &[u8],
        extra_wait: Duration,
    ) -> Result<Response, ClientError> {
        debug_assert!(kind.is_request());
        let correlation_id = self.take_correlation_id();
        self.send(kind, correlation_id, body)?;
        self.set_read_timeout(self.io_timeout.saturating_add(extra_wait))?;
        self.receive(kind, correlation_id)
    }

    fn take_correlation_id(&mut self) -> u32 {
        let id = self.next_correlation_id;
        self.next_correlation_id = id.checked_add(1).unwrap_or(1);
        id
    }

    fn send(
        &mut self,
        kind: FrameKind,
        correlation_id: u32,
        body: &[u8],
    ) -> Result<(), ClientError> {
        let header = encode_frame_header(kind, correlation_id, body.len())
            .map_err(|error| ClientError::InvalidRequest(error.to_string()))?;
        let mut frame = Vec::with_capacity(header.len() + body.len());
        frame.extend_from_slice(&header);
        frame.extend_from_slice(body);
        let timeout_ms = duration_ms(self.io_timeout);
        let addr = self.addr;
        self.reader
            .get_mut()
            .write_all(&frame)
            .map_err(|source| ClientError::io("write to", addr, source, timeout_ms))
    }

    fn set_read_timeout(&mut self, timeout: Duration) -> Result<(), ClientError> {
        if timeout != self.read_timeout {
            let addr = self.addr;
            self.reader
                .get_ref()
                .set_read_timeout(Some(timeout))
                .map_err(|source| ClientError::Io {
                    op: "set read timeout on",
                    addr,
                    source,
                })?;
            self.read_timeout = timeout;
        }
        Ok(())
    }

    /// Reads the answer to request `kind` with `correlation_id`.
    fn receive(&mut self, kind: FrameKind, correlation_id: u32) -> Result<Response, ClientError> {
        let (answer_kind, answer_id, body) = self.read_frame()?;
        let expected = kind.response();
        if answer_kind == FrameKind::ErrorResponse as u8 {
            let error = ErrorResponse::decode(&body).map_err(|error| {
                ClientError::protocol(self.addr, format!("bad ErrorResponse: {error}"))
            })?;
            // Id 0: the server could not parse our byte stream and closes.
            if answer_id == correlation_id || answer_id == 0 {
                return Ok(Response::Error(error));
            }
        } else if Some(answer_kind) == expected.map(FrameKind::code) && answer_id == correlation_id
        {
            return Ok(Response::Body(body));
        }
        Err(ClientError::protocol(
            self.addr,
            format!(
                "expected {} with correlation id {correlation_id}, got kind {answer_kind:#04x} with id {answer_id}",
                expected.map_or("a response".to_owned(), |kind| kind.to_string())
            ),
        ))
    }

    /// One frame: (kind byte, correlation id, body).
    fn read_frame(&mut self) -> Result<(u8, u32, Bytes), ClientError> {
        let mut header = [0u8; FRAME_HEADER_BYTES];
        self.read_exact(&mut header, "read from")?;
        let [l0, l1, l2, l3, kind, c0, c1, c2, c3] = header;
        let length = u32::from_be_bytes([l0, l1, l2, l3]);
        let correlation_id = u32::from_be_bytes([c0, c1, c2, c3]);
        let body_bytes = checked_body_bytes(length).ok_or_else(|| {
            ClientError::protocol(
                self.addr,
                format!(
                    "frame length {length} outside [{FRAME_LENGTH_MIN}, {}]",
                    FRAME_BODY_BYTES_MAX + FRAME_LENGTH_MIN as usize
                ),
            )
        })?;
        let mut body = vec![0u8; body_bytes];
        self.read_exact(&mut body, "read from")?;
        Ok((kind, correlation_id, Bytes::from(body)))
    }

    /// Reads exactly `count` raw bytes (a fetch's batches). The caller has
    /// checked `count` against the fetch limit.
    pub(super) fn read_raw(&mut self, count: usize) -> Result<Bytes, ClientError> {
        let mut raw = vec![0u8; count];
        self.read_exact(&mut raw, "read fetched batches from")?;
        Ok(Bytes::from(raw))
    }

    fn read_exact(&mut self, buf: &mut [u8], op: &'static str) -> Result<(), ClientError> {
        let timeout_ms = duration_ms(self.read_timeout);
        let addr = self.addr;
        self.reader
            .read_exact(buf)
            .map_err(|source| ClientError::io(op, addr, source, timeout_ms))
    }
}

/// The body size a frame length field announces, if it is within limits.
fn checked_body_bytes(length: u32) -> Option<usize> {
    let body = usize::try_from(length.checked_sub(FRAME_LENGTH_MIN)?).ok()?;
    (body <= FRAME_BODY_BYTES_MAX).then_some(body)
}

pub(super) fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_lengths_are_checked_before_allocating() {
        assert_eq!(checked_body_bytes(0), None);
        assert_eq!(checked_body_bytes(4), None);
        assert_eq!(checked_body_bytes(5), Some(0));
        let max = FRAME_BODY_BYTES_MAX as u32 + FRAME_LENGTH_MIN;
        assert_eq!(checked_body_bytes(max), Some(FRAME_BODY_BYTES_MAX));
        assert_eq!(checked_body_bytes(max + 1), None);
        assert_eq!(checked_body_bytes(u32::MAX), None);
    }
}
