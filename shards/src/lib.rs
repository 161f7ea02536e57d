//! # shards — Sluice's storage engine
//!
//! (Overview is written once the modules below exist.)

pub mod batch;
pub mod constants;
pub mod error;
mod event;
mod index;
pub mod io;
pub mod log;
pub mod ring;
pub mod segment;
pub mod testing;
mod time_index;
pub mod types;
