//! The servers of a bench run: started (or found), checked, stopped, and
//! what they cost (CPU snapshots, the node's counters).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use sluice_testkit::SluiceNode;

use crate::cli::Args;
use crate::procs::{self, NatsServer, NodeOptions};
use crate::report::ServerCounters;

/// The servers the bench talks to, and what it started itself.
///
/// Fields drop in order: the node, then nats-server, then the temporary
/// directory they lived in.
pub struct Env {
    pub run_id: String,
    pub work_dir: PathBuf,
    pub node: Option<SluiceNode>,
    pub nats: Option<NatsServer>,
    pub nats_url: Option<String>,
    pub servers: Vec<String>,
    pub jetstream: bool,
    _temp: Option<tempfile::TempDir>,
}

impl Env {
    pub fn setup(args: &Args) -> Result<Env> {
        let (work_dir, temp) = match &args.work_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("create {}", dir.display()))?;
                (dir.clone(), None)
            }
            None => {
                let temp = tempfile::Builder::new().prefix("sluice-bench-").tempdir()?;
                let path = temp.path().to_path_buf();
                if args.keep {
                    (temp.keep(), None)
                } else {
                    (path, Some(temp))
                }
            }
        };
        let run_id = run_id();
        let start_node = args.server.is_empty();
        let mut nats = None;
        let nats_url = match &args.nats_url {
            Some(url) => Some(url.clone()),
            None if start_node || args.compare_jetstream() => {
                let server = NatsServer::start(
                    &args.nats_bin,
                    &work_dir.join("nats"),
                    args.compare_jetstream(),
                )?;
                let url = server.url.clone();
                nats = Some(server);
                Some(url)
            }
            None => None,
        };
        let mut node = None;
        let servers = if start_node {
            let options = NodeOptions {
                bin: procs::find_sluice(args.sluice_bin.as_deref())?,
                nats_url: nats_url
                    .clone()
                    .expect("a NATS server is started with the node"),
                cores: args.cores.clone(),
                sync: args.sync.clone(),
                spin_us: args.spin_us,
            };
            let started = procs::start_node(&options, &work_dir.join("sluice"))?;
            let servers = vec![started.listen.to_string()];
            node = Some(started);
            servers
        } else {
            args.server.clone()
        };
        Ok(Env {
            run_id,
            work_dir,
            _temp: temp,
            nats,
            nats_url,
            node,
            servers,
            jetstream: args.compare_jetstream(),
        })
    }

    pub(super) fn nats_url(&self) -> Result<&str> {
        self.nats_url
            .as_deref()
            .ok_or_else(|| anyhow!("this workload needs NATS: pass --nats-url"))
    }

    /// Fails if a server the bench started has died.
    pub(super) fn check_alive(&mut self) -> Result<()> {
        if let Some(nats) = &mut self.nats {
            nats.check_alive()?;
        }
        if let Some(node) = &mut self.node {
            node.check_alive()?;
        }
        Ok(())
    }

    /// Stops what the bench started: the node first (it finishes its
    /// appends and publishes its last acks), then nats-server.
    pub fn teardown(mut self) -> Result<()> {
        let stopped = match &mut self.node {
            Some(node) => node.stop(),
            None => Ok(()),
        };
        if let Some(nats) = &mut self.nats {
            nats.stop();
        }
        stopped
    }

    pub(super) fn cpu_snapshot(&self) -> BTreeMap<String, Duration> {
        let mut cpu = BTreeMap::new();
        if let Some(time) = self.node.as_ref().and_then(|n| procs::cpu_time(n.pid())) {
            cpu.insert("sluice".to_string(), time);
        }
        if let Some(time) = self.nats.as_ref().and_then(|n| procs::cpu_time(n.pid())) {
            cpu.insert("nats-server".to_string(), time);
        }
        if let Some(time) = procs::cpu_time(None) {
            cpu.insert("sluice-bench".to_string(), time);
        }
        if let Some(time) = procs::machine_busy_time() {
            cpu.insert(MACHINE.to_string(), time);
        }
        cpu
    }

    pub(super) fn server_counters(&self) -> Option<BTreeMap<String, f64>> {
        let text = procs::admin_get(self.node.as_ref()?, "/metrics").ok()?;
        Some(parse_metrics(&text))
    }
}

