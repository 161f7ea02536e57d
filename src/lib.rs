//! # sluice — the server: NATS bridge, metadata, consumer protocol.

pub mod auth;
pub mod client;
pub mod cluster;
pub mod config;
pub mod control;
pub mod cores;
pub mod cursor;
pub mod limits;
pub mod model;
pub mod process;
pub mod protocol;
pub mod server;
pub mod shard_server;
pub mod units;
