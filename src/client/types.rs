//! The owned values the client hands out and takes in. The wire's own
//! values (stream configs, metadata, offsets queries, ...) are the
//! protocol module's typed bodies, re-exported here; what only the client
//! builds (a fetch's decoded records) is defined here.

use shards::batch::DecodedRecord;
use shards::types::Offset;

pub use crate::protocol::create_stream::CreatedStream;
pub use crate::protocol::fetch::FetchStart;
pub use crate::protocol::list_offsets::{ListedOffset, OffsetQuery};
pub use crate::protocol::metadata::{
    BrokerMetadata, ClusterMetadata, PartitionFailure, PartitionMetadata, StreamMetadata,
};
pub use crate::protocol::stream_config::{Limit, StreamConfig};

/// The answer to one fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchResult {
    /// Offset after the last committed record when the server answered.
    pub high_watermark: Offset,
    /// Oldest retained offset.
    pub log_start: Offset,
    /// The fetched records at or after the start position, in offset order.
    pub records: Vec<DecodedRecord>,
    /// Where the next fetch continues: after the last batch received, or the
    /// start position when nothing arrived.
    pub next_offset: Offset,
}
