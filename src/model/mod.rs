//! The domain model: nodes, streams, partition assignments, ACL rules, and
//! the metadata the cluster replicates, with the rules a valid value keeps.
//!
//! Plain data and pure functions. This module names no openraft, tokio or
//! wire type, so the protocol, auth, limits, client, cursor and shard code
//! can use the model without depending on the raft machinery in
//! `crate::cluster`, which replicates it (the type configuration, storage,
//! network, and the state machine's `Metadata::apply`). It is the lowest
//! layer of the server crate: it uses nothing of the crate but itself.
//!
//! - `node.rs`: [`NodeId`], [`NodeInfo`].
//! - `stream.rs`: [`StreamId`], [`StreamSpec`], [`PartitionAssignment`],
//!   [`StreamRecord`], the internal streams' names.
//! - `metadata.rs`: [`Metadata`], [`MetadataCommand`], [`MetadataResponse`].
//! - `acl.rs`: ACL rules and the [`acl::AclTable`] index shards check.
//! - `validate.rs`: the rules for specs, names and node announcements,
//!   `limits.rs`: the bounds they enforce.

pub mod acl;
pub mod limits;
mod metadata;
mod node;
mod stream;
mod validate;

pub use self::metadata::{Metadata, MetadataCommand, MetadataResponse};
#[cfg(test)]
pub(crate) use self::node::{nid, nids};
pub use self::node::{InvalidNodeId, NodeId, NodeInfo};
pub use self::stream::{
    PartitionAssignment, StreamId, StreamRecord, StreamSpec, CURSORS_STREAM,
    MIN_INSYNC_REPLICAS_DEFAULT,
};
pub use self::validate::{
    validate_node_info, validate_spec, validate_stream_name, validate_subject, InvalidSpec,
    INTERNAL_STREAM_NAMES,
};
