//! `nats-server`: finding the binary, starting it on a port it picks
//! itself, and knowing when it listens.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::process::{OnDrop, Process, Spec};
use crate::START_TIMEOUT;

/// The `nats-server` binary: `explicit` if given (a bare name is looked up
/// on `PATH`), else `nats-server` on `PATH`.
pub fn find_nats_server(explicit: Option<&Path>) -> Result<PathBuf> {
    let wanted = explicit.unwrap_or(Path::new("nats-server"));
    if wanted.components().count() > 1 {
        if wanted.is_file() {
            return Ok(wanted.to_path_buf());
        }
        bail!("{} is not a file", wanted.display());
    }
    on_path(wanted).ok_or_else(|| {
        anyhow!(
            "{} is not on PATH: nats-server must be installed (tools/test installs it)",
            wanted.display()
        )
    })
}

/// `name` in a directory of `PATH`.
pub(crate) fn on_path(name: &Path) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// How to start a `nats-server`.
#[derive(Clone, Debug)]
pub struct NatsOptions {
    /// The binary (see [`find_nats_server`]).
    pub bin: PathBuf,
    /// Its log, ports file, configuration and JetStream store go here.
    pub dir: PathBuf,
    /// Address it listens on; the port is its own pick (`-p -1`), read
    /// back from its ports file, so no other socket can take it first.
    pub ip: IpAddr,
    /// Enables JetStream (file store under `dir/jetstream`).
    pub jetstream: bool,
    /// Contents of a configuration file (`-c`), if any.
    pub config: Option<String>,
    /// What dropping the server does.
    pub on_drop: OnDrop,
}

impl NatsOptions {
    /// `nats-server` from `PATH` on 127.0.0.1, files in `dir`.
    pub fn new(dir: &Path) -> Result<NatsOptions> {
        Ok(NatsOptions {
            bin: find_nats_server(None)?,
            dir: dir.to_path_buf(),
            ip: crate::ports::LOOPBACK,
            jetstream: false,
            config: None,
            on_drop: OnDrop::Kill,
        })
    }
}

/// A running `nats-server`.
#[derive(Debug)]
pub struct NatsServer {
    process: Process,
    /// `nats://ip:port`.
    pub url: String,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl NatsServer {
    /// Starts it and returns once its port accepts connections.
    pub fn start(options: &NatsOptions) -> Result<NatsServer> {
        let dir = &options.dir;
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let mut spec = Spec::new("nats-server", &options.bin, dir.join("nats-server.out"));
        spec.log = dir.join("nats-server.log");
        spec.on_drop = options.on_drop;
        spec.own_group = options.on_drop == OnDrop::Stop;
        if let Some(config) = &options.config {
            let path = dir.join("nats.conf");
            std::fs::write(&path, config).with_context(|| format!("write {}", path.display()))?;
            spec.arg("-c").arg(path);
        }
        spec.args([
            "-a",
            &options.ip.to_string(),
            "-p",
            "-1",
            "--ports_file_dir",
        ])
        .arg(dir)
        .arg("-l")
        .arg(dir.join("nats-server.log"));
        if options.jetstream {
            spec.arg("-js").arg("-sd").arg(dir.join("jetstream"));
        }
        let mut process = Process::start(spec)?;
        let pid = process.pid().unwrap_or_default();
        let ports_file = dir.join(format!("nats-server_{pid}.ports"));
        let mut url = None;
        process.wait_until("its ports file", START_TIMEOUT, || {
            url = std::fs::read_to_string(&ports_file)
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .and_then(|v| v["nats"][0].as_str().map(str::to_string));
            url.is_some()
        })?;
        let url = url.unwrap_or_default();
        let addr: SocketAddr = url
            .strip_prefix("nats://")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| anyhow!("nats-server ports file names {url:?}"))?;
        process.wait_until("nats-server to listen", START_TIMEOUT, || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        })?;
        Ok(NatsServer { process, url, addr })
    }

    /// The process (pid, signals, stop).
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// Its process id.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }
}
