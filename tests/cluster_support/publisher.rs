//! A continuous publisher: NATS requests with unique payloads to one
//! subject, a few in flight, each attempt's outcome recorded for the
//! checker (with the node and leader epoch the ack names). Never retries a
//! payload, so a second stored copy is always the system's fault.
//!
//! Plain payloads are committed under ack policy `all`; [`Mode::Envelope`]
//! wraps each payload in an envelope with the given ack policy (the stored
//! value is still the payload).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use sluice::model::NodeId;
use sluice::protocol::ack::{Ack, AckOutcome};
use sluice::protocol::envelope::{encode_envelope, AckPolicy, Envelope};
use sluice::protocol::error_code::ErrorCode;

use super::checker::{Attempt, History, Outcome};

/// Requests in flight at once, at most: above the send rate times the
/// request timeout, so requests stuck on a dead or paused leader (until
/// their timeout) never stop new ones, and the failover time is measured by
/// the first new request that succeeds.
const IN_FLIGHT_MAX: usize = 8192;
/// A new request at most this often (≤ 500/s: enough traffic for every
/// fault to hit writes in flight, little CPU on a shared CI machine).
const SEND_INTERVAL: Duration = Duration::from_millis(2);
const _: () = assert!(
    IN_FLIGHT_MAX as u128 * SEND_INTERVAL.as_millis() > REQUEST_TIMEOUT.as_millis(),
    "stuck requests must not exhaust the in-flight budget"
);
/// How long one request waits for its ack (longer than the server's own
/// ack-all wait, so a server-side timeout arrives as a `Timeout` ack).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(8);
/// Pause after "no responders" (nobody subscribed: no leader right now).
const NO_RESPONDERS_PAUSE: Duration = Duration::from_millis(20);
/// Longest the publisher waits to connect to NATS.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// How each payload is published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The payload as the message (ack policy `all`).
    Plain,
    /// The payload as the value of an envelope asking for `policy`.
    Envelope(AckPolicy),
}

/// What the test thread can see while the publisher runs.
#[derive(Default)]
struct Progress {
    /// (sent, answered) of every acked attempt, in answer order.
    acks: Vec<(Instant, Instant)>,
    attempts: u64,
}

pub struct Publisher {
    stop: Arc<AtomicBool>,
    progress: Arc<Mutex<Progress>>,
    thread: Option<JoinHandle<History>>,
    pub started: Instant,
}

impl Publisher {
    /// Starts publishing `"{prefix}-{n}"` to `subject` until stopped.
    pub fn start(nats_url: &str, subject: &str, prefix: &str) -> Publisher {
        Self::start_with(nats_url, subject, prefix, Mode::Plain)
    }

