//! `sluice publish`: publishes through NATS, as any application would, and
//! prints the acks Sluice sends back.
//!
//! Each message gets its own reply subject, `<inbox>.<n>`, so acks are
//! matched to messages while up to [`IN_FLIGHT_MAX`] messages are in
//! flight. Every stream bound to the subject acks its own copy; once a
//! message has its first ack, its other acks are awaited for [`ACK_GRACE`]
//! (acks later than that are not printed). A message without any ack within
//! [`ACK_TIMEOUT`] fails the command: its outcome is unknown.

use std::collections::HashMap;
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use async_nats::StatusCode;
use bytes::Bytes;
use futures::StreamExt;
use sluice::protocol::ack::{Ack, AckOutcome};
use sluice::protocol::envelope::{encode_envelope, Envelope, Header};
use sluice::protocol::limits::NATS_PAYLOAD_BYTES_MAX;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::PublishArgs;

/// How long a message may wait for its first ack.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait, after a message's first ack, for acks from the other
/// streams bound to its subject.
pub const ACK_GRACE: Duration = Duration::from_millis(200);
/// Messages published but not yet done (awaiting their first ack or in
/// their grace period); publishing pauses at this many. Bounds the pending
/// table and the acks in flight.
const IN_FLIGHT_MAX: usize = 1024;
/// Time to establish the NATS connection.
const NATS_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Lines read ahead from stdin.
const STDIN_LINES_QUEUED_MAX: usize = 256;
/// Longest stdin line read: no NATS server accepts a larger payload.
const LINE_BYTES_MAX: usize = NATS_PAYLOAD_BYTES_MAX;

pub fn run(args: PublishArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(publish(args))
}

/// A published message not done yet.
struct Pending {
    sent_at: Instant,
    first_ack_at: Option<Instant>,
}

impl Pending {
    /// When this message times out (no ack yet) or is done (in its grace).
    fn deadline(&self) -> Instant {
        match self.first_ack_at {
            None => self.sent_at + ACK_TIMEOUT,
            Some(at) => at + ACK_GRACE,
        }
    }
}

/// The messages published and not done yet, by sequence number: waiting for
/// their first ack, or in their grace period after it.
#[derive(Default)]
struct AckTracker {
    pending: HashMap<u64, Pending>,
}

/// A message got no ack within [`ACK_TIMEOUT`].
#[derive(Debug, PartialEq, Eq)]
struct AckTimedOut;

impl AckTracker {
    fn len(&self) -> usize {
        self.pending.len()
    }

    fn sent(&mut self, seq: u64, now: Instant) {
        self.pending.insert(
            seq,
            Pending {
                sent_at: now,
                first_ack_at: None,
            },
        );
    }

    /// Records an ack for `seq` (later acks of a message change nothing).
    fn acked(&mut self, seq: u64, now: Instant) {
        if let Some(message) = self.pending.get_mut(&seq) {
            message.first_ack_at.get_or_insert(now);
        }
    }

    /// Fails if a message waited too long for its first ack, forgets the
    /// messages whose grace period is over, and returns when to look again.
    fn expire(&mut self, now: Instant) -> Result<Instant, AckTimedOut> {
        if self
            .pending
            .values()
            .any(|p| p.first_ack_at.is_none() && now >= p.deadline())
        {
            return Err(AckTimedOut);
        }
        self.pending.retain(|_, p| now < p.deadline());
        Ok(self
            .pending
            .values()
            .map(Pending::deadline)
            .min()
            .unwrap_or(now + ACK_TIMEOUT))
    }
}

