//! Black-box test harness: real `nats-server` and `sluice` processes on free
//! loopback ports (started by `sluice_testkit`), each in its own temporary
//! directory, killed and cleaned up when dropped. Every wait is bounded.

#![allow(dead_code)]

pub mod auth;
pub mod limits;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use sluice_testkit::{NatsOptions, Serve, SluiceNode};

/// The `sluice` binary cargo built for these tests.
pub fn sluice_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sluice"))
}

/// A free loopback port for a server (see `sluice_testkit::ports`).
pub fn free_port() -> u16 {
    sluice_testkit::ports::free_port().expect("a free loopback port")
}

/// `count` consecutive free loopback ports (for shard-aware listeners).
pub fn free_port_range(count: u16) -> u16 {
    sluice_testkit::ports::free_port_range(count).expect("free loopback ports")
}

/// The last lines of a log file.
pub fn read_log(path: &Path) -> String {
    sluice_testkit::log_tail(path, sluice_testkit::LOG_TAIL_LINES)
}

/// A `nats-server` on a loopback port, in its own temporary directory.
pub struct NatsServer {
    server: sluice_testkit::NatsServer,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = NatsOptions::new(dir.path()).expect("nats-server");
        let server = sluice_testkit::NatsServer::start(&options).expect("start nats-server");
        NatsServer {
            url: server.url.clone(),
            server,
            _dir: dir,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> Option<u32> {
        self.server.pid()
    }
}

/// What [`Sluice::start_with`] changes from the defaults.
#[derive(Clone, Debug, Default)]
pub struct SluiceOptions {
    /// Data directory (e.g. on a size-capped filesystem); default: a fresh
    /// temporary directory.
    pub data_dir: Option<PathBuf>,
    /// Lines appended to the node's `sluice.toml`.
    pub config_extra: String,
    /// Extra environment variables of the process.
    pub env: Vec<(String, String)>,
}

/// A `sluice serve` process with its own data directory and ports
/// (a [`SluiceNode`], which it dereferences to, in a temporary directory).
pub struct Sluice {
    node: SluiceNode,
    pub nats_url: String,
    _dir: tempfile::TempDir,
}

/// Segment size of test nodes (segments are preallocated on disk).
pub const TEST_SEGMENT_BYTES: u64 = 16 << 20;

/// The `sluice.toml` of a test node: small segments (the 1 GiB default
/// would put a gigabyte on the test machine's disk per partition) unless
/// `extra` sets them, then `extra`.
pub fn test_config(extra: &str) -> String {
    let segment_bytes = if extra.contains("segment_bytes") {
        String::new()
    } else {
        format!("segment_bytes = {TEST_SEGMENT_BYTES}\n")
    };
    format!("{segment_bytes}{extra}\n")
}

impl Sluice {
    /// Starts a node with `shards` data shards (all on the machine's CPUs).
    pub fn start(nats_url: &str, shards: u16) -> Sluice {
        Sluice::start_with(nats_url, shards, SluiceOptions::default())
    }

    /// Like [`Sluice::start`], with `options`.
    pub fn start_with(nats_url: &str, shards: u16, options: SluiceOptions) -> Sluice {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut serve = Serve::on_loopback(sluice_bin(), dir.path(), shards).expect("ports");
        if let Some(data_dir) = options.data_dir {
            serve.data_dir = data_dir;
        }
        serve.config = test_config(&options.config_extra);
        serve.nats_url = Some(nats_url.to_string());
        serve.env = options.env;
        Sluice {
            node: serve.start().expect("start sluice"),
            nats_url: nats_url.to_string(),
            _dir: dir,
        }
    }

    /// Starts a node whose sluice.toml also holds `extra` (TOML).
    pub fn start_with_config(nats_url: &str, shards: u16, extra: &str) -> Sluice {
        let options = SluiceOptions {
            config_extra: extra.to_string(),
            ..SluiceOptions::default()
        };
        Sluice::start_with(nats_url, shards, options)
    }

    /// Sends SIGTERM and waits for a clean exit (status 0).
    pub fn stop(&mut self) {
        self.node.stop().expect("sluice stops cleanly");
    }

    /// Sends SIGTERM and waits at most `limit` for the process to exit:
    /// its exit status and how long it took, or `None` (then it is
    /// SIGKILLed, and the caller fails its test).
    pub fn terminate_within(&mut self, limit: Duration) -> Option<(ExitStatus, Duration)> {
        self.node.terminate(limit)
    }

    /// Stops the node, then starts it again on the same data directory and
    /// ports.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Starts the stopped or killed node again.
    pub fn start_again(&mut self) {
        assert!(!self.node.is_running(), "already running");
        self.node.spawn().expect("start sluice");
        self.node.wait_ready().expect("sluice ready");
    }

    /// GET `path` on the admin port; the body.
    pub fn admin_get(&self, path: &str) -> String {
        self.node.admin_get(path).expect("admin GET").1
    }

    /// A metric's value summed over shards.
    pub fn metric(&self, name: &str) -> u64 {
        self.admin_get("/metrics")
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .sum()
    }
}

sluice_testkit::deref_to_node!(Sluice, node);

/// `sluice serve --node-id id` of a multi-node test, in `dir`: joining
/// `join` (`None` bootstraps a cluster), declaring silent nodes dead after
/// `node_timeout_ms`.
pub fn member(
    id: u64,
    dir: &Path,
    nats_url: &str,
    join: Option<SocketAddr>,
    node_timeout_ms: u64,
) -> Serve {
    let mut serve = Serve::on_loopback(sluice_bin(), dir, 1).expect("ports");
    serve.node_id = Some(id);
    serve.nats_url = Some(nats_url.to_string());
    serve.join = join;
    serve.flag("--node-timeout-ms", node_timeout_ms);
    serve
}

/// A current-thread tokio runtime for async-nats in tests.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}
