//! One client connection on a shard's port: frames in, answers out, fetch
//! payloads by `sendfile` straight from the segment file.
//!
//! Requests on a connection are handled one at a time, in order (the
//! protocol promises ordered answers). A bad frame gets an `ErrorResponse`
//! and, when the byte stream cannot be resynchronised, the connection is
//! closed; nothing a client sends can take the shard down.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use flatbuffers::FlatBufferBuilder;
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt};
use glommio::net::{TcpListener, TcpStream};
use shards::error::LogError;
use shards::log::PartitionLog;
use shards::types::{LeaderEpoch, Offset, TimestampMs};

use super::access::{self, Session};
use super::limits::{admit_publish_batch, exceeded, next_read_bytes, READ_BUFFER_KEEP_BYTES};
use super::sendfile::send_file_range;
use super::{append_committed, replication, LocalPartition, Lookup, Shard};
use crate::cores::{
    AdminReply, AdminRequest, CommitLevel, MetadataView, PartitionKey, PartitionStatus,
};
use crate::limits::{ConnectionPermit, LimitKind, ANONYMOUS_PRINCIPAL};
use crate::model::{NodeId, NodeInfo, StreamRecord, StreamSpec};
use crate::protocol::body::read_body;
use crate::protocol::error_code::ErrorCode;
use crate::protocol::error_response::ErrorResponse;
use crate::protocol::frame::{encode_frame, Frame, FrameDecoder, FrameError, FrameKind};
use crate::protocol::generated::protocol as fb;
use crate::protocol::limits::{
    FETCH_BYTES_DEFAULT, FETCH_BYTES_MAX, FETCH_WAIT_MS_MAX, PROTOCOL_VERSION,
};
use crate::protocol::offset_for_leader_epoch::{self, EpochAnswer};

/// Back-off after a failed `accept` (e.g. out of file descriptors).
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(10);

pub(super) async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(serve_connection(shard.clone(), stream)).detach();
            }
            Err(err) => {
                tracing::warn!(shard = shard.id.0, error = %err, "accept failed");
                glommio::timer::sleep(ACCEPT_RETRY_DELAY).await;
            }
        }
    }
}

/// Why a connection ends early.
enum Close {
    /// The peer went away or the socket failed.
    Io,
    /// The byte stream is unusable after a bad frame (already answered).
    Protocol,
    /// A response made no progress within the write deadline: the client
    /// stopped reading.
    WriteTimeout,
    /// The client sent nothing for the idle timeout, or did not finish a
    /// started frame within the frame deadline (already answered).
    ReadTimeout,
}

fn write_failed(err: std::io::Error) -> Close {
    if err.kind() == std::io::ErrorKind::TimedOut {
        Close::WriteTimeout
    } else {
        Close::Io
    }
}

async fn serve_connection(shard: Rc<Shard>, mut stream: TcpStream) {
    shard.stats.borrow_mut().connections_total += 1;
    let limits = &shard.settings.limits;
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(limits.write_timeout()));
    let permit = match shard.settings.gate.admit(ANONYMOUS_PRINCIPAL) {
        Ok(permit) => permit,
        Err(kind) => {
            refuse_connection(&shard, &mut stream, kind).await;
            return;
        }
    };
    shard.stats.borrow_mut().connections_open += 1;
    let mut connection = Connection {
        shard: shard.clone(),
        decoder: FrameDecoder::with_body_bytes_max(
            shard
                .access
                .initial_body_bytes_max()
                .min(limits.frame_body_bytes_max),
        ),
        session: shard.access.new_session(),
        input: BytesMut::new(),
        output: BytesMut::new(),
        permit,
    };
    let result = connection.run(&mut stream).await;
    match result {
        Err(Close::Protocol) => shard.stats.borrow_mut().protocol_errors += 1,
        Err(Close::WriteTimeout) => {
            shard.settings.gate.counters.record(LimitKind::WriteTimeout);
            tracing::debug!(shard = shard.id.0, "client stopped reading; connection cut");
        }
        _ => {}
    }
    let _ = stream.close().await;
    drop(connection);
    shard.stats.borrow_mut().connections_open -= 1;
}

/// Answers a connection the gate refused with `LimitExceeded` naming the
/// limit, then closes it.
async fn refuse_connection(shard: &Shard, stream: &mut TcpStream, kind: LimitKind) {
    let detail = match kind {
        LimitKind::Connections => format!(
            "the node holds {} connections, its limit; retry later or raise --max-connections",
            shard.settings.limits.connections_max
        ),
        _ => format!(
            "this principal holds {} connections, its limit",
            shard.settings.limits.connections_per_principal_max
        ),
    };
    // The gate counted the trip already.
    let error = ErrorResponse::new(
        ErrorCode::LimitExceeded,
        format!("{}: {detail}", kind.name()),
    );
    let mut out = BytesMut::new();
    if error.encode(0, &mut out).is_ok() {
        let _ = stream.write_all(&out).await;
    }
    let _ = stream.close().await;
}

