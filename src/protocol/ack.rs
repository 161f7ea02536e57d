//! The publish ack Sluice sends on NATS once a record is committed, or when
//! it could not be stored.
//!
//! ```text
//! payload = ACK_COOKIE (8 bytes) | flatbuffer, root table Ack (schema/envelope.fbs)
//! ```
//!
//! It goes to the envelope's `ack_inbox`, else to the message's reply
//! subject. An ack with `error_code == 0` means "committed" under the ack
//! policy in force: never sent for data that is not durable.

use flatbuffers::{FlatBufferBuilder, InvalidFlatbuffer};
use shards::types::{Offset, TimestampMs};

use super::body::read_body;
use super::envelope::with_cookie;
use super::error_code::{ErrorCode, NO_ERROR};
use super::generated::envelope as fb;
use super::limits::NATS_PAYLOAD_BYTES_MAX;
use crate::model::NodeId;

/// First bytes of an ack payload: `0xAB "SLCACK" 0x01` (see
/// [`ENVELOPE_COOKIE`](super::envelope::ENVELOPE_COOKIE) for the rationale).
pub const ACK_COOKIE: [u8; 8] = [0xAB, b'S', b'L', b'C', b'A', b'C', b'K', 0x01];

/// Flatbuffer overhead allowed per ack when checking its size before
/// building it; generous so the check is an upper bound.
const ACK_OVERHEAD_BYTES: usize = 256;

/// A publish ack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    pub stream: String,
    pub partition: u32,
    /// Echo of the envelope's correlation id.
    pub correlation_id: Option<String>,
    /// The subject this ack is published to.
    pub ack_inbox: Option<String>,
    /// The node that sent the ack (`None` from a Sluice that did not say).
    pub node: Option<NodeId>,
    pub outcome: AckOutcome,
}

/// What happened to the published record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AckOutcome {
    /// Durable under the ack policy in force.
    Committed {
        offset: Offset,
        commit_timestamp_ms: TimestampMs,
        /// The leader epoch it was committed in, by the sending node as
        /// the partition leader (`None` from a Sluice that did not say).
        /// A publisher can check that an ack came from the leader of a
        /// current epoch (the cluster tests do).
        leader_epoch: Option<u32>,
    },
    /// Not stored (or, for [`ErrorCode::Timeout`], outcome unknown).
    Failed { code: ErrorCode, message: String },
}

/// Why a payload is not a valid ack.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum AckDecodeError {
    #[error("payload does not start with the ack cookie")]
    NoCookie,
    #[error("payload of {payload_bytes} bytes exceeds {NATS_PAYLOAD_BYTES_MAX}")]
    TooLarge { payload_bytes: usize },
    #[error("ack does not verify: {0}")]
    Invalid(#[from] InvalidFlatbuffer),
    #[error("ack has no stream")]
    MissingStream,
    #[error("ack has negative partition {partition}")]
    BadPartition { partition: i32 },
    #[error("committed ack has negative offset {offset}")]
    BadOffset { offset: i64 },
    #[error("committed ack has negative leader epoch {epoch}")]
    BadEpoch { epoch: i32 },
    #[error("ack names node {node}, above the largest node id")]
    BadNode { node: u64 },
}

/// Why an ack could not be encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AckEncodeError {
    #[error("ack of about {bytes} bytes would exceed {NATS_PAYLOAD_BYTES_MAX}")]
    TooLarge { bytes: usize },
    #[error("partition {partition} does not fit the wire's int32")]
    PartitionOutOfRange { partition: u32 },
    #[error("offset {offset} does not fit the wire's int64")]
    OffsetOutOfRange { offset: Offset },
    #[error("leader epoch {epoch} does not fit the wire's int32")]
    EpochOutOfRange { epoch: u32 },
}

