//! The authentication and authorization gate of a shard's connections.
//!
//! When `[auth] enabled`, a connection starts unauthenticated: its frames
//! are limited to [`FRAME_BODY_BYTES_UNAUTHENTICATED_MAX`], and its first
//! request must be `Authenticate`; anything else is answered `AuthRequired`
//! and the connection is closed. Wrong credentials are answered
//! `AuthFailed` after [`AUTH_FAILURE_DELAY`] and the connection is closed,
//! so every guess costs a new connection, a delay and (for passwords) an
//! Argon2 verification, which runs on a blocking thread: other connections
//! of the shard are never held up.
//!
//! A connection that has not authenticated within `[auth]
//! authenticate_timeout_ms` of being accepted is closed.
//!
//! Every request after that is checked against the ACL table the shard got
//! with its partition table ([`ShardAccess::acls`]): a local, lock-free
//! lookup. Superusers (from `sluice.toml`) bypass the ACLs. With
//! authentication off, every connection is `anonymous` and nothing is
//! checked (the behaviour before authentication existed).

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Shard;
use crate::auth::{Authenticator, Presented, ANONYMOUS_PRINCIPAL, CREDENTIAL_BYTES_MAX};
use crate::cursor::is_internal_stream;
use crate::model::acl::{AclOperation, AclOperations, AclTable};
use crate::protocol::authenticate::{AuthenticateRequest, AuthenticateResponse};
use crate::protocol::create_stream::CreateStreamRequest;
use crate::protocol::delete_stream::DeleteStreamRequest;
use crate::protocol::error_code::ErrorCode;
use crate::protocol::error_response::ErrorResponse;
use crate::protocol::fetch::FetchRequest;
use crate::protocol::fetch_cursor::FetchCursorRequest;
use crate::protocol::frame::{Frame, FrameKind};
use crate::protocol::limits::{
    FRAME_BODY_BYTES_MAX, FRAME_BODY_BYTES_UNAUTHENTICATED_MAX, PROTOCOL_VERSION,
};
use crate::protocol::list_offsets::ListOffsetsRequest;
use crate::protocol::publish::PublishRequest;
use crate::protocol::set_cursor::SetCursorRequest;

/// How long a connection waits before hearing `AuthFailed`: slows online
/// guessing without holding up anyone else (it is a timer on the
/// connection's own task).
pub const AUTH_FAILURE_DELAY: Duration = Duration::from_millis(500);
/// Most credential verifications a shard runs at once. An Argon2
/// verification takes ~19 MiB and tens of milliseconds of a blocking
/// thread, so this bounds the memory and threads a flood of logins can take
/// (beyond it: `LimitExceeded`, connection closed).
pub const AUTH_VERIFICATIONS_IN_FLIGHT_MAX: usize = 4;

/// What a shard knows for access decisions: the credentials (from the
/// configuration) and the ACLs (from the metadata, replaced with every
/// partition table).
pub(super) struct ShardAccess {
    authenticator: Arc<Authenticator>,
    acls: RefCell<AclTable>,
    verifications_in_flight: Cell<usize>,
}

impl ShardAccess {
    pub(super) fn new(authenticator: Arc<Authenticator>) -> ShardAccess {
        ShardAccess {
            authenticator,
            acls: RefCell::new(AclTable::default()),
            verifications_in_flight: Cell::new(0),
        }
    }

    pub(super) fn set_acls(&self, acls: AclTable) {
        *self.acls.borrow_mut() = acls;
    }

    /// The frame body limit a new connection starts with.
    pub(super) fn initial_body_bytes_max(&self) -> usize {
        if self.authenticator.is_enabled() {
            FRAME_BODY_BYTES_UNAUTHENTICATED_MAX
        } else {
            FRAME_BODY_BYTES_MAX
        }
    }

