//! `sluice serve` configuration: defaults, `sluice.toml`, then flags, in
//! that order of precedence. Everything the server reads at start-up is here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use shards::log::SyncPolicy;

use crate::limits::Limits;
use crate::model::{InvalidNodeId, NodeId};

/// Default consumer/producer port of shard 0; shard `k` listens on
/// `base + k`.
pub const LISTEN_DEFAULT: &str = "127.0.0.1:9292";
/// Default admin HTTP address (`/metrics`, `/healthz`). Below the listen
/// port, so that the shard ports above it never collide with it.
pub const ADMIN_DEFAULT: &str = "127.0.0.1:9280";
/// Default raft (cluster metadata) address; below the listen port too.
pub const RAFT_DEFAULT: &str = "127.0.0.1:9281";
/// Default data directory.
pub const DATA_DIR_DEFAULT: &str = "./sluice-data";
/// A follower that has not caught up with its leader for this long leaves
/// the ISR (Kafka's `replica.lag.time.max.ms` default).
pub const REPLICA_LAG_TIME_MAX_MS_DEFAULT: u64 = 10_000;
/// Smallest accepted lag time: below it a GC pause or a busy loopback would
/// evict healthy followers.
pub const REPLICA_LAG_TIME_MAX_MS_MIN: u64 = 100;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid {path}: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("invalid --cores '{0}': expected a list like '1,2,3' or '1-3'")]
    Cores(String),
    #[error("invalid --sync '{0}': expected always, interval:MS or never")]
    Sync(String),
    #[error("invalid address '{value}' for {what}: {reason}")]
    Address {
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error("{0}")]
    Invalid(String),
}

/// How `sluice serve` writes its logs (stderr).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, coloured only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl LogFormat {
    /// The format named `text` or `json`.
    pub fn parse(name: &str) -> Option<LogFormat> {
        match name {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// Settings as they may appear in `sluice.toml` (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub nats_url: Option<String>,
    pub listen: Option<String>,
    pub admin: Option<String>,
    pub raft: Option<String>,
    pub node_id: Option<u64>,
    /// Raft address of any member of the cluster to join.
    pub join: Option<String>,
    /// Static cluster: `["1@host:port", "2@host:port", ...]`, the same on
    /// every listed node.
    pub peers: Option<Vec<String>>,
    pub node_timeout_ms: Option<u64>,
    pub cores: Option<String>,
    pub control_core: Option<usize>,
    pub sync: Option<String>,
    pub spin_before_park_us: Option<u64>,
    pub io_memory_bytes: Option<usize>,
    pub segment_bytes: Option<u64>,
    /// Bytes by which a partition's active segment is preallocated at a
    /// time (`shards::constants::SEGMENT_PREALLOCATE_STEP_BYTES_DEFAULT`).
    pub segment_preallocate_step_bytes: Option<u64>,
    /// Authentication and superusers (`crate::auth`); absent = off.
    pub auth: Option<crate::auth::AuthFileConfig>,
    /// Time between two retention/compaction rounds of a partition.
    pub maintenance_interval_ms: Option<u64>,
    /// `[limits]`: every resource limit (`crate::limits`).
    pub limits: Option<Limits>,
    pub replica_lag_time_max_ms: Option<u64>,
    /// `text` (default) or `json`.
    pub log_format: Option<LogFormat>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Toml {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }
}

/// The resolved configuration of one `sluice serve` process.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    /// `None`: start a managed `nats-server` on a free loopback port.
    pub nats_url: Option<String>,
    /// Shard 0's port; shard k listens on `listen.port() + k`.
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub raft: SocketAddr,
    pub node_id: NodeId,
    /// How this node becomes a member: alone, by joining, or from a static
    /// peer list.
    pub membership: Membership,
    /// A node the metadata leader has not heard from for this long is dead.
    pub node_timeout: Duration,
    /// CPUs of the data shards, one shard each.
    pub shard_cpus: Vec<usize>,
    pub control_cpu: usize,
    pub sync: SyncPolicy,
    pub spin_before_park: Option<Duration>,
    pub io_memory_bytes: usize,
    pub segment_bytes: u64,
    /// Preallocation step of the active segments.
    pub segment_preallocate_step_bytes: u64,
    /// Credential checks for the TCP protocol (off unless `[auth] enabled`).
    pub auth: std::sync::Arc<crate::auth::Authenticator>,
    pub maintenance_interval: Duration,
    pub limits: Limits,
    /// A follower that has not caught up for this long leaves the ISR.
    pub replica_lag_time_max: Duration,
    pub log_format: LogFormat,
}