struct Connection {
    shard: Rc<Shard>,
    decoder: FrameDecoder,
    /// Who is on the other end (`access.rs`).
    session: Session,
    /// Bytes read and not yet decoded: at most one frame (the decoder
    /// checks its length first) plus the rest of the last read.
    input: BytesMut,
    output: BytesMut,
    /// This connection's place under `connections_max` and its principal's
    /// limit; given back when the connection ends.
    permit: ConnectionPermit,
}

impl Connection {
    async fn run(&mut self, stream: &mut TcpStream) -> Result<(), Close> {
        // When the first byte of the frame being read arrived.
        let mut frame_started: Option<Instant> = None;
        loop {
            match self.decoder.decode(&mut self.input) {
                Ok(Some(frame)) => {
                    frame_started = (!self.input.is_empty()).then(Instant::now);
                    self.handle(stream, frame).await?;
                    self.release_idle_buffers();
                }
                Ok(None) => {
                    if !self.read_more(stream, &mut frame_started).await? {
                        return Ok(());
                    }
                }
                Err(err) => {
                    self.shard.stats.borrow_mut().protocol_errors += 1;
                    if matches!(err, FrameError::TooLarge { .. }) {
                        self.shard
                            .settings
                            .gate
                            .counters
                            .record(LimitKind::FrameBodyBytes);
                    }
                    let response = ErrorResponse::new(err.code(), err.to_string());
                    self.send_error(stream, err.correlation_id(), response)
                        .await?;
                    if err.is_fatal() {
                        return Err(Close::Protocol);
                    }
                }
            }
        }
    }

    /// Reads what the frame being assembled still needs (see
    /// `limits::next_read_bytes`) under the idle timeout (nothing
    /// buffered) or the frame deadline (a frame started). `false` at EOF.
    async fn read_more(
        &mut self,
        stream: &mut TcpStream,
        frame_started: &mut Option<Instant>,
    ) -> Result<bool, Close> {
        let limits = &self.shard.settings.limits;
        // Unauthenticated connections get until their deadline.
        let Some(session_left) = self.session.read_timeout(limits.idle_timeout()) else {
            return Err(self.authentication_deadline_passed());
        };
        let (timeout, kind) = match frame_started {
            None => (session_left, LimitKind::IdleTimeout),
            Some(started) => (
                limits
                    .frame_timeout()
                    .saturating_sub(started.elapsed())
                    .min(session_left),
                LimitKind::FrameTimeout,
            ),
        };
        if timeout.is_zero() {
            return self.read_timed_out(stream, kind).await;
        }
        let _ = stream.set_read_timeout(Some(timeout));
        let want = next_read_bytes(&self.input);
        let filled = self.input.len();
        self.input.resize(filled + want, 0);
        let read = stream.read(&mut self.input[filled..]).await;
        let read = match read {
            Ok(read) => read,
            Err(err) => {
                self.input.truncate(filled);
                if err.kind() == std::io::ErrorKind::TimedOut {
                    if self.session.read_timeout(limits.idle_timeout()).is_none() {
                        return Err(self.authentication_deadline_passed());
                    }
                    return self.read_timed_out(stream, kind).await;
                }
                return Err(Close::Io);
            }
        };
        self.input.truncate(filled + read);
        if read == 0 {
            return Ok(false);
        }
        frame_started.get_or_insert_with(Instant::now);
        Ok(true)
    }

    /// The connection did not authenticate in time (`access.rs`): close.
    fn authentication_deadline_passed(&self) -> Close {
        self.shard.stats.borrow_mut().auth_failures += 1;
        Close::Protocol
    }

    /// Tells the client which deadline passed, then closes.
    async fn read_timed_out(
        &mut self,
        stream: &mut TcpStream,
        kind: LimitKind,
    ) -> Result<bool, Close> {
        let limits = &self.shard.settings.limits;
        let detail = match kind {
            LimitKind::IdleTimeout => format!(
                "no request for {} ms; connection closed",
                limits.idle_timeout_ms
            ),
            _ => format!(
                "a frame was not completed within {} ms of its first byte; connection closed",
                limits.frame_timeout_ms
            ),
        };
        let error = exceeded(&self.shard.settings.gate.counters, kind, &detail);
        self.send_error(stream, 0, error).await?;
        Err(Close::ReadTimeout)
    }

    /// Gives back buffers grown for one large frame or response, so an idle
    /// connection holds only a few hundred bytes.
    fn release_idle_buffers(&mut self) {
        if self.input.is_empty() && self.input.capacity() > READ_BUFFER_KEEP_BYTES {
            self.input = BytesMut::new();
        }
        if self.output.capacity() > READ_BUFFER_KEEP_BYTES {
            self.output = BytesMut::new();
        }
    }

