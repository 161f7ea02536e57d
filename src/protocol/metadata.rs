//! `Metadata` (kind `0x01`, answer `0x81`): the cluster's nodes and, per
//! stream, its settings and every partition's leader, epoch, shard port,
//! replicas, ISR and watermarks. Also the `StreamMetadata` table that
//! `CreateStream` answers with.

use flatbuffers::{FlatBufferBuilder, WIPOffset};
use shards::types::Offset;

use super::body::{read_body, DecodeError};
use super::error_code::ErrorCode;
use super::generated::protocol as fb;
use super::stream_config::StreamConfig;
use super::wire;
use crate::model::NodeId;

/// Which streams to describe; empty = every stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetadataRequest {
    pub streams: Vec<String>,
}

impl MetadataRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::new();
        let streams = wire::create_names(&mut fbb, &self.streams);
        let root = fb::MetadataRequest::create(&mut fbb, &fb::MetadataRequestArgs { streams });
        fbb.finish_minimal(root);
        fbb.finished_data().to_vec()
    }

    /// An absent list and an empty one both mean "every stream".
    pub fn decode(body: &[u8]) -> Result<MetadataRequest, DecodeError> {
        let request = read_body::<fb::MetadataRequest>(body)?;
        Ok(MetadataRequest {
            streams: wire::strings(request.streams()),
        })
    }
}

/// The answer to `Metadata`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterMetadata {
    pub protocol_version: u16,
    pub cluster_id: Option<String>,
    pub brokers: Vec<BrokerMetadata>,
    pub streams: Vec<StreamMetadata>,
}

impl ClusterMetadata {
    pub fn stream(&self, name: &str) -> Option<&StreamMetadata> {
        self.streams
            .iter()
            .find(|stream| stream.config.name == name)
    }

    pub fn broker(&self, node_id: NodeId) -> Option<&BrokerMetadata> {
        self.brokers.iter().find(|broker| broker.node_id == node_id)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::with_capacity(1024);
        let brokers: Vec<_> = self
            .brokers
            .iter()
            .map(|broker| {
                let host = fbb.create_string(&broker.host);
                fb::Broker::create(
                    &mut fbb,
                    &fb::BrokerArgs {
                        node_id: broker.node_id.to_wire(),
                        host: Some(host),
                        port_base: broker.port_base,
                        shard_count: broker.shard_count,
                    },
                )
            })
            .collect();
        let brokers = fbb.create_vector(&brokers);
        let streams: Vec<_> = self
            .streams
            .iter()
            .map(|stream| stream.encode_into(&mut fbb))
            .collect();
        let streams = fbb.create_vector(&streams);
        let cluster_id = self.cluster_id.as_deref().map(|id| fbb.create_string(id));
        let root = fb::MetadataResponse::create(
            &mut fbb,
            &fb::MetadataResponseArgs {
                protocol_version: self.protocol_version,
                cluster_id,
                brokers: Some(brokers),
                streams: Some(streams),
            },
        );
        fbb.finish_minimal(root);
        fbb.finished_data().to_vec()
    }

    pub fn decode(body: &[u8]) -> Result<ClusterMetadata, DecodeError> {
        let response = read_body::<fb::MetadataResponse>(body)?;
        let brokers = response
            .brokers()
            .iter()
            .flatten()
            .map(|broker| {
                Ok(BrokerMetadata {
                    node_id: wire::node_id("Broker", "node_id", broker.node_id())?,
                    host: broker.host().unwrap_or_default().to_owned(),
                    port_base: broker.port_base(),
                    shard_count: broker.shard_count(),
                })
            })
            .collect::<Result<Vec<_>, DecodeError>>()?;
        let streams = response
            .streams()
            .iter()
            .flatten()
            .map(StreamMetadata::decode_table)
            .collect::<Result<Vec<_>, DecodeError>>()?;
        Ok(ClusterMetadata {
            protocol_version: response.protocol_version(),
            cluster_id: response.cluster_id().map(str::to_owned),
            brokers,
            streams,
        })
    }
}

