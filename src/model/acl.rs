//! Per-stream access control lists, as replicated in the metadata.
//!
//! A rule says: principal `P` may perform operations `O` on every stream
//! whose name matches the glob `S` (`*` = any run of characters, `?` = one
//! character; the principal may be a glob too, e.g. `*` for every
//! authenticated principal). Rules only grant; there is no deny. `admin`
//! implies every other operation on the matching streams, and `admin` on
//! the pattern `*` (or being a configured superuser) is what ACL management
//! itself needs.
//!
//! The rules live in [`Metadata`] and change only through
//! `MetadataCommand::GrantAcl` / `RevokeAcl`, applied deterministically by
//! the state machine (`cluster/acl.rs`, validated again on apply). [`AclTable`] is the read-side index the data
//! shards receive with every partition table, so a check is a hash lookup
//! plus a few glob matches on the shard's own copy, with no lock and no
//! cross-core call.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::limits::{ACL_PRINCIPAL_BYTES_MAX, STREAM_NAME_BYTES_MAX};
use super::Metadata;

/// One thing a principal may do to a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AclOperation {
    /// Publish (direct, over the TCP protocol).
    Publish,
    /// Fetch, ListOffsets, SetCursor, FetchCursor; see the stream in Metadata.
    Fetch,
    /// CreateStream.
    Create,
    /// DeleteStream.
    Delete,
    /// Everything above; on the pattern `*` also ACL management.
    Admin,
}

impl AclOperation {
    /// Every operation, in wire order.
    pub const ALL: [AclOperation; 5] = [
        AclOperation::Publish,
        AclOperation::Fetch,
        AclOperation::Create,
        AclOperation::Delete,
        AclOperation::Admin,
    ];

    /// The name used in `sluice.toml`, on the command line and in errors.
    pub const fn name(self) -> &'static str {
        match self {
            AclOperation::Publish => "publish",
            AclOperation::Fetch => "fetch",
            AclOperation::Create => "create",
            AclOperation::Delete => "delete",
            AclOperation::Admin => "admin",
        }
    }

    /// Parses a name as [`AclOperation::name`] writes it.
    pub fn from_name(name: &str) -> Option<AclOperation> {
        AclOperation::ALL.into_iter().find(|op| op.name() == name)
    }

    const fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for AclOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of [`AclOperation`]s (a bit set; serialized as a sorted list of
/// names so snapshots stay readable and independent of the bit layout).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "Vec<AclOperation>", into = "Vec<AclOperation>")]
pub struct AclOperations(u8);

impl AclOperations {
    pub const NONE: AclOperations = AclOperations(0);

    pub fn of(operations: impl IntoIterator<Item = AclOperation>) -> AclOperations {
        operations.into_iter().fold(AclOperations::NONE, |set, op| {
            AclOperations(set.0 | op.bit())
        })
    }

    pub fn all() -> AclOperations {
        AclOperations::of(AclOperation::ALL)
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub const fn contains(self, op: AclOperation) -> bool {
        self.0 & op.bit() != 0
    }

    /// Whether these operations allow `op` (`admin` allows everything).
    pub const fn allows(self, op: AclOperation) -> bool {
        self.contains(op) || self.contains(AclOperation::Admin)
    }

    pub const fn union(self, other: AclOperations) -> AclOperations {
        AclOperations(self.0 | other.0)
    }

    pub const fn without(self, other: AclOperations) -> AclOperations {
        AclOperations(self.0 & !other.0)
    }

    pub fn iter(self) -> impl Iterator<Item = AclOperation> {
        AclOperation::ALL
            .into_iter()
            .filter(move |op| self.contains(*op))
    }
}

impl From<Vec<AclOperation>> for AclOperations {
    fn from(operations: Vec<AclOperation>) -> AclOperations {
        AclOperations::of(operations)
    }
}

impl From<AclOperations> for Vec<AclOperation> {
    fn from(operations: AclOperations) -> Vec<AclOperation> {
        operations.iter().collect()
    }
}

impl fmt::Debug for AclOperations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl fmt::Display for AclOperations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(AclOperation::name).collect();
        f.write_str(&names.join(","))
    }
}

/// One rule, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclRule {
    /// A principal, or a glob over principals.
    pub principal: String,
    /// A glob over stream names.
    pub stream_pattern: String,
    pub operations: AclOperations,
}

/// The rules in the metadata: principal → stream pattern → operations.
/// Nested maps (not a map keyed by pairs) so the JSON snapshot can hold it.
pub type AclRules = BTreeMap<String, BTreeMap<String, AclOperations>>;

/// Whether `name` matches `pattern`, where `*` matches any run of bytes
/// (also none) and `?` exactly one. Linear in practice: the classic
/// single-backtrack algorithm, O(pattern × name) at worst, and both are at
/// most a few hundred bytes.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let (pattern, name) = (pattern.as_bytes(), name.as_bytes());
    let (mut p, mut n) = (0, 0);
    // Where the last `*` was, and the name position it currently covers up to.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(c) if *c == b'?' || *c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((star_p, star_n)) => {
                    p = star_p + 1;
                    n = star_n + 1;
                    star = Some((star_p, star_n + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
}

/// A principal name or glob: 1..=[`ACL_PRINCIPAL_BYTES_MAX`] bytes, printable,
/// no whitespace.
pub fn validate_principal(principal: &str) -> Result<(), String> {
    if principal.is_empty() || principal.len() > ACL_PRINCIPAL_BYTES_MAX {
        return Err(format!(
            "principal must be 1..={ACL_PRINCIPAL_BYTES_MAX} bytes"
        ));
    }
    if principal
        .chars()
        .any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(format!(
            "principal {principal:?} contains whitespace or control characters"
        ));
    }
    Ok(())
}