    async fn handle(&mut self, stream: &mut TcpStream, frame: Frame) -> Result<(), Close> {
        let corr = frame.correlation_id;
        if frame.kind == FrameKind::AuthenticateRequest {
            return self.authenticate(stream, &frame).await;
        }
        if let Err(refusal) = self.session.check(&self.shard, &frame) {
            return self.refuse(stream, corr, refusal).await;
        }
        let outcome = match frame.kind {
            FrameKind::FetchRequest => return self.fetch(stream, &frame).await,
            FrameKind::PublishRequest => self.publish(&frame).await,
            FrameKind::ListOffsetsRequest => self.list_offsets(&frame).await,
            FrameKind::OffsetForLeaderEpochRequest => self.offset_for_leader_epoch(&frame),
            FrameKind::MetadataRequest => self.metadata(&frame).await,
            FrameKind::CreateStreamRequest => self.create_stream(&frame).await,
            FrameKind::DeleteStreamRequest => self.delete_stream(&frame).await,
            FrameKind::GrantAclRequest | FrameKind::RevokeAclRequest => {
                access::change_acl(&self.shard, &frame).await
            }
            FrameKind::ListAclsRequest => access::list_acls(&self.shard, &frame).await,
            FrameKind::SetCursorRequest => super::cursors::set_cursor(&self.shard, &frame).await,
            FrameKind::FetchCursorRequest => {
                super::cursors::fetch_cursor(&self.shard, &frame).await
            }
            FrameKind::ClusterStatusRequest => {
                let visible = |name: &str| self.session.may_see(&self.shard, name);
                super::cluster_status::cluster_status(&self.shard, &frame, visible).await
            }
            other => Err(ErrorResponse::new(
                ErrorCode::UnknownKind,
                format!("{other:?} is not a request"),
            )),
        };
        match outcome {
            Ok(Some((kind, body))) => self.send_frame(stream, kind, corr, &body).await,
            Ok(None) => Ok(()),
            Err(error) => {
                self.shard.stats.borrow_mut().protocol_errors += 1;
                self.send_error(stream, corr, error).await
            }
        }
    }

    /// Authenticate: on success the connection takes the principal and the
    /// full frame limit; a refusal may close it.
    async fn authenticate(&mut self, stream: &mut TcpStream, frame: &Frame) -> Result<(), Close> {
        match access::authenticate(&self.shard, frame).await {
            Ok((body, session)) => {
                if let Session::Authenticated(principal) = &session {
                    // The connection now counts against its principal's
                    // connections_per_principal_max.
                    if let Err(kind) = self.permit.rebind(principal) {
                        // The gate counted the trip already.
                        let error = ErrorResponse::new(
                            ErrorCode::LimitExceeded,
                            format!(
                                "{}: principal {principal:?} holds {} connections, its limit",
                                kind.name(),
                                self.shard.settings.limits.connections_per_principal_max
                            ),
                        );
                        self.send_error(stream, frame.correlation_id, error).await?;
                        return Err(Close::Protocol);
                    }
                }
                self.session = session;
                self.decoder
                    .set_body_bytes_max(self.shard.settings.limits.frame_body_bytes_max);
                self.send_frame(
                    stream,
                    FrameKind::AuthenticateResponse,
                    frame.correlation_id,
                    &body,
                )
                .await
            }
            Err(refusal) => self.refuse(stream, frame.correlation_id, refusal).await,
        }
    }

    async fn refuse(
        &mut self,
        stream: &mut TcpStream,
        corr: u32,
        refusal: access::Refusal,
    ) -> Result<(), Close> {
        self.send_error(stream, corr, refusal.error).await?;
        if refusal.close {
            return Err(Close::Protocol);
        }
        Ok(())
    }

    async fn send_frame(
        &mut self,
        stream: &mut TcpStream,
        kind: FrameKind,
        corr: u32,
        body: &[u8],
    ) -> Result<(), Close> {
        self.output.clear();
        if encode_frame(kind, corr, body, &mut self.output).is_err() {
            let error = ErrorResponse::new(ErrorCode::LimitExceeded, "response too large");
            return self.send_error(stream, corr, error).await;
        }
        stream.write_all(&self.output).await.map_err(write_failed)
    }

    async fn send_error(
        &mut self,
        stream: &mut TcpStream,
        corr: u32,
        error: ErrorResponse,
    ) -> Result<(), Close> {
        self.output.clear();
        if error.encode(corr, &mut self.output).is_err() {
            return Err(Close::Protocol);
        }
        stream.write_all(&self.output).await.map_err(write_failed)
    }

    fn local(
        &self,
        stream: Option<&str>,
        partition: i32,
    ) -> Result<Rc<LocalPartition>, ErrorResponse> {
        let stream = stream.unwrap_or_default();
        let partition = u32::try_from(partition)
            .map_err(|_| ErrorResponse::new(ErrorCode::InvalidRequest, "negative partition"))?;
        match self.shard.lookup(stream, partition) {
            Lookup::Local(local) => Ok(local),
            Lookup::Unavailable(failure) => Err(ErrorResponse::new(failure.code, failure.message)),
            Lookup::OtherShard { port } => Err(ErrorResponse {
                code: ErrorCode::WrongShard,
                message: format!("partition {partition} of {stream} is served on port {port}"),
                right_port: Some(port),
            }),
            Lookup::OtherNode => Err(ErrorResponse::new(
                ErrorCode::NotLeader,
                format!(
                    "this node holds no replica of partition {partition} of {stream}: {}",
                    self.shard.leader_hint(stream, partition)
                ),
            )),
            Lookup::PartitionNotFound => Err(ErrorResponse::new(
                ErrorCode::PartitionNotFound,
                format!("stream {stream} has no partition {partition}"),
            )),
            Lookup::StreamNotFound => Err(ErrorResponse::new(
                ErrorCode::StreamNotFound,
                format!("no stream named {stream:?}"),
            )),
        }
    }

