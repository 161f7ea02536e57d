//! `sluice consume`: a fetch loop over the TCP protocol, printing records
//! as text or JSON lines.

use std::borrow::Cow;
use std::io::{self, BufWriter, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine as _;
use serde::ser::{Serialize, SerializeMap, Serializer};
use shards::batch::DecodedRecord;
use shards::types::{Offset, TimestampMs};
use sluice::client::{Client, ClientError, FetchStart};
use sluice::control::bridge::{REPLY_HEADER, SUBJECT_HEADER};

use super::hints::{connect, explain, Subject, Target};
use super::parse::StartAt;
use super::{ConsumeArgs, Format};

/// Long-poll wait of one fetch under --follow: the server answers as soon as
/// records arrive, so this only bounds how long an idle fetch lasts.
const FOLLOW_WAIT: Duration = Duration::from_secs(5);
/// `max_bytes` of one fetch (the server still sends at least one batch).
const FETCH_BYTES: u32 = 1 << 20;
/// Long-poll wait under --follow with --cursor: shorter, so that Ctrl-C
/// (seen between fetches) stores the position and exits within a second.
const FOLLOW_WAIT_WITH_CURSOR: Duration = Duration::from_secs(1);
/// A --cursor consumer stores its position after this many records...
const CHECKPOINT_RECORDS: u64 = 1000;
/// ...or this long since the last store, whichever comes first, and at exit.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);
/// Exit status after Ctrl-C (128 + SIGINT, as shells report it).
const EXIT_INTERRUPTED: u8 = 130;

pub fn run(server: &Target, args: ConsumeArgs) -> anyhow::Result<ExitCode> {
    let about = Subject {
        stream: Some(&args.stream),
        partition: Some(args.partition),
    };
    let mut client = connect(server)?;
    check_partition(&mut client, &args, about)?;
    if args.cursor.is_some() {
        // Ctrl-C stops at the next fetch boundary so the position is stored.
        interrupt::install();
    }
    let stdout = io::stdout().lock();
    let mut out = BufWriter::new(stdout);
    match consume(&mut client, &args, about, &mut out) {
        Err(error) if is_broken_pipe(&error) => Ok(ExitCode::SUCCESS),
        Err(error) => Err(error),
        Ok(()) if interrupt::happened() => Ok(ExitCode::from(EXIT_INTERRUPTED)),
        Ok(()) => Ok(ExitCode::SUCCESS),
    }
}

/// Fails early, with advice, when the stream or partition does not exist
/// (and learns the partition's port on the way).
fn check_partition(
    client: &mut Client,
    args: &ConsumeArgs,
    about: Subject<'_>,
) -> anyhow::Result<()> {
    let metadata = client
        .metadata_for(&[&args.stream])
        .map_err(|error| explain(error, about))?;
    let Some(stream) = metadata.stream(&args.stream) else {
        bail!("the server did not describe stream {}", args.stream);
    };
    if let Some(code) = stream.error {
        let error = sluice::client::ClientError::Server {
            code,
            message: String::new(),
            right_port: None,
        };
        return Err(explain(error, about));
    }
    let count = stream.partitions.len();
    if !stream
        .partitions
        .iter()
        .any(|p| p.partition == args.partition)
    {
        bail!(
            "stream {} has no partition {} (it has {count}: 0..{}) — pick one with --partition",
            args.stream,
            args.partition,
            count.saturating_sub(1)
        );
    }
    Ok(())
}

fn consume(
    client: &mut Client,
    args: &ConsumeArgs,
    about: Subject<'_>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let from = match args.from {
        StartAt::Earliest => FetchStart::Earliest,
        StartAt::Latest => FetchStart::Latest,
        StartAt::Offset(offset) => FetchStart::Offset(Offset(offset)),
        StartAt::Time(ms) => FetchStart::Timestamp(TimestampMs(ms)),
    };
    let mut cursor = match &args.cursor {
        Some(id) => Some(Checkpoint::resume(client, id, args, about)?),
        None => None,
    };
    let mut start = cursor
        .as_ref()
        .and_then(|c| c.stored)
        .map_or(from, FetchStart::Offset);
    let wait = match (args.follow, &cursor) {
        (false, _) => Duration::ZERO,
        (true, None) => FOLLOW_WAIT,
        (true, Some(_)) => FOLLOW_WAIT_WITH_CURSOR,
    };
    // Without --follow: stop at the high watermark seen by the first fetch.
    let mut end: Option<Offset> = None;
    let mut remaining = args.count;
    let mut printed = 0u64;
    loop {
        let fetched = match client.fetch(&args.stream, args.partition, start, FETCH_BYTES, wait) {
            Ok(fetched) => fetched,
            Err(error @ ClientError::OffsetOutOfRange { .. })
                if printed == 0 && cursor.as_ref().is_some_and(|c| c.stored.is_some()) =>
            {
                // The stored position fell out of the log (retention).
                eprintln!("{error}: the stored cursor is outside the log; starting at --from");
                start = from;
                if let Some(cursor) = cursor.as_mut() {
                    cursor.stored = None;
                }
                continue;
            }
            Err(error) => return Err(explain(error, about)),
        };
        let end = *end.get_or_insert(fetched.high_watermark);
        // The next offset to consume once this fetch's printed records are out.
        let mut position = fetched.next_offset;
        let mut taken = 0u64;
        for record in &fetched.records {
            if (!args.follow && record.offset >= end) || remaining == Some(0) {
                position = record.offset;
                break;
            }
            write_record(out, record, args.format)?;
            printed += 1;
            taken += 1;
            remaining = remaining.map(|n| n - 1);
        }
        out.flush().context("write to stdout")?;
        if let Some(cursor) = cursor.as_mut() {
            cursor.consumed(client, position, taken, about)?;
        }
        let progressed = FetchStart::Offset(fetched.next_offset) != start;
        start = FetchStart::Offset(fetched.next_offset);
        let at_end = !args.follow && (fetched.next_offset >= end || !progressed);
        if remaining == Some(0) || at_end || interrupt::happened() {
            break;
        }
    }
    if let Some(cursor) = cursor.as_mut() {
        cursor.store(client, about)?;
    }
    if printed == 0 && args.from == StartAt::Latest && !args.follow && args.cursor.is_none() {
        eprintln!(
            "no records: --from latest reads only new records; add --follow to wait for them"
        );
    }
    Ok(())
}

