//! Rules for stream specs and node announcements. Pure functions: the state
//! machine runs them on apply (so every replica decides the same way) and the
//! proposer runs them first to fail fast without a raft round trip.

use super::limits::{
    GROUP_BYTES_MAX, MAX_PARTITIONS_PER_STREAM, NODE_ADDR_BYTES_MAX, SHARDS_PER_NODE_MAX,
    STREAM_NAME_BYTES_MAX, SUBJECT_BYTES_MAX,
};
use super::{NodeInfo, StreamSpec, CURSORS_STREAM};

/// A field of a spec or announcement breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct InvalidSpec {
    pub field: &'static str,
    pub reason: String,
}

impl InvalidSpec {
    fn new(field: &'static str, reason: impl Into<String>) -> InvalidSpec {
        InvalidSpec {
            field,
            reason: reason.into(),
        }
    }
}

/// Checks everything about a spec that does not depend on cluster state
/// (the replication factor against the node count is checked on apply).
pub fn validate_spec(spec: &StreamSpec) -> Result<(), InvalidSpec> {
    if !INTERNAL_STREAM_NAMES.contains(&spec.name.as_str()) {
        validate_stream_name(&spec.name)?;
    }
    validate_subject(&spec.subject).map_err(|reason| InvalidSpec::new("subject", reason))?;
    if let Some(group) = &spec.group {
        validate_group(group)?;
    }
    if spec.partitions == 0 || spec.partitions > MAX_PARTITIONS_PER_STREAM {
        return Err(InvalidSpec::new(
            "partitions",
            format!(
                "{} is outside 1..={MAX_PARTITIONS_PER_STREAM}",
                spec.partitions
            ),
        ));
    }
    if spec.partitions > 1 && spec.subject.split('.').any(|token| token == ">") {
        // Partition i > 0 listens on `subject.i`, and nothing may follow `>`.
        return Err(InvalidSpec::new(
            "partitions",
            "a subject ending in '>' takes one partition (partition i > 0 listens on \
             SUBJECT.i); use '*' tokens, or name the partition in the envelope",
        ));
    }
    if spec.replication_factor == 0 {
        return Err(InvalidSpec::new("replication_factor", "must be at least 1"));
    }
    if spec.min_insync_replicas == 0 || spec.min_insync_replicas > spec.replication_factor {
        return Err(InvalidSpec::new(
            "min_insync_replicas",
            format!(
                "{} is outside 1..={} (the replication factor)",
                spec.min_insync_replicas, spec.replication_factor
            ),
        ));
    }
    for (field, value) in [
        ("retention_age_ms", spec.retention_age_ms),
        ("retention_bytes", spec.retention_bytes),
        ("retention_messages", spec.retention_messages),
    ] {
        if value == Some(0) {
            return Err(InvalidSpec::new(
                field,
                "0 would discard everything; leave it unset for no limit",
            ));
        }
    }
    Ok(())
}

/// Internal streams the server creates itself (names users may not take).
/// The state machine accepts these names; users' requests are checked with
/// [`validate_stream_name`], which refuses every name starting with `_`.
pub const INTERNAL_STREAM_NAMES: &[&str] = &[CURSORS_STREAM];

/// 1..=255 bytes of `[A-Za-z0-9_.-]`, not starting with `.` or `_`: names
/// starting with those are reserved for internal streams (cursors, ...).
pub fn validate_stream_name(name: &str) -> Result<(), InvalidSpec> {
    let err = |reason: &str| Err(InvalidSpec::new("name", format!("{name:?}: {reason}")));
    if name.is_empty() {
        return err("must not be empty");
    }
    if name.len() > STREAM_NAME_BYTES_MAX {
        return err("longer than 255 bytes");
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(InvalidSpec::new(
            "name",
            format!("{name:?}: character {bad:?} is not one of [A-Za-z0-9_.-]"),
        ));
    }
    if name.starts_with('.') || name.starts_with('_') {
        return err("names starting with '.' or '_' are reserved");
    }
    Ok(())
}

/// A NATS subject a subscription may use: dot-separated non-empty tokens, no
/// whitespace or control characters, `*` only as a whole token, `>` only as
/// the whole last token.
pub fn validate_subject(subject: &str) -> Result<(), String> {
    if subject.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if subject.len() > SUBJECT_BYTES_MAX {
        return Err(format!("longer than {SUBJECT_BYTES_MAX} bytes"));
    }
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{subject:?} contains whitespace or a control character"
        ));
    }
    let token_count = subject.split('.').count();
    for (i, token) in subject.split('.').enumerate() {
        if token.is_empty() {
            return Err(format!("{subject:?} has an empty token"));
        }
        if token.len() > 1 && (token.contains('*') || token.contains('>')) {
            return Err(format!(
                "{subject:?}: wildcards '*' and '>' must be whole tokens"
            ));
        }
        if token == ">" && i + 1 != token_count {
            return Err(format!("{subject:?}: '>' must be the last token"));
        }
    }
    Ok(())
}

