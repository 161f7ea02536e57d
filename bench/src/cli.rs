//! The command line: every option with its help text, and its translation
//! into a list of [`Case`]s to run.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::plan::{Amount, Case, CaseSettings, Workload};
use crate::units;

const ABOUT: &str = "Benchmarks a Sluice node (and, side by side, NATS JetStream) and reports \
throughput, latency percentiles and the machine's limits.";

const LONG_ABOUT: &str = "\
Benchmarks a Sluice node (and, side by side, NATS JetStream) and reports throughput, latency
percentiles and the machine's limits.

Unless pointed at running servers (--server, --nats-url) it starts its own nats-server and
`sluice serve` on free loopback ports in a temporary directory, and stops and removes them
afterwards. Each WORKLOAD runs once per --size (a \"case\"), against Sluice and, with --compare
jetstream, against JetStream (file storage, same nats-server, same machine) right after it.

WORKLOADS
  publish-nats    Producers publish plain NATS messages with a reply subject to a stream's
                  subject and keep --window messages in flight each; Sluice acks on the reply
                  subject once the record is fsynced. Latency: per message, publish -> ack.
                  JetStream: js.publish with the same window; NATS echo (--limits): a responder
                  that acks without storing anything (the NATS ack-path ceiling).
  publish-direct  Producers send RecordBatches of --batch-bytes (or --batch-records) straight to
                  the partition's shard port (TCP Publish request), --pipeline requests in
                  flight per connection. Latency: per message, batch sent -> PublishResponse.
                  JetStream has no batch publish: its row is js.publish with a window of the
                  records a Sluice producer has in flight (batch x pipeline, at least --window).
  consume         Catch-up reads: the stream is pre-filled (direct publish in batches of
                  --batch-bytes; JetStream: js.publish) and consumers fetch it from the start
                  over TCP (sendfile path), --fetch-bytes per Fetch, one fetch in flight while
                  the last answer's batches are CRC-checked; with --duration they re-read from
                  the start until time is up. Latency: per fetch request. JetStream: pull
                  consumers (no acks) filtering on the partition subject, the same number of
                  messages per request.
                  With --tail: producers publish directly while consumers long-poll at the head
                  of the log; latency per message, send -> receipt (payload carries the time).
  end-to-end      Producers publish through NATS (as publish-nats); consumers long-poll over TCP.
                  Latency: per message, publish -> receipt by the consumer. JetStream:
                  js.publish and a pull consumer.
  all             The four workloads above.
  acceptance      The project's acceptance set (implies --compare jetstream --limits):
                  publish-nats 128 B and 16 KiB, publish-direct 128 B and 16 KiB (64 KiB
                  batches), consume 128 B and 16 KiB.

MEASUREMENT
  Every client records latencies in its own hdrhistogram (ns, 3 significant digits); a run's
  percentiles come from the sum of its clients' histograms, never from averaged percentiles.
  Throughput is measured messages (and payload bytes) over the time from the end of warm-up to
  the last completion. Without --rate the load is closed-loop (as fast as the window allows)
  and latency runs from the actual send. With --rate the load is open-loop: message i of a
  client is due at start + i/rate, late messages are sent at once, and latency runs from the
  due time, so stalls are not hidden (coordinated omission).
  Sluice acks only after fdatasync. JetStream (nats-server 2.9, file storage) acks once the
  message is written to its file, before fsync (it syncs every 2 minutes by default; 2.9 has
  no per-message sync option) -- the comparison favours JetStream on durability.

LIMITS (--limits)
  disk write      group commit without the engine: one thread pwrites the case's batches into
                  a fallocate'd file on the data directory's file system, never more beyond
                  the last finished sync than the direct producers have in flight, while
                  another runs fdatasync back to back; for cases with direct producers
                  (publish-direct, consume --tail).
  seq read        1 MiB preads of the file just written (page cache warm).
  loopback TCP    one thread writes 1 MiB chunks into a loopback socket, another reads them.
  NATS echo       the publish workload answered by an in-process responder that stores
                  nothing: the payload crosses nats-server twice and the ack once more, which
                  any store beside NATS pays. Sluice figures are printed as a fraction of each.

OUTPUT
  A table per case (aggregate row per target, per-client rows with --per-client or when there
  are up to 4 clients, a per-second throughput sparkline, ratios Sluice/JetStream and fractions
  of the limits), --json FILE (every number, per-second timelines, per-client rows, histogram
  percentile spectra and the merged histograms as base64 hdrhistogram V2), --chart FILE (a
  self-contained HTML page with SVG charts: latency by percentile and throughput over time).
  Progress goes to stderr (one line per second; --quiet turns it off). Ctrl-C stops the
  current run, reports what was measured and cleans up.

EXIT STATUS
  0 every run completed with the planned message count and no errors; 3 some run failed, lost
  or timed out messages, or was interrupted; 1 a fatal error (a server would not start); 2 bad
  options.

EXAMPLES
  sluice-bench publish-nats --size 128,16KiB --compare jetstream --limits
  sluice-bench publish-direct --size 128 --batch-bytes 64KiB --producers 8 --json out.json
  sluice-bench consume --size 16KiB --duration 10 --chart consume.html
  sluice-bench end-to-end --rate 20k --duration 30
  sluice-bench acceptance --json acceptance.json --chart acceptance.html";

/// A workload name on the command line (including the `all` and
/// `acceptance` sets).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WorkloadArg {
    PublishNats,
    PublishDirect,
    Consume,
    EndToEnd,
    All,
    Acceptance,
}