/// Sums every sample of each metric over its labels.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut sums = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name_labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = name_labels.split('{').next().unwrap_or(name_labels);
        if name.ends_with("_bucket") {
            continue;
        }
        if let Ok(value) = value.parse::<f64>() {
            *sums.entry(name.to_string()).or_insert(0.0) += value;
        }
    }
    sums
}

pub(super) fn counters_between(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> ServerCounters {
    let delta = |name: &str| {
        (after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0))
            .max(0.0)
    };
    let fsyncs = delta("sluice_fsync_seconds_count");
    let records = delta("sluice_append_records_total");
    ServerCounters {
        appends: delta("sluice_appends_total") as u64,
        append_records: records as u64,
        append_bytes: delta("sluice_append_bytes_total") as u64,
        fsyncs: fsyncs as u64,
        fsync_mean_us: if fsyncs > 0.0 {
            delta("sluice_fsync_seconds_sum") / fsyncs * 1e6
        } else {
            0.0
        },
        records_per_fsync: if fsyncs > 0.0 { records / fsyncs } else { 0.0 },
        fetches: delta("sluice_fetches_total") as u64,
        fetch_bytes: delta("sluice_fetch_bytes_total") as u64,
        sendfile_bytes: delta("sluice_fetch_sendfile_bytes_total") as u64,
        copied_bytes: delta("sluice_fetch_copied_bytes_total") as u64,
    }
}

/// A short id that keeps this run's streams and subjects apart from any
/// other run's on shared servers.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{:x}{:04x}", std::process::id() % 0xfff, nanos % 0xffff)
}

/// Key of the machine's total busy time in CPU snapshots.
const MACHINE: &str = "machine";
/// Key of the CPU used by processes other than the bench and the servers it
/// started (other work on the machine skews the run).
pub const OTHER: &str = "other processes";

/// Shortest run whose CPU use is reported: the kernel counts CPU time in
/// clock ticks (10 ms), too coarse for less.
const CPU_REPORT_WALL_MIN: Duration = Duration::from_secs(1);

/// CPU each process used between two snapshots, percent of one CPU.
pub(super) fn cpu_percent(
    before: &BTreeMap<String, Duration>,
    after: &BTreeMap<String, Duration>,
    wall: Duration,
) -> BTreeMap<String, f64> {
    if wall < CPU_REPORT_WALL_MIN {
        return BTreeMap::new();
    }
    let mut percent: BTreeMap<String, f64> = after
        .iter()
        .filter_map(|(name, after)| {
            let used = after.saturating_sub(*before.get(name)?);
            Some((
                name.clone(),
                used.as_secs_f64() / wall.as_secs_f64() * 100.0,
            ))
        })
        .collect();
    if let Some(machine) = percent.remove(MACHINE) {
        let ours: f64 = percent.values().sum();
        percent.insert(OTHER.to_string(), (machine - ours).max(0.0));
    }
    percent
}

/// "ext4 on /dev/vda" for the mount holding `path`.
pub(super) fn filesystem_of(path: &Path) -> String {
    let Ok(path) = path.canonicalize() else {
        return String::new();
    };
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else {
        return String::new();
    };
    mounts
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (device, mount, fs) = (fields.first()?, fields.get(1)?, fields.get(2)?);
            path.starts_with(mount)
                .then(|| (mount.len(), format!("{fs} on {device} ({mount})")))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, description)| description)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_summed_over_shards() {
        let text = "# HELP x\nsluice_appends_total{shard=\"0\"} 3\nsluice_appends_total{shard=\"1\"} 4\nsluice_fsync_seconds_bucket{shard=\"0\",le=\"0.001\"} 9\nsluice_fsync_seconds_count{shard=\"0\"} 2\n";
        let sums = parse_metrics(text);
        assert_eq!(sums["sluice_appends_total"], 7.0);
        assert_eq!(sums["sluice_fsync_seconds_count"], 2.0);
        assert!(!sums.contains_key("sluice_fsync_seconds_bucket"));
    }
}
