//! The machine's limits, measured in the same run as the workloads so the
//! Sluice figures can be read as fractions of them:
//!
//! - **disk write**: group commit without the engine — `pwrite` of the
//!   workload's batches into a `fallocate`d file on the data directory's
//!   file system, at most as many beyond the last sync as the workload has
//!   in flight, while another thread runs `fdatasync` back to back (the best
//!   group commit can do with that load);
//! - **sequential read**: 1 MiB `pread`s of a file just written (page cache
//!   warm, like consumers reading recent data);
//! - **loopback TCP**: one thread writing 1 MiB chunks to a loopback socket,
//!   another reading them;
//! - **NATS echo**: a responder that answers every request at once with an
//!   ack-sized payload and stores nothing ([`EchoResponder`]); the publish
//!   workload run against it is the ceiling of any store beside NATS.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;

/// Size of the file the disk limits write and read (wrapped around).
const LIMIT_FILE_BYTES: u64 = 1 << 30;
/// Chunk of the sequential-read and loopback measurements.
const CHUNK_BYTES: usize = 1 << 20;

/// A disk write measurement.
#[derive(Clone, Debug, Serialize)]
pub struct DiskWrite {
    /// What was measured, in words.
    pub pattern: String,
    pub batch_bytes: usize,
    /// Batches in flight (written but not yet covered by a finished sync).
    pub batches_in_flight: usize,
    pub mb_per_s: f64,
    pub syncs_per_s: f64,
    /// Batches one fdatasync covered, on average.
    pub batches_per_sync: f64,
    pub sync_p50_us: f64,
    pub sync_p99_us: f64,
}

/// A bandwidth measurement.
#[derive(Clone, Debug, Serialize)]
pub struct Bandwidth {
    pub pattern: String,
    pub mb_per_s: f64,
}

/// Allocates `bytes` of `file` so writes do not extend it (as Sluice
/// preallocates segments).
#[allow(unsafe_code)] // fallocate(2)
fn fallocate(file: &File, bytes: u64) -> Result<()> {
    let len = libc::off_t::try_from(bytes).context("file size")?;
    // SAFETY: fallocate on a file descriptor we own; no memory is passed.
    let result = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if result != 0 {
        return Err(std::io::Error::last_os_error()).context("fallocate");
    }
    Ok(())
}

/// Progress shared by the writer and the syncer of [`disk_write`].
#[derive(Default)]
struct GroupCommit {
    /// Batches written (`pwrite` returned).
    written: u64,
    /// Batches covered by a finished `fdatasync`.
    synced: u64,
    done: bool,
}

/// Group commit without the engine: one thread `pwrite`s batches of
/// `batch_bytes` into a fresh `fallocate`d file in `dir`, never more than
/// `in_flight` beyond the last finished sync (as `in_flight` producers each
/// waiting for their ack would); another runs `fdatasync` back to back,
/// each covering every batch written before it started. Runs for `time`.
pub fn disk_write(
    dir: &Path,
    batch_bytes: usize,
    in_flight: usize,
    time: Duration,
) -> Result<DiskWrite> {
    assert!(in_flight > 0 && batch_bytes > 0);
    std::fs::create_dir_all(dir)?;
    let path = dir.join("limits-write.dat");
    let file = File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("create {}", path.display()))?;
    fallocate(&file, LIMIT_FILE_BYTES)?;
    file.sync_all()?;
    let state = (Mutex::new(GroupCommit::default()), Condvar::new());
    let started = Instant::now();
    let (syncs, latencies) = std::thread::scope(|scope| -> Result<(u64, Histogram<u64>)> {
        let syncer = scope.spawn(|| sync_loop(&file, &state));
        let written = write_loop(&file, &state, batch_bytes, in_flight, started + time);
        let (lock, changed) = &state;
        lock.lock().expect("group commit lock").done = true;
        changed.notify_all();
        let synced = syncer.join().expect("syncer panicked");
        written?;
        synced
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let synced_batches = state.0.lock().expect("group commit lock").synced;
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(DiskWrite {
        pattern: format!(
            "{in_flight} x {} in flight, pwrite + back-to-back fdatasync",
            crate::units::format_bytes(batch_bytes)
        ),
        batch_bytes,
        batches_in_flight: in_flight,
        mb_per_s: (synced_batches * batch_bytes as u64) as f64 / elapsed / 1e6,
        syncs_per_s: syncs as f64 / elapsed,
        batches_per_sync: if syncs > 0 {
            synced_batches as f64 / syncs as f64
        } else {
            0.0
        },
        sync_p50_us: latencies.value_at_quantile(0.5) as f64 / 1e3,
        sync_p99_us: latencies.value_at_quantile(0.99) as f64 / 1e3,
    })
}

fn write_loop(
    file: &File,
    (lock, changed): &(Mutex<GroupCommit>, Condvar),
    batch_bytes: usize,
    in_flight: usize,
    until: Instant,
) -> Result<()> {
    let batch: Vec<u8> = (0..batch_bytes).map(|i| (i * 7 % 253) as u8).collect();
    let slots = LIMIT_FILE_BYTES / batch_bytes as u64;
    let mut next = 0u64;
    while Instant::now() < until {
        {
            let mut state = lock.lock().expect("group commit lock");
            while state.written - state.synced >= in_flight as u64 {
                state = changed.wait(state).expect("group commit lock");
            }
        }
        // Wraps around in the preallocated file (overwrites are as costly).
        file.write_all_at(&batch, (next % slots) * batch_bytes as u64)?;
        next += 1;
        lock.lock().expect("group commit lock").written = next;
        changed.notify_all();
    }
    Ok(())
}

fn sync_loop(
    file: &File,
    (lock, changed): &(Mutex<GroupCommit>, Condvar),
) -> Result<(u64, Histogram<u64>)> {
    let mut latencies = Histogram::<u64>::new(3).expect("sigfigs");
    latencies.auto(true);
    let mut syncs = 0u64;
    loop {
        let target = {
            let mut state = lock.lock().expect("group commit lock");
            while state.written == state.synced && !state.done {
                state = changed.wait(state).expect("group commit lock");
            }
            if state.written == state.synced {
                return Ok((syncs, latencies));
            }
            state.written
        };
        let start = Instant::now();
        file.sync_data().context("fdatasync")?;
        let _ = latencies.record(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
        syncs += 1;
        lock.lock().expect("group commit lock").synced = target;
        changed.notify_all();
    }
}

/// Writes a file of `bytes` (no sync) in `dir`, then reads it sequentially
/// in 1 MiB preads, over and over, for `time`.
pub fn sequential_read(dir: &Path, bytes: u64, time: Duration) -> Result<Bandwidth> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("limits-read.dat");
    let mut file = File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("create {}", path.display()))?;
    let chunk = vec![0x5au8; CHUNK_BYTES];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK_BYTES as u64) as usize;
        file.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut read = 0u64;
    let started = Instant::now();
    'outer: loop {
        let mut position = 0u64;
        while position < bytes {
            let n = file.read_at(&mut buf, position)?;
            if n == 0 {
                break;
            }
            position += n as u64;
            read += n as u64;
            if started.elapsed() >= time {
                break 'outer;
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(Bandwidth {
        pattern: format!(
            "1 MiB pread of a {} file in the page cache",
            crate::units::format_bytes(bytes as usize)
        ),
        mb_per_s: read as f64 / elapsed / 1e6,
    })
}

/// One thread writes 1 MiB chunks to a loopback TCP connection, this one
/// reads them, for `time`.
pub fn loopback_tcp(time: Duration) -> Result<Bandwidth> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let writer_stop = stop.clone();
    let writer = std::thread::spawn(move || -> Result<()> {
        let mut stream = TcpStream::connect(addr)?;
        let chunk = vec![0xa5u8; CHUNK_BYTES];
        while !writer_stop.load(Ordering::Relaxed) {
            if stream.write_all(&chunk).is_err() {
                break;
            }
        }
        Ok(())
    });
    let (mut stream, _) = listener.accept()?;
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut read = 0u64;
    let started = Instant::now();
    while started.elapsed() < time {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            bail!("loopback writer stopped early");
        }
        read += n as u64;
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    drop(stream);
    writer.join().expect("loopback writer panicked")?;
    Ok(Bandwidth {
        pattern: "1 MiB write -> read over a loopback TCP connection".into(),
        mb_per_s: read as f64 / elapsed / 1e6,
    })
}

