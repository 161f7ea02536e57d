//! The shard runtime: one pinned glommio executor per data core.
//!
//! A shard owns its partitions outright, so everything it touches lives on its
//! own thread: [`ShardRuntime::start`] spawns one OS thread per configured CPU
//! (`sluice-shard-{index}`), builds a glommio `LocalExecutor` pinned there
//! (`Placement::Fixed`), and runs the caller's body in it. The body gets a
//! [`ShardContext`]: its [`ShardId`], the shard count and its CPU. Rings to
//! the control core (tokio) are made by the caller with
//! [`ring`](crate::ring::ring) and handed in as per-shard inputs
//! ([`ShardRuntime::start_with`]).
//!
//! There are no shard↔shard rings: nothing crosses from one shard to another
//! directly (a request for another shard's partition goes through the control
//! core; ARCHITECTURE.md, "The cores", says why).
//!
//! # Start-up is all-or-nothing
//!
//! Each thread first builds its executor and probes every data directory
//! (below), then reports to [`ShardRuntime::start`] and waits. Only when every
//! shard reported success are the bodies started; otherwise every thread is
//! told to exit, and `start` returns the first error. A body therefore never
//! runs next to a peer that failed to start.
//!
//! # The glommio poll-probe pitfall
//!
//! glommio 0.9 decides whether a block device supports polled I/O
//! (`IORING_SETUP_IOPOLL`) the first time *this thread* opens a file on that
//! device with `DmaFile`: it issues one O_DIRECT read at offset 0 on the poll
//! ring and caches the answer per device. If that first file is readable and
//! empty (say a new segment opened read-write with `create`), the
//! read "succeeds" with 0 bytes whether or not polling works, the device is
//! wrongly marked pollable, and every later DMA read on it fails with
//! `EOPNOTSUPP` (os error 95). A fresh data directory has nothing but empty
//! files, so [`probe_device`] writes a non-empty probe file (buffered, which
//! does not trigger the probe), opens it with `DmaFile` so that glommio's
//! probe reads real data, checks a DMA read of it, and removes it. It runs on
//! every executor (the cache is thread-local) before the body. (A write-only
//! first open, as `DmaFile::create` does, is harmless: the probe read fails
//! with `EBADF` and glommio disables polling for the device.)
//!
//! # Locked memory
//!
//! glommio registers `io_memory` bytes of locked memory for I/O buffers. Its
//! default (10 MiB) exceeds an 8 MiB `RLIMIT_MEMLOCK`, in which case it only
//! logs a warning and falls back, so the default here is
//! [`IO_MEMORY_BYTES_DEFAULT`].

use std::any::Any;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use glommio::io::{BufferedFile, DmaFile};
use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};

use crate::constants::IO_MEMORY_BYTES_DEFAULT;
use crate::types::ShardId;

/// Size of the file [`probe_device`] writes and reads back: one page, which
/// is a multiple of every logical block size (512 or 4096) O_DIRECT needs.
pub const PROBE_FILE_BYTES: usize = 4096;

/// How to start the shards.
#[derive(Clone, Debug)]
pub struct ShardRuntimeConfig {
    /// One entry per shard: the CPU its executor is pinned to. Shard `i`
    /// runs on `cpus[i]`. A CPU may repeat (two shards sharing a core, e.g.
    /// on a 2-CPU test machine).
    pub cpus: Vec<usize>,
    /// Locked memory each executor registers with io_uring for I/O buffers.
    pub io_memory_bytes: usize,
    /// Let an idle executor spin this long before it sleeps: cuts the
    /// latency of a cross-core wake (~100 µs → ~30 µs round trip on the test
    /// VMs) at the price of burning CPU. `None` sleeps at once.
    pub spin_before_park: Option<Duration>,
    /// Directories (one per data device) each executor probes before its
    /// body runs; created if missing. See the module docs.
    pub probe_dirs: Vec<PathBuf>,
}