/// What to compare Sluice against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Compare {
    /// NATS JetStream, file storage, on the same nats-server.
    Jetstream,
}

#[derive(Debug, Parser)]
#[command(
    name = "sluice-bench",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = format!("{}\n{}", sluice::units::SIZE_HELP, sluice::units::DURATION_HELP)
)]
pub struct Args {
    /// Workloads to run, in order (see WORKLOADS above).
    #[arg(value_enum, required = true, num_args = 1..)]
    pub workloads: Vec<WorkloadArg>,

    // ------------------------------------------------------------ shape
    /// Message (record value) sizes, comma-separated: 128,1KiB,16KiB. One case per size.
    #[arg(short, long, value_name = "SIZES", default_value = "128", value_delimiter = ',', value_parser = units::parse_bytes, help_heading = "Workload shape")]
    pub size: Vec<usize>,

    /// Measured messages per case, all producers together (100k, 1M). Replaces --duration.
    /// For consume: the pre-fill, read once by each consumer.
    #[arg(short = 'n', long, value_name = "N", value_parser = units::parse_count, help_heading = "Workload shape")]
    pub messages: Option<u64>,

    /// Measured time per case (10, 2.5s, 500ms) when --messages is not given.
    #[arg(short, long, value_name = "TIME", default_value = "10", value_parser = units::parse_duration, help_heading = "Workload shape")]
    pub duration: Duration,

    /// Unmeasured time before each measured run: the same load, not recorded.
    #[arg(short, long, value_name = "TIME", default_value = "2", value_parser = units::parse_duration, help_heading = "Workload shape")]
    pub warmup: Duration,

    /// Producers (one connection and thread each). Default: 1; publish-direct 8.
    #[arg(short, long, value_name = "N", help_heading = "Workload shape")]
    pub producers: Option<usize>,

