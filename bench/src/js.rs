//! The JetStream side of `--compare jetstream`: streams with file storage on
//! the same nats-server, pre-fill, and pull consumers (no acks, as Sluice
//! consumers do not ack either). Producers are the shared NATS publisher of
//! [`crate::nats_pub`] in its JetStream flavour.
//!
//! JetStream has no partitions: a Sluice stream of P partitions (subjects
//! `S`, `S.1` … `S.{P-1}`) corresponds to one JetStream stream bound to `S`
//! and `S.*`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use async_nats::jetstream::{self, consumer, stream};
use futures::stream::FuturesUnordered;
use futures::StreamExt;

use crate::consume::TailEnd;
use crate::nats_pub::{read_stamp, Payloads};
use crate::recorder::{instant_from_nanos, interrupted, Recorder, Ticket};

/// Largest pull request (messages) a JetStream consumer sends.
pub const FETCH_MESSAGES_MAX: usize = 10_000;
/// Publishes in flight while pre-filling.
const PREFILL_WINDOW: usize = 2048;

/// One JetStream stream of a case.
#[derive(Clone, Debug)]
pub struct JsStream {
    pub name: String,
    /// Partition 0's subject; partition i > 0 publishes to `subject.i`.
    pub subject: String,
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")
}

pub async fn connect(
    url: &str,
    timeout: Duration,
) -> Result<(async_nats::Client, jetstream::Context)> {
    let client = async_nats::ConnectOptions::new()
        .name("sluice-bench jetstream")
        .request_timeout(Some(timeout))
        .connect(url)
        .await
        .with_context(|| format!("connect to NATS at {url}"))?;
    let mut context = jetstream::new(client.clone());
    context.set_timeout(timeout);
    Ok((client, context))
}

/// Creates the case's streams (file storage, one replica, no limits).
pub async fn create_streams(context: &jetstream::Context, streams: &[JsStream]) -> Result<()> {
    for s in streams {
        let config = stream::Config {
            name: s.name.clone(),
            subjects: vec![s.subject.clone(), format!("{}.*", s.subject)],
            storage: stream::StorageType::File,
            num_replicas: 1,
            ..Default::default()
        };
        context.create_stream(config).await.map_err(|e| {
            anyhow!(
                "cannot create JetStream stream {} (is JetStream enabled on this nats-server?): {e}",
                s.name
            )
        })?;
    }
    Ok(())
}

pub async fn delete_streams(context: &jetstream::Context, streams: &[JsStream]) {
    for s in streams {
        if let Err(error) = context.delete_stream(&s.name).await {
            eprintln!(
                "sluice-bench: cannot delete JetStream stream {}: {error}",
                s.name
            );
        }
    }
}

/// Publishes `count` messages of `size` bytes to `subject` of stream
/// `name` (acked, a window in flight) and checks that the stream took them.
pub async fn prefill(
    context: &jetstream::Context,
    name: &str,
    subject: &str,
    count: u64,
    size: usize,
) -> Result<()> {
    let payloads = Payloads::new(size, false);
    let mut inflight = FuturesUnordered::new();
    for _ in 0..count {
        if inflight.len() >= PREFILL_WINDOW {
            if let Some(result) = inflight.next().await {
                result?;
            }
        }
        let ack = context
            .publish(subject.to_string(), payloads.make(Instant::now()))
            .await
            .map_err(|e| anyhow!("pre-fill {name}: {e}"))?;
        inflight.push(async move { ack.await.map_err(|e| anyhow!("pre-fill ack: {e}")) });
    }
    while let Some(result) = inflight.next().await {
        result?;
    }
    Ok(())
}

/// Messages a stream holds.
pub async fn stored(context: &jetstream::Context, name: &str) -> Result<u64> {
    let mut stream = context.get_stream(name).await.map_err(|e| anyhow!("{e}"))?;
    Ok(stream
        .info()
        .await
        .map_err(|e| anyhow!("{e}"))?
        .state
        .messages)
}

