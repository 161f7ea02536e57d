//! Child processes that cannot outlive the process that started them.
//!
//! A `nats-server` managed by `sluice serve`, and every `nats-server` and
//! `sluice` a test or the bench starts, is spawned through
//! [`die_with_parent`]: the kernel sends the child `SIGKILL` when its parent
//! dies, however it dies (a panic that skips `Drop`, `SIGKILL`, an abort).
//! Without it a failed test run once left a `sluice serve` running for a
//! quarter of an hour after its temporary directory was deleted.

// prctl(2) and getppid(2) in the forked child, before exec.
#![allow(unsafe_code)]

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// The signal a child gets when its parent dies: `SIGKILL`, because the
/// parent is gone and nobody is left to wait for a graceful stop.
pub const PARENT_DEATH_SIGNAL: libc::c_int = libc::SIGKILL;

/// Arranges for the child `command` spawns to get [`PARENT_DEATH_SIGNAL`]
/// when its parent exits.
///
/// Linux ties the parent-death signal to the *thread* that forked: spawn
/// from a thread that lives as long as the child should (the main thread,
/// a test's own thread), not from a short-lived helper thread.
pub fn die_with_parent(command: &mut Command) -> &mut Command {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and only
    // makes the async-signal-safe calls prctl(2) and getppid(2); it does
    // not allocate (its errors are plain errno values).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, PARENT_DEATH_SIGNAL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl, in which case
            // the signal will never come: fail the spawn instead (the child
            // was re-parented, so getppid no longer names the parent).
            if libc::getppid() as u32 != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        })
    }
}

/// [`die_with_parent`] for a tokio command (the control core's managed
/// `nats-server`).
pub fn die_with_parent_tokio(
    command: &mut tokio::process::Command,
) -> &mut tokio::process::Command {
    die_with_parent(command.as_std_mut());
    command
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::time::{Duration, Instant};

    /// How long a test waits for the kernel to deliver the signal.
    const DEATH_WAIT: Duration = Duration::from_secs(10);

    /// The kernel sends the parent-death signal when the forking thread
    /// exits, so a child spawned from a thread that then ends must be
    /// killed: proof that the hook is installed (without it `sleep` runs on
    /// and the test fails after `DEATH_WAIT`). `tests/orphans.rs` shows the
    /// same for a SIGKILLed parent process.
    #[test]
    fn a_child_is_killed_when_the_thread_that_spawned_it_ends() {
        let mut child = std::thread::spawn(|| {
            die_with_parent(Command::new("sleep").arg("1000"))
                .spawn()
                .expect("spawn sleep")
        })
        .join()
        .expect("spawning thread");
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if started.elapsed() > DEATH_WAIT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the child outlived its parent thread by {DEATH_WAIT:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(status.signal(), Some(PARENT_DEATH_SIGNAL), "{status:?}");
    }

    /// The hook does not get in the way of a normal run.
    #[test]
    fn a_child_with_the_hook_runs_and_exits_normally() {
        let status = die_with_parent(Command::new("sh").args(["-c", "exit 7"]))
            .status()
            .expect("spawn sh");
        assert_eq!(status.code(), Some(7));
    }

    /// The tokio variant sets the same hook on the underlying command.
    #[test]
    fn the_tokio_variant_spawns_too() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let code = runtime.block_on(async {
            let mut command = tokio::process::Command::new("sh");
            command.args(["-c", "exit 3"]);
            let status = die_with_parent_tokio(&mut command)
                .status()
                .await
                .expect("spawn sh");
            status.code()
        });
        assert_eq!(code, Some(3));
    }
}