impl ServeConfig {
    pub fn shard_count(&self) -> u32 {
        self.shard_cpus.len() as u32
    }

    /// The consumer address of shard `shard` (`None` past port 65535).
    pub fn shard_addr(&self, shard: u32) -> Option<SocketAddr> {
        let port = shards::types::ShardId(shard).port(self.listen.port())?;
        Some(SocketAddr::new(self.listen.ip(), port))
    }
}

/// How a node becomes a member of its cluster on first start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Membership {
    /// Form a one-node cluster (more nodes may join it).
    Alone,
    /// Ask the member at this raft address to add this node.
    Join(String),
    /// Form the cluster of these voters (node id → raft address).
    Peers(std::collections::BTreeMap<NodeId, String>),
}

/// Default `node_timeout_ms`.
pub const NODE_TIMEOUT_MS_DEFAULT: u64 = crate::cluster::limits::NODE_TIMEOUT_MS_DEFAULT;
/// Shortest accepted `node_timeout_ms` (several heartbeats must fit).
pub const NODE_TIMEOUT_MS_MIN: u64 = 200;

/// Flags as given on the command line (`None` = not given).
#[derive(Debug, Default, Clone)]
pub struct ServeFlags {
    pub config: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub nats_url: Option<String>,
    pub listen: Option<String>,
    pub admin: Option<String>,
    pub raft: Option<String>,
    pub node_id: Option<u64>,
    pub join: Option<String>,
    pub node_timeout_ms: Option<u64>,
    pub cores: Option<String>,
    pub control_core: Option<usize>,
    pub sync: Option<String>,
    /// Overrides `limits.connections_max`.
    pub max_connections: Option<usize>,
    pub replica_lag_time_max_ms: Option<u64>,
    pub log_format: Option<LogFormat>,
}