impl Ack {
    /// Decodes an ack payload (cookie included).
    pub fn decode(payload: &[u8]) -> Result<Ack, AckDecodeError> {
        let body = payload
            .strip_prefix(&ACK_COOKIE)
            .ok_or(AckDecodeError::NoCookie)?;
        if payload.len() > NATS_PAYLOAD_BYTES_MAX {
            return Err(AckDecodeError::TooLarge {
                payload_bytes: payload.len(),
            });
        }
        let ack =
            read_body::<fb::Ack>(body).map_err(|error| AckDecodeError::Invalid(error.source))?;
        let stream = ack.stream().ok_or(AckDecodeError::MissingStream)?;
        let partition =
            u32::try_from(ack.partition()).map_err(|_| AckDecodeError::BadPartition {
                partition: ack.partition(),
            })?;
        let outcome = match ErrorCode::from_wire(ack.error_code()) {
            Some(code) => AckOutcome::Failed {
                code,
                message: ack.error_message().unwrap_or_default().to_owned(),
            },
            None => AckOutcome::Committed {
                offset: Offset(u64::try_from(ack.offset()).map_err(|_| {
                    AckDecodeError::BadOffset {
                        offset: ack.offset(),
                    }
                })?),
                commit_timestamp_ms: TimestampMs(ack.commit_timestamp_ms()),
                leader_epoch: match ack.leader_epoch() {
                    Some(epoch) => {
                        Some(u32::try_from(epoch).map_err(|_| AckDecodeError::BadEpoch { epoch })?)
                    }
                    None => None,
                },
            },
        };
        Ok(Ack {
            stream: stream.to_owned(),
            partition,
            correlation_id: ack.correlation_id().map(str::to_owned),
            ack_inbox: ack.ack_inbox().map(str::to_owned),
            node: match ack.node_id() {
                Some(node) => Some(NodeId::new(node).ok_or(AckDecodeError::BadNode { node })?),
                None => None,
            },
            outcome,
        })
    }

    fn encoded_bytes_bound(&self) -> usize {
        let message = match &self.outcome {
            AckOutcome::Committed { .. } => 0,
            AckOutcome::Failed { message, .. } => message.len(),
        };
        [
            ACK_COOKIE.len(),
            ACK_OVERHEAD_BYTES,
            self.stream.len(),
            self.correlation_id.as_ref().map_or(0, String::len),
            self.ack_inbox.as_ref().map_or(0, String::len),
            message,
        ]
        .into_iter()
        .fold(0, usize::saturating_add)
    }
}

