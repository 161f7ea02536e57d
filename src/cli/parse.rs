//! Parsers for flag values (durations, sizes, counts, `K=V`, `--from`) and
//! the inverse formatting used in tables. Each returns a message that says
//! what is expected, which clap prints under the flag's name.

use sluice::client::Limit;
use sluice::units;

use super::rfc3339::parse_rfc3339_ms;

const SECOND_MS: u64 = 1_000;
const MINUTE_MS: u64 = 60 * SECOND_MS;
const HOUR_MS: u64 = 60 * MINUTE_MS;
const DAY_MS: u64 = 24 * HOUR_MS;
const WEEK_MS: u64 = 7 * DAY_MS;

/// Duration units, largest first.
const DURATION_UNITS: [(&str, u64); 6] = [
    ("w", WEEK_MS),
    ("d", DAY_MS),
    ("h", HOUR_MS),
    ("m", MINUTE_MS),
    ("s", SECOND_MS),
    ("ms", 1),
];

/// Words accepted for "no limit" by the retention flags.
const UNLIMITED_WORDS: [&str; 2] = ["unlimited", "none"];

/// Where `sluice consume` starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    Latest,
    Offset(u64),
    /// Milliseconds since the Unix epoch.
    Time(i64),
}

/// `earliest`, `latest`, `offset:N` or `time:RFC3339`.
pub fn parse_start(text: &str) -> Result<StartAt, String> {
    match text {
        "earliest" => Ok(StartAt::Earliest),
        "latest" => Ok(StartAt::Latest),
        _ => {
            if let Some(offset) = text.strip_prefix("offset:") {
                let offset = parse_integer(offset)
                    .filter(|offset| i64::try_from(*offset).is_ok())
                    .ok_or_else(|| {
                        format!("invalid offset {offset:?} (expected e.g. offset:1200)")
                    })?;
                Ok(StartAt::Offset(offset))
            } else if let Some(time) = text.strip_prefix("time:") {
                parse_rfc3339_ms(time).map(StartAt::Time)
            } else {
                Err(format!(
                    "{text:?} is not a start position: use earliest, latest, offset:N or time:RFC3339 (e.g. time:2024-05-01T12:00:00Z)"
                ))
            }
        }
    }
}

/// A positive duration in whole milliseconds, written as
/// [`sluice::units::parse_duration`] reads it (`7d`, `12h`, `1h30m`,
/// `2.5s`, `500ms`; a bare number is seconds).
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let invalid = |why: &str| {
        format!(
            "invalid duration {text:?}: {why} (expected e.g. 7d, 12h, 30m, 45s, 500ms or 1h30m)"
        )
    };
    let duration = units::parse_duration(text).map_err(|e| invalid(&e.to_string()))?;
    if duration.is_zero() {
        return Err(invalid("must be longer than 0"));
    }
    if duration.subsec_nanos() % 1_000_000 != 0 {
        return Err(invalid("must be a whole number of milliseconds"));
    }
    u64::try_from(duration.as_millis()).map_err(|_| invalid("too large"))
}

/// A positive size in bytes, written as [`sluice::units::parse_size`]
/// reads it (`1048576`, `500MB`, `10MiB`, `1M`, `1GiB`).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let invalid = |why: &str| {
        format!("invalid size {text:?}: {why} (expected e.g. 1048576, 500MB, 10MiB or 1GiB)")
    };
    let bytes = units::parse_size(text).map_err(|e| invalid(&e.to_string()))?;
    if bytes == 0 {
        return Err(invalid("must be more than 0"));
    }
    Ok(bytes)
}

/// A positive integer (`_` separators allowed: `1_000_000`).
pub fn parse_positive(text: &str) -> Result<u64, String> {
    parse_integer(text)
        .filter(|value| *value > 0)
        .ok_or_else(|| format!("invalid number {text:?}: expected a whole number above 0"))
}

/// `--cursor`: a valid cursor id (1-128 of `[A-Za-z0-9._-]`).
pub fn parse_cursor_id(text: &str) -> Result<String, String> {
    sluice::cursor::validate_cursor_id(text)
        .map(|()| text.to_owned())
        .map_err(|e| format!("{e} (example: --cursor billing-eu)"))
}

