//! Resource limits of a `sluice serve` node, all in one place: what each one
//! bounds, its default, and the counters that say how often one tripped.
//!
//! Set them in `sluice.toml` under `[limits]` (every key optional; the
//! defaults below fit a laptop and a 64-core box alike) or, for the few
//! that are per deployment, with flags (`--max-connections`). Exceeding a
//! limit is answered with an `ErrorResponse{LimitExceeded}` whose message
//! starts with the limit's name (`connections_max: ...`) and counted in
//! `sluice_limit_exceeded_total{limit="..."}`; it never grows memory.
//!
//! The wire protocol's fixed maxima (`protocol::limits`) are ceilings: a
//! configured value may be lower, never higher.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;

use crate::protocol::limits::{
    FETCH_BYTES_MAX, FRAME_BODY_BYTES_MAX, FRAME_BODY_BYTES_UNAUTHENTICATED_MAX,
    PUBLISH_BATCH_BYTES_MAX,
};

/// Default most client connections a node holds at once. An idle
/// connection costs ~10 KiB (socket buffers excluded), so 10 000 is ~100 MiB
/// at worst, and well below a typical `ulimit -n` of a server.
pub const CONNECTIONS_MAX_DEFAULT: usize = 10_000;
/// Default most connections one principal may hold at once (`anonymous`
/// until authentication is configured).
pub const CONNECTIONS_PER_PRINCIPAL_MAX_DEFAULT: usize = 10_000;
/// Default most bytes a fetch may have in flight on one connection (one
/// fetch response at a time per connection, sent by `sendfile`).
pub const FETCH_INFLIGHT_BYTES_MAX_DEFAULT: u32 = FETCH_BYTES_MAX;
/// Default most records in one published batch (the engine allows 2^20).
pub const BATCH_RECORDS_MAX_DEFAULT: usize = shards::constants::BATCH_RECORDS_MAX;
/// Default most headers per record (the engine's own ceiling).
pub const RECORD_HEADERS_MAX_DEFAULT: usize = shards::constants::RECORD_HEADERS_MAX;
/// Default most bytes of one record's headers (keys + values).
pub const RECORD_HEADER_BYTES_MAX_DEFAULT: usize = 1 << 20;
/// Default most streams in the cluster (the metadata's own ceiling is
/// `model::limits::STREAMS_MAX`).
pub const STREAMS_MAX_DEFAULT: usize = crate::model::limits::STREAMS_MAX;
/// Default most partitions in the cluster, all streams together. Each
/// costs a directory, open files and a few hundred bytes of metadata.
pub const PARTITIONS_MAX_DEFAULT: usize = 100_000;
/// Default most cursors one shard keeps in memory (~400 bytes each at
/// worst: 100 000 ≈ 40 MiB).
pub const CURSORS_MAX_DEFAULT: usize = 100_000;
/// Default: a connection that sends nothing for this long is closed.
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 300_000;
/// Default: once a frame's first byte arrived, the whole frame must arrive
/// within this (a 16 MiB frame at 1 MiB/s fits; a slowloris does not).
pub const FRAME_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Default: a response write (or a `sendfile` chunk) that makes no progress
/// for this long cuts the connection (a consumer that stopped reading).
pub const WRITE_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Smallest timeout accepted (below it, a loaded machine trips them).
pub const TIMEOUT_MS_MIN: u64 = 10;

/// Which limit tripped: its stable name (config key, error message prefix,
/// metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LimitKind {
    FrameBodyBytes,
    BatchBytes,
    BatchRecords,
    RecordHeaders,
    RecordHeaderBytes,
    Connections,
    ConnectionsPerPrincipal,
    FetchInflightBytes,
    Streams,
    Partitions,
    Cursors,
    IdleTimeout,
    FrameTimeout,
    WriteTimeout,
}