/// A pull consumer with no acks, delivering the messages of one partition
/// subject from the start of the stream.
async fn pull_consumer(
    context: &jetstream::Context,
    name: &str,
    filter: &str,
) -> Result<consumer::PullConsumer> {
    let stream = context
        .get_stream(name)
        .await
        .map_err(|e| anyhow!("JetStream stream {name}: {e}"))?;
    stream
        .create_consumer(consumer::pull::Config {
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::None,
            filter_subject: filter.to_string(),
            inactive_threshold: Duration::from_secs(60),
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow!("create a pull consumer on {name}: {e}"))
}

/// A partition of a JetStream stream: the messages on one subject.
#[derive(Clone, Debug)]
pub struct JsSlot {
    pub stream: String,
    pub subject: String,
    pub slot: usize,
    pub total: u64,
}

/// One JetStream consumer's job.
#[derive(Clone, Debug)]
pub struct JsConsumeJob {
    pub nats_url: String,
    /// The partitions read: stream, the partition's subject (a consumer
    /// filter), slot index, messages to read for catch-up.
    pub slots: Vec<JsSlot>,
    pub size: usize,
    pub fetch_bytes: usize,
    /// Catch-up with a time budget: start over until the budget after the
    /// end of warm-up.
    pub budget: Option<Duration>,
    pub timeout: Duration,
}

impl JsConsumeJob {
    fn fetch_messages(&self) -> usize {
        (self.fetch_bytes / self.size).clamp(1, FETCH_MESSAGES_MAX)
    }
}

/// Catch-up reads: fetch each stream from the start, one latency sample per
/// fetch; over and over until `end` when given.
pub fn run_catch_up(job: JsConsumeJob, ticket: Ticket) -> Result<Recorder> {
    let runtime = runtime()?;
    runtime.block_on(async {
        let connected = connect(&job.nats_url, job.timeout).await;
        let mut recorder = ticket.ready()?;
        let (_client, context) = connected?;
        let end = job.budget.map(|budget| recorder.measure_from() + budget);
        loop {
            for slot in &job.slots {
                read_stream(&context, slot, end, &job, &mut recorder).await?;
                if interrupted() {
                    return Ok(recorder);
                }
            }
            if end.is_none_or(|end| Instant::now() >= end) {
                return Ok(recorder);
            }
        }
    })
}

async fn read_stream(
    context: &jetstream::Context,
    slot: &JsSlot,
    end: Option<Instant>,
    job: &JsConsumeJob,
    recorder: &mut Recorder,
) -> Result<()> {
    let (name, total) = (slot.stream.as_str(), slot.total);
    let consumer = pull_consumer(context, name, &slot.subject).await?;
    let mut read = 0u64;
    while read < total {
        if interrupted() || end.is_some_and(|end| Instant::now() >= end) {
            break;
        }
        let start = Instant::now();
        let mut batch = consumer
            .fetch()
            .max_messages(job.fetch_messages())
            .messages()
            .await
            .map_err(|e| anyhow!("fetch from {name}: {e}"))?;
        let mut messages = 0u64;
        let mut bytes = 0u64;
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| anyhow!("fetch from {name}: {e}"))?;
            messages += 1;
            bytes += message.payload.len() as u64;
        }
        let done = Instant::now();
        if messages == 0 {
            bail!("fetch from {name} returned nothing after {read} of {total} messages");
        }
        let counted = messages.min(total - read);
        recorder.complete_samples(start, done, 1, counted, counted * job.size as u64, bytes);
        read += messages;
    }
    let _ = consumer_cleanup(context, name, consumer).await;
    Ok(())
}

async fn consumer_cleanup(
    context: &jetstream::Context,
    stream: &str,
    mut consumer: consumer::PullConsumer,
) -> Result<()> {
    let info = consumer.info().await.map_err(|e| anyhow!("{e}"))?;
    context
        .delete_consumer_from_stream(&info.name, stream)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// Tail reads: a pull consumer per stream streaming new messages; latency
/// per message from the time stamped in its payload.
pub fn run_tail(job: JsConsumeJob, ticket: Ticket, until: Arc<TailEnd>) -> Result<Recorder> {
    let runtime = runtime()?;
    runtime.block_on(async {
        let setup = async {
            let (client, context) = connect(&job.nats_url, job.timeout).await?;
            let mut streams = Vec::new();
            for slot in &job.slots {
                let name = &slot.stream;
                let consumer = pull_consumer(&context, name, &slot.subject).await?;
                let messages = consumer
                    .stream()
                    .max_messages_per_batch(job.fetch_messages().max(256))
                    .messages()
                    .await
                    .map_err(|e| anyhow!("consume {name}: {e}"))?;
                streams.push((slot.slot, messages));
            }
            Ok::<_, anyhow::Error>((client, context, streams))
        }
        .await;
        let mut recorder = ticket.ready()?;
        let (_client, _context, mut streams) = setup?;
        let mut received = vec![0u64; streams.len()];
        let mut drain_deadline: Option<Instant> = None;
        loop {
            for (i, (_, messages)) in streams.iter_mut().enumerate() {
                let next = tokio::time::timeout(Duration::from_millis(20), messages.next()).await;
                let Ok(Some(message)) = next else { continue };
                let message = message.map_err(|e| anyhow!("consume: {e}"))?;
                let done = Instant::now();
                let Some(nanos) = read_stamp(&message.payload) else {
                    continue;
                };
                let sent = instant_from_nanos(nanos);
                if recorder.measured(sent) {
                    recorder.complete(sent, done, 1, message.payload.len() as u64);
                    received[i] += 1;
                }
            }
            if until.producers_done.load(Ordering::Acquire) {
                let expected: Vec<u64> = streams
                    .iter()
                    .map(|(slot, _)| until.delivered.get(*slot))
                    .collect();
                if received
                    .iter()
                    .zip(&expected)
                    .all(|(got, want)| got >= want)
                {
                    return Ok(recorder);
                }
                let deadline = *drain_deadline.get_or_insert_with(|| Instant::now() + until.drain);
                if Instant::now() >= deadline || interrupted() {
                    let missing = received
                        .iter()
                        .zip(&expected)
                        .map(|(got, want)| want.saturating_sub(*got))
                        .sum();
                    recorder.timeout(missing);
                    return Ok(recorder);
                }
            }
        }
    })
}
