//! Authentication on the TCP protocol: who may connect, as which principal.
//!
//! Credentials come from the `[auth]` section of `sluice.toml`
//! ([`AuthFileConfig`]) and are turned once, at start-up, into an
//! [`Authenticator`] that every data shard holds (read-only, shared by
//! `Arc`). Authorization — what a principal may do — is the per-stream ACLs
//! of `model::acl`, replicated in the metadata; the superusers named here
//! bypass them (so an empty cluster can be administered at all).
//!
//! Secrets:
//! - **Tokens** are long random strings, so a fast hash is enough: only
//!   their SHA-256 digests are kept in memory and a presented token's digest
//!   is compared with every configured one in constant time (`subtle`).
//! - **Passwords** are low-entropy, so they are stored as Argon2id PHC
//!   strings (`password_hash`, made by `sluice hash-password`): a
//!   memory-hard hash makes an offline guess as costly as an online one.
//!   A plaintext `password` is accepted for tests and trials and is compared
//!   like a token. A verification runs on a blocking thread, never on a
//!   shard's reactor, and an unknown user costs the same Argon2 work as a
//!   known one (no user enumeration by timing).
//! - Nothing secret is ever logged or shown by `Debug` (it prints
//!   `<redacted>`).

use std::collections::HashMap;
use std::fmt;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::model::acl::validate_principal;

/// The principal of every connection when authentication is off.
pub const ANONYMOUS_PRINCIPAL: &str = "anonymous";
/// The principal of a connection that presented `[auth] node_token`: another
/// node of the cluster (e.g. a follower fetching for replication). It may do
/// everything, like a superuser.
pub const NODE_PRINCIPAL: &str = "_node";
/// Shortest token accepted in `sluice.toml`: 16 bytes. Tokens are compared
/// by a fast hash, so they must be too long to guess.
pub const TOKEN_BYTES_MIN: usize = 16;
/// Longest token, username or password a client may present (and a
/// configured one may have). Bounds the hashing work one request causes;
/// an `AuthenticateRequest` is also bounded by the unauthenticated frame
/// limit.
pub const CREDENTIAL_BYTES_MAX: usize = 1024;
/// Most tokens plus users in `sluice.toml`; a token check compares against
/// every token, so this bounds it.
pub const CREDENTIALS_MAX: usize = 4096;
/// Default of `[auth] authenticate_timeout_ms`: a connection that has not
/// authenticated this long after it was accepted is closed, so an anonymous
/// peer cannot hold a connection (and its buffer) open by trickling bytes.
pub const AUTHENTICATE_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Largest Argon2 memory cost (`m`, in KiB) a configured `password_hash`
/// may ask for: 1 GiB. Each verification allocates that much, so a larger
/// one (up to the 4 TiB the format allows) would abort the process on the
/// first login attempt instead of failing.
pub const PASSWORD_HASH_MEMORY_KIB_MAX: u32 = 1 << 20;
/// Largest Argon2 time cost (`t`, passes over the memory) a configured
/// `password_hash` may ask for. A check costs about `m × t`; with the 4
/// checks a shard runs at once, an unbounded `t` would let one hash (or any
/// client naming an unknown user, checked against it as a decoy) hold those
/// threads for minutes.
pub const PASSWORD_HASH_TIME_COST_MAX: u32 = 16;
/// Largest Argon2 parallelism (`p`, lanes) a configured `password_hash` may
/// ask for; verification runs the lanes one after another here.
pub const PASSWORD_HASH_PARALLELISM_MAX: u32 = 16;
/// Salt bytes of a password hash made by [`hash_password`] (the PHC
/// string format's recommended 16).
pub const PASSWORD_SALT_BYTES: usize = 16;

/// Why the `[auth]` section is unusable.
#[derive(Debug, thiserror::Error)]
#[error("[auth] {0}")]
pub struct AuthConfigError(String);

/// A token entry of `[auth] tokens`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub token: String,
    pub principal: String,
}

impl fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenConfig")
            .field("token", &"<redacted>")
            .field("principal", &self.principal)
            .finish()
    }
}

/// A user entry of `[auth] users`: `password_hash` (Argon2 PHC string) or,
/// for trials only, a plaintext `password`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub username: String,
    pub password_hash: Option<String>,
    pub password: Option<String>,
    /// Defaults to the username.
    pub principal: Option<String>,
}

impl fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserConfig")
            .field("username", &self.username)
            .field(
                "password_hash",
                &self.password_hash.as_ref().map(|_| "<redacted>"),
            )
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("principal", &self.principal)
            .finish()
    }
}

