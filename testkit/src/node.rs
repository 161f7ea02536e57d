//! `sluice serve`: finding the binary, its command line, starting it,
//! waiting until it serves, and everything done to a running node.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::http::{healthz_ok, http_get};
use crate::ports::{free_ports_on, LOOPBACK};
use crate::process::{OnDrop, Process, Spec};
use crate::{LOG_TAIL_LINES, START_TIMEOUT};

/// `RUST_LOG` of the nodes tests start.
pub const TEST_RUST_LOG: &str = "info,openraft=warn,async_nats=warn";

/// Finds the `sluice` binary: `explicit` if given, else next to this
/// executable (cargo puts a crate's binaries together in one target
/// directory; tests run one level down, in `deps`), else on `PATH`.
pub fn find_sluice(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        if path.is_file() {
            return Ok(path.to_path_buf());
        }
        bail!("{} is not a file", path.display());
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            for candidate in [dir.join("sluice"), dir.join("../sluice")] {
                if candidate.is_file() {
                    return Ok(candidate);
                }
            }
        }
    }
    crate::nats::on_path(Path::new("sluice")).with_context(|| {
        "cannot find the sluice binary next to this executable or on PATH; \
         build it (`cargo build --release -p sluice`)"
    })
}

/// The `--cores` of a test node with `shards` data shards: CPUs 1, 2, …
/// (the control core takes 0), wrapping around on a small machine.
pub fn test_cores(shards: u16) -> String {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (0..usize::from(shards))
        .map(|i| ((i + 1) % cpus).to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// A `sluice serve` command line, with the files it needs.
#[derive(Clone, Debug)]
pub struct Serve {
    /// The `sluice` binary (see [`find_sluice`]).
    pub bin: PathBuf,
    /// Its `sluice.toml` and `sluice.log` go here.
    pub dir: PathBuf,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// Contents of its `sluice.toml` (written before every start).
    pub config: String,
    /// `--node-id`.
    pub node_id: Option<u64>,
    /// `--nats-url`; `None`: `sluice serve` starts its own nats-server.
    pub nats_url: Option<String>,
    /// `--listen`: shard 0's port; shard k listens on the port + k.
    pub listen: SocketAddr,
    /// `--admin`.
    pub admin: SocketAddr,
    /// `--raft`.
    pub raft: SocketAddr,
    /// `--join`.
    pub join: Option<SocketAddr>,
    /// `--cores`; `None`: the server's default.
    pub cores: Option<String>,
    /// Data shards the node will run (what readiness waits for).
    pub shards: u16,
    /// Further flags.
    pub flags: Vec<String>,
    /// Environment of the process (`RUST_LOG` is [`TEST_RUST_LOG`]
    /// unless set here).
    pub env: Vec<(String, String)>,
    /// A command the node runs under (`ip netns exec NS`).
    pub exec_prefix: Vec<String>,
    /// What dropping the node does.
    pub on_drop: OnDrop,
}

impl Serve {
    /// A node of `shards` shards on `ip` with fresh free ports (probed on
    /// `ports_ip`, which differs from `ip` for a node inside a network
    /// namespace), its data in `dir/data`, no `sluice.toml` settings yet.
    pub fn new(bin: &Path, dir: &Path, ip: IpAddr, ports_ip: IpAddr, shards: u16) -> Result<Serve> {
        Ok(Serve {
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            data_dir: dir.join("data"),
            config: String::new(),
            node_id: None,
            nats_url: None,
            listen: SocketAddr::new(ip, free_ports_on(ports_ip, shards)?),
            admin: SocketAddr::new(ip, free_ports_on(ports_ip, 1)?),
            raft: SocketAddr::new(ip, free_ports_on(ports_ip, 1)?),
            join: None,
            cores: Some(test_cores(shards)),
            shards,
            flags: Vec::new(),
            env: Vec::new(),
            exec_prefix: Vec::new(),
            on_drop: OnDrop::Kill,
        })
    }

    /// [`Serve::new`] on 127.0.0.1.
    pub fn on_loopback(bin: &Path, dir: &Path, shards: u16) -> Result<Serve> {
        Serve::new(bin, dir, LOOPBACK, LOOPBACK, shards)
    }

    /// Its `sluice.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("sluice.toml")
    }

    /// Its stdout and stderr.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("sluice.log")
    }

    /// Appends a flag and its value.
    pub fn flag(&mut self, name: &str, value: impl ToString) -> &mut Serve {
        self.flags.push(name.to_string());
        self.flags.push(value.to_string());
        self
    }

    fn spec(&self) -> Spec {
        let what = match self.node_id {
            Some(id) => format!("sluice node {id}"),
            None => "sluice".to_string(),
        };
        let (program, prefix): (PathBuf, &[String]) = match self.exec_prefix.split_first() {
            Some((first, rest)) => (PathBuf::from(first), rest),
            None => (self.bin.clone(), &[]),
        };
        let mut spec = Spec::new(what, program, self.log_path());
        spec.args(prefix);
        if !self.exec_prefix.is_empty() {
            spec.arg(&self.bin);
        }
        spec.arg("serve")
            .arg("--config")
            .arg(self.config_path())
            .arg("--data-dir")
            .arg(&self.data_dir);
        if let Some(id) = self.node_id {
            spec.args(["--node-id".to_string(), id.to_string()]);
        }
        if let Some(url) = &self.nats_url {
            spec.args(["--nats-url", url]);
        }
        spec.args([
            "--listen".to_string(),
            self.listen.to_string(),
            "--admin".to_string(),
            self.admin.to_string(),
            "--raft".to_string(),
            self.raft.to_string(),
        ]);
        if let Some(join) = self.join {
            spec.args(["--join".to_string(), join.to_string()]);
        }
        if let Some(cores) = &self.cores {
            spec.args(["--cores", cores]);
        }
        spec.args(&self.flags);
        if !self.env.iter().any(|(k, _)| k == "RUST_LOG") {
            spec.env("RUST_LOG", TEST_RUST_LOG);
        }
        for (key, value) in &self.env {
            spec.env(key, value);
        }
        spec.own_group = self.on_drop == OnDrop::Stop;
        spec.on_drop = self.on_drop;
        spec
    }

    /// Starts the node without waiting (see [`SluiceNode::wait_ready`]).
    pub fn spawn(self) -> Result<SluiceNode> {
        let mut node = SluiceNode {
            listen: self.listen,
            admin: self.admin,
            raft: self.raft,
            data_dir: self.data_dir.clone(),
            log: self.log_path(),
            shards: self.shards,
            process: None,
            serve: self,
        };
        node.spawn()?;
        Ok(node)
    }

    /// Starts the node and returns once it serves ([`SluiceNode::wait_ready`]).
    pub fn start(self) -> Result<SluiceNode> {
        let mut node = self.spawn()?;
        node.wait_ready()?;
        Ok(node)
    }
}