    /// The session a new connection starts with.
    pub(super) fn new_session(&self) -> Session {
        if self.authenticator.is_enabled() {
            Session::Unauthenticated {
                deadline: Instant::now() + self.authenticator.authenticate_timeout(),
            }
        } else {
            Session::Authenticated(ANONYMOUS_PRINCIPAL.to_owned())
        }
    }

    /// Whether `principal` may do `op` on `stream`. Internal streams
    /// (`__cursors`, ...) are for superusers only: no pattern grants them,
    /// not even `*` (the server itself reaches them without this gate).
    fn allows(&self, principal: &str, op: AclOperation, stream: &str) -> bool {
        self.operations_on(principal, stream).allows(op)
    }

    /// Everything `principal` may do on `stream`.
    fn operations_on(&self, principal: &str, stream: &str) -> AclOperations {
        if self.is_privileged(principal) {
            return AclOperations::all();
        }
        if is_internal_stream(stream) {
            return AclOperations::NONE;
        }
        self.acls.borrow().operations_on(principal, stream)
    }

    /// Whether `principal` bypasses every check (auth off, a superuser, or
    /// another node).
    fn is_privileged(&self, principal: &str) -> bool {
        !self.authenticator.is_enabled() || self.authenticator.is_superuser(principal)
    }

    /// Whether `principal` may manage ACLs.
    fn may_manage_acls(&self, principal: &str) -> bool {
        self.is_privileged(principal) || self.acls.borrow().is_admin_everywhere(principal)
    }
}

/// Who a connection is.
pub(super) enum Session {
    /// Must authenticate by `deadline`.
    Unauthenticated {
        deadline: Instant,
    },
    Authenticated(String),
}

/// A request the gate refuses, and whether the connection must then close.
pub(super) struct Refusal {
    pub error: ErrorResponse,
    pub close: bool,
}

impl Session {
    /// How long the next socket read may wait: `idle` once authenticated,
    /// else what is left until the authentication deadline (`None` when it
    /// has passed: close the connection).
    pub(super) fn read_timeout(&self, idle: Duration) -> Option<Duration> {
        match self {
            Session::Authenticated(_) => Some(idle),
            Session::Unauthenticated { deadline } => {
                let left = deadline.saturating_duration_since(Instant::now());
                (!left.is_zero()).then_some(left.min(idle))
            }
        }
    }

