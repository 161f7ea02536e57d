//! The processes of a test cluster: one nats-server and `sluice serve`
//! nodes, each with its own directory, killed on drop. Every wait is bounded.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest a process gets to come up (a loaded 2-CPU CI machine).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a graceful stop may take.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Segment size of test nodes: the default preallocates 1 GiB per segment,
/// three nodes of which would fill a CI disk (and the disk reader reads
/// whole segment files).
const TEST_SEGMENT_BYTES: u64 = 16 << 20;
/// nats-server drops a client that misses this many pings...
const NATS_PING_MAX: u32 = 2;
/// ...sent this often, so a SIGSTOPped or isolated node's subscriptions go
/// away within seconds instead of minutes.
const NATS_PING_INTERVAL: &str = "1s";

/// A free TCP port on `ip` for a server (see [`super::ports`]).
pub fn free_port(ip: IpAddr) -> u16 {
    super::ports::free_ports_on(ip, 1)
}

/// The last lines of a log file.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(lines).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// Makes `command`'s process die with the test (SIGKILL when the spawning
/// thread exits), so a test binary killed from outside leaves no nodes.
pub use sluice::process::die_with_parent;

#[allow(unsafe_code)] // kill(2)
pub fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on a pid we spawned and have not reaped yet; at worst
    // it returns ESRCH.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// One nats-server on a port it picks itself (`-p -1`), found through its
/// ports file.
pub struct Nats {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Nats {
    pub fn start(ip: IpAddr) -> Nats {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("nats.conf");
        std::fs::write(
            &config,
            format!("ping_interval: \"{NATS_PING_INTERVAL}\"\nping_max: {NATS_PING_MAX}\n"),
        )
        .expect("write nats.conf");
        let log = dir.path().join("nats.log");
        let mut command = Command::new("nats-server");
        die_with_parent(&mut command);
        let mut child = command
            .arg("-c")
            .arg(&config)
            .args(["-a", &ip.to_string(), "-p", "-1", "--ports_file_dir"])
            .arg(dir.path())
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server must be installed (tools/test installs it)");
        let ports_file = dir.path().join(format!("nats-server_{}.ports", child.id()));
        let started = Instant::now();
        let url = loop {
            if let Some(url) = std::fs::read_to_string(&ports_file)
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .and_then(|v| v["nats"][0].as_str().map(str::to_string))
            {
                break url;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("nats-server exited with {status}:\n{}", log_tail(&log, 30));
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "nats-server wrote no ports file in {START_TIMEOUT:?}:\n{}",
                log_tail(&log, 30)
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Nats {
            child,
            url,
            _dir: dir,
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// A `sluice serve` process with one data shard and its own directory.
pub struct Node {
    pub id: u64,
    child: Option<Child>,
    pub ip: IpAddr,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub raft: SocketAddr,
    join: Option<SocketAddr>,
    nats_url: String,
    /// `ip netns exec NS` when the node lives in a network namespace.
    exec_prefix: Vec<String>,
    settings: NodeSettings,
    pub log: PathBuf,
    config: PathBuf,
    stopped: bool,
    _dir: tempfile::TempDir,
}

impl Node {
    /// Prepares a node (not started). `ports_ip` is where free ports are
    /// probed (the root namespace; a namespaced node's ports are free in its
    /// own namespace anyway).
    pub fn new(
        id: u64,
        ip: IpAddr,
        nats_url: &str,
        join: Option<SocketAddr>,
        exec_prefix: Vec<String>,
        settings: NodeSettings,
    ) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("sluice.toml");
        std::fs::write(&config, format!("segment_bytes = {TEST_SEGMENT_BYTES}\n"))
            .expect("write sluice.toml");
        let probe = if exec_prefix.is_empty() {
            ip
        } else {
            IpAddr::from([127, 0, 0, 1])
        };
        Node {
            id,
            child: None,
            ip,
            data_dir: dir.path().join("data"),
            listen: SocketAddr::new(ip, free_port(probe)),
            admin: SocketAddr::new(ip, free_port(probe)),
            raft: SocketAddr::new(ip, free_port(probe)),
            join,
            nats_url: nats_url.to_string(),
            exec_prefix,
            settings,
            log: dir.path().join("sluice.log"),
            config,
            stopped: false,
            _dir: dir,
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("node running").id()
    }

    /// The shard CPU: CPU 1 when there is one (the control core takes 0).
    fn cores_arg() -> String {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cpus > 1 { "1" } else { "0" }.to_string()
    }

    /// Spawns the process; does not wait for it (see [`Node::wait_healthy`]).
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "node {} already running", self.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let (program, prefix_args): (String, &[String]) = match self.exec_prefix.split_first() {
            Some((first, rest)) => (first.clone(), rest),
            None => (String::new(), &[]),
        };
        let mut command = if program.is_empty() {
            Command::new(env!("CARGO_BIN_EXE_sluice"))
        } else {
            let mut c = Command::new(program);
            c.args(prefix_args).arg(env!("CARGO_BIN_EXE_sluice"));
            c
        };
        command
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .args(["--node-id", &self.id.to_string()])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--nats-url", &self.nats_url])
            .args(["--listen", &self.listen.to_string()])
            .args(["--admin", &self.admin.to_string()])
            .args(["--raft", &self.raft.to_string()])
            .args(["--cores", &Self::cores_arg()])
            .args([
                "--node-timeout-ms",
                &self.settings.node_timeout_ms.to_string(),
            ])
            .args([
                "--replica-lag-time-max-ms",
                &self.settings.replica_lag_time_max_ms.to_string(),
            ]);
        die_with_parent(&mut command);
        if let Some(join) = self.join {
            command.args(["--join", &join.to_string()]);
        }
        let child = command
            .env("RUST_LOG", "info,openraft=warn,async_nats=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log clone"))
            .stderr(log)
            .spawn()
            .expect("spawn sluice");
        self.child = Some(child);
        self.stopped = false;
    }

    /// Waits for `GET /healthz` → 200 (panics with the log if the process
    /// exits or the time runs out).
    pub fn wait_healthy(&mut self) {
        let started = Instant::now();
        loop {
            if self.healthy() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "node {} exited with {status} before it was healthy; log:\n{}",
                    self.id,
                    self.log_tail()
                );
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "node {} not healthy within {START_TIMEOUT:?}; log:\n{}",
                self.id,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn healthy(&self) -> bool {
        self.admin_get("/healthz")
            .is_some_and(|(status, _)| status == 200)
    }

    /// `GET path` on the admin port: (status, body), `None` if unreachable.
    pub fn admin_get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream =
            TcpStream::connect_timeout(&self.admin, Duration::from_millis(500)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let status = response.split(' ').nth(1)?.parse().ok()?;
        let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        Some((status, body.to_string()))
    }

    /// SIGKILL: no chance to sync or say goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(child.id(), libc::SIGCONT);
        signal(child.id(), libc::SIGTERM);
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                assert!(
                    status.success(),
                    "node {} exited with {status} on SIGTERM; log:\n{}",
                    self.id,
                    self.log_tail()
                );
                self.stopped = true;
                return;
            }
            if started.elapsed() > STOP_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "node {} did not stop within {STOP_TIMEOUT:?}; log:\n{}",
                    self.id,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pause(&self) {
        signal(self.pid(), libc::SIGSTOP);
    }

    pub fn resume(&self) {
        signal(self.pid(), libc::SIGCONT);
    }

    pub fn log_tail(&self) -> String {
        log_tail(&self.log, 80)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