impl LimitKind {
    pub const ALL: [LimitKind; 14] = [
        LimitKind::FrameBodyBytes,
        LimitKind::BatchBytes,
        LimitKind::BatchRecords,
        LimitKind::RecordHeaders,
        LimitKind::RecordHeaderBytes,
        LimitKind::Connections,
        LimitKind::ConnectionsPerPrincipal,
        LimitKind::FetchInflightBytes,
        LimitKind::Streams,
        LimitKind::Partitions,
        LimitKind::Cursors,
        LimitKind::IdleTimeout,
        LimitKind::FrameTimeout,
        LimitKind::WriteTimeout,
    ];

    /// The name used in `sluice.toml`, error messages and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            LimitKind::FrameBodyBytes => "frame_body_bytes_max",
            LimitKind::BatchBytes => "batch_bytes_max",
            LimitKind::BatchRecords => "batch_records_max",
            LimitKind::RecordHeaders => "record_headers_max",
            LimitKind::RecordHeaderBytes => "record_header_bytes_max",
            LimitKind::Connections => "connections_max",
            LimitKind::ConnectionsPerPrincipal => "connections_per_principal_max",
            LimitKind::FetchInflightBytes => "fetch_inflight_bytes_max",
            LimitKind::Streams => "streams_max",
            LimitKind::Partitions => "partitions_max",
            LimitKind::Cursors => "cursors_max",
            LimitKind::IdleTimeout => "idle_timeout_ms",
            LimitKind::FrameTimeout => "frame_timeout_ms",
            LimitKind::WriteTimeout => "write_timeout_ms",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The configured limits (see the module docs and each default).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub frame_body_bytes_max: usize,
    pub batch_bytes_max: usize,
    pub batch_records_max: usize,
    pub record_headers_max: usize,
    pub record_header_bytes_max: usize,
    pub connections_max: usize,
    pub connections_per_principal_max: usize,
    pub fetch_inflight_bytes_max: u32,
    pub streams_max: usize,
    pub partitions_max: usize,
    pub cursors_max: usize,
    pub idle_timeout_ms: u64,
    pub frame_timeout_ms: u64,
    pub write_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            frame_body_bytes_max: FRAME_BODY_BYTES_MAX,
            batch_bytes_max: PUBLISH_BATCH_BYTES_MAX,
            batch_records_max: BATCH_RECORDS_MAX_DEFAULT,
            record_headers_max: RECORD_HEADERS_MAX_DEFAULT,
            record_header_bytes_max: RECORD_HEADER_BYTES_MAX_DEFAULT,
            connections_max: CONNECTIONS_MAX_DEFAULT,
            connections_per_principal_max: CONNECTIONS_PER_PRINCIPAL_MAX_DEFAULT,
            fetch_inflight_bytes_max: FETCH_INFLIGHT_BYTES_MAX_DEFAULT,
            streams_max: STREAMS_MAX_DEFAULT,
            partitions_max: PARTITIONS_MAX_DEFAULT,
            cursors_max: CURSORS_MAX_DEFAULT,
            idle_timeout_ms: IDLE_TIMEOUT_MS_DEFAULT,
            frame_timeout_ms: FRAME_TIMEOUT_MS_DEFAULT,
            write_timeout_ms: WRITE_TIMEOUT_MS_DEFAULT,
        }
    }
}

