//! ACL management on the wire: `GrantAcl` (kind `0x0C`), `RevokeAcl`
//! (`0x0D`) and `ListAcls` (`0x0E`), and the `AclRule` table they share,
//! converted to and from the metadata's [`AclRule`]. The three kinds live
//! in one file because they are one feature over one table.

use flatbuffers::{FlatBufferBuilder, WIPOffset};

use super::body::{read_body, DecodeError};
use super::generated::protocol as fb;
use crate::model::acl::{AclOperation, AclOperations, AclRule};

/// The wire value of an operation.
pub fn wire_operation(op: AclOperation) -> fb::AclOperation {
    match op {
        AclOperation::Publish => fb::AclOperation::Publish,
        AclOperation::Fetch => fb::AclOperation::Fetch,
        AclOperation::Create => fb::AclOperation::Create,
        AclOperation::Delete => fb::AclOperation::Delete,
        AclOperation::Admin => fb::AclOperation::Admin,
    }
}

/// The operation a wire value names; `None` for a value this build does
/// not know.
pub fn operation_from_wire(op: fb::AclOperation) -> Option<AclOperation> {
    AclOperation::ALL
        .into_iter()
        .find(|known| wire_operation(*known) == op)
}

/// Writes `rule` as an `AclRule` table.
pub fn encode_acl_rule<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    rule: &AclRule,
) -> WIPOffset<fb::AclRule<'a>> {
    let principal = fbb.create_string(&rule.principal);
    let stream_pattern = fbb.create_string(&rule.stream_pattern);
    let operations: Vec<fb::AclOperation> = rule.operations.iter().map(wire_operation).collect();
    let operations = fbb.create_vector(&operations);
    fb::AclRule::create(
        fbb,
        &fb::AclRuleArgs {
            principal: Some(principal),
            stream_pattern: Some(stream_pattern),
            operations: Some(operations),
        },
    )
}

/// Reads a verified `AclRule` table; an unknown operation value is an error
/// naming it (granting or revoking something unknown must not be guessed).
pub fn decode_acl_rule(rule: fb::AclRule<'_>) -> Result<AclRule, String> {
    let mut operations = AclOperations::NONE;
    for op in rule.operations().into_iter().flatten() {
        let known =
            operation_from_wire(op).ok_or_else(|| format!("unknown ACL operation {}", op.0))?;
        operations = operations.union(AclOperations::of([known]));
    }
    Ok(AclRule {
        principal: rule.principal().unwrap_or_default().to_owned(),
        stream_pattern: rule.stream_pattern().unwrap_or_default().to_owned(),
        operations,
    })
}

/// Which rule change a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AclChange {
    /// Add operations to the rule, creating it.
    Grant,
    /// Remove operations (all when empty); a rule left with none goes.
    Revoke,
}

/// `GrantAcl` or `RevokeAcl`: one rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclChangeRequest {
    pub change: AclChange,
    pub rule: AclRule,
}

impl AclChangeRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::new();
        let rule = Some(encode_acl_rule(&mut fbb, &self.rule));
        match self.change {
            AclChange::Grant => {
                let root = fb::GrantAclRequest::create(&mut fbb, &fb::GrantAclRequestArgs { rule });
                fbb.finish_minimal(root);
            }
            AclChange::Revoke => {
                let root =
                    fb::RevokeAclRequest::create(&mut fbb, &fb::RevokeAclRequestArgs { rule });
                fbb.finish_minimal(root);
            }
        }
        fbb.finished_data().to_vec()
    }

    /// A request without a rule, or with an operation this build does not
    /// know, is an error: a change to ACLs is never guessed.
    pub fn decode(change: AclChange, body: &[u8]) -> Result<AclChangeRequest, DecodeError> {
        let (table, rule) = match change {
            AclChange::Grant => (
                "GrantAclRequest",
                read_body::<fb::GrantAclRequest>(body)?.rule(),
            ),
            AclChange::Revoke => (
                "RevokeAclRequest",
                read_body::<fb::RevokeAclRequest>(body)?.rule(),
            ),
        };
        let rule =
            rule.ok_or_else(|| DecodeError::field(table, "rule", "ACL request without a rule"))?;
        let rule =
            decode_acl_rule(rule).map_err(|reason| DecodeError::field(table, "rule", reason))?;
        Ok(AclChangeRequest { change, rule })
    }
}

/// The (empty) answer to `GrantAcl` or `RevokeAcl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AclChangeResponse(pub AclChange);

