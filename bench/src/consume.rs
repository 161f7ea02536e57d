//! Sluice consumers over the TCP protocol.
//!
//! **Catch-up** ([`run_catch_up`]): read pre-filled partitions from offset 0
//! to the end with large fetches (served by `sendfile`), checking every
//! batch's length and CRC-32C and counting its records; one latency sample
//! per fetch. With a time budget the reader starts over at offset 0 when it
//! reaches the end.
//!
//! **Tail** ([`run_tail`]): long-poll at the head of the log while
//! producers publish; every record carries its send (or due) time in its
//! first 8 bytes, so each record's latency is publish → receipt. The reader
//! stops once it has received every measured message the producers had
//! acknowledged, or when the drain time runs out after they finished.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::Bytes;
use shards::batch::{decode_batch, validate_batch, BatchHeader};

use crate::nats_pub::{read_stamp, Delivered};
use crate::recorder::{instant_from_nanos, interrupted, Recorder, Ticket};
use crate::wire::{Wire, WireReceiver, WireSender};

/// A partition a consumer reads.
#[derive(Clone, Debug)]
pub struct ReadSlot {
    pub stream: String,
    pub partition: u32,
    pub addr: SocketAddr,
    /// Index into the case's slots.
    pub slot: usize,
    /// Where reading starts (0 for catch-up; the high watermark before the
    /// producers started for tail reads).
    pub from: u64,
    /// Catch-up: the offset reading ends at (the pre-filled high watermark).
    pub to: u64,
}

/// One consumer's job.
#[derive(Clone, Debug)]
pub struct ConsumeJob {
    pub slots: Vec<ReadSlot>,
    pub size: usize,
    pub fetch_bytes: u32,
    pub fetch_wait_ms: u32,
    /// Catch-up with a time budget: start over at `from` until the budget
    /// after the end of warm-up.
    pub budget: Option<Duration>,
    pub timeout: Duration,
}

/// Counts the records of fetched bytes at or after `offset`, checking each
/// batch; returns (records, offset after the last batch).
fn count_records(raw: &[u8], offset: u64) -> Result<(u64, u64)> {
    let mut position = 0usize;
    let mut records = 0u64;
    let mut next = offset;
    while position < raw.len() {
        let header = BatchHeader::parse(&raw[position..])?;
        let end = position + header.total_bytes();
        if end > raw.len() {
            bail!(
                "fetch ended inside a batch ({} of {} bytes)",
                raw.len() - position,
                header.total_bytes()
            );
        }
        validate_batch(&raw[position..end])?;
        let base = header.base_offset.0;
        // The first batch may start before the requested offset.
        let skipped = next.saturating_sub(base);
        records += (header.records_count as u64).saturating_sub(skipped);
        next = header.next_offset().0;
        position = end;
    }
    Ok((records, next))
}

/// Reads the job's slots from `from` to `to`, over and over until `end`
/// when one is given.
pub fn run_catch_up(job: ConsumeJob, ticket: Ticket) -> Result<Recorder> {
    let mut wires: Vec<(SocketAddr, Wire)> = Vec::new();
    let connected = job.slots.iter().try_for_each(|slot| {
        if !wires.iter().any(|(addr, _)| *addr == slot.addr) {
            wires.push((slot.addr, Wire::connect(slot.addr, job.timeout)?));
        }
        Ok::<(), anyhow::Error>(())
    });
    let mut recorder = ticket.ready()?;
    connected?;
    let end = job.budget.map(|budget| recorder.measure_from() + budget);
    let mut raw = Vec::new();
    loop {
        for slot in &job.slots {
            let wire = &mut wires
                .iter_mut()
                .find(|(addr, _)| *addr == slot.addr)
                .expect("connected above")
                .1;
            read_range(wire, slot, &job, end, &mut raw, &mut recorder)?;
            if interrupted() {
                return Ok(recorder);
            }
        }
        if end.is_none_or(|end| Instant::now() >= end) {
            return Ok(recorder);
        }
    }
}

