//! No orphan processes: a child dies with its parent.
//!
//! `sluice serve` without `--nats-url` runs a managed `nats-server` child.
//! When `sluice serve` is SIGKILLed (no `Drop`, no shutdown sequence) the
//! kernel must kill that child too (`sluice::process::die_with_parent`),
//! or it keeps the NATS port and outlives its data directory. The test
//! harnesses spawn every `nats-server` and `sluice` the same way.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, free_port_range, healthz_ok, read_log, START_TIMEOUT};
use sluice::process::die_with_parent;

/// How long the managed nats-server may take to die after its parent.
const DEATH_WAIT: Duration = Duration::from_secs(10);

/// The pid of the managed nats-server, from the ports file it writes into
/// `<data-dir>/nats/` (`nats-server_<pid>.ports`).
fn managed_nats_pid(data_dir: &Path) -> Option<u32> {
    std::fs::read_dir(data_dir.join("nats"))
        .ok()?
        .filter_map(Result::ok)
        .find_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            name.strip_prefix("nats-server_")?
                .strip_suffix(".ports")?
                .parse()
                .ok()
        })
}

/// Whether `pid` is a live process: present in /proc and not a zombie
/// waiting to be reaped by whoever inherited it.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn the_managed_nats_server_dies_when_sluice_serve_is_sigkilled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let log = dir.path().join("sluice.log");
    let config = dir.path().join("sluice.toml");
    let raft = free_port();
    std::fs::write(
        &config,
        format!(
            "raft = \"127.0.0.1:{raft}\"\nsegment_bytes = {}\n",
            common::TEST_SEGMENT_BYTES
        ),
    )
    .expect("write config");
    let listen = free_port_range(1);
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let log_file = std::fs::File::create(&log).expect("log file");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // No --nats-url: sluice starts and manages its own nats-server.
    let mut sluice = die_with_parent(&mut Command::new(env!("CARGO_BIN_EXE_sluice")))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--listen", &format!("127.0.0.1:{listen}")])
        .args(["--admin", &admin.to_string()])
        .args(["--cores", &(1 % cpus).to_string()])
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("log clone"))
        .stderr(log_file)
        .spawn()
        .expect("spawn sluice serve");

    let started = Instant::now();
    let nats_pid = loop {
        if let (true, Some(pid)) = (
            healthz_ok(admin, Duration::from_secs(1)),
            managed_nats_pid(&data_dir),
        ) {
            break pid;
        }
        if let Ok(Some(status)) = sluice.try_wait() {
            panic!(
                "sluice serve exited with {status}; log:\n{}",
                read_log(&log)
            );
        }
        assert!(
            started.elapsed() < START_TIMEOUT,
            "sluice serve with a managed nats-server never became healthy; log:\n{}",
            read_log(&log)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        alive(nats_pid),
        "managed nats-server {nats_pid} is not running"
    );

    sluice.kill().expect("SIGKILL sluice serve");
    sluice.wait().expect("reap sluice serve");

    let killed = Instant::now();
    while alive(nats_pid) {
        if killed.elapsed() > DEATH_WAIT {
            // Do not leave it behind for the next test either.
            let _ = Command::new("kill")
                .args(["-9", &nats_pid.to_string()])
                .status();
            panic!(
                "the managed nats-server {nats_pid} outlived its SIGKILLed sluice serve by {DEATH_WAIT:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
