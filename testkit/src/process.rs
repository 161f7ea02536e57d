//! One started process: spawned with die-with-parent, its output appended
//! to a log file, signalled, stopped, killed on drop, and started again
//! with the same command line.

// kill(2): the only system call of the kit.
#![allow(unsafe_code)]

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::{log_tail, LOG_TAIL_LINES, STOP_TIMEOUT};

/// A command line, kept so that the process can be started again with
/// exactly the same program, arguments and environment.
#[derive(Clone, Debug)]
pub struct Spec {
    /// What the process is, for messages (`"nats-server"`, `"node 2"`).
    pub what: String,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    /// Gets the process's stdout and stderr, appended.
    pub output: PathBuf,
    /// The log quoted when the process fails (`output`, unless the process
    /// writes a log of its own).
    pub log: PathBuf,
    /// Starts the process in a process group of its own, so a Ctrl-C in
    /// the terminal reaches only the parent (which then stops it in order).
    pub own_group: bool,
    /// What dropping the [`Process`] does.
    pub on_drop: OnDrop,
}

impl Spec {
    /// `program` with no arguments; output and log in `output`.
    pub fn new(what: impl Into<String>, program: impl Into<PathBuf>, output: PathBuf) -> Spec {
        Spec {
            what: what.into(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            log: output.clone(),
            output,
            own_group: false,
            on_drop: OnDrop::Kill,
        }
    }

    /// Appends one argument.
    pub fn arg(&mut self, arg: impl Into<OsString>) -> &mut Spec {
        self.args.push(arg.into());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Spec
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable of the process.
    pub fn env(&mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> &mut Spec {
        self.env.push((key.into(), value.into()));
        self
    }

    fn command(&self) -> Result<Command> {
        let output = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.output)
            .with_context(|| format!("open {}", self.output.display()))?;
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output);
        if self.own_group {
            command.process_group(0);
        }
        // SIGKILL when the spawning thread dies, however it dies (a panic
        // that skips Drop, SIGKILL, abort): nothing outlives its test.
        sluice::process::die_with_parent(&mut command);
        Ok(command)
    }
}

/// What dropping a [`Process`] does to a process still running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnDrop {
    /// SIGKILL (tests: nothing to wait for, nothing left behind).
    Kill,
    /// SIGTERM, then SIGKILL after [`STOP_TIMEOUT`] (the bench: the
    /// servers finish what they do and remove nothing by force).
    Stop,
}

/// A process this one started and owns.
#[derive(Debug)]
pub struct Process {
    spec: Spec,
    child: Option<Child>,
}

impl Process {
    /// Spawns `spec` (does not wait for anything).
    pub fn start(spec: Spec) -> Result<Process> {
        let mut process = Process { spec, child: None };
        process.respawn()?;
        Ok(process)
    }