/// The `[auth]` section of `sluice.toml`.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFileConfig {
    /// Off by default: every connection is [`ANONYMOUS_PRINCIPAL`] and may do
    /// everything (no ACL is checked).
    #[serde(default)]
    pub enabled: bool,
    /// Principals that may do everything, ACL management included.
    #[serde(default)]
    pub superusers: Vec<String>,
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// Token the nodes of a cluster present to each other (the same on every
    /// node); accepted as [`NODE_PRINCIPAL`].
    pub node_token: Option<String>,
    /// See [`AUTHENTICATE_TIMEOUT_MS_DEFAULT`].
    pub authenticate_timeout_ms: Option<u64>,
}

impl fmt::Debug for AuthFileConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthFileConfig")
            .field("enabled", &self.enabled)
            .field("superusers", &self.superusers)
            .field("tokens", &self.tokens)
            .field("users", &self.users)
            .field(
                "node_token",
                &self.node_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Credentials a client presents in an `AuthenticateRequest`.
#[derive(Clone, PartialEq, Eq)]
pub enum Presented {
    Token(String),
    Password { username: String, password: String },
}

impl fmt::Debug for Presented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Presented::Token(_) => f.write_str("Token(<redacted>)"),
            Presented::Password { username, .. } => f
                .debug_struct("Password")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
        }
    }
}

#[derive(Clone)]
enum StoredPassword {
    /// An Argon2 PHC string, parsed at load to fail early.
    Argon2(String),
    /// SHA-256 of a plaintext password from the file.
    PlainDigest([u8; 32]),
}

#[derive(Clone)]
struct StoredUser {
    password: StoredPassword,
    principal: String,
}

/// Checks presented credentials against the configured ones. Immutable
/// after start-up; cheap to share.
#[derive(Clone)]
pub struct Authenticator {
    enabled: bool,
    superusers: Vec<String>,
    /// (SHA-256 of the token, principal).
    tokens: Vec<([u8; 32], String)>,
    users: HashMap<String, StoredUser>,
    /// An Argon2 hash verified against when the username is unknown, so
    /// unknown and known users cost the same.
    decoy_hash: Option<String>,
    /// `[auth] node_token`, kept whole: this node presents it to the others.
    node_token: Option<String>,
    authenticate_timeout: std::time::Duration,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("enabled", &self.enabled)
            .field("superusers", &self.superusers)
            .field("tokens", &self.tokens.len())
            .field("users", &self.users.len())
            .field("node_token", &self.node_token.is_some())
            .finish()
    }
}

impl Default for Authenticator {
    fn default() -> Authenticator {
        Authenticator {
            enabled: false,
            superusers: Vec::new(),
            tokens: Vec::new(),
            users: HashMap::new(),
            decoy_hash: None,
            node_token: None,
            authenticate_timeout: std::time::Duration::from_millis(AUTHENTICATE_TIMEOUT_MS_DEFAULT),
        }
    }
}

impl Authenticator {
    /// Authentication off: everyone is anonymous and unrestricted.
    pub fn disabled() -> Authenticator {
        Authenticator::default()
    }

    /// How long a new connection has to authenticate.
    pub fn authenticate_timeout(&self) -> std::time::Duration {
        self.authenticate_timeout
    }