    /// May this session send this frame? Called for every request but
    /// `Authenticate`. Bodies that do not verify pass (their handler
    /// answers `InvalidRequest`); so do response kinds (`UnknownKind`).
    pub(super) fn check(&self, shard: &Shard, frame: &Frame) -> Result<(), Refusal> {
        let Session::Authenticated(principal) = self else {
            shard.stats.borrow_mut().auth_failures += 1;
            return Err(Refusal {
                error: ErrorResponse::new(
                    ErrorCode::AuthRequired,
                    format!(
                        "{} before Authenticate: this server requires authentication first",
                        frame.kind.table_name()
                    ),
                ),
                close: true,
            });
        };
        let access = &shard.access;
        let allowed = match requested(frame) {
            Needs::Nothing => true,
            Needs::Stream(op, stream) => {
                if access.allows(principal, op, &stream) {
                    true
                } else {
                    return Err(denied(
                        shard,
                        format!("principal {principal:?} may not {op} on stream {stream:?}"),
                    ));
                }
            }
            Needs::AclManagement => access.may_manage_acls(principal),
            Needs::Node => {
                if access.is_privileged(principal) {
                    true
                } else {
                    return Err(denied(
                        shard,
                        format!(
                            "principal {principal:?} may not fetch as a replica: follower fetches are for other nodes (they authenticate with node_token)"
                        ),
                    ));
                }
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(denied(
                shard,
                format!(
                    "principal {principal:?} may not {} (needs admin on stream pattern \"*\")",
                    frame.kind.table_name()
                ),
            ))
        }
    }

    /// Whether Metadata may show `stream` to this session: it may if the
    /// principal may fetch, publish or administer it.
    pub(super) fn may_see(&self, shard: &Shard, stream: &str) -> bool {
        let Session::Authenticated(principal) = self else {
            return false;
        };
        let ops = shard.access.operations_on(principal, stream);
        ops.allows(AclOperation::Fetch) || ops.allows(AclOperation::Publish)
    }
}

fn denied(shard: &Shard, message: String) -> Refusal {
    shard.stats.borrow_mut().authorization_denials += 1;
    Refusal {
        error: ErrorResponse::new(ErrorCode::NotAuthorized, message),
        close: false,
    }
}

/// What a request needs to be allowed.
#[derive(Debug, PartialEq, Eq)]
enum Needs<'f> {
    Nothing,
    /// The operation on the stream named in the request (borrowed from the
    /// frame: no allocation on the data path).
    Stream(AclOperation, Cow<'f, str>),
    AclManagement,
    /// A follower's fetch (`replica_id` set): it reads past the high
    /// watermark and moves the ISR and the high watermark, so only another
    /// node (or a superuser) may send one.
    Node,
}

/// What `frame` needs, from its decoded body. A body that does not decode
/// needs nothing here: its handler answers it (`InvalidRequest`, or
/// `OffsetOutOfRange` for a negative fetch offset) without acting on it.
fn requested(frame: &Frame) -> Needs<'_> {
    let body = &frame.body[..];
    let stream = |op, name| Needs::Stream(op, Cow::Borrowed(name));
    let needs = match frame.kind {
        FrameKind::FetchRequest => FetchRequest::decode(body)
            .map(|r| match r.replica_id {
                Some(_) => Needs::Node,
                None => stream(AclOperation::Fetch, r.stream),
            })
            .ok(),
        FrameKind::ListOffsetsRequest => ListOffsetsRequest::decode(body)
            .map(|r| stream(AclOperation::Fetch, r.stream))
            .ok(),
        FrameKind::SetCursorRequest => SetCursorRequest::decode(body)
            .map(|r| stream(AclOperation::Fetch, r.stream))
            .ok(),
        FrameKind::FetchCursorRequest => FetchCursorRequest::decode(body)
            .map(|r| stream(AclOperation::Fetch, r.stream))
            .ok(),
        FrameKind::PublishRequest => PublishRequest::decode(body)
            .map(|r| stream(AclOperation::Publish, r.stream))
            .ok(),
        // The decoded config owns its name.
        FrameKind::CreateStreamRequest => CreateStreamRequest::decode(body)
            .map(|r| Needs::Stream(AclOperation::Create, Cow::Owned(r.config.name)))
            .ok(),
        FrameKind::DeleteStreamRequest => DeleteStreamRequest::decode(body)
            .map(|r| stream(AclOperation::Delete, r.name))
            .ok(),
        // Filtered per stream by the handler.
        FrameKind::MetadataRequest | FrameKind::ClusterStatusRequest => Some(Needs::Nothing),
        FrameKind::GrantAclRequest | FrameKind::RevokeAclRequest | FrameKind::ListAclsRequest => {
            Some(Needs::AclManagement)
        }
        kind if !kind.is_request() => Some(Needs::Nothing),
        // A request kind without a rule of its own (e.g. between nodes)
        // is for administrators only: new kinds are closed by default.
        _ => Some(Needs::AclManagement),
    };
    needs.unwrap_or(Needs::Nothing)
}

