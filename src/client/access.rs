//! Authentication and ACL management from the client side.
//!
//! Authentication is per connection, and the client keeps one connection
//! per port, so [`Client::authenticate`] remembers the credentials and every
//! connection the client opens later (another shard's port, a reconnect)
//! authenticates first, before its first request.

use std::fmt;

use super::connection::{Connection, Response};
use super::{Client, ClientError};
use crate::model::acl::AclRule;
use crate::protocol::acl::{
    AclChange, AclChangeRequest, AclChangeResponse, ListAclsRequest, ListAclsResponse,
};
use crate::protocol::authenticate::{AuthenticateRequest, AuthenticateResponse};
use crate::protocol::frame::FrameKind;

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
        self.change_acl(AclChange::Grant, rule)
    }

    /// Removes `rule.operations` (every operation when empty) from the rule
    /// (principal, stream pattern). Needs `admin` on `*` or a superuser.
    pub fn revoke_acl(&mut self, rule: &AclRule) -> Result<(), ClientError> {
        self.change_acl(AclChange::Revoke, rule)
    }

    fn change_acl(&mut self, change: AclChange, rule: &AclRule) -> Result<(), ClientError> {
        let body = AclChangeRequest {
            change,
            rule: rule.clone(),
        }
        .encode();
        let kind = match change {
            AclChange::Grant => FrameKind::GrantAclRequest,
            AclChange::Revoke => FrameKind::RevokeAclRequest,
        };
        self.call(self.bootstrap, kind, &body, |c, body| {
            AclChangeResponse::decode(change, &body)
                .map(drop)
                .map_err(|e| ClientError::protocol(c.addr(), e))
        })
    }

    /// Every ACL rule, or those of `principal`.
    pub fn list_acls(&mut self, principal: Option<&str>) -> Result<Vec<AclRule>, ClientError> {
        let body = ListAclsRequest {
            principal: principal.map(str::to_owned),
        }
        .encode();
        self.call(
            self.bootstrap,
            FrameKind::ListAclsRequest,
            &body,
            |c, body| {
                ListAclsResponse::decode(&body)
                    .map(|answer| answer.rules)
                    .map_err(|e| ClientError::protocol(c.addr(), e))
            },
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
        Response::Body(body) => AuthenticateResponse::decode(&body)
            .map(|answer| answer.principal)
            .map_err(|reason| ClientError::protocol(connection.addr(), reason)),
        Response::Error(error) => Err(ClientError::Server {
            code: error.code,
            message: error.message,
            right_port: error.right_port,
        }),
    }
}

fn authenticate_request(credentials: &Credentials) -> Vec<u8> {
    match credentials {
        Credentials::Token(token) => AuthenticateRequest::token(token),
        Credentials::UserPassword { username, password } => {
            AuthenticateRequest::password(username, password)
        }
    }
    .encode()
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
        let request = AuthenticateRequest::decode(&body).unwrap();
        assert_eq!(
            (request.token, request.username, request.password),
            (None, Some("bob"), Some("pw"))
        );
        assert_eq!(
            request.protocol_version,
            crate::protocol::limits::PROTOCOL_VERSION
        );
    }
}