/// One node of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BrokerMetadata {
    pub node_id: NodeId,
    pub host: String,
    /// Shard `i` of this node listens on `port_base + i`.
    pub port_base: u16,
    pub shard_count: u16,
}

/// One stream in a `Metadata` answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamMetadata {
    /// Set for a stream named in the request that could not be described
    /// (e.g. [`ErrorCode::StreamNotFound`]); then only `config.name` is set.
    pub error: Option<ErrorCode>,
    pub config: StreamConfig,
    pub partitions: Vec<PartitionMetadata>,
}

impl StreamMetadata {
    /// The entry for a stream named in a request that is not described:
    /// its name and why.
    pub fn refused(name: &str, error: ErrorCode) -> StreamMetadata {
        StreamMetadata {
            error: Some(error),
            config: StreamConfig {
                name: name.to_owned(),
                ..StreamConfig::default()
            },
            partitions: Vec::new(),
        }
    }

    /// Writes this stream as a `StreamMetadata` table. A refused entry
    /// carries only the name (no subject, no partitions), as the spec says.
    pub fn encode_into<'a>(
        &self,
        fbb: &mut FlatBufferBuilder<'a>,
    ) -> WIPOffset<fb::StreamMetadata<'a>> {
        if let Some(error) = self.error {
            let name = fbb.create_string(&self.config.name);
            let config = fb::StreamConfig::create(
                fbb,
                &fb::StreamConfigArgs {
                    name: Some(name),
                    ..Default::default()
                },
            );
            return fb::StreamMetadata::create(
                fbb,
                &fb::StreamMetadataArgs {
                    error_code: error.code(),
                    config: Some(config),
                    partitions: None,
                },
            );
        }
        let partitions: Vec<_> = self
            .partitions
            .iter()
            .map(|partition| partition.encode_into(fbb))
            .collect();
        let config = self.config.encode_into(fbb);
        let partitions = fbb.create_vector(&partitions);
        fb::StreamMetadata::create(
            fbb,
            &fb::StreamMetadataArgs {
                error_code: 0,
                config: Some(config),
                partitions: Some(partitions),
            },
        )
    }

    pub fn decode_table(stream: fb::StreamMetadata<'_>) -> Result<StreamMetadata, DecodeError> {
        let config = match stream.config() {
            Some(config) => StreamConfig::decode_table(config)?,
            None => StreamConfig::default(),
        };
        let partitions = stream
            .partitions()
            .iter()
            .flatten()
            .map(PartitionMetadata::decode_table)
            .collect::<Result<Vec<_>, DecodeError>>()?;
        Ok(StreamMetadata {
            error: ErrorCode::from_wire(stream.error_code()),
            config,
            partitions,
        })
    }
}

/// Where one partition lives, and its watermarks as last reported to the
/// metadata (they may lag; Fetch and ListOffsets give current values).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionMetadata {
    pub partition: u32,
    /// `None` while the partition has no leader.
    pub leader: Option<NodeId>,
    pub leader_epoch: Option<i32>,
    pub shard_index: u16,
    /// The leader's port for this partition (`port_base + shard_index`).
    pub consumer_port: u16,
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    pub high_watermark: Option<Offset>,
    pub log_start_offset: Option<Offset>,
    /// Set when the partition fail-stopped (e.g. after a failed fsync).
    pub failure: Option<PartitionFailure>,
}

/// Why and when a partition stopped taking writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionFailure {
    /// Operation and errno, e.g. `fdatasync EIO`.
    pub cause: String,
    /// ms since the Unix epoch; `None` if the server did not say.
    pub at_ms: Option<i64>,
}

impl PartitionMetadata {
    const TABLE: &'static str = "PartitionMetadata";

