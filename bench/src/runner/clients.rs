//! The clients of a run, per system: Sluice consumers and producers
//! (direct or through NATS), JetStream's, and what they share.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use super::{Clients, ConsumerFn, ProducerFn, Timing};
use crate::consume::{run_catch_up, run_tail, ConsumeJob, ReadSlot, TailEnd};
use crate::direct::{run_direct_producer, DirectJob};
use crate::js::{self, JsConsumeJob, JsSlot, JsStream};
use crate::nats_pub::{run_producer, Delivered, Flavor, PublishJob};
use crate::plan::{assign, readers_of, share, Amount, Case, Slot};
use crate::report::RunOutcome;
use crate::sluice_side::{partition_subject, SluiceStreams};

/// What the runs of a case share, whatever the system: the slots (stream,
/// partition), the producers' count of delivered messages per slot, and
/// what tail readers wait for.
pub(super) struct Shared {
    pub(super) slots: Vec<Slot>,
    delivered: Arc<Delivered>,
    tail_end: Option<Arc<TailEnd>>,
}

impl Shared {
    pub(super) fn new(case: &Case) -> Shared {
        let slots = case.targets();
        let delivered = Arc::new(Delivered::new(slots.len()));
        let tail_end = (case.has_consumers() && !case.catch_up()).then(|| {
            Arc::new(TailEnd {
                producers_done: Default::default(),
                delivered: delivered.clone(),
                drain: case.settings.timeout,
            })
        });
        Shared {
            slots,
            delivered,
            tail_end,
        }
    }

    /// For runs without consumers whatever the workload (the echo ceiling).
    pub(super) fn producers_only(case: &Case) -> Shared {
        Shared {
            tail_end: None,
            ..Shared::new(case)
        }
    }

    fn index(&self, slot: &Slot) -> usize {
        self.slots
            .iter()
            .position(|x| x == slot)
            .expect("an assigned slot is one of the case's")
    }

    /// No clients yet; the main row and the expected count set.
    pub(super) fn clients<'s>(&self, case: &Case) -> Clients<'s> {
        let expected = match (case.settings.amount, case.has_consumers()) {
            (Amount::Messages(n), false) => Some(n),
            _ => None,
        };
        Clients {
            consumers: Vec::new(),
            producers: Vec::new(),
            producers_done: self.tail_end.clone(),
            main_role: if case.has_consumers() {
                "consumer"
            } else {
                "producer"
            },
            expected,
        }
    }

    /// What count-bound catch-up readers must read: each slot's `totals`
    /// once per reader of the slot.
    pub(super) fn expected_catch_up(&self, case: &Case, totals: &[u64]) -> Option<u64> {
        let count_bound = matches!(case.settings.amount, Amount::Messages(_));
        (case.catch_up() && count_bound).then(|| {
            (0..self.slots.len())
                .map(|i| totals[i] * readers_of(&self.slots, i, case.settings.consumers) as u64)
                .sum()
        })
    }

    /// Tail readers expected what the producers delivered.
    pub(super) fn finish(&self, case: &Case, mut outcome: RunOutcome) -> RunOutcome {
        if self.tail_end.is_some() {
            let consumers = case.settings.consumers;
            outcome.expected_messages =
                Some(expected_tail(&self.slots, consumers, &self.delivered));
        }
        outcome
    }
}

/// Producer `p`'s measured messages and rate.
fn producer_share(case: &Case, p: usize) -> (Option<u64>, Option<f64>) {
    let s = &case.settings;
    let quota = match s.amount {
        Amount::Messages(n) => Some(share(n, s.producers, p)),
        Amount::Duration(_) => None,
    };
    (quota, s.rate.map(|r| r / s.producers as f64))
}

/// Sluice consumers over TCP: catch-up from 0 to the pre-filled high
/// watermark, or tail reads from the high watermark.
pub(super) fn sluice_consumers<'s>(
    case: &Case,
    shared: &Shared,
    streams: &SluiceStreams,
    marks: &[u64],
) -> Vec<ConsumerFn<'s>> {
    let s = &case.settings;
    (0..s.consumers)
        .map(|c| {
            let slots = assign(&shared.slots, c, s.consumers)
                .iter()
                .map(|slot| {
                    let i = shared.index(slot);
                    ReadSlot {
                        stream: streams.names[slot.stream].clone(),
                        partition: slot.partition as u32,
                        addr: streams.addr(*slot),
                        slot: i,
                        from: if case.catch_up() { 0 } else { marks[i] },
                        to: marks[i],
                    }
                })
                .collect();
            let job = ConsumeJob {
                slots,
                size: case.size,
                fetch_bytes: u32::try_from(s.fetch_bytes).unwrap_or(u32::MAX),
                fetch_wait_ms: s.fetch_wait_ms,
                budget: budget(case),
                timeout: s.timeout,
            };
            let consumer: ConsumerFn<'s> = match shared.tail_end.clone() {
                None => Box::new(move |ticket| run_catch_up(job, ticket)),
                Some(end) => Box::new(move |ticket| run_tail(job, ticket, end)),
            };
            consumer
        })
        .collect()
}