/// A `--cursor` consumer's stored position: read at start, written every
/// [`CHECKPOINT_RECORDS`] records or [`CHECKPOINT_INTERVAL`] (whichever
/// comes first) and at exit — not per record, which would double the
/// server's write load.
struct Checkpoint<'a> {
    id: &'a str,
    stream: &'a str,
    partition: u32,
    /// What the server holds (`None`: nothing stored yet).
    stored: Option<Offset>,
    /// Next offset to consume, as far as printed.
    position: Option<Offset>,
    unstored_records: u64,
    last_store: Instant,
}

impl<'a> Checkpoint<'a> {
    fn resume(
        client: &mut Client,
        id: &'a str,
        args: &'a ConsumeArgs,
        about: Subject<'_>,
    ) -> anyhow::Result<Checkpoint<'a>> {
        let stored = client
            .fetch_cursor(id, &args.stream, args.partition)
            .map_err(|error| explain(error, about))?;
        Ok(Checkpoint {
            id,
            stream: &args.stream,
            partition: args.partition,
            stored,
            position: stored,
            unstored_records: 0,
            last_store: Instant::now(),
        })
    }

    /// Records `taken` more records consumed, up to `position`; stores it
    /// when a checkpoint is due.
    fn consumed(
        &mut self,
        client: &mut Client,
        position: Offset,
        taken: u64,
        about: Subject<'_>,
    ) -> anyhow::Result<()> {
        self.position = Some(position);
        self.unstored_records += taken;
        if self.unstored_records >= CHECKPOINT_RECORDS
            || self.last_store.elapsed() >= CHECKPOINT_INTERVAL
        {
            self.store(client, about)?;
        }
        Ok(())
    }

    /// Stores the position if it moved since the last store.
    fn store(&mut self, client: &mut Client, about: Subject<'_>) -> anyhow::Result<()> {
        self.last_store = Instant::now();
        let Some(position) = self.position.filter(|p| Some(*p) != self.stored) else {
            return Ok(());
        };
        client
            .set_cursor(self.id, self.stream, self.partition, position)
            .map_err(|error| explain(error, about))
            .with_context(|| format!("store cursor {} at offset {}", self.id, position.0))?;
        self.stored = Some(position);
        self.unstored_records = 0;
        Ok(())
    }
}

