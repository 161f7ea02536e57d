//! GrantAcl / RevokeAcl / ListAcls (kinds `0x0C`-`0x0E`): the rule goes to
//! the control core, which writes it through the metadata leader and
//! answers once this node's shards enforce it. Who may send these is the
//! access gate's business (`shard_server::access`).

use super::Answer;
use crate::cores::{AdminReply, AdminRequest};
use crate::protocol::acl::{
    AclChange, AclChangeRequest, AclChangeResponse, ListAclsRequest, ListAclsResponse,
};
use crate::protocol::error_code::ErrorCode;
use crate::protocol::error_response::ErrorResponse;
use crate::protocol::frame::{Frame, FrameKind};
use crate::shard_server::Shard;

pub(super) async fn change_acl(shard: &Shard, frame: &Frame) -> Answer {
    let (change, kind) = match frame.kind {
        FrameKind::GrantAclRequest => (AclChange::Grant, FrameKind::GrantAclResponse),
        _ => (AclChange::Revoke, FrameKind::RevokeAclResponse),
    };
    let request = AclChangeRequest::decode(change, &frame.body)?;
    let admin = match change {
        AclChange::Grant => AdminRequest::GrantAcl(request.rule),
        AclChange::Revoke => AdminRequest::RevokeAcl(request.rule),
    };
    match shard.admin(admin).await {
        AdminReply::AclChanged => Ok(Some((kind, AclChangeResponse(change).encode()))),
        AdminReply::Error(failure) => Err(ErrorResponse::new(failure.code, failure.message)),
        _ => Err(ErrorResponse::new(
            ErrorCode::Unknown,
            "unexpected ACL answer",
        )),
    }
}

/// ListAcls: the rules as this node's metadata has them.
pub(super) async fn list_acls(shard: &Shard, frame: &Frame) -> Answer {
    let request = ListAclsRequest::decode(&frame.body)?;
    let principal = request.principal;
    match shard.admin(AdminRequest::ListAcls { principal }).await {
        AdminReply::Acls(rules) => Ok(Some((
            FrameKind::ListAclsResponse,
            ListAclsResponse { rules }.encode(),
        ))),
        AdminReply::Error(failure) => Err(ErrorResponse::new(failure.code, failure.message)),
        _ => Err(ErrorResponse::new(
            ErrorCode::Unknown,
            "unexpected ACL answer",
        )),
    }
}
