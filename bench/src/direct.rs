//! Direct publishers: RecordBatches sent with the TCP Publish request to the
//! shard port that owns each partition, `pipeline` requests in flight per
//! connection.
//!
//! Closed loop: every batch holds `batch_records` records and its records'
//! latency runs from the send to the `PublishResponse`. Open loop
//! (`--rate`): a producer sends, whenever its connection has room, the
//! records that are due (at most `batch_records`), and each record's
//! latency runs from its own due time.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::{Bytes, BytesMut};
use shards::batch::{encode_batch, Record};
use shards::types::{Offset, TimestampMs};

use crate::nats_pub::{stamp, Delivered};
use crate::recorder::{interrupted, Recorder, Schedule};
use crate::wire::{Wire, WireReceiver, WireSender};

/// A partition a direct producer writes to.
#[derive(Clone, Debug)]
pub struct DirectSlot {
    pub stream: String,
    pub partition: u32,
    pub addr: SocketAddr,
    /// Index into the case's slots (for [`Delivered`]).
    pub slot: usize,
}

/// One direct producer's job.
#[derive(Clone, Debug)]
pub struct DirectJob {
    pub slots: Vec<DirectSlot>,
    pub size: usize,
    pub batch_records: usize,
    pub pipeline: usize,
    pub start: Instant,
    pub quota: Option<u64>,
    pub end: Option<Instant>,
    pub rate: Option<f64>,
    pub timeout: Duration,
    pub timestamps: bool,
}

/// A request in flight.
struct Pending {
    correlation_id: u32,
    slot: usize,
    /// Latency start of the first record, and of record `i`: `first + i *
    /// step` (step 0 in closed loop: all share the send time).
    first: Instant,
    step: Duration,
    records: u64,
    wire_bytes: u64,
}

/// Bounds the requests in flight on one connection; closed when the
/// connection's reader stops, so the sender never waits on a dead reader.
struct Gate {
    state: Mutex<(usize, bool)>,
    changed: Condvar,
}

impl Gate {
    fn new() -> Gate {
        Gate {
            state: Mutex::new((0, false)),
            changed: Condvar::new(),
        }
    }

    /// Waits for room below `limit`; false if the gate closed.
    fn enter(&self, limit: usize) -> bool {
        let mut state = self.state.lock().expect("gate lock");
        while state.0 >= limit && !state.1 {
            state = self.changed.wait(state).expect("gate lock");
        }
        state.0 += 1;
        !state.1
    }

    fn leave(&self) {
        let mut state = self.state.lock().expect("gate lock");
        state.0 = state.0.saturating_sub(1);
        self.changed.notify_all();
    }

    fn close(&self) {
        self.state.lock().expect("gate lock").1 = true;
        self.changed.notify_all();
    }
}

/// One connection's sending half, its reader thread's queue and gate.
struct Lane {
    tx: WireSender,
    queue: mpsc::Sender<Pending>,
    gate: Arc<Gate>,
}