    /// Starts the process again with the same command line; it must not be
    /// running.
    pub fn respawn(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("{} is already running", self.spec.what);
        }
        let child = self.spec.command()?.spawn().with_context(|| {
            format!("start {} ({})", self.spec.what, self.spec.program.display())
        })?;
        self.child = Some(child);
        Ok(())
    }

    /// The command line.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it was started and not yet stopped, killed or found exited.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The last lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.spec.log, lines)
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.spec.log
    }

    /// An error naming the process, with the tail of its log.
    pub fn error(&self, what: impl std::fmt::Display) -> anyhow::Error {
        anyhow!(
            "{} {what}; log {}:\n{}",
            self.spec.what,
            self.spec.log.display(),
            self.log_tail(LOG_TAIL_LINES)
        )
    }

    /// Fails (with the log) if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(child) = &mut self.child {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Err(self.error(format_args!("exited with {status}")));
            }
        }
        Ok(())
    }

    /// Polls `ready` until it holds; fails (with the log) if the process
    /// exits first or `timeout` passes.
    pub fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<()> {
        let started = Instant::now();
        loop {
            if ready() {
                return Ok(());
            }
            self.check_alive()
                .with_context(|| format!("while waiting for {what}"))?;
            if started.elapsed() > timeout {
                return Err(self.error(format_args!(
                    "timed out after {timeout:?} waiting for {what}"
                )));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Sends `signal` (nothing if the process is not running).
    pub fn signal(&self, signal: libc::c_int) {
        if let Some(child) = &self.child {
            send_signal(child, signal);
        }
    }

    /// SIGSTOP: the process freezes (a hung node).
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`Process::pause`].
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    /// SIGKILL and reap: no chance to sync or say goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGCONT (in case it is paused) and SIGTERM, then waits at most
    /// `limit`: its exit status and how long it took, or `None` when it
    /// did not exit in time (it is SIGKILLed then) or was not running.
    pub fn terminate(&mut self, limit: Duration) -> Option<(ExitStatus, Duration)> {
        let mut child = self.child.take()?;
        send_signal(&child, libc::SIGCONT);
        send_signal(&child, libc::SIGTERM);
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some((status, started.elapsed()));
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and a clean exit (status 0) within [`STOP_TIMEOUT`]; else an
    /// error with the log (the process is SIGKILLed if it did not exit).
    /// Stopping a process that is not running succeeds.
    pub fn stop(&mut self) -> Result<()> {
        if self.child.is_none() {
            return Ok(());
        }
        match self.terminate(STOP_TIMEOUT) {
            Some((status, _)) if status.success() => Ok(()),
            Some((status, _)) => Err(self.error(format_args!("exited with {status} on SIGTERM"))),
            None => Err(self.error(format_args!(
                "did not stop within {STOP_TIMEOUT:?} (killed)"
            ))),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        match self.spec.on_drop {
            OnDrop::Kill => {
                // SIGKILL works on a stopped process too; SIGCONT first
                // keeps its exit ordinary.
                self.signal(libc::SIGCONT);
                self.kill();
            }
            OnDrop::Stop => {
                // How it exits is its owner's business (nats-server exits
                // with 1 on SIGTERM); only a forced kill is worth a word.
                if self.is_running() && self.terminate(STOP_TIMEOUT).is_none() {
                    eprintln!(
                        "{} did not stop within {STOP_TIMEOUT:?}; killed it",
                        self.spec.what
                    );
                }
            }
        }
    }
}

/// Sends `signal` to a child this process spawned (a server, a CLI run).
pub fn send_signal(child: &Child, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) on a pid we spawned and have not reaped (the `Child`
    // is still held), so it cannot name another process; at worst it
    // fails with ESRCH.
    unsafe {
        libc::kill(pid, signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn alive(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(") ")
                .is_some_and(|(_, r)| !r.starts_with('Z'))
        })
    }

    fn sleeper(dir: &Path) -> Spec {
        let mut spec = Spec::new("sleep", "sleep", dir.join("sleep.out"));
        spec.arg("1000");
        spec
    }

    #[test]
    fn a_process_is_terminated_restarted_with_its_arguments_and_killed_on_drop() {
        let dir = std::env::temp_dir().join(format!("testkit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut process = Process::start(sleeper(&dir)).unwrap();
        let first = process.pid().unwrap();
        process.pause();
        process.resume();
        process.check_alive().unwrap();
        let (status, _) = process.terminate(STOP_TIMEOUT).expect("exits on SIGTERM");
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        assert!(!process.is_running());
        assert!(process.stop().is_ok(), "stopping a stopped process");

        process.respawn().unwrap();
        let second = process.pid().unwrap();
        assert_ne!(first, second);
        assert!(process.respawn().is_err(), "already running");
        drop(process);
        assert!(!alive(second), "killed on drop");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_exit_is_reported_with_the_log() {
        let dir = std::env::temp_dir().join(format!("testkit-exit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut spec = Spec::new("sh", "sh", dir.join("sh.out"));
        spec.args(["-c", "echo last words; exit 3"]);
        let mut process = Process::start(spec).unwrap();
        let error = process
            .wait_until("never", STOP_TIMEOUT, || false)
            .expect_err("the process exits");
        let text = format!("{error:#}");
        assert!(text.contains("exit status: 3"), "{text}");
        assert!(text.contains("last words"), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
