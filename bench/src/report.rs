//! The report: the JSON model (`--json`), built from the merged recorders,
//! and its printed form (a table per case with ratios and limit fractions).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use base64::Engine as _;
use hdrhistogram::serialization::{Serializer as _, V2Serializer};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::limits::{Bandwidth, DiskWrite};
use crate::plan::{Amount, Case, System, Workload};
use crate::recorder::Recorder;
use crate::units::{format_bytes, group, ms_cell, short};

/// Percentiles of the percentile spectrum kept for charts.
pub const SPECTRUM: [f64; 15] = [
    0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.995, 99.999, 100.0,
];
/// Clients printed individually at most (the JSON has them all).
const CLIENT_ROWS_MAX: usize = 64;
/// Timeline width of the printed sparkline.
const SPARKLINE_WIDTH: usize = 40;

#[derive(Debug, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub started_unix_ms: u64,
    pub command_line: Vec<String>,
    pub machine: Machine,
    pub setup: Setup,
    pub notes: Vec<String>,
    /// Limits that do not depend on the case (disk-write limits are per case).
    pub limits: Option<MachineLimits>,
    pub cases: Vec<CaseReport>,
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub kernel: String,
    /// File system and device of the work directory (where data and the
    /// disk limit files live).
    pub data_filesystem: String,
}

#[derive(Debug, Serialize)]
pub struct Setup {
    pub nats_url: String,
    pub nats_started_by_bench: bool,
    pub jetstream: bool,
    pub sluice_servers: Vec<String>,
    pub sluice_started_by_bench: bool,
    pub sluice_shards: Option<u16>,
    pub sluice_sync: String,
    pub work_dir: String,
}

#[derive(Debug, Serialize)]
pub struct MachineLimits {
    pub sequential_read: Bandwidth,
    pub loopback_tcp: Bandwidth,
}

#[derive(Debug, Serialize)]
pub struct CaseReport {
    pub name: String,
    pub workload: Workload,
    pub message_bytes: usize,
    pub settings: SettingsReport,
    pub runs: Vec<RunReport>,
    /// Sluice divided by JetStream, with --compare jetstream.
    pub ratios: Option<Ratios>,
    /// Sluice as a fraction of the machine's limits, with --limits.
    pub limits: Vec<LimitShare>,
    pub disk_write_limit: Option<DiskWrite>,
}

#[derive(Debug, Serialize)]
pub struct SettingsReport {
    pub messages: Option<u64>,
    pub duration_s: Option<f64>,
    pub warmup_s: f64,
    pub producers: usize,
    pub consumers: usize,
    pub streams: usize,
    pub partitions: usize,
    pub replicas: usize,
    pub rate_msg_per_s: Option<f64>,
    pub window: usize,
    pub batch_records: usize,
    pub pipeline: usize,
    pub fetch_bytes: usize,
    pub fetch_wait_ms: u32,
    pub tail: bool,
    pub prefill_messages: Option<u64>,
    pub timeout_s: f64,
}

