//! The progress line on stderr while a run is going: elapsed time against
//! the plan, the last second's rate and the running total. On a terminal it
//! rewrites one line every second; otherwise it prints a line every five
//! seconds (and nothing with `--quiet`).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::recorder::Live;
use crate::units::{group, short};

/// A running progress reporter; stops (and clears its line) when dropped.
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// What the progress line knows about the run.
pub struct ProgressPlan {
    pub label: String,
    pub live: Arc<Live>,
    /// When the measured part starts (the warm-up ends).
    pub measure_from: Instant,
    /// Planned measured time, when the run is time-bound.
    pub duration: Option<Duration>,
    /// Planned messages, when the run is count-bound.
    pub messages: Option<u64>,
}

impl Progress {
    pub fn start(plan: ProgressPlan, quiet: bool) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        if quiet {
            return Progress { stop, thread: None };
        }
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || report(plan, &thread_stop))
            .ok();
        Progress { stop, thread }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn report(plan: ProgressPlan, stop: &AtomicBool) {
    let terminal = std::io::stderr().is_terminal();
    let every = if terminal { 1 } else { 5 };
    let mut last_messages = 0u64;
    let mut last_at = Instant::now();
    let mut tick = 0u64;
    let mut printed = false;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if last_at.elapsed() < Duration::from_secs(1) {
            continue;
        }
        let now = Instant::now();
        let messages = plan.live.messages.load(Ordering::Relaxed);
        let all = messages + plan.live.warmup_messages.load(Ordering::Relaxed);
        let errors = plan.live.errors.load(Ordering::Relaxed);
        let rate =
            all.saturating_sub(last_messages) as f64 / now.duration_since(last_at).as_secs_f64();
        last_messages = all;
        last_at = now;
        tick += 1;
        if !tick.is_multiple_of(every) {
            continue;
        }
        let phase = if now < plan.measure_from {
            format!(
                "warm-up {:.0} s left",
                (plan.measure_from - now).as_secs_f64().ceil()
            )
        } else {
            let elapsed = now.duration_since(plan.measure_from).as_secs_f64();
            match (plan.duration, plan.messages) {
                (_, Some(total)) => format!(
                    "{:.1} s, {:.0}% of {}",
                    elapsed,
                    100.0 * messages as f64 / total as f64,
                    group(total)
                ),
                (Some(duration), None) => format!("{elapsed:.0}/{:.0} s", duration.as_secs_f64()),
                (None, None) => format!("{elapsed:.0} s"),
            }
        };
        let errors = if errors > 0 {
            format!("  {errors} errors")
        } else {
            String::new()
        };
        let line = format!(
            "  {}  {phase}  {} msg/s  {} msgs{errors}",
            plan.label,
            short(rate),
            group(messages)
        );
        let mut stderr = std::io::stderr().lock();
        if terminal {
            let _ = write!(stderr, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(stderr, "{line}");
        }
        let _ = stderr.flush();
        printed = true;
    }
    if terminal && printed {
        let _ = write!(std::io::stderr(), "\r\x1b[2K");
    }
}