/// `--partitions`: 1 or more.
pub fn parse_partitions(text: &str) -> Result<u32, String> {
    parse_positive(text).and_then(|value| {
        u32::try_from(value).map_err(|_| format!("{text} is too many partitions"))
    })
}

/// `--replication-factor`: 1 or more.
pub fn parse_replication_factor(text: &str) -> Result<u16, String> {
    parse_positive(text)
        .and_then(|value| u16::try_from(value).map_err(|_| format!("{text} is too many replicas")))
}

/// `--retention-age`: a duration, or `unlimited`.
pub fn parse_age_limit(text: &str) -> Result<Limit, String> {
    parse_limit(text, parse_duration_ms)
}

/// `--retention-bytes`: a size, or `unlimited`.
pub fn parse_bytes_limit(text: &str) -> Result<Limit, String> {
    parse_limit(text, parse_bytes)
}

/// `--retention-messages`: a count, or `unlimited`.
pub fn parse_messages_limit(text: &str) -> Result<Limit, String> {
    parse_limit(text, parse_positive)
}

fn parse_limit(text: &str, parse: fn(&str) -> Result<u64, String>) -> Result<Limit, String> {
    if UNLIMITED_WORDS.contains(&text.trim().to_ascii_lowercase().as_str()) {
        return Ok(Limit::Unlimited);
    }
    parse(text).map(Limit::Max)
}

/// `K=V` (split at the first `=`; the value may be empty, the key not).
pub fn parse_header(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!(
            "invalid header {text:?}: expected KEY=VALUE, e.g. trace=abc123"
        )),
    }
}

/// `text` or `json` (`sluice serve --log-format`).
pub fn parse_log_format(text: &str) -> Result<sluice::config::LogFormat, String> {
    sluice::config::LogFormat::parse(text.trim())
        .ok_or_else(|| format!("{text:?} is not a log format: use text or json"))
}

/// `always`, `interval:MS` or `never`, checked now so a typo fails at once.
pub fn parse_sync(text: &str) -> Result<String, String> {
    sluice::config::parse_sync(text)
        .map(|_| text.to_owned())
        .map_err(|error| error.to_string())
}

fn parse_integer(text: &str) -> Option<u64> {
    if text.is_empty() || text.starts_with('_') || text.ends_with('_') {
        return None;
    }
    text.replace('_', "").parse().ok()
}

/// Milliseconds as the largest whole units up to days: `604800000` → `7d`,
/// `5400000` → `1h30m`.
pub fn format_duration_ms(ms: u64) -> String {
    if ms == 0 {
        return "0ms".to_owned();
    }
    let mut rest = ms;
    let mut text = String::new();
    for (unit, unit_ms) in DURATION_UNITS.into_iter().filter(|(_, ms)| *ms < WEEK_MS) {
        if rest >= unit_ms {
            text.push_str(&format!("{}{unit}", rest / unit_ms));
            rest %= unit_ms;
        }
    }
    text
}

/// Bytes in the largest binary unit that divides them exactly (`10MiB`),
/// else plain bytes.
pub fn format_bytes(bytes: u64) -> String {
    for (unit, factor) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if bytes >= factor && bytes.is_multiple_of(factor) {
            return format!("{}{unit}", bytes / factor);
        }
    }
    format!("{bytes}B")
}