    /// Fetch: a `FetchResponse` frame, then exactly `byte_count` bytes of
    /// whole committed batches, sent with `sendfile`.
    async fn fetch(&mut self, stream: &mut TcpStream, frame: &Frame) -> Result<(), Close> {
        let corr = frame.correlation_id;
        let request = match request_body::<fb::FetchRequest>(frame) {
            Ok(request) => request,
            Err(error) => return self.send_error(stream, corr, error).await,
        };
        let local = match self.local(request.stream(), request.partition()) {
            Ok(local) => local,
            Err(error) => return self.send_error(stream, corr, error).await,
        };
        let inflight_max = self.shard.settings.limits.fetch_inflight_bytes_max;
        let max_bytes = match request.max_bytes() {
            0 => FETCH_BYTES_DEFAULT,
            n => n.min(FETCH_BYTES_MAX),
        }
        .min(inflight_max);
        let max_wait =
            Duration::from_millis(u64::from(request.max_wait_ms().min(FETCH_WAIT_MS_MAX)));
        let log = local.log.clone();
        let start = match resolve_start(&log, request.start_kind(), request.start_value()).await {
            Ok(start) => start,
            Err(error) => return self.send_error(stream, corr, error).await,
        };
        // A follower (replica_id = its node id) reads up to the log end;
        // consumers only what is committed.
        let replica = NodeId::from_wire(request.replica_id());
        if let Some(node) = replica {
            let admitted = replication::admit_replica_fetch(
                &self.shard,
                &local,
                node,
                request.current_leader_epoch(),
                start,
            );
            if let Err(error) = admitted {
                return self.send_error(stream, corr, error).await;
            }
        }
        let read = match replica {
            Some(_) => {
                replication::read_for_replica(&log, start, u64::from(max_bytes), max_wait).await
            }
            None => read_with_wait(&log, start, u64::from(max_bytes), max_wait).await,
        };
        let slice = match read {
            Ok(slice) => slice,
            Err(LogError::OffsetOutOfRange { .. }) => {
                let body = fetch_response(
                    ErrorCode::OffsetOutOfRange as u16,
                    Some("offset out of range"),
                    &log,
                    0,
                );
                return self
                    .send_frame(stream, FrameKind::FetchResponse, corr, &body)
                    .await;
            }
            Err(err) => {
                let error = ErrorResponse::new(log_error_code(&err), err.to_string());
                return self.send_error(stream, corr, error).await;
            }
        };
        let byte_count = slice.as_ref().map_or(0, |s| s.len);
        if byte_count > u64::from(inflight_max) {
            // The first batch alone is larger than this connection may have
            // in flight: sending it would break the limit, skipping it would
            // stall the consumer. Say so.
            let error = exceeded(
                &self.shard.settings.gate.counters,
                LimitKind::FetchInflightBytes,
                &format!(
                    "the batch at offset {} is {byte_count} bytes, above this server's {inflight_max}-byte fetch limit",
                    start.0
                ),
            );
            return self.send_error(stream, corr, error).await;
        }
        let body = fetch_response(0, None, &log, byte_count as u32);
        self.send_frame(stream, FrameKind::FetchResponse, corr, &body)
            .await?;
        {
            let mut stats = self.shard.stats.borrow_mut();
            stats.fetches += 1;
            stats.fetch_bytes += byte_count;
        }
        if let Some(slice) = slice {
            let sent = send_file_range(stream, &slice.file, slice.position.0, slice.len).await;
            let mut stats = self.shard.stats.borrow_mut();
            stats.sendfile_bytes += sent.sendfile_bytes;
            stats.copied_bytes += sent.copied_bytes;
            sent.result.map_err(write_failed)?;
        }
        Ok(())
    }