/// Answers an `AuthenticateRequest`: the response body, and the session
/// to continue with; or the refusal (after the failure delay).
pub(super) async fn authenticate(
    shard: &Rc<Shard>,
    frame: &Frame,
) -> Result<(Vec<u8>, Session), Refusal> {
    let refuse = |code, message: &str, close| Refusal {
        error: ErrorResponse::new(code, message),
        close,
    };
    let request = AuthenticateRequest::decode(&frame.body)
        .map_err(|e| refuse(ErrorCode::InvalidRequest, &e.to_string(), false))?;
    if request.protocol_version != PROTOCOL_VERSION {
        return Err(refuse(
            ErrorCode::UnsupportedVersion,
            &format!(
                "protocol version {} is not spoken here; this server speaks {PROTOCOL_VERSION}",
                request.protocol_version
            ),
            false,
        ));
    }
    let access = &shard.access;
    let presented = presented(&request);
    let principal = match presented {
        _ if !access.authenticator.is_enabled() => Some(ANONYMOUS_PRINCIPAL.to_owned()),
        None => None,
        Some(presented) => {
            let in_flight = access.verifications_in_flight.get();
            if in_flight >= AUTH_VERIFICATIONS_IN_FLIGHT_MAX {
                return Err(refuse(
                    ErrorCode::LimitExceeded,
                    &format!(
                        "more than {AUTH_VERIFICATIONS_IN_FLIGHT_MAX} authentications in progress on this shard; retry later"
                    ),
                    true,
                ));
            }
            access.verifications_in_flight.set(in_flight + 1);
            let authenticator = access.authenticator.clone();
            let verified = glommio::executor()
                .spawn_blocking(move || authenticator.verify_blocking(&presented))
                .await;
            access
                .verifications_in_flight
                .set(access.verifications_in_flight.get().saturating_sub(1));
            verified
        }
    };
    let Some(principal) = principal else {
        shard.stats.borrow_mut().auth_failures += 1;
        glommio::timer::sleep(AUTH_FAILURE_DELAY).await;
        return Err(refuse(
            ErrorCode::AuthFailed,
            "authentication failed: unknown token, or wrong username or password",
            true,
        ));
    };
    let body = AuthenticateResponse {
        protocol_version: PROTOCOL_VERSION,
        principal: principal.clone(),
    }
    .encode();
    Ok((body, Session::Authenticated(principal)))
}

