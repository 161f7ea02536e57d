//! Sluice's native TCP protocol on a shard's port (`docs/protocol.md`):
//! the accept loop, the session loop, and one handler module per request
//! kind.
//!
//! # Layout
//!
//! ```text
//! native/mod.rs        accept loop (this file); ServiceError → ErrorResponse
//! native/session.rs    one connection: framing, auth gate, limits, write-out, dispatch
//! native/fetch.rs      Fetch: FetchResponse frame + sendfile of the slice
//! native/publish.rs    Publish
//! native/list_offsets.rs, native/offset_for_leader_epoch.rs
//! native/metadata.rs   Metadata
//! native/streams.rs    CreateStream, DeleteStream
//! native/cursors.rs    SetCursor, FetchCursor
//! native/acl.rs        GrantAcl, RevokeAcl, ListAcls
//! native/cluster_status.rs
//! ```
//!
//! A handler decodes its request with the typed codec of `crate::protocol`
//! (one per kind), calls the protocol-neutral services of
//! `super::services` (read a slice, append a batch, offsets, metadata
//! view) or `super::cursors` / `Shard::admin`, and encodes the answer with
//! the same codec. Handlers that answer with a frame return an [`Answer`];
//! Fetch writes to the socket itself (header frame, then `sendfile`).
//!
//! # A second wire protocol
//!
//! Kafka (the next issue) plugs in as a sibling module tree,
//! `shard_server/kafka/`, with its own listener per shard (started next to
//! [`accept_loop`] in `run_shard`), its own session loop and codec, and
//! handlers that call the same `services` functions. Nothing in this tree
//! changes for it: the session loop here only knows native frames.

mod acl;
mod cluster_status;
mod cursors;
mod fetch;
mod list_offsets;
mod metadata;
mod offset_for_leader_epoch;
mod publish;
mod session;
mod streams;

use std::rc::Rc;
use std::time::Duration;

use glommio::net::TcpListener;

use super::services::ServiceError;
use super::Shard;
use crate::protocol::error_response::ErrorResponse;
use crate::protocol::frame::FrameKind;

/// Back-off after a failed `accept` (e.g. out of file descriptors).
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(10);

/// What a handler answers: a response frame (kind and body), nothing (a
/// publish with ack policy `None`), or an `ErrorResponse`.
type Answer = Result<Option<(FrameKind, Vec<u8>)>, ErrorResponse>;

/// Accepts connections on the shard's native port for as long as the shard
/// runs; each connection is its own task.
pub(super) async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(session::serve_connection(shard.clone(), stream)).detach();
            }
            Err(err) => {
                tracing::warn!(shard = shard.id.0, error = %err, "accept failed");
                glommio::timer::sleep(ACCEPT_RETRY_DELAY).await;
            }
        }
    }
}

impl From<ServiceError> for ErrorResponse {
    fn from(error: ServiceError) -> ErrorResponse {
        ErrorResponse {
            code: error.code,
            message: error.message,
            right_port: error.right_port,
        }
    }
}
