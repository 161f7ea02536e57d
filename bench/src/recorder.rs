//! What every client (producer or consumer) records while it runs, and how
//! the records of many clients become one.
//!
//! Each client owns a [`Recorder`]: an hdrhistogram of latencies in
//! nanoseconds, counters, and a per-second timeline (counts plus a coarser
//! histogram per second). Nothing is shared on the hot path except the
//! [`Live`] counters the progress line reads. When a run ends the clients'
//! recorders are merged by **adding histograms** ([`Histogram::add`]) — never
//! by averaging per-client percentiles, which has no meaning.
//!
//! Latency is measured from a *start* instant the client chooses: the
//! actual send time in closed-loop runs, the message's **intended** send
//! time under `--rate` (see [`Schedule`]), so a stall that delays sending
//! shows up in the latencies instead of silently lowering the load
//! (coordinated omission).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Significant digits of the main latency histograms (0.1 % resolution).
pub const HISTOGRAM_SIGFIGS: u8 = 3;
/// Significant digits of the per-second histograms (1 % resolution); they
/// only feed the timeline's p50/p99 and keep a long run's memory small.
pub const SECOND_HISTOGRAM_SIGFIGS: u8 = 2;
/// Longest timeline kept, in seconds (a longer run folds its tail into the
/// last entry). Bounds a client's memory at about 35 KiB per second.
pub const TIMELINE_SECONDS_MAX: usize = 3600;

/// The instant every timestamp in this process is measured from; payloads
/// that carry a send time carry nanoseconds since it.
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds from [`epoch`] to `at` (0 for instants before it).
pub fn nanos_since_epoch(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}

/// The instant `nanos` after [`epoch`].
pub fn instant_from_nanos(nanos: u64) -> Instant {
    epoch() + Duration::from_nanos(nanos)
}

/// Set when the user pressed Ctrl-C: clients stop issuing work and the run
/// winds down, reporting what it measured.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Counters shared by every client of one run, read by the progress line.
#[derive(Debug, Default)]
pub struct Live {
    pub messages: AtomicU64,
    pub bytes: AtomicU64,
    pub errors: AtomicU64,
    /// Messages completed during warm-up (not measured).
    pub warmup_messages: AtomicU64,
}