/// Encodes `ack` as a NATS payload: cookie, then the flatbuffer.
pub fn encode_ack(ack: &Ack) -> Result<Vec<u8>, AckEncodeError> {
    let bytes = ack.encoded_bytes_bound();
    if bytes > NATS_PAYLOAD_BYTES_MAX {
        return Err(AckEncodeError::TooLarge { bytes });
    }
    let partition =
        i32::try_from(ack.partition).map_err(|_| AckEncodeError::PartitionOutOfRange {
            partition: ack.partition,
        })?;
    let (offset, commit_timestamp_ms, error_code, error_message, epoch) = match &ack.outcome {
        AckOutcome::Committed {
            offset,
            commit_timestamp_ms,
            leader_epoch,
        } => {
            let wire_offset = i64::try_from(offset.0)
                .map_err(|_| AckEncodeError::OffsetOutOfRange { offset: *offset })?;
            (
                wire_offset,
                commit_timestamp_ms.0,
                NO_ERROR,
                None,
                *leader_epoch,
            )
        }
        AckOutcome::Failed { code, message } => (-1, 0, code.code(), Some(message.as_str()), None),
    };
    let leader_epoch = match epoch {
        Some(epoch) => {
            Some(i32::try_from(epoch).map_err(|_| AckEncodeError::EpochOutOfRange { epoch })?)
        }
        None => None,
    };

    let mut fbb = FlatBufferBuilder::with_capacity(bytes);
    let stream = Some(fbb.create_string(&ack.stream));
    let correlation_id = ack.correlation_id.as_deref().map(|s| fbb.create_string(s));
    let ack_inbox = ack.ack_inbox.as_deref().map(|s| fbb.create_string(s));
    let error_message = error_message.map(|s| fbb.create_string(s));
    let root = fb::Ack::create(
        &mut fbb,
        &fb::AckArgs {
            stream,
            partition,
            offset,
            correlation_id,
            ack_inbox,
            commit_timestamp_ms,
            error_code,
            error_message,
            node_id: ack.node.map(NodeId::get),
            leader_epoch,
        },
    );
    fbb.finish_minimal(root);
    Ok(with_cookie(&ACK_COOKIE, fbb.finished_data()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn committed() -> Ack {
        Ack {
            stream: "orders".to_owned(),
            partition: 2,
            correlation_id: Some("corr-7".to_owned()),
            ack_inbox: Some("_INBOX.xyz".to_owned()),
            node: NodeId::new(3),
            outcome: AckOutcome::Committed {
                offset: Offset(41),
                commit_timestamp_ms: TimestampMs(1_700_000_000_123),
                leader_epoch: Some(9),
            },
        }
    }

    #[test]
    fn committed_round_trip() {
        let ack = committed();
        let payload = encode_ack(&ack).expect("encode");
        assert!(payload.starts_with(&ACK_COOKIE));
        assert_eq!(Ack::decode(&payload), Ok(ack));
    }

    #[test]
    fn an_ack_without_node_and_epoch_round_trips_without() {
        let ack = Ack {
            node: None,
            outcome: AckOutcome::Committed {
                offset: Offset(41),
                commit_timestamp_ms: TimestampMs(7),
                leader_epoch: None,
            },
            ..committed()
        };
        let payload = encode_ack(&ack).expect("encode");
        assert_eq!(Ack::decode(&payload), Ok(ack));
    }

    #[test]
    fn epochs_beyond_int32_are_refused() {
        let ack = Ack {
            outcome: AckOutcome::Committed {
                offset: Offset(1),
                commit_timestamp_ms: TimestampMs(0),
                leader_epoch: Some(u32::MAX),
            },
            ..committed()
        };
        assert_eq!(
            encode_ack(&ack),
            Err(AckEncodeError::EpochOutOfRange { epoch: u32::MAX })
        );
    }

    #[test]
    fn failed_round_trip() {
        for code in [ErrorCode::NotEnoughReplicas, ErrorCode::DiskFull] {
            let ack = Ack {
                correlation_id: None,
                ack_inbox: None,
                outcome: AckOutcome::Failed {
                    code,
                    message: format!("{code} on orders/2"),
                },
                ..committed()
            };
            let payload = encode_ack(&ack).expect("encode");
            assert_eq!(Ack::decode(&payload), Ok(ack));
        }
    }

    #[test]
    fn envelope_is_not_an_ack() {
        let envelope =
            super::super::envelope::encode_envelope(&Default::default()).expect("encode");
        assert_eq!(Ack::decode(&envelope), Err(AckDecodeError::NoCookie));
        let mut garbage = ACK_COOKIE.to_vec();
        garbage.extend_from_slice(&[0xFF; 16]);
        assert!(matches!(
            Ack::decode(&garbage),
            Err(AckDecodeError::Invalid(_))
        ));
    }

    #[test]
    fn offsets_beyond_int64_are_refused() {
        let ack = Ack {
            outcome: AckOutcome::Committed {
                offset: Offset(u64::MAX),
                commit_timestamp_ms: TimestampMs(0),
                leader_epoch: None,
            },
            ..committed()
        };
        assert_eq!(
            encode_ack(&ack),
            Err(AckEncodeError::OffsetOutOfRange {
                offset: Offset(u64::MAX)
            })
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Ack::decode(&body);
            let _ = Ack::decode(&with_cookie(&ACK_COOKIE, &body));
        }
    }
}