impl SettingsReport {
    pub fn of(case: &Case) -> SettingsReport {
        let s = &case.settings;
        let (messages, duration_s) = match s.amount {
            Amount::Messages(n) => (Some(n), None),
            Amount::Duration(d) => (None, Some(d.as_secs_f64())),
        };
        SettingsReport {
            messages,
            duration_s,
            warmup_s: s.warmup.as_secs_f64(),
            producers: s.producers,
            consumers: s.consumers,
            streams: s.streams,
            partitions: s.partitions,
            replicas: s.replicas,
            rate_msg_per_s: s.rate,
            window: s.window,
            batch_records: case.batch_records(),
            pipeline: s.pipeline,
            fetch_bytes: s.fetch_bytes,
            fetch_wait_ms: s.fetch_wait_ms,
            tail: s.tail,
            prefill_messages: case.catch_up().then(|| case.prefill_messages()),
            timeout_s: s.timeout.as_secs_f64(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct RunReport {
    pub system: System,
    /// Whose measurements the row is: "producer" (publish workloads) or
    /// "consumer" (consume, end-to-end).
    pub role: &'static str,
    /// What the latency measures, in words.
    pub latency_of: String,
    /// Measured messages: acked (publish workloads) or received (consume,
    /// end-to-end).
    pub messages: u64,
    /// What the plan called for, where it fixes a number.
    pub expected_messages: Option<u64>,
    /// Payload bytes of those messages.
    pub bytes: u64,
    /// Bytes on the wire / written for them (batches with headers).
    pub wire_bytes: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub first_error: Option<String>,
    /// From the end of warm-up to the last completion.
    pub elapsed_s: f64,
    pub msg_per_s: f64,
    pub mb_per_s: f64,
    pub wire_mb_per_s: f64,
    pub latency: LatencyReport,
    pub timeline: Vec<SecondReport>,
    /// The producers' side of consume --tail and end-to-end runs.
    pub publish: Option<Box<RunReport>>,
    pub clients: Vec<ClientReport>,
    /// CPU used during the run (warm-up included), percent of one CPU.
    pub cpu_percent: BTreeMap<String, f64>,
    /// Counters of the Sluice node over the run (when the bench started it).
    pub server: Option<ServerCounters>,
}

#[derive(Debug, Serialize)]
pub struct LatencyReport {
    pub samples: u64,
    pub min_us: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p99_9_us: f64,
    pub p99_99_us: f64,
    pub max_us: f64,
    /// (percentile, microseconds) at [`SPECTRUM`].
    pub spectrum: Vec<(f64, f64)>,
    /// The merged histogram (ns), hdrhistogram V2 serialized, base64.
    pub hdr_v2_base64: Option<String>,
}

impl LatencyReport {
    pub fn of(histogram: &Histogram<u64>, with_detail: bool) -> LatencyReport {
        let us = |ns: u64| ns as f64 / 1e3;
        let at = |q: f64| us(histogram.value_at_quantile(q));
        let empty = histogram.is_empty();
        let spectrum = if with_detail && !empty {
            SPECTRUM
                .iter()
                .map(|p| (*p, us(histogram.value_at_percentile(*p))))
                .collect()
        } else {
            Vec::new()
        };
        let hdr_v2_base64 = (with_detail && !empty).then(|| {
            let mut bytes = Vec::new();
            V2Serializer::new()
                .serialize(histogram, &mut bytes)
                .map(|_| base64::engine::general_purpose::STANDARD.encode(&bytes))
                .unwrap_or_default()
        });
        LatencyReport {
            samples: histogram.len(),
            min_us: if empty { 0.0 } else { us(histogram.min()) },
            mean_us: if empty { 0.0 } else { histogram.mean() / 1e3 },
            p50_us: at(0.5),
            p90_us: at(0.9),
            p99_us: at(0.99),
            p99_9_us: at(0.999),
            p99_99_us: at(0.9999),
            max_us: us(histogram.max()),
            spectrum,
            hdr_v2_base64,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct SecondReport {
    /// Seconds since the end of warm-up (this entry covers [second, second + covered_s)).
    pub second: usize,
    /// 1 but for the last, partial second of the run.
    pub covered_s: f64,
    pub messages: u64,
    pub msg_per_s: f64,
    pub mb: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

#[derive(Debug, Serialize)]
pub struct ClientReport {
    pub role: &'static str,
    pub index: usize,
    pub messages: u64,
    pub bytes: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub msg_per_s: f64,
    pub mb_per_s: f64,
    pub latency: LatencyReport,
}

#[derive(Debug, Default, Serialize)]
pub struct ServerCounters {
    pub appends: u64,
    pub append_records: u64,
    pub append_bytes: u64,
    pub fsyncs: u64,
    pub fsync_mean_us: f64,
    pub records_per_fsync: f64,
    pub fetches: u64,
    pub fetch_bytes: u64,
    pub sendfile_bytes: u64,
    pub copied_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct Ratios {
    pub msg_per_s: f64,
    pub mb_per_s: f64,
    pub p50: f64,
    pub p99: f64,
}

#[derive(Debug, Serialize)]
pub struct LimitShare {
    pub limit: String,
    pub value: f64,
    pub unit: &'static str,
    pub sluice: f64,
    pub fraction: f64,
}

/// A finished run's raw measurements.
pub struct RunOutcome {
    pub system: System,
    pub measure_from: Instant,
    /// Role and recorder of every client, in start order.
    pub clients: Vec<(&'static str, Recorder)>,
    /// Which role's merged recorder is the run's main row.
    pub main_role: &'static str,
    pub expected_messages: Option<u64>,
    pub cpu_percent: BTreeMap<String, f64>,
    pub server: Option<ServerCounters>,
    /// Client failures (a client that stopped on an error).
    pub failures: Vec<String>,
}

/// What the latency of a run measures.
pub fn latency_of(case: &Case, system: System, role: &str) -> String {
    let per_message = match (case.workload, role) {
        (Workload::PublishNats, _) | (_, "producer") if system == System::Jetstream => {
            "js.publish -> PubAck, per message"
        }
        (Workload::PublishNats, _) | (_, "producer") if system == System::NatsEcho => {
            "publish -> echo reply, per message"
        }
        (Workload::PublishNats, _) => "publish -> ack (after fdatasync), per message",
        (Workload::EndToEnd, "producer") => "publish -> ack (after fdatasync), per message",
        (Workload::PublishDirect, _) | (Workload::Consume, "producer") => {
            "batch sent -> PublishResponse (after fdatasync), per message"
        }
        (Workload::Consume, _) if case.catch_up() => {
            if system == System::Jetstream {
                "pull request -> last message of the batch, per fetch"
            } else {
                "fetch request -> last byte of the answer, per fetch"
            }
        }
        _ => "publish -> receipt by a consumer, per message",
    };
    let open_loop = if case.settings.rate.is_some() && !case.catch_up() {
        " (from the intended send time)"
    } else {
        ""
    };
    format!("{per_message}{open_loop}")
}

fn merged(clients: &[(&'static str, Recorder)], role: &str) -> Option<Recorder> {
    let mut iter = clients.iter().filter(|(r, _)| *r == role);
    let (_, first) = iter.next()?;
    let mut total = first.sibling();
    total.merge(first);
    for (_, recorder) in iter {
        total.merge(recorder);
    }
    Some(total)
}

fn rates(recorder: &Recorder, measure_from: Instant) -> (f64, f64, f64, f64) {
    let elapsed = recorder.last.map_or(0.0, |last| {
        last.saturating_duration_since(measure_from).as_secs_f64()
    });
    if elapsed <= 0.0 {
        return (0.0, 0.0, 0.0, 0.0);
    }
    (
        elapsed,
        recorder.messages as f64 / elapsed,
        recorder.bytes as f64 / elapsed / 1e6,
        recorder.wire_bytes as f64 / elapsed / 1e6,
    )
}

/// Shortest final partial second drawn in charts and sparklines: a shorter
/// one would only show the drain at the end as a spike or a dip. (The JSON
/// keeps every second.)
pub const PARTIAL_SECOND_MIN_S: f64 = 0.25;

impl SecondReport {
    /// Whether the entry covers enough time to be drawn as a rate.
    pub fn drawable(&self) -> bool {
        self.covered_s >= PARTIAL_SECOND_MIN_S
    }
}

fn timeline(recorder: &Recorder, elapsed_s: f64) -> Vec<SecondReport> {
    recorder
        .seconds
        .iter()
        .enumerate()
        .map(|(second, s)| {
            // The last second is partial; a completion exactly at its start
            // still gets a sliver of time.
            let covered_s = (elapsed_s - second as f64).clamp(1e-3, 1.0);
            (second, s, covered_s)
        })
        .map(|(second, s, covered_s)| SecondReport {
            second,
            covered_s,
            messages: s.messages,
            msg_per_s: s.messages as f64 / covered_s,
            mb: s.bytes as f64 / 1e6,
            p50_us: s.latency.value_at_quantile(0.5) as f64 / 1e3,
            p99_us: s.latency.value_at_quantile(0.99) as f64 / 1e3,
            max_us: s.latency.max() as f64 / 1e3,
        })
        .collect()
}

/// CPU use by processes outside the benchmark above which a run is flagged
/// as skewed, percent of one CPU.
pub const OTHER_CPU_WARN_PERCENT: f64 = 20.0;

impl RunReport {
    /// CPU used by processes other than the bench and its servers.
    pub fn other_cpu_percent(&self) -> Option<f64> {
        self.cpu_percent.get(crate::runner::OTHER).copied()
    }

    pub fn build(case: &Case, outcome: RunOutcome) -> RunReport {
        let main = merged(&outcome.clients, outcome.main_role)
            .unwrap_or_else(|| panic!("a run has {} clients", outcome.main_role));
        let publish = (outcome.main_role != "producer")
            .then(|| merged(&outcome.clients, "producer"))
            .flatten()
            .map(|producers| {
                Box::new(RunReport::side(
                    case,
                    outcome.system,
                    &producers,
                    outcome.measure_from,
                ))
            });
        let (elapsed_s, msg_per_s, mb_per_s, wire_mb_per_s) = rates(&main, outcome.measure_from);
        let clients = outcome
            .clients
            .iter()
            .enumerate()
            .map(|(index, (role, recorder))| {
                let (_, msg_per_s, mb_per_s, _) = rates(recorder, outcome.measure_from);
                ClientReport {
                    role,
                    index,
                    messages: recorder.messages,
                    bytes: recorder.bytes,
                    errors: recorder.errors,
                    timeouts: recorder.timeouts,
                    msg_per_s,
                    mb_per_s,
                    latency: LatencyReport::of(&recorder.latency, false),
                }
            })
            .collect();
        let client_errors: u64 = outcome.clients.iter().map(|(_, r)| r.errors).sum();
        let first_error = outcome.failures.first().cloned().or_else(|| {
            outcome
                .clients
                .iter()
                .find_map(|(_, r)| r.first_error.clone())
        });
        RunReport {
            system: outcome.system,
            role: outcome.main_role,
            latency_of: latency_of(case, outcome.system, outcome.main_role),
            messages: main.messages,
            expected_messages: outcome.expected_messages,
            bytes: main.bytes,
            wire_bytes: main.wire_bytes,
            errors: client_errors + outcome.failures.len() as u64,
            timeouts: outcome.clients.iter().map(|(_, r)| r.timeouts).sum(),
            first_error,
            elapsed_s,
            msg_per_s,
            mb_per_s,
            wire_mb_per_s,
            latency: LatencyReport::of(&main.latency, true),
            timeline: timeline(&main, elapsed_s),
            publish,
            clients,
            cpu_percent: outcome.cpu_percent,
            server: outcome.server,
        }
    }

    /// The producers' summary inside a consumer-led run.
    fn side(case: &Case, system: System, producers: &Recorder, measure_from: Instant) -> RunReport {
        let (elapsed_s, msg_per_s, mb_per_s, wire_mb_per_s) = rates(producers, measure_from);
        RunReport {
            system,
            role: "producer",
            latency_of: latency_of(case, system, "producer"),
            messages: producers.messages,
            expected_messages: None,
            bytes: producers.bytes,
            wire_bytes: producers.wire_bytes,
            errors: producers.errors,
            timeouts: producers.timeouts,
            first_error: producers.first_error.clone(),
            elapsed_s,
            msg_per_s,
            mb_per_s,
            wire_mb_per_s,
            latency: LatencyReport::of(&producers.latency, false),
            timeline: timeline(producers, elapsed_s),
            publish: None,
            clients: Vec::new(),
            cpu_percent: BTreeMap::new(),
            server: None,
        }
    }
}

impl CaseReport {
    /// Fills in ratios and limit fractions from the runs.
    pub fn finish(&mut self, machine: Option<&MachineLimits>) {
        let run = |system| self.runs.iter().find(|r| r.system == system);
        let (sluice, jetstream, echo) = (
            run(System::Sluice),
            run(System::Jetstream),
            run(System::NatsEcho),
        );
        if let (Some(s), Some(j)) = (sluice, jetstream) {
            let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
            self.ratios = Some(Ratios {
                msg_per_s: ratio(s.msg_per_s, j.msg_per_s),
                mb_per_s: ratio(s.mb_per_s, j.mb_per_s),
                p50: ratio(s.latency.p50_us, j.latency.p50_us),
                p99: ratio(s.latency.p99_us, j.latency.p99_us),
            });
        }
        let Some(s) = sluice else { return };
        let mut shares = Vec::new();
        let share = |limit: String, value: f64, unit, sluice: f64| LimitShare {
            limit,
            value,
            unit,
            sluice,
            fraction: if value > 0.0 { sluice / value } else { 0.0 },
        };
        if let Some(echo) = echo {
            // The ceiling of the publish path; for end-to-end, of its producers.
            let published = s.publish.as_ref().map_or(s.msg_per_s, |p| p.msg_per_s);
            shares.push(share(
                "NATS ack-path ceiling (echo responder)".into(),
                echo.msg_per_s,
                "msg/s",
                published,
            ));
        }
        if let Some(disk) = &self.disk_write_limit {
            let written = s
                .publish
                .as_ref()
                .map_or(s.wire_mb_per_s, |p| p.wire_mb_per_s);
            shares.push(share(
                format!("disk write ({})", disk.pattern),
                disk.mb_per_s,
                "MB/s",
                written,
            ));
        }
        if let (Some(machine), true) = (
            machine,
            self.workload == Workload::Consume && !self.settings.tail,
        ) {
            shares.push(share(
                format!("loopback TCP ({})", machine.loopback_tcp.pattern),
                machine.loopback_tcp.mb_per_s,
                "MB/s",
                s.wire_mb_per_s,
            ));
            shares.push(share(
                format!("sequential read ({})", machine.sequential_read.pattern),
                machine.sequential_read.mb_per_s,
                "MB/s",
                s.wire_mb_per_s,
            ));
        }
        self.limits = shares;
    }
}

// ------------------------------------------------------------------ printing

/// `▁▂▄█`-style sparkline of per-second messages.
pub fn sparkline(timeline: &[SecondReport]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let timeline: Vec<&SecondReport> = timeline.iter().filter(|s| s.drawable()).collect();
    if timeline.is_empty() {
        return String::new();
    }
    let per_char = timeline.len().div_ceil(SPARKLINE_WIDTH);
    let values: Vec<f64> = timeline
        .chunks(per_char)
        .map(|chunk| chunk.iter().map(|s| s.msg_per_s).sum::<f64>() / chunk.len() as f64)
        .collect();
    let max = values.iter().copied().fold(0.0, f64::max);
    values
        .iter()
        .map(|v| {
            if max <= 0.0 {
                BARS[0]
            } else {
                BARS[((v / max) * 7.0).round() as usize]
            }
        })
        .collect()
}

fn describe(case: &Case) -> String {
    let s = &case.settings;
    let mut parts = Vec::new();
    match case.workload {
        Workload::PublishNats => {
            parts.push(format!("{} producer(s) x window {}", s.producers, s.window))
        }
        Workload::PublishDirect => parts.push(format!(
            "{} producer(s), {} records ({}) per batch, pipeline {}",
            s.producers,
            case.batch_records(),
            format_bytes(case.batch_records() * case.size),
            s.pipeline
        )),
        Workload::Consume if case.catch_up() => parts.push(format!(
            "{} consumer(s), {} pre-filled, fetch {}",
            s.consumers,
            group(case.prefill_messages()),
            format_bytes(s.fetch_bytes)
        )),
        Workload::Consume => parts.push(format!(
            "{} direct producer(s), {} consumer(s) long-polling",
            s.producers, s.consumers
        )),
        Workload::EndToEnd => parts.push(format!(
            "{} NATS producer(s) x window {}, {} consumer(s) long-polling",
            s.producers, s.window, s.consumers
        )),
    }
    parts.push(format!(
        "{} stream(s) x {} partition(s)",
        s.streams, s.partitions
    ));
    match s.amount {
        Amount::Messages(n) => parts.push(format!("{} messages", group(n))),
        Amount::Duration(d) => parts.push(format!("{:.0} s", d.as_secs_f64())),
    }
    let warmed_up = !(case.catch_up() && matches!(s.amount, Amount::Messages(_)));
    if warmed_up && !s.warmup.is_zero() {
        parts.push(format!("after {:.0} s warm-up", s.warmup.as_secs_f64()));
    }
    if let Some(rate) = s.rate {
        parts.push(format!("open loop at {} msg/s", short(rate)));
    }
    parts.join(", ")
}

/// The printed report of one case.
pub fn case_table(case: &Case, report: &CaseReport, per_client: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\n== {} ==  {}", report.name, describe(case));
    let _ = writeln!(
        out,
        "  {:<10} {:>11} {:>9} {:>8} | {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} ms | {:>5}  timeline (msg/s per second)",
        "system", "messages", "msg/s", "MB/s", "p50", "p90", "p99", "p99.9", "p99.99", "max", "err"
    );
    for run in &report.runs {
        row(&mut out, run.system.name(), run);
        if let Some(publish) = &run.publish {
            row(&mut out, "  producers", publish);
        }
        let clients: Vec<&ClientReport> = run.clients.iter().collect();
        if clients.len() > 1 && (per_client || clients.len() <= 4) {
            for client in clients.iter().take(CLIENT_ROWS_MAX) {
                client_row(&mut out, client);
            }
        }
    }
    if let Some(first) = report.runs.iter().find_map(|r| r.first_error.as_ref()) {
        let _ = writeln!(out, "  first error: {first}");
    }
    if let Some(latency) = report.runs.first().map(|r| &r.latency_of) {
        let _ = writeln!(out, "  latency: {latency}");
    }
    if let Some(r) = &report.ratios {
        let _ = writeln!(
            out,
            "  sluice / jetstream: {:.2}x msg/s, {:.2}x MB/s, p50 {:.2}x, p99 {:.2}x (latency: lower is better)",
            r.msg_per_s, r.mb_per_s, r.p50, r.p99
        );
    }
    for share in &report.limits {
        let _ = writeln!(
            out,
            "  sluice = {:.0}% of {}: {} {}",
            share.fraction * 100.0,
            share.limit,
            short(share.value),
            share.unit
        );
    }
    if let Some(server) = report.runs.iter().find_map(|r| r.server.as_ref()) {
        if server.fsyncs > 0 {
            let _ = writeln!(
                out,
                "  sluice node: {} fdatasyncs (mean {}), {:.1} records per fdatasync",
                group(server.fsyncs),
                crate::units::format_latency_us(server.fsync_mean_us),
                server.records_per_fsync
            );
        }
    }
    for run in &report.runs {
        if !run.cpu_percent.is_empty() {
            let cpu: Vec<String> = run
                .cpu_percent
                .iter()
                .map(|(k, v)| format!("{k} {v:.0}%"))
                .collect();
            let _ = writeln!(
                out,
                "  cpu during {}: {}",
                run.system.name(),
                cpu.join(", ")
            );
        }
        if let Some(other) = run
            .other_cpu_percent()
            .filter(|p| *p > OTHER_CPU_WARN_PERCENT)
        {
            let _ = writeln!(
                out,
                "  WARNING: other processes used {other:.0}% of a CPU during the {} run: its figures are skewed",
                run.system.name()
            );
        }
    }
    out
}

fn row(out: &mut String, name: &str, run: &RunReport) {
    let l = &run.latency;
    let messages = match run.expected_messages {
        Some(expected) if expected != run.messages => {
            format!("{}/{}", group(run.messages), group(expected))
        }
        _ => group(run.messages),
    };
    let _ = writeln!(
        out,
        "  {:<10} {:>11} {:>9} {:>8.1} | {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}    | {:>5}  {}",
        name,
        messages,
        short(run.msg_per_s),
        run.mb_per_s,
        ms_cell(l.p50_us),
        ms_cell(l.p90_us),
        ms_cell(l.p99_us),
        ms_cell(l.p99_9_us),
        ms_cell(l.p99_99_us),
        ms_cell(l.max_us),
        run.errors + run.timeouts,
        sparkline(&run.timeline)
    );
}

fn client_row(out: &mut String, client: &ClientReport) {
    let l = &client.latency;
    let _ = writeln!(
        out,
        "  {:<10} {:>11} {:>9} {:>8.1} | {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}    | {:>5}",
        format!(" {} {}", &client.role[..4], client.index),
        group(client.messages),
        short(client.msg_per_s),
        client.mb_per_s,
        ms_cell(l.p50_us),
        ms_cell(l.p90_us),
        ms_cell(l.p99_us),
        ms_cell(l.p99_9_us),
        ms_cell(l.p99_99_us),
        ms_cell(l.max_us),
        client.errors + client.timeouts
    );
}

/// The closing summary: one line per case and system, and the limits.
pub fn summary(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\n== summary ==");
    let _ = writeln!(
        out,
        "  {:<24} {:<10} {:>9} {:>8} {:>8} {:>8}  vs jetstream / limits",
        "case", "system", "msg/s", "MB/s", "p50 ms", "p99 ms"
    );
    for case in &report.cases {
        for run in &case.runs {
            let mut notes = Vec::new();
            if run.system == System::Sluice {
                if let Some(r) = &case.ratios {
                    notes.push(format!(
                        "{:.2}x msg/s, {:.2}x MB/s, p99 {:.2}x",
                        r.msg_per_s, r.mb_per_s, r.p99
                    ));
                }
                for share in &case.limits {
                    let name = share.limit.split(" (").next().unwrap_or(&share.limit);
                    notes.push(format!("{:.0}% of {name}", share.fraction * 100.0));
                }
            }
            let _ = writeln!(
                out,
                "  {:<24} {:<10} {:>9} {:>8.1} {:>8} {:>8}  {}",
                case.name,
                run.system.name(),
                short(run.msg_per_s),
                run.mb_per_s,
                ms_cell(run.latency.p50_us),
                ms_cell(run.latency.p99_us),
                notes.join("; ")
            );
        }
    }
    if let Some(limits) = &report.limits {
        let disks: Vec<String> = report
            .cases
            .iter()
            .filter_map(|c| c.disk_write_limit.as_ref())
            .map(|d| format!("{} MB/s ({})", short(d.mb_per_s), d.pattern))
            .collect();
        let echoes: Vec<String> = report
            .cases
            .iter()
            .filter_map(|c| {
                let echo = c.runs.iter().find(|r| r.system == System::NatsEcho)?;
                Some(format!(
                    "{} msg/s at {}",
                    short(echo.msg_per_s),
                    format_bytes(c.message_bytes)
                ))
            })
            .collect();
        let _ = writeln!(
            out,
            "  limits: disk write {}; sequential read {} MB/s; loopback TCP {} MB/s; NATS echo ceiling {}",
            if disks.is_empty() { "-".to_string() } else { disks.join(", ") },
            short(limits.sequential_read.mb_per_s),
            short(limits.loopback_tcp.mb_per_s),
            if echoes.is_empty() { "-".to_string() } else { echoes.join(", ") },
        );
    }
    for note in &report.notes {
        let _ = writeln!(out, "  note: {note}");
    }
    let skewed: Vec<String> = report
        .cases
        .iter()
        .flat_map(|c| c.runs.iter().map(move |r| (c, r)))
        .filter(|(_, r)| {
            r.other_cpu_percent()
                .is_some_and(|p| p > OTHER_CPU_WARN_PERCENT)
        })
        .map(|(c, r)| format!("{} / {}", c.name, r.system.name()))
        .collect();
    if !skewed.is_empty() {
        let _ = writeln!(
            out,
            "  WARNING: other processes used the CPU during {}: rerun on a quiet machine",
            skewed.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparkline_scales_to_the_busiest_second() {
        let seconds = |values: &[u64]| -> Vec<SecondReport> {
            values
                .iter()
                .enumerate()
                .map(|(second, m)| SecondReport {
                    second,
                    covered_s: 1.0,
                    messages: *m,
                    msg_per_s: *m as f64,
                    mb: 0.0,
                    p50_us: 0.0,
                    p99_us: 0.0,
                    max_us: 0.0,
                })
                .collect()
        };
        assert_eq!(sparkline(&seconds(&[0, 50, 100])), "▁▅█");
        assert_eq!(sparkline(&seconds(&[])), "");
        assert_eq!(sparkline(&seconds(&[7; 100])).chars().count(), 34);
    }

    #[test]
    fn latency_report_is_ordered() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for v in 1..=10_000u64 {
            h.record(v * 1000).unwrap();
        }
        let l = LatencyReport::of(&h, true);
        assert!(l.min_us <= l.p50_us && l.p50_us <= l.p90_us && l.p90_us <= l.p99_us);
        assert!(l.p99_us <= l.p99_9_us && l.p99_9_us <= l.p99_99_us && l.p99_99_us <= l.max_us);
        assert_eq!(l.spectrum.len(), SPECTRUM.len());
        assert!(l.hdr_v2_base64.is_some());
    }
}