    /// Starts publishing `"{prefix}-{n}"` to `subject` in `mode`.
    pub fn start_with(nats_url: &str, subject: &str, prefix: &str, mode: Mode) -> Publisher {
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(Mutex::new(Progress::default()));
        let started = Instant::now();
        let thread = {
            let (stop, progress) = (stop.clone(), progress.clone());
            let (url, subject, prefix) = (
                nats_url.to_string(),
                subject.to_string(),
                prefix.to_string(),
            );
            std::thread::Builder::new()
                .name("publisher".into())
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("tokio runtime");
                    runtime.block_on(run(url, subject, prefix, mode, started, stop, progress))
                })
                .expect("spawn publisher")
        };
        Publisher {
            stop,
            progress,
            thread: Some(thread),
            started,
        }
    }

    pub fn acked(&self) -> usize {
        self.progress.lock().expect("progress").acks.len()
    }

    pub fn attempts(&self) -> u64 {
        self.progress.lock().expect("progress").attempts
    }

    /// Waits until `count` more acks than now arrived; false on timeout.
    pub fn wait_for_more_acks(&self, count: usize, timeout: Duration) -> bool {
        let target = self.acked() + count;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.acked() >= target {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Waits for an ack of a request sent at or after `since`; the time from
    /// `since` to that ack (the failover time when `since` is the fault).
    pub fn wait_for_ack_sent_after(&self, since: Instant, timeout: Duration) -> Option<Duration> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let progress = self.progress.lock().expect("progress");
                if let Some((_, answered)) = progress.acks.iter().find(|(sent, _)| *sent >= since) {
                    return Some(answered.duration_since(since));
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops sending, waits for the requests in flight, returns the history.
    pub fn stop(mut self) -> History {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .expect("publisher thread")
            .join()
            .expect("publisher thread panicked")
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn connect(url: &str) -> async_nats::Client {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        let options = async_nats::ConnectOptions::new()
            .request_timeout(Some(REQUEST_TIMEOUT))
            .connection_timeout(Duration::from_secs(2));
        match options.connect(url).await {
            Ok(client) => return client,
            Err(error) if Instant::now() < deadline => {
                eprintln!("publisher: connect {url}: {error}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("publisher: cannot connect to {url}: {error}"),
        }
    }
}

async fn run(
    url: String,
    subject: String,
    prefix: String,
    mode: Mode,
    started: Instant,
    stop: Arc<AtomicBool>,
    progress: Arc<Mutex<Progress>>,
) -> History {
    let nats = connect(&url).await;
    let mut history = History::default();
    let mut in_flight = FuturesUnordered::new();
    let mut sequence = 0u64;
    let mut next_send = tokio::time::Instant::now();
    // After "no responders" (nobody subscribed: no leader right now) sends
    // pause briefly instead of spinning.
    let mut pause_until = tokio::time::Instant::now();
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        if stopping && in_flight.is_empty() {
            break;
        }
        let can_send = !stopping && in_flight.len() < IN_FLIGHT_MAX;
        let send_at = next_send.max(pause_until);
        tokio::select! {
            _ = tokio::time::sleep_until(send_at), if can_send => {
                next_send = tokio::time::Instant::now() + SEND_INTERVAL;
                let payload = format!("{prefix}-{sequence:09}");
                sequence += 1;
                progress.lock().expect("progress").attempts += 1;
                let (nats, subject) = (nats.clone(), subject.clone());
                let message = match mode {
                    Mode::Plain => Bytes::from(payload.clone()),
                    Mode::Envelope(policy) => Bytes::from(
                        encode_envelope(&Envelope {
                            value: Some(Bytes::from(payload.clone())),
                            ack_policy: Some(policy),
                            ..Envelope::default()
                        })
                        .expect("encode envelope"),
                    ),
                };
                in_flight.push(async move {
                    let sent = Instant::now();
                    let result = nats.request(subject, message).await;
                    (payload, sent, Instant::now(), result)
                });
            }
            Some((payload, sent, answered, result)) = in_flight.next(), if !in_flight.is_empty() => {
                let (outcome, answered_by, leader_epoch) = outcome(result);
                if matches!(&outcome, Outcome::Unknown { reason } if reason == "no responders") {
                    pause_until = tokio::time::Instant::now() + NO_RESPONDERS_PAUSE;
                }
                if matches!(outcome, Outcome::Acked { .. }) {
                    progress.lock().expect("progress").acks.push((sent, answered));
                }
                history.attempts.push(Attempt {
                    payload: payload.into_bytes(),
                    sent: sent.duration_since(started),
                    answered: answered.duration_since(started),
                    outcome,
                    answered_by,
                    leader_epoch,
                });
            }
            // Wake up now and then to notice `stop` with nothing in flight.
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    history
}

/// What one request's answer says: the outcome, the node that answered
/// and the leader epoch of a commit.
fn outcome(
    result: Result<async_nats::Message, async_nats::RequestError>,
) -> (Outcome, Option<u64>, Option<u32>) {
    use async_nats::RequestErrorKind;
    let message = match result {
        Ok(message) => message,
        Err(error) => {
            let reason = match error.kind() {
                RequestErrorKind::NoResponders => "no responders".to_string(),
                RequestErrorKind::TimedOut => "no ack in time".to_string(),
                _ => format!("request failed: {error}"),
            };
            return (Outcome::Unknown { reason }, None, None);
        }
    };
    let ack = match Ack::decode(&message.payload) {
        Ok(ack) => ack,
        Err(error) => {
            let reason = format!("undecodable ack: {error}");
            return (Outcome::Unknown { reason }, None, None);
        }
    };
    let outcome = match ack.outcome {
        AckOutcome::Committed {
            offset,
            leader_epoch,
            ..
        } => {
            return (
                Outcome::Acked { offset: offset.0 },
                ack.node.map(NodeId::get),
                leader_epoch,
            )
        }
        AckOutcome::Failed { code, message } => {
            if code == ErrorCode::Timeout {
                Outcome::Unknown {
                    reason: format!("Timeout ack: {message}"),
                }
            } else {
                Outcome::Refused {
                    code: format!("{code:?}: {message}"),
                }
            }
        }
    };
    (outcome, ack.node.map(NodeId::get), None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster_support::procs::Nats;
    use shards::types::{Offset, TimestampMs};
    use sluice::protocol::ack::encode_ack;

    /// Answers each request by its sequence number: committed at the
    /// sequence number, NotEnoughReplicas, a Timeout ack, or bytes that are
    /// not an ack.
    async fn responder(url: String, subject: String, ready: std::sync::mpsc::Sender<()>) {
        let nats = async_nats::connect(&url).await.expect("responder connects");
        let mut requests = nats.subscribe(subject).await.expect("subscribe");
        nats.flush().await.expect("flush");
        ready.send(()).expect("ready");
        while let Some(message) = requests.next().await {
            let text = String::from_utf8(message.payload.to_vec()).expect("utf-8");
            let n: u64 = text
                .rsplit('-')
                .next()
                .and_then(|s| s.parse().ok())
                .expect("seq");
            let outcome = match n % 4 {
                0 => AckOutcome::Committed {
                    offset: Offset(n),
                    commit_timestamp_ms: TimestampMs(0),
                    leader_epoch: Some(7),
                },
                1 => AckOutcome::Failed {
                    code: ErrorCode::NotEnoughReplicas,
                    message: "isr too small".into(),
                },
                2 => AckOutcome::Failed {
                    code: ErrorCode::Timeout,
                    message: "not replicated in time".into(),
                },
                _ => {
                    let reply = message.reply.expect("reply subject");
                    nats.publish(reply, Bytes::from_static(b"not an ack"))
                        .await
                        .expect("reply");
                    continue;
                }
            };
            let ack = Ack {
                stream: "s".into(),
                partition: 0,
                correlation_id: None,
                ack_inbox: None,
                node: NodeId::new(5),
                outcome,
            };
            let reply = message.reply.expect("reply subject");
            let payload = encode_ack(&ack).expect("encode ack");
            nats.publish(reply, Bytes::from(payload))
                .await
                .expect("reply");
        }
    }

    #[test]
    fn publisher_classifies_every_kind_of_answer() {
        let nats = Nats::start(std::net::IpAddr::from([127, 0, 0, 1]));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let url = nats.url.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(responder(url, "answered".into(), ready_tx));
        });
        ready_rx
            .recv_timeout(CONNECT_TIMEOUT)
            .expect("responder ready");
        let publisher = Publisher::start(&nats.url, "answered", "p");
        assert!(
            publisher.wait_for_more_acks(25, Duration::from_secs(30)),
            "acks flow"
        );
        let since = Instant::now();
        assert!(publisher
            .wait_for_ack_sent_after(since, Duration::from_secs(30))
            .is_some());
        let history = publisher.stop();
        assert!(
            history.attempts.len() >= 100,
            "{} attempts",
            history.attempts.len()
        );
        for attempt in &history.attempts {
            let text = String::from_utf8(attempt.payload.clone()).expect("utf-8");
            let n: u64 = text
                .rsplit('-')
                .next()
                .and_then(|s| s.parse().ok())
                .expect("seq");
            match (n % 4, &attempt.outcome) {
                (0, Outcome::Acked { offset }) => {
                    assert_eq!(*offset, n);
                    assert_eq!(attempt.answered_by, Some(5), "the acking node is kept");
                    assert_eq!(attempt.leader_epoch, Some(7), "the ack's epoch is kept");
                }
                (1, Outcome::Refused { code }) => {
                    assert!(code.contains("NotEnoughReplicas"), "{code}")
                }
                (2, Outcome::Unknown { reason }) => assert!(reason.contains("Timeout"), "{reason}"),
                (3, Outcome::Unknown { reason }) => {
                    assert!(reason.contains("undecodable"), "{reason}")
                }
                (_, outcome) => panic!("attempt {n}: unexpected {outcome:?}"),
            }
            assert!(attempt.answered >= attempt.sent);
        }
        // Payloads are unique: the checker relies on it.
        let unique: std::collections::HashSet<_> =
            history.attempts.iter().map(|a| &a.payload).collect();
        assert_eq!(unique.len(), history.attempts.len());

        // Nobody subscribed: "no responders", not acked.
        let publisher = Publisher::start(&nats.url, "nobody.listens", "q");
        let deadline = Instant::now() + Duration::from_secs(30);
        while publisher.attempts() < 5 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let history = publisher.stop();
        assert!(history.attempts.len() >= 5);
        assert!(history.attempts.iter().all(
            |a| matches!(&a.outcome, Outcome::Unknown { reason } if reason == "no responders")
        ));
    }
}
