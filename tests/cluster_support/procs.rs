//! The processes of a test cluster, started by `sluice_testkit`: one
//! nats-server that drops silent clients fast, and `sluice serve` nodes,
//! each with its own directory, killed on drop. Every wait is bounded.

use std::net::{IpAddr, SocketAddr};

use sluice_testkit::{NatsOptions, Serve, SluiceNode};

/// Segment size of test nodes: the default preallocates 1 GiB per segment,
/// three nodes of which would fill a CI disk (and the disk reader reads
/// whole segment files).
const TEST_SEGMENT_BYTES: u64 = 16 << 20;
/// nats-server drops a client that misses this many pings...
const NATS_PING_MAX: u32 = 2;
/// ...sent this often, so a SIGSTOPped or isolated node's subscriptions go
/// away within seconds instead of minutes.
const NATS_PING_INTERVAL: &str = "1s";
/// Lines of a node's log quoted in failure messages.
const LOG_LINES: usize = 80;

/// One nats-server on `ip`, in its own temporary directory.
pub struct Nats {
    _server: sluice_testkit::NatsServer,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Nats {
    pub fn start(ip: IpAddr) -> Nats {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut options = NatsOptions::new(dir.path()).expect("nats-server");
        options.ip = ip;
        options.config = Some(format!(
            "ping_interval: \"{NATS_PING_INTERVAL}\"\nping_max: {NATS_PING_MAX}\n"
        ));
        let server = sluice_testkit::NatsServer::start(&options).expect("start nats-server");
        Nats {
            url: server.url.clone(),
            _server: server,
            _dir: dir,
        }
    }
}

/// How a node is started.
#[derive(Clone, Debug)]
pub struct NodeSettings {
    /// Controller's node liveness timeout (`--node-timeout-ms`).
    pub node_timeout_ms: u64,
    /// ISR shrink after this much follower lag (`--replica-lag-time-max-ms`).
    pub replica_lag_time_max_ms: u64,
}

impl Default for NodeSettings {
    fn default() -> NodeSettings {
        NodeSettings {
            node_timeout_ms: 2000,
            replica_lag_time_max_ms: 2000,
        }
    }
}

/// A `sluice serve` process with one data shard and its own directory (a
/// [`SluiceNode`], which it dereferences to).
pub struct Node {
    pub id: u64,
    pub ip: IpAddr,
    node: SluiceNode,
    _dir: tempfile::TempDir,
}

impl Node {
    /// Starts node `id` on `ip` without waiting for it (see
    /// [`Node::wait_healthy`]). `exec_prefix` runs it inside a network
    /// namespace (`ip netns exec NS`); its ports are then probed on
    /// 127.0.0.1 (they are free in its own namespace anyway).
    pub fn spawn_new(
        id: u64,
        ip: IpAddr,
        nats_url: &str,
        join: Option<SocketAddr>,
        exec_prefix: Vec<String>,
        settings: NodeSettings,
    ) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let probe = if exec_prefix.is_empty() {
            ip
        } else {
            IpAddr::from([127, 0, 0, 1])
        };
        let mut serve =
            Serve::new(super::sluice_bin(), dir.path(), ip, probe, 1).expect("free ports");
        serve.config = format!("segment_bytes = {TEST_SEGMENT_BYTES}\n");
        serve.node_id = Some(id);
        serve.nats_url = Some(nats_url.to_string());
        serve.join = join;
        serve.exec_prefix = exec_prefix;
        serve
            .flag("--node-timeout-ms", settings.node_timeout_ms)
            .flag(
                "--replica-lag-time-max-ms",
                settings.replica_lag_time_max_ms,
            );
        Node {
            id,
            ip,
            node: serve.spawn().expect("spawn sluice"),
            _dir: dir,
        }
    }

    /// Starts the stopped or killed process again, same arguments; does
    /// not wait for it (see [`Node::wait_healthy`]).
    pub fn spawn(&mut self) {
        self.node.spawn().expect("spawn sluice");
    }

    /// Waits for `GET /healthz` → 200 and the shard port (panics with the
    /// log if the process exits or the time runs out).
    pub fn wait_healthy(&mut self) {
        self.node.wait_ready().expect("node healthy");
    }

    pub fn pid(&self) -> u32 {
        self.node.pid().expect("node running")
    }

    /// `GET path` on the admin port: (status, body), `None` if unreachable.
    pub fn admin_get(&self, path: &str) -> Option<(u16, String)> {
        self.node.admin_get(path).ok()
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        self.node.stop().expect("node stops cleanly on SIGTERM");
    }

    pub fn log_tail(&self) -> String {
        self.node.log_tail(LOG_LINES)
    }
}

sluice_testkit::deref_to_node!(Node, node);
