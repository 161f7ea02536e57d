//! What a run is made of: workloads, cases (a workload at one message size
//! with its settings), the systems a case runs against, and how clients are
//! spread over streams and partitions.

use std::time::Duration;

use serde::Serialize;

use crate::units::format_bytes;

/// The four workloads (see `--help`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    PublishNats,
    PublishDirect,
    Consume,
    EndToEnd,
}

impl Workload {
    pub const ALL: [Workload; 4] = [
        Workload::PublishNats,
        Workload::PublishDirect,
        Workload::Consume,
        Workload::EndToEnd,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::PublishNats => "publish-nats",
            Workload::PublishDirect => "publish-direct",
            Workload::Consume => "consume",
            Workload::EndToEnd => "end-to-end",
        }
    }

    /// Whether messages go through NATS publishers (so the NATS echo
    /// ceiling applies).
    pub fn publishes_over_nats(self) -> bool {
        matches!(self, Workload::PublishNats | Workload::EndToEnd)
    }
}

/// How much a run does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Amount {
    /// This many measured messages (all producers together).
    Messages(u64),
    /// Measured for this long.
    Duration(Duration),
}

/// The settings of one case, resolved from the command line.
#[derive(Clone, Debug)]
pub struct CaseSettings {
    pub amount: Amount,
    pub warmup: Duration,
    pub producers: usize,
    pub consumers: usize,
    pub streams: usize,
    pub partitions: usize,
    pub replicas: usize,
    /// Messages per second, all producers together (open loop).
    pub rate: Option<f64>,
    pub window: usize,
    pub batch_bytes: usize,
    pub batch_records: Option<usize>,
    pub pipeline: usize,
    pub fetch_bytes: usize,
    pub fetch_wait_ms: u32,
    pub tail: bool,
    pub prefill_bytes: usize,
    pub timeout: Duration,
}

/// One workload at one message size.
#[derive(Clone, Debug)]
pub struct Case {
    /// Position in the run, used in stream and subject names.
    pub index: usize,
    pub workload: Workload,
    /// Bytes of each message's value (the NATS payload).
    pub size: usize,
    pub settings: CaseSettings,
}

impl Case {
    /// `publish-nats 128 B`, `consume 16 KiB (tail)`.
    pub fn name(&self) -> String {
        let tail = if self.workload == Workload::Consume && self.settings.tail {
            " (tail)"
        } else {
            ""
        };
        format!("{} {}{tail}", self.workload.name(), format_bytes(self.size))
    }

    /// Records per direct-publish batch.
    pub fn batch_records(&self) -> usize {
        self.settings
            .batch_records
            .unwrap_or(self.settings.batch_bytes / self.size)
            .max(1)
    }

    /// Whether this case has producers that publish directly over TCP.
    pub fn direct_producers(&self) -> bool {
        match self.workload {
            Workload::PublishDirect => true,
            Workload::Consume => self.settings.tail,
            _ => false,
        }
    }

    /// Whether this case is a catch-up read of a pre-filled stream.
    pub fn catch_up(&self) -> bool {
        self.workload == Workload::Consume && !self.settings.tail
    }

    /// Whether this case has consumers.
    pub fn has_consumers(&self) -> bool {
        matches!(self.workload, Workload::Consume | Workload::EndToEnd)
    }

    /// Whether payloads must carry their send time (consumers measure
    /// publish → receipt).
    pub fn timestamps_in_payload(&self) -> bool {
        match self.workload {
            Workload::EndToEnd => true,
            Workload::Consume => self.settings.tail,
            _ => false,
        }
    }

    /// Messages pre-filled for a catch-up read.
    pub fn prefill_messages(&self) -> u64 {
        match self.settings.amount {
            Amount::Messages(n) => n,
            Amount::Duration(_) => (self.settings.prefill_bytes / self.size).max(1) as u64,
        }
    }

    /// Every (stream, partition) the case uses, in order.
    pub fn targets(&self) -> Vec<Slot> {
        let mut slots = Vec::new();
        for stream in 0..self.settings.streams {
            for partition in 0..self.settings.partitions {
                slots.push(Slot { stream, partition });
            }
        }
        slots
    }
}

/// One (stream index, partition) of a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub stream: usize,
    pub partition: usize,
}

/// The slots client `client` of `clients` works on: every `clients`-th slot
/// when there are at least as many slots as clients, else one slot shared
/// round-robin (several clients on one slot).
pub fn assign(slots: &[Slot], client: usize, clients: usize) -> Vec<Slot> {
    assert!(clients > 0 && client < clients && !slots.is_empty());
    if slots.len() >= clients {
        slots
            .iter()
            .skip(client)
            .step_by(clients)
            .copied()
            .collect()
    } else {
        vec![slots[client % slots.len()]]
    }
}

/// How many clients of `clients` read `slot` (consumers beyond the slot
/// count each read a slot in full, so a slot may have several readers).
pub fn readers_of(slots: &[Slot], slot_index: usize, clients: usize) -> usize {
    (0..clients)
        .filter(|c| {
            let mine = assign(slots, *c, clients);
            mine.contains(&slots[slot_index])
        })
        .count()
}

/// Splits `total` into `parts` shares that differ by at most one.
pub fn share(total: u64, parts: usize, part: usize) -> u64 {
    let parts = parts as u64;
    let part = part as u64;
    total / parts + u64::from(part < total % parts)
}

/// The system a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum System {
    Sluice,
    Jetstream,
    /// The NATS ack-path ceiling: a responder that stores nothing.
    NatsEcho,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Sluice => "sluice",
            System::Jetstream => "jetstream",
            System::NatsEcho => "nats-echo",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(n: usize) -> Vec<Slot> {
        (0..n)
            .map(|p| Slot {
                stream: 0,
                partition: p,
            })
            .collect()
    }

    #[test]
    fn clients_are_spread_over_slots() {
        let s = slots(4);
        assert_eq!(assign(&s, 0, 2), vec![s[0], s[2]]);
        assert_eq!(assign(&s, 1, 2), vec![s[1], s[3]]);
        assert_eq!(assign(&s, 2, 3), vec![s[2]]);
        // More clients than slots: shared.
        let s = slots(2);
        assert_eq!(assign(&s, 3, 4), vec![s[1]]);
        assert_eq!(readers_of(&s, 1, 4), 2);
        assert_eq!(readers_of(&s, 0, 1), 1);
    }

    #[test]
    fn shares_add_up() {
        for (total, parts) in [(10u64, 3usize), (2, 5), (1_000_000, 7)] {
            let sum: u64 = (0..parts).map(|p| share(total, parts, p)).sum();
            assert_eq!(sum, total);
        }
    }
}