impl Limits {
    /// Checks every value against its ceiling; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        let ceilings: [(LimitKind, u64, u64); 11] = [
            (
                LimitKind::FrameBodyBytes,
                self.frame_body_bytes_max as u64,
                FRAME_BODY_BYTES_MAX as u64,
            ),
            (
                LimitKind::BatchBytes,
                self.batch_bytes_max as u64,
                PUBLISH_BATCH_BYTES_MAX as u64,
            ),
            (
                LimitKind::BatchRecords,
                self.batch_records_max as u64,
                shards::constants::BATCH_RECORDS_MAX as u64,
            ),
            (
                LimitKind::RecordHeaders,
                self.record_headers_max as u64,
                shards::constants::RECORD_HEADERS_MAX as u64,
            ),
            (
                LimitKind::RecordHeaderBytes,
                self.record_header_bytes_max as u64,
                PUBLISH_BATCH_BYTES_MAX as u64,
            ),
            (
                LimitKind::Connections,
                self.connections_max as u64,
                u32::MAX as u64,
            ),
            (
                LimitKind::ConnectionsPerPrincipal,
                self.connections_per_principal_max as u64,
                u32::MAX as u64,
            ),
            (
                LimitKind::FetchInflightBytes,
                u64::from(self.fetch_inflight_bytes_max),
                u64::from(FETCH_BYTES_MAX),
            ),
            (
                LimitKind::Streams,
                self.streams_max as u64,
                crate::model::limits::STREAMS_MAX as u64,
            ),
            (
                LimitKind::Partitions,
                self.partitions_max as u64,
                u32::MAX as u64,
            ),
            (LimitKind::Cursors, self.cursors_max as u64, u32::MAX as u64),
        ];
        for (kind, value, ceiling) in ceilings {
            if value == 0 || value > ceiling {
                return Err(format!(
                    "limits.{} = {value} is outside 1..={ceiling}",
                    kind.name()
                ));
            }
        }
        if self.frame_body_bytes_max < FRAME_BODY_BYTES_UNAUTHENTICATED_MAX {
            return Err(format!(
                "limits.frame_body_bytes_max must be at least {FRAME_BODY_BYTES_UNAUTHENTICATED_MAX}"
            ));
        }
        for (kind, ms) in [
            (LimitKind::IdleTimeout, self.idle_timeout_ms),
            (LimitKind::FrameTimeout, self.frame_timeout_ms),
            (LimitKind::WriteTimeout, self.write_timeout_ms),
        ] {
            if ms < TIMEOUT_MS_MIN {
                return Err(format!(
                    "limits.{} = {ms} is below the minimum {TIMEOUT_MS_MIN} ms",
                    kind.name()
                ));
            }
        }
        Ok(())
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    pub fn frame_timeout(&self) -> Duration {
        Duration::from_millis(self.frame_timeout_ms)
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }
}

/// How often each limit tripped, node-wide, for
/// `sluice_limit_exceeded_total`. Shared by the shards and the control
/// core; touched only when a limit trips (never on the data path).
#[derive(Debug, Default)]
pub struct LimitCounters {
    counts: [AtomicU64; LimitKind::ALL.len()],
}

impl LimitCounters {
    pub fn record(&self, kind: LimitKind) {
        self.counts[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, kind: LimitKind) -> u64 {
        self.counts[kind.index()].load(Ordering::Relaxed)
    }
}

/// Node-wide connection admission: the total and per-principal counts.
///
/// Shared by every shard's accept loop. Thread-per-core would split the
/// budget per shard, but clients choose their shard (shard-aware ports), so
/// a per-shard split would refuse connections while the node has room. The
/// counters are touched once when a connection opens, when it
/// authenticates (changes principal) and when it closes — never per
/// request — so an atomic and a short mutex here cost nothing measurable.
#[derive(Debug)]
pub struct ConnectionGate {
    connections_max: usize,
    per_principal_max: usize,
    open: AtomicUsize,
    per_principal: Mutex<HashMap<String, usize>>,
    pub counters: Arc<LimitCounters>,
}

/// The principal a connection counts against until it authenticates.
pub use crate::auth::ANONYMOUS_PRINCIPAL;

/// One admitted connection; dropping it gives its place back.
#[derive(Debug)]
pub struct ConnectionPermit {
    gate: Arc<ConnectionGate>,
    principal: String,
}

impl ConnectionGate {
    pub fn new(limits: &Limits, counters: Arc<LimitCounters>) -> Arc<ConnectionGate> {
        Arc::new(ConnectionGate {
            connections_max: limits.connections_max,
            per_principal_max: limits.connections_per_principal_max,
            open: AtomicUsize::new(0),
            per_principal: Mutex::new(HashMap::new()),
            counters,
        })
    }

