//! The processes the harness starts and owns: `nats-server` and `sluice
//! serve`, on free loopback ports, with their data and logs in the work
//! directory. Each is started in its own process group (a Ctrl-C in the
//! terminal reaches only the harness, which then stops them in order) and is
//! stopped with SIGTERM, then SIGKILL after a bounded wait, when dropped.
//! Every wait is bounded.

// prctl, kill and sysconf are raw syscalls.
#![allow(unsafe_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// Longest a started server may take to become ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a graceful stop may take before SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of a server's log quoted when it fails.
const LOG_TAIL_LINES: usize = 40;

/// A free loopback port (bound, then released).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// `count` consecutive free loopback ports.
pub fn free_port_range(count: u16) -> Result<u16> {
    for _ in 0..200 {
        let base = free_port()?;
        if base.checked_add(count).is_none() {
            continue;
        }
        if (0..count).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return Ok(base);
        }
    }
    bail!("found no {count} consecutive free loopback ports")
}

/// The last lines of a log file, for error messages.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// A started child process with its log.
struct Owned {
    child: Option<Child>,
    what: &'static str,
    log: PathBuf,
}

impl Owned {
    fn spawn(mut command: Command, what: &'static str, log: PathBuf) -> Result<Owned> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("open {}", log.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .process_group(0);
        // If the bench dies without cleaning up (SIGKILL, abort), the
        // child is killed instead of running on.
        sluice::process::die_with_parent(&mut command);
        let child = command
            .spawn()
            .with_context(|| format!("start {what} ({:?})", command.get_program()))?;
        Ok(Owned {
            child: Some(child),
            what,
            log,
        })
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Fails if the process has exited.
    fn check_alive(&mut self) -> Result<()> {
        if let Some(child) = &mut self.child {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                bail!(
                    "{} exited with {status}; log {}:\n{}",
                    self.what,
                    self.log.display(),
                    log_tail(&self.log)
                );
            }
        }
        Ok(())
    }

    /// SIGTERM, wait up to [`STOP_TIMEOUT`], then SIGKILL. Returns whether
    /// the process exited cleanly (status 0) by itself.
    fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        signal(&child, libc::SIGTERM);
        let started = Instant::now();
        while started.elapsed() < STOP_TIMEOUT {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "sluice-bench: {} did not stop within {STOP_TIMEOUT:?}; killing it",
            self.what
        );
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal(child: &Child, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) on a child we spawned and have not reaped; at worst it
    // fails with ESRCH.
    unsafe {
        libc::kill(pid, signal);
    }
}

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

/// A `nats-server` on a free loopback port.
pub struct NatsServer {
    process: Owned,
    pub url: String,
}

