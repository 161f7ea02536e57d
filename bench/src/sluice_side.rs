//! The Sluice side of a case: streams created through the protocol client
//! (`sluice::client::Client`), each partition's shard port learned from
//! Metadata (so the bench also targets clusters: every partition request
//! goes to its leader's `consumer_port`), the NATS subscription probe, and
//! the pre-fill of catch-up reads.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use bytes::Bytes;
use sluice::client::{Client, Limit, OffsetQuery, StreamConfig};
use sluice::model::NodeId;
use sluice::protocol::ack::{Ack, AckOutcome};

use crate::direct::{run_direct_producer, DirectJob, DirectSlot};
use crate::nats_pub::Delivered;
use crate::plan::{share, Case, Slot};
use crate::recorder::{Live, Recorder};

/// How long a new stream may take to get leaders and NATS subscriptions.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The Sluice streams of one case.
pub struct SluiceStreams {
    servers: Vec<String>,
    pub names: Vec<String>,
    /// NATS subject of each stream (partition 0; partition p > 0 adds `.p`).
    pub subjects: Vec<String>,
    routes: HashMap<(usize, usize), SocketAddr>,
}

/// Connects to the first of `servers` that answers.
pub fn connect(servers: &[String]) -> Result<Client> {
    let mut last = None;
    for server in servers {
        match Client::connect(server) {
            Ok(client) => return Ok(client),
            Err(error) => last = Some(anyhow!("{server}: {error}")),
        }
    }
    Err(last.unwrap_or_else(|| anyhow!("no Sluice server given")))
}

