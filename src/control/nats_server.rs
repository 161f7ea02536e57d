//! The managed `nats-server` child that `sluice serve` starts when no
//! `--nats-url` is given: loopback only, a free port chosen by the server
//! itself, stopped (and reaped) when Sluice exits.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// The port NATS clients try by default.
pub const NATS_DEFAULT_PORT: u16 = 4222;

/// How long to wait for the child to write its ports file.
pub const NATS_START_TIMEOUT: Duration = Duration::from_secs(10);
const PORTS_POLL_INTERVAL: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub enum NatsServerError {
    #[error("nats-server is not installed: install it with `apt-get install -y nats-server` (or download it from nats.io), or point Sluice at a running server with --nats-url")]
    NotInstalled,
    #[error("cannot start nats-server: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("nats-server did not report its port within {0:?} (see its log in {1})")]
    Timeout(Duration, PathBuf),
    #[error("nats-server exited during start-up with {0} (see its log in {1})")]
    Exited(std::process::ExitStatus, PathBuf),
    #[error("cannot prepare {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub struct ManagedNatsServer {
    child: Child,
    pub url: String,
}

impl ManagedNatsServer {
    /// Starts `nats-server -a 127.0.0.1 -p -1` with its ports file and log
    /// under `dir`, and waits until it listens.
    pub async fn start(dir: &Path) -> Result<ManagedNatsServer, NatsServerError> {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|source| NatsServerError::Dir {
                path: dir.to_path_buf(),
                source,
            })?;
        let log = dir.join("nats-server.log");
        // NATS's standard port when it is free, so `sluice publish` and other
        // NATS clients find the server with their defaults; any free port
        // otherwise (the URL is logged).
        let port = if std::net::TcpListener::bind(("127.0.0.1", NATS_DEFAULT_PORT)).is_ok() {
            NATS_DEFAULT_PORT.to_string()
        } else {
            "-1".to_string()
        };
        let mut command = Command::new("nats-server");
        // Dies with this process (a SIGKILLed or crashed `sluice serve`
        // would otherwise leave it holding the NATS port).
        crate::process::die_with_parent_tokio(&mut command);
        let mut child = command
            .arg("-a")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(&port)
            .arg("--ports_file_dir")
            .arg(dir)
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            // Its own process group: a Ctrl-C in the terminal reaches Sluice,
            // which publishes its last acks before stopping this child.
            .process_group(0)
            .spawn()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    NatsServerError::NotInstalled
                } else {
                    NatsServerError::Spawn(e)
                }
            })?;
        let pid = child.id().unwrap_or(0);
        let ports_file = dir.join(format!("nats-server_{pid}.ports"));
        let started = Instant::now();
        loop {
            if let Ok(text) = tokio::fs::read_to_string(&ports_file).await {
                if let Some(url) = client_url(&text) {
                    tracing::info!(%url, pid, "managed nats-server started");
                    return Ok(ManagedNatsServer { child, url });
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(NatsServerError::Exited(status, log));
            }
            if started.elapsed() > NATS_START_TIMEOUT {
                let _ = child.kill().await;
                return Err(NatsServerError::Timeout(NATS_START_TIMEOUT, log));
            }
            tokio::time::sleep(PORTS_POLL_INTERVAL).await;
        }
    }

    /// Stops the child and waits for it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
        let _ = self.child.wait().await;
    }
}

/// The first `nats://` URL of a ports file (JSON: `{"nats":["nats://…"],…}`).
fn client_url(ports_json: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(ports_json).ok()?;
    value
        .get("nats")?
        .as_array()?
        .first()?
        .as_str()
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_ports_file() {
        let json = r#"{"nats":["nats://127.0.0.1:41234"],"monitoring":[]}"#;
        assert_eq!(
            super::client_url(json).as_deref(),
            Some("nats://127.0.0.1:41234")
        );
        assert_eq!(super::client_url("{}"), None);
        assert_eq!(super::client_url("not json"), None);
    }
}
