//! What can go wrong talking to a Sluice server.

use std::io;
use std::net::SocketAddr;

use shards::types::Offset;

use crate::protocol::error_code::ErrorCode;

/// Why a client call failed. Server-side refusals keep the wire
/// [`ErrorCode`] and message; everything else says which address and which
/// step failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `host:port` does not resolve to an address.
    #[error("cannot resolve {addr}: {reason}")]
    Resolve { addr: String, reason: String },
    /// The TCP connection could not be made.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// Reading or writing an established connection failed (the connection
    /// is dropped; the next call reconnects).
    #[error("{op} {addr}: {source}")]
    Io {
        op: &'static str,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// No answer within the I/O timeout (plus the long-poll wait). The
    /// connection is dropped. For a publish the outcome is unknown.
    #[error("no answer from {addr} within {timeout_ms} ms")]
    Timeout { addr: SocketAddr, timeout_ms: u64 },
    /// The server refused the request (`ErrorResponse`, or an error code in
    /// a response body).
    #[error("{code}: {message}")]
    Server {
        code: ErrorCode,
        message: String,
        /// For [`ErrorCode::WrongShard`]: the port that owns the partition.
        right_port: Option<u16>,
    },
    /// A fetch asked for an offset outside `[log_start, high_watermark]`.
    #[error("offset out of range [{log_start}, {high_watermark}]: {message}")]
    OffsetOutOfRange {
        message: String,
        log_start: Offset,
        high_watermark: Offset,
    },
    /// The server sent something the protocol does not allow (a length
    /// above a limit, a body that does not verify, a bad batch, a wrong
    /// correlation id). The connection is dropped.
    #[error("protocol violation from {addr}: {reason}")]
    Protocol { addr: SocketAddr, reason: String },
    /// The caller's request breaks a protocol limit; nothing was sent.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

impl ClientError {
    /// The wire error code, for refusals by the server.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            ClientError::OffsetOutOfRange { .. } => Some(ErrorCode::OffsetOutOfRange),
            _ => None,
        }
    }

    /// Whether the connection this error came from can no longer be used.
    pub(super) fn breaks_connection(&self) -> bool {
        match self {
            ClientError::Io { .. } | ClientError::Timeout { .. } | ClientError::Protocol { .. } => {
                true
            }
            // The server closes the connection after these.
            ClientError::Server { code, .. } => matches!(
                code,
                ErrorCode::BadFrame | ErrorCode::FrameTooLarge | ErrorCode::AuthFailed
            ),
            _ => false,
        }
    }

    /// An I/O error on an established connection, with timeouts told apart.
    pub(super) fn io(
        op: &'static str,
        addr: SocketAddr,
        source: io::Error,
        timeout_ms: u64,
    ) -> Self {
        match source.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                ClientError::Timeout { addr, timeout_ms }
            }
            _ => ClientError::Io { op, addr, source },
        }
    }

    pub(super) fn protocol(addr: SocketAddr, reason: impl ToString) -> Self {
        ClientError::Protocol {
            addr,
            reason: reason.to_string(),
        }
    }
}
