//! `sluice-bench`: the bench harness of Sluice (see `--help`, and
//! `bench/README.md`).
//!
//! # Layout
//!
//! - `cli` — the command line and its translation into cases;
//! - `plan` — workloads, cases, systems, how clients share streams and partitions;
//! - `runner` — servers, the run of one case on one system, the report;
//! - clients: `nats_pub` (NATS publishers for Sluice, JetStream and the echo
//!   ceiling), `direct` (TCP Publish), `consume` (TCP Fetch, catch-up and
//!   tail), `js` (JetStream streams and consumers), over `wire` (framed TCP)
//!   and `sluice_side` (stream set-up through `sluice::client`);
//! - `recorder` — per-client hdrhistograms and timelines, merged by adding;
//! - `limits` — disk, read, loopback and NATS-echo ceilings;
//! - output: `report` (JSON model, tables), `chart` (HTML/SVG), `progress`;
//! - `procs` — the nats-server and sluice processes the bench starts
//!   (spawned and stopped by `sluice-testkit`) and their CPU time.

mod chart;
mod cli;
mod consume;
mod direct;
mod js;
mod limits;
mod nats_pub;
mod plan;
mod procs;
mod progress;
mod recorder;
mod report;
mod runner;
mod sluice_side;
mod units;
mod wire;

use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::{Context as _, Result};
use clap::Parser;

use crate::cli::Args;
use crate::recorder::INTERRUPTED;
use crate::runner::{assemble, Env, Runner};

/// Ctrl-C (or SIGTERM) once: stop the current run, report, clean up. Twice:
/// the default action.
#[allow(unsafe_code)] // signal(2)
extern "C" fn on_signal(signal: libc::c_int) {
    if INTERRUPTED.swap(true, Ordering::Relaxed) {
        // SAFETY: signal(2) is async-signal-safe; restoring the default lets
        // the next signal end the process.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
        }
    }
}

#[allow(unsafe_code)] // signal(2)
fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only touches an atomic and calls signal(2), both
    // async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(message) = args.validate() {
        eprintln!("sluice-bench: {message}");
        return ExitCode::from(2);
    }
    install_signal_handlers();
    recorder::epoch();
    match run(&args) {
        Ok(clean) if clean => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(3),
        Err(error) => {
            eprintln!("sluice-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs everything; Ok(false) when some run failed or lost messages.
fn run(args: &Args) -> Result<bool> {
    let started_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let cases = args.cases();
    let env = Env::setup(args)?;
    let mut runner = Runner::new(args, env);
    let setup = runner.setup_report();
    eprintln!(
        "sluice-bench {}: {} case(s); sluice {} ({}), nats {}{}; work dir {}",
        env!("CARGO_PKG_VERSION"),
        cases.len(),
        setup.sluice_servers.join(","),
        if setup.sluice_started_by_bench {
            "started"
        } else {
            "external"
        },
        setup.nats_url,
        if setup.jetstream {
            " with JetStream"
        } else {
            ""
        },
        setup.work_dir
    );
    if args.measure_limits() {
        if let Err(error) = runner.measure_machine_limits() {
            eprintln!("sluice-bench: machine limits: {error:#}");
        }
    }
    let mut reports = Vec::new();
    for case in &cases {
        if recorder::interrupted() {
            eprintln!("sluice-bench: interrupted; skipping the remaining cases");
            break;
        }
        let report = runner.run_case(case, cases.len());
        print!("{}", report::case_table(case, &report, args.per_client));
        reports.push(report);
    }
    let report = assemble(args, &mut runner, reports, started_unix_ms);
    print!("{}", report::summary(&report));
    let teardown = runner.into_env().teardown();
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json).with_context(|| format!("write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.chart {
        std::fs::write(path, chart::render(&report))
            .with_context(|| format!("write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    teardown?;
    let clean = report.cases.len() == cases.len()
        && report.cases.iter().all(|case| {
            let systems = 1
                + usize::from(args.compare_jetstream())
                + usize::from(args.measure_limits() && case.workload.publishes_over_nats());
            case.runs.len() == systems
                && case.runs.iter().all(|run| {
                    run.errors == 0
                        && run.timeouts == 0
                        && run.expected_messages.is_none_or(|n| n == run.messages)
                })
        });
    Ok(clean && !recorder::interrupted())
}
