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

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flatbuffers::FlatBufferBuilder;

use super::Shard;
use crate::auth::{Authenticator, Presented, ANONYMOUS_PRINCIPAL, CREDENTIAL_BYTES_MAX};
use crate::cores::{AdminReply, AdminRequest};
use crate::cursor::is_internal_stream;
use crate::model::acl::{AclOperation, AclOperations, AclTable};
use crate::protocol::acl::{decode_acl_rule, encode_acl_rule};
use crate::protocol::body::read_body;
use crate::protocol::error_code::ErrorCode;
use crate::protocol::error_response::ErrorResponse;
use crate::protocol::frame::{Frame, FrameKind};
use crate::protocol::generated::protocol as fb;
use crate::protocol::limits::{
    FRAME_BODY_BYTES_MAX, FRAME_BODY_BYTES_UNAUTHENTICATED_MAX, PROTOCOL_VERSION,
};

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
                if access.allows(principal, op, stream) {
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
    Stream(AclOperation, &'f str),
    AclManagement,
    /// A follower's fetch (`replica_id` set): it reads past the high
    /// watermark and moves the ISR and the high watermark, so only another
    /// node (or a superuser) may send one.
    Node,
}

fn requested(frame: &Frame) -> Needs<'_> {
    fn stream(name: Option<&str>, op: AclOperation) -> Needs<'_> {
        Needs::Stream(op, name.unwrap_or_default())
    }
    let body = &frame.body;
    let needs =
        match frame.kind {
            FrameKind::FetchRequest => read_body::<fb::FetchRequest>(body).map(|r| {
                if r.replica_id() >= 0 {
                    Needs::Node
                } else {
                    stream(r.stream(), AclOperation::Fetch)
                }
            }),
            FrameKind::ListOffsetsRequest => read_body::<fb::ListOffsetsRequest>(body)
                .map(|r| stream(r.stream(), AclOperation::Fetch)),
            FrameKind::SetCursorRequest => read_body::<fb::SetCursorRequest>(body)
                .map(|r| stream(r.stream(), AclOperation::Fetch)),
            FrameKind::FetchCursorRequest => read_body::<fb::FetchCursorRequest>(body)
                .map(|r| stream(r.stream(), AclOperation::Fetch)),
            FrameKind::PublishRequest => read_body::<fb::PublishRequest>(body)
                .map(|r| stream(r.stream(), AclOperation::Publish)),
            FrameKind::CreateStreamRequest => read_body::<fb::CreateStreamRequest>(body)
                .map(|r| stream(r.config().and_then(|c| c.name()), AclOperation::Create)),
            FrameKind::DeleteStreamRequest => read_body::<fb::DeleteStreamRequest>(body)
                .map(|r| stream(r.name(), AclOperation::Delete)),
            // Filtered per stream by the handler.
            FrameKind::MetadataRequest | FrameKind::ClusterStatusRequest => Ok(Needs::Nothing),
            FrameKind::GrantAclRequest
            | FrameKind::RevokeAclRequest
            | FrameKind::ListAclsRequest => Ok(Needs::AclManagement),
            kind if !kind.is_request() => Ok(Needs::Nothing),
            // A request kind without a rule of its own (e.g. between nodes)
            // is for administrators only: new kinds are closed by default.
            _ => Ok(Needs::AclManagement),
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
    let request = read_body::<fb::AuthenticateRequest>(&frame.body)
        .map_err(|e| refuse(ErrorCode::InvalidRequest, &e.to_string(), false))?;
    if request.protocol_version() != PROTOCOL_VERSION {
        return Err(refuse(
            ErrorCode::UnsupportedVersion,
            &format!(
                "protocol version {} is not spoken here; this server speaks {PROTOCOL_VERSION}",
                request.protocol_version()
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
    let mut fbb = FlatBufferBuilder::with_capacity(64);
    let name = fbb.create_string(&principal);
    let root = fb::AuthenticateResponse::create(
        &mut fbb,
        &fb::AuthenticateResponseArgs {
            protocol_version: PROTOCOL_VERSION,
            principal: Some(name),
        },
    );
    fbb.finish(root, None);
    Ok((
        fbb.finished_data().to_vec(),
        Session::Authenticated(principal),
    ))
}

/// The credentials in a request: the token if one is given, else username
/// and password; `None` when neither is complete or one is too long.
fn presented(request: &fb::AuthenticateRequest<'_>) -> Option<Presented> {
    let fits = |s: &str| !s.is_empty() && s.len() <= CREDENTIAL_BYTES_MAX;
    match (request.token(), request.username(), request.password()) {
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

type Answer = Result<Option<(FrameKind, Vec<u8>)>, ErrorResponse>;

/// GrantAcl / RevokeAcl: the rule goes to the control core, which writes it
/// through the metadata leader and answers once this node's shards enforce
/// it.
pub(super) async fn change_acl(shard: &Shard, frame: &Frame) -> Answer {
    let (rule, grant) = match frame.kind {
        FrameKind::GrantAclRequest => (
            read_body::<fb::GrantAclRequest>(&frame.body).map(|r| r.rule()),
            true,
        ),
        _ => (
            read_body::<fb::RevokeAclRequest>(&frame.body).map(|r| r.rule()),
            false,
        ),
    };
    let invalid = |message: String| ErrorResponse::new(ErrorCode::InvalidRequest, message);
    let rule = rule
        .map_err(|e| invalid(e.to_string()))?
        .ok_or_else(|| invalid("ACL request without a rule".into()))?;
    let rule = decode_acl_rule(rule).map_err(invalid)?;
    let request = if grant {
        AdminRequest::GrantAcl(rule)
    } else {
        AdminRequest::RevokeAcl(rule)
    };
    match shard.admin(request).await {
        AdminReply::AclChanged => {
            let mut fbb = FlatBufferBuilder::with_capacity(16);
            let (kind, root) = if grant {
                let root = fb::GrantAclResponse::create(&mut fbb, &fb::GrantAclResponseArgs {});
                (FrameKind::GrantAclResponse, root.as_union_value())
            } else {
                let root = fb::RevokeAclResponse::create(&mut fbb, &fb::RevokeAclResponseArgs {});
                (FrameKind::RevokeAclResponse, root.as_union_value())
            };
            fbb.finish(root, None);
            Ok(Some((kind, fbb.finished_data().to_vec())))
        }
        AdminReply::Error(failure) => Err(ErrorResponse::new(failure.code, failure.message)),
        _ => Err(ErrorResponse::new(
            ErrorCode::Unknown,
            "unexpected ACL answer",
        )),
    }
}

/// ListAcls: the rules as this node's metadata has them.
pub(super) async fn list_acls(shard: &Shard, frame: &Frame) -> Answer {
    let request = read_body::<fb::ListAclsRequest>(&frame.body)
        .map_err(|e| ErrorResponse::new(ErrorCode::InvalidRequest, e.to_string()))?;
    let principal = request
        .principal()
        .filter(|p| !p.is_empty())
        .map(str::to_owned);
    let rules = match shard.admin(AdminRequest::ListAcls { principal }).await {
        AdminReply::Acls(rules) => rules,
        AdminReply::Error(failure) => {
            return Err(ErrorResponse::new(failure.code, failure.message))
        }
        _ => {
            return Err(ErrorResponse::new(
                ErrorCode::Unknown,
                "unexpected ACL answer",
            ))
        }
    };
    let mut fbb = FlatBufferBuilder::with_capacity(256);
    let rules: Vec<_> = rules
        .iter()
        .map(|rule| encode_acl_rule(&mut fbb, rule))
        .collect();
    let rules = fbb.create_vector(&rules);
    let root =
        fb::ListAclsResponse::create(&mut fbb, &fb::ListAclsResponseArgs { rules: Some(rules) });
    fbb.finish(root, None);
    Ok(Some((
        FrameKind::ListAclsResponse,
        fbb.finished_data().to_vec(),
    )))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use shards::types::Offset;

    use super::super::leader_client::{fetch_request, ReplicaFetch};
    use super::*;
    use crate::client::requests::{
        create_stream_request, delete_stream_request, fetch_request as consumer_fetch_request,
        publish_request,
    };
    use crate::client::{FetchStart, StreamConfig};
    use crate::model::nid;

    fn frame(kind: FrameKind, body: Vec<u8>) -> Frame {
        Frame {
            kind,
            correlation_id: 1,
            body: Bytes::from(body),
        }
    }

    /// A follower's fetch, as the replication task sends it.
    fn replica_fetch_body(stream: &str) -> Vec<u8> {
        fetch_request(&ReplicaFetch {
            stream,
            partition: 0,
            offset: Offset::ZERO,
            replica_id: nid(2),
            leader_epoch: 0,
            max_bytes: 0,
            max_wait: Duration::ZERO,
        })
    }

    #[test]
    fn every_request_maps_to_its_operation() {
        let stream = |op, name| Needs::Stream(op, name);
        let cases = [
            (
                frame(
                    FrameKind::FetchRequest,
                    consumer_fetch_request("a", 0, FetchStart::Earliest, 0, 0),
                ),
                stream(AclOperation::Fetch, "a"),
            ),
            (
                frame(
                    FrameKind::PublishRequest,
                    publish_request("b", 0, None, &[]),
                ),
                stream(AclOperation::Publish, "b"),
            ),
            (
                frame(
                    FrameKind::CreateStreamRequest,
                    create_stream_request(&StreamConfig::new("c", "c")),
                ),
                stream(AclOperation::Create, "c"),
            ),
            (
                frame(FrameKind::DeleteStreamRequest, delete_stream_request("d")),
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