/// An ACL operation name: publish, fetch, create, delete or admin.
pub fn parse_acl_operation(text: &str) -> Result<sluice::model::acl::AclOperation, String> {
    sluice::model::acl::AclOperation::from_name(text.trim()).ok_or_else(|| {
        format!("{text:?} is not an operation: use publish, fetch, create, delete or admin")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (text, ms) in [
            ("7d", 7 * DAY_MS),
            ("12h", 12 * HOUR_MS),
            ("30m", 30 * MINUTE_MS),
            ("45s", 45 * SECOND_MS),
            ("500ms", 500),
            ("1h30m", 90 * MINUTE_MS),
            ("2w", 14 * DAY_MS),
            (" 1d ", DAY_MS),
            // One meaning with sluice-bench: a bare number is seconds and
            // fractions are allowed (both were refused before).
            ("7", 7 * SECOND_MS),
            ("1.5h", 90 * MINUTE_MS),
        ] {
            assert_eq!(parse_duration_ms(text), Ok(ms), "{text}");
        }
        for text in [
            "",
            "d",
            "7x",
            "0s",
            "-1s",
            "7 d",
            "1h30",
            "1.0005s",
            "99999999999999999999d",
        ] {
            let error = parse_duration_ms(text).expect_err(text);
            assert!(error.contains("expected e.g. 7d"), "{text}: {error}");
        }
    }

    #[test]
    fn sizes() {
        for (text, bytes) in [
            ("1048576", 1 << 20),
            ("10MiB", 10 << 20),
            ("1GiB", 1 << 30),
            ("500MB", 500_000_000),
            ("64kib", 64 << 10),
            ("2 TB", 2_000_000_000_000),
            ("1_000", 1000),
            ("7B", 7),
            // One meaning with sluice-bench: K, M, G, T are binary (1M was
            // refused before).
            ("1M", 1 << 20),
            ("16k", 16 << 10),
        ] {
            assert_eq!(parse_bytes(text), Ok(bytes), "{text}");
        }
        for text in [
            "",
            "MiB",
            "10XB",
            "0",
            "0MiB",
            "1.5GiB",
            "-5",
            "99999999TiB",
        ] {
            let error = parse_bytes(text).expect_err(text);
            assert!(error.contains("expected e.g."), "{text}: {error}");
        }
    }

    #[test]
    fn limits_and_counts() {
        assert_eq!(parse_bytes_limit("10MiB"), Ok(Limit::Max(10 << 20)));
        assert_eq!(parse_age_limit("unlimited"), Ok(Limit::Unlimited));
        assert_eq!(parse_messages_limit("None"), Ok(Limit::Unlimited));
        assert_eq!(parse_messages_limit("1_000_000"), Ok(Limit::Max(1_000_000)));
        assert!(parse_messages_limit("1k").is_err());
        assert!(parse_messages_limit("0").is_err());
        assert_eq!(parse_partitions("4"), Ok(4));
        assert!(parse_partitions("0").is_err());
        assert!(parse_partitions("5000000000").is_err());
        assert_eq!(parse_replication_factor("3"), Ok(3));
        assert!(parse_replication_factor("70000").is_err());
        assert_eq!(parse_positive("_1").ok(), None);
    }

    #[test]
    fn start_positions() {
        assert_eq!(parse_start("earliest"), Ok(StartAt::Earliest));
        assert_eq!(parse_start("latest"), Ok(StartAt::Latest));
        assert_eq!(parse_start("offset:0"), Ok(StartAt::Offset(0)));
        assert_eq!(parse_start("offset:1200"), Ok(StartAt::Offset(1200)));
        assert_eq!(
            parse_start("time:2024-05-01T12:00:00Z"),
            Ok(StartAt::Time(1_714_564_800_000))
        );
        for text in [
            "",
            "first",
            "offset:",
            "offset:-1",
            "offset:x",
            "offset:9223372036854775808",
            "time:yesterday",
            "Earliest",
        ] {
            assert!(parse_start(text).is_err(), "{text}");
        }
        assert!(parse_start("time:2024-05-01")
            .unwrap_err()
            .contains("RFC 3339"));
    }

    #[test]
    fn headers_and_sync() {
        assert_eq!(
            parse_header("trace=abc"),
            Ok(("trace".into(), "abc".into()))
        );
        assert_eq!(parse_header("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_header("empty="), Ok(("empty".into(), String::new())));
        assert!(parse_header("=v").is_err());
        assert!(parse_header("novalue").is_err());
        assert_eq!(parse_sync("interval:5"), Ok("interval:5".into()));
        assert!(parse_sync("sometimes").is_err());
    }

    #[test]
    fn formatting_round_trips() {
        assert_eq!(format_duration_ms(7 * DAY_MS), "7d");
        assert_eq!(format_duration_ms(400 * DAY_MS), "400d");
        assert_eq!(format_duration_ms(90 * MINUTE_MS), "1h30m");
        assert_eq!(format_duration_ms(1_500), "1s500ms");
        assert_eq!(format_bytes(10 << 20), "10MiB");
        assert_eq!(format_bytes(500_000_000), "500000000B");
        for ms in [1, 999, 61_000, 3 * DAY_MS + 5] {
            assert_eq!(parse_duration_ms(&format_duration_ms(ms)), Ok(ms));
        }
        for bytes in [1, 1 << 30, 1536] {
            assert_eq!(parse_bytes(&format_bytes(bytes)), Ok(bytes));
        }
    }
}