/// SIGINT/SIGTERM → a flag the consume loop checks between fetches, so a
/// `--cursor` consumer stores its position before it exits. A second
/// signal, once the flag is set, takes the signal's default action (the
/// process ends at once), as a one-shot handler did.
mod interrupt {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, OnceLock};

    static INTERRUPTED: OnceLock<Arc<AtomicBool>> = OnceLock::new();

    fn flag() -> &'static Arc<AtomicBool> {
        INTERRUPTED.get_or_init(|| Arc::new(AtomicBool::new(false)))
    }

    pub fn install() {
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            // Registered first so it sees the flag as it was before this
            // signal: set already means this is the second one.
            let registered =
                signal_hook::flag::register_conditional_default(signal, Arc::clone(flag()))
                    .and_then(|_| signal_hook::flag::register(signal, Arc::clone(flag())));
            if let Err(error) = registered {
                eprintln!(
                    "warning: cannot catch signal {signal} ({error}): the cursor is stored only at the end"
                );
            }
        }
    }

    pub fn happened() -> bool {
        flag().load(Ordering::SeqCst)
    }
}

fn write_record(
    out: &mut impl Write,
    record: &DecodedRecord,
    format: Format,
) -> anyhow::Result<()> {
    let line = match format {
        Format::Text => text_line(record),
        Format::Json => json_line(record)?,
    };
    out.write_all(line.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .context("write to stdout")
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<io::Error>())
        .any(|error| error.kind() == io::ErrorKind::BrokenPipe)
}

/// The NATS subject the record arrived on, from its headers.
fn subject(record: &DecodedRecord) -> Option<Cow<'_, str>> {
    record
        .headers
        .iter()
        .rev()
        .find(|header| header.key.as_ref() == SUBJECT_HEADER.as_bytes())
        .and_then(|header| header.value.as_deref())
        .map(String::from_utf8_lossy)
}

/// Headers other than the NATS subject and reply, as `(key, value)` text;
/// a repeated key keeps its first position and its last value.
fn user_headers(record: &DecodedRecord) -> Vec<(Cow<'_, str>, Cow<'_, str>)> {
    let mut headers: Vec<(Cow<'_, str>, Cow<'_, str>)> = Vec::new();
    for header in &record.headers {
        let key = header.key.as_ref();
        if key == SUBJECT_HEADER.as_bytes() || key == REPLY_HEADER.as_bytes() {
            continue;
        }
        let key = String::from_utf8_lossy(key);
        let value = header
            .value
            .as_deref()
            .map_or(Cow::Borrowed(""), String::from_utf8_lossy);
        match headers.iter_mut().find(|(existing, _)| *existing == key) {
            Some(slot) => slot.1 = value,
            None => headers.push((key, value)),
        }
    }
    headers
}

/// `<offset> <subject> <key> <value>`; `-` for a missing subject, key or
/// value; invalid UTF-8 replaced and control characters escaped, so one
/// record is one line.
fn text_line(record: &DecodedRecord) -> String {
    let text = |bytes: Option<&[u8]>| match bytes {
        None => "-".to_owned(),
        Some(bytes) => escape_controls(&String::from_utf8_lossy(bytes)),
    };
    format!(
        "{} {} {} {}",
        record.offset.0,
        subject(record).map_or_else(|| "-".to_owned(), |s| escape_controls(&s)),
        text(record.key.as_deref()),
        text(record.value.as_deref()),
    )
}

fn escape_controls(text: &str) -> String {
    text.chars()
        .flat_map(|c| -> Box<dyn Iterator<Item = char>> {
            if c.is_control() {
                Box::new(c.escape_default())
            } else {
                Box::new(std::iter::once(c))
            }
        })
        .collect()
}

