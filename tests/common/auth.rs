//! Support for tests of authentication and ACLs: a `sluice serve` with an
//! `[auth]` section, and the credentials it accepts.

use super::Sluice;

/// Token of the superuser `root`.
pub const ROOT_TOKEN: &str = "root-token-0123456789abcdef";
/// Token of the ordinary principal `alice`.
pub const ALICE_TOKEN: &str = "alice-token-0123456789abcdef";
/// `[auth] node_token`: what nodes present to each other.
pub const NODE_TOKEN: &str = "node-token-0123456789abcdef";
/// `[auth] authenticate_timeout_ms` of the test nodes (short, so waiting
/// for it is quick).
pub const AUTHENTICATE_TIMEOUT_MS: u64 = 2_000;
/// User `bob`'s password (stored as an Argon2id hash in the config).
pub const BOB_PASSWORD: &str = "correct horse battery staple";
/// Argon2id hash of [`BOB_PASSWORD`] (made by `sluice hash-password`).
pub const BOB_PASSWORD_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$QJi1oCTxIbWyo1rfBbK6Gg$JegrX4N7bZ9oOfZpFY32R+S+fSh17bDWGDsc1PowknA";

/// The `[auth]` section the tests run with.
pub fn auth_section() -> String {
    format!(
        r#"
[auth]
enabled = true
superusers = ["root"]
tokens = [
  {{ token = "{ROOT_TOKEN}", principal = "root" }},
  {{ token = "{ALICE_TOKEN}", principal = "alice" }},
]
users = [{{ username = "bob", password_hash = "{BOB_PASSWORD_HASH}" }}]
node_token = "{NODE_TOKEN}"
authenticate_timeout_ms = {AUTHENTICATE_TIMEOUT_MS}
"#
    )
}

impl Sluice {
    /// Starts a node with authentication on ([`auth_section`]).
    pub fn start_with_auth(nats_url: &str, shards: u16) -> Sluice {
        Sluice::start_with_config(nats_url, shards, &auth_section())
    }

    /// This node's raft address (`--raft`), for `join`.
    pub fn raft_addr(&self) -> String {
        self.raft.to_string()
    }
}