/// Sluice producers: direct (TCP Publish) or through NATS.
pub(super) fn sluice_producers<'s>(
    case: &Case,
    shared: &Shared,
    streams: &SluiceStreams,
    nats_url: Option<String>,
) -> Result<Vec<ProducerFn<'s>>> {
    if !case.direct_producers() {
        let url = nats_url.ok_or_else(|| anyhow!("NATS workloads need --nats-url"))?;
        let subject = |slot: &Slot| streams.subject(*slot);
        let window = case.settings.window;
        return Ok(nats_producers(
            case,
            shared,
            Flavor::Sluice,
            &url,
            window,
            subject,
        ));
    }
    let s = &case.settings;
    let producers = (0..s.producers)
        .map(|p| {
            let slots = assign(&shared.slots, p, s.producers)
                .iter()
                .map(|slot| streams.direct_slot(*slot, shared.index(slot)))
                .collect();
            let (quota, rate) = producer_share(case, p);
            let (size, batch_records, pipeline) = (case.size, case.batch_records(), s.pipeline);
            let (timeout, timestamps) = (s.timeout, case.timestamps_in_payload());
            let delivered = shared.delivered.clone();
            let producer: ProducerFn<'s> = Box::new(move |recorder, timing: Timing| {
                let job = DirectJob {
                    slots,
                    size,
                    batch_records,
                    pipeline,
                    start: timing.start,
                    quota,
                    end: timing.end,
                    rate,
                    timeout,
                    timestamps,
                };
                run_direct_producer(job, recorder, delivered)
            });
            producer
        })
        .collect();
    Ok(producers)
}

/// NATS producers of `flavor`, each publishing round-robin to its slots'
/// subjects.
pub(super) fn nats_producers<'s>(
    case: &Case,
    shared: &Shared,
    flavor: Flavor,
    url: &str,
    window: usize,
    subject: impl Fn(&Slot) -> String,
) -> Vec<ProducerFn<'s>> {
    let producers = case.settings.producers;
    (0..producers)
        .map(|p| {
            let subjects = assign(&shared.slots, p, producers)
                .iter()
                .map(|slot| (async_nats::Subject::from(subject(slot)), shared.index(slot)))
                .collect();
            let (quota, rate) = producer_share(case, p);
            let job = PublishJob {
                flavor,
                nats_url: url.to_string(),
                subjects,
                size: case.size,
                window,
                start: Instant::now(),
                quota,
                end: None,
                rate,
                timeout: case.settings.timeout,
                timestamps: case.timestamps_in_payload(),
            };
            let delivered = shared.delivered.clone();
            let producer: ProducerFn<'s> = Box::new(move |recorder, timing: Timing| {
                let job = PublishJob {
                    start: timing.start,
                    end: timing.end,
                    ..job
                };
                run_producer(job, recorder, delivered)
            });
            producer
        })
        .collect()
}

/// The subject of a slot in JetStream.
pub(super) fn js_subject(js_streams: &[JsStream], slot: &Slot) -> String {
    partition_subject(&js_streams[slot.stream].subject, slot.partition)
}

/// Pre-fills the JetStream streams slot by slot and checks they hold it all.
pub(super) async fn js_prefill(
    case: &Case,
    context: &async_nats::jetstream::Context,
    js_streams: &[JsStream],
    slots: &[Slot],
    counts: &[u64],
) -> Result<()> {
    for (slot, count) in slots.iter().zip(counts) {
        let name = &js_streams[slot.stream].name;
        js::prefill(
            context,
            name,
            &js_subject(js_streams, slot),
            *count,
            case.size,
        )
        .await?;
    }
    for (k, stream) in js_streams.iter().enumerate() {
        let want: u64 = slots
            .iter()
            .zip(counts)
            .filter(|(slot, _)| slot.stream == k)
            .map(|(_, c)| c)
            .sum();
        let held = js::stored(context, &stream.name).await?;
        if held < want {
            bail!(
                "JetStream stream {} holds {held} of {want} pre-filled messages",
                stream.name
            );
        }
    }
    Ok(())
}

/// JetStream pull consumers, one filter subject per slot.
pub(super) fn js_consumers<'s>(
    case: &Case,
    shared: &Shared,
    url: &str,
    js_streams: &[JsStream],
    counts: &[u64],
) -> Vec<ConsumerFn<'s>> {
    let s = &case.settings;
    (0..s.consumers)
        .map(|c| {
            let slots = assign(&shared.slots, c, s.consumers)
                .iter()
                .map(|slot| {
                    let i = shared.index(slot);
                    JsSlot {
                        stream: js_streams[slot.stream].name.clone(),
                        subject: js_subject(js_streams, slot),
                        slot: i,
                        total: counts[i],
                    }
                })
                .collect();
            let job = JsConsumeJob {
                nats_url: url.to_string(),
                slots,
                size: case.size,
                fetch_bytes: s.fetch_bytes,
                budget: budget(case),
                timeout: s.timeout,
            };
            let consumer: ConsumerFn<'s> = match shared.tail_end.clone() {
                None => Box::new(move |ticket| js::run_catch_up(job, ticket)),
                Some(end) => Box::new(move |ticket| js::run_tail(job, ticket, end)),
            };
            consumer
        })
        .collect()
}

/// The measured time of a catch-up read (it starts over until then).
fn budget(case: &Case) -> Option<Duration> {
    match case.settings.amount {
        Amount::Duration(d) if case.catch_up() => Some(d),
        _ => None,
    }
}

/// What the tail readers should have received: each slot's delivered
/// messages once per reader of the slot.
fn expected_tail(slots: &[Slot], consumers: usize, delivered: &Delivered) -> u64 {
    (0..slots.len())
        .map(|i| delivered.get(i) * readers_of(slots, i, consumers) as u64)
        .sum()
}