impl AclChangeResponse {
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::with_capacity(16);
        match self.0 {
            AclChange::Grant => {
                let root = fb::GrantAclResponse::create(&mut fbb, &fb::GrantAclResponseArgs {});
                fbb.finish_minimal(root);
            }
            AclChange::Revoke => {
                let root = fb::RevokeAclResponse::create(&mut fbb, &fb::RevokeAclResponseArgs {});
                fbb.finish_minimal(root);
            }
        }
        fbb.finished_data().to_vec()
    }

    pub fn decode(change: AclChange, body: &[u8]) -> Result<AclChangeResponse, DecodeError> {
        match change {
            AclChange::Grant => read_body::<fb::GrantAclResponse>(body).map(drop)?,
            AclChange::Revoke => read_body::<fb::RevokeAclResponse>(body).map(drop)?,
        }
        Ok(AclChangeResponse(change))
    }
}

/// `ListAcls`: every rule, or those of one principal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListAclsRequest {
    /// `None` (absent or empty on the wire) = every principal.
    pub principal: Option<String>,
}

impl ListAclsRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::new();
        let principal = self.principal.as_deref().map(|p| fbb.create_string(p));
        let root = fb::ListAclsRequest::create(&mut fbb, &fb::ListAclsRequestArgs { principal });
        fbb.finish_minimal(root);
        fbb.finished_data().to_vec()
    }

    pub fn decode(body: &[u8]) -> Result<ListAclsRequest, DecodeError> {
        let request = read_body::<fb::ListAclsRequest>(body)?;
        Ok(ListAclsRequest {
            principal: request
                .principal()
                .filter(|p| !p.is_empty())
                .map(str::to_owned),
        })
    }
}

/// The rules `ListAcls` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListAclsResponse {
    pub rules: Vec<AclRule>,
}

impl ListAclsResponse {
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::with_capacity(256);
        let rules: Vec<_> = self
            .rules
            .iter()
            .map(|rule| encode_acl_rule(&mut fbb, rule))
            .collect();
        let rules = fbb.create_vector(&rules);
        let root = fb::ListAclsResponse::create(
            &mut fbb,
            &fb::ListAclsResponseArgs { rules: Some(rules) },
        );
        fbb.finish_minimal(root);
        fbb.finished_data().to_vec()
    }

    pub fn decode(body: &[u8]) -> Result<ListAclsResponse, DecodeError> {
        let response = read_body::<fb::ListAclsResponse>(body)?;
        let rules = response
            .rules()
            .into_iter()
            .flatten()
            .map(|rule| {
                decode_acl_rule(rule)
                    .map_err(|reason| DecodeError::field("ListAclsResponse", "rules", reason))
            })
            .collect::<Result<Vec<_>, DecodeError>>()?;
        Ok(ListAclsResponse { rules })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::body::read_body;

    #[test]
    fn rules_round_trip_through_the_wire_table() {
        let rule = AclRule {
            principal: "alice".into(),
            stream_pattern: "orders.*".into(),
            operations: AclOperations::of([AclOperation::Publish, AclOperation::Admin]),
        };
        let mut fbb = FlatBufferBuilder::new();
        let root = encode_acl_rule(&mut fbb, &rule);
        fbb.finish(root, None);
        let decoded = read_body::<fb::AclRule>(fbb.finished_data()).unwrap();
        assert_eq!(decode_acl_rule(decoded).unwrap(), rule);
        for op in AclOperation::ALL {
            assert_eq!(operation_from_wire(wire_operation(op)), Some(op));
        }
        assert_eq!(operation_from_wire(fb::AclOperation(200)), None);
    }

    #[test]
    fn acl_requests_round_trip() {
        let rule = AclRule {
            principal: "bob".into(),
            stream_pattern: "*".into(),
            operations: AclOperations::of([AclOperation::Fetch]),
        };
        for change in [AclChange::Grant, AclChange::Revoke] {
            let request = AclChangeRequest {
                change,
                rule: rule.clone(),
            };
            assert_eq!(
                AclChangeRequest::decode(change, &request.encode()),
                Ok(request)
            );
            let answer = AclChangeResponse(change);
            assert_eq!(
                AclChangeResponse::decode(change, &answer.encode()),
                Ok(answer)
            );
        }
        let list = ListAclsRequest {
            principal: Some("bob".into()),
        };
        assert_eq!(ListAclsRequest::decode(&list.encode()), Ok(list));
        let rules = ListAclsResponse { rules: vec![rule] };
        assert_eq!(ListAclsResponse::decode(&rules.encode()), Ok(rules));
    }
}
