//! # sluice-kafka — the Kafka wire layer of Sluice
//!
//! Sluice's segment files are Kafka RecordBatch v2, byte for byte, so the
//! shards can serve Kafka clients the bytes they store. This crate holds
//! everything about the Kafka protocol that does not need a shard: it knows
//! nothing of glommio, NATS or the metadata cluster, and every function in
//! it is pure and unit-tested.
//!
//! ## Trust
//!
//! Requests come from the network and are untrusted. Responses are encoded
//! with the `kafka-protocol` crate (generated from Apache Kafka's own
//! schemas), but requests are **not** decoded with it: its decoders size
//! vectors from the element count on the wire before reading a single
//! element, so a few bytes declaring 2³¹ elements abort the process on the
//! allocation. Requests are decoded here instead, every count checked
//! against the bytes that remain and a named limit before anything is
//! allocated, into the crate's own request types (so handlers and tests
//! share one model); tests use the crate's encoders as the oracle.
//!
//! ## Code map
//!
//! - [`fetch`]: the FetchResponse laid out for `sendfile`: encoded fields
//!   with a slot for each partition's file range.
//! - [`producer`]: idempotent-producer sequence state per partition.
//! - [`broker`]: the Kafka broker id of each (node, shard).
//! - [`sasl`]: SASL PLAIN parsing.
//! - [`group`]: the classic consumer-group coordinator, a pure state machine the shard drives.

#![warn(missing_docs)]

pub mod broker;
pub mod fetch;
pub mod group;
pub mod producer;
pub mod sasl;

pub use kafka_protocol;