    /// Consumers (one connection and thread each) for consume and end-to-end.
    #[arg(
        short,
        long,
        value_name = "N",
        default_value_t = 1,
        help_heading = "Workload shape"
    )]
    pub consumers: usize,

    /// Streams per case; producers and consumers are spread over streams x partitions.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        help_heading = "Workload shape"
    )]
    pub streams: usize,

    /// Partitions per stream. JetStream has none: partition i is subject S.i of one
    /// JetStream stream, and its consumers filter on that subject.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        help_heading = "Workload shape"
    )]
    pub partitions: usize,

    /// Replication factor of the Sluice streams (needs a cluster of that size).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        help_heading = "Workload shape"
    )]
    pub replicas: usize,

    /// Open-loop load: messages per second for all producers together (50000, 50k).
    /// Latency is then measured from each message's intended send time.
    #[arg(long, value_name = "MSGS_PER_S", value_parser = units::parse_rate, help_heading = "Workload shape")]
    pub rate: Option<f64>,

    /// NATS publishes in flight per producer (publish-nats, end-to-end, JetStream rows).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 256,
        help_heading = "Workload shape"
    )]
    pub window: usize,

    /// Direct publish: target bytes of record values per batch.
    #[arg(long, value_name = "BYTES", default_value = "64KiB", value_parser = units::parse_bytes, help_heading = "Workload shape")]
    pub batch_bytes: usize,

    /// Direct publish: records per batch (overrides --batch-bytes).
    #[arg(long, value_name = "N", help_heading = "Workload shape")]
    pub batch_records: Option<usize>,

    /// Direct publish: requests in flight per connection (the server answers them in order).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        help_heading = "Workload shape"
    )]
    pub pipeline: usize,

    /// Fetch max_bytes for consumers (the server caps it at 32 MiB). Catch-up reads keep one
    /// fetch in flight while checking the previous answer.
    #[arg(long, value_name = "BYTES", default_value = "1MiB", value_parser = units::parse_bytes, help_heading = "Workload shape")]
    pub fetch_bytes: usize,

    /// Long-poll wait of tail and end-to-end fetches, in milliseconds.
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 100,
        help_heading = "Workload shape"
    )]
    pub fetch_wait_ms: u32,

    /// consume: read at the head of the log while producers publish (instead of catch-up).
    #[arg(long, help_heading = "Workload shape")]
    pub tail: bool,

    /// consume with --duration: bytes of record values to pre-fill per case and re-read.
    #[arg(long, value_name = "BYTES", default_value = "128MiB", value_parser = units::parse_bytes, help_heading = "Workload shape")]
    pub prefill: usize,

    /// A message not acknowledged (or received) this long after it was sent is given up on
    /// and counted as a timeout.
    #[arg(long, value_name = "TIME", default_value = "30", value_parser = units::parse_duration, help_heading = "Workload shape")]
    pub timeout: Duration,

    // ------------------------------------------------------------ targets
    /// Running Sluice node(s), host:port of any shard port, comma-separated for a cluster.
    /// Default: start one.
    #[arg(
        long,
        value_name = "ADDRS",
        value_delimiter = ',',
        help_heading = "Targets"
    )]
    pub server: Vec<String>,

    /// Running nats-server (the one the Sluice node uses). Default: start one (with
    /// JetStream when --compare jetstream).
    #[arg(long, value_name = "URL", help_heading = "Targets")]
    pub nats_url: Option<String>,

    /// The sluice binary to start. Default: next to sluice-bench, else `sluice` on PATH.
    #[arg(
        long,
        value_name = "PATH",
        env = "SLUICE_BIN",
        help_heading = "Targets"
    )]
    pub sluice_bin: Option<PathBuf>,

    /// The nats-server binary to start.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "nats-server",
        help_heading = "Targets"
    )]
    pub nats_bin: PathBuf,

    /// CPUs of the started node's data shards (sluice serve --cores), e.g. 1 or 1,2.
    #[arg(long, value_name = "LIST", help_heading = "Targets")]
    pub cores: Option<String>,

    /// Sync policy of the started node (sluice serve --sync): always, interval:MS or never.
    /// Anything but `always` is not durable-before-ack and is flagged in the report.
    #[arg(
        long,
        value_name = "POLICY",
        default_value = "always",
        help_heading = "Targets"
    )]
    pub sync: String,

    /// Microseconds the started node's shards spin before parking (config
    /// spin_before_park_us): can lower latency on idle cores; costs throughput when CPUs are
    /// shared.
    #[arg(long, value_name = "US", help_heading = "Targets")]
    pub spin_us: Option<u64>,

    /// Also run every case against this system.
    #[arg(long, value_enum, value_name = "SYSTEM", help_heading = "Targets")]
    pub compare: Option<Compare>,

    /// Measure the machine's limits (disk write, sequential read, loopback TCP, NATS echo)
    /// and print Sluice's figures as fractions of them.
    #[arg(long, help_heading = "Targets")]
    pub limits: bool,

    /// Time each limit measurement runs.
    #[arg(long, value_name = "TIME", default_value = "3", value_parser = units::parse_duration, help_heading = "Targets")]
    pub limits_time: Duration,

    /// Directory for started servers' data and logs (default: a new temporary directory).
    #[arg(long, value_name = "DIR", help_heading = "Targets")]
    pub work_dir: Option<PathBuf>,

    /// Keep the work directory, logs and benchmark streams afterwards.
    #[arg(long, help_heading = "Targets")]
    pub keep: bool,

    // ------------------------------------------------------------ output
    /// Write the full report as JSON.
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    pub json: Option<PathBuf>,

    /// Write a self-contained HTML page with SVG charts.
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    pub chart: Option<PathBuf>,

    /// Print a row per client (always in the JSON).
    #[arg(long, help_heading = "Output")]
    pub per_client: bool,

    /// No progress output.
    #[arg(short, long, help_heading = "Output")]
    pub quiet: bool,
}

