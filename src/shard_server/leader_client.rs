//! A follower's connection to its partition leader's shard, on the follower's
//! own executor (glommio TCP, no threads): replica Fetch requests and their
//! answers (a `FetchResponse` frame, then `byte_count` raw batch bytes).
//!
//! Everything the leader sends is checked against named limits before
//! anything is allocated; a malformed answer is an error that makes the
//! follower drop the connection and reconnect, never a panic.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use shards::constants::BATCH_BYTES_MAX;
use shards::types::Offset;

use crate::model::NodeId;
use crate::protocol::authenticate::AuthenticateRequest;
use crate::protocol::error_code::ErrorCode;
use crate::protocol::error_response::ErrorResponse;
use crate::protocol::fetch::{FetchRequest, FetchResponse, FetchStart};
use crate::protocol::frame::Frame;
use crate::protocol::frame::{encode_frame, FrameDecoder, FrameKind};
use crate::protocol::limits::FETCH_BYTES_MAX;
use crate::protocol::offset_for_leader_epoch::{EpochAnswer, EpochQuery};
use shards::types::LeaderEpoch;

/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 64 << 10;
/// Most raw bytes a leader may announce after one fetch header: the fetch
/// cap, or one whole batch when a single batch is larger.
pub const REPLICA_FETCH_BYTES_ACCEPTED_MAX: usize = if (FETCH_BYTES_MAX as usize) > BATCH_BYTES_MAX
{
    FETCH_BYTES_MAX as usize
} else {
    BATCH_BYTES_MAX
};

/// Why a replica fetch did not return batches.
#[derive(Debug, thiserror::Error)]
pub enum LeaderClientError {
    #[error("connection to the leader at {addr} failed: {source}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the leader at {addr} closed the connection")]
    Closed { addr: SocketAddr },
    #[error("malformed answer from the leader at {addr}: {reason}")]
    Protocol { addr: SocketAddr, reason: String },
    /// The leader refused the fetch (fenced epoch, not leader, not a
    /// replica, ...), in an `ErrorResponse` or `FetchResponse.error_code`.
    #[error("the leader refused the fetch: {code}: {message}")]
    Refused {
        code: ErrorCode,
        message: String,
        /// Watermarks, when the refusal came in a `FetchResponse`.
        high_watermark: Option<Offset>,
        log_start: Option<Offset>,
    },
}

/// What a follower asks for.
#[derive(Clone, Debug)]
pub struct ReplicaFetch<'a> {
    pub stream: &'a str,
    pub partition: u32,
    pub offset: Offset,
    pub replica_id: NodeId,
    pub leader_epoch: u32,
    pub max_bytes: u32,
    pub max_wait: Duration,
}

impl ReplicaFetch<'_> {
    /// The Fetch request this is on the wire: from `offset`, as replica
    /// `replica_id`, claiming `leader_epoch`.
    pub fn wire(&self) -> FetchRequest<'_> {
        FetchRequest {
            stream: self.stream,
            partition: self.partition,
            start: FetchStart::Offset(self.offset),
            max_bytes: self.max_bytes,
            max_wait_ms: u32::try_from(self.max_wait.as_millis()).unwrap_or(u32::MAX),
            replica_id: Some(self.replica_id),
            current_leader_epoch: Some(LeaderEpoch::from_metadata(self.leader_epoch)),
        }
    }
}

/// What the leader answered: its high watermark and whole batches from
/// `offset` on (possibly none after a long poll).
#[derive(Debug)]
pub struct Fetched {
    pub high_watermark: Offset,
    pub batches: Bytes,
}

pub struct LeaderConnection {
    addr: SocketAddr,
    stream: TcpStream,
    decoder: FrameDecoder,
    input: BytesMut,
    output: BytesMut,
    next_correlation_id: u32,
}

impl LeaderConnection {
    /// Connects to a leader's shard; when the cluster runs with
    /// authentication, presents `node_token` (`[auth] node_token`) first.
    pub async fn connect(
        addr: SocketAddr,
        timeout: Duration,
        node_token: Option<&str>,
    ) -> Result<LeaderConnection, LeaderClientError> {
        let io = |source| LeaderClientError::Io { addr, source };
        let stream = TcpStream::connect_timeout(addr, timeout)
            .await
            .map_err(|e| io(std::io::Error::other(e.to_string())))?;
        let _ = stream.set_nodelay(true);
        let mut connection = LeaderConnection {
            addr,
            stream,
            decoder: FrameDecoder::new(),
            input: BytesMut::with_capacity(READ_CHUNK_BYTES),
            output: BytesMut::with_capacity(256),
            next_correlation_id: 1,
        };
        if let Some(token) = node_token {
            connection.authenticate(token, timeout).await?;
        }
        Ok(connection)
    }

    async fn authenticate(
        &mut self,
        token: &str,
        timeout: Duration,
    ) -> Result<(), LeaderClientError> {
        let body = AuthenticateRequest::token(token).encode();
        let frame = self
            .call(FrameKind::AuthenticateRequest, &body, timeout)
            .await?;
        match frame.kind {
            FrameKind::AuthenticateResponse => Ok(()),
            FrameKind::ErrorResponse => Err(self.refused(&frame)),
            other => Err(self.protocol(format!("unexpected {other:?}"))),
        }
    }