/// A stream-name glob: 1..=255 bytes of `[A-Za-z0-9._-]` plus `*` and `?`.
pub fn validate_stream_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() || pattern.len() > STREAM_NAME_BYTES_MAX {
        return Err(format!(
            "stream pattern must be 1..={STREAM_NAME_BYTES_MAX} bytes"
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '*' | '?');
    if let Some(bad) = pattern.chars().find(|c| !allowed(*c)) {
        return Err(format!(
            "stream pattern {pattern:?} contains {bad:?}; use stream-name characters [A-Za-z0-9._-] and the globs * and ?"
        ));
    }
    Ok(())
}

impl Metadata {
    /// Every ACL rule: principal → stream pattern → operations.
    pub fn acls(&self) -> &AclRules {
        &self.acls
    }

    /// Every ACL rule as a flat list, ordered by principal then pattern.
    pub fn acl_rules(&self) -> Vec<AclRule> {
        self.acls
            .iter()
            .flat_map(|(principal, patterns)| {
                patterns.iter().map(move |(pattern, operations)| AclRule {
                    principal: principal.clone(),
                    stream_pattern: pattern.clone(),
                    operations: *operations,
                })
            })
            .collect()
    }
}

/// The rules indexed for checking: exact principals by hash, principal
/// globs in a list. Built from the metadata on the control core and sent to
/// every shard (each gets its own copy).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AclTable {
    by_principal: HashMap<String, Vec<(String, AclOperations)>>,
    /// (principal glob, stream pattern, operations).
    principal_globs: Vec<(String, String, AclOperations)>,
}

impl AclTable {
    pub fn from_rules(rules: &AclRules) -> AclTable {
        let mut table = AclTable::default();
        for (principal, patterns) in rules {
            let is_glob = principal.contains(['*', '?']);
            for (pattern, operations) in patterns {
                if is_glob {
                    table
                        .principal_globs
                        .push((principal.clone(), pattern.clone(), *operations));
                } else {
                    table
                        .by_principal
                        .entry(principal.clone())
                        .or_default()
                        .push((pattern.clone(), *operations));
                }
            }
        }
        table
    }

    /// Whether some rule lets `principal` do `op` on the stream `stream`.
    pub fn allows(&self, principal: &str, op: AclOperation, stream: &str) -> bool {
        self.operations_on(principal, stream).allows(op)
    }

    /// Whether `principal` holds `admin` on the pattern `*`, i.e. on every
    /// stream there is or will be: what ACL management needs.
    pub fn is_admin_everywhere(&self, principal: &str) -> bool {
        let exact = self.by_principal.get(principal).into_iter().flatten();
        let globbed = self
            .principal_globs
            .iter()
            .filter(|(glob, _, _)| glob_matches(glob, principal))
            .map(|(_, pattern, ops)| (pattern, ops));
        exact
            .map(|(pattern, ops)| (pattern, ops))
            .chain(globbed)
            .any(|(pattern, ops)| pattern == "*" && ops.contains(AclOperation::Admin))
    }

    /// Everything `principal` may do on `stream`, over all matching rules.
    pub fn operations_on(&self, principal: &str, stream: &str) -> AclOperations {
        let mut granted = AclOperations::NONE;
        if let Some(rules) = self.by_principal.get(principal) {
            for (pattern, operations) in rules {
                if glob_matches(pattern, stream) {
                    granted = granted.union(*operations);
                }
            }
        }
        for (glob, pattern, operations) in &self.principal_globs {
            if glob_matches(glob, principal) && glob_matches(pattern, stream) {
                granted = granted.union(*operations);
            }
        }
        granted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(names: &[AclOperation]) -> AclOperations {
        AclOperations::of(names.iter().copied())
    }

    #[test]
    fn globs_match_star_and_question_mark() {
        assert!(glob_matches("*", ""));
        assert!(glob_matches("*", "orders"));
        assert!(glob_matches("orders", "orders"));
        assert!(!glob_matches("orders", "orders2"));
        assert!(glob_matches("orders.*", "orders.eu"));
        assert!(glob_matches("orders.*", "orders."));
        assert!(!glob_matches("orders.*", "orders"));
        assert!(glob_matches("o?ders", "orders"));
        assert!(!glob_matches("o?ders", "oders"));
        assert!(glob_matches("*.eu.*", "orders.eu.1"));
        assert!(!glob_matches("*.eu.*", "orders.us.1"));
        assert!(glob_matches("a*b*c", "aXXbYYbZc"));
        assert!(!glob_matches("a*b*c", "aXXbYYbZ"));
        assert!(glob_matches("**", "x"));
        assert!(!glob_matches("", "x"));
        assert!(glob_matches("", ""));
    }

    #[test]
    fn operation_sets_round_trip_through_json_as_names() {
        let set = ops(&[AclOperation::Fetch, AclOperation::Publish]);
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(json, r#"["publish","fetch"]"#);
        assert_eq!(serde_json::from_str::<AclOperations>(&json).unwrap(), set);
        assert_eq!(set.to_string(), "publish,fetch");
        assert!(AclOperations::of([AclOperation::Admin]).allows(AclOperation::Delete));
        assert!(!set.allows(AclOperation::Create));
    }

    #[test]
    fn metadata_without_acls_still_deserializes() {
        // A snapshot written before ACLs existed has no `acls` field.
        let mut value = serde_json::to_value(Metadata::default()).unwrap();
        value.as_object_mut().unwrap().remove("acls");
        let metadata: Metadata = serde_json::from_value(value).unwrap();
        assert!(metadata.acls().is_empty());
    }
}
