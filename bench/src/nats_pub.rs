//! NATS publishers: one loop for every system, so Sluice, JetStream and the
//! echo ceiling are driven by exactly the same client code.
//!
//! A producer keeps up to `window` publishes in flight, each a NATS request
//! (publish with a reply subject, answered on it): to Sluice, whose answer
//! is an [`Ack`] flatbuffer sent once the record is durable; to the echo
//! responder, which answers at once; to JetStream through
//! `jetstream::Context::publish`, whose `PubAck` comes over the same
//! request/reply mechanism. Latency runs from the send (closed loop) or the
//! due time (`--rate`) to the answer.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use sluice::protocol::ack::{Ack, AckOutcome};

use crate::recorder::{interrupted, nanos_since_epoch, Recorder, Schedule};

/// The system a producer publishes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// Plain NATS request to a Sluice stream's subject; the answer must be
    /// a committed Sluice ack.
    Sluice,
    /// Plain NATS request answered by the echo responder.
    Echo,
    /// `js.publish`, answered by JetStream's PubAck.
    JetStream,
}

/// One producer's job.
#[derive(Clone, Debug)]
pub struct PublishJob {
    pub flavor: Flavor,
    pub nats_url: String,
    /// Subjects published to round-robin, with the slot each belongs to
    /// (index into `delivered`).
    pub subjects: Vec<(async_nats::Subject, usize)>,
    pub size: usize,
    pub window: usize,
    /// When the producer starts (warm-up begins).
    pub start: Instant,
    /// Measured messages to publish (after warm-up); `None` = until `end`.
    pub quota: Option<u64>,
    /// Stop issuing new messages at this instant (duration mode).
    pub end: Option<Instant>,
    /// Messages per second of this producer (open loop).
    pub rate: Option<f64>,
    /// The request / ack timeout.
    pub timeout: Duration,
    /// Put the send (or due) time in the payload's first 8 bytes, for
    /// consumers that measure publish → receipt.
    pub timestamps: bool,
}

/// Per-slot counts of measured messages acknowledged, for consumers that
/// must know how many to expect.
#[derive(Debug, Default)]
pub struct Delivered {
    pub per_slot: Vec<AtomicU64>,
}

impl Delivered {
    pub fn new(slots: usize) -> Delivered {
        Delivered {
            per_slot: (0..slots).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn add(&self, slot: usize, count: u64) {
        self.per_slot[slot].fetch_add(count, Ordering::Relaxed);
    }

    pub fn get(&self, slot: usize) -> u64 {
        self.per_slot[slot].load(Ordering::Relaxed)
    }
}

type AckFuture = Pin<Box<dyn Future<Output = Completion>>>;

struct Completion {
    start: Instant,
    slot: usize,
    outcome: Result<(), Failure>,
}

enum Failure {
    Timeout,
    Error(String),
}

/// Runs one producer on its own current-thread runtime until its quota or
/// time is used up, then waits for the acks in flight.
pub fn run_producer(
    job: PublishJob,
    mut recorder: Recorder,
    delivered: Arc<Delivered>,
) -> Result<Recorder> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(async {
        let client = async_nats::ConnectOptions::new()
            .name("sluice-bench producer")
            .request_timeout(Some(job.timeout))
            .connect(job.nats_url.as_str())
            .await
            .with_context(|| format!("connect to NATS at {}", job.nats_url))?;
        let publisher = Publisher::new(client, &job);
        produce(&job, &publisher, &mut recorder, &delivered).await;
        Ok::<(), anyhow::Error>(())
    })?;
    Ok(recorder)
}

/// Sends one message and turns its answer into a [`Completion`].
struct Publisher {
    client: async_nats::Client,
    jetstream: Option<async_nats::jetstream::Context>,
    flavor: Flavor,
}

impl Publisher {
    fn new(client: async_nats::Client, job: &PublishJob) -> Publisher {
        let jetstream = (job.flavor == Flavor::JetStream).then(|| {
            async_nats::jetstream::ContextBuilder::new()
                .timeout(job.timeout)
                .max_ack_inflight(job.window + 16)
                .backpressure_on_inflight(true)
                .build(client.clone())
        });
        Publisher {
            client,
            jetstream,
            flavor: job.flavor,
        }
    }

