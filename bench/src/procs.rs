//! The processes the harness starts and owns — `nats-server` and `sluice
//! serve` on free loopback ports, with their data and logs in the work
//! directory — through `sluice_testkit`, the harness the tests use too.
//! Each is started in its own process group (a Ctrl-C in the terminal
//! reaches only the harness, which then stops them in order), dies with
//! the bench, and is stopped with SIGTERM, then SIGKILL after a bounded
//! wait, when dropped. Every wait is bounded. Also the CPU time of those
//! processes and of the machine.

// sysconf is a raw syscall.
#![allow(unsafe_code)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use sluice_testkit::{find_nats_server, NatsOptions, OnDrop, Serve, SluiceNode, STOP_TIMEOUT};

/// CPU time (user + system) a process has used so far, from
/// `/proc/<pid>/stat`; `None` where that is not readable.
pub fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = u64::try_from(ticks).ok().filter(|t| *t > 0)?;
    Some(Duration::from_secs_f64(
        (utime + stime) as f64 / ticks as f64,
    ))
}

/// Busy CPU time of the whole machine so far (all CPUs: user, nice,
/// system, irq, softirq and steal from `/proc/stat`).
pub fn machine_busy_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: u64 = [0usize, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|i| fields.get(*i))
        .sum();
    // SAFETY: sysconf has no memory-safety preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = u64::try_from(ticks).ok().filter(|t| *t > 0)?;
    Some(Duration::from_secs_f64(busy as f64 / ticks as f64))
}

/// A `nats-server` on a loopback port.
pub struct NatsServer {
    server: sluice_testkit::NatsServer,
    pub url: String,
}

impl NatsServer {
    /// Starts `bin` with its log (and JetStream store when `jetstream`)
    /// under `dir`; ready when its port accepts connections.
    pub fn start(bin: &Path, dir: &Path, jetstream: bool) -> Result<NatsServer> {
        let hint = || {
            format!(
                "cannot start {} (install nats-server, or pass --nats-bin or --nats-url)",
                bin.display()
            )
        };
        let options = NatsOptions {
            bin: find_nats_server(Some(bin)).with_context(hint)?,
            dir: dir.to_path_buf(),
            ip: IpAddr::from([127, 0, 0, 1]),
            jetstream,
            config: None,
            on_drop: OnDrop::Stop,
        };
        let server = sluice_testkit::NatsServer::start(&options).with_context(hint)?;
        Ok(NatsServer {
            url: server.url.clone(),
            server,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.server.pid()
    }

    pub fn check_alive(&mut self) -> Result<()> {
        self.server.process().check_alive()
    }

    /// SIGTERM, then SIGKILL after a bounded wait (nats-server exits with
    /// status 1 on SIGTERM, so the status says nothing).
    pub fn stop(&mut self) {
        let process = self.server.process();
        if process.is_running() && process.terminate(STOP_TIMEOUT).is_none() {
            eprintln!("sluice-bench: nats-server did not stop within {STOP_TIMEOUT:?}; killed it");
        }
    }
}

/// How to start a Sluice node.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub bin: PathBuf,
    pub nats_url: String,
    pub cores: Option<String>,
    pub sync: String,
    pub spin_us: Option<u64>,
}

/// Starts a node under `dir` (data, config and log) and waits until its
/// admin port answers `/healthz` and every shard port accepts.
pub fn start_node(options: &NodeOptions, dir: &Path) -> Result<SluiceNode> {
    let shards = expected_shards(options.cores.as_deref())?;
    let mut serve = Serve::on_loopback(&options.bin, dir, shards)?;
    if let Some(us) = options.spin_us {
        serve.config = format!("spin_before_park_us = {us}\n");
    }
    serve.nats_url = Some(options.nats_url.clone());
    serve.cores = options.cores.clone();
    serve.flag("--sync", &options.sync);
    serve
        .env
        .push(("RUST_LOG".into(), "warn,sluice=info".into()));
    serve.on_drop = OnDrop::Stop;
    serve.start().with_context(|| {
        format!(
            "cannot start {} (build it with `cargo build --release -p sluice`, or pass --sluice-bin)",
            options.bin.display()
        )
    })
}

/// GET `path` on a node's admin port: the body of a 200 answer.
pub fn admin_get(node: &SluiceNode, path: &str) -> Result<String> {
    match node.admin_get(path)? {
        (200, body) => Ok(body),
        (status, _) => Err(anyhow!("GET {path} on {} answered {status}", node.admin)),
    }
}

/// Finds the `sluice` binary: `--sluice-bin`, else next to `sluice-bench`
/// (cargo puts both in the same target directory), else on `PATH`.
pub fn find_sluice(explicit: Option<&Path>) -> Result<PathBuf> {
    sluice_testkit::find_sluice(explicit).context(match explicit {
        Some(_) => "--sluice-bin",
        None => "pass --sluice-bin",
    })
}

/// Shards a node started with `cores` will run (as `sluice serve` decides).
fn expected_shards(cores: Option<&str>) -> Result<u16> {
    let count = match cores {
        Some(list) => sluice::config::parse_cpu_list(list)
            .map_err(|e| anyhow!("--cores: {e}"))?
            .len(),
        None => sluice::config::default_shard_cpus(sluice::config::online_cpus(), 0).len(),
    };
    u16::try_from(count).context("too many shards")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_times_are_readable() {
        assert!(cpu_time(None).is_some());
        assert!(machine_busy_time().is_some_and(|busy| busy >= cpu_time(None).unwrap_or_default()));
    }
}