    async fn publish(
        &mut self,
        frame: &Frame,
    ) -> Result<Option<(FrameKind, Vec<u8>)>, ErrorResponse> {
        let request = request_body::<fb::PublishRequest>(frame)?;
        let local = self.local(request.stream(), request.partition())?;
        let batch = request.batch().map(|b| b.bytes()).ok_or_else(|| {
            ErrorResponse::new(ErrorCode::InvalidBatch, "publish without a batch")
        })?;
        // The limits are checked in the walk that validates the batch; the
        // log appends what that walk proved valid without a second one.
        let batch = admit_publish_batch(&self.shard.settings.limits, batch.to_vec()).map_err(
            |(kind, detail)| exceeded(&self.shard.settings.gate.counters, kind, &detail),
        )?;
        use crate::protocol::generated::envelope::AckPolicy;
        let policy = request.ack_policy();
        let quiet = policy == Some(AckPolicy::None);
        // Absent = `all`, like plain NATS messages; `none` needs no ISR.
        let level = match policy {
            Some(AckPolicy::Leader) | Some(AckPolicy::None) => CommitLevel::Leader,
            _ => CommitLevel::All,
        };
        let bytes = batch.as_ref().map_or(0, |b| b.as_bytes().len()) as u64;
        let appended = match append_committed(&self.shard, &local, batch, level).await {
            Ok(appended) => appended,
            Err(failure) => {
                self.shard.stats.borrow_mut().append_errors += 1;
                return Err(ErrorResponse::new(failure.code, failure.message));
            }
        };
        {
            let mut stats = self.shard.stats.borrow_mut();
            stats.appends += 1;
            stats.append_records += appended.last_offset.0 - appended.base_offset.0 + 1;
            stats.append_bytes += bytes;
        }
        if quiet {
            return Ok(None);
        }
        let mut fbb = FlatBufferBuilder::with_capacity(64);
        let root = fb::PublishResponse::create(
            &mut fbb,
            &fb::PublishResponseArgs {
                base_offset: appended.base_offset.0 as i64,
                last_offset: appended.last_offset.0 as i64,
                commit_timestamp_ms: TimestampMs::now().0,
            },
        );
        fbb.finish(root, None);
        Ok(Some((
            FrameKind::PublishResponse,
            fbb.finished_data().to_vec(),
        )))
    }

    async fn list_offsets(
        &mut self,
        frame: &Frame,
    ) -> Result<Option<(FrameKind, Vec<u8>)>, ErrorResponse> {
        let request = request_body::<fb::ListOffsetsRequest>(frame)?;
        let local = self.local(request.stream(), request.partition())?;
        let log = &local.log;
        let (offset, timestamp_ms) = match request.kind() {
            fb::OffsetKind::Earliest => (log.log_start_offset(), -1),
            fb::OffsetKind::Timestamp => {
                let target = TimestampMs(request.timestamp_ms());
                let found = log
                    .record_at_or_after(target)
                    .await
                    .map_err(|e| ErrorResponse::new(log_error_code(&e), e.to_string()))?;
                match found {
                    Some((offset, timestamp)) => (offset, timestamp.0),
                    None => (log.high_watermark(), -1),
                }
            }
            _ => (log.high_watermark(), -1),
        };
        let mut fbb = FlatBufferBuilder::with_capacity(64);
        let root = fb::ListOffsetsResponse::create(
            &mut fbb,
            &fb::ListOffsetsResponseArgs {
                offset: offset.0 as i64,
                timestamp_ms,
            },
        );
        fbb.finish(root, None);
        Ok(Some((
            FrameKind::ListOffsetsResponse,
            fbb.finished_data().to_vec(),
        )))
    }

    /// OffsetForLeaderEpoch (KIP-101): where the asked epoch ended in this
    /// leader's log. Only the partition leader answers, and only a sender
    /// that knows the current epoch: an older one is fenced, a newer one is
    /// told this node's metadata lags.
    fn offset_for_leader_epoch(
        &mut self,
        frame: &Frame,
    ) -> Result<Option<(FrameKind, Vec<u8>)>, ErrorResponse> {
        let request = request_body::<fb::OffsetForLeaderEpochRequest>(frame)?;
        let local = self.local(request.stream(), request.partition())?;
        let answer = match self.shard.entry(&local.stream, local.partition) {
            None => Err(ErrorCode::PartitionNotFound),
            Some(entry) => check_leader_epoch(
                entry.leader == self.shard.local_node(),
                entry.leader_epoch,
                request.current_leader_epoch(),
            )
            .map(|()| {
                local
                    .log
                    .end_offset_for_epoch(LeaderEpoch(request.leader_epoch()))
            }),
        };
        let answer = match answer {
            Ok(end) => EpochAnswer { error: None, end },
            Err(code) => EpochAnswer {
                error: Some(code),
                end: None,
            },
        };
        Ok(Some((
            FrameKind::OffsetForLeaderEpochResponse,
            offset_for_leader_epoch::encode_response(&answer),
        )))
    }

    async fn metadata(
        &mut self,
        frame: &Frame,
    ) -> Result<Option<(FrameKind, Vec<u8>)>, ErrorResponse> {
        let request = request_body::<fb::MetadataRequest>(frame)?;
        let wanted: Option<Vec<String>> = request
            .streams()
            .map(|names| names.iter().map(str::to_string).collect());
        let view = match self.shard.admin(AdminRequest::Metadata).await {
            AdminReply::Metadata(view) => view,
            AdminReply::Error(failure) => {
                return Err(ErrorResponse::new(failure.code, failure.message))
            }
            _ => {
                return Err(ErrorResponse::new(
                    ErrorCode::Unknown,
                    "unexpected metadata answer",
                ))
            }
        };
        let visible = |name: &str| self.session.may_see(&self.shard, name);
        Ok(Some((
            FrameKind::MetadataResponse,
            encode_metadata(&view, wanted.as_deref(), visible),
        )))
    }

