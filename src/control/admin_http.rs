//! The admin endpoint: `GET /metrics` (Prometheus text format) and
//! `GET /healthz`. A deliberately tiny HTTP/1.1 server: one request per
//! connection, bounded head size and time, no keep-alive.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::router::{HostedPartition, RouterRequest};
use crate::cores::{ShardStats, FSYNC_BUCKETS_US};
use crate::limits::{LimitCounters, LimitKind};
use crate::model::NodeId;

/// Largest request head read before answering 431.
pub const REQUEST_HEAD_BYTES_MAX: usize = 8 << 10;
/// How long `/healthz` waits for the shards to answer.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// A client that has not sent its request head by then is dropped.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Most admin connections handled at once. A scraper and a health checker
/// need one or two; each costs a task and a socket for at most
/// [`REQUEST_TIMEOUT`], so a flood (or a scraper that never sends) is held
/// to this many and the rest are answered 503 and closed at once.
pub const ADMIN_CONNECTIONS_MAX: usize = 64;
/// First pause after a failed accept (`EMFILE`, `ENFILE`, `ENOBUFS`...):
/// retrying at once would spin the control core, which also runs the NATS
/// bridge and raft.
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause between accept retries: the pause doubles with each
/// consecutive failure up to this and starts over after a success.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The answer to a connection over [`ADMIN_CONNECTIONS_MAX`], written
/// without waiting (what the socket buffer takes) before closing.
const BUSY_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 30\r\nConnection: close\r\n\r\nadmin_connections_max reached\n";

pub async fn serve(
    listener: TcpListener,
    router: mpsc::Sender<RouterRequest>,
    local_node: NodeId,
    limits: Arc<LimitCounters>,
) {
    serve_with(listener, router, local_node, limits, ADMIN_CONNECTIONS_MAX).await;
}

/// [`serve`] with the connection cap as a parameter (tests use a small one).
async fn serve_with(
    listener: impl Accept,
    router: mpsc::Sender<RouterRequest>,
    local_node: NodeId,
    limits: Arc<LimitCounters>,
    connections_max: usize,
) {
    let refused = Arc::new(AtomicU64::new(0));
    let counted = refused.clone();
    accept_loop(&listener, connections_max, &counted, |stream, permit| {
        let router = router.clone();
        let limits = limits.clone();
        let refused = refused.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(
                REQUEST_TIMEOUT,
                handle(stream, router, local_node, &limits, &refused),
            )
            .await;
            drop(permit);
        });
    })
    .await;
}

/// What the accept loop needs of a listener; a trait so tests can make
/// accepting fail.
trait Accept {
    fn accept_stream(&self) -> impl Future<Output = std::io::Result<TcpStream>>;
}

