//! Throughput of one `shards::ring` SPSC ring, per direction, with 8-byte
//! items: batched (`send_many` / `recv_many`, 256 per call) and unbatched
//! (`send` / `recv`). docs/design.md §3 asks for well over 5M items/s per ring,
//! batched.
//!
//! The control core is CPU 0 (a current-thread tokio runtime on this
//! thread); shards are glommio executors started with `ShardRuntime`, on CPU 1
//! (and CPU 0 for the shard↔shard case). The consumer times from its first
//! item to its last and checks that every item arrives, in order.
//!
//! Run: `cargo bench -p shards --bench ring`.

use std::time::{Duration, Instant};

use futures::executor::block_on;
use shards::constants::RING_CAPACITY_DEFAULT;
use shards::ring::{ring, RingReceiver, RingSender};
use shards::shard::{ShardContext, ShardRuntime, ShardRuntimeConfig};

/// Items per run.
const ITEMS: u64 = 10_000_000;
/// Items per `send_many` / `recv_many` call in batched mode.
const BATCH: usize = 256;
/// The control core.
const CONTROL_CPU: usize = 0;

#[derive(Clone, Copy, Debug)]
enum Mode {
    Unbatched,
    Batched,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Unbatched => "unbatched",
            Mode::Batched => "batched (256)",
        }
    }
}

async fn produce(mut tx: RingSender<u64>, mode: Mode) {
    match mode {
        Mode::Unbatched => {
            for item in 0..ITEMS {
                tx.send(item)
                    .await
                    .expect("the consumer outlives the producer");
            }
        }
        Mode::Batched => {
            let mut batch = Vec::with_capacity(BATCH);
            let mut next = 0;
            while next < ITEMS {
                let end = (next + BATCH as u64).min(ITEMS);
                batch.extend(next..end);
                next = end;
                tx.send_many(&mut batch)
                    .await
                    .expect("the consumer outlives the producer");
            }
        }
    }
}

/// Receives every item, checks the order, returns the time from the first
/// item to the last.
async fn consume(mut rx: RingReceiver<u64>, mode: Mode) -> Duration {
    let first = rx.recv().await.expect("the producer sends ITEMS items");
    assert_eq!(first, 0);
    let started = Instant::now();
    let mut expected = 1;
    match mode {
        Mode::Unbatched => {
            while let Some(item) = rx.recv().await {
                assert_eq!(item, expected);
                expected += 1;
            }
        }
        Mode::Batched => {
            let mut batch = Vec::with_capacity(BATCH);
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                for item in batch.drain(..) {
                    assert_eq!(item, expected);
                    expected += 1;
                }
            }
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(expected, ITEMS, "every item arrived");
    elapsed
}

/// What a shard does in one run.
enum Role {
    Produce(RingSender<u64>),
    Consume(RingReceiver<u64>, RingSender<Duration>),
}

/// Starts one shard per CPU, each with its role, and waits for them.
fn run_shards(cpus: Vec<usize>, roles: Vec<Role>, mode: Mode) -> ShardRuntime {
    ShardRuntime::start_with(
        ShardRuntimeConfig::new(cpus),
        roles,
        move |_: ShardContext, role| async move {
            match role {
                Role::Produce(tx) => produce(tx, mode).await,
                Role::Consume(rx, mut report) => {
                    let elapsed = consume(rx, mode).await;
                    report
                        .send(elapsed)
                        .await
                        .expect("the bench waits for the report");
                }
            }
        },
    )
    .expect("the shards start")
}

fn tokio_to_glommio(shard_cpu: usize, mode: Mode) -> Duration {
    let (tx, rx) = ring(RING_CAPACITY_DEFAULT);
    let (report, mut reports) = ring(1);
    let shards = run_shards(vec![shard_cpu], vec![Role::Consume(rx, report)], mode);
    tokio_runtime().block_on(produce(tx, mode));
    let elapsed = block_on(reports.recv()).expect("the consumer reports");
    shards.join().expect("no shard panicked");
    elapsed
}

fn glommio_to_tokio(shard_cpu: usize, mode: Mode) -> Duration {
    let (tx, rx) = ring(RING_CAPACITY_DEFAULT);
    let shards = run_shards(vec![shard_cpu], vec![Role::Produce(tx)], mode);
    let elapsed = tokio_runtime().block_on(consume(rx, mode));
    shards.join().expect("no shard panicked");
    elapsed
}

fn glommio_to_glommio(shard_cpus: [usize; 2], mode: Mode) -> Duration {
    let (tx, rx) = ring(RING_CAPACITY_DEFAULT);
    let (report, mut reports) = ring(1);
    let roles = vec![Role::Produce(tx), Role::Consume(rx, report)];
    let shards = run_shards(shard_cpus.to_vec(), roles, mode);
    let elapsed = block_on(reports.recv()).expect("the consumer reports");
    shards.join().expect("no shard panicked");
    elapsed
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread tokio runtime")
}

/// Pins this thread (the control core) to `cpu`.
#[allow(unsafe_code)] // sched_setaffinity
fn pin_current_thread(cpu: usize) {
    // SAFETY: `cpu_set_t` is a plain bitmask; all-zero bytes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `CPU_SET` only sets a bit in `set` (it indexes a fixed array,
    // bounds-checked).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is an initialized `cpu_set_t` of the size passed; pid 0
    // is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    assert_eq!(
        rc,
        0,
        "sched_setaffinity(CPU {cpu}): {}",
        std::io::Error::last_os_error()
    );
}

fn main() {
    let cpu_count = std::thread::available_parallelism().map_or(1, |n| n.get());
    let shard_cpu = if cpu_count > 1 { 1 } else { CONTROL_CPU };
    pin_current_thread(CONTROL_CPU);
    println!(
        "ring throughput: {ITEMS} u64 items per run, ring capacity {RING_CAPACITY_DEFAULT}, \
         control on CPU {CONTROL_CPU}, shard on CPU {shard_cpu}"
    );
    println!(
        "{:<20} {:<15} {:>14} {:>9}",
        "direction", "mode", "items/s", "ns/item"
    );
    for mode in [Mode::Batched, Mode::Unbatched] {
        let runs: [(&str, Duration); 3] = [
            ("tokio -> glommio", tokio_to_glommio(shard_cpu, mode)),
            ("glommio -> tokio", glommio_to_tokio(shard_cpu, mode)),
            (
                "glommio -> glommio",
                glommio_to_glommio([CONTROL_CPU, shard_cpu], mode),
            ),
        ];
        for (direction, elapsed) in runs {
            let seconds = elapsed.as_secs_f64();
            let per_second = (ITEMS - 1) as f64 / seconds;
            let ns_per_item = seconds * 1e9 / (ITEMS - 1) as f64;
            println!(
                "{direction:<20} {:<15} {per_second:>14.0} {ns_per_item:>9.1}",
                mode.name()
            );
        }
    }
}