    async fn create_stream(
        &mut self,
        frame: &Frame,
    ) -> Result<Option<(FrameKind, Vec<u8>)>, ErrorResponse> {
        let request = request_body::<fb::CreateStreamRequest>(frame)?;
        let config = request.config().ok_or_else(|| {
            ErrorResponse::new(ErrorCode::InvalidRequest, "CreateStream without a config")
        })?;
        let spec = spec_from_wire(&config)?;
        match self.shard.admin(AdminRequest::CreateStream(spec)).await {
            AdminReply::Created {
                record,
                created,
                nodes,
            } => {
                let mut fbb = FlatBufferBuilder::with_capacity(256);
                let own_port = self.shard.settings.base_addr.port();
                let stream = encode_stream(
                    &mut fbb,
                    &record,
                    |node| client_port(&nodes, node).unwrap_or(own_port),
                    &Default::default(),
                );
                let root = fb::CreateStreamResponse::create(
                    &mut fbb,
                    &fb::CreateStreamResponseArgs {
                        created,
                        stream: Some(stream),
                    },
                );
                fbb.finish(root, None);
                Ok(Some((
                    FrameKind::CreateStreamResponse,
                    fbb.finished_data().to_vec(),
                )))
            }
            AdminReply::Error(failure) => Err(ErrorResponse::new(failure.code, failure.message)),
            _ => Err(ErrorResponse::new(
                ErrorCode::Unknown,
                "unexpected create answer",
            )),
        }
    }

    async fn delete_stream(
        &mut self,
        frame: &Frame,
    ) -> Result<Option<(FrameKind, Vec<u8>)>, ErrorResponse> {
        let request = request_body::<fb::DeleteStreamRequest>(frame)?;
        let name = request.name().unwrap_or_default().to_string();
        match self.shard.admin(AdminRequest::DeleteStream(name)).await {
            AdminReply::Deleted(_) => {
                let mut fbb = FlatBufferBuilder::with_capacity(16);
                let root =
                    fb::DeleteStreamResponse::create(&mut fbb, &fb::DeleteStreamResponseArgs {});
                fbb.finish(root, None);
                Ok(Some((
                    FrameKind::DeleteStreamResponse,
                    fbb.finished_data().to_vec(),
                )))
            }
            AdminReply::Error(failure) => Err(ErrorResponse::new(failure.code, failure.message)),
            _ => Err(ErrorResponse::new(
                ErrorCode::Unknown,
                "unexpected delete answer",
            )),
        }
    }
}

/// A request body verified as the table `T`, or the error to answer with.
pub(super) fn request_body<'f, T>(frame: &'f Frame) -> Result<T::Inner, ErrorResponse>
where
    T: 'f + flatbuffers::Follow<'f> + flatbuffers::Verifiable,
{
    read_body::<T>(&frame.body).map_err(|e| ErrorResponse::new(e.code(), e.to_string()))
}