    /// Validates the `[auth]` section and keeps only what checking needs.
    pub fn from_config(config: &AuthFileConfig) -> Result<Authenticator, AuthConfigError> {
        let fail = |reason: String| Err(AuthConfigError(reason));
        if !config.enabled {
            return Ok(Authenticator::disabled());
        }
        if config.tokens.is_empty() && config.users.is_empty() && config.node_token.is_none() {
            return fail("enabled = true needs at least one entry in tokens or users".into());
        }
        if config.tokens.len() + config.users.len() > CREDENTIALS_MAX {
            return fail(format!("more than {CREDENTIALS_MAX} tokens and users"));
        }
        for principal in &config.superusers {
            validate_principal(principal)
                .map_err(|reason| AuthConfigError(format!("superusers: {reason}")))?;
        }
        let timeout_ms = config
            .authenticate_timeout_ms
            .unwrap_or(AUTHENTICATE_TIMEOUT_MS_DEFAULT);
        if timeout_ms == 0 {
            return fail("authenticate_timeout_ms must be above 0".into());
        }
        let mut authenticator = Authenticator {
            enabled: true,
            superusers: config.superusers.clone(),
            authenticate_timeout: std::time::Duration::from_millis(timeout_ms),
            ..Authenticator::default()
        };
        for (index, entry) in config.tokens.iter().enumerate() {
            if entry.token.len() < TOKEN_BYTES_MIN || entry.token.len() > CREDENTIAL_BYTES_MAX {
                return fail(format!(
                    "tokens[{index}] (principal {:?}): a token must be {TOKEN_BYTES_MIN}..={CREDENTIAL_BYTES_MAX} bytes",
                    entry.principal
                ));
            }
            validate_principal(&entry.principal)
                .map_err(|reason| AuthConfigError(format!("tokens[{index}]: {reason}")))?;
            if entry.principal == NODE_PRINCIPAL {
                return fail(format!(
                    "tokens[{index}]: principal {NODE_PRINCIPAL:?} is reserved for node_token"
                ));
            }
            let digest = sha256(&entry.token);
            if authenticator.tokens.iter().any(|(d, _)| *d == digest) {
                return fail(format!("tokens[{index}]: the same token appears twice"));
            }
            authenticator.tokens.push((digest, entry.principal.clone()));
        }
        if let Some(token) = &config.node_token {
            if token.len() < TOKEN_BYTES_MIN || token.len() > CREDENTIAL_BYTES_MAX {
                return fail(format!(
                    "node_token must be {TOKEN_BYTES_MIN}..={CREDENTIAL_BYTES_MAX} bytes"
                ));
            }
            let digest = sha256(token);
            if authenticator.tokens.iter().any(|(d, _)| *d == digest) {
                return fail("node_token is also a client token; use a token of its own".into());
            }
            authenticator
                .tokens
                .push((digest, NODE_PRINCIPAL.to_owned()));
            authenticator.node_token = Some(token.clone());
        }
        for (index, entry) in config.users.iter().enumerate() {
            let user = stored_user(entry)
                .map_err(|reason| AuthConfigError(format!("users[{index}]: {reason}")))?;
            if let StoredPassword::Argon2(hash) = &user.password {
                authenticator.decoy_hash.get_or_insert_with(|| hash.clone());
            }
            if authenticator
                .users
                .insert(entry.username.clone(), user)
                .is_some()
            {
                return fail(format!(
                    "users[{index}]: username {:?} appears twice",
                    entry.username
                ));
            }
        }
        Ok(authenticator)
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Whether `principal` bypasses the ACLs: a configured superuser, or
    /// another node of the cluster.
    pub fn is_superuser(&self, principal: &str) -> bool {
        self.superusers.iter().any(|s| s == principal)
            || (principal == NODE_PRINCIPAL && self.node_token.is_some())
    }

    /// The token this node presents when it connects to another node's
    /// client port (replication fetches): `[auth] node_token`. `None` when
    /// authentication is off or no node token is configured.
    pub fn node_token(&self) -> Option<&str> {
        self.node_token.as_deref()
    }

    /// The principal the credentials belong to, or `None`. Blocking: an
    /// Argon2 verification takes tens of milliseconds of CPU and ~19 MiB;
    /// call it off the reactor (`spawn_blocking`). Always answers
    /// [`ANONYMOUS_PRINCIPAL`] when authentication is off.
    pub fn verify_blocking(&self, presented: &Presented) -> Option<String> {
        if !self.enabled {
            return Some(ANONYMOUS_PRINCIPAL.to_owned());
        }
        match presented {
            Presented::Token(token) => {
                let digest = sha256(token);
                // Compare with every token, whatever matches, so the time
                // taken does not depend on where (or whether) it matched.
                let mut found = None;
                for (stored, principal) in &self.tokens {
                    if bool::from(stored.ct_eq(&digest)) {
                        found = Some(principal.clone());
                    }
                }
                found
            }
            Presented::Password { username, password } => {
                let Some(user) = self.users.get(username) else {
                    if let Some(decoy) = &self.decoy_hash {
                        let _ = verify_argon2(decoy, password);
                    }
                    return None;
                };
                let matches = match &user.password {
                    StoredPassword::Argon2(hash) => verify_argon2(hash, password),
                    StoredPassword::PlainDigest(digest) => {
                        bool::from(digest.ct_eq(&sha256(password)))
                    }
                };
                matches.then(|| user.principal.clone())
            }
        }
    }
}

fn stored_user(entry: &UserConfig) -> Result<StoredUser, String> {
    if entry.username.is_empty() || entry.username.len() > CREDENTIAL_BYTES_MAX {
        return Err(format!("username must be 1..={CREDENTIAL_BYTES_MAX} bytes"));
    }
    let principal = entry
        .principal
        .clone()
        .unwrap_or_else(|| entry.username.clone());
    validate_principal(&principal)?;
    let password = match (&entry.password_hash, &entry.password) {
        (Some(hash), None) => {
            let parsed = PasswordHash::new(hash).map_err(|e| {
                format!(
                    "password_hash of {:?} is not a PHC string ({e}); make one with `sluice hash-password`",
                    entry.username
                )
            })?;
            // Every check of this hash (and of an unknown username, which is
            // checked against the first hash as a decoy) allocates m KiB.
            if let Ok(params) = argon2::Params::try_from(&parsed) {
                let costs = [
                    ("m", params.m_cost(), PASSWORD_HASH_MEMORY_KIB_MAX),
                    ("t", params.t_cost(), PASSWORD_HASH_TIME_COST_MAX),
                    ("p", params.p_cost(), PASSWORD_HASH_PARALLELISM_MAX),
                ];
                for (name, cost, max) in costs {
                    if cost > max {
                        return Err(format!(
                            "password_hash of {:?} has {name}={cost}, above the limit of {max}; \
                             make one with `sluice hash-password`",
                            entry.username,
                        ));
                    }
                }
            }
            StoredPassword::Argon2(hash.clone())
        }
        (None, Some(password)) => {
            if password.is_empty() || password.len() > CREDENTIAL_BYTES_MAX {
                return Err(format!("password must be 1..={CREDENTIAL_BYTES_MAX} bytes"));
            }
            StoredPassword::PlainDigest(sha256(password))
        }
        _ => {
            return Err(format!(
                "user {:?} needs exactly one of password_hash or password",
                entry.username
            ))
        }
    };
    Ok(StoredUser {
        password,
        principal,
    })
}

fn sha256(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Verifies `password` against a PHC string with the algorithm and
/// parameters it names (Argon2id/i/d).
fn verify_argon2(hash: &str, password: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// An Argon2id PHC string for `password` with the crate's default
/// (OWASP-recommended) parameters and the given random salt, for
/// `password_hash` in `sluice.toml`.
pub fn hash_password(
    password: &str,
    salt: &[u8; PASSWORD_SALT_BYTES],
) -> Result<String, AuthConfigError> {
    let salt = SaltString::encode_b64(salt).map_err(|e| AuthConfigError(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| AuthConfigError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> AuthFileConfig {
        toml::from_str(text).expect("parses")
    }

    #[test]
    fn disabled_lets_everyone_in_as_anonymous() {
        let auth = Authenticator::from_config(&AuthFileConfig::default()).unwrap();
        assert!(!auth.is_enabled());
        assert_eq!(
            auth.verify_blocking(&Presented::Token("x".into()))
                .as_deref(),
            Some(ANONYMOUS_PRINCIPAL)
        );
    }

    #[test]
    fn tokens_and_passwords_map_to_principals() {
        let hash = hash_password("correct horse", &[7; PASSWORD_SALT_BYTES]).unwrap();
        assert!(hash.starts_with("$argon2id$"));
        let auth = Authenticator::from_config(&config(&format!(
            r#"
            enabled = true
            superusers = ["root"]
            tokens = [{{ token = "0123456789abcdef-alice", principal = "alice" }}]
            users = [
              {{ username = "bob", password_hash = "{hash}" }},
              {{ username = "carol", password = "plain-pass", principal = "svc-carol" }},
            ]
            "#
        )))
        .unwrap();
        let token = |t: &str| auth.verify_blocking(&Presented::Token(t.into()));
        let login = |u: &str, p: &str| {
            auth.verify_blocking(&Presented::Password {
                username: u.into(),
                password: p.into(),
            })
        };
        assert_eq!(token("0123456789abcdef-alice").as_deref(), Some("alice"));
        assert_eq!(token("0123456789abcdef-alicX"), None);
        assert_eq!(token(""), None);
        assert_eq!(login("bob", "correct horse").as_deref(), Some("bob"));
        assert_eq!(login("bob", "wrong horse"), None);
        assert_eq!(login("carol", "plain-pass").as_deref(), Some("svc-carol"));
        assert_eq!(login("carol", "plain-pasS"), None);
        assert_eq!(login("mallory", "correct horse"), None);
        assert!(auth.is_superuser("root"));
        assert!(!auth.is_superuser("alice"));
    }

    #[test]
    fn node_token_is_an_implicit_superuser() {
        let auth = Authenticator::from_config(&config(
            r#"
            enabled = true
            node_token = "cluster-secret-0123456789"
            "#,
        ))
        .unwrap();
        let principal = auth
            .verify_blocking(&Presented::Token("cluster-secret-0123456789".into()))
            .unwrap();
        assert_eq!(principal, NODE_PRINCIPAL);
        assert!(auth.is_superuser(NODE_PRINCIPAL));
        assert_eq!(auth.node_token(), Some("cluster-secret-0123456789"));
        // Without a node token nobody is the node principal.
        let plain = Authenticator::from_config(&config(
            r#"
            enabled = true
            users = [{ username = "u", password = "p" }]
            "#,
        ))
        .unwrap();
        assert!(!plain.is_superuser(NODE_PRINCIPAL));
        assert_eq!(plain.node_token(), None);
    }

    #[test]
    fn bad_sections_are_refused_with_the_entry_named() {
        for (text, expected) in [
            ("enabled = true", "at least one"),
            (
                r#"enabled = true
                tokens = [{ token = "short", principal = "a" }]"#,
                "tokens[0]",
            ),
            (
                r#"enabled = true
                users = [{ username = "u", password_hash = "not-phc" }]"#,
                "hash-password",
            ),
            (
                r#"enabled = true
                users = [{ username = "u" }]"#,
                "exactly one",
            ),
            (
                r#"enabled = true
                users = [{ username = "u", password = "p" }, { username = "u", password = "q" }]"#,
                "twice",
            ),
            (
                r#"enabled = true
                tokens = [{ token = "0123456789abcdef", principal = "_node" }]"#,
                "reserved",
            ),
            (
                r#"enabled = true
                node_token = "short""#,
                "node_token",
            ),
            (
                r#"enabled = true
                superusers = ["a b"]
                users = [{ username = "u", password = "p" }]"#,
                "superusers",
            ),
        ] {
            let error = Authenticator::from_config(&config(text)).unwrap_err();
            assert!(error.to_string().contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn password_hash_with_a_huge_memory_cost_is_refused_at_load() {
        // m = u32::MAX KiB: verifying it allocated 4 TiB (an abort, reachable
        // by any client naming an unknown user, as the decoy check uses it).
        let hash = hash_password("pw", &[1; PASSWORD_SALT_BYTES]).unwrap();
        let default_m = format!("m={}", argon2::Params::DEFAULT_M_COST);
        assert!(hash.contains(&default_m), "{hash}");
        let huge = hash.replace(&default_m, &format!("m={}", u32::MAX));
        let text =
            format!("enabled = true\nusers = [{{ username = \"u\", password_hash = \"{huge}\" }}]");
        let err = Authenticator::from_config(&config(&text)).unwrap_err();
        assert!(err.to_string().contains("users[0]"), "{err}");
        let limit = hash.replace(&default_m, &format!("m={PASSWORD_HASH_MEMORY_KIB_MAX}"));
        let text = format!(
            "enabled = true\nusers = [{{ username = \"u\", password_hash = \"{limit}\" }}]"
        );
        assert!(Authenticator::from_config(&config(&text)).is_ok());
    }

    #[test]
    fn password_hash_with_a_huge_time_cost_or_parallelism_is_refused_at_load() {
        let hash = hash_password("pw", &[1; PASSWORD_SALT_BYTES]).unwrap();
        let default_t = format!("t={}", argon2::Params::DEFAULT_T_COST);
        let default_p = format!("p={}", argon2::Params::DEFAULT_P_COST);
        assert!(
            hash.contains(&default_t) && hash.contains(&default_p),
            "{hash}"
        );
        let load = |hash: &str| {
            let text = format!(
                "enabled = true\nusers = [{{ username = \"u\", password_hash = \"{hash}\" }}]"
            );
            Authenticator::from_config(&config(&text))
        };
        for (default, name, max) in [
            (&default_t, "t", PASSWORD_HASH_TIME_COST_MAX),
            (&default_p, "p", PASSWORD_HASH_PARALLELISM_MAX),
        ] {
            let over = hash.replace(default.as_str(), &format!("{name}={}", max + 1));
            let err = load(&over).unwrap_err();
            assert!(
                err.to_string().contains(&format!("{name}={}", max + 1)),
                "{err}"
            );
            let at = hash.replace(default.as_str(), &format!("{name}={max}"));
            assert!(load(&at).is_ok(), "{name}={max} is allowed");
        }
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let section = config(
            r#"
            enabled = true
            tokens = [{ token = "super-secret-token-1", principal = "alice" }]
            users = [{ username = "bob", password = "hunter2-secret" }]
            node_token = "node-secret-0123456789"
            "#,
        );
        let auth = Authenticator::from_config(&section).unwrap();
        let presented = Presented::Password {
            username: "bob".into(),
            password: "hunter2-secret".into(),
        };
        for text in [
            format!("{section:?}"),
            format!("{auth:?}"),
            format!("{presented:?}"),
            format!("{:?}", Presented::Token("super-secret-token-1".into())),
        ] {
            assert!(!text.contains("secret"), "{text}");
        }
    }
}