impl ShardRuntimeConfig {
    /// One shard per entry of `cpus`, every other setting at its default.
    pub fn new(cpus: Vec<usize>) -> ShardRuntimeConfig {
        ShardRuntimeConfig {
            cpus,
            io_memory_bytes: IO_MEMORY_BYTES_DEFAULT,
            spin_before_park: None,
            probe_dirs: Vec::new(),
        }
    }
}

/// What a shard's body is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardContext {
    /// This shard's index, `0..shard_count`.
    pub shard_id: ShardId,
    /// How many shards the runtime started.
    pub shard_count: u32,
    /// The CPU this shard's executor is pinned to.
    pub cpu: usize,
}

/// Why the shard runtime could not start, or how a shard ended.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// The CPU list is empty.
    #[error("no shards configured: the CPU list is empty")]
    NoShards,
    /// A setting of the runtime is out of range.
    #[error("invalid shard runtime configuration: {field} {reason}")]
    InvalidConfig {
        /// The setting.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The per-shard inputs (one per shard) do not match the shard count.
    #[error("{got} per-shard inputs given for {expected} shards")]
    InputCount {
        /// The number of shards.
        expected: usize,
        /// The number of inputs given.
        got: usize,
    },
    /// The OS refused to start a shard's thread.
    #[error("spawning the thread of shard {shard}: {source}")]
    Spawn {
        /// The shard.
        shard: ShardId,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// glommio could not build the shard's executor (io_uring set-up,
    /// pinning, locked memory).
    #[error("building the glommio executor of shard {shard} on CPU {cpu}: {source}")]
    Executor {
        /// The shard.
        shard: ShardId,
        /// The CPU it was to be pinned to.
        cpu: usize,
        /// The error glommio reported.
        #[source]
        source: io::Error,
    },
    /// The device probe (docs/design.md §13) could not write or read its file.
    #[error("shard {shard}: device probe failed to {op} {path}: {source}")]
    Probe {
        /// The shard.
        shard: ShardId,
        /// The step that failed.
        op: &'static str,
        /// The probe file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The device probe read back something other than it wrote.
    #[error("shard {shard}: device probe read {read} bytes of {path} that differ from the {expected} written")]
    ProbeMismatch {
        /// The shard.
        shard: ShardId,
        /// The probe file.
        path: PathBuf,
        /// Bytes read back.
        read: usize,
        /// Bytes written.
        expected: usize,
    },
    /// The shard's body panicked.
    #[error("shard {shard} panicked: {message}")]
    Panicked {
        /// The shard.
        shard: ShardId,
        /// The panic message, when it was a string.
        message: String,
    },
}

/// The running shards. Dropping it without [`ShardRuntime::join`] detaches
/// the threads.
#[derive(Debug)]
pub struct ShardRuntime {
    threads: Vec<(ShardId, JoinHandle<()>)>,
}

/// A shard thread between spawn and the start decision.
struct Starting {
    shard: ShardId,
    thread: JoinHandle<()>,
    ready: mpsc::Receiver<Result<(), ShardError>>,
    go: mpsc::Sender<bool>,
}

/// Everything a shard thread needs to build its executor.
struct ExecutorSetup {
    shard: ShardId,
    cpu: usize,
    io_memory_bytes: usize,
    spin_before_park: Option<Duration>,
    probe_dirs: Vec<PathBuf>,
}

impl ShardRuntime {
    /// Starts one shard per entry of `config.cpus`, each running
    /// `body(context)`. See [`ShardRuntime::start_with`].
    pub fn start<F, Fut>(config: ShardRuntimeConfig, body: F) -> Result<ShardRuntime, ShardError>
    where
        F: FnOnce(ShardContext) -> Fut + Send + Clone + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let inputs = vec![(); config.cpus.len()];
        ShardRuntime::start_with(config, inputs, move |context, ()| body(context))
    }

    /// Starts one shard per entry of `config.cpus`; shard `i` runs
    /// `body(context, inputs[i])` (e.g. its ends of the control-core rings).
    ///
    /// Blocks until every executor is built and has probed
    /// `config.probe_dirs`; returns the first failure, in which case no body
    /// runs. The bodies run until they return; tasks they spawn and did not
    /// await are dropped with the executor.
    pub fn start_with<I, F, Fut>(
        config: ShardRuntimeConfig,
        inputs: Vec<I>,
        body: F,
    ) -> Result<ShardRuntime, ShardError>
    where
        I: Send + 'static,
        F: FnOnce(ShardContext, I) -> Fut + Send + Clone + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        validate(&config, inputs.len())?;
        let shard_count = config.cpus.len();
        let mut starting = Vec::with_capacity(shard_count);
        for (index, (&cpu, input)) in config.cpus.iter().zip(inputs).enumerate() {
            let shard = shard_id_of(index);
            let context = ShardContext {
                shard_id: shard,
                shard_count: shard_id_of(shard_count).0,
                cpu,
            };
            let setup = ExecutorSetup {
                shard,
                cpu,
                io_memory_bytes: config.io_memory_bytes,
                spin_before_park: config.spin_before_park,
                probe_dirs: config.probe_dirs.clone(),
            };
            let (ready_tx, ready) = mpsc::channel();
            let (go, go_rx) = mpsc::channel();
            let body = body.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("sluice-shard-{index}"))
                .spawn(move || run_shard(setup, context, input, body, ready_tx, go_rx));
            match spawned {
                Ok(thread) => starting.push(Starting {
                    shard,
                    thread,
                    ready,
                    go,
                }),
                Err(source) => {
                    abort(starting);
                    return Err(ShardError::Spawn { shard, source });
                }
            }
        }
        rendezvous(starting)
    }

    /// How many shards run.
    pub fn shard_count(&self) -> usize {
        self.threads.len()
    }

    /// Waits for every shard's body to return. Reports the first shard that
    /// panicked (after waiting for all of them).
    pub fn join(self) -> Result<(), ShardError> {
        let mut first_error = None;
        for (shard, thread) in self.threads {
            if let Err(payload) = thread.join() {
                first_error.get_or_insert(ShardError::Panicked {
                    shard,
                    message: panic_message(payload.as_ref()),
                });
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

fn validate(config: &ShardRuntimeConfig, input_count: usize) -> Result<(), ShardError> {
    if config.cpus.is_empty() {
        return Err(ShardError::NoShards);
    }
    if u32::try_from(config.cpus.len()).is_err() {
        return Err(ShardError::InvalidConfig {
            field: "cpus",
            reason: "lists more shards than a ShardId can number",
        });
    }
    if input_count != config.cpus.len() {
        return Err(ShardError::InputCount {
            expected: config.cpus.len(),
            got: input_count,
        });
    }
    Ok(())
}

/// `index` as a [`ShardId`]. Shard counts are checked to fit a `u32` in
/// `validate`, before any index is converted.
fn shard_id_of(index: usize) -> ShardId {
    ShardId(u32::try_from(index).expect("shard count validated to fit u32"))
}

/// Waits for every shard to report, then starts all bodies or none.
fn rendezvous(starting: Vec<Starting>) -> Result<ShardRuntime, ShardError> {
    let mut failure = None;
    let mut died = false;
    for shard in &starting {
        match shard.ready.recv() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                failure.get_or_insert(error);
            }
            // The thread ended without reporting: it panicked; `abort`
            // collects the message.
            Err(mpsc::RecvError) => died = true,
        }
    }
    if failure.is_some() || died {
        let panicked = abort(starting);
        return Err(failure.or(panicked).unwrap_or(ShardError::Panicked {
            shard: ShardId(0),
            message: "a shard thread exited during start-up".to_owned(),
        }));
    }
    let threads = starting
        .into_iter()
        .map(|shard| {
            // A send fails only if the thread is gone, which `join` reports.
            let _ = shard.go.send(true);
            (shard.shard, shard.thread)
        })
        .collect();
    Ok(ShardRuntime { threads })
}

/// Tells every starting shard not to run its body and waits for the threads;
/// returns the first panic among them, if any.
fn abort(starting: Vec<Starting>) -> Option<ShardError> {
    let mut first_panic = None;
    for shard in starting {
        // A thread that already exited has dropped its receiver; fine.
        let _ = shard.go.send(false);
        if let Err(payload) = shard.thread.join() {
            first_panic.get_or_insert(ShardError::Panicked {
                shard: shard.shard,
                message: panic_message(payload.as_ref()),
            });
        }
    }
    first_panic
}

/// The body of a shard thread: build, probe, report, wait for the decision,
/// run the body.
fn run_shard<I, F, Fut>(
    setup: ExecutorSetup,
    context: ShardContext,
    input: I,
    body: F,
    ready: mpsc::Sender<Result<(), ShardError>>,
    go: mpsc::Receiver<bool>,
) where
    F: FnOnce(ShardContext, I) -> Fut,
    Fut: Future<Output = ()>,
{
    let started = build_executor(&setup).and_then(|executor| {
        executor.run(probe_all(&setup.probe_dirs, setup.shard))?;
        Ok(executor)
    });
    let executor = match started {
        Ok(executor) => {
            // A failed send means `start` is gone; `go` below then fails too.
            let _ = ready.send(Ok(()));
            executor
        }
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    if go.recv() != Ok(true) {
        return;
    }
    tracing::info!(shard = %setup.shard, cpu = setup.cpu, "shard started");
    executor.run(body(context, input));
    tracing::debug!(shard = %setup.shard, "shard body returned");
}

fn build_executor(setup: &ExecutorSetup) -> Result<LocalExecutor, ShardError> {
    let mut builder = LocalExecutorBuilder::new(Placement::Fixed(setup.cpu))
        .io_memory(setup.io_memory_bytes)
        .name(&format!("sluice-shard-{}", setup.shard));
    if let Some(spin) = setup.spin_before_park {
        builder = builder.spin_before_park(spin);
    }
    builder.make().map_err(|source| ShardError::Executor {
        shard: setup.shard,
        cpu: setup.cpu,
        source: source.into(),
    })
}

async fn probe_all(dirs: &[PathBuf], shard: ShardId) -> Result<(), ShardError> {
    for dir in dirs {
        probe_device(dir, shard).await?;
    }
    Ok(())
}

/// Makes glommio's per-device poll probe (see the module docs) read real
/// data: creates `dir` if missing, writes a [`PROBE_FILE_BYTES`] file
/// `.sluice-probe-{shard}` in it (buffered, which does not probe), opens it
/// with `DmaFile` (which probes), checks a DMA read of it, and removes it.
///
/// Must run on the executor that will do the DMA I/O, before it opens any
/// other file on that device with `DmaFile`. The file name carries the shard
/// so shards sharing a directory do not collide.
pub async fn probe_device(dir: &Path, shard: ShardId) -> Result<(), ShardError> {
    create_dir_all(dir, shard).await?;
    let path = dir.join(format!(".sluice-probe-{shard}"));
    let pattern = probe_pattern(shard);
    let checked = write_then_dma_read(&path, shard, &pattern).await;
    let removed = glommio::io::remove(&path)
        .await
        .map_err(|source| probe_error(shard, "remove", &path, source.into()));
    checked?;
    removed?;
    tracing::debug!(shard = %shard, dir = %dir.display(), "device probed");
    Ok(())
}

async fn write_then_dma_read(
    path: &Path,
    shard: ShardId,
    pattern: &[u8],
) -> Result<(), ShardError> {
    let io_error =
        |op, source: glommio::GlommioError<()>| probe_error(shard, op, path, source.into());

    let file = BufferedFile::create(path)
        .await
        .map_err(|e| io_error("create", e))?;
    let written = file
        .write_at(pattern.to_vec(), 0)
        .await
        .map_err(|e| io_error("write", e));
    file.close().await.map_err(|e| io_error("close", e))?;
    if written? != pattern.len() {
        return Err(mismatch(shard, path, 0));
    }

    let file = DmaFile::open(path)
        .await
        .map_err(|e| io_error("dma_open", e))?;
    let read = file
        .read_at_aligned(0, pattern.len())
        .await
        .map_err(|e| io_error("dma_read", e));
    file.close().await.map_err(|e| io_error("close", e))?;
    let read = read?;
    if &read[..] != pattern {
        return Err(mismatch(shard, path, read.len()));
    }
    Ok(())
}

/// Creates `dir` and its missing ancestors with glommio (no blocking
/// `std::fs` call on the executor).
async fn create_dir_all(dir: &Path, shard: ShardId) -> Result<(), ShardError> {
    let mut pending = vec![dir];
    // Bounded: each step creates one directory (pop) or moves to a parent
    // (push), and a path has finitely many ancestors.
    while let Some(&next) = pending.last() {
        match glommio::io::Directory::create(next).await {
            Ok(created) => {
                created
                    .close()
                    .await
                    .map_err(|source| probe_error(shard, "close directory", next, source.into()))?;
                pending.pop();
            }
            Err(source) => {
                let source = io::Error::from(source);
                match next.parent() {
                    Some(parent)
                        if source.kind() == io::ErrorKind::NotFound
                            && !parent.as_os_str().is_empty() =>
                    {
                        pending.push(parent)
                    }
                    _ => return Err(probe_error(shard, "create directory", next, source)),
                }
            }
        }
    }
    Ok(())
}

/// Non-constant bytes, so a read that returns stale or zeroed data fails.
fn probe_pattern(shard: ShardId) -> Vec<u8> {
    (0..PROBE_FILE_BYTES)
        .map(|i| (i as u32 ^ shard.0.wrapping_mul(0x9E37_79B9)) as u8)
        .collect()
}

fn probe_error(shard: ShardId, op: &'static str, path: &Path, source: io::Error) -> ShardError {
    ShardError::Probe {
        shard,
        op,
        path: path.to_owned(),
        source,
    }
}

fn mismatch(shard: ShardId, path: &Path, read: usize) -> ShardError {
    ShardError::ProbeMismatch {
        shard,
        path: path.to_owned(),
        read,
        expected: PROBE_FILE_BYTES,
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::executor::block_on;
    use glommio::io::{DmaStreamWriterBuilder, ImmutableFileBuilder, OpenOptions};

    use super::*;
    use crate::ring::ring;

    /// Tests share the 8 MiB RLIMIT_MEMLOCK with each other and with other
    /// test binaries, so each executor registers only 256 KiB.
    fn test_config(cpus: Vec<usize>) -> ShardRuntimeConfig {
        ShardRuntimeConfig {
            io_memory_bytes: 256 << 10,
            ..ShardRuntimeConfig::new(cpus)
        }
    }

    /// Starts `cpus.len()` shards; each reports the context it was given to
    /// the test thread over its own ring.
    fn contexts(cpus: Vec<usize>) -> Vec<ShardContext> {
        let shard_count = cpus.len();
        let (reports, mut inbox): (Vec<_>, Vec<_>) =
            (0..shard_count).map(|_| ring::<ShardContext>(1)).unzip();
        let runtime = ShardRuntime::start_with(
            test_config(cpus),
            reports,
            |context, mut report| async move {
                report.send(context).await.expect("the test thread listens");
            },
        )
        .expect("the shards start");
        let received = inbox
            .iter_mut()
            .map(|receiver| block_on(receiver.recv()).expect("a report per shard"))
            .collect();
        runtime.join().expect("no shard panicked");
        received
    }

    fn expected(cpus: &[usize]) -> Vec<ShardContext> {
        let shard_count = u32::try_from(cpus.len()).expect("few shards");
        (0..shard_count)
            .zip(cpus)
            .map(|(shard, &cpu)| ShardContext {
                shard_id: ShardId(shard),
                shard_count,
                cpu,
            })
            .collect()
    }

    #[test]
    fn every_shard_gets_its_id_on_cpus_0_and_1() {
        assert_eq!(contexts(vec![0, 1]), expected(&[0, 1]));
    }

    #[test]
    fn two_shards_can_share_one_cpu() {
        assert_eq!(contexts(vec![0, 0]), expected(&[0, 0]));
    }

    #[test]
    fn three_shards_run_on_two_cpus() {
        assert_eq!(contexts(vec![0, 1, 1]), expected(&[0, 1, 1]));
    }

    #[test]
    fn a_single_shard_runs() {
        assert_eq!(contexts(vec![1]), expected(&[1]));
    }

    /// docs/design.md §13: starting from an empty data directory must work. The
    /// first file the body opens with DMA is a fresh, empty, readable file;
    /// without the probe, glommio marks the device pollable from a 0-byte
    /// read and the DMA reads below fail with EOPNOTSUPP on devices without
    /// poll queues (reproduced on the 2-CPU test VM with `probe_dirs` empty).
    #[test]
    fn dma_io_works_on_a_fresh_file_in_an_empty_data_dir() {
        let temp = tempfile::tempdir().expect("a temp dir");
        let data_dir = temp.path().join("data").join("nested");
        let config = ShardRuntimeConfig {
            probe_dirs: vec![data_dir.clone()],
            ..test_config(vec![0, 1])
        };
        let (reports, mut inbox): (Vec<_>, Vec<_>) =
            (0..2).map(|_| ring::<Result<(), String>>(1)).unzip();
        let dir = data_dir.clone();
        let runtime = ShardRuntime::start_with(
            config,
            reports,
            move |context: ShardContext, mut report| async move {
                let outcome = write_and_read_fresh_file(&dir, context.shard_id).await;
                report
                    .send(outcome.map_err(|error| error.to_string()))
                    .await
                    .expect("the test thread listens");
            },
        )
        .expect("the shards start and probe the empty dir");
        for receiver in &mut inbox {
            assert_eq!(block_on(receiver.recv()), Some(Ok(())));
        }
        runtime.join().expect("no panic");
        let mut left: Vec<_> = std::fs::read_dir(&data_dir)
            .expect("the probe created the data dir")
            .map(|entry| {
                entry
                    .expect("a dir entry")
                    .file_name()
                    .into_string()
                    .expect("utf-8")
            })
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["fresh-0.log", "fresh-1.log"],
            "probe files are removed"
        );
    }

    async fn write_and_read_fresh_file(
        dir: &Path,
        shard: ShardId,
    ) -> Result<(), glommio::GlommioError<()>> {
        let path = dir.join(format!("fresh-{shard}.log"));
        let payload: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        // Readable and writable, like a segment: this is the open that makes
        // glommio probe polled I/O on an empty file. (`DmaFile::create` is
        // write-only; its probe read fails with EBADF, which glommio takes as
        // "not pollable", so it would not show the pitfall.)
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .dma_open(&path)
            .await?;
        let mut page = file.alloc_dma_buffer(4096);
        page.as_bytes_mut().copy_from_slice(&payload[..4096]);
        assert_eq!(file.write_at(page, 0).await?, 4096);
        let first_page = file.read_at_aligned(0, 4096).await?;
        assert_eq!(&first_page[..], &payload[..4096]);
        let mut writer = DmaStreamWriterBuilder::new(file)
            .with_buffer_size(8192)
            .build();
        futures::AsyncWriteExt::write_all(&mut writer, &payload).await?;
        futures::AsyncWriteExt::close(&mut writer).await?;

        let file = DmaFile::open(&path).await?;
        let aligned = file.read_at_aligned(0, 8192).await?;
        assert_eq!(&aligned[..], &payload[..8192]);
        let tail = file.read_at(8000, 2000).await?;
        assert_eq!(&tail[..], &payload[8000..]);
        file.close().await?;

        // The immutable-file path opens with DmaFile as well.
        let sealed = ImmutableFileBuilder::new(&path).build_existing().await?;
        let middle = sealed.read_at(4000, 100).await?;
        assert_eq!(&middle[..], &payload[4000..4100]);
        sealed.close().await?;
        Ok(())
    }

    #[test]
    fn probe_device_leaves_no_file_behind() {
        let temp = tempfile::tempdir().expect("a temp dir");
        let dir = temp.path().to_owned();
        let outcome = LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(256 << 10)
            .spawn(move || async move { probe_device(&dir, ShardId(7)).await })
            .expect("an executor")
            .join()
            .expect("the executor ran");
        assert!(outcome.is_ok(), "{outcome:?}");
        assert_eq!(std::fs::read_dir(temp.path()).expect("readable").count(), 0);
    }

    #[test]
    fn a_probe_failure_stops_every_shard_before_its_body_runs() {
        let temp = tempfile::tempdir().expect("a temp dir");
        let not_a_dir = temp.path().join("file");
        std::fs::write(&not_a_dir, b"x").expect("a plain file");
        let config = ShardRuntimeConfig {
            probe_dirs: vec![not_a_dir.join("data")],
            ..test_config(vec![0, 1])
        };
        let (report, mut inbox) = ring::<()>(4);
        let reports = vec![Some(report), None];
        let error =
            ShardRuntime::start_with(config, reports, |_: ShardContext, report| async move {
                if let Some(mut report) = report {
                    let _ = report.send(()).await;
                }
            })
            .expect_err("the probe cannot create a directory under a file");
        assert!(
            matches!(
                error,
                ShardError::Probe {
                    op: "create directory",
                    ..
                }
            ),
            "{error}"
        );
        assert_eq!(block_on(inbox.recv()), None, "no body ran");
    }

    #[test]
    fn start_rejects_bad_configurations() {
        let body = |_: ShardContext| async {};
        assert!(matches!(
            ShardRuntime::start(test_config(vec![]), body),
            Err(ShardError::NoShards)
        ));
        let wrong_inputs = ShardRuntime::start_with(
            test_config(vec![0, 1]),
            vec![()],
            |_: ShardContext, ()| async {},
        );
        assert!(matches!(
            wrong_inputs,
            Err(ShardError::InputCount {
                expected: 2,
                got: 1
            })
        ));
        let no_such_cpu = ShardRuntime::start(test_config(vec![0, 100_000]), body);
        assert!(
            matches!(no_such_cpu, Err(ShardError::Executor { cpu: 100_000, .. })),
            "{no_such_cpu:?}"
        );
    }

    #[test]
    fn join_reports_a_panicking_shard() {
        let runtime = ShardRuntime::start(
            test_config(vec![0, 1]),
            |context: ShardContext| async move {
                if context.shard_id == ShardId(1) {
                    panic!("shard one gives up");
                }
            },
        )
        .expect("the shards start");
        match runtime.join() {
            Err(ShardError::Panicked { shard, message }) => {
                assert_eq!(shard, ShardId(1));
                assert_eq!(message, "shard one gives up");
            }
            other => panic!("expected a panic report, got {other:?}"),
        }
    }

    #[test]
    fn spin_before_park_is_accepted() {
        let config = ShardRuntimeConfig {
            spin_before_park: Some(Duration::from_micros(50)),
            ..test_config(vec![1])
        };
        let runtime =
            ShardRuntime::start(config, |_: ShardContext| async {}).expect("the shard starts");
        assert_eq!(runtime.shard_count(), 1);
        runtime.join().expect("no panic");
    }
}