/// Whether this node may answer for the partition's current epoch: it must
/// lead it, and a sender that names an epoch (`current`, -1 = unchecked)
/// must name the current one.
fn check_leader_epoch(is_leader: bool, epoch: u32, current: i32) -> Result<(), ErrorCode> {
    if !is_leader {
        return Err(ErrorCode::NotLeader);
    }
    // A negative epoch means "unchecked".
    let Ok(current) = u32::try_from(current) else {
        return Ok(());
    };
    match current.cmp(&epoch) {
        std::cmp::Ordering::Less => Err(ErrorCode::FencedLeaderEpoch),
        std::cmp::Ordering::Greater => Err(ErrorCode::UnknownLeaderEpoch),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

/// Maps an engine error to the wire code a client can act on.
pub(super) fn log_error_code(err: &LogError) -> ErrorCode {
    match err {
        LogError::InvalidBatch(_)
        | LogError::BatchTooLarge { .. }
        | LogError::NonContiguous { .. } => ErrorCode::InvalidBatch,
        // This node's log already holds a newer epoch than the writer's.
        LogError::EpochRegression { .. } => ErrorCode::FencedLeaderEpoch,
        LogError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        LogError::NoSpace { .. } => ErrorCode::DiskFull,
        LogError::FailStopped { .. } => ErrorCode::PartitionFailed,
        LogError::Closed => ErrorCode::ShuttingDown,
        _ => ErrorCode::Unknown,
    }
}

async fn resolve_start(
    log: &PartitionLog,
    kind: fb::StartKind,
    value: i64,
) -> Result<Offset, ErrorResponse> {
    match kind {
        fb::StartKind::Earliest => Ok(log.log_start_offset()),
        fb::StartKind::Latest => Ok(log.high_watermark()),
        fb::StartKind::Timestamp => {
            let found = log
                .offset_for_timestamp(TimestampMs(value))
                .await
                .map_err(|e| ErrorResponse::new(log_error_code(&e), e.to_string()))?;
            Ok(found.unwrap_or_else(|| log.high_watermark()))
        }
        _ => u64::try_from(value)
            .map(Offset)
            .map_err(|_| ErrorResponse::new(ErrorCode::OffsetOutOfRange, "negative offset")),
    }
}

/// Reads committed batches at `start`; at the head of the log, waits up to
/// `max_wait` for the high watermark to move (long poll).
async fn read_with_wait(
    log: &PartitionLog,
    start: Offset,
    max_bytes: u64,
    max_wait: Duration,
) -> Result<Option<shards::log::ReadSlice>, LogError> {
    if let Some(slice) = log.read(start, max_bytes)? {
        return Ok(Some(slice));
    }
    if max_wait.is_zero() {
        return Ok(None);
    }
    let timer = glommio::timer::sleep(max_wait).fuse();
    let woken = log.wait_for_data(start).fuse();
    futures::pin_mut!(timer, woken);
    futures::select! {
        _ = woken => {},
        _ = timer => {},
    }
    log.read(start, max_bytes)
}

fn fetch_response(
    error_code: u16,
    message: Option<&str>,
    log: &PartitionLog,
    byte_count: u32,
) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(64);
    let error_message = message.map(|m| fbb.create_string(m));
    let root = fb::FetchResponse::create(
        &mut fbb,
        &fb::FetchResponseArgs {
            error_code,
            error_message,
            high_watermark: log.high_watermark().0 as i64,
            log_start_offset: log.log_start_offset().0 as i64,
            byte_count,
        },
    );
    fbb.finish(root, None);
    fbb.finished_data().to_vec()
}

fn positive(value: i64) -> Option<u64> {
    u64::try_from(value).ok().filter(|v| *v > 0)
}

fn spec_from_wire(config: &fb::StreamConfig<'_>) -> Result<StreamSpec, ErrorResponse> {
    let name = config.name().unwrap_or_default();
    let subject = config.subject().unwrap_or_default();
    let mut spec = StreamSpec::new(name, subject);
    spec.group = config.group().filter(|g| !g.is_empty()).map(str::to_string);
    if config.partitions() < 0 || config.replication_factor() < 0 {
        return Err(ErrorResponse::new(
            ErrorCode::InvalidRequest,
            "negative partitions or replication factor",
        ));
    }
    if config.partitions() > 0 {
        spec.partitions = config.partitions() as u32;
    }
    if config.replication_factor() > 0 {
        spec.replication_factor = config.replication_factor() as u32;
    }
    if config.min_insync_replicas() < 0 {
        return Err(ErrorResponse::new(
            ErrorCode::InvalidRequest,
            "negative min_insync_replicas",
        ));
    }
    if config.min_insync_replicas() > 0 {
        spec.min_insync_replicas = config.min_insync_replicas() as u32;
    }
    spec.retention_age_ms = positive(config.retention_age_ms());
    spec.retention_bytes = positive(config.retention_bytes());
    spec.retention_messages = positive(config.retention_messages());
    spec.compact = config.compact();
    Ok(spec)
}

/// The Metadata answer: the streams asked for (all when none are named)
/// that `visible` lets the principal see. A named stream it may not see is
/// answered `NotAuthorized` whether or not it exists, so names do not leak.
fn encode_metadata(
    view: &MetadataView,
    wanted: Option<&[String]>,
    visible: impl Fn(&str) -> bool,
) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(1024);
    // Every registered node; this node from its own settings (it may not be
    // registered yet right after start-up).
    let mut listed: Vec<(NodeId, &str, u16, u32)> =
        vec![(view.node_id, &view.host, view.base_port, view.shard_count)];
    for (id, info) in view.nodes.iter().filter(|(id, _)| **id != view.node_id) {
        if let Some((host, port)) = split_addr(&info.client_addr) {
            listed.push((*id, host, port, info.shard_count));
        }
    }
    let brokers: Vec<_> = listed
        .into_iter()
        .map(|(id, host, port, shards)| {
            let host = fbb.create_string(host);
            fb::Broker::create(
                &mut fbb,
                &fb::BrokerArgs {
                    node_id: id.to_wire(),
                    host: Some(host),
                    port_base: port,
                    shard_count: shards.min(u32::from(u16::MAX)) as u16,
                },
            )
        })
        .collect();
    let brokers = fbb.create_vector(&brokers);
    let mut streams = Vec::new();
    for record in &view.streams {
        if wanted.is_some_and(|names| !names.is_empty() && !names.contains(&record.spec.name)) {
            continue;
        }
        if !visible(&record.spec.name) {
            continue;
        }
        streams.push(encode_stream(
            &mut fbb,
            record,
            |node| client_port(&view.nodes, node).unwrap_or(view.base_port),
            &view.statuses,
        ));
    }
    if let Some(names) = wanted {
        for name in names {
            let error_code = if !visible(name) {
                ErrorCode::NotAuthorized
            } else if !view.streams.iter().any(|r| r.spec.name == *name) {
                ErrorCode::StreamNotFound
            } else {
                continue;
            };
            {
                let name = fbb.create_string(name);
                let config = fb::StreamConfig::create(
                    &mut fbb,
                    &fb::StreamConfigArgs {
                        name: Some(name),
                        ..Default::default()
                    },
                );
                streams.push(fb::StreamMetadata::create(
                    &mut fbb,
                    &fb::StreamMetadataArgs {
                        error_code: error_code as u16,
                        config: Some(config),
                        partitions: None,
                    },
                ));
            }
        }
    }
    let streams = fbb.create_vector(&streams);
    let root = fb::MetadataResponse::create(
        &mut fbb,
        &fb::MetadataResponseArgs {
            protocol_version: PROTOCOL_VERSION,
            cluster_id: None,
            brokers: Some(brokers),
            streams: Some(streams),
        },
    );
    fbb.finish(root, None);
    fbb.finished_data().to_vec()
}