/// Reads one slot from `from` to `to`. Fetches are pipelined one deep: as
/// soon as an answer is in, the next fetch (from the offset after its last
/// batch, read from the batch headers) is sent, and only then are the
/// answer's batches CRC-checked and counted, so the server streams the next
/// answer while the client verifies this one.
fn read_range(
    wire: &mut Wire,
    slot: &ReadSlot,
    job: &ConsumeJob,
    end: Option<Instant>,
    raw: &mut Vec<u8>,
    recorder: &mut Recorder,
) -> Result<()> {
    let stop = |offset: u64| {
        offset >= slot.to || interrupted() || end.is_some_and(|end| Instant::now() >= end)
    };
    if stop(slot.from) {
        return Ok(());
    }
    let mut in_flight = Some(send_fetch(wire, slot, job, slot.from)?);
    while let Some((id, start, offset)) = in_flight.take() {
        let fetched = match wire.rx.recv_fetch(id, raw)? {
            Ok(fetched) => fetched,
            Err(refused) => bail!(
                "fetch of {}/{} refused: {refused}",
                slot.stream,
                slot.partition
            ),
        };
        let done = Instant::now();
        if fetched.error_code != 0 {
            bail!(
                "fetch of {}/{} at {offset} failed with code {}",
                slot.stream,
                slot.partition,
                fetched.error_code
            );
        }
        if fetched.bytes == 0 {
            bail!(
                "fetch of {}/{} at {offset} returned nothing below the end {}",
                slot.stream,
                slot.partition,
                slot.to
            );
        }
        let raw = &raw[..fetched.bytes];
        let next = next_offset(raw, offset)?;
        if !stop(next) {
            in_flight = Some(send_fetch(wire, slot, job, next)?);
        }
        let (records, checked_next) = count_records(raw, offset)?;
        debug_assert_eq!(next, checked_next);
        // Records past the end (published after the pre-fill) are not counted.
        let records = records.saturating_sub(next.saturating_sub(slot.to));
        recorder.complete_samples(
            start,
            done,
            1,
            records,
            records * job.size as u64,
            fetched.bytes as u64,
        );
    }
    Ok(())
}

fn send_fetch(
    wire: &mut Wire,
    slot: &ReadSlot,
    job: &ConsumeJob,
    offset: u64,
) -> Result<(u32, Instant, u64)> {
    let start = Instant::now();
    let id = wire
        .tx
        .send_fetch(&slot.stream, slot.partition, offset, job.fetch_bytes, 0)?;
    Ok((id, start, offset))
}

/// The offset after the last batch of fetched bytes, from the batch headers
/// alone (no CRC); `offset` if there are none.
fn next_offset(raw: &[u8], offset: u64) -> Result<u64> {
    let mut position = 0usize;
    let mut next = offset;
    while position < raw.len() {
        let header = BatchHeader::parse(&raw[position..])?;
        next = next.max(header.next_offset().0);
        position += header.total_bytes();
    }
    Ok(next)
}

/// When a tail reader may stop.
#[derive(Debug)]
pub struct TailEnd {
    /// Set when every producer has finished.
    pub producers_done: AtomicBool,
    /// Measured messages acknowledged per slot (set by the producers).
    pub delivered: Arc<Delivered>,
    /// How long to keep reading after the producers finished.
    pub drain: Duration,
}