impl Accept for TcpListener {
    async fn accept_stream(&self) -> std::io::Result<TcpStream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

/// Accepts connections and hands each to `serve` with a slot of the
/// `connections_max` cap; a connection over the cap gets
/// [`BUSY_RESPONSE`] and is counted in `refused`. A failed accept is
/// retried after a pause that backs off from [`ACCEPT_BACKOFF_MIN`] to
/// [`ACCEPT_BACKOFF_MAX`].
async fn accept_loop(
    listener: &impl Accept,
    connections_max: usize,
    refused: &AtomicU64,
    mut serve: impl FnMut(TcpStream, OwnedSemaphorePermit),
) {
    let slots = Arc::new(Semaphore::new(connections_max));
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        match listener.accept_stream().await {
            Ok(stream) => {
                backoff = ACCEPT_BACKOFF_MIN;
                match slots.clone().try_acquire_owned() {
                    Ok(permit) => serve(stream, permit),
                    Err(_) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        // Best effort and never waiting: a refused client
                        // must not hold anything of ours.
                        let _ = stream.try_write(BUSY_RESPONSE);
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?backoff, "admin HTTP: accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
}

async fn handle(
    mut stream: TcpStream,
    router: mpsc::Sender<RouterRequest>,
    local_node: NodeId,
    limits: &LimitCounters,
    refused: &AtomicU64,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() >= REQUEST_HEAD_BYTES_MAX {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "",
            )
            .await;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "GET" {
        return respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n",
        )
        .await;
    }
    match path {
        "/healthz" => {
            // Healthy when the router (and through it every shard) answers.
            let (tx, rx) = oneshot::channel();
            let answered = router.send(RouterRequest::Stats(tx)).await.is_ok()
                && tokio::time::timeout(HEALTH_TIMEOUT, rx)
                    .await
                    .is_ok_and(|r| r.is_ok());
            if answered {
                respond(&mut stream, "200 OK", "text/plain", "ok\n").await
            } else {
                respond(
                    &mut stream,
                    "503 Service Unavailable",
                    "text/plain",
                    "not serving\n",
                )
                .await
            }
        }
        "/metrics" => {
            let (tx, rx) = oneshot::channel();
            let stats = if router.send(RouterRequest::Stats(tx)).await.is_ok() {
                rx.await.unwrap_or_default()
            } else {
                Vec::new()
            };
            let (tx, rx) = oneshot::channel();
            let hosted = if router.send(RouterRequest::Hosted(tx)).await.is_ok() {
                rx.await.unwrap_or_default()
            } else {
                Vec::new()
            };
            let mut body = render_metrics(&stats);
            render_replication(&mut body, &hosted, local_node);
            render_limit_metrics(limits, &mut body);
            let _ = write!(
                body,
                "# HELP sluice_admin_connections_refused_total Admin HTTP connections refused: admin_connections_max ({ADMIN_CONNECTIONS_MAX}) were open\n\
                 # TYPE sluice_admin_connections_refused_total counter\n\
                 sluice_admin_connections_refused_total {}\n",
                refused.load(Ordering::Relaxed)
            );
            respond(&mut stream, "200 OK", "text/plain; version=0.0.4", &body).await
        }
        _ => {
            respond(
                &mut stream,
                "404 Not Found",
                "text/plain",
                "try /metrics or /healthz\n",
            )
            .await
        }
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// A metric name, its help text, and how to read it from a shard's stats.
type Counter = (&'static str, &'static str, fn(&ShardStats) -> u64);

/// Renders every shard's counters in the Prometheus text format.
pub fn render_metrics(stats: &[ShardStats]) -> String {
    let mut out = String::new();
    let counters: [Counter; 16] = [
        ("sluice_partitions", "Partitions open on the shard", |s| {
            s.partitions
        }),
        (
            "sluice_appends_total",
            "Batches appended and durable",
            |s| s.appends,
        ),
        (
            "sluice_append_records_total",
            "Records appended and durable",
            |s| s.append_records,
        ),
        (
            "sluice_append_bytes_total",
            "Bytes appended and durable",
            |s| s.append_bytes,
        ),
        ("sluice_append_errors_total", "Appends that failed", |s| {
            s.append_errors
        }),
        ("sluice_fetches_total", "Fetch requests answered", |s| {
            s.fetches
        }),
        (
            "sluice_fetch_bytes_total",
            "Record bytes sent to consumers",
            |s| s.fetch_bytes,
        ),
        (
            "sluice_fetch_sendfile_bytes_total",
            "Fetch bytes sent file-to-socket by sendfile",
            |s| s.sendfile_bytes,
        ),
        (
            "sluice_fetch_copied_bytes_total",
            "Fetch bytes copied through user space",
            |s| s.copied_bytes,
        ),
        ("sluice_connections_open", "Client connections open", |s| {
            s.connections_open
        }),
        (
            "sluice_connections_total",
            "Client connections accepted",
            |s| s.connections_total,
        ),
        (
            "sluice_protocol_errors_total",
            "Bad frames and refused requests",
            |s| s.protocol_errors,
        ),
        (
            "sluice_auth_failures_total",
            "Rejected credentials and requests sent before authenticating",
            |s| s.auth_failures,
        ),
        (
            "sluice_authorization_denials_total",
            "Requests refused by the ACLs (NotAuthorized)",
            |s| s.authorization_denials,
        ),
        (
            "sluice_failed_partitions",
            "Partitions fail-stopped after a failed fdatasync",
            |s| s.failed_partitions,
        ),
        (
            "sluice_replicated_bytes_total",
            "Bytes copied from partition leaders by this node's followers",
            |s| s.replicated_bytes,
        ),
    ];
    for (name, help, value) in counters {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in stats {
            let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", s.shard, value(s));
        }
    }
    let name = "sluice_fsync_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Latency of group-commit fdatasync calls\n# TYPE {name} histogram"
    );
    for s in stats {
        let mut cumulative = 0u64;
        for (i, bound_us) in FSYNC_BUCKETS_US.iter().enumerate() {
            cumulative += s.fsync_buckets.get(i).copied().unwrap_or(0);
            let le = *bound_us as f64 / 1e6;
            let _ = writeln!(
                out,
                "{name}_bucket{{shard=\"{}\",le=\"{le}\"}} {cumulative}",
                s.shard
            );
        }
        cumulative += s
            .fsync_buckets
            .get(FSYNC_BUCKETS_US.len())
            .copied()
            .unwrap_or(0);
        let _ = writeln!(
            out,
            "{name}_bucket{{shard=\"{}\",le=\"+Inf\"}} {cumulative}",
            s.shard
        );
        let _ = writeln!(
            out,
            "{name}_sum{{shard=\"{}\"}} {}",
            s.shard,
            s.fsync_sum_us as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{{shard=\"{}\"}} {cumulative}", s.shard);
    }
    out
}

/// Replication health of the partitions this node leads: how many have an
/// ISR smaller than their replica set, and how far behind each replica is
/// (as the leader tracks it).
pub fn render_replication(out: &mut String, hosted: &[HostedPartition], local_node: NodeId) {
    let led: Vec<&HostedPartition> = hosted.iter().filter(|h| h.leader == local_node).collect();
    let under = led
        .iter()
        .filter(|h| h.isr.len() < h.replicas.len())
        .count();
    let name = "sluice_under_replicated_partitions";
    let _ = writeln!(
        out,
        "# HELP {name} Partitions led by this node whose ISR is smaller than their replica set\n# TYPE {name} gauge\n{name} {under}"
    );
    let name = "sluice_replica_lag";
    let _ = writeln!(
        out,
        "# HELP {name} Records a replica lacks (leader log end minus its log end), as the partition leader tracks it\n# TYPE {name} gauge"
    );
    for h in led {
        let Some(status) = &h.status else { continue };
        for replica in &status.replicas {
            let _ = writeln!(
                out,
                "{name}{{stream=\"{}\",partition=\"{}\",replica=\"{}\"}} {}",
                h.stream, h.key.partition, replica.node, replica.lag
            );
        }
    }
}

/// `sluice_limit_exceeded_total{limit="..."}`: how often each named limit
/// refused something, node-wide (every limit listed, zeros included, so a
/// dashboard can rate() it before the first trip).
pub fn render_limit_metrics(limits: &LimitCounters, out: &mut String) {
    let name = "sluice_limit_exceeded_total";
    let _ = writeln!(
        out,
        "# HELP {name} Requests or connections refused by a named limit\n# TYPE {name} counter"
    );
    for kind in LimitKind::ALL {
        let _ = writeln!(
            out,
            "{name}{{limit=\"{}\"}} {}",
            kind.name(),
            limits.get(kind)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::nid;
    use shards::types::ShardId;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    /// Reads the whole answer of a connection (until the server closes it).
    async fn read_answer(stream: &mut TcpStream) -> String {
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut answer))
            .await
            .expect("answered within 3 s")
            .expect("read");
        String::from_utf8_lossy(&answer).into_owned()
    }

    /// Connections over the cap get 503 at once and are counted; those
    /// under it are served, and a closed one frees its slot.
    #[test]
    fn connections_over_the_cap_are_refused_at_once_and_slots_come_back() {
        runtime().block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let (router, mut router_rx) = mpsc::channel(1);
            // A router with no shards: empty stats, no partitions.
            tokio::spawn(async move {
                while let Some(request) = router_rx.recv().await {
                    match request {
                        RouterRequest::Stats(reply) => drop(reply.send(Vec::new())),
                        RouterRequest::Hosted(reply) => drop(reply.send(Vec::new())),
                        _ => {}
                    }
                }
            });
            let limits = Arc::new(LimitCounters::default());
            tokio::spawn(serve_with(listener, router, nid(1), limits, 2));

            // Two silent clients hold both slots (for up to REQUEST_TIMEOUT).
            let mut first = TcpStream::connect(addr).await.expect("connect");
            let _second = TcpStream::connect(addr).await.expect("connect");
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut third = TcpStream::connect(addr).await.expect("connect");
            let answer = read_answer(&mut third).await;
            assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
            assert!(answer.contains("admin_connections_max"), "{answer:?}");

            // The held connections are still served.
            first
                .write_all(b"GET /nowhere HTTP/1.1\r\n\r\n")
                .await
                .expect("write");
            let answer = read_answer(&mut first).await;
            assert!(answer.starts_with("HTTP/1.1 404"), "{answer:?}");

            // `first` is done: its slot serves a new client, and the
            // refusal shows in /metrics.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut fourth = TcpStream::connect(addr).await.expect("connect");
            fourth
                .write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
                .await
                .expect("write");
            let answer = read_answer(&mut fourth).await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
            assert!(
                answer.contains("sluice_admin_connections_refused_total 1\n"),
                "{answer}"
            );
        });
    }

    /// A listener whose every accept fails, counting the attempts.
    struct FailingListener {
        attempts: std::cell::Cell<u32>,
    }

    impl Accept for FailingListener {
        async fn accept_stream(&self) -> std::io::Result<TcpStream> {
            self.attempts.set(self.attempts.get() + 1);
            // Yield like a real accept would, so a loop without a pause
            // still lets the test's timeout run (and then fails it).
            tokio::task::yield_now().await;
            Err(std::io::Error::from_raw_os_error(libc::EMFILE))
        }
    }

    /// Failed accepts are retried with a growing pause, not in a spin: in
    /// 500 ms, 10 + 20 + 40 + 80 + 160 ms pauses allow about six attempts
    /// (a loop that retried at once made hundreds of thousands).
    #[test]
    fn failed_accepts_back_off() {
        let listener = FailingListener {
            attempts: std::cell::Cell::new(0),
        };
        let refused = AtomicU64::new(0);
        runtime().block_on(async {
            let _ = tokio::time::timeout(
                Duration::from_millis(500),
                accept_loop(&listener, 1, &refused, |_, _| {}),
            )
            .await;
        });
        let attempts = listener.attempts.get();
        assert!(
            (2..=8).contains(&attempts),
            "{attempts} accept attempts in 500 ms"
        );
    }

    #[test]
    fn replication_metrics_count_under_replicated_led_partitions_and_lag() {
        use crate::cores::{PartitionKey, PartitionStatus, ReplicaProgress};
        use crate::model::StreamId;
        let key = |p| PartitionKey {
            stream_id: StreamId::new(3),
            partition: p,
        };
        let status = PartitionStatus {
            replicas: vec![ReplicaProgress {
                node: nid(2),
                log_end: shards::types::Offset(7),
                lag: 3,
                in_sync: false,
            }],
            ..PartitionStatus::default()
        };
        let hosted = vec![
            HostedPartition {
                stream: "orders".into(),
                key: key(0),
                leader: nid(1),
                replicas: vec![nid(1), nid(2), nid(3)],
                isr: vec![nid(1), nid(3)],
                status: Some(status),
            },
            // Led elsewhere: not this node's to report.
            HostedPartition {
                stream: "orders".into(),
                key: key(1),
                leader: nid(2),
                replicas: vec![nid(1), nid(2), nid(3)],
                isr: vec![nid(2)],
                status: None,
            },
        ];
        let mut out = String::new();
        render_replication(&mut out, &hosted, nid(1));
        assert!(
            out.contains("sluice_under_replicated_partitions 1\n"),
            "{out}"
        );
        assert!(
            out.contains("sluice_replica_lag{stream=\"orders\",partition=\"0\",replica=\"2\"} 3\n"),
            "{out}"
        );
        assert!(!out.contains("partition=\"1\""), "{out}");
    }

    #[test]
    fn limit_metrics_name_every_limit() {
        let limits = LimitCounters::default();
        limits.record(LimitKind::Connections);
        let mut text = String::new();
        render_limit_metrics(&limits, &mut text);
        assert!(text.contains("sluice_limit_exceeded_total{limit=\"connections_max\"} 1"));
        assert!(text.contains("sluice_limit_exceeded_total{limit=\"streams_max\"} 0"));
    }

    #[test]
    fn metrics_text_has_counters_and_histogram() {
        let stats = ShardStats {
            shard: ShardId(1),
            appends: 5,
            sendfile_bytes: 1000,
            fsync_buckets: vec![1; FSYNC_BUCKETS_US.len() + 1],
            fsync_sum_us: 1500,
            ..ShardStats::default()
        };
        let text = render_metrics(&[stats]);
        assert!(text.contains("sluice_appends_total{shard=\"1\"} 5"));
        assert!(text.contains("sluice_fetch_sendfile_bytes_total{shard=\"1\"} 1000"));
        assert!(text.contains("sluice_fsync_seconds_bucket{shard=\"1\",le=\"+Inf\"} 13"));
        assert!(text.contains("sluice_fsync_seconds_count{shard=\"1\"} 13"));
    }
}
