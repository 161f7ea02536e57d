//! `sluice serve`: wires the rings, starts the pinned data shards, and runs
//! the control core on the calling thread until a signal stops it.

use shards::constants::RING_CAPACITY_DEFAULT;
use shards::ring::ring;
use shards::shard::{ShardRuntime, ShardRuntimeConfig};

use crate::config::ServeConfig;
use crate::control::{self, ControlLink};
use crate::limits::{ConnectionGate, LimitCounters};
use crate::shard_server::{run_shard, ShardLink, ShardSettings};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the data shards: {0}")]
    Shards(#[from] shards::shard::ShardError),
    #[error(transparent)]
    Control(#[from] control::ControlError),
}

pub fn run(config: ServeConfig) -> Result<(), ServerError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServerError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let mut shard_links = Vec::new();
    let mut control_links = Vec::new();
    for _ in 0..config.shard_count() {
        let (to_shard, from_control) = ring(RING_CAPACITY_DEFAULT);
        let (to_control, from_shard) = ring(RING_CAPACITY_DEFAULT);
        shard_links.push(ShardLink {
            from_control,
            to_control,
        });
        control_links.push(ControlLink {
            to_shard,
            from_shard,
        });
    }
    let mut runtime_config = ShardRuntimeConfig::new(config.shard_cpus.clone());
    runtime_config.io_memory_bytes = config.io_memory_bytes;
    runtime_config.spin_before_park = config.spin_before_park;
    runtime_config.probe_dirs = vec![config.data_dir.clone()];
    let limit_counters = std::sync::Arc::new(LimitCounters::default());
    let settings = ShardSettings {
        data_dir: config.data_dir.clone(),
        base_addr: config.listen,
        shard_count: config.shard_count(),
        sync: config.sync,
        segment_bytes: config.segment_bytes,
        segment_preallocate_step_bytes: config.segment_preallocate_step_bytes,
        auth: config.auth.clone(),
        maintenance_interval: config.maintenance_interval,
        limits: config.limits.clone(),
        gate: ConnectionGate::new(&config.limits, limit_counters.clone()),
        replica_lag_time_max: config.replica_lag_time_max,
    };
    let shards = ShardRuntime::start_with(runtime_config, shard_links, move |context, link| {
        run_shard(context.shard_id, settings, link)
    })?;
    let control_result = control::run(config, control_links, limit_counters);
    // The control core told every shard to stop (or dropped their rings on
    // error, which stops them too).
    let shards_result = shards.join();
    control_result?;
    shards_result?;
    Ok(())
}