    /// Sends one request frame and reads the answer frame (any raw bytes
    /// after it stay in the input buffer).
    async fn call(
        &mut self,
        kind: FrameKind,
        body: &[u8],
        read_timeout: Duration,
    ) -> Result<Frame, LeaderClientError> {
        let corr = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        self.output.clear();
        encode_frame(kind, corr, body, &mut self.output)
            .map_err(|e| self.protocol(e.to_string()))?;
        let addr = self.addr;
        let _ = self.stream.set_read_timeout(Some(read_timeout));
        self.stream
            .write_all(&self.output)
            .await
            .map_err(|source| LeaderClientError::Io { addr, source })?;
        let frame = loop {
            match self.decoder.decode(&mut self.input) {
                Ok(Some(frame)) => break frame,
                Ok(None) => self.read_more().await?,
                Err(err) => return Err(self.protocol(err.to_string())),
            }
        };
        if frame.correlation_id != corr {
            return Err(self.protocol(format!(
                "answer for request {} while waiting for {corr}",
                frame.correlation_id
            )));
        }
        Ok(frame)
    }

    fn refused(&self, frame: &Frame) -> LeaderClientError {
        match ErrorResponse::decode(&frame.body) {
            Ok(error) => LeaderClientError::Refused {
                code: error.code,
                message: error.message,
                high_watermark: None,
                log_start: None,
            },
            Err(e) => self.protocol(e.to_string()),
        }
    }

    /// One replica fetch. The socket's read timeout is set a little above
    /// the long-poll time, so a leader that stops answering is noticed.
    pub async fn fetch(
        &mut self,
        request: &ReplicaFetch<'_>,
    ) -> Result<Fetched, LeaderClientError> {
        let body = request.wire().encode();
        let frame = self
            .call(
                FrameKind::FetchRequest,
                &body,
                request.max_wait + ANSWER_SLACK,
            )
            .await?;
        match frame.kind {
            FrameKind::ErrorResponse => Err(self.refused(&frame)),
            FrameKind::FetchResponse => self.fetch_answer(&frame.body).await,
            other => Err(self.protocol(format!("unexpected {other:?}"))),
        }
    }

    /// OffsetForLeaderEpoch: where the leader's log ends for the largest
    /// epoch ≤ `query.leader_epoch` it knows (`None`: undefined).
    pub async fn offset_for_leader_epoch(
        &mut self,
        query: &EpochQuery<'_>,
        timeout: Duration,
    ) -> Result<Option<(LeaderEpoch, Offset)>, LeaderClientError> {
        let body = query.encode();
        let frame = self
            .call(FrameKind::OffsetForLeaderEpochRequest, &body, timeout)
            .await?;
        match frame.kind {
            FrameKind::ErrorResponse => Err(self.refused(&frame)),
            FrameKind::OffsetForLeaderEpochResponse => {
                let answer =
                    EpochAnswer::decode(&frame.body).map_err(|e| self.protocol(e.to_string()))?;
                match answer.error {
                    Some(code) => Err(LeaderClientError::Refused {
                        code,
                        message: "OffsetForLeaderEpoch refused".into(),
                        high_watermark: None,
                        log_start: None,
                    }),
                    None => Ok(answer.end),
                }
            }
            other => Err(self.protocol(format!("unexpected {other:?}"))),
        }
    }

    async fn fetch_answer(&mut self, body: &[u8]) -> Result<Fetched, LeaderClientError> {
        let response = FetchResponse::decode(body).map_err(|e| self.protocol(e.to_string()))?;
        if let Some(code) = response.error {
            return Err(LeaderClientError::Refused {
                code,
                message: response.error_message,
                high_watermark: response.high_watermark,
                log_start: response.log_start_offset,
            });
        }
        let (Some(high_watermark), Some(_)) = (response.high_watermark, response.log_start_offset)
        else {
            return Err(self.protocol("negative watermark".into()));
        };
        // u32 → usize: lossless on the 64-bit targets Sluice builds for.
        let byte_count = usize::try_from(response.byte_count).unwrap_or(usize::MAX);
        if byte_count > REPLICA_FETCH_BYTES_ACCEPTED_MAX {
            return Err(self.protocol(format!(
                "{byte_count} bytes announced, limit {REPLICA_FETCH_BYTES_ACCEPTED_MAX}"
            )));
        }
        while self.input.len() < byte_count {
            self.read_more().await?;
        }
        // Handed over, not copied: the next read reallocates `input`.
        let batches = self.input.split_to(byte_count).freeze();
        Ok(Fetched {
            high_watermark,
            batches,
        })
    }

    async fn read_more(&mut self) -> Result<(), LeaderClientError> {
        let start = self.input.len();
        self.input.resize(start + READ_CHUNK_BYTES, 0);
        let read = self.stream.read(&mut self.input[start..]).await;
        let read = match read {
            Ok(read) => read,
            Err(source) => {
                self.input.truncate(start);
                return Err(LeaderClientError::Io {
                    addr: self.addr,
                    source,
                });
            }
        };
        self.input.truncate(start + read);
        if read == 0 {
            return Err(LeaderClientError::Closed { addr: self.addr });
        }
        Ok(())
    }

    fn protocol(&self, reason: String) -> LeaderClientError {
        LeaderClientError::Protocol {
            addr: self.addr,
            reason,
        }
    }
}

/// Time allowed beyond the long poll for the answer to arrive.
const ANSWER_SLACK: Duration = Duration::from_secs(5);
