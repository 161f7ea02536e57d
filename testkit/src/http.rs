//! Just enough HTTP/1.1 for a node's admin port.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{anyhow, Result};

/// `GET path`: (status, body). Connects within 500 ms and reads for at
/// most `read_timeout`.
pub fn http_get_within(
    addr: SocketAddr,
    path: &str,
    read_timeout: Duration,
) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(read_timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow!("bad HTTP answer from {addr}: {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// `GET path` with a 10 s read timeout: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    http_get_within(addr, path, Duration::from_secs(10))
}

/// Whether `GET /healthz` on a node's admin port answers 200 (read for at
/// most `read_timeout`).
pub fn healthz_ok(admin: SocketAddr, read_timeout: Duration) -> bool {
    http_get_within(admin, "/healthz", read_timeout).is_ok_and(|(status, _)| status == 200)
}
