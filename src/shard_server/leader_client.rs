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
use flatbuffers::FlatBufferBuilder;
use futures::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use shards::constants::BATCH_BYTES_MAX;
use shards::types::Offset;

use crate::model::NodeId;
use crate::protocol::body::read_body;
use crate::protocol::error_code::ErrorCode;
use crate::protocol::error_response::ErrorResponse;
use crate::protocol::frame::Frame;
use crate::protocol::frame::{encode_frame, FrameDecoder, FrameKind};
use crate::protocol::generated::protocol as fb;
use crate::protocol::limits::{FETCH_BYTES_MAX, PROTOCOL_VERSION};
use crate::protocol::offset_for_leader_epoch::{decode_response, encode_request, EpochQuery};
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
        let mut fbb = FlatBufferBuilder::with_capacity(128);
        let token = fbb.create_string(token);
        let root = fb::AuthenticateRequest::create(
            &mut fbb,
            &fb::AuthenticateRequestArgs {
                protocol_version: PROTOCOL_VERSION,
                token: Some(token),
                username: None,
                password: None,
            },
        );
        fbb.finish(root, None);
        let frame = self
            .call(FrameKind::AuthenticateRequest, fbb.finished_data(), timeout)
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
        let body = fetch_request(request);
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
        let body = encode_request(query);
        let frame = self
            .call(FrameKind::OffsetForLeaderEpochRequest, &body, timeout)
            .await?;
        match frame.kind {
            FrameKind::ErrorResponse => Err(self.refused(&frame)),
            FrameKind::OffsetForLeaderEpochResponse => {
                let answer =
                    decode_response(&frame.body).map_err(|e| self.protocol(e.to_string()))?;
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
        let (code, message, hw, start, byte_count) = {
            let response =
                read_body::<fb::FetchResponse>(body).map_err(|e| self.protocol(e.to_string()))?;
            (
                response.error_code(),
                response.error_message().unwrap_or_default().to_string(),
                response.high_watermark(),
                response.log_start_offset(),
                response.byte_count() as usize,
            )
        };
        let offset = |value: i64| u64::try_from(value).ok().map(Offset);
        if let Some(code) = ErrorCode::from_wire(code) {
            return Err(LeaderClientError::Refused {
                code,
                message,
                high_watermark: offset(hw),
                log_start: offset(start),
            });
        }
        let (Some(high_watermark), Some(_)) = (offset(hw), offset(start)) else {
            return Err(self.protocol("negative watermark".into()));
        };
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

pub(super) fn fetch_request(request: &ReplicaFetch<'_>) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(128);
    let stream = fbb.create_string(request.stream);
    let root = fb::FetchRequest::create(
        &mut fbb,
        &fb::FetchRequestArgs {
            stream: Some(stream),
            partition: request.partition.min(i32::MAX as u32) as i32,
            start_kind: fb::StartKind::Offset,
            start_value: request.offset.0.min(i64::MAX as u64) as i64,
            max_bytes: request.max_bytes,
            max_wait_ms: request.max_wait.as_millis().min(u128::from(u32::MAX)) as u32,
            replica_id: request.replica_id.to_wire(),
            current_leader_epoch: LeaderEpoch::from_metadata(request.leader_epoch).0,
        },
    );
    fbb.finish(root, None);
    fbb.finished_data().to_vec()
}