    pub fn encode_into<'a>(
        &self,
        fbb: &mut FlatBufferBuilder<'a>,
    ) -> WIPOffset<fb::PartitionMetadata<'a>> {
        let replicas = fbb.create_vector(&wire::node_ids_to_wire(&self.replicas));
        let isr = fbb.create_vector(&wire::node_ids_to_wire(&self.isr));
        let failure = self
            .failure
            .as_ref()
            .map(|failure| fbb.create_string(&failure.cause));
        fb::PartitionMetadata::create(
            fbb,
            &fb::PartitionMetadataArgs {
                partition: wire::partition_to_wire(self.partition),
                leader: wire::optional_node_id_to_wire(self.leader),
                leader_epoch: self.leader_epoch.filter(|epoch| *epoch >= 0).unwrap_or(-1),
                shard_index: self.shard_index,
                consumer_port: self.consumer_port,
                replicas: Some(replicas),
                isr: Some(isr),
                high_watermark: wire::optional_offset_to_wire(self.high_watermark),
                log_start_offset: wire::optional_offset_to_wire(self.log_start_offset),
                failure,
                failed_at_ms: self
                    .failure
                    .as_ref()
                    .and_then(|failure| failure.at_ms)
                    .unwrap_or(-1),
            },
        )
    }

    pub fn decode_table(
        partition: fb::PartitionMetadata<'_>,
    ) -> Result<PartitionMetadata, DecodeError> {
        let table = Self::TABLE;
        Ok(PartitionMetadata {
            partition: wire::partition(table, partition.partition())?,
            leader: wire::optional_node_id(table, "leader", partition.leader())?,
            // Any negative epoch reads as "none".
            leader_epoch: Some(partition.leader_epoch()).filter(|epoch| *epoch >= 0),
            shard_index: partition.shard_index(),
            consumer_port: partition.consumer_port(),
            replicas: wire::node_ids(table, "replicas", partition.replicas())?,
            isr: wire::node_ids(table, "isr", partition.isr())?,
            high_watermark: wire::optional_offset(
                table,
                "high_watermark",
                partition.high_watermark(),
            )?,
            log_start_offset: wire::optional_offset(
                table,
                "log_start_offset",
                partition.log_start_offset(),
            )?,
            failure: partition.failure().map(|cause| PartitionFailure {
                cause: cause.to_string(),
                at_ms: Some(partition.failed_at_ms()).filter(|at| *at >= 0),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{nid, nids};

    #[test]
    fn metadata_round_trips() {
        let metadata = ClusterMetadata {
            protocol_version: 1,
            cluster_id: None,
            brokers: vec![BrokerMetadata {
                node_id: nid(1),
                host: "127.0.0.1".into(),
                port_base: 7400,
                shard_count: 2,
            }],
            streams: vec![
                StreamMetadata {
                    error: None,
                    config: StreamConfig::new("orders", "orders.>"),
                    partitions: vec![PartitionMetadata {
                        partition: 0,
                        leader: Some(nid(1)),
                        leader_epoch: Some(3),
                        shard_index: 1,
                        consumer_port: 7401,
                        replicas: nids(&[1, 2]),
                        isr: nids(&[1]),
                        high_watermark: Some(Offset(9)),
                        log_start_offset: None,
                        failure: Some(PartitionFailure {
                            cause: "fdatasync EIO".into(),
                            at_ms: Some(5),
                        }),
                    }],
                },
                StreamMetadata::refused("nope", ErrorCode::StreamNotFound),
            ],
        };
        assert_eq!(ClusterMetadata::decode(&metadata.encode()), Ok(metadata));
        let request = MetadataRequest {
            streams: vec!["a".into(), "b".into()],
        };
        assert_eq!(MetadataRequest::decode(&request.encode()), Ok(request));
        assert_eq!(
            MetadataRequest::decode(&MetadataRequest::default().encode()),
            Ok(MetadataRequest::default())
        );
    }
}
