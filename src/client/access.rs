//! Authentication and ACL management from the client side.
//!
//! Authentication is per connection, and the client keeps one connection
//! per port, so [`Client::authenticate`] remembers the credentials and every
//! connection the client opens later (another shard's port, a reconnect)
//! authenticates first, before its first request.

use std::fmt;

use bytes::Bytes;
use flatbuffers::FlatBufferBuilder;

use super::connection::{Connection, Response};
use super::{Client, ClientError};
use crate::model::acl::AclRule;
use crate::protocol::acl::{decode_acl_rule, encode_acl_rule};
use crate::protocol::body::read_body;
use crate::protocol::frame::FrameKind;
use crate::protocol::generated::protocol as fb;
use crate::protocol::limits::PROTOCOL_VERSION;

/// What a client authenticates with. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Token(String),
    UserPassword { username: String, password: String },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Token(_) => f.write_str("Token(<redacted>)"),
            Credentials::UserPassword { username, .. } => f
                .debug_struct("UserPassword")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
        }
    }
}

impl Client {
    /// Authenticates as the owner of `credentials` and returns the principal
    /// the server knows them as. Every connection this client opens from
    /// now on authenticates with them too. A server without authentication
    /// answers `anonymous`; wrong credentials fail with
    /// [`ErrorCode::AuthFailed`](crate::protocol::error_code::ErrorCode::AuthFailed).
    pub fn authenticate(&mut self, credentials: Credentials) -> Result<String, ClientError> {
        // Connections opened before now are unauthenticated: start over.
        self.connections.clear();
        self.credentials = Some(credentials);
        let addr = self.bootstrap;
        let result = self.connection(addr).map(|_| ());
        match result {
            Ok(()) => Ok(self.principal.clone().unwrap_or_default()),
            Err(error) => {
                self.credentials = None;
                Err(error)
            }
        }
    }

    /// The principal the last [`Client::authenticate`] got, if any.
    pub fn principal(&self) -> Option<&str> {
        self.principal.as_deref()
    }

    /// Adds `rule.operations` to the rule (principal, stream pattern),
    /// creating it. Needs `admin` on `*` or a superuser.
    pub fn grant_acl(&mut self, rule: &AclRule) -> Result<(), ClientError> {
        let body = rule_request(rule, true);
        self.call(
            self.bootstrap,
            FrameKind::GrantAclRequest,
            &body,
            |c, body| {
                read_body::<fb::GrantAclResponse>(&body)
                    .map(drop)
                    .map_err(|e| ClientError::protocol(c.addr(), e.to_string()))
            },
        )
    }

    /// Removes `rule.operations` (every operation when empty) from the rule
    /// (principal, stream pattern). Needs `admin` on `*` or a superuser.
    pub fn revoke_acl(&mut self, rule: &AclRule) -> Result<(), ClientError> {
        let body = rule_request(rule, false);
        self.call(
            self.bootstrap,
            FrameKind::RevokeAclRequest,
            &body,
            |c, body| {
                read_body::<fb::RevokeAclResponse>(&body)
                    .map(drop)
                    .map_err(|e| ClientError::protocol(c.addr(), e.to_string()))
            },
        )
    }

    /// Every ACL rule, or those of `principal`.
    pub fn list_acls(&mut self, principal: Option<&str>) -> Result<Vec<AclRule>, ClientError> {
        let mut fbb = FlatBufferBuilder::new();
        let principal = principal.map(|p| fbb.create_string(p));
        let root = fb::ListAclsRequest::create(&mut fbb, &fb::ListAclsRequestArgs { principal });
        fbb.finish_minimal(root);
        let body = fbb.finished_data().to_vec();
        self.call(
            self.bootstrap,
            FrameKind::ListAclsRequest,
            &body,
            |c, body| decode_rules(&body).map_err(|e| ClientError::protocol(c.addr(), e)),
        )
    }
}

/// Sends Authenticate on a fresh connection; the principal on success.
pub(super) fn authenticate_connection(
    connection: &mut Connection,
    credentials: &Credentials,
) -> Result<String, ClientError> {
    let body = authenticate_request(credentials);
    match connection.request(
        FrameKind::AuthenticateRequest,
        &body,
        std::time::Duration::ZERO,
    )? {
        Response::Body(body) => decode_principal(&body)
            .map_err(|reason| ClientError::protocol(connection.addr(), reason)),
        Response::Error(error) => Err(ClientError::Server {
            code: error.code,
            message: error.message,
            right_port: error.right_port,
        }),
    }
}

fn authenticate_request(credentials: &Credentials) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let (token, username, password) = match credentials {
        Credentials::Token(token) => (Some(fbb.create_string(token)), None, None),
        Credentials::UserPassword { username, password } => (
            None,
            Some(fbb.create_string(username)),
            Some(fbb.create_string(password)),
        ),
    };
    let root = fb::AuthenticateRequest::create(
        &mut fbb,
        &fb::AuthenticateRequestArgs {
            protocol_version: PROTOCOL_VERSION,
            token,
            username,
            password,
        },
    );
    fbb.finish(root, None);
    fbb.finished_data().to_vec()
}

fn decode_principal(body: &Bytes) -> Result<String, String> {
    let response = read_body::<fb::AuthenticateResponse>(body).map_err(|e| e.to_string())?;
    Ok(response.principal().unwrap_or_default().to_owned())
}

fn rule_request(rule: &AclRule, grant: bool) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let encoded = encode_acl_rule(&mut fbb, rule);
    if grant {
        let root = fb::GrantAclRequest::create(
            &mut fbb,
            &fb::GrantAclRequestArgs {
                rule: Some(encoded),
            },
        );
        fbb.finish_minimal(root);
    } else {
        let root = fb::RevokeAclRequest::create(
            &mut fbb,
            &fb::RevokeAclRequestArgs {
                rule: Some(encoded),
            },
        );
        fbb.finish_minimal(root);
    }
    fbb.finished_data().to_vec()
}

fn decode_rules(body: &Bytes) -> Result<Vec<AclRule>, String> {
    let response = read_body::<fb::ListAclsResponse>(body).map_err(|e| e.to_string())?;
    response
        .rules()
        .into_iter()
        .flatten()
        .map(decode_acl_rule)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_debug_hides_secrets() {
        let token = Credentials::Token("tok-secret".into());
        let user = Credentials::UserPassword {
            username: "bob".into(),
            password: "pw-secret".into(),
        };
        assert!(!format!("{token:?}{user:?}").contains("secret"));
        assert!(format!("{user:?}").contains("bob"));
    }

    #[test]
    fn authenticate_request_carries_token_or_user_and_password() {
        let body = authenticate_request(&Credentials::UserPassword {
            username: "bob".into(),
            password: "pw".into(),
        });
        let request = read_body::<fb::AuthenticateRequest>(&body).unwrap();
        assert_eq!(
            (request.token(), request.username(), request.password()),
            (None, Some("bob"), Some("pw"))
        );
        assert_eq!(request.protocol_version(), PROTOCOL_VERSION);
    }
}