impl ServeFlags {
    pub fn resolve(self) -> Result<ServeConfig, ConfigError> {
        let file = match &self.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let online = online_cpus();
        let control_cpu = self.control_core.or(file.control_core).unwrap_or(0);
        let shard_cpus = match self.cores.or(file.cores) {
            Some(list) => parse_cpu_list(&list)?,
            None => default_shard_cpus(online, control_cpu),
        };
        if let Some(cpu) = shard_cpus
            .iter()
            .chain([&control_cpu])
            .find(|c| **c >= online)
        {
            return Err(ConfigError::Invalid(format!(
                "CPU {cpu} does not exist: this machine has CPUs 0-{}",
                online.saturating_sub(1)
            )));
        }
        let listen = parse_addr("--listen", self.listen.or(file.listen), LISTEN_DEFAULT)?;
        if u32::from(listen.port()) + shard_cpus.len() as u32 > u32::from(u16::MAX) {
            return Err(ConfigError::Invalid(format!(
                "--listen port {} leaves no room for {} shard ports",
                listen.port(),
                shard_cpus.len()
            )));
        }
        let auth = crate::auth::Authenticator::from_config(&file.auth.unwrap_or_default())
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let mut limits = file.limits.unwrap_or_default();
        if let Some(max) = self.max_connections {
            limits.connections_max = max;
        }
        limits.validate().map_err(ConfigError::Invalid)?;
        let sync = match self.sync.or(file.sync) {
            Some(text) => parse_sync(&text)?,
            None => SyncPolicy::EveryBatch,
        };
        let node_id = self.node_id.or(file.node_id).unwrap_or(1);
        let node_id = NodeId::new(node_id).ok_or_else(|| {
            ConfigError::Invalid(format!("node_id: {}", InvalidNodeId(node_id.into())))
        })?;
        let membership = match (self.join.or(file.join), file.peers) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid(
                    "give either join (--join) or peers, not both".into(),
                ))
            }
            (Some(join), None) => {
                parse_addr("--join", Some(join.clone()), RAFT_DEFAULT)?;
                Membership::Join(join)
            }
            (None, Some(peers)) => Membership::Peers(parse_peers(&peers)?),
            (None, None) => Membership::Alone,
        };
        let node_timeout_ms = self
            .node_timeout_ms
            .or(file.node_timeout_ms)
            .unwrap_or(NODE_TIMEOUT_MS_DEFAULT);
        if node_timeout_ms < NODE_TIMEOUT_MS_MIN {
            return Err(ConfigError::Invalid(format!(
                "node_timeout_ms {node_timeout_ms} is below the minimum {NODE_TIMEOUT_MS_MIN}"
            )));
        }
        let replica_lag_time_max_ms = self
            .replica_lag_time_max_ms
            .or(file.replica_lag_time_max_ms)
            .unwrap_or(REPLICA_LAG_TIME_MAX_MS_DEFAULT);
        if replica_lag_time_max_ms < REPLICA_LAG_TIME_MAX_MS_MIN {
            return Err(ConfigError::Invalid(format!(
                "replica_lag_time_max_ms {replica_lag_time_max_ms} is below the minimum \
                 {REPLICA_LAG_TIME_MAX_MS_MIN} (default {REPLICA_LAG_TIME_MAX_MS_DEFAULT})"
            )));
        }
        Ok(ServeConfig {
            data_dir: self
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DATA_DIR_DEFAULT)),
            nats_url: self.nats_url.or(file.nats_url),
            log_format: self.log_format.or(file.log_format).unwrap_or_default(),
            listen,
            admin: parse_addr("--admin", self.admin.or(file.admin), ADMIN_DEFAULT)?,
            raft: parse_addr("raft", self.raft.or(file.raft), RAFT_DEFAULT)?,
            node_id,
            membership,
            node_timeout: Duration::from_millis(node_timeout_ms),
            shard_cpus,
            control_cpu,
            sync,
            spin_before_park: file.spin_before_park_us.map(Duration::from_micros),
            io_memory_bytes: file
                .io_memory_bytes
                .unwrap_or(shards::constants::IO_MEMORY_BYTES_DEFAULT),
            segment_bytes: file
                .segment_bytes
                .unwrap_or(shards::constants::SEGMENT_BYTES_DEFAULT),
            segment_preallocate_step_bytes: preallocate_step_bytes(
                file.segment_preallocate_step_bytes,
            )?,
            auth: std::sync::Arc::new(auth),
            maintenance_interval: Duration::from_millis(
                file.maintenance_interval_ms
                    .unwrap_or(shards::constants::MAINTENANCE_INTERVAL_MS_DEFAULT)
                    .max(shards::constants::MAINTENANCE_INTERVAL_MS_MIN),
            ),
            limits,
            replica_lag_time_max: Duration::from_millis(replica_lag_time_max_ms),
        })
    }
}

/// `segment_preallocate_step_bytes`, checked here so that a bad value stops
/// `sluice serve` at start-up rather than every partition open.
fn preallocate_step_bytes(value: Option<u64>) -> Result<u64, ConfigError> {
    use shards::constants::{
        SEGMENT_BYTES_MAX, SEGMENT_PREALLOCATE_STEP_BYTES_DEFAULT,
        SEGMENT_PREALLOCATE_STEP_BYTES_MIN,
    };
    let bytes = value.unwrap_or(SEGMENT_PREALLOCATE_STEP_BYTES_DEFAULT);
    if !(SEGMENT_PREALLOCATE_STEP_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&bytes) {
        return Err(ConfigError::Invalid(format!(
            "segment_preallocate_step_bytes {bytes} outside [{SEGMENT_PREALLOCATE_STEP_BYTES_MIN}, {SEGMENT_BYTES_MAX}]"
        )));
    }
    Ok(bytes)
}

fn parse_addr(
    what: &'static str,
    value: Option<String>,
    default: &str,
) -> Result<SocketAddr, ConfigError> {
    let value = value.unwrap_or_else(|| default.to_string());
    value
        .parse()
        .map_err(|e: std::net::AddrParseError| ConfigError::Address {
            what,
            reason: e.to_string(),
            value,
        })
}

