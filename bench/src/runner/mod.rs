//! Runs the cases: sets up (or finds) the servers (`env.rs`), runs every
//! case against Sluice, JetStream and the echo ceiling as asked with the
//! clients of each (`clients.rs`), measures the limits, and collects the
//! report.
//!
//! A run (one case against one system) goes: create streams → start the
//! consumers and wait until each is connected → fix the measured window
//! (start, end of warm-up, end) → start the producers → join everyone →
//! merge. Every client is a thread of its own with its own recorder.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::Bytes;
use shards::types::{Offset, TimestampMs};
use sluice::protocol::ack::{encode_ack, Ack, AckOutcome};

use crate::cli::Args;
use crate::consume::TailEnd;
use crate::js::{self, JsStream};
use crate::limits::{self, EchoResponder};
use crate::nats_pub::Flavor;
use crate::plan::{Amount, Case, Slot, System, Workload};
use crate::progress::{Progress, ProgressPlan};
use crate::recorder::{interrupted, Live, Recorder, Ticket};
use crate::report::{
    CaseReport, Machine, MachineLimits, Report, RunOutcome, RunReport, SettingsReport, Setup,
};
use crate::sluice_side::{partition_subject, per_slot, probe_subscriptions, SluiceStreams};
use crate::units::format_bytes;

mod clients;
mod env;

pub use env::{Env, OTHER};

use clients::{
    js_consumers, js_prefill, js_subject, nats_producers, sluice_consumers, sluice_producers,
    Shared,
};
use env::{counters_between, cpu_percent, filesystem_of};

/// Longest the consumers of a run may take to connect.
const CONSUMERS_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes of the sequential-read limit file.
const READ_LIMIT_FILE_BYTES: u64 = 512 << 20;

/// The measured window of a run.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// When producers start (warm-up begins).
    pub start: Instant,
    /// Producers stop issuing at this instant (duration mode).
    pub end: Option<Instant>,
}

type ConsumerFn<'s> = Box<dyn FnOnce(Ticket) -> Result<Recorder> + Send + 's>;
type ProducerFn<'s> = Box<dyn FnOnce(Recorder, Timing) -> Result<Recorder> + Send + 's>;

/// The clients of one run.
struct Clients<'s> {
    consumers: Vec<ConsumerFn<'s>>,
    producers: Vec<ProducerFn<'s>>,
    /// Told when every producer has finished (tail readers then drain).
    producers_done: Option<Arc<TailEnd>>,
    main_role: &'static str,
    expected: Option<u64>,
}

pub struct Runner<'a> {
    args: &'a Args,
    env: Env,
    machine_limits: Option<MachineLimits>,
}

