//! The native session loop: one client connection on a shard's port.
//! Framing, the authentication gate, the connection and frame limits and
//! the write-out live here; each request kind's handler is its own module
//! beside this one (`super::fetch`, `super::publish`, ...).
//!
//! Requests on a connection are handled one at a time, in order (the
//! protocol promises ordered answers). A bad frame gets an `ErrorResponse`
//! and, when the byte stream cannot be resynchronised, the connection is
//! closed; nothing a client sends can take the shard down.

use std::rc::Rc;
use std::time::Instant;

use bytes::BytesMut;
use futures::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::{acl, cluster_status, cursors, fetch, list_offsets, metadata, offset_for_leader_epoch};
use super::{publish, streams};
use crate::limits::{ConnectionPermit, LimitKind, ANONYMOUS_PRINCIPAL};
use crate::protocol::error_code::ErrorCode;
use crate::protocol::error_response::ErrorResponse;
use crate::protocol::frame::{encode_frame, Frame, FrameDecoder, FrameError, FrameKind};
use crate::shard_server::access::{self, Session};
use crate::shard_server::limits::{exceeded, next_read_bytes, READ_BUFFER_KEEP_BYTES};
use crate::shard_server::Shard;

/// Why a connection ends early.
pub(super) enum Close {
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

pub(super) fn write_failed(err: std::io::Error) -> Close {
    if err.kind() == std::io::ErrorKind::TimedOut {
        Close::WriteTimeout
    } else {
        Close::Io
    }
}

pub(super) async fn serve_connection(shard: Rc<Shard>, mut stream: TcpStream) {
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

pub(super) struct Connection {
    pub(super) shard: Rc<Shard>,
    decoder: FrameDecoder,
    /// Who is on the other end (`access.rs`).
    pub(super) session: Session,
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
        self.send_error(stream, 0, error.into()).await?;
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
        let shard = &self.shard;
        let outcome = match frame.kind {
            FrameKind::FetchRequest => return fetch::fetch(self, stream, &frame).await,
            FrameKind::PublishRequest => publish::publish(shard, &frame).await,
            FrameKind::ListOffsetsRequest => list_offsets::list_offsets(shard, &frame).await,
            FrameKind::OffsetForLeaderEpochRequest => {
                offset_for_leader_epoch::offset_for_leader_epoch(shard, &frame)
            }
            FrameKind::MetadataRequest => {
                let visible = |name: &str| self.session.may_see(shard, name);
                metadata::metadata(shard, &frame, visible).await
            }
            FrameKind::CreateStreamRequest => streams::create_stream(shard, &frame).await,
            FrameKind::DeleteStreamRequest => streams::delete_stream(shard, &frame).await,
            FrameKind::GrantAclRequest | FrameKind::RevokeAclRequest => {
                acl::change_acl(shard, &frame).await
            }
            FrameKind::ListAclsRequest => acl::list_acls(shard, &frame).await,
            FrameKind::SetCursorRequest => cursors::set_cursor(shard, &frame).await,
            FrameKind::FetchCursorRequest => cursors::fetch_cursor(shard, &frame).await,
            FrameKind::ClusterStatusRequest => {
                let visible = |name: &str| self.session.may_see(shard, name);
                cluster_status::cluster_status(shard, &frame, visible).await
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

    pub(super) async fn send_frame(
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

    pub(super) async fn send_error(
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
}
