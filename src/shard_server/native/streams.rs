//! CreateStream (kind `0x02`) and DeleteStream (kind `0x03`): forwarded to
//! the control core (`Shard::admin`), which writes them through the
//! metadata leader.

use super::Answer;
use crate::cores::{AdminReply, AdminRequest};
use crate::model::StreamSpec;
use crate::protocol::create_stream::{CreateStreamRequest, CreatedStream};
use crate::protocol::delete_stream::{DeleteStreamRequest, DeleteStreamResponse};
use crate::protocol::error_code::ErrorCode;
use crate::protocol::error_response::ErrorResponse;
use crate::protocol::frame::{Frame, FrameKind};
use crate::protocol::stream_config::StreamConfig;
use crate::shard_server::services::metadata::{client_port, stream_metadata};
use crate::shard_server::Shard;

pub(super) async fn create_stream(shard: &Shard, frame: &Frame) -> Answer {
    let request = CreateStreamRequest::decode(&frame.body)?;
    let spec = spec_of(&request.config);
    match shard.admin(AdminRequest::CreateStream(spec)).await {
        AdminReply::Created {
            record,
            created,
            nodes,
        } => {
            let own_port = shard.settings.base_addr.port();
            let stream = stream_metadata(
                &record,
                |node| client_port(&nodes, node).unwrap_or(own_port),
                &Default::default(),
            );
            Ok(Some((
                FrameKind::CreateStreamResponse,
                CreatedStream { created, stream }.encode(),
            )))
        }
        AdminReply::Error(failure) => Err(ErrorResponse::new(failure.code, failure.message)),
        _ => Err(ErrorResponse::new(
            ErrorCode::Unknown,
            "unexpected create answer",
        )),
    }
}

pub(super) async fn delete_stream(shard: &Shard, frame: &Frame) -> Answer {
    let request = DeleteStreamRequest::decode(&frame.body)?;
    let name = request.name.to_owned();
    match shard.admin(AdminRequest::DeleteStream(name)).await {
        AdminReply::Deleted(_) => Ok(Some((
            FrameKind::DeleteStreamResponse,
            DeleteStreamResponse.encode(),
        ))),
        AdminReply::Error(failure) => Err(ErrorResponse::new(failure.code, failure.message)),
        _ => Err(ErrorResponse::new(
            ErrorCode::Unknown,
            "unexpected delete answer",
        )),
    }
}

/// The spec to create: what the request names, the cluster's defaults for
/// the rest (filled in when the metadata validates it).
fn spec_of(config: &StreamConfig) -> StreamSpec {
    let mut spec = StreamSpec::new(&config.name, &config.subject);
    spec.group = config.group.clone();
    if let Some(partitions) = config.partitions {
        spec.partitions = partitions;
    }
    if let Some(replication_factor) = config.replication_factor {
        spec.replication_factor = u32::from(replication_factor);
    }
    if let Some(min_insync_replicas) = config.min_insync_replicas {
        spec.min_insync_replicas = u32::from(min_insync_replicas);
    }
    spec.retention_age_ms = config.retention_age_ms.max();
    spec.retention_bytes = config.retention_bytes.max();
    spec.retention_messages = config.retention_messages.max();
    spec.compact = config.compact;
    spec
}