/// Bytes of the send time carried in payloads that consumers time.
const STAMP_BYTES: usize = 8;

/// What the acceptance set runs: (workload, size).
pub const ACCEPTANCE: [(Workload, usize); 6] = [
    (Workload::PublishNats, 128),
    (Workload::PublishNats, 16 << 10),
    (Workload::PublishDirect, 128),
    (Workload::PublishDirect, 16 << 10),
    (Workload::Consume, 128),
    (Workload::Consume, 16 << 10),
];

impl Args {
    /// Whether the `acceptance` set was asked for (it implies comparing and limits).
    pub fn acceptance(&self) -> bool {
        self.workloads.contains(&WorkloadArg::Acceptance)
    }

    pub fn compare_jetstream(&self) -> bool {
        self.compare == Some(Compare::Jetstream) || self.acceptance()
    }

    pub fn measure_limits(&self) -> bool {
        self.limits || self.acceptance()
    }

    /// Checks the options against each other.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("--consumers", self.consumers),
            ("--streams", self.streams),
            ("--partitions", self.partitions),
            ("--replicas", self.replicas),
            ("--window", self.window),
            ("--pipeline", self.pipeline),
            ("--batch-bytes", self.batch_bytes),
            ("--fetch-bytes", self.fetch_bytes),
            ("--prefill", self.prefill),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(format!("{name} must be at least 1"));
        }
        if self.producers == Some(0) || self.batch_records == Some(0) {
            return Err("--producers and --batch-records must be at least 1".into());
        }
        if self.messages == Some(0) {
            return Err("--messages must be at least 1".into());
        }
        if self.duration.is_zero() && self.messages.is_none() {
            return Err("--duration must be positive".into());
        }
        if self.size.contains(&0) {
            return Err("--size must be at least 1 byte".into());
        }
        let stamped = self.cases().iter().any(Case::timestamps_in_payload);
        if stamped && self.size.iter().any(|size| *size < STAMP_BYTES) {
            return Err(format!(
                "end-to-end and consume --tail carry the send time in the payload: --size must be at least {STAMP_BYTES} bytes"
            ));
        }
        if !self.server.is_empty() && self.nats_url.is_none() && self.needs_nats() {
            return Err(
                "--server needs --nats-url (the nats-server that node uses) for NATS workloads and --compare"
                    .into(),
            );
        }
        if self.window > 1 << 16 || self.pipeline > 1024 || self.producers.unwrap_or(1) > 1024 {
            return Err("--window is capped at 65536, --pipeline and --producers at 1024".into());
        }
        if self.consumers > 1024 || self.streams * self.partitions > 4096 {
            return Err("--consumers is capped at 1024, streams x partitions at 4096".into());
        }
        Ok(())
    }

    fn needs_nats(&self) -> bool {
        self.compare_jetstream()
            || self.measure_limits()
            || self.workloads.iter().any(|w| {
                matches!(
                    w,
                    WorkloadArg::PublishNats | WorkloadArg::EndToEnd | WorkloadArg::All
                )
            })
    }

    /// The cases to run, in order.
    pub fn cases(&self) -> Vec<Case> {
        let mut pairs: Vec<(Workload, usize)> = Vec::new();
        let sizes: Vec<usize> = self.size.clone();
        for workload in &self.workloads {
            let workloads: &[Workload] = match workload {
                WorkloadArg::PublishNats => &[Workload::PublishNats],
                WorkloadArg::PublishDirect => &[Workload::PublishDirect],
                WorkloadArg::Consume => &[Workload::Consume],
                WorkloadArg::EndToEnd => &[Workload::EndToEnd],
                WorkloadArg::All => &Workload::ALL,
                WorkloadArg::Acceptance => {
                    pairs.extend(ACCEPTANCE);
                    continue;
                }
            };
            for w in workloads {
                for size in &sizes {
                    pairs.push((*w, *size));
                }
            }
        }
        pairs
            .into_iter()
            .enumerate()
            .map(|(index, (workload, size))| Case {
                index,
                workload,
                size,
                settings: self.settings_for(workload),
            })
            .collect()
    }

    fn settings_for(&self, workload: Workload) -> CaseSettings {
        let default_producers = match workload {
            Workload::PublishDirect => 8,
            _ => 1,
        };
        let amount = match self.messages {
            Some(n) => Amount::Messages(n),
            None => Amount::Duration(self.duration),
        };
        CaseSettings {
            amount,
            warmup: self.warmup,
            producers: self.producers.unwrap_or(default_producers),
            consumers: self.consumers,
            streams: self.streams,
            partitions: self.partitions,
            replicas: self.replicas,
            rate: self.rate,
            window: self.window,
            batch_bytes: self.batch_bytes,
            batch_records: self.batch_records,
            pipeline: self.pipeline,
            fetch_bytes: self.fetch_bytes,
            fetch_wait_ms: self.fetch_wait_ms,
            tail: self.tail,
            prefill_bytes: self.prefill,
            timeout: self.timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// The size and duration rules (`sluice::units`, shared with `sluice`)
    /// are in `--help`.
    #[test]
    fn help_explains_sizes_and_durations() {
        let help = Args::command().render_long_help().to_string();
        assert!(help.contains(sluice::units::SIZE_HELP), "{help}");
        assert!(help.contains(sluice::units::DURATION_HELP), "{help}");
    }

    #[test]
    fn command_line_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn sizes_expand_into_cases() {
        let args = Args::parse_from([
            "sluice-bench",
            "publish-nats",
            "consume",
            "--size",
            "128,16KiB",
        ]);
        let cases = args.cases();
        assert_eq!(cases.len(), 4);
        assert_eq!(cases[1].workload, Workload::PublishNats);
        assert_eq!(cases[1].size, 16 << 10);
        assert_eq!(cases[2].workload, Workload::Consume);
        assert!(args.validate().is_ok());
    }

    #[test]
    fn acceptance_implies_compare_and_limits() {
        let args = Args::parse_from(["sluice-bench", "acceptance"]);
        assert!(args.compare_jetstream() && args.measure_limits());
        assert_eq!(args.cases().len(), ACCEPTANCE.len());
    }

    #[test]
    fn direct_publish_defaults_to_eight_producers() {
        let args = Args::parse_from(["sluice-bench", "publish-direct", "-n", "10"]);
        let case = &args.cases()[0];
        assert_eq!(case.settings.producers, 8);
        assert_eq!(case.settings.amount, Amount::Messages(10));
    }

    #[test]
    fn help_documents_every_workload() {
        let help = Args::command().render_long_help().to_string();
        for name in [
            "publish-nats",
            "publish-direct",
            "consume",
            "end-to-end",
            "acceptance",
            "--rate",
            "--limits",
            "--compare",
        ] {
            assert!(help.contains(name), "help lacks {name}");
        }
    }

    #[test]
    fn bad_combinations_are_refused() {
        let args = Args::parse_from(["sluice-bench", "publish-nats", "--server", "127.0.0.1:9292"]);
        assert!(args.validate().is_err());
        let args = Args::parse_from(["sluice-bench", "consume", "--partitions", "0"]);
        assert!(args.validate().is_err());
        let args = Args::parse_from(["sluice-bench", "end-to-end", "--size", "4"]);
        assert!(args.validate().is_err());
        let args = Args::parse_from(["sluice-bench", "publish-nats", "--size", "4"]);
        assert!(args.validate().is_ok());
    }
}
