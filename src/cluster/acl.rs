//! Applying `MetadataCommand::GrantAcl` / `RevokeAcl`: the state machine's
//! part of the ACL rules (what a rule is, and the index shards check, are in
//! [`crate::model::acl`]). Deterministic, validated again on apply like every
//! command, so every replica reaches the same rules.

use std::collections::BTreeMap;

use super::apply::Applied;
use crate::model::acl::{validate_principal, validate_stream_pattern, AclOperations};
use crate::model::limits::ACL_RULES_MAX;
use crate::model::{Metadata, MetadataResponse};

impl Metadata {
    fn acl_rule_count(&self) -> usize {
        self.acls.values().map(BTreeMap::len).sum()
    }

    /// Adds `operations` to the rule (principal, pattern), creating it.
    pub(super) fn grant_acl(
        &mut self,
        principal: &str,
        pattern: &str,
        operations: AclOperations,
    ) -> Applied {
        if let Err(reason) =
            validate_principal(principal).and_then(|()| validate_stream_pattern(pattern))
        {
            return Applied::invalid(reason);
        }
        if operations.is_empty() {
            return Applied::invalid("a grant needs at least one operation");
        }
        let existing = self
            .acls
            .get(principal)
            .and_then(|patterns| patterns.get(pattern))
            .copied();
        if existing.is_none() && self.acl_rule_count() >= ACL_RULES_MAX {
            return Applied::invalid(format!("ACL rule limit {ACL_RULES_MAX} reached"));
        }
        let current = existing.unwrap_or_default();
        let granted = current.union(operations);
        if existing == Some(granted) {
            return Applied::unchanged(MetadataResponse::Ok);
        }
        self.acls
            .entry(principal.to_owned())
            .or_default()
            .insert(pattern.to_owned(), granted);
        Applied::changed(MetadataResponse::Ok)
    }