impl Live {
    pub fn add(&self, messages: u64, bytes: u64) {
        self.messages.fetch_add(messages, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// Throughput and latency of one second of a run.
#[derive(Clone, Debug)]
pub struct Second {
    pub messages: u64,
    pub bytes: u64,
    pub latency: Histogram<u32>,
}

impl Second {
    fn new() -> Second {
        Second {
            messages: 0,
            bytes: 0,
            latency: new_second_histogram(),
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    // Auto-resizing from 1 ns: memory grows with the largest value seen.
    let mut histogram = Histogram::new(HISTOGRAM_SIGFIGS).expect("valid sigfigs");
    histogram.auto(true);
    histogram
}

fn new_second_histogram() -> Histogram<u32> {
    let mut histogram = Histogram::new(SECOND_HISTOGRAM_SIGFIGS).expect("valid sigfigs");
    histogram.auto(true);
    histogram
}

/// One client's measurements.
#[derive(Debug)]
pub struct Recorder {
    /// End of warm-up: work that started before it is not measured.
    measure_from: Instant,
    live: Arc<Live>,
    pub latency: Histogram<u64>,
    pub seconds: Vec<Second>,
    /// Messages completed (acked, received) in the measured window.
    pub messages: u64,
    /// Payload bytes of those messages.
    pub bytes: u64,
    /// Bytes that crossed the wire or hit the disk for them (batches with
    /// their headers); equals `bytes` where there is no framing to count.
    pub wire_bytes: u64,
    /// Requests or messages that failed (error answers, broken connections).
    pub errors: u64,
    /// Messages given up on after `--timeout` (outcome unknown).
    pub timeouts: u64,
    /// Last measured completion.
    pub last: Option<Instant>,
    /// A description of the first error, for the report.
    pub first_error: Option<String>,
}

impl Recorder {
    pub fn new(measure_from: Instant, live: Arc<Live>) -> Recorder {
        Recorder {
            measure_from,
            live,
            latency: new_histogram(),
            seconds: Vec::new(),
            messages: 0,
            bytes: 0,
            wire_bytes: 0,
            errors: 0,
            timeouts: 0,
            last: None,
            first_error: None,
        }
    }

    /// An empty recorder with the same warm-up end and live counters, for a
    /// helper thread of the same client.
    pub fn sibling(&self) -> Recorder {
        Recorder::new(self.measure_from, self.live.clone())
    }

    pub fn measure_from(&self) -> Instant {
        self.measure_from
    }

    /// Whether work that started at `start` counts (it began after warm-up).
    pub fn measured(&self, start: Instant) -> bool {
        start >= self.measure_from
    }

    /// Records `messages` messages of `bytes` payload bytes completed at
    /// `done`, each with latency `done - start`. Work that started during
    /// warm-up is ignored.
    pub fn complete(&mut self, start: Instant, done: Instant, messages: u64, bytes: u64) {
        self.complete_samples(start, done, messages, messages, bytes, bytes);
    }

    /// General form: `samples` latency samples of `done - start` (e.g. one
    /// per fetch request) for `messages` messages.
    pub fn complete_samples(
        &mut self,
        start: Instant,
        done: Instant,
        samples: u64,
        messages: u64,
        bytes: u64,
        wire_bytes: u64,
    ) {
        if !self.measured(start) {
            self.live
                .warmup_messages
                .fetch_add(messages, Ordering::Relaxed);
            return;
        }
        let latency_ns = nanos(done.saturating_duration_since(start)).max(1);
        if samples > 0 {
            // Auto-resize never fails on a positive value.
            let _ = self.latency.record_n(latency_ns, samples);
        }
        let second = self.second_mut(done);
        second.messages += messages;
        second.bytes += bytes;
        if samples > 0 {
            let _ = second
                .latency
                .record_n(latency_ns, u32::try_from(samples).unwrap_or(u32::MAX));
        }
        self.messages += messages;
        self.bytes += bytes;
        self.wire_bytes += wire_bytes;
        self.last = Some(self.last.map_or(done, |last| last.max(done)));
        self.live.add(messages, bytes);
    }

    /// Counts a failed request or message.
    pub fn error(&mut self, what: impl FnOnce() -> String) {
        self.errors += 1;
        self.live.error();
        if self.first_error.is_none() {
            self.first_error = Some(what());
        }
    }

    /// Counts messages given up on after the timeout.
    pub fn timeout(&mut self, count: u64) {
        self.timeouts += count;
        self.live.error();
        if self.first_error.is_none() {
            self.first_error = Some(format!("{count} message(s) not acknowledged in time"));
        }
    }

    fn second_mut(&mut self, done: Instant) -> &mut Second {
        let index = (done.saturating_duration_since(self.measure_from).as_secs() as usize)
            .min(TIMELINE_SECONDS_MAX - 1);
        while self.seconds.len() <= index {
            self.seconds.push(Second::new());
        }
        &mut self.seconds[index]
    }

    /// Adds `other`'s measurements to this one (histograms added, counters
    /// summed, timelines added second by second).
    pub fn merge(&mut self, other: &Recorder) {
        // Both auto-resize, so adding cannot fail on range.
        let _ = self.latency.add(&other.latency);
        for (index, second) in other.seconds.iter().enumerate() {
            while self.seconds.len() <= index {
                self.seconds.push(Second::new());
            }
            let mine = &mut self.seconds[index];
            mine.messages += second.messages;
            mine.bytes += second.bytes;
            let _ = mine.latency.add(&second.latency);
        }
        self.messages += other.messages;
        self.bytes += other.bytes;
        self.wire_bytes += other.wire_bytes;
        self.errors += other.errors;
        self.timeouts += other.timeouts;
        self.last = match (self.last, other.last) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }
}

/// How a consumer that needs set-up joins a run: it does its set-up, says
/// it is ready, and gets its recorder once every consumer is ready (the
/// measured window is only fixed then).
pub struct Ticket {
    ready: std::sync::mpsc::Sender<()>,
    recorder: std::sync::mpsc::Receiver<Recorder>,
}

/// The run's side of a [`Ticket`].
pub struct TicketOffice {
    pub ready: std::sync::mpsc::Receiver<()>,
    pub recorders: Vec<std::sync::mpsc::Sender<Recorder>>,
}

impl Ticket {
    /// `count` tickets and the office that hands out their recorders.
    pub fn issue(count: usize) -> (Vec<Ticket>, TicketOffice) {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut tickets = Vec::new();
        let mut recorders = Vec::new();
        for _ in 0..count {
            let (tx, rx) = std::sync::mpsc::channel();
            tickets.push(Ticket {
                ready: ready_tx.clone(),
                recorder: rx,
            });
            recorders.push(tx);
        }
        (
            tickets,
            TicketOffice {
                ready: ready_rx,
                recorders,
            },
        )
    }

    /// Reports ready and waits for the recorder; an error if the run was
    /// called off.
    pub fn ready(self) -> anyhow::Result<Recorder> {
        let _ = self.ready.send(());
        self.recorder
            .recv()
            .map_err(|_| anyhow::anyhow!("the run was called off before it started"))
    }
}

pub fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// When each message of an open-loop (`--rate`) run is due.
///
/// Message `i` of a client is due at `start + i / rate`. A client that falls
/// behind sends late messages at once (it never skips any) and measures
/// their latency from the due time, so the delay counts.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    start: Instant,
    interval_ns: f64,
}

impl Schedule {
    /// `rate` messages per second for one client, starting at `start`.
    pub fn new(start: Instant, rate: f64) -> Schedule {
        assert!(rate > 0.0, "a schedule needs a positive rate");
        Schedule {
            start,
            interval_ns: 1e9 / rate,
        }
    }

    /// When message `index` is due.
    pub fn due(&self, index: u64) -> Instant {
        self.start + Duration::from_nanos((index as f64 * self.interval_ns) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder(at: Instant) -> Recorder {
        Recorder::new(at, Arc::new(Live::default()))
    }

    #[test]
    fn warm_up_work_is_not_measured() {
        let t0 = Instant::now() + Duration::from_secs(1);
        let mut r = recorder(t0);
        r.complete(
            t0 - Duration::from_millis(1),
            t0 + Duration::from_millis(1),
            1,
            10,
        );
        assert_eq!(r.messages, 0);
        r.complete(t0, t0 + Duration::from_millis(1), 2, 20);
        assert_eq!((r.messages, r.bytes, r.latency.len()), (2, 20, 2));
    }

    #[test]
    fn merge_adds_histograms_not_percentiles() {
        let t0 = Instant::now();
        let mut a = recorder(t0);
        let mut b = recorder(t0);
        // a: 99 fast messages; b: 1 slow one. The merged p99 must be fast and
        // the max slow; averaging per-client p99s would give ~50 ms.
        for _ in 0..99 {
            a.complete(t0, t0 + Duration::from_micros(100), 1, 1);
        }
        b.complete(t0, t0 + Duration::from_millis(100), 1, 1);
        a.merge(&b);
        assert_eq!(a.messages, 100);
        let p99 = a.latency.value_at_quantile(0.99);
        assert!(p99 < 200_000, "p99 {p99} ns");
        assert!(a.latency.max() >= 99_000_000);
        let p50 = a.latency.value_at_quantile(0.5);
        assert!(p50 <= p99 && p99 <= a.latency.max());
    }

    #[test]
    fn timeline_counts_per_second() {
        let t0 = Instant::now();
        let mut r = recorder(t0);
        r.complete(t0, t0 + Duration::from_millis(500), 3, 30);
        r.complete(t0, t0 + Duration::from_millis(2500), 4, 40);
        assert_eq!(r.seconds.len(), 3);
        assert_eq!(r.seconds[0].messages, 3);
        assert_eq!(r.seconds[1].messages, 0);
        assert_eq!(r.seconds[2].bytes, 40);
    }

    #[test]
    fn fetch_samples_differ_from_messages() {
        let t0 = Instant::now();
        let mut r = recorder(t0);
        r.complete_samples(
            t0,
            t0 + Duration::from_micros(50),
            1,
            1000,
            128_000,
            140_000,
        );
        assert_eq!(
            (r.messages, r.latency.len(), r.wire_bytes),
            (1000, 1, 140_000)
        );
    }

    #[test]
    fn schedule_measures_from_intended_time() {
        // A client at 1000 msg/s that stalls for 100 ms: the messages it
        // sends late carry the stall in their latency.
        let t0 = Instant::now();
        let schedule = Schedule::new(t0, 1000.0);
        assert_eq!(schedule.due(0), t0);
        assert_eq!(schedule.due(10), t0 + Duration::from_millis(10));
        let mut r = recorder(t0);
        let resumed = t0 + Duration::from_millis(100);
        for i in 0..100 {
            // Each is sent at `resumed` and acked 1 ms later.
            r.complete(schedule.due(i), resumed + Duration::from_millis(1), 1, 1);
        }
        // Half the messages waited more than 50 ms: p50 reflects the stall.
        assert!(r.latency.value_at_quantile(0.5) > 45_000_000);
        assert!(r.latency.max() >= 100_000_000);
    }
}