    /// Connections open on the node now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Admits a new connection as `principal`, or says which limit is full
    /// (and counts the trip).
    pub fn admit(self: &Arc<Self>, principal: &str) -> Result<ConnectionPermit, LimitKind> {
        let admitted = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.connections_max).then_some(open + 1)
            });
        if admitted.is_err() {
            self.counters.record(LimitKind::Connections);
            return Err(LimitKind::Connections);
        }
        if let Err(kind) = self.take_principal_slot(principal) {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(kind);
        }
        Ok(ConnectionPermit {
            gate: self.clone(),
            principal: principal.to_owned(),
        })
    }

    fn take_principal_slot(&self, principal: &str) -> Result<(), LimitKind> {
        let mut counts = self
            .per_principal
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = counts.entry(principal.to_owned()).or_insert(0);
        if *count >= self.per_principal_max {
            if *count == 0 {
                counts.remove(principal);
            }
            self.counters.record(LimitKind::ConnectionsPerPrincipal);
            return Err(LimitKind::ConnectionsPerPrincipal);
        }
        *count += 1;
        Ok(())
    }

    fn release_principal_slot(&self, principal: &str) {
        let mut counts = self
            .per_principal
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = counts.get_mut(principal) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(principal);
            }
        }
    }
}

impl ConnectionPermit {
    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// Moves this connection to another principal (after it
    /// authenticated); on refusal it stays counted as before.
    pub fn rebind(&mut self, principal: &str) -> Result<(), LimitKind> {
        if principal == self.principal {
            return Ok(());
        }
        self.gate.take_principal_slot(principal)?;
        self.gate.release_principal_slot(&self.principal);
        self.principal = principal.to_owned();
        Ok(())
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.gate.release_principal_slot(&self.principal);
        self.gate.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_names_are_unique() {
        assert_eq!(Limits::default().validate(), Ok(()));
        let mut names: Vec<&str> = LimitKind::ALL.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), LimitKind::ALL.len());
        for (i, kind) in LimitKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i);
        }
    }

    #[test]
    fn values_above_the_protocol_ceiling_or_zero_are_refused() {
        let limits = Limits {
            frame_body_bytes_max: FRAME_BODY_BYTES_MAX + 1,
            ..Limits::default()
        };
        assert!(limits
            .validate()
            .unwrap_err()
            .contains("frame_body_bytes_max"));
        let limits = Limits {
            connections_max: 0,
            ..Limits::default()
        };
        assert!(limits.validate().unwrap_err().contains("connections_max"));
        let limits = Limits {
            write_timeout_ms: 1,
            ..Limits::default()
        };
        assert!(limits.validate().unwrap_err().contains("write_timeout_ms"));
    }

    #[test]
    fn toml_section_sets_some_and_keeps_the_rest() {
        let limits: Limits =
            toml::from_str("connections_max = 5\nidle_timeout_ms = 100\n").expect("parses");
        assert_eq!(limits.connections_max, 5);
        assert_eq!(limits.idle_timeout_ms, 100);
        assert_eq!(limits.streams_max, STREAMS_MAX_DEFAULT);
        assert!(toml::from_str::<Limits>("connection_max = 5\n").is_err());
    }

    #[test]
    fn gate_counts_total_and_per_principal_and_gives_places_back() {
        let limits = Limits {
            connections_max: 3,
            connections_per_principal_max: 2,
            ..Limits::default()
        };
        let counters = Arc::new(LimitCounters::default());
        let gate = ConnectionGate::new(&limits, counters.clone());
        let a = gate.admit("anonymous").expect("first");
        let b = gate.admit("anonymous").expect("second");
        assert_eq!(
            gate.admit("anonymous").unwrap_err(),
            LimitKind::ConnectionsPerPrincipal
        );
        let mut c = gate.admit("alice").expect("other principal");
        assert_eq!(gate.admit("bob").unwrap_err(), LimitKind::Connections);
        assert_eq!(gate.open_connections(), 3);
        assert_eq!(counters.get(LimitKind::Connections), 1);
        assert_eq!(counters.get(LimitKind::ConnectionsPerPrincipal), 1);
        assert_eq!(
            c.rebind("anonymous"),
            Err(LimitKind::ConnectionsPerPrincipal)
        );
        assert_eq!(c.principal(), "alice");
        drop(a);
        c.rebind("anonymous").expect("a place was freed");
        drop((b, c));
        assert_eq!(gate.open_connections(), 0);
        assert!(gate.per_principal.lock().unwrap().is_empty());
    }
}
