//! The one harness that starts real processes for Sluice's integration
//! tests (`tests/common`, `tests/cluster_support`) and for `sluice-bench`:
//! `nats-server` and `sluice serve` on free ports, each spawned so that it
//! dies with its parent (`sluice::process::die_with_parent`) and is killed
//! (or, for the bench, stopped) when its handle drops, its output in a log
//! file quoted when it fails, readiness waited for with a bound, and
//! SIGKILL, SIGSTOP/SIGCONT, SIGTERM and restart-with-the-same-arguments at
//! hand.
//!
//! Errors are `anyhow` errors that name the process and quote its log:
//! the bench reports them, tests `expect` them.

pub mod http;
pub mod nats;
pub mod node;
pub mod ports;
pub mod process;

use std::path::Path;
use std::time::Duration;

pub use nats::{find_nats_server, NatsOptions, NatsServer};
pub use node::{find_sluice, Serve, SluiceNode};
pub use process::{OnDrop, Process, Spec};

/// Longest a started process may take to become ready (a loaded 2-CPU
/// machine is slow).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a graceful stop may take before SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of a log quoted when its process fails.
pub const LOG_TAIL_LINES: usize = 60;

/// Makes a harness's own node type (a [`SluiceNode`] in field `$field`,
/// plus its temporary directory, id or defaults) dereference to the node,
/// so that everything a `SluiceNode` does is at hand on it.
#[macro_export]
macro_rules! deref_to_node {
    ($type:ty, $field:ident) => {
        impl ::std::ops::Deref for $type {
            type Target = $crate::SluiceNode;

            fn deref(&self) -> &$crate::SluiceNode {
                &self.$field
            }
        }

        impl ::std::ops::DerefMut for $type {
            fn deref_mut(&mut self) -> &mut $crate::SluiceNode {
                &mut self.$field
            }
        }
    };
}

/// The last `lines` lines of a log file (empty if it cannot be read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