/// Parses a static peer list `["1@127.0.0.1:9281", "2@10.0.0.2:9281"]`.
pub fn parse_peers(
    peers: &[String],
) -> Result<std::collections::BTreeMap<NodeId, String>, ConfigError> {
    let mut parsed = std::collections::BTreeMap::new();
    for peer in peers {
        let bad = |reason: &str| {
            ConfigError::Invalid(format!(
                "invalid peer {peer:?}: {reason}; expected ID@HOST:PORT like \"2@10.0.0.2:9281\""
            ))
        };
        let (id, addr) = peer.split_once('@').ok_or_else(|| bad("no '@'"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| bad("the id is not a number"))?;
        let id = NodeId::new(id).ok_or_else(|| bad(&InvalidNodeId(id.into()).to_string()))?;
        parse_addr("peers", Some(addr.to_owned()), RAFT_DEFAULT)
            .map_err(|e| bad(&e.to_string()))?;
        if parsed.insert(id, addr.to_owned()).is_some() {
            return Err(bad("node id listed twice"));
        }
    }
    if parsed.is_empty() {
        return Err(ConfigError::Invalid("peers is empty".into()));
    }
    Ok(parsed)
}

/// Online CPUs (at least 1).
pub fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Every online CPU but the control one; at least one shard (sharing the
/// control CPU on a 1-CPU machine).
pub fn default_shard_cpus(online: usize, control_cpu: usize) -> Vec<usize> {
    let cpus: Vec<usize> = (0..online).filter(|c| *c != control_cpu).collect();
    if cpus.is_empty() {
        vec![control_cpu]
    } else {
        cpus
    }
}

/// Parses `1,2,5-7` into `[1, 2, 5, 6, 7]`. A CPU may repeat (two shards on
/// one CPU), which tests on small machines use.
pub fn parse_cpu_list(list: &str) -> Result<Vec<usize>, ConfigError> {
    let bad = || ConfigError::Cores(list.to_string());
    let mut cpus = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let a: usize = a.trim().parse().map_err(|_| bad())?;
                let b: usize = b.trim().parse().map_err(|_| bad())?;
                if a > b || b - a > 4096 {
                    return Err(bad());
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().map_err(|_| bad())?),
        }
    }
    if cpus.is_empty() {
        return Err(bad());
    }
    Ok(cpus)
}

