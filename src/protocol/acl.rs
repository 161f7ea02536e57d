//! ACL rules on the wire (`AclRule`, kinds 0x0C-0x0E): conversion between
//! the flatbuffers tables and the metadata's [`AclRule`], shared by the
//! server and the client.

use flatbuffers::{FlatBufferBuilder, WIPOffset};

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
}
