//! No orphan processes: a child dies with its parent.
//!
//! `sluice serve` without `--nats-url` runs a managed `nats-server` child.
//! When `sluice serve` is SIGKILLed (no `Drop`, no shutdown sequence) the
//! kernel must kill that child too (`sluice::process::die_with_parent`),
//! or it keeps the NATS port and outlives its data directory. The test
//! harnesses spawn every `nats-server` and `sluice` the same way.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{sluice_bin, test_config};
use sluice_testkit::{Serve, START_TIMEOUT};

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
    // No --nats-url: sluice starts and manages its own nats-server.
    let mut serve = Serve::on_loopback(sluice_bin(), dir.path(), 1).expect("ports");
    serve.config = test_config("");
    let data_dir = serve.data_dir.clone();
    let mut sluice = serve.spawn().expect("spawn sluice serve");

    let mut nats_pid = None;
    sluice
        .wait_ready()
        .expect("sluice serve with a managed nats-server never became healthy");
    let started = Instant::now();
    while nats_pid.is_none() {
        nats_pid = managed_nats_pid(&data_dir);
        assert!(
            started.elapsed() < START_TIMEOUT,
            "sluice serve wrote no managed nats-server ports file; log:\n{}",
            sluice.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let nats_pid = nats_pid.expect("pid");
    assert!(
        alive(nats_pid),
        "managed nats-server {nats_pid} is not running"
    );

    sluice.kill();

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
