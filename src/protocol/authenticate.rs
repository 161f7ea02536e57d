//! `Authenticate` (kind `0x09`, answer `0x89`): a token, or a username and
//! password; the answer names the principal the connection now acts as.

use flatbuffers::FlatBufferBuilder;

use super::body::{read_body, DecodeError};
use super::generated::protocol as fb;
use super::limits::PROTOCOL_VERSION;

/// The fields as sent; which of them count is the server's rule (a
/// non-empty token wins, else username and password).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthenticateRequest<'a> {
    /// The protocol version the client speaks.
    pub protocol_version: u16,
    pub token: Option<&'a str>,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
}

impl<'a> AuthenticateRequest<'a> {
    /// A token login at this build's protocol version.
    pub fn token(token: &'a str) -> AuthenticateRequest<'a> {
        AuthenticateRequest {
            protocol_version: PROTOCOL_VERSION,
            token: Some(token),
            username: None,
            password: None,
        }
    }

    /// A username/password login at this build's protocol version.
    pub fn password(username: &'a str, password: &'a str) -> AuthenticateRequest<'a> {
        AuthenticateRequest {
            protocol_version: PROTOCOL_VERSION,
            token: None,
            username: Some(username),
            password: Some(password),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::with_capacity(128);
        let token = self.token.map(|token| fbb.create_string(token));
        let username = self.username.map(|name| fbb.create_string(name));
        let password = self.password.map(|password| fbb.create_string(password));
        let root = fb::AuthenticateRequest::create(
            &mut fbb,
            &fb::AuthenticateRequestArgs {
                protocol_version: self.protocol_version,
                token,
                username,
                password,
            },
        );
        fbb.finish_minimal(root);
        fbb.finished_data().to_vec()
    }

    pub fn decode(body: &'a [u8]) -> Result<AuthenticateRequest<'a>, DecodeError> {
        let request = read_body::<fb::AuthenticateRequest>(body)?;
        Ok(AuthenticateRequest {
            protocol_version: request.protocol_version(),
            token: request.token(),
            username: request.username(),
            password: request.password(),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthenticateResponse {
    /// The protocol version the server speaks.
    pub protocol_version: u16,
    /// Who the connection is now authenticated as.
    pub principal: String,
}

impl AuthenticateResponse {
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::with_capacity(64 + self.principal.len());
        let principal = Some(fbb.create_string(&self.principal));
        let root = fb::AuthenticateResponse::create(
            &mut fbb,
            &fb::AuthenticateResponseArgs {
                protocol_version: self.protocol_version,
                principal,
            },
        );
        fbb.finish_minimal(root);
        fbb.finished_data().to_vec()
    }

    pub fn decode(body: &[u8]) -> Result<AuthenticateResponse, DecodeError> {
        let response = read_body::<fb::AuthenticateResponse>(body)?;
        Ok(AuthenticateResponse {
            protocol_version: response.protocol_version(),
            principal: response.principal().unwrap_or_default().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authenticate_round_trips() {
        for request in [
            AuthenticateRequest::token("t"),
            AuthenticateRequest::password("bob", "pw"),
        ] {
            assert_eq!(AuthenticateRequest::decode(&request.encode()), Ok(request));
        }
        let answer = AuthenticateResponse {
            protocol_version: PROTOCOL_VERSION,
            principal: "bob".into(),
        };
        assert_eq!(AuthenticateResponse::decode(&answer.encode()), Ok(answer));
    }
}