/// Long-polls the job's slots; records publish → receipt per message.
pub fn run_tail(job: ConsumeJob, ticket: Ticket, until: Arc<TailEnd>) -> Result<Recorder> {
    let mut lanes: Vec<(WireSender, WireReceiver)> = Vec::new();
    let connected = job.slots.iter().try_for_each(|slot| {
        let wire = Wire::connect(
            slot.addr,
            job.timeout + Duration::from_millis(job.fetch_wait_ms.into()),
        )?;
        lanes.push((wire.tx, wire.rx));
        Ok::<(), anyhow::Error>(())
    });
    let mut recorder = ticket.ready()?;
    connected?;
    let mut offsets: Vec<u64> = job.slots.iter().map(|s| s.from).collect();
    let mut received: Vec<u64> = vec![0; job.slots.len()];
    let wait_ms = job.fetch_wait_ms / job.slots.len() as u32;
    let mut raw = Vec::new();
    let mut drain_deadline: Option<Instant> = None;
    loop {
        for (i, slot) in job.slots.iter().enumerate() {
            let (tx, rx) = &mut lanes[i];
            let id = tx.send_fetch(
                &slot.stream,
                slot.partition,
                offsets[i],
                job.fetch_bytes,
                wait_ms,
            )?;
            let fetched = match rx.recv_fetch(id, &mut raw)? {
                Ok(fetched) => fetched,
                Err(refused) => bail!(
                    "fetch of {}/{} refused: {refused}",
                    slot.stream,
                    slot.partition
                ),
            };
            let done = Instant::now();
            if fetched.error_code != 0 {
                bail!(
                    "fetch of {}/{} at {} failed with code {}",
                    slot.stream,
                    slot.partition,
                    offsets[i],
                    fetched.error_code
                );
            }
            let raw = Bytes::copy_from_slice(&raw[..fetched.bytes]);
            let (measured, next) = stamp_latencies(&raw, offsets[i], done, &mut recorder)?;
            received[i] += measured;
            offsets[i] = next;
        }
        let producers_done = until.producers_done.load(Ordering::Acquire);
        if producers_done {
            let all_in = job
                .slots
                .iter()
                .zip(&received)
                .all(|(slot, got)| *got >= until.delivered.get(slot.slot));
            if all_in {
                return Ok(recorder);
            }
            let deadline = *drain_deadline.get_or_insert_with(|| Instant::now() + until.drain);
            if Instant::now() >= deadline || interrupted() {
                let missing: u64 = job
                    .slots
                    .iter()
                    .zip(&received)
                    .map(|(slot, got)| until.delivered.get(slot.slot).saturating_sub(*got))
                    .sum();
                recorder.timeout(missing);
                return Ok(recorder);
            }
        }
    }
}

/// Decodes fetched batches and records each measured record's latency from
/// the time stamped in its value; returns (measured records, next offset).
fn stamp_latencies(
    raw: &Bytes,
    offset: u64,
    done: Instant,
    recorder: &mut Recorder,
) -> Result<(u64, u64)> {
    let mut position = 0usize;
    let mut next = offset;
    let mut measured = 0u64;
    while position < raw.len() {
        let header = BatchHeader::parse(&raw[position..])?;
        let end = position + header.total_bytes();
        if end > raw.len() {
            bail!("fetch ended inside a batch");
        }
        let (header, records) = decode_batch(&raw.slice(position..end))?;
        for record in records.iter().filter(|r| r.offset.0 >= next) {
            let value = record.value.as_deref().unwrap_or_default();
            let Some(nanos) = read_stamp(value) else {
                continue;
            };
            let sent = instant_from_nanos(nanos);
            if recorder.measured(sent) {
                recorder.complete_samples(sent, done, 1, 1, value.len() as u64, 0);
                measured += 1;
            }
        }
        next = next.max(header.next_offset().0);
        position = end;
    }
    Ok((measured, next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::direct::BatchBuilder;
    use shards::batch::set_base_offset;

    #[test]
    fn records_are_counted_from_the_requested_offset() {
        let mut builder = BatchBuilder::new(8, false);
        let mut raw = builder.build(5, Instant::now(), Duration::ZERO).to_vec();
        let mut second = builder.build(3, Instant::now(), Duration::ZERO).to_vec();
        set_base_offset(&mut second, shards::types::Offset(5));
        raw.extend_from_slice(&second);
        assert_eq!(count_records(&raw, 0).unwrap(), (8, 8));
        assert_eq!(count_records(&raw, 2).unwrap(), (6, 8));
        assert_eq!(next_offset(&raw, 2).unwrap(), 8);
        assert_eq!(next_offset(&[], 2).unwrap(), 2);
        let mut corrupt = raw.clone();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 1;
        assert!(count_records(&corrupt, 0).is_err());
    }
}