/// The credentials in a request: the token if one is given, else username
/// and password; `None` when neither is complete or one is too long.
fn presented(request: &AuthenticateRequest<'_>) -> Option<Presented> {
    let fits = |s: &str| !s.is_empty() && s.len() <= CREDENTIAL_BYTES_MAX;
    match (request.token, request.username, request.password) {
        (Some(token), _, _) if !token.is_empty() => {
            fits(token).then(|| Presented::Token(token.to_owned()))
        }
        (_, Some(username), Some(password)) if fits(username) && fits(password) => {
            Some(Presented::Password {
                username: username.to_owned(),
                password: password.to_owned(),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use shards::types::Offset;

    use super::super::leader_client::ReplicaFetch;
    use super::*;
    use crate::protocol::fetch::FetchStart;
    use crate::protocol::stream_config::StreamConfig;

    fn frame(kind: FrameKind, body: Vec<u8>) -> Frame {
        Frame {
            kind,
            correlation_id: 1,
            body: Bytes::from(body),
        }
    }

    /// A follower's fetch, as the replication task sends it.
    fn replica_fetch_body(stream: &str) -> Vec<u8> {
        ReplicaFetch {
            stream,
            partition: 0,
            offset: Offset::ZERO,
            replica_id: crate::model::nid(2),
            leader_epoch: 0,
            max_bytes: 0,
            max_wait: Duration::ZERO,
        }
        .wire()
        .encode()
    }

    #[test]
    fn every_request_maps_to_its_operation() {
        let stream = |op, name: &'static str| Needs::Stream(op, name.into());
        let cases = [
            (
                frame(
                    FrameKind::FetchRequest,
                    FetchRequest::consumer("a", 0, FetchStart::Earliest, 0, 0).encode(),
                ),
                stream(AclOperation::Fetch, "a"),
            ),
            (
                frame(
                    FrameKind::PublishRequest,
                    PublishRequest {
                        stream: "b",
                        partition: 0,
                        ack_policy: None,
                        batch: Some(&[]),
                    }
                    .encode(),
                ),
                stream(AclOperation::Publish, "b"),
            ),
            (
                frame(
                    FrameKind::CreateStreamRequest,
                    CreateStreamRequest {
                        config: StreamConfig::new("c", "c"),
                    }
                    .encode(),
                ),
                stream(AclOperation::Create, "c"),
            ),
            (
                frame(
                    FrameKind::DeleteStreamRequest,
                    DeleteStreamRequest { name: "d" }.encode(),
                ),
                stream(AclOperation::Delete, "d"),
            ),
            (
                frame(FrameKind::FetchRequest, replica_fetch_body("a")),
                Needs::Node,
            ),
            (
                frame(FrameKind::MetadataRequest, Vec::new()),
                Needs::Nothing,
            ),
            (
                frame(FrameKind::GrantAclRequest, Vec::new()),
                Needs::AclManagement,
            ),
            (
                frame(FrameKind::ListAclsRequest, Vec::new()),
                Needs::AclManagement,
            ),
            // A body that does not verify is left to its handler
            // (InvalidRequest), which reads nothing from it.
            (
                frame(FrameKind::FetchRequest, vec![0xff; 3]),
                Needs::Nothing,
            ),
            // Responses sent as requests are answered UnknownKind.
            (frame(FrameKind::FetchResponse, Vec::new()), Needs::Nothing),
        ];
        for (frame, expected) in cases {
            assert_eq!(requested(&frame), expected, "{}", frame.kind);
        }
    }

    #[test]
    fn superusers_bypass_acls_and_internal_streams_need_one() {
        use crate::auth::AuthFileConfig;
        use crate::model::acl::AclRules;
        let section: AuthFileConfig = toml::from_str(
            r#"
            enabled = true
            superusers = ["root"]
            tokens = [{ token = "0123456789abcdef", principal = "root" }]
            "#,
        )
        .unwrap();
        let access = ShardAccess::new(Arc::new(Authenticator::from_config(&section).unwrap()));
        let mut rules = AclRules::new();
        rules
            .entry("alice".into())
            .or_default()
            .insert("*".into(), AclOperations::of([AclOperation::Fetch]));
        access.set_acls(AclTable::from_rules(&rules));
        assert!(access.allows("alice", AclOperation::Fetch, "orders"));
        assert!(!access.allows("alice", AclOperation::Publish, "orders"));
        assert!(
            !access.allows("alice", AclOperation::Fetch, "__cursors"),
            "'*' must not reach internal streams"
        );
        assert!(access.allows("root", AclOperation::Delete, "__cursors"));
        assert!(
            !access.is_privileged("alice"),
            "follower fetches are not hers"
        );
        assert!(access.is_privileged("root"));
        assert!(!access.may_manage_acls("alice"));
        assert!(access.may_manage_acls("root"));
        // Authentication off: everything goes.
        let open = ShardAccess::new(Arc::new(Authenticator::disabled()));
        assert!(open.allows("anonymous", AclOperation::Admin, "__cursors"));
        assert_eq!(open.initial_body_bytes_max(), FRAME_BODY_BYTES_MAX);
        assert_eq!(
            access.initial_body_bytes_max(),
            FRAME_BODY_BYTES_UNAUTHENTICATED_MAX
        );
    }

    #[test]
    fn unauthenticated_sessions_read_until_their_deadline_only() {
        let idle = Duration::from_secs(300);
        let session = Session::Unauthenticated {
            deadline: Instant::now() + Duration::from_secs(5),
        };
        let left = session.read_timeout(idle).expect("time left");
        assert!(left <= Duration::from_secs(5) && left > Duration::from_secs(1));
        let expired = Session::Unauthenticated {
            deadline: Instant::now(),
        };
        assert_eq!(expired.read_timeout(idle), None);
        let authenticated = Session::Authenticated("alice".into());
        assert_eq!(authenticated.read_timeout(idle), Some(idle));
    }
}