async fn publish(args: PublishArgs) -> anyhow::Result<ExitCode> {
    let nats = connect_nats(&args.nats_url).await?;
    let inbox = nats.new_inbox();
    let mut replies = nats
        .subscribe(format!("{inbox}.*"))
        .await
        .context("cannot subscribe to a reply inbox on NATS")?;
    let mut source = Source::new(&args);
    let mut source_done = false;
    let mut publisher = Publisher {
        max_payload: nats.server_info().max_payload,
        nats,
        template: EnvelopeTemplate::new(&args),
        args,
        inbox,
        acks: AckTracker::default(),
        next_seq: 0,
        failed_acks: 0,
    };
    loop {
        let deadline = publisher.expire(Instant::now())?;
        if source_done && publisher.acks.len() == 0 {
            break;
        }
        tokio::select! {
            message = source.next(), if !source_done && publisher.acks.len() < IN_FLIGHT_MAX => {
                match message {
                    Some(message) => publisher.send(message?).await?,
                    None => source_done = true,
                }
            }
            reply = replies.next() => {
                let Some(reply) = reply else {
                    bail!("the NATS connection closed before every ack arrived");
                };
                publisher.on_reply(&reply)?;
            }
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
    if publisher.failed_acks > 0 {
        eprintln!(
            "{} ack(s) reported an error: those records were not stored",
            publisher.failed_acks
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

async fn connect_nats(url: &str) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .name("sluice-cli")
        .connection_timeout(NATS_CONNECT_TIMEOUT)
        .connect(url)
        .await
        .map_err(|error| {
            anyhow!(
                "cannot connect to NATS at {url}: {error} — is nats-server running, and is it the one `sluice serve` uses? (set --nats-url or SLUICE_NATS_URL)"
            )
        })
}

/// The publishing half of the command: sends messages, tracks their acks.
struct Publisher {
    nats: async_nats::Client,
    args: PublishArgs,
    /// Replies go to `<inbox>.<seq>`.
    inbox: String,
    max_payload: usize,
    template: EnvelopeTemplate,
    /// Messages not done yet; at most [`IN_FLIGHT_MAX`].
    acks: AckTracker,
    next_seq: u64,
    failed_acks: u64,
}

impl Publisher {
    async fn send(&mut self, message: Bytes) -> anyhow::Result<()> {
        let payload = self.template.wrap(message)?;
        if payload.len() > self.max_payload {
            bail!(
                "a message of {} bytes exceeds the NATS server's max_payload of {} bytes",
                payload.len(),
                self.max_payload
            );
        }
        let seq = self.next_seq;
        let subject = self.args.subject.clone();
        self.nats
            .publish_with_reply(subject, format!("{}.{seq}", self.inbox), payload)
            .await
            .with_context(|| format!("cannot publish on {}", self.args.subject))?;
        self.acks.sent(seq, Instant::now());
        self.next_seq += 1;
        Ok(())
    }

    fn on_reply(&mut self, reply: &async_nats::Message) -> anyhow::Result<()> {
        if reply.status == Some(StatusCode::NO_RESPONDERS) {
            bail!(
                "no stream is bound to {0} on NATS {1} (nothing subscribes to it) — is `sluice serve` running with this NATS server? If so, create a stream with `sluice stream create NAME --subject {0}`",
                self.args.subject,
                self.args.nats_url
            );
        }
        if !handle_reply(reply, &self.inbox, &mut self.acks) {
            self.failed_acks += 1;
        }
        Ok(())
    }

    /// See [`AckTracker::expire`], with the advice for a timeout.
    fn expire(&mut self, now: Instant) -> anyhow::Result<Instant> {
        self.acks.expire(now).map_err(|AckTimedOut| {
            anyhow!(
                "no ack within {}s: no stream bound to {}, or the server is down (the message may or may not be stored)",
                ACK_TIMEOUT.as_secs(),
                self.args.subject
            )
        })
    }
}

/// Prints one ack; returns false when it reports a failure.
fn handle_reply(reply: &async_nats::Message, inbox: &str, acks: &mut AckTracker) -> bool {
    let ack = match Ack::decode(&reply.payload) {
        Ok(ack) => ack,
        Err(error) => {
            eprintln!(
                "warning: ignoring a reply on {} that is not a Sluice ack: {error}",
                reply.subject
            );
            return true;
        }
    };
    let seq = reply
        .subject
        .strip_prefix(inbox)
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|seq| seq.parse::<u64>().ok());
    if let Some(seq) = seq {
        acks.acked(seq, Instant::now());
    }
    let line = ack_line(&ack);
    match ack.outcome {
        AckOutcome::Committed { .. } => {
            // A closed stdout (e.g. `| head -1`) must not stop the publishing.
            let _ = writeln!(io::stdout(), "{line}");
            true
        }
        AckOutcome::Failed { .. } => {
            eprintln!("{line}");
            false
        }
    }
}

/// `stream=<s> partition=<p> offset=<o>`, or `... error=<code>: <message>`.
fn ack_line(ack: &Ack) -> String {
    match &ack.outcome {
        AckOutcome::Committed { offset, .. } => format!(
            "stream={} partition={} offset={}",
            ack.stream, ack.partition, offset.0
        ),
        AckOutcome::Failed { code, message } => format!(
            "stream={} partition={} error={}: {message}",
            ack.stream,
            ack.partition,
            code.name()
        ),
    }
}

/// Key and headers given on the command line, put around each message in an
/// envelope; plain messages go out as they are.
struct EnvelopeTemplate {
    key: Option<Bytes>,
    headers: Vec<Header>,
}

impl EnvelopeTemplate {
    fn new(args: &PublishArgs) -> EnvelopeTemplate {
        EnvelopeTemplate {
            key: args.key.clone().map(Bytes::from),
            headers: args
                .headers
                .iter()
                .map(|(key, value)| Header {
                    key: key.clone(),
                    value: Some(Bytes::from(value.clone())),
                })
                .collect(),
        }
    }

    fn wrap(&self, message: Bytes) -> anyhow::Result<Bytes> {
        if self.key.is_none() && self.headers.is_empty() {
            return Ok(message);
        }
        let envelope = Envelope {
            key: self.key.clone(),
            headers: self.headers.clone(),
            value: Some(message),
            ..Envelope::default()
        };
        let payload = encode_envelope(&envelope).context("cannot build the envelope")?;
        Ok(Bytes::from(payload))
    }
}

/// The messages to publish: MESSAGE `--count` times, or each stdin line
/// `--count` times.
enum Source {
    Repeat {
        message: Bytes,
        remaining: u64,
    },
    Lines {
        lines: mpsc::Receiver<io::Result<Vec<u8>>>,
        current: Option<Bytes>,
        remaining: u64,
        count: u64,
    },
}

impl Source {
    fn new(args: &PublishArgs) -> Source {
        match &args.message {
            Some(message) => Source::Repeat {
                message: Bytes::from(message.clone()),
                remaining: args.count,
            },
            None => {
                if io::stdin().is_terminal() {
                    eprintln!("reading messages from stdin, one per line (Ctrl-D ends)");
                }
                let (sender, lines) = mpsc::channel(STDIN_LINES_QUEUED_MAX);
                std::thread::spawn(move || read_lines(io::stdin().lock(), &sender));
                Source::Lines {
                    lines,
                    current: None,
                    remaining: 0,
                    count: args.count,
                }
            }
        }
    }

    /// The next message, or `None` when there are no more. Cancel-safe: a
    /// call dropped while waiting for a line loses nothing.
    async fn next(&mut self) -> Option<io::Result<Bytes>> {
        match self {
            Source::Repeat { message, remaining } => {
                *remaining = remaining.checked_sub(1)?;
                Some(Ok(message.clone()))
            }
            Source::Lines {
                lines,
                current,
                remaining,
                count,
            } => {
                if *remaining == 0 {
                    match lines.recv().await? {
                        Ok(line) => {
                            *current = Some(Bytes::from(line));
                            *remaining = *count;
                        }
                        Err(error) => return Some(Err(error)),
                    }
                }
                *remaining -= 1;
                current.clone().map(Ok)
            }
        }
    }
}

/// Sends each line of `input` (without `\n` or `\r\n`) until end of input,
/// an error, or a line longer than [`LINE_BYTES_MAX`]. Runs on its own
/// thread: reading stdin blocks.
fn read_lines(mut input: impl BufRead, sender: &mpsc::Sender<io::Result<Vec<u8>>>) {
    loop {
        let mut line = Vec::new();
        let result = (&mut input)
            .take(LINE_BYTES_MAX as u64 + 1)
            .read_until(b'\n', &mut line);
        let item = match result {
            Ok(0) => return,
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                }
                if line.len() > LINE_BYTES_MAX {
                    Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("a line of stdin is longer than {LINE_BYTES_MAX} bytes"),
                    ))
                } else {
                    Ok(line)
                }
            }
            Err(error) => Err(io::Error::new(
                error.kind(),
                format!("cannot read stdin: {error}"),
            )),
        };
        let stop = item.is_err();
        if sender.blocking_send(item).is_err() || stop {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shards::types::{Offset, TimestampMs};
    use sluice::protocol::error_code::ErrorCode;

    #[test]
    fn ack_lines() {
        let mut ack = Ack {
            stream: "orders".into(),
            partition: 1,
            correlation_id: None,
            ack_inbox: None,
            node: None,
            outcome: AckOutcome::Committed {
                offset: Offset(41),
                commit_timestamp_ms: TimestampMs(0),
                leader_epoch: None,
            },
        };
        assert_eq!(ack_line(&ack), "stream=orders partition=1 offset=41");
        ack.outcome = AckOutcome::Failed {
            code: ErrorCode::DiskFull,
            message: "no space".into(),
        };
        assert_eq!(
            ack_line(&ack),
            "stream=orders partition=1 error=DiskFull: no space"
        );
    }

    #[test]
    fn key_and_headers_go_in_an_envelope() {
        let plain = EnvelopeTemplate {
            key: None,
            headers: Vec::new(),
        };
        assert_eq!(plain.wrap(Bytes::from_static(b"hi")).expect("wrap"), "hi");
        let keyed = EnvelopeTemplate {
            key: Some(Bytes::from_static(b"user-42")),
            headers: vec![Header {
                key: "trace".into(),
                value: Some(Bytes::from_static(b"abc")),
            }],
        };
        let payload = keyed.wrap(Bytes::from_static(b"hi")).expect("wrap");
        let envelope = Envelope::decode(&payload).expect("an envelope");
        assert_eq!(envelope.key.as_deref(), Some(&b"user-42"[..]));
        assert_eq!(envelope.value.as_deref(), Some(&b"hi"[..]));
        assert_eq!(envelope.headers.len(), 1);
    }

    #[test]
    fn acks_time_out_or_finish_after_the_grace_period() {
        let start = Instant::now();
        let mut acks = AckTracker::default();
        assert_eq!(acks.expire(start), Ok(start + ACK_TIMEOUT));
        acks.sent(0, start);
        acks.sent(1, start);
        assert_eq!(acks.expire(start), Ok(start + ACK_TIMEOUT));
        let acked_at = start + Duration::from_millis(10);
        acks.acked(0, acked_at);
        acks.acked(0, acked_at + Duration::from_millis(50)); // a second stream
        acks.acked(7, acked_at); // unknown or already done: ignored
        assert_eq!(acks.expire(acked_at), Ok(acked_at + ACK_GRACE));
        assert_eq!(acks.len(), 2);
        acks.acked(1, acked_at);
        assert_eq!(
            acks.expire(acked_at + ACK_GRACE),
            Ok(acked_at + ACK_GRACE + ACK_TIMEOUT)
        );
        assert_eq!(acks.len(), 0);
        acks.sent(2, start);
        assert_eq!(acks.expire(start + ACK_TIMEOUT), Err(AckTimedOut));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn stdin_lines_repeat_count_times() {
        let (sender, lines) = mpsc::channel(4);
        let input = io::Cursor::new(b"one\r\ntwo\n\nlast".to_vec());
        std::thread::spawn(move || read_lines(input, &sender));
        let mut source = Source::Lines {
            lines,
            current: None,
            remaining: 0,
            count: 2,
        };
        let mut messages = Vec::new();
        while let Some(message) = source.next().await {
            messages.push(message.expect("line"));
        }
        assert_eq!(
            messages,
            ["one", "one", "two", "two", "", "", "last", "last"]
        );

        let mut repeat = Source::Repeat {
            message: Bytes::from_static(b"m"),
            remaining: 3,
        };
        let mut count = 0;
        while repeat.next().await.is_some() {
            count += 1;
        }
        assert_eq!(count, 3);
    }
}
