//! A consumer that reads a partition along while faults happen, following
//! the leader through the client's routing and trying every node in turn
//! when one stops answering. What it saw must agree with the final logs:
//! consumers only ever see committed data.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use shards::types::Offset;
use sluice::client::{Client, ClientConfig, FetchStart};

use super::checker::ReplicaView;

/// Long poll of one fetch.
const FETCH_WAIT: Duration = Duration::from_millis(500);
const FETCH_BYTES: u32 = 1 << 20;
/// Pause before trying the next node after an error.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

pub struct LiveConsumer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<ReplicaView>>,
}

impl LiveConsumer {
    pub fn start(nodes: Vec<SocketAddr>, stream: &str, partition: u32) -> LiveConsumer {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, stream) = (stop.clone(), stream.to_string());
            std::thread::Builder::new()
                .name("live-consumer".into())
                .spawn(move || follow(&nodes, &stream, partition, &stop))
                .expect("spawn live consumer")
        };
        LiveConsumer {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops reading; everything seen, in the order seen.
    pub fn stop(mut self) -> ReplicaView {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .expect("live consumer thread")
            .join()
            .expect("live consumer panicked")
    }
}

impl Drop for LiveConsumer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn follow(nodes: &[SocketAddr], stream: &str, partition: u32, stop: &AtomicBool) -> ReplicaView {
    let config = ClientConfig {
        connect_timeout: Duration::from_secs(1),
        io_timeout: Duration::from_secs(3),
    };
    let mut records = Vec::new();
    let mut next = Offset(0);
    let mut node = 0usize;
    let mut client: Option<Client> = None;
    let mut errors = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let Some(c) = client.as_mut() else {
            client =
                Client::connect_with(&nodes[node % nodes.len()].to_string(), config.clone()).ok();
            node += 1;
            if client.is_none() {
                std::thread::sleep(RETRY_PAUSE);
            }
            continue;
        };
        match c.fetch(
            stream,
            partition,
            FetchStart::Offset(next),
            FETCH_BYTES,
            FETCH_WAIT,
        ) {
            Ok(result) => {
                records.extend(
                    result
                        .records
                        .into_iter()
                        .map(|r| (r.offset.0, r.value.map(|v| v.to_vec()).unwrap_or_default())),
                );
                next = result.next_offset.max(next);
            }
            Err(_) => {
                errors += 1;
                client = None;
                std::thread::sleep(RETRY_PAUSE);
            }
        }
    }
    ReplicaView {
        name: format!("live consumer (read along, {errors} fetch errors)"),
        records,
        complete: false,
    }
}