/// A `sluice serve` process that can be stopped, killed, paused and
/// started again on the same data directory, ports and command line.
#[derive(Debug)]
pub struct SluiceNode {
    /// Shard 0's port; shard k listens on the port + k.
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub raft: SocketAddr,
    pub data_dir: PathBuf,
    /// Its stdout and stderr.
    pub log: PathBuf,
    pub shards: u16,
    serve: Serve,
    process: Option<Process>,
}

impl SluiceNode {
    /// How it was started.
    pub fn serve(&self) -> &Serve {
        &self.serve
    }

    /// Starts the process again (same arguments, data and ports; the
    /// `sluice.toml` written anew); it must not be running. Does not wait.
    pub fn spawn(&mut self) -> Result<()> {
        if self.is_running() {
            bail!("{} already running", self.describe());
        }
        std::fs::create_dir_all(&self.serve.dir)?;
        let config = self.serve.config_path();
        std::fs::write(&config, &self.serve.config)
            .with_context(|| format!("write {}", config.display()))?;
        match &mut self.process {
            Some(process) => process.respawn(),
            None => {
                self.process = Some(Process::start(self.serve.spec())?);
                Ok(())
            }
        }
    }

    fn describe(&self) -> String {
        self.serve.spec().what
    }

    /// Waits until `/healthz` answers 200 (every shard has opened its
    /// partitions, the join is done) and every shard port accepts; fails
    /// with the log if the process exits first or [`START_TIMEOUT`] passes.
    pub fn wait_ready(&mut self) -> Result<()> {
        let admin = self.admin;
        let shard_addrs: Vec<SocketAddr> = (0..self.shards).map(|k| self.shard_addr(k)).collect();
        let process = self.process_mut()?;
        process.wait_until("/healthz to answer 200", START_TIMEOUT, || {
            healthz_ok(admin, Duration::from_secs(2))
        })?;
        for addr in shard_addrs {
            process.wait_until(&format!("shard port {addr}"), START_TIMEOUT, || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            })?;
        }
        Ok(())
    }

    /// Kills the process if running, then [`SluiceNode::spawn`] and
    /// [`SluiceNode::wait_ready`].
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()?;
        self.wait_ready()
    }

    fn process_mut(&mut self) -> Result<&mut Process> {
        let what = self.describe();
        self.process
            .as_mut()
            .filter(|p| p.is_running())
            .with_context(|| format!("{what} is not running"))
    }

    /// The address of shard `shard`.
    pub fn shard_addr(&self, shard: u16) -> SocketAddr {
        SocketAddr::new(self.listen.ip(), self.listen.port() + shard)
    }

    /// Whether the process runs (started, not stopped, killed or found
    /// exited).
    pub fn is_running(&self) -> bool {
        self.process.as_ref().is_some_and(Process::is_running)
    }

    /// Its process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(Process::pid)
    }

    /// Fails (with the log) if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        match &mut self.process {
            Some(process) => process.check_alive(),
            None => Ok(()),
        }
    }

    /// Whether `GET /healthz` answers 200.
    pub fn healthy(&self) -> bool {
        healthz_ok(self.admin, Duration::from_secs(2))
    }

    /// `GET path` on the admin port: (status, body).
    pub fn admin_get(&self, path: &str) -> Result<(u16, String)> {
        http_get(self.admin, path)
    }

    /// Sends `signal` to the process, if it runs.
    pub fn signal(&self, signal: libc::c_int) {
        if let Some(process) = &self.process {
            process.signal(signal);
        }
    }

    /// SIGSTOP.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    /// SIGKILL: no shutdown, no final sync.
    pub fn kill(&mut self) {
        if let Some(process) = &mut self.process {
            process.kill();
        }
    }

    /// SIGTERM and a clean exit within the stop timeout (see
    /// [`Process::stop`]).
    pub fn stop(&mut self) -> Result<()> {
        match &mut self.process {
            Some(process) => process.stop(),
            None => Ok(()),
        }
    }

    /// SIGTERM, then at most `limit` for the exit: its status and how long
    /// it took, or `None` (then it is SIGKILLed).
    pub fn terminate(&mut self, limit: Duration) -> Option<(std::process::ExitStatus, Duration)> {
        self.process.as_mut()?.terminate(limit)
    }

    /// The last lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        crate::log_tail(&self.log, lines)
    }

    /// The last lines of its log, as many as failure messages quote.
    pub fn log(&self) -> String {
        self.log_tail(LOG_TAIL_LINES)
    }
}
