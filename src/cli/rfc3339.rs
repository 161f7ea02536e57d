//! RFC 3339 timestamps for `--from time:...` and the times the CLI prints,
//! with the `time` crate: `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`.
//!
//! Accepted as before (the CLI's own parser did this until it was
//! replaced): `t` or a space for `T`, `z` for `Z`, a fraction of 1 to 9
//! digits (truncated to milliseconds), second 60 (a leap second, read as
//! the first second of the next minute). `time` alone would take any
//! separator, any number of fraction digits, and read second 60 as the
//! last nanosecond of second 59, so those three are checked here first.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::OffsetDateTime;

/// Byte position of the date/time separator.
const SEPARATOR_AT: usize = 10;
/// Byte range of the seconds field.
const SECONDS_AT: std::ops::Range<usize> = 17..19;
/// Byte position of the optional `.` before a fraction.
const FRACTION_AT: usize = 19;
/// Most fraction digits accepted (nanoseconds).
const FRACTION_DIGITS_MAX: usize = 9;
const NANOS_PER_MS: i128 = 1_000_000;

/// Milliseconds since the Unix epoch of an RFC 3339 timestamp.
pub fn parse_rfc3339_ms(text: &str) -> Result<i64, String> {
    let invalid = |why: &dyn std::fmt::Display| {
        format!(
            "invalid time {text:?}: {why} (expected RFC 3339, e.g. 2024-05-01T12:00:00Z or 2024-05-01T14:00:00.250+02:00)"
        )
    };
    let bytes = text.as_bytes();
    if !matches!(bytes.get(SEPARATOR_AT), Some(b'T' | b't' | b' ')) {
        return Err(invalid(&format_args!(
            "expected \"Tt \" at position {}",
            SEPARATOR_AT + 1
        )));
    }
    if bytes.get(FRACTION_AT) == Some(&b'.') {
        let digits = bytes[FRACTION_AT + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits == 0 || digits > FRACTION_DIGITS_MAX {
            return Err(invalid(&"the fraction of a second needs 1 to 9 digits"));
        }
    }
    // A leap second is read as the first second of the next minute: parse
    // it as second 59 and add one second.
    let leap_second = text.get(SECONDS_AT) == Some("60");
    let parsed = if leap_second {
        let mut as_59 = text.to_owned();
        as_59.replace_range(SECONDS_AT, "59");
        OffsetDateTime::parse(&as_59, &Rfc3339)
    } else {
        OffsetDateTime::parse(text, &Rfc3339)
    }
    .map_err(|e| invalid(&e))?;
    let nanos = parsed.unix_timestamp_nanos() + if leap_second { 1_000_000_000 } else { 0 };
    // Years 1..=9999 are a few hundred billion milliseconds either way.
    i64::try_from(nanos.div_euclid(NANOS_PER_MS)).map_err(|_| invalid(&"out of range"))
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC) for milliseconds since the Unix epoch;
/// outside the years 1 to 9999, the plain number of milliseconds.
pub fn format_rfc3339_ms(ms: i64) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * NANOS_PER_MS)
        .ok()
        .filter(|at| at.year() >= 1)
        .and_then(|at| at.format(&format).ok())
        .unwrap_or_else(|| format!("{ms} ms since the Unix epoch"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_outside_the_calendar_print_as_milliseconds() {
        assert_eq!(
            super::format_rfc3339_ms(i64::MAX),
            format!("{} ms since the Unix epoch", i64::MAX)
        );
        assert_eq!(
            super::format_rfc3339_ms(i64::MIN),
            format!("{} ms since the Unix epoch", i64::MIN)
        );
    }

    #[test]
    fn formats_and_parses_back() {
        for ms in [
            0,
            1_700_000_000_123,
            951_782_400_000,
            -86_400_000,
            4_102_444_799_999,
        ] {
            let text = super::format_rfc3339_ms(ms);
            assert_eq!(super::parse_rfc3339_ms(&text), Ok(ms), "{text}");
        }
        assert_eq!(
            super::format_rfc3339_ms(1_700_000_000_123),
            "2023-11-14T22:13:20.123Z"
        );
    }

    use super::*;

    #[test]
    fn known_instants() {
        for (text, ms) in [
            ("1970-01-01T00:00:00Z", 0),
            ("1969-12-31T23:59:59.999Z", -1),
            ("2000-03-01T00:00:00Z", 951_868_800_000),
            ("2024-05-01T12:00:00Z", 1_714_564_800_000),
            ("2024-05-01t12:00:00z", 1_714_564_800_000),
            ("2024-05-01 14:00:00+02:00", 1_714_564_800_000),
            ("2024-02-29T12:34:56.789+02:00", 1_709_202_896_789),
            ("2024-02-29T12:34:56.7891234+02:00", 1_709_202_896_789),
            ("2024-02-29T12:34:56.7+02:00", 1_709_202_896_700),
            ("2023-10-15T08:30:00-05:30", 1_697_378_400_000),
            ("9999-12-31T23:59:59Z", 253_402_300_799_000),
            ("0001-01-01T00:00:00Z", -62_135_596_800_000),
            ("2016-12-31T23:59:60Z", 1_483_228_800_000),
        ] {
            assert_eq!(parse_rfc3339_ms(text), Ok(ms), "{text}");
        }
    }

    #[test]
    fn malformed_times_are_refused_with_the_expected_form() {
        for text in [
            "",
            "2024-05-01",
            "2024-05-01T12:00:00",
            "2024-05-01T12:00Z",
            "2024-5-01T12:00:00Z",
            "2024-05-01T12:00:00.Z",
            "2024-05-01T12:00:00.1234567891Z",
            "2024-05-01T12:00:00+0200",
            "2024-05-01T12:00:00+24:00",
            "2024-05-01T12:00:00Zjunk",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-04-31T00:00:00Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01T12:60:00Z",
            "2024-05-01T12:00:61Z",
            "２０２４-05-01T12:00:00Z",
        ] {
            let error = parse_rfc3339_ms(text).expect_err(text);
            assert!(error.contains("expected RFC 3339"), "{text}: {error}");
        }
    }
}
