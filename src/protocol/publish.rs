//! `Publish` (kind `0x05`, answer `0x85`): one RecordBatch v2 appended to a
//! partition over TCP. An ack policy of `None` gets no answer unless the
//! publish fails.

use flatbuffers::FlatBufferBuilder;
use shards::types::{Offset, TimestampMs};

use super::body::{read_body, DecodeError};
use super::envelope::AckPolicy;
use super::generated::protocol as fb;
use super::wire;

const TABLE: &str = "PublishRequest";

/// Flatbuffer overhead allowed on top of a publish batch (stream name,
/// vtable, offsets, padding).
pub const PUBLISH_OVERHEAD_BYTES: usize = 512;

/// One publish, borrowed from the received body on the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishRequest<'a> {
    /// Absent on the wire reads as "" (no such stream).
    pub stream: &'a str,
    pub partition: u32,
    /// `None` = the stream's default.
    pub ack_policy: Option<AckPolicy>,
    /// Exactly one RecordBatch v2; `None` when the request carries none
    /// (the server answers `InvalidBatch`).
    pub batch: Option<&'a [u8]>,
}

impl<'a> PublishRequest<'a> {
    pub fn encode(&self) -> Vec<u8> {
        let batch_bytes = self.batch.map_or(0, <[u8]>::len);
        let mut fbb = FlatBufferBuilder::with_capacity(batch_bytes + PUBLISH_OVERHEAD_BYTES);
        self.encode_into(&mut fbb);
        fbb.finished_data().to_vec()
    }

    /// Resets `fbb` and leaves this request as its finished buffer: lets a
    /// hot path reuse one builder (sized for its batches).
    pub fn encode_into(&self, fbb: &mut FlatBufferBuilder<'_>) {
        fbb.reset();
        let batch = self.batch.map(|batch| fbb.create_vector(batch));
        let stream = Some(fbb.create_string(self.stream));
        let root = fb::PublishRequest::create(
            fbb,
            &fb::PublishRequestArgs {
                stream,
                partition: wire::partition_to_wire(self.partition),
                ack_policy: self.ack_policy.map(AckPolicy::to_wire),
                batch,
            },
        );
        fbb.finish_minimal(root);
    }

    pub fn decode(body: &'a [u8]) -> Result<PublishRequest<'a>, DecodeError> {
        let request = read_body::<fb::PublishRequest>(body)?;
        let ack_policy = match request.ack_policy() {
            None => None,
            Some(policy) => Some(AckPolicy::from_wire(policy).ok_or_else(|| {
                DecodeError::field(
                    TABLE,
                    "ack_policy",
                    format!("unknown ack policy {}", policy.0),
                )
            })?),
        };
        Ok(PublishRequest {
            stream: request.stream().unwrap_or_default(),
            partition: wire::partition(TABLE, request.partition())?,
            ack_policy,
            batch: request.batch().map(|batch| batch.bytes()),
        })
    }
}

/// Sent once the batch is committed under the request's ack policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishResponse {
    /// Offset of the first record of the batch.
    pub base_offset: Offset,
    /// Offset of the last record of the batch (never below `base_offset`).
    pub last_offset: Offset,
    pub commit_timestamp: TimestampMs,
}

impl PublishResponse {
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::with_capacity(64);
        let root = fb::PublishResponse::create(
            &mut fbb,
            &fb::PublishResponseArgs {
                base_offset: wire::offset_to_wire(self.base_offset),
                last_offset: wire::offset_to_wire(self.last_offset),
                commit_timestamp_ms: self.commit_timestamp.0,
            },
        );
        fbb.finish_minimal(root);
        fbb.finished_data().to_vec()
    }

    pub fn decode(body: &[u8]) -> Result<PublishResponse, DecodeError> {
        let response = read_body::<fb::PublishResponse>(body)?;
        let base_offset = wire::offset("PublishResponse", "base_offset", response.base_offset())?;
        let last_offset = wire::offset("PublishResponse", "last_offset", response.last_offset())?;
        if last_offset < base_offset {
            return Err(DecodeError::field(
                "PublishResponse",
                "last_offset",
                format!("last_offset {last_offset:?} below base_offset {base_offset:?}"),
            ));
        }
        Ok(PublishResponse {
            base_offset,
            last_offset,
            commit_timestamp: TimestampMs(response.commit_timestamp_ms()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_round_trips() {
        let request = PublishRequest {
            stream: "b",
            partition: 1,
            ack_policy: Some(AckPolicy::Leader),
            batch: Some(&[1, 2, 3]),
        };
        let body = request.encode();
        assert_eq!(PublishRequest::decode(&body), Ok(request));
        let mut fbb = FlatBufferBuilder::new();
        request.encode_into(&mut fbb);
        assert_eq!(fbb.finished_data(), &body[..]);
        let response = PublishResponse {
            base_offset: Offset(3),
            last_offset: Offset(5),
            commit_timestamp: TimestampMs(9),
        };
        assert_eq!(PublishResponse::decode(&response.encode()), Ok(response));
        let backwards = PublishResponse {
            base_offset: Offset(5),
            last_offset: Offset(3),
            commit_timestamp: TimestampMs(9),
        };
        assert!(PublishResponse::decode(&backwards.encode()).is_err());
    }
}