impl NatsServer {
    /// Starts `bin` with its log (and JetStream store when `jetstream`)
    /// under `dir`; ready when its port accepts connections.
    pub fn start(bin: &Path, dir: &Path, jetstream: bool) -> Result<NatsServer> {
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        let mut command = Command::new(bin);
        command
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-l"])
            .arg(dir.join("nats-server.log"));
        if jetstream {
            command.arg("-js").arg("-sd").arg(dir.join("jetstream"));
        }
        let mut process = Owned::spawn(command, "nats-server", dir.join("nats-server.out"))
            .with_context(|| {
                format!(
                    "cannot start {} (install nats-server, or pass --nats-bin or --nats-url)",
                    bin.display()
                )
            })?;
        process.log = dir.join("nats-server.log");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_until(&mut process, "nats-server to listen", || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        })?;
        Ok(NatsServer {
            process,
            url: format!("nats://127.0.0.1:{port}"),
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    pub fn check_alive(&mut self) -> Result<()> {
        self.process.check_alive()
    }

    pub fn stop(&mut self) {
        self.process.stop();
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

/// A `sluice serve` process.
pub struct SluiceNode {
    process: Owned,
    /// Shard 0's port; shard k listens on `listen.port() + k`.
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub shards: u16,
}

impl SluiceNode {
    /// Starts a node under `dir` (data, config and log) and waits until its
    /// admin port answers `/healthz` and every shard port accepts.
    pub fn start(options: &NodeOptions, dir: &Path) -> Result<SluiceNode> {
        std::fs::create_dir_all(dir)?;
        let shards = expected_shards(options.cores.as_deref())?;
        let base = free_port_range(shards)?;
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let raft = free_port()?;
        let config = dir.join("sluice.toml");
        let mut toml = format!("raft = \"127.0.0.1:{raft}\"\n");
        if let Some(us) = options.spin_us {
            toml.push_str(&format!("spin_before_park_us = {us}\n"));
        }
        std::fs::write(&config, toml).with_context(|| format!("write {}", config.display()))?;
        let data_dir = dir.join("data");
        let listen = SocketAddr::from(([127, 0, 0, 1], base));
        let mut command = Command::new(&options.bin);
        command
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--nats-url")
            .arg(&options.nats_url)
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--admin")
            .arg(admin.to_string())
            .arg("--sync")
            .arg(&options.sync)
            .env("RUST_LOG", "warn,sluice=info");
        if let Some(cores) = &options.cores {
            command.arg("--cores").arg(cores);
        }
        let mut process = Owned::spawn(command, "sluice", dir.join("sluice.log")).with_context(|| {
            format!(
                "cannot start {} (build it with `cargo build --release -p sluice`, or pass --sluice-bin)",
                options.bin.display()
            )
        })?;
        wait_until(&mut process, "sluice to answer /healthz", || {
            http_get(admin, "/healthz").is_ok_and(|(status, _)| status == 200)
        })?;
        for shard in 0..shards {
            let addr = SocketAddr::new(listen.ip(), base + shard);
            wait_until(&mut process, "a sluice shard port to accept", || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            })?;
        }
        Ok(SluiceNode {
            process,
            listen,
            admin,
            shards,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    pub fn check_alive(&mut self) -> Result<()> {
        self.process.check_alive()
    }

    /// Stops the node; an unclean exit is reported with its log.
    pub fn stop(&mut self) -> Result<()> {
        if self.process.stop() {
            Ok(())
        } else {
            Err(anyhow!(
                "sluice did not exit cleanly; log {}:\n{}",
                self.process.log.display(),
                log_tail(&self.process.log)
            ))
        }
    }

    /// GET `path` on the admin port: the body.
    pub fn admin_get(&self, path: &str) -> Result<String> {
        let (status, body) = http_get(self.admin, path)?;
        if status != 200 {
            bail!("GET {path} on {} answered {status}", self.admin);
        }
        Ok(body)
    }
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

fn wait_until(process: &mut Owned, what: &str, mut ready: impl FnMut() -> bool) -> Result<()> {
    let started = Instant::now();
    loop {
        if ready() {
            return Ok(());
        }
        process.check_alive()?;
        if started.elapsed() > START_TIMEOUT {
            bail!(
                "timed out after {START_TIMEOUT:?} waiting for {what}; log {}:\n{}",
                process.log.display(),
                log_tail(&process.log)
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A minimal HTTP/1.1 GET: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow!("bad HTTP answer from {addr}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Finds the `sluice` binary: the given path, else next to this executable
/// (cargo puts both in the same target directory), else `sluice` on PATH.
pub fn find_sluice(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        if path.is_file() {
            return Ok(path.to_path_buf());
        }
        bail!("--sluice-bin {} is not a file", path.display());
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            // Tests run from target/<profile>/deps; the binary is one up.
            for candidate in [dir.join("sluice"), dir.join("../sluice")] {
                if candidate.is_file() {
                    return Ok(candidate);
                }
            }
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("sluice");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    bail!(
        "cannot find the sluice binary next to sluice-bench or on PATH; \
         build it (`cargo build --release -p sluice`) or pass --sluice-bin"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_times_are_readable() {
        assert!(cpu_time(None).is_some());
        assert!(machine_busy_time().is_some_and(|busy| busy >= cpu_time(None).unwrap_or_default()));
    }

    #[test]
    fn port_ranges_are_free() {
        let base = free_port_range(3).unwrap();
        for i in 0..3 {
            TcpListener::bind(("127.0.0.1", base + i)).unwrap();
        }
    }
}