fn validate_group(group: &str) -> Result<(), InvalidSpec> {
    if group.is_empty() || group.len() > GROUP_BYTES_MAX {
        return Err(InvalidSpec::new(
            "group",
            format!("length must be 1..={GROUP_BYTES_MAX}"),
        ));
    }
    if group.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(InvalidSpec::new(
            "group",
            format!("{group:?} contains whitespace or a control character"),
        ));
    }
    Ok(())
}

/// Addresses present and bounded, shard count in range.
pub fn validate_node_info(info: &NodeInfo) -> Result<(), InvalidSpec> {
    for (field, addr) in [
        ("raft_addr", &info.raft_addr),
        ("client_addr", &info.client_addr),
    ] {
        if addr.is_empty() || addr.len() > NODE_ADDR_BYTES_MAX {
            return Err(InvalidSpec::new(
                field,
                format!("length must be 1..={NODE_ADDR_BYTES_MAX}"),
            ));
        }
    }
    if info.shard_count == 0 || info.shard_count > SHARDS_PER_NODE_MAX {
        return Err(InvalidSpec::new(
            "shard_count",
            format!("{} is outside 1..={SHARDS_PER_NODE_MAX}", info.shard_count),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    #[test]
    fn full_wildcard_takes_one_partition() {
        let mut spec = StreamSpec::new("s", "orders.>");
        spec.partitions = 3;
        assert!(validate_spec(&spec).is_err());
        spec.partitions = 1;
        assert!(validate_spec(&spec).is_ok());
        let mut spec = StreamSpec::new("s", "orders.*");
        spec.partitions = 3;
        assert!(validate_spec(&spec).is_ok());
    }

    use super::*;

    #[test]
    fn stream_names() {
        for good in ["a", "orders", "Orders-2024.v1", "a_b", &"x".repeat(255)] {
            assert_eq!(validate_stream_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            ".hidden",
            "_internal",
            "has space",
            "slash/name",
            "ünï",
            &"x".repeat(256),
        ] {
            assert!(validate_stream_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn subjects() {
        for good in [
            "a",
            "orders.eu",
            "orders.*",
            "orders.>",
            "*",
            ">",
            "a.*.c.>",
        ] {
            assert_eq!(validate_subject(good), Ok(()), "{good}");
        }
        for bad in [
            "", "a..b", ".a", "a.", "a b", "a.>.b", "a*", "a.b>", "*x", "a\tb", ">.a",
        ] {
            assert!(validate_subject(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn spec_limits() {
        let mut spec = StreamSpec::new("s", "s");
        assert_eq!(validate_spec(&spec), Ok(()));
        spec.partitions = 0;
        assert_eq!(validate_spec(&spec).unwrap_err().field, "partitions");
        spec.partitions = MAX_PARTITIONS_PER_STREAM + 1;
        assert_eq!(validate_spec(&spec).unwrap_err().field, "partitions");
        spec.partitions = MAX_PARTITIONS_PER_STREAM;
        assert_eq!(validate_spec(&spec), Ok(()));
        spec.replication_factor = 0;
        assert_eq!(
            validate_spec(&spec).unwrap_err().field,
            "replication_factor"
        );
        spec.replication_factor = 3;
        for (min_isr, ok) in [(0, false), (1, true), (3, true), (4, false)] {
            spec.min_insync_replicas = min_isr;
            let result = validate_spec(&spec);
            assert_eq!(
                result.is_ok(),
                ok,
                "min_insync_replicas {min_isr}: {result:?}"
            );
        }
        spec.min_insync_replicas = 1;
        spec.replication_factor = 1;
        spec.retention_bytes = Some(0);
        assert_eq!(validate_spec(&spec).unwrap_err().field, "retention_bytes");
        spec.retention_bytes = None;
        spec.group = Some(String::new());
        assert_eq!(validate_spec(&spec).unwrap_err().field, "group");
    }

    /// Metadata written before `min_insync_replicas` existed still loads.
    #[test]
    fn spec_without_min_insync_replicas_loads_as_one() {
        let mut json = serde_json::to_value(StreamSpec::new("s", "s")).unwrap();
        json.as_object_mut().unwrap().remove("min_insync_replicas");
        let spec: StreamSpec = serde_json::from_value(json).unwrap();
        assert_eq!(spec.min_insync_replicas, 1);
    }
}