/// Parses `always`, `interval:MS` or `never`.
pub fn parse_sync(text: &str) -> Result<SyncPolicy, ConfigError> {
    match text {
        "always" => Ok(SyncPolicy::EveryBatch),
        "never" => Ok(SyncPolicy::Never),
        _ => {
            let ms = text
                .strip_prefix("interval:")
                .and_then(|ms| ms.parse::<u64>().ok())
                .filter(|ms| *ms > 0)
                .ok_or_else(|| ConfigError::Sync(text.to_string()))?;
            Ok(SyncPolicy::Interval(Duration::from_millis(ms)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("1,2,5-7").unwrap(), vec![1, 2, 5, 6, 7]);
        assert_eq!(parse_cpu_list("0,0").unwrap(), vec![0, 0]);
        assert!(parse_cpu_list("").is_err());
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("x").is_err());
    }

    #[test]
    fn default_cpus_leave_control_alone_but_keep_one_shard() {
        assert_eq!(default_shard_cpus(4, 0), vec![1, 2, 3]);
        assert_eq!(default_shard_cpus(1, 0), vec![0]);
    }

    #[test]
    fn sync_policies() {
        assert_eq!(parse_sync("always").unwrap(), SyncPolicy::EveryBatch);
        assert_eq!(parse_sync("never").unwrap(), SyncPolicy::Never);
        assert_eq!(
            parse_sync("interval:5").unwrap(),
            SyncPolicy::Interval(Duration::from_millis(5))
        );
        assert!(parse_sync("interval:0").is_err());
        assert!(parse_sync("sometimes").is_err());
    }

    #[test]
    fn peers_join_and_node_timeout() {
        let peers = parse_peers(&["1@127.0.0.1:9281".into(), "2@127.0.0.1:9381".into()]).unwrap();
        assert_eq!(peers[&NodeId::new(2).unwrap()], "127.0.0.1:9381");
        assert!(parse_peers(&["1@x".into()]).is_err());
        assert!(
            parse_peers(&["9223372036854775808@127.0.0.1:1".into()]).is_err(),
            "an id past the wire's int64"
        );
        assert!(parse_peers(&["127.0.0.1:9281".into()]).is_err());
        assert!(parse_peers(&["1@127.0.0.1:1".into(), "1@127.0.0.1:2".into()]).is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(
            &path,
            "node_id = 2\npeers = [\"1@127.0.0.1:9281\", \"2@127.0.0.1:9381\"]\nnode_timeout_ms = 1500\n",
        )
        .unwrap();
        let flags = ServeFlags {
            config: Some(path.clone()),
            cores: Some("0".into()),
            ..Default::default()
        };
        let config = flags.resolve().unwrap();
        assert_eq!(config.node_id.get(), 2);
        assert_eq!(config.node_timeout, Duration::from_millis(1500));
        assert!(matches!(config.membership, Membership::Peers(ref p) if p.len() == 2));
        let both = ServeFlags {
            config: Some(path),
            join: Some("127.0.0.1:9281".into()),
            cores: Some("0".into()),
            ..Default::default()
        };
        assert!(
            both.resolve().is_err(),
            "join and peers together are refused"
        );
        let joining = ServeFlags {
            join: Some("127.0.0.1:9281".into()),
            node_timeout_ms: Some(50),
            cores: Some("0".into()),
            ..Default::default()
        };
        assert!(joining.resolve().is_err(), "too short a node timeout");
    }

    #[test]
    fn auth_section_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        let resolve = |text: &str| {
            std::fs::write(&path, text).unwrap();
            ServeFlags {
                config: Some(path.clone()),
                cores: Some("0".into()),
                ..Default::default()
            }
            .resolve()
        };
        let config = resolve("").unwrap();
        assert!(!config.auth.is_enabled(), "off unless configured");
        let config = resolve(
            "[auth]\nenabled = true\nsuperusers = [\"root\"]\n\
             tokens = [{ token = \"0123456789abcdef\", principal = \"root\" }]\n",
        )
        .unwrap();
        assert!(config.auth.is_enabled() && config.auth.is_superuser("root"));
        let error = resolve("[auth]\nenabled = true\n").unwrap_err();
        assert!(error.to_string().contains("[auth]"), "{error}");
        assert!(
            resolve("[auth]\nenabeld = true\n").is_err(),
            "typos are refused"
        );
    }

    #[test]
    fn file_config_rejects_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(&path, "data_dir = \"/x\"\nsync = \"never\"\n").unwrap();
        let flags = ServeFlags {
            config: Some(path.clone()),
            cores: Some("0".into()),
            ..Default::default()
        };
        let config = flags.resolve().unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/x"));
        assert_eq!(config.sync, SyncPolicy::Never);
        std::fs::write(
            &path,
            "[limits]\nconnections_max = 7\nframe_timeout_ms = 500\n",
        )
        .unwrap();
        let flags = ServeFlags {
            config: Some(path.clone()),
            cores: Some("0".into()),
            ..Default::default()
        };
        let config = flags.resolve().unwrap();
        assert_eq!(config.limits.connections_max, 7);
        assert_eq!(config.limits.frame_timeout_ms, 500);
        let flags = ServeFlags {
            config: Some(path.clone()),
            cores: Some("0".into()),
            max_connections: Some(9),
            ..Default::default()
        };
        assert_eq!(flags.resolve().unwrap().limits.connections_max, 9);
        std::fs::write(&path, "[limits]\nconnections_max = 0\n").unwrap();
        let flags = ServeFlags {
            config: Some(path.clone()),
            cores: Some("0".into()),
            ..Default::default()
        };
        assert!(flags.resolve().is_err());
        std::fs::write(&path, "bogus = 1\n").unwrap();
        let flags = ServeFlags {
            config: Some(path),
            ..Default::default()
        };
        assert!(flags.resolve().is_err());
    }
}
