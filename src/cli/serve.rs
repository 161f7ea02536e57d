//! `sluice serve`: flags → [`ServeFlags`] → [`ServeConfig`](sluice::config::ServeConfig)
//! → [`sluice::server::run`].

use std::process::ExitCode;

use std::io::IsTerminal;

use anyhow::Context;
use sluice::config::{LogFormat, ServeFlags};
use tracing_subscriber::EnvFilter;

use super::ServeArgs;

/// Log filter when `RUST_LOG` is not set (openraft narrates every election
/// at `info`).
const LOG_FILTER_DEFAULT: &str = "info,openraft=warn";

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    // Settings first: they say how to log (resolving logs nothing; its
    // errors are returned and printed by main).
    let config = serve_flags(args)
        .resolve()
        .context("invalid `sluice serve` settings")?;
    init_logging(config.log_format, std::io::stderr().is_terminal());
    sluice::server::run(config).context("sluice serve stopped")?;
    Ok(ExitCode::SUCCESS)
}

fn serve_flags(args: ServeArgs) -> ServeFlags {
    ServeFlags {
        config: args.config,
        data_dir: args.data_dir,
        nats_url: args.nats_url,
        listen: args.listen,
        admin: args.admin,
        raft: args.raft,
        node_id: args.node_id,
        join: args.join,
        node_timeout_ms: args.node_timeout_ms,
        cores: args.cores,
        control_core: args.control_core,
        sync: args.sync,
        max_connections: args.max_connections,
        replica_lag_time_max_ms: args.replica_lag_time_max_ms,
        log_format: args.log_format,
    }
}

/// Structured logs on stderr, filtered by `RUST_LOG` (default
/// [`LOG_FILTER_DEFAULT`]): text with ANSI colours only when stderr is a
/// terminal (`terminal`; a file or a pipe gets plain text), or JSON lines.
fn init_logging(format: LogFormat, terminal: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(LOG_FILTER_DEFAULT));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Fails only if a subscriber is already set, which then keeps logging.
    let _ = match format {
        LogFormat::Text => builder.with_ansi(terminal).try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn flags_become_serve_flags_and_resolve() {
        let cli = Cli::try_parse_from([
            "sluice",
            "serve",
            "--data-dir",
            "/tmp/x",
            "--listen",
            "127.0.0.1:7000",
            "--cores",
            "0",
            "--control-core",
            "0",
            "--sync",
            "never",
        ])
        .expect("parses");
        let Command::Serve(args) = cli.command else {
            panic!("not serve");
        };
        let config = serve_flags(args).resolve().expect("resolves");
        assert_eq!(config.listen.port(), 7000);
        assert_eq!(config.shard_cpus, vec![0]);
        assert_eq!(config.sync, shards::log::SyncPolicy::Never);
        assert_eq!(config.data_dir, std::path::PathBuf::from("/tmp/x"));
        assert_eq!(config.nats_url, None);
        assert_eq!(config.log_format, LogFormat::Text);
    }

    #[test]
    fn log_format_comes_from_the_flag_or_the_settings_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("sluice.toml");
        std::fs::write(&file, "log_format = \"json\"\n").expect("write");
        let resolve = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).expect("parses");
            let Command::Serve(args) = cli.command else {
                panic!("not serve");
            };
            serve_flags(args).resolve().expect("resolves").log_format
        };
        let config = file.to_str().expect("utf-8 path");
        assert_eq!(
            resolve(&["sluice", "serve", "--log-format", "json"]),
            LogFormat::Json
        );
        assert_eq!(
            resolve(&["sluice", "serve", "--config", config]),
            LogFormat::Json
        );
        assert_eq!(
            resolve(&[
                "sluice",
                "serve",
                "--config",
                config,
                "--log-format",
                "text"
            ]),
            LogFormat::Text
        );
        assert!(Cli::try_parse_from(["sluice", "serve", "--log-format", "xml"]).is_err());
    }
}