impl SluiceStreams {
    /// Creates `case.settings.streams` streams of `partitions` partitions and
    /// waits until every partition has a leader and a port.
    pub fn create(servers: &[String], case: &Case, run_id: &str) -> Result<SluiceStreams> {
        let mut client = connect(servers)?;
        let s = &case.settings;
        let mut names = Vec::new();
        let mut subjects = Vec::new();
        for k in 0..s.streams {
            let name = format!("bench-{run_id}-c{}-s{k}", case.index);
            let subject = format!("bench.{run_id}.c{}.s{k}", case.index);
            let config = StreamConfig {
                partitions: Some(s.partitions as u32),
                replication_factor: Some(u16::try_from(s.replicas).unwrap_or(u16::MAX)),
                retention_age_ms: Limit::Unlimited,
                retention_bytes: Limit::Unlimited,
                retention_messages: Limit::Unlimited,
                ..StreamConfig::new(&name, &subject)
            };
            client
                .create_stream(&config)
                .with_context(|| format!("create Sluice stream {name}"))?;
            names.push(name);
            subjects.push(subject);
        }
        let bootstrap = client.server_addr();
        let mut streams = SluiceStreams {
            servers: servers.to_vec(),
            names,
            subjects,
            routes: HashMap::new(),
        };
        let started = Instant::now();
        loop {
            match streams.learn_routes(&mut client, bootstrap, s.partitions) {
                Ok(()) => return Ok(streams),
                Err(error) if started.elapsed() > READY_TIMEOUT => return Err(error),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn learn_routes(
        &mut self,
        client: &mut Client,
        bootstrap: SocketAddr,
        partitions: usize,
    ) -> Result<()> {
        let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
        let metadata = client.metadata_for(&names)?;
        let hosts: HashMap<NodeId, IpAddr> = metadata
            .brokers
            .iter()
            .map(|b| (b.node_id, broker_ip(&b.host, bootstrap.ip())))
            .collect();
        for (k, name) in self.names.iter().enumerate() {
            let stream = metadata
                .stream(name)
                .filter(|s| s.error.is_none())
                .ok_or_else(|| anyhow!("stream {name} is not in the metadata yet"))?;
            for p in 0..partitions {
                let partition = stream
                    .partitions
                    .iter()
                    .find(|m| m.partition as usize == p)
                    .ok_or_else(|| anyhow!("{name} has no partition {p} yet"))?;
                let leader = partition
                    .leader
                    .ok_or_else(|| anyhow!("{name}/{p} has no leader yet"))?;
                if partition.consumer_port == 0 {
                    bail!("{name}/{p} has no port yet");
                }
                let ip = hosts.get(&leader).copied().unwrap_or(bootstrap.ip());
                self.routes
                    .insert((k, p), SocketAddr::new(ip, partition.consumer_port));
            }
        }
        Ok(())
    }

    /// The NATS subject of a slot.
    pub fn subject(&self, slot: Slot) -> String {
        partition_subject(&self.subjects[slot.stream], slot.partition)
    }

    pub fn addr(&self, slot: Slot) -> SocketAddr {
        self.routes[&(slot.stream, slot.partition)]
    }

    pub fn direct_slot(&self, slot: Slot, index: usize) -> DirectSlot {
        DirectSlot {
            stream: self.names[slot.stream].clone(),
            partition: slot.partition as u32,
            addr: self.addr(slot),
            slot: index,
        }
    }

    /// Each slot's high watermark.
    pub fn high_watermarks(&self, slots: &[Slot]) -> Result<Vec<u64>> {
        let mut client = connect(&self.servers)?;
        client.metadata()?;
        slots
            .iter()
            .map(|slot| {
                let name = &self.names[slot.stream];
                let listed = client
                    .list_offsets(name, slot.partition as u32, OffsetQuery::Latest)
                    .with_context(|| format!("high watermark of {name}/{}", slot.partition))?;
                Ok(listed.offset.0)
            })
            .collect()
    }

    /// Publishes `counts[i]` records of `size` bytes to slot `i`, directly
    /// in batches of `batch_records`, and waits until they are committed.
    pub fn prefill(
        &self,
        slots: &[Slot],
        counts: &[u64],
        size: usize,
        batch_records: usize,
        timeout: Duration,
    ) -> Result<()> {
        let live = Arc::new(Live::default());
        let jobs: Vec<DirectJob> = slots
            .iter()
            .enumerate()
            .filter(|(i, _)| counts[*i] > 0)
            .map(|(i, slot)| DirectJob {
                slots: vec![self.direct_slot(*slot, i)],
                size,
                batch_records,
                pipeline: 2,
                start: Instant::now(),
                quota: Some(counts[i]),
                end: None,
                rate: None,
                timeout,
                timestamps: false,
            })
            .collect();
        // A few slots at a time: enough to keep the disk busy.
        for chunk in jobs.chunks(8) {
            std::thread::scope(|scope| -> Result<()> {
                let handles: Vec<_> = chunk
                    .iter()
                    .map(|job| {
                        let recorder = Recorder::new(Instant::now(), live.clone());
                        let delivered = Arc::new(Delivered::new(slots.len()));
                        let job = job.clone();
                        scope.spawn(move || run_direct_producer(job, recorder, delivered))
                    })
                    .collect();
                for handle in handles {
                    let recorder = handle.join().expect("pre-fill thread panicked")?;
                    if recorder.errors > 0 {
                        bail!(
                            "pre-fill failed: {}",
                            recorder.first_error.unwrap_or_default()
                        );
                    }
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Deletes the streams (errors are reported, not fatal).
    pub fn delete(&self) {
        let Ok(mut client) = connect(&self.servers) else {
            return;
        };
        for name in &self.names {
            if let Err(error) = client.delete_stream(name) {
                eprintln!("sluice-bench: cannot delete Sluice stream {name}: {error}");
            }
        }
    }
}

/// Partition `p`'s subject of a stream bound to `subject`.
pub fn partition_subject(subject: &str, partition: usize) -> String {
    if partition == 0 {
        subject.to_string()
    } else {
        format!("{subject}.{partition}")
    }
}

/// A broker's advertised host as an IP; `fallback` when it is empty, a
/// wildcard or unresolvable.
fn broker_ip(host: &str, fallback: IpAddr) -> IpAddr {
    let resolved = match host.parse::<IpAddr>() {
        Ok(ip) => Some(ip),
        Err(_) if host.is_empty() => None,
        Err(_) => (host, 0)
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .map(|addr| addr.ip()),
    };
    resolved
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(fallback)
}

/// Publishes a probe request on each subject until Sluice acks it: the
/// stream's NATS subscriptions are in place. (The probes are stored.)
pub fn probe_subscriptions(nats_url: &str, subjects: &[String]) -> Result<()> {
    let runtime = crate::js::runtime()?;
    runtime.block_on(async {
        let client = async_nats::ConnectOptions::new()
            .name("sluice-bench probe")
            .request_timeout(Some(Duration::from_millis(500)))
            .connect(nats_url)
            .await
            .with_context(|| format!("connect to NATS at {nats_url}"))?;
        for subject in subjects {
            let started = Instant::now();
            loop {
                let answer = client.request(subject.clone(), Bytes::from_static(b"probe")).await;
                if let Ok(message) = answer {
                    if let Ok(Ack {
                        outcome: AckOutcome::Committed { .. },
                        ..
                    }) = Ack::decode(&message.payload)
                    {
                        break;
                    }
                }
                if started.elapsed() > READY_TIMEOUT {
                    bail!("Sluice did not ack a probe on {subject} within {READY_TIMEOUT:?} (is the node connected to {nats_url}?)");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    })
}

/// Per-slot shares of a total.
pub fn per_slot(total: u64, slots: usize) -> Vec<u64> {
    (0..slots).map(|i| share(total, slots, i)).collect()
}