/// `host:port` split, when the port is a number.
fn split_addr(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    Some((host, port.parse().ok()?))
}

/// The base (shard 0) client port node `node` registered.
fn client_port(nodes: &std::collections::BTreeMap<NodeId, NodeInfo>, node: NodeId) -> Option<u16> {
    nodes
        .get(&node)
        .and_then(|info| split_addr(&info.client_addr))
        .map(|(_, port)| port)
}

/// `leader_port` gives a partition leader's base client port: a client
/// reads a partition from its leader at that port + the shard index.
fn encode_stream<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    record: &StreamRecord,
    leader_port: impl Fn(NodeId) -> u16,
    statuses: &std::collections::HashMap<PartitionKey, PartitionStatus>,
) -> flatbuffers::WIPOffset<fb::StreamMetadata<'a>> {
    let spec = &record.spec;
    let mut partitions = Vec::new();
    for assignment in &record.partitions {
        let key = PartitionKey::of(record, assignment.partition);
        let replicas: Vec<i64> = assignment.replicas.iter().map(|n| n.to_wire()).collect();
        let isr: Vec<i64> = assignment.isr.iter().map(|n| n.to_wire()).collect();
        let replicas = fbb.create_vector(&replicas);
        let isr = fbb.create_vector(&isr);
        let status = statuses.get(&key);
        // A partition placed here that could not be opened has no
        // watermarks; its `failure` says why (no time: it is retried).
        let opened = status.filter(|s| s.open_failure.is_none());
        let (hw, start) = opened.map_or((-1, -1), |s| {
            (s.high_watermark.0 as i64, s.log_start.0 as i64)
        });
        let failure = status.and_then(|s| s.failure.as_ref());
        let failed_at_ms = failure.map_or(-1, |f| f.at.0);
        let cause = match status.and_then(|s| s.open_failure.as_ref()) {
            Some(open_failure) => Some(format!("not open: {}", open_failure.message)),
            None => failure.map(|f| f.cause.clone()),
        };
        let failure = cause.map(|cause| fbb.create_string(&cause));
        partitions.push(fb::PartitionMetadata::create(
            fbb,
            &fb::PartitionMetadataArgs {
                partition: assignment.partition as i32,
                leader: assignment.leader.to_wire(),
                leader_epoch: shards::types::LeaderEpoch::from_metadata(assignment.leader_epoch).0,
                shard_index: assignment.shard as u16,
                consumer_port: shards::types::ShardId(assignment.shard)
                    .port(leader_port(assignment.leader))
                    .unwrap_or(u16::MAX),
                replicas: Some(replicas),
                isr: Some(isr),
                high_watermark: hw,
                log_start_offset: start,
                failure,
                failed_at_ms,
            },
        ));
    }
    let name = fbb.create_string(&spec.name);
    let subject = fbb.create_string(&spec.subject);
    let group = spec.group.as_deref().map(|g| fbb.create_string(g));
    let wire_limit = |v: Option<u64>| v.map_or(-1, |v| v.min(i64::MAX as u64) as i64);
    let config = fb::StreamConfig::create(
        fbb,
        &fb::StreamConfigArgs {
            name: Some(name),
            subject: Some(subject),
            group,
            partitions: spec.partitions as i32,
            replication_factor: spec.replication_factor.min(i16::MAX as u32) as i16,
            min_insync_replicas: spec.min_insync_replicas.min(i16::MAX as u32) as i16,
            retention_age_ms: wire_limit(spec.retention_age_ms),
            retention_bytes: wire_limit(spec.retention_bytes),
            retention_messages: wire_limit(spec.retention_messages),
            compact: spec.compact,
            ack_policy: None,
        },
    );
    let partitions = fbb.create_vector(&partitions);
    fb::StreamMetadata::create(
        fbb,
        &fb::StreamMetadataArgs {
            error_code: 0,
            config: Some(config),
            partitions: Some(partitions),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_leader_at_the_current_epoch_answers() {
        assert_eq!(check_leader_epoch(false, 3, 3), Err(ErrorCode::NotLeader));
        assert_eq!(check_leader_epoch(false, 3, -1), Err(ErrorCode::NotLeader));
        assert_eq!(check_leader_epoch(true, 3, 3), Ok(()));
        assert_eq!(check_leader_epoch(true, 3, -1), Ok(()));
        assert_eq!(
            check_leader_epoch(true, 3, 2),
            Err(ErrorCode::FencedLeaderEpoch)
        );
        assert_eq!(
            check_leader_epoch(true, 3, 4),
            Err(ErrorCode::UnknownLeaderEpoch)
        );
    }
}