/// Runs one direct producer: this thread sends, one reader thread per
/// connection times and records the answers as they arrive.
pub fn run_direct_producer(
    job: DirectJob,
    recorder: Recorder,
    delivered: Arc<Delivered>,
) -> Result<Recorder> {
    let mut wires: Vec<(SocketAddr, Wire)> = Vec::new();
    for slot in &job.slots {
        if !wires.iter().any(|(addr, _)| *addr == slot.addr) {
            wires.push((slot.addr, Wire::connect(slot.addr, job.timeout)?));
        }
    }
    std::thread::scope(|scope| {
        let mut lanes: HashMap<SocketAddr, Lane> = HashMap::new();
        let mut readers = Vec::new();
        for (addr, wire) in wires {
            let (queue, requests) = mpsc::channel::<Pending>();
            let gate = Arc::new(Gate::new());
            let mut lane_recorder = recorder.sibling();
            let (reader_gate, delivered, size) = (gate.clone(), delivered.clone(), job.size);
            let mut rx = wire.rx;
            readers.push(scope.spawn(move || {
                let result = read_answers(
                    &mut rx,
                    &requests,
                    &reader_gate,
                    &mut lane_recorder,
                    &delivered,
                    size,
                );
                reader_gate.close();
                result.map(|()| lane_recorder)
            }));
            lanes.insert(
                addr,
                Lane {
                    tx: wire.tx,
                    queue,
                    gate,
                },
            );
        }
        let sent = send_batches(&job, &mut lanes, &recorder);
        drop(lanes);
        let mut merged = recorder;
        let mut failure = sent.err();
        for reader in readers {
            match reader.join().expect("reader thread panicked") {
                Ok(lane) => merged.merge(&lane),
                Err(error) => failure = failure.or(Some(error)),
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(merged),
        }
    })
}

fn send_batches(
    job: &DirectJob,
    lanes: &mut HashMap<SocketAddr, Lane>,
    recorder: &Recorder,
) -> Result<()> {
    let schedule = job.rate.map(|rate| Schedule::new(job.start, rate));
    let mut builder = BatchBuilder::new(job.size, job.timestamps);
    let mut index: u64 = 0;
    let mut measured_sent: u64 = 0;
    let mut next = 0usize;
    loop {
        let more = !interrupted()
            && job.quota.is_none_or(|quota| measured_sent < quota)
            && job.end.is_none_or(|end| Instant::now() < end);
        if !more {
            return Ok(());
        }
        let slot = &job.slots[next];
        next = (next + 1) % job.slots.len();
        let lane = lanes.get_mut(&slot.addr).expect("a lane per address");
        if !lane.gate.enter(job.pipeline) {
            // The reader stopped on an error, which its result reports.
            return Ok(());
        }
        // How many records, and from when their latency runs.
        let (records, first, step) = match schedule {
            None => (job.batch_records as u64, Instant::now(), Duration::ZERO),
            Some(schedule) => {
                let first_due = schedule.due(index);
                let now = Instant::now();
                if first_due > now {
                    std::thread::sleep(first_due - now);
                }
                let now = Instant::now();
                let mut due = 1u64;
                while due < job.batch_records as u64 && schedule.due(index + due) <= now {
                    due += 1;
                }
                let step = schedule.due(index + 1).saturating_duration_since(first_due);
                (due, first_due, step)
            }
        };
        let warm = records - measured_records(recorder, first, step, records);
        let records = match job.quota {
            // Never publish more measured records than asked for.
            Some(quota) => records.min(warm + (quota - measured_sent)),
            None => records,
        };
        let batch = builder.build(records as usize, first, step);
        let wire_bytes = batch.len() as u64;
        let correlation_id = lane.tx.send_publish(&slot.stream, slot.partition, batch)?;
        let pending = Pending {
            correlation_id,
            slot: slot.slot,
            first,
            step,
            records,
            wire_bytes,
        };
        if lane.queue.send(pending).is_err() {
            return Ok(());
        }
        index += records;
        measured_sent += measured_records(recorder, first, step, records);
    }
}

/// How many of `records` records whose latency starts at `first + i *
/// step` started after warm-up.
fn measured_records(recorder: &Recorder, first: Instant, step: Duration, records: u64) -> u64 {
    let from = recorder.measure_from();
    if first >= from {
        return records;
    }
    if step.is_zero() {
        return 0;
    }
    let before = from
        .duration_since(first)
        .as_nanos()
        .div_ceil(step.as_nanos());
    records.saturating_sub(u64::try_from(before).unwrap_or(u64::MAX))
}

/// A connection's reader: answers arrive in request order.
fn read_answers(
    rx: &mut WireReceiver,
    requests: &mpsc::Receiver<Pending>,
    gate: &Gate,
    recorder: &mut Recorder,
    delivered: &Delivered,
    size: usize,
) -> Result<()> {
    while let Ok(pending) = requests.recv() {
        let answer = rx.recv_publish(pending.correlation_id)?;
        let done = Instant::now();
        gate.leave();
        match answer {
            Ok((base, last)) if last - base + 1 == pending.records => {
                record_answer(recorder, &pending, done, size);
                let measured =
                    measured_records(recorder, pending.first, pending.step, pending.records);
                delivered.add(pending.slot, measured);
            }
            Ok((base, last)) => recorder.error(|| {
                format!(
                    "{} records published as offsets {base}..={last}",
                    pending.records
                )
            }),
            Err(refused) => recorder.error(|| format!("publish refused: {refused}")),
        }
    }
    Ok(())
}

fn record_answer(recorder: &mut Recorder, pending: &Pending, done: Instant, size: usize) {
    let bytes = pending.records * size as u64;
    if pending.step.is_zero() {
        recorder.complete_samples(
            pending.first,
            done,
            pending.records,
            pending.records,
            bytes,
            pending.wire_bytes,
        );
        return;
    }
    let wire_share = pending.wire_bytes / pending.records;
    for i in 0..pending.records {
        let start = pending.first + pending.step * (i as u32);
        recorder.complete_samples(start, done, 1, 1, size as u64, wire_share);
    }
}

/// Encodes batches of `size`-byte records, reusing its buffers.
pub struct BatchBuilder {
    size: usize,
    timestamps: bool,
    filler: Bytes,
    records: Vec<Record>,
    out: Vec<u8>,
}

impl BatchBuilder {
    pub fn new(size: usize, timestamps: bool) -> BatchBuilder {
        let filler: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        BatchBuilder {
            size,
            timestamps,
            filler: Bytes::from(filler),
            records: Vec::new(),
            out: Vec::new(),
        }
    }

    /// One batch of `count` records; record `i` carries the send time
    /// `first + i * step` when timestamps are on.
    pub fn build(&mut self, count: usize, first: Instant, step: Duration) -> &[u8] {
        assert!(count > 0, "a batch needs a record");
        let now = TimestampMs::now();
        self.records.clear();
        if self.timestamps {
            let mut values = BytesMut::with_capacity(count * self.size);
            for i in 0..count {
                let start = values.len();
                values.extend_from_slice(&self.filler);
                stamp(&mut values[start..], first + step * (i as u32));
            }
            let values = values.freeze();
            for i in 0..count {
                self.records.push(record(
                    now,
                    values.slice(i * self.size..(i + 1) * self.size),
                ));
            }
        } else {
            for _ in 0..count {
                self.records.push(record(now, self.filler.clone()));
            }
        }
        self.out.clear();
        encode_batch(Offset(0), &self.records, &mut self.out);
        &self.out
    }
}

fn record(timestamp: TimestampMs, value: Bytes) -> Record {
    Record {
        timestamp,
        key: None,
        value: Some(value),
        headers: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::Live;

    #[test]
    fn batches_straddling_warm_up_count_their_measured_records() {
        let from = Instant::now() + Duration::from_secs(1);
        let recorder = Recorder::new(from, Arc::new(Live::default()));
        let step = Duration::from_millis(1);
        assert_eq!(measured_records(&recorder, from, step, 10), 10);
        assert_eq!(
            measured_records(&recorder, from - Duration::from_millis(3), step, 10),
            7
        );
        assert_eq!(
            measured_records(&recorder, from - Duration::from_millis(30), step, 10),
            0
        );
        assert_eq!(
            measured_records(&recorder, from - step, Duration::ZERO, 10),
            0
        );
    }
    use crate::nats_pub::read_stamp;
    use shards::batch::decode_batch;

    #[test]
    fn batches_decode_with_their_stamps() {
        crate::recorder::epoch();
        let mut builder = BatchBuilder::new(16, true);
        let first = Instant::now();
        let batch = Bytes::copy_from_slice(builder.build(3, first, Duration::from_millis(1)));
        let (header, records) = decode_batch(&batch).unwrap();
        assert_eq!(header.records_count, 3);
        let stamps: Vec<u64> = records
            .iter()
            .map(|r| read_stamp(r.value.as_ref().unwrap()).unwrap())
            .collect();
        assert_eq!(stamps[1] - stamps[0], 1_000_000);
        assert!(records
            .iter()
            .all(|r| r.value.as_ref().unwrap().len() == 16));
    }
}