/// An in-process NATS responder that answers every message on its subjects
/// at once with a fixed payload and stores nothing.
pub struct EchoResponder {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl EchoResponder {
    /// Subscribes to `subject` (wildcards allowed) and answers with
    /// `answer`; returns once the subscription is in place.
    pub fn start(nats_url: &str, subject: String, answer: Bytes) -> Result<EchoResponder> {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let url = nats_url.to_string();
        let thread =
            std::thread::Builder::new()
                .name("nats-echo".into())
                .spawn(move || -> Result<()> {
                    let runtime = crate::js::runtime()?;
                    runtime.block_on(async move {
                        let subscribed = async {
                            let client = async_nats::ConnectOptions::new()
                                .name("sluice-bench echo")
                                .connect(url.as_str())
                                .await
                                .context("echo responder: connect to NATS")?;
                            let subscriber = client
                                .subscribe(subject)
                                .await
                                .context("echo responder: subscribe")?;
                            client.flush().await.context("echo responder: flush")?;
                            Ok::<_, anyhow::Error>((client, subscriber))
                        }
                        .await;
                        let (client, mut subscriber) = match subscribed {
                            Ok(pair) => {
                                let _ = ready_tx.send(Ok(()));
                                pair
                            }
                            Err(error) => {
                                let _ = ready_tx.send(Err(anyhow::anyhow!("{error:#}")));
                                return Err(error);
                            }
                        };
                        let mut stop_rx = stop_rx;
                        loop {
                            tokio::select! {
                                _ = &mut stop_rx => break,
                                message = subscriber.next() => {
                                    let Some(message) = message else { break };
                                    if let Some(reply) = message.reply {
                                        let _ = client.publish(reply, answer.clone()).await;
                                    }
                                }
                            }
                        }
                        let _ = client.flush().await;
                        Ok(())
                    })
                })?;
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(EchoResponder {
                stop: Some(stop_tx),
                thread: Some(thread),
            }),
            Ok(Err(error)) => Err(error),
            Err(_) => bail!("echo responder did not subscribe within 10 s"),
        }
    }

    pub fn stop(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(thread) => thread.join().expect("echo responder panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for EchoResponder {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_measure_something() {
        let dir = tempfile::tempdir().unwrap();
        let write = disk_write(dir.path(), 64 << 10, 2, Duration::from_millis(100)).unwrap();
        assert!(write.mb_per_s > 0.0 && write.syncs_per_s > 0.0);
        assert!(write.sync_p50_us <= write.sync_p99_us);
        assert!(write.batches_per_sync >= 1.0 && write.batches_per_sync <= 2.0);
        let read = sequential_read(dir.path(), 8 << 20, Duration::from_millis(50)).unwrap();
        assert!(read.mb_per_s > 0.0);
        let tcp = loopback_tcp(Duration::from_millis(50)).unwrap();
        assert!(tcp.mb_per_s > 0.0);
    }
}
