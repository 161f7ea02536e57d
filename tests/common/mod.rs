//! Black-box test harness: real `nats-server` and `sluice` processes on free
//! loopback ports, each in its own temporary directory, killed and cleaned
//! up when dropped. Every wait is bounded.

#![allow(dead_code)]

pub mod auth;
pub mod limits;
pub mod ports;

use sluice::process::die_with_parent;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Longest a process gets to come up.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a graceful stop may take before the test fails.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// A free loopback port for a server (see [`ports`]).
pub fn free_port() -> u16 {
    ports::free_ports_on(LOOPBACK, 1)
}

/// `count` consecutive free loopback ports (for shard-aware listeners).
pub fn free_port_range(count: u16) -> u16 {
    ports::free_ports_on(LOOPBACK, u32::from(count))
}

fn wait_for_port(addr: SocketAddr, child: &mut Child, what: &str, log: &Path) {
    let started = Instant::now();
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited with {status} before listening; log:\n{}",
                read_log(log)
            );
        }
        if started.elapsed() > START_TIMEOUT {
            panic!(
                "{what} did not listen on {addr} within {START_TIMEOUT:?}; log:\n{}",
                read_log(log)
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

pub fn read_log(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(60).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// A `nats-server` on a random loopback port.
pub struct NatsServer {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let log = dir.path().join("nats.log");
        let mut child = die_with_parent(&mut Command::new("nats-server"))
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-l"])
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server must be installed (tools/test installs it)");
        wait_for_port(
            SocketAddr::from(([127, 0, 0, 1], port)),
            &mut child,
            "nats-server",
            &log,
        );
        NatsServer {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            _dir: dir,
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// A `sluice serve` process with its own data directory and ports.
pub struct Sluice {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub nats_url: String,
    pub shards: u16,
    log: PathBuf,
    config: PathBuf,
    env: Vec<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

/// Segment size of test nodes (segments are preallocated on disk).
pub const TEST_SEGMENT_BYTES: u64 = 16 << 20;

impl Sluice {
    /// Starts a node with `shards` data shards (all on the machine's CPUs).
    pub fn start(nats_url: &str, shards: u16) -> Sluice {
        Sluice::start_with(nats_url, shards, SluiceOptions::default())
    }

    /// Like [`Sluice::start`], with `options`.
    pub fn start_with(nats_url: &str, shards: u16, options: SluiceOptions) -> Sluice {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = options.data_dir.unwrap_or_else(|| dir.path().join("data"));
        let base = free_port_range(shards);
        let admin_port = free_port();
        let raft_port = free_port();
        let config = dir.path().join("sluice.toml");
        // Segments are preallocated: the 1 GiB default would put a gigabyte
        // on the test machine's disk per partition.
        let extra = options.config_extra;
        let segment_bytes = if extra.contains("segment_bytes") {
            String::new()
        } else {
            format!("segment_bytes = {TEST_SEGMENT_BYTES}\n")
        };
        std::fs::write(
            &config,
            format!("raft = \"127.0.0.1:{raft_port}\"\n{segment_bytes}{extra}\n"),
        )
        .expect("write config");
        let mut node = Sluice {
            child: None,
            data_dir,
            listen: SocketAddr::from(([127, 0, 0, 1], base)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
            nats_url: nats_url.to_string(),
            shards,
            log: dir.path().join("sluice.log"),
            config,
            env: options.env,
            _dir: Some(dir),
        };
        node.spawn();
        node
    }

    /// Starts a node whose sluice.toml also holds `extra` (TOML).
    pub fn start_with_config(nats_url: &str, shards: u16, extra: &str) -> Sluice {
        let options = SluiceOptions {
            config_extra: extra.to_string(),
            ..SluiceOptions::default()
        };
        Sluice::start_with(nats_url, shards, options)
    }

    fn cores_arg(&self) -> String {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        (0..self.shards as usize)
            .map(|i| ((i + 1) % cpus).to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut child = die_with_parent(&mut Command::new(env!("CARGO_BIN_EXE_sluice")))
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--nats-url")
            .arg(&self.nats_url)
            .arg("--listen")
            .arg(self.listen.to_string())
            .arg("--admin")
            .arg(self.admin.to_string())
            .arg("--cores")
            .arg(self.cores_arg())
            .env("RUST_LOG", "info,openraft=warn,async_nats=warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log clone"))
            .stderr(log)
            .spawn()
            .expect("spawn sluice");
        wait_for_port(self.admin, &mut child, "sluice", &self.log);
        // The admin port is bound early; `/healthz` answers once every shard
        // has opened its partitions.
        let started = Instant::now();
        while !self.healthy() {
            if started.elapsed() > START_TIMEOUT {
                panic!("sluice never became healthy; log:\n{}", read_log(&self.log));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        for shard in 0..self.shards {
            let addr = SocketAddr::from(([127, 0, 0, 1], self.listen.port() + shard));
            wait_for_port(addr, &mut child, "sluice shard", &self.log);
        }
        self.child = Some(child);
    }

    fn healthy(&self) -> bool {
        healthz_ok(self.admin, Duration::from_millis(500))
    }

    /// The port of shard `shard`.
    pub fn shard_addr(&self, shard: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.listen.port() + shard))
    }

    /// Sends SIGTERM and waits for a clean exit (status 0).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(&child, libc::SIGTERM);
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                assert!(
                    status.success(),
                    "sluice exited with {status}; log:\n{}",
                    read_log(&self.log)
                );
                return;
            }
            if started.elapsed() > STOP_TIMEOUT {
                let _ = child.kill();
                panic!(
                    "sluice did not stop within {STOP_TIMEOUT:?}; log:\n{}",
                    read_log(&self.log)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits at most `limit` for the process to exit:
    /// its exit status and how long it took, or `None` (then it is
    /// SIGKILLed, and the caller fails its test).
    pub fn terminate_within(&mut self, limit: Duration) -> Option<(ExitStatus, Duration)> {
        let mut child = self.child.take()?;
        signal(&child, libc::SIGTERM);
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some((status, started.elapsed()));
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no chance to sync or say goodbye.
    pub fn kill(&mut self) {
        kill_child(&mut self.child);
    }

    /// Starts again on the same data directory and ports.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        self.spawn();
    }

    /// The server's process id (while running).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    /// GET `path` on the admin port; the body.
    pub fn admin_get(&self, path: &str) -> String {
        use std::io::{Read, Write};
        let mut stream = TcpStream::connect(self.admin).expect("admin connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or_default()
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

impl Drop for Sluice {
    fn drop(&mut self) {
        kill_child(&mut self.child);
    }
}

/// SIGKILL and reap the process, if it runs.
pub fn kill_child(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// `GET /healthz` on a node's admin port answers 200 (read for at most
/// `read_timeout`).
pub fn healthz_ok(admin: SocketAddr, read_timeout: Duration) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect_timeout(&admin, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(read_timeout));
    if write!(stream, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200")
}

/// One `sluice serve --node-id N` process of a multi-node test cluster.
pub struct Member<'a> {
    pub id: u64,
    pub data_dir: &'a Path,
    pub nats_url: &'a str,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub raft: SocketAddr,
    /// Raft address of the member to join; `None` bootstraps a cluster.
    pub join: Option<SocketAddr>,
    pub node_timeout_ms: u64,
    pub replica_lag_time_max_ms: Option<u64>,
    pub config: Option<&'a Path>,
    /// Gets the process's stdout and stderr, appended.
    pub log: &'a Path,
}

impl Member<'_> {
    /// Spawns the process and returns it once `/healthz` answers (after
    /// the join); panics with the log if it exits first or `wait` passes.
    pub fn spawn(&self, wait: Duration) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log)
            .expect("log file");
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        die_with_parent(&mut command);
        command.arg("serve");
        if let Some(config) = self.config {
            command.arg("--config").arg(config);
        }
        command
            .args(["--node-id", &self.id.to_string()])
            .arg("--data-dir")
            .arg(self.data_dir)
            .args(["--nats-url", self.nats_url])
            .args(["--listen", &self.listen.to_string()])
            .args(["--admin", &self.admin.to_string()])
            .args(["--raft", &self.raft.to_string()])
            .args(["--cores", &(1 % cpus).to_string()])
            .args(["--node-timeout-ms", &self.node_timeout_ms.to_string()]);
        if let Some(lag) = self.replica_lag_time_max_ms {
            command.args(["--replica-lag-time-max-ms", &lag.to_string()]);
        }
        if let Some(join) = self.join {
            command.args(["--join", &join.to_string()]);
        }
        let mut child = command
            .env("RUST_LOG", "info,openraft=warn,async_nats=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log clone"))
            .stderr(log)
            .spawn()
            .expect("spawn sluice");
        let started = Instant::now();
        while !healthz_ok(self.admin, Duration::from_secs(2)) {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "node {} exited with {status}; log:\n{}",
                    self.id,
                    read_log(self.log)
                );
            }
            assert!(
                started.elapsed() < wait,
                "node {} never became healthy; log:\n{}",
                self.id,
                read_log(self.log)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    }
}

/// Sends `signal` to a child this test spawned.
#[allow(unsafe_code)] // kill(2)
pub fn signal(child: &Child, signal: libc::c_int) {
    // SAFETY: kill(2) with a pid we spawned and have not reaped; at worst it
    // returns ESRCH.
    unsafe {
        libc::kill(child.id() as libc::pid_t, signal);
    }
}

/// A current-thread tokio runtime for async-nats in tests.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}