/// One JSON object with exactly `offset`, `timestamp` (ms since the epoch),
/// `subject`, `key`, `value` (a string, or null for a null value) or
/// `value_base64` (when the value is not UTF-8), and `headers` (string to
/// string, NATS subject and reply left out). Key and header bytes that are
/// not UTF-8 are shown with U+FFFD replacements.
fn json_line(record: &DecodedRecord) -> anyhow::Result<String> {
    let value = match record.value.as_deref() {
        None => JsonValue::Text(None),
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => JsonValue::Text(Some(text)),
            Err(_) => JsonValue::Base64(base64::engine::general_purpose::STANDARD.encode(bytes)),
        },
    };
    let json = JsonRecord {
        offset: record.offset.0,
        timestamp: record.timestamp.0,
        subject: subject(record),
        key: record.key.as_deref().map(String::from_utf8_lossy),
        value,
        headers: JsonHeaders(user_headers(record)),
    };
    serde_json::to_string(&json).context("format a record as JSON")
}

#[derive(serde::Serialize)]
struct JsonRecord<'a> {
    offset: u64,
    timestamp: i64,
    subject: Option<Cow<'a, str>>,
    key: Option<Cow<'a, str>>,
    #[serde(flatten)]
    value: JsonValue<'a>,
    headers: JsonHeaders<'a>,
}

#[derive(serde::Serialize)]
enum JsonValue<'a> {
    #[serde(rename = "value")]
    Text(Option<&'a str>),
    #[serde(rename = "value_base64")]
    Base64(String),
}

/// Headers as a JSON object, in record order.
struct JsonHeaders<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl Serialize for JsonHeaders<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use shards::batch::Header;

    fn header(key: &str, value: Option<&[u8]>) -> Header {
        Header {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: value.map(Bytes::copy_from_slice),
        }
    }

    fn record(key: Option<&[u8]>, value: Option<&[u8]>, headers: Vec<Header>) -> DecodedRecord {
        DecodedRecord {
            offset: Offset(41),
            timestamp: TimestampMs(1_714_564_800_000),
            key: key.map(Bytes::copy_from_slice),
            value: value.map(Bytes::copy_from_slice),
            headers,
        }
    }

    #[test]
    fn json_has_exactly_the_documented_fields_in_order() {
        let record = record(
            Some(b"user-42"),
            Some(b"{\"id\":1}"),
            vec![
                header("trace", Some(b"abc")),
                header(SUBJECT_HEADER, Some(b"orders.1")),
                header(REPLY_HEADER, Some(b"_INBOX.x")),
                header("empty", None),
                header("trace", Some(b"def")),
            ],
        );
        assert_eq!(
            json_line(&record).expect("json"),
            r#"{"offset":41,"timestamp":1714564800000,"subject":"orders.1","key":"user-42","value":"{\"id\":1}","headers":{"trace":"def","empty":""}}"#
        );
    }

    #[test]
    fn json_binary_values_are_base64_and_nulls_are_null() {
        let binary = record(None, Some(&[0xff, 0x00, 0x80]), Vec::new());
        assert_eq!(
            json_line(&binary).expect("json"),
            r#"{"offset":41,"timestamp":1714564800000,"subject":null,"key":null,"value_base64":"/wCA","headers":{}}"#
        );
        let tombstone = record(Some(b"k"), None, Vec::new());
        let line = json_line(&tombstone).expect("json");
        assert!(
            line.contains(r#""key":"k","value":null,"headers":{}"#),
            "{line}"
        );
        let parsed: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(parsed.as_object().map(|o| o.len()), Some(6));
    }

    #[test]
    fn text_is_one_line_per_record() {
        let plain = record(
            None,
            Some(b"hello world"),
            vec![header(SUBJECT_HEADER, Some(b"orders"))],
        );
        assert_eq!(text_line(&plain), "41 orders - hello world");
        let awkward = record(Some(b"k"), Some(b"two\nlines\t\xff"), Vec::new());
        assert_eq!(text_line(&awkward), "41 - k two\\nlines\\t\u{fffd}");
    }
}