    /// Removes `operations` (every operation when empty) from the rule
    /// (principal, pattern); a rule left with none is dropped. `NotFound`
    /// when there is no such rule.
    pub(super) fn revoke_acl(
        &mut self,
        principal: &str,
        pattern: &str,
        operations: AclOperations,
    ) -> Applied {
        let Some(patterns) = self.acls.get_mut(principal) else {
            return Applied::unchanged(MetadataResponse::NotFound);
        };
        let Some(current) = patterns.get(pattern).copied() else {
            return Applied::unchanged(MetadataResponse::NotFound);
        };
        let removed = if operations.is_empty() {
            AclOperations::all()
        } else {
            operations
        };
        let left = current.without(removed);
        if left == current {
            return Applied::unchanged(MetadataResponse::Ok);
        }
        if left.is_empty() {
            patterns.remove(pattern);
            if patterns.is_empty() {
                self.acls.remove(principal);
            }
        } else {
            patterns.insert(pattern.to_owned(), left);
        }
        Applied::changed(MetadataResponse::Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::acl::{AclOperation, AclRule, AclTable};
    use crate::model::MetadataCommand;

    fn ops(names: &[AclOperation]) -> AclOperations {
        AclOperations::of(names.iter().copied())
    }

    #[test]
    fn grant_merges_and_revoke_removes_operations() {
        let mut metadata = Metadata::default();
        let grant = |m: &mut Metadata, o| {
            m.apply(&MetadataCommand::GrantAcl {
                principal: "alice".into(),
                stream_pattern: "orders.*".into(),
                operations: o,
            })
        };
        let applied = grant(&mut metadata, ops(&[AclOperation::Publish]));
        assert_eq!(
            (applied.response, applied.changed),
            (MetadataResponse::Ok, true)
        );
        let applied = grant(&mut metadata, ops(&[AclOperation::Fetch]));
        assert!(applied.changed);
        let applied = grant(&mut metadata, ops(&[AclOperation::Fetch]));
        assert!(!applied.changed, "granting what is held changes nothing");
        assert_eq!(
            metadata.acl_rules(),
            vec![AclRule {
                principal: "alice".into(),
                stream_pattern: "orders.*".into(),
                operations: ops(&[AclOperation::Publish, AclOperation::Fetch]),
            }]
        );
        let revoke = |m: &mut Metadata, o| {
            m.apply(&MetadataCommand::RevokeAcl {
                principal: "alice".into(),
                stream_pattern: "orders.*".into(),
                operations: o,
            })
        };
        let applied = revoke(&mut metadata, ops(&[AclOperation::Publish]));
        assert!(applied.changed);
        assert_eq!(
            metadata.acls()["alice"]["orders.*"],
            ops(&[AclOperation::Fetch])
        );
        let applied = revoke(&mut metadata, AclOperations::NONE);
        assert!(applied.changed);
        assert!(metadata.acls().is_empty(), "an empty rule is dropped");
        let applied = revoke(&mut metadata, AclOperations::NONE);
        assert_eq!(applied.response, MetadataResponse::NotFound);
    }

    #[test]
    fn invalid_grants_change_nothing() {
        let mut metadata = Metadata::default();
        for (principal, pattern, operations) in [
            ("", "orders", ops(&[AclOperation::Fetch])),
            ("a b", "orders", ops(&[AclOperation::Fetch])),
            ("alice", "", ops(&[AclOperation::Fetch])),
            ("alice", "orders/1", ops(&[AclOperation::Fetch])),
            ("alice", "orders", AclOperations::NONE),
        ] {
            let applied = metadata.apply(&MetadataCommand::GrantAcl {
                principal: principal.into(),
                stream_pattern: pattern.into(),
                operations,
            });
            assert!(
                matches!(applied.response, MetadataResponse::Invalid { .. }),
                "{principal:?} {pattern:?}: {:?}",
                applied.response
            );
            assert!(!applied.changed);
        }
        assert_eq!(metadata, Metadata::default());
    }

    #[test]
    fn rule_count_is_bounded() {
        let mut metadata = Metadata::default();
        for i in 0..ACL_RULES_MAX {
            let applied = metadata.grant_acl("p", &format!("s{i}"), AclOperations::all());
            assert!(applied.changed);
        }
        let applied = metadata.grant_acl("p", "one-more", AclOperations::all());
        assert!(matches!(applied.response, MetadataResponse::Invalid { .. }));
        // Widening an existing rule is still allowed at the limit.
        let applied = metadata.grant_acl("p", "s0", AclOperations::all());
        assert_eq!(applied.response, MetadataResponse::Ok);
    }

    #[test]
    fn table_checks_exact_and_globbed_principals() {
        let mut metadata = Metadata::default();
        metadata.grant_acl("alice", "orders.*", ops(&[AclOperation::Publish]));
        metadata.grant_acl("alice", "audit", ops(&[AclOperation::Fetch]));
        metadata.grant_acl("svc-*", "metrics", ops(&[AclOperation::Fetch]));
        metadata.grant_acl("root", "*", ops(&[AclOperation::Admin]));
        let table = AclTable::from_rules(metadata.acls());
        assert!(table.allows("alice", AclOperation::Publish, "orders.eu"));
        assert!(!table.allows("alice", AclOperation::Fetch, "orders.eu"));
        assert!(table.allows("alice", AclOperation::Fetch, "audit"));
        assert!(!table.allows("alice", AclOperation::Publish, "audit"));
        assert!(!table.allows("bob", AclOperation::Fetch, "audit"));
        assert!(table.allows("svc-billing", AclOperation::Fetch, "metrics"));
        assert!(!table.allows("svc-billing", AclOperation::Fetch, "orders.eu"));
        assert!(table.allows("root", AclOperation::Delete, "anything"));
        assert!(table.is_admin_everywhere("root"));
        assert!(!table.is_admin_everywhere("alice"));
    }
}
