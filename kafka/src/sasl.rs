//! SASL PLAIN (RFC 4616), the mechanism the Kafka listener accepts.
//!
//! A client authenticates with `SaslHandshake` (mechanism `PLAIN`) and then
//! one `SaslAuthenticate` whose bytes are `authzid NUL authcid NUL passwd`.
//! Sluice checks `authcid`/`passwd` against its `[auth]` users and tokens;
//! it does not let one identity act as another, so `authzid` must be empty
//! or equal to `authcid`.

/// The only mechanism offered.
pub const MECHANISM_PLAIN: &str = "PLAIN";

/// RFC 4616 bounds each of the three fields to 255 octets.
pub const PLAIN_FIELD_BYTES_MAX: usize = 255;

/// The credentials of a PLAIN message.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainCredentials {
    /// The identity to authenticate (`authcid`).
    pub username: String,
    /// Its password (or token).
    pub password: String,
}

impl std::fmt::Debug for PlainCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("PlainCredentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Why a PLAIN message is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlainError {
    /// Not three NUL-separated fields.
    #[error("SASL PLAIN message is not authzid NUL authcid NUL passwd")]
    Malformed,
    /// A field is longer than RFC 4616 allows.
    #[error("SASL PLAIN field longer than {PLAIN_FIELD_BYTES_MAX} bytes")]
    FieldTooLong,
    /// A field is not UTF-8.
    #[error("SASL PLAIN field is not UTF-8")]
    NotUtf8,
    /// The username or password is empty.
    #[error("SASL PLAIN username and password must not be empty")]
    Empty,
    /// `authzid` names another identity.
    #[error("SASL PLAIN authorization identity differs from the username; impersonation is not supported")]
    Impersonation,
}

/// Parses a SASL PLAIN message.
pub fn parse_plain(message: &[u8]) -> Result<PlainCredentials, PlainError> {
    let mut fields = message.split(|byte| *byte == 0);
    let (Some(authzid), Some(authcid), Some(passwd), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(PlainError::Malformed);
    };
    if [authzid, authcid, passwd]
        .iter()
        .any(|field| field.len() > PLAIN_FIELD_BYTES_MAX)
    {
        return Err(PlainError::FieldTooLong);
    }
    let text = |field: &[u8]| {
        std::str::from_utf8(field)
            .map(str::to_owned)
            .map_err(|_| PlainError::NotUtf8)
    };
    let (authzid, username, password) = (text(authzid)?, text(authcid)?, text(passwd)?);
    if username.is_empty() || password.is_empty() {
        return Err(PlainError::Empty);
    }
    if !authzid.is_empty() && authzid != username {
        return Err(PlainError::Impersonation);
    }
    Ok(PlainCredentials { username, password })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn plain_messages() {
        let ok = PlainCredentials {
            username: "alice".into(),
            password: "secret".into(),
        };
        assert_eq!(parse_plain(b"\0alice\0secret"), Ok(ok.clone()));
        assert_eq!(parse_plain(b"alice\0alice\0secret"), Ok(ok));
        assert_eq!(
            parse_plain(b"bob\0alice\0secret"),
            Err(PlainError::Impersonation)
        );
        assert_eq!(parse_plain(b"\0alice"), Err(PlainError::Malformed));
        assert_eq!(
            parse_plain(b"\0alice\0se\0cret"),
            Err(PlainError::Malformed)
        );
        assert_eq!(parse_plain(b"\0\0secret"), Err(PlainError::Empty));
        assert_eq!(parse_plain(b"\0alice\0\xff"), Err(PlainError::NotUtf8));
        let long = [b"\0a\0".as_slice(), &[b'x'; 256]].concat();
        assert_eq!(parse_plain(&long), Err(PlainError::FieldTooLong));
        assert!(!format!("{:?}", parse_plain(b"\0alice\0secret")).contains("secret"));
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_are_refused(message in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_plain(&message);
        }
    }
}
