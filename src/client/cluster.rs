//! `ClusterStatus` (kind 0x0B): nodes, liveness, and every partition's
//! leader, epoch, replicas, ISR, watermarks and per-replica lag.

use super::{Client, ClientError};
use crate::protocol::cluster_status::ClusterStatusRequest;
pub use crate::protocol::cluster_status::{ClusterStatus, NodeState, PartitionState, ReplicaState};
use crate::protocol::frame::FrameKind;

impl Client {
    /// The cluster's nodes and the partitions of `streams` (all when empty).
    pub fn cluster_status(&mut self, streams: &[&str]) -> Result<ClusterStatus, ClientError> {
        let body = ClusterStatusRequest {
            streams: streams.iter().map(|name| (*name).to_owned()).collect(),
        }
        .encode();
        self.call(
            self.bootstrap,
            FrameKind::ClusterStatusRequest,
            &body,
            |c, body| ClusterStatus::decode(&body).map_err(|e| ClientError::protocol(c.addr(), e)),
        )
    }
}
