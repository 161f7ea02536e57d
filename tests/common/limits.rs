//! Support for the resource-limit tests: the server's memory from /proc,
//! raw sockets that speak just enough of the protocol to misbehave, and
//! reading the one error frame a refused client gets.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use shards::types::Offset;
use sluice::protocol::error_response::ErrorResponse;
use sluice::protocol::fetch::{FetchRequest, FetchStart};
use sluice::protocol::frame::{encode_frame, FrameKind};

/// Resident memory of process `pid` in KiB (`VmRSS` of /proc/PID/status).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc status")
}

/// An `ErrorResponse` as read off a socket.
#[derive(Debug)]
pub struct WireError {
    pub correlation_id: u32,
    pub code: u16,
    pub message: String,
}

/// Reads frames until an `ErrorResponse` arrives (skipping other frames
/// and any raw fetch bytes is not supported: use on connections that only
/// expect an error). `None` on EOF, reset or `wait` passing first.
pub fn read_error(stream: &mut TcpStream, wait: Duration) -> Option<WireError> {
    stream.set_read_timeout(Some(wait)).expect("read timeout");
    let mut header = [0u8; 9];
    stream.read_exact(&mut header).ok()?;
    let length = u32::from_be_bytes(header[..4].try_into().ok()?) as usize;
    let mut body = vec![0u8; length.checked_sub(5)?];
    stream.read_exact(&mut body).ok()?;
    if header[4] != FrameKind::ErrorResponse.code() {
        return None;
    }
    let error = ErrorResponse::decode(&body).ok()?;
    Some(WireError {
        correlation_id: u32::from_be_bytes(header[5..9].try_into().ok()?),
        code: error.code.code(),
        message: error.message,
    })
}

/// Whether the server closed `stream` within `wait` (reads until EOF or a
/// reset, discarding what arrives).
pub fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut sink = vec![0u8; 1 << 16];
    while Instant::now() < deadline {
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        match stream.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

/// One frame of `kind` with correlation id `correlation_id`.
pub fn frame(kind: FrameKind, correlation_id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_frame(kind, correlation_id, body, &mut out).expect("encode frame");
    out.to_vec()
}

/// A FetchRequest body: `stream`/0 from `offset`, up to `max_bytes`.
pub fn fetch_body(stream: &str, offset: u64, max_bytes: u32) -> Vec<u8> {
    FetchRequest::consumer(stream, 0, FetchStart::Offset(Offset(offset)), max_bytes, 0).encode()
}

/// A connected raw socket to `addr`.
pub fn raw(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// Sends `bytes`, ignoring failure (the server may already have cut us).
pub fn send(stream: &mut TcpStream, bytes: &[u8]) {
    let _ = stream.write_all(bytes);
}
