//! `OffsetForLeaderEpoch` (kind `0x0A`, answer `0x8A`): a returning
//! follower asks the partition leader where its latest leader epoch ended in
//! the leader's log, then truncates there before fetching (KIP-101; see
//! `shards::epoch_cache`). Bodies for both sides, shared by the server, the
//! blocking client and the replication tasks.

use flatbuffers::FlatBufferBuilder;
use shards::types::{LeaderEpoch, Offset};

use crate::model::NodeId;
use crate::protocol::body::{read_body, DecodeError};
use crate::protocol::error_code::ErrorCode;
use crate::protocol::generated::protocol as fb;
use crate::protocol::wire;

/// What a follower asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochQuery<'a> {
    pub stream: &'a str,
    pub partition: u32,
    /// The asking node; `None` for a non-replica (wire -1).
    pub replica_id: Option<NodeId>,
    /// The epoch to look up: the follower's latest epoch.
    pub leader_epoch: LeaderEpoch,
    /// The partition's leader epoch as the sender knows it: the leader
    /// refuses a stale one (`FencedLeaderEpoch`) or one newer than its own
    /// (`UnknownLeaderEpoch`). `None` = do not check.
    pub current_leader_epoch: Option<u32>,
}

/// The leader's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochAnswer {
    pub error: Option<ErrorCode>,
    /// The largest epoch ≤ the requested one that the leader knows and where
    /// it ends in the leader's log; `None` = undefined (requested epoch
    /// newer than every epoch there, negative, or no epochs at all).
    pub end: Option<(LeaderEpoch, Offset)>,
}

impl<'a> EpochQuery<'a> {
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::with_capacity(64 + self.stream.len());
        let stream = Some(fbb.create_string(self.stream));
        let root = fb::OffsetForLeaderEpochRequest::create(
            &mut fbb,
            &fb::OffsetForLeaderEpochRequestArgs {
                stream,
                partition: wire::partition_to_wire(self.partition),
                replica_id: wire::optional_node_id_to_wire(self.replica_id),
                leader_epoch: self.leader_epoch.0,
                current_leader_epoch: self.current_leader_epoch.map_or(-1, wire::epoch_to_wire),
            },
        );
        fbb.finish_minimal(root);
        fbb.finished_data().to_vec()
    }

    /// Any negative `replica_id` is a non-replica and any negative current
    /// epoch is "do not check"; a negative `leader_epoch` is kept (the
    /// leader answers it as undefined).
    pub fn decode(body: &'a [u8]) -> Result<EpochQuery<'a>, DecodeError> {
        let request = read_body::<fb::OffsetForLeaderEpochRequest>(body)?;
        Ok(EpochQuery {
            stream: request.stream().unwrap_or_default(),
            partition: wire::partition("OffsetForLeaderEpochRequest", request.partition())?,
            replica_id: NodeId::from_wire(request.replica_id()),
            leader_epoch: LeaderEpoch(request.leader_epoch()),
            current_leader_epoch: u32::try_from(request.current_leader_epoch()).ok(),
        })
    }
}

impl EpochAnswer {
    pub fn encode(&self) -> Vec<u8> {
        let (leader_epoch, end_offset) = match self.end {
            Some((epoch, end)) if self.error.is_none() => (epoch.0, wire::offset_to_wire(end)),
            _ => (-1, -1),
        };
        let mut fbb = FlatBufferBuilder::with_capacity(64);
        let root = fb::OffsetForLeaderEpochResponse::create(
            &mut fbb,
            &fb::OffsetForLeaderEpochResponseArgs {
                error_code: self.error.map_or(0, ErrorCode::code),
                leader_epoch,
                end_offset,
            },
        );
        fbb.finish_minimal(root);
        fbb.finished_data().to_vec()
    }

    /// Reads an answer. An epoch without an offset (or the reverse) is
    /// treated as undefined, as Kafka does for a negative end offset.
    pub fn decode(body: &[u8]) -> Result<EpochAnswer, DecodeError> {
        let response = read_body::<fb::OffsetForLeaderEpochResponse>(body)?;
        let end = match (
            response.leader_epoch(),
            u64::try_from(response.end_offset()),
        ) {
            (epoch, Ok(end)) if epoch >= 0 => Some((LeaderEpoch(epoch), Offset(end))),
            _ => None,
        };
        Ok(EpochAnswer {
            error: ErrorCode::from_wire(response.error_code()),
            end,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_through_the_generated_reader() {
        let query = EpochQuery {
            stream: "orders",
            partition: 3,
            replica_id: NodeId::new(2),
            leader_epoch: LeaderEpoch(7),
            current_leader_epoch: Some(9),
        };
        let body = query.encode();
        let read = read_body::<fb::OffsetForLeaderEpochRequest>(&body).expect("verifies");
        assert_eq!(read.stream(), Some("orders"));
        assert_eq!(read.partition(), 3);
        assert_eq!(read.replica_id(), 2);
        assert_eq!(read.leader_epoch(), 7);
        assert_eq!(read.current_leader_epoch(), 9);
        assert_eq!(EpochQuery::decode(&body), Ok(query.clone()));
        let anonymous = EpochQuery {
            replica_id: None,
            current_leader_epoch: None,
            ..query.clone()
        }
        .encode();
        let read = read_body::<fb::OffsetForLeaderEpochRequest>(&anonymous).expect("verifies");
        assert_eq!(read.replica_id(), -1);
        assert_eq!(read.current_leader_epoch(), -1);
    }

    #[test]
    fn answers_round_trip_and_errors_carry_no_offset() {
        for answer in [
            EpochAnswer {
                error: None,
                end: Some((LeaderEpoch(4), Offset(120))),
            },
            EpochAnswer {
                error: None,
                end: None,
            },
            EpochAnswer {
                error: Some(ErrorCode::FencedLeaderEpoch),
                end: None,
            },
        ] {
            let decoded = EpochAnswer::decode(&answer.encode()).expect("decodes");
            assert_eq!(decoded, answer);
        }
        let refused = EpochAnswer {
            error: Some(ErrorCode::NotLeader),
            end: Some((LeaderEpoch(1), Offset(5))),
        };
        let decoded = EpochAnswer::decode(&refused.encode()).expect("decodes");
        assert_eq!(decoded.end, None);
        assert!(EpochAnswer::decode(&[1, 2, 3]).is_err());
    }
}