    fn send(
        &self,
        subject: async_nats::Subject,
        slot: usize,
        payload: Bytes,
        start: Instant,
    ) -> AckFuture {
        let client = self.client.clone();
        let jetstream = self.jetstream.clone();
        let flavor = self.flavor;
        Box::pin(async move {
            let outcome = match (flavor, jetstream) {
                (Flavor::JetStream, Some(js)) => match js.publish(subject, payload).await {
                    Ok(ack) => ack.await.map(|_| ()).map_err(js_failure),
                    Err(error) => Err(Failure::Error(error.to_string())),
                },
                _ => match client.request(subject, payload).await {
                    Ok(message) if flavor == Flavor::Sluice => check_sluice_ack(&message.payload),
                    Ok(_) => Ok(()),
                    Err(error) => Err(request_failure(error)),
                },
            };
            Completion {
                start,
                slot,
                outcome,
            }
        })
    }
}

fn check_sluice_ack(payload: &[u8]) -> Result<(), Failure> {
    match Ack::decode(payload) {
        Ok(Ack {
            outcome: AckOutcome::Committed { .. },
            ..
        }) => Ok(()),
        Ok(Ack {
            outcome: AckOutcome::Failed { code, message },
            ..
        }) => Err(Failure::Error(format!("sluice ack: {code}: {message}"))),
        Err(error) => Err(Failure::Error(format!("undecodable sluice ack: {error}"))),
    }
}

fn request_failure(error: async_nats::RequestError) -> Failure {
    match error.kind() {
        async_nats::RequestErrorKind::TimedOut => Failure::Timeout,
        _ => Failure::Error(error.to_string()),
    }
}

fn js_failure(error: async_nats::jetstream::context::PublishError) -> Failure {
    match error.kind() {
        async_nats::jetstream::context::PublishErrorKind::TimedOut => Failure::Timeout,
        _ => Failure::Error(format!("jetstream: {error}")),
    }
}

/// The payload of one message: filler, with the send time in the first 8
/// bytes when asked.
pub struct Payloads {
    filler: Bytes,
    timestamps: bool,
}

impl Payloads {
    pub fn new(size: usize, timestamps: bool) -> Payloads {
        // Not all zeroes, so nothing along the way can compress it away.
        let filler: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        Payloads {
            filler: Bytes::from(filler),
            timestamps,
        }
    }

    pub fn make(&self, start: Instant) -> Bytes {
        if !self.timestamps {
            return self.filler.clone();
        }
        let mut payload = self.filler.to_vec();
        stamp(&mut payload, start);
        Bytes::from(payload)
    }
}

/// Writes `at` as nanoseconds since the epoch into the first 8 bytes.
pub fn stamp(payload: &mut [u8], at: Instant) {
    let bytes = nanos_since_epoch(at).to_le_bytes();
    let n = payload.len().min(8);
    payload[..n].copy_from_slice(&bytes[..n]);
}

/// Reads a send time written by [`stamp`].
pub fn read_stamp(payload: &[u8]) -> Option<u64> {
    payload.first_chunk::<8>().map(|b| u64::from_le_bytes(*b))
}

async fn produce(
    job: &PublishJob,
    publisher: &Publisher,
    recorder: &mut Recorder,
    delivered: &Delivered,
) {
    let schedule = job.rate.map(|rate| Schedule::new(job.start, rate));
    let payloads = Payloads::new(job.size, job.timestamps);
    let mut inflight: FuturesUnordered<AckFuture> = FuturesUnordered::new();
    let mut index: u64 = 0;
    let mut measured_sent: u64 = 0;
    let mut next_subject = 0usize;
    loop {
        let now = Instant::now();
        let more = !interrupted()
            && job.quota.is_none_or(|quota| measured_sent < quota)
            && job.end.is_none_or(|end| now < end);
        let due = schedule.map_or(now, |s| s.due(index));
        if more && inflight.len() < job.window && due <= now {
            let start = if schedule.is_some() { due } else { now };
            let (subject, slot) = job.subjects[next_subject].clone();
            next_subject = (next_subject + 1) % job.subjects.len();
            inflight.push(publisher.send(subject, slot, payloads.make(start), start));
            index += 1;
            if recorder.measured(start) {
                measured_sent += 1;
            }
            continue;
        }
        if inflight.is_empty() {
            if !more {
                return;
            }
            tokio::time::sleep_until(due.into()).await;
            continue;
        }
        let wake = if more && inflight.len() < job.window {
            due
        } else {
            now + Duration::from_millis(100)
        };
        tokio::select! {
            completion = inflight.next() => {
                if let Some(completion) = completion {
                    finish(completion, recorder, delivered, job.size);
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
}

fn finish(completion: Completion, recorder: &mut Recorder, delivered: &Delivered, size: usize) {
    let done = Instant::now();
    let measured = recorder.measured(completion.start);
    match completion.outcome {
        Ok(()) => {
            recorder.complete(completion.start, done, 1, size as u64);
            if measured {
                delivered.add(completion.slot, 1);
            }
        }
        Err(_) if !measured => {}
        Err(Failure::Timeout) => recorder.timeout(1),
        Err(Failure::Error(message)) => recorder.error(|| message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::instant_from_nanos;

    #[test]
    fn stamps_round_trip() {
        crate::recorder::epoch();
        let at = Instant::now();
        let mut payload = vec![0u8; 16];
        stamp(&mut payload, at);
        let nanos = read_stamp(&payload).unwrap();
        let back = instant_from_nanos(nanos);
        assert!(back <= at && at.duration_since(back) < Duration::from_micros(1));
        let payloads = Payloads::new(32, true);
        assert_eq!(payloads.make(at).len(), 32);
        assert_eq!(Payloads::new(32, false).make(at)[1], 31);
    }
}
