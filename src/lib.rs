//! # sluice — the server: NATS bridge, metadata, consumer protocol.

pub mod cluster;
pub mod protocol;