impl<'a> Runner<'a> {
    pub fn new(args: &'a Args, env: Env) -> Runner<'a> {
        Runner {
            args,
            env,
            machine_limits: None,
        }
    }

    pub fn into_env(self) -> Env {
        self.env
    }

    /// Describes the set-up for the report.
    pub fn setup_report(&self) -> Setup {
        Setup {
            nats_url: self.env.nats_url.clone().unwrap_or_default(),
            nats_started_by_bench: self.env.nats.is_some(),
            jetstream: self.env.jetstream,
            sluice_servers: self.env.servers.clone(),
            sluice_started_by_bench: self.env.node.is_some(),
            sluice_shards: self.env.node.as_ref().map(|n| n.shards),
            sluice_sync: if self.env.node.is_some() {
                self.args.sync.clone()
            } else {
                "unknown (external node)".into()
            },
            work_dir: self.env.work_dir.display().to_string(),
        }
    }

    pub fn machine(&self) -> Machine {
        Machine {
            cpus: sluice::config::online_cpus(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            data_filesystem: filesystem_of(&self.env.work_dir),
        }
    }

    /// Measures the limits that do not depend on the case.
    pub fn measure_machine_limits(&mut self) -> Result<&MachineLimits> {
        let dir = self.env.work_dir.join("limits");
        eprintln!("measuring limits: sequential read, loopback TCP ...");
        let sequential_read =
            limits::sequential_read(&dir, READ_LIMIT_FILE_BYTES, self.args.limits_time)?;
        let loopback_tcp = limits::loopback_tcp(self.args.limits_time)?;
        Ok(self.machine_limits.insert(MachineLimits {
            sequential_read,
            loopback_tcp,
        }))
    }

    pub fn take_machine_limits(&mut self) -> Option<MachineLimits> {
        self.machine_limits.take()
    }

    /// Runs one case against every system asked for.
    pub fn run_case(&mut self, case: &Case, total_cases: usize) -> CaseReport {
        let mut report = CaseReport {
            name: case.name(),
            workload: case.workload,
            message_bytes: case.size,
            settings: SettingsReport::of(case),
            runs: Vec::new(),
            ratios: None,
            limits: Vec::new(),
            disk_write_limit: None,
        };
        let mut systems = vec![System::Sluice];
        if self.env.jetstream {
            systems.push(System::Jetstream);
        }
        if self.args.measure_limits() && case.workload.publishes_over_nats() {
            systems.push(System::NatsEcho);
        }
        for system in systems {
            if interrupted() {
                break;
            }
            let label = format!(
                "[{}/{}] {} · {}",
                case.index + 1,
                total_cases,
                case.name(),
                system.name()
            );
            let outcome = self.run(case, system, &label);
            match outcome {
                Ok(outcome) => report.runs.push(RunReport::build(case, outcome)),
                Err(error) => eprintln!("sluice-bench: {label} failed: {error:#}"),
            }
            if let Err(error) = self.env.check_alive() {
                eprintln!("sluice-bench: {error:#}");
            }
        }
        if let (true, Some((batch_bytes, batches)), false) = (
            self.args.measure_limits(),
            sync_pattern(case),
            interrupted(),
        ) {
            match limits::disk_write(
                &self.env.work_dir.join("limits"),
                batch_bytes,
                batches,
                self.args.limits_time,
            ) {
                Ok(disk) => report.disk_write_limit = Some(disk),
                Err(error) => eprintln!("sluice-bench: disk write limit failed: {error:#}"),
            }
        }
        report.finish(self.machine_limits.as_ref());
        report
    }

    fn run(&mut self, case: &Case, system: System, label: &str) -> Result<RunOutcome> {
        match system {
            System::Sluice => self.run_sluice(case, label),
            System::Jetstream => self.run_jetstream(case, label),
            System::NatsEcho => self.run_echo(case, label),
        }
    }

    // ------------------------------------------------------------ sluice

    fn run_sluice(&mut self, case: &Case, label: &str) -> Result<RunOutcome> {
        let streams = SluiceStreams::create(&self.env.servers, case, &self.env.run_id)?;
        let result = self.run_sluice_on(case, label, &streams);
        if !self.args.keep {
            streams.delete();
        }
        result
    }

    fn run_sluice_on(
        &mut self,
        case: &Case,
        label: &str,
        streams: &SluiceStreams,
    ) -> Result<RunOutcome> {
        let shared = Shared::new(case);
        let slots = &shared.slots;
        if case.workload.publishes_over_nats() {
            let subjects: Vec<String> = slots.iter().map(|slot| streams.subject(*slot)).collect();
            probe_subscriptions(self.env.nats_url()?, &subjects)?;
        }
        if case.catch_up() {
            let counts = per_slot(case.prefill_messages(), slots.len());
            eprintln!(
                "  pre-filling {label} with {} messages of {} ...",
                crate::units::group(case.prefill_messages()),
                format_bytes(case.size)
            );
            let s = &case.settings;
            streams.prefill(slots, &counts, case.size, case.batch_records(), s.timeout)?;
        }
        let marks = if case.has_consumers() {
            streams.high_watermarks(slots)?
        } else {
            Vec::new()
        };
        let mut clients = shared.clients(case);
        if case.has_consumers() {
            clients.consumers = sluice_consumers(case, &shared, streams, &marks);
            clients.expected = shared.expected_catch_up(case, &marks);
        }
        if !case.catch_up() {
            let url = self.env.nats_url.clone();
            clients.producers = sluice_producers(case, &shared, streams, url)?;
        }
        let outcome = self.execute(case, System::Sluice, label, clients)?;
        Ok(shared.finish(case, outcome))
    }

    // ------------------------------------------------------------ jetstream

    fn run_jetstream(&mut self, case: &Case, label: &str) -> Result<RunOutcome> {
        let url = self.env.nats_url()?.to_string();
        let js_streams: Vec<JsStream> = (0..case.settings.streams)
            .map(|k| JsStream {
                name: format!("bench-{}-c{}-s{k}-js", self.env.run_id, case.index),
                subject: format!("bench.{}.js.c{}.s{k}", self.env.run_id, case.index),
            })
            .collect();
        let runtime = js::runtime()?;
        let (client, context) = runtime.block_on(js::connect(&url, case.settings.timeout))?;
        runtime.block_on(js::create_streams(&context, &js_streams))?;
        let result = self.run_jetstream_on(case, label, &url, &js_streams, (&runtime, &context));
        if !self.args.keep {
            runtime.block_on(js::delete_streams(&context, &js_streams));
        }
        drop(client);
        result
    }

    fn run_jetstream_on(
        &mut self,
        case: &Case,
        label: &str,
        url: &str,
        js_streams: &[JsStream],
        (runtime, context): (&tokio::runtime::Runtime, &async_nats::jetstream::Context),
    ) -> Result<RunOutcome> {
        // A Sluice partition is a subject of the JetStream stream; its
        // consumers filter on it, so both systems split the work alike.
        let shared = Shared::new(case);
        let counts = per_slot(case.prefill_messages(), shared.slots.len());
        if case.catch_up() {
            eprintln!(
                "  pre-filling {label} with {} messages ...",
                crate::units::group(case.prefill_messages())
            );
            runtime.block_on(js_prefill(
                case,
                context,
                js_streams,
                &shared.slots,
                &counts,
            ))?;
        }
        let mut clients = shared.clients(case);
        if case.has_consumers() {
            clients.consumers = js_consumers(case, &shared, url, js_streams, &counts);
            clients.expected = shared.expected_catch_up(case, &counts);
        }
        if !case.catch_up() {
            // JetStream has no batch publish: give its producers as many
            // messages in flight as a direct producer has records in flight.
            let s = &case.settings;
            let window = if case.direct_producers() {
                (case.batch_records() * s.pipeline)
                    .max(s.window)
                    .min(1 << 16)
            } else {
                s.window
            };
            let subject = |slot: &Slot| js_subject(js_streams, slot);
            clients.producers =
                nats_producers(case, &shared, Flavor::JetStream, url, window, subject);
        }
        let outcome = self.execute(case, System::Jetstream, label, clients)?;
        Ok(shared.finish(case, outcome))
    }

    // ------------------------------------------------------------ echo

    fn run_echo(&mut self, case: &Case, label: &str) -> Result<RunOutcome> {
        let url = self.env.nats_url()?.to_string();
        let prefix = format!("bench.{}.echo.c{}", self.env.run_id, case.index);
        let responder = EchoResponder::start(&url, format!("{prefix}.>"), ack_sized_answer(case))?;
        // Producers only, even for end-to-end: the ceiling of the publish path.
        let shared = Shared::producers_only(case);
        let mut clients = shared.clients(case);
        clients.main_role = "producer";
        clients.expected = match case.settings.amount {
            Amount::Messages(n) => Some(n),
            Amount::Duration(_) => None,
        };
        let subject =
            |slot: &Slot| partition_subject(&format!("{prefix}.s{}", slot.stream), slot.partition);
        let window = case.settings.window;
        clients.producers = nats_producers(case, &shared, Flavor::Echo, &url, window, subject);
        let outcome = self.execute(case, System::NatsEcho, label, clients);
        responder.stop()?;
        Ok(shared.finish(case, outcome?))
    }

    // ------------------------------------------------------------ running

    /// Starts the consumers, fixes the window, runs the producers, joins.
    fn execute(
        &mut self,
        case: &Case,
        system: System,
        label: &str,
        clients: Clients<'_>,
    ) -> Result<RunOutcome> {
        let cpu_before = self.env.cpu_snapshot();
        let metrics_before = (system == System::Sluice)
            .then(|| self.env.server_counters())
            .flatten();
        let (main_role, expected) = (clients.main_role, clients.expected);
        let wall_start = Instant::now();
        let (recorders, failures) = run_clients(case, label, clients, self.args.quiet)?;
        let wall = wall_start.elapsed();
        let cpu_percent = cpu_percent(&cpu_before, &self.env.cpu_snapshot(), wall);
        let server = metrics_before
            .and_then(|before| Some(counters_between(&before, &self.env.server_counters()?)));
        if recorders.iter().all(|(role, _)| *role != main_role) {
            bail!("every {main_role} failed: {}", failures.join("; "));
        }
        for failure in &failures {
            eprintln!("sluice-bench: {label}: {failure}");
        }
        let measure_from = recorders[0].1.measure_from();
        Ok(RunOutcome {
            system,
            measure_from,
            clients: recorders,
            main_role,
            expected_messages: expected,
            cpu_percent,
            server,
            failures,
        })
    }
}

type ClientResults = (Vec<(&'static str, Recorder)>, Vec<String>);

/// Runs a run's clients, each on a thread: the consumers first (they
/// connect, then wait for their recorders), then — once all are ready and
/// the measured window is fixed — the producers. Returns every client's
/// recorder (role first) and the failures of those that stopped on an error.
fn run_clients(
    case: &Case,
    label: &str,
    clients: Clients<'_>,
    quiet: bool,
) -> Result<ClientResults> {
    let s = &case.settings;
    let Clients {
        consumers,
        producers,
        producers_done,
        expected,
        ..
    } = clients;
    let live = Arc::new(Live::default());
    let (tickets, office) = Ticket::issue(consumers.len());
    let count_bound_catch_up = case.catch_up() && matches!(s.amount, Amount::Messages(_));
    let warmup = if count_bound_catch_up {
        Duration::ZERO
    } else {
        s.warmup
    };
    let mut failures = Vec::new();
    let mut recorders = Vec::new();
    std::thread::scope(|scope| -> Result<()> {
        // Moved in, so that leaving early hands the consumers an error.
        let office = office;
        let consumer_handles: Vec<_> = consumers
            .into_iter()
            .zip(tickets)
            .map(|(consumer, ticket)| scope.spawn(move || consumer(ticket)))
            .collect();
        for _ in 0..consumer_handles.len() {
            if office.ready.recv_timeout(CONSUMERS_READY_TIMEOUT).is_err() {
                bail!("consumers did not connect within {CONSUMERS_READY_TIMEOUT:?}");
            }
        }
        let start = Instant::now();
        let measure_from = start + warmup;
        let end = match s.amount {
            Amount::Duration(d) => Some(measure_from + d),
            Amount::Messages(_) => None,
        };
        for sender in &office.recorders {
            let _ = sender.send(Recorder::new(measure_from, live.clone()));
        }
        let plan = ProgressPlan {
            label: label.to_string(),
            live: live.clone(),
            measure_from,
            duration: end.map(|e| e - measure_from),
            messages: expected,
        };
        let _progress = Progress::start(plan, quiet);
        let timing = Timing { start, end };
        let producer_handles: Vec<_> = producers
            .into_iter()
            .map(|producer| {
                let recorder = Recorder::new(measure_from, live.clone());
                scope.spawn(move || producer(recorder, timing))
            })
            .collect();
        for handle in producer_handles {
            match handle.join().expect("producer thread panicked") {
                Ok(recorder) => recorders.push(("producer", recorder)),
                Err(error) => failures.push(format!("producer: {error:#}")),
            }
        }
        if let Some(done) = &producers_done {
            done.producers_done.store(true, Ordering::Release);
        }
        // Tail readers drain; catch-up readers with a budget stop at its end.
        for handle in consumer_handles {
            match handle.join().expect("consumer thread panicked") {
                Ok(recorder) => recorders.push(("consumer", recorder)),
                Err(error) => failures.push(format!("consumer: {error:#}")),
            }
        }
        Ok(())
    })?;
    Ok((recorders, failures))
}

/// The disk-write limit's pattern for a case with direct producers: (batch
/// bytes, batches in flight) — as many as the producers have in flight.
///
/// NATS-fed cases get no disk limit: how much one fdatasync covers there is
/// decided by the server's batching, not by the workload, so no fixed
/// pattern would be a fair ceiling (their ceiling is the NATS echo).
pub fn sync_pattern(case: &Case) -> Option<(usize, usize)> {
    let s = &case.settings;
    case.direct_producers().then(|| {
        let batch = encoded_batch_bytes(case.batch_records(), case.size);
        (batch, (s.producers * s.pipeline).max(1))
    })
}

/// Bytes of a RecordBatch of `records` records of `size`-byte values
/// without key or headers, as the direct producers send it.
fn encoded_batch_bytes(records: usize, size: usize) -> usize {
    let value = bytes::Bytes::from(vec![0u8; size]);
    let one = shards::batch::Record {
        timestamp: TimestampMs(0),
        key: None,
        value: Some(value),
        headers: Vec::new(),
    };
    let record_bytes = shards::batch::encoded_len(std::slice::from_ref(&one))
        - shards::constants::BATCH_HEADER_BYTES;
    shards::constants::BATCH_HEADER_BYTES + records * record_bytes
}

/// An ack payload of the size Sluice sends for this case (stream name,
/// offset, a reply inbox of the usual length).
fn ack_sized_answer(case: &Case) -> Bytes {
    let ack = Ack {
        stream: format!("bench-xxxxxxxx-c{}-s0", case.index),
        partition: 0,
        correlation_id: None,
        ack_inbox: Some("_INBOX.abcdefghijklmnopqrstuv.abcdefghijklmnopqrstuv".into()),
        node: sluice::model::NodeId::new(1),
        outcome: AckOutcome::Committed {
            offset: Offset(1_000_000),
            commit_timestamp_ms: TimestampMs::now(),
            leader_epoch: Some(1),
        },
    };
    Bytes::from(encode_ack(&ack).unwrap_or_else(|_| vec![0u8; 120]))
}

/// Assembles the final report.
pub fn assemble(
    args: &Args,
    runner: &mut Runner<'_>,
    cases: Vec<CaseReport>,
    started_unix_ms: u64,
) -> Report {
    let mut notes = vec![
        "Sluice acks a message only after fdatasync (group commit). JetStream (nats-server 2.9, file storage) acks once the message is written to its file, before fsync: it syncs every 2 minutes by default and 2.9 has no per-message sync option. The comparison favours JetStream on durability.".to_string(),
        format!(
            "This machine has {} CPUs, shared by the bench's clients, nats-server and sluice; its page-cache write speed varies between runs: compare within one run and quote ratios.",
            sluice::config::online_cpus()
        ),
    ];
    if args.sync != "always" && runner.env.node.is_some() {
        notes.push(format!(
            "The Sluice node ran with --sync {}: its acks do NOT wait for fdatasync.",
            args.sync
        ));
    }
    if cases.iter().any(|c| c.workload == Workload::PublishDirect) && args.compare_jetstream() {
        notes.push("JetStream has no batch publish: its publish-direct row is js.publish with as many messages in flight as a Sluice producer has records in flight (batch x pipeline, at least --window).".into());
    }
    Report {
        tool: "sluice-bench",
        version: env!("CARGO_PKG_VERSION"),
        started_unix_ms,
        command_line: std::env::args().collect(),
        machine: runner.machine(),
        setup: runner.setup_report(),
        notes,
        limits: runner.take_machine_limits(),
        cases,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_pattern_follows_the_direct_batches() {
        let args = <Args as clap::Parser>::parse_from([
            "sluice-bench",
            "publish-direct",
            "publish-nats",
            "--producers",
            "4",
            "--pipeline",
            "2",
        ]);
        let cases = args.cases();
        let (batch, per_sync) = sync_pattern(&cases[0]).unwrap();
        assert_eq!(per_sync, 8);
        // 512 records of 128 B plus per-record framing.
        assert!(batch > 64 << 10 && batch < 72 << 10, "{batch}");
        assert!(sync_pattern(&cases[1]).is_none());
    }

    #[test]
    fn the_echo_answer_is_a_valid_ack() {
        let args = <Args as clap::Parser>::parse_from(["sluice-bench", "publish-nats"]);
        let case = &args.cases()[0];
        let answer = ack_sized_answer(case);
        assert!(Ack::decode(&answer).is_ok());
    }
}
