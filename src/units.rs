//! Sizes and durations as people write them on a command line: one parser
//! and one meaning for `sluice` and `sluice-bench` (they used to disagree:
//! the CLI refused `1M` and a bare `10`, the bench read them as 1 MiB and
//! 10 seconds).
//!
//! The rules are the union of what either tool accepted, so no value that
//! worked before changes meaning:
//!
//! - **Sizes**: a whole number of bytes with an optional unit, any case,
//!   optionally after a space: `B`; `K`, `M`, `G`, `T` and `KiB`, `MiB`,
//!   `GiB`, `TiB` (also `Ki`...) are powers of 1024 (as GNU tools read
//!   `K`); `KB`, `MB`, `GB`, `TB` are powers of 1000. `_` may group digits.
//! - **Durations**: a number with a unit, or a sum of them (`1h30m`):
//!   `w`, `d`, `h`, `m`, `s`, `ms`, `us`; a number may have a fraction
//!   (`2.5s`, `1.5h`); a number alone is seconds (`10`).
//!
//! Callers add their own range rules (the CLI wants more than 0, the bench
//! at most a day) and wrap the error with an example.

use std::time::Duration;

/// The size rules, for the `--help` of every command that takes a size.
pub const SIZE_HELP: &str = "Sizes: bytes, optionally with a unit (any case): \
B; K, M, G, T or KiB, MiB, GiB, TiB (powers of 1024); KB, MB, GB, TB (powers of 1000). \
Examples: 4096, 64KiB, 1M (= 1MiB), 500MB.";

/// The duration rules, for the `--help` of every command that takes one.
pub const DURATION_HELP: &str = "Durations: a number with a unit, or a sum of them: \
w, d, h, m, s, ms, us; fractions allowed; a bare number is seconds. \
Examples: 10 (= 10s), 2.5s, 500ms, 1h30m, 7d.";

/// Units of a size, lowercase, and their factors.
const SIZE_UNITS: [(&str, u64); 18] = [
    ("", 1),
    ("b", 1),
    ("k", 1 << 10),
    ("ki", 1 << 10),
    ("kib", 1 << 10),
    ("m", 1 << 20),
    ("mi", 1 << 20),
    ("mib", 1 << 20),
    ("g", 1 << 30),
    ("gi", 1 << 30),
    ("gib", 1 << 30),
    ("t", 1 << 40),
    ("ti", 1 << 40),
    ("tib", 1 << 40),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
];

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// Units of a duration and their length in nanoseconds.
const DURATION_UNITS: [(&str, u128); 7] = [
    ("w", 7 * 86_400 * NANOS_PER_SECOND),
    ("d", 86_400 * NANOS_PER_SECOND),
    ("h", 3_600 * NANOS_PER_SECOND),
    ("m", 60 * NANOS_PER_SECOND),
    ("s", NANOS_PER_SECOND),
    ("ms", 1_000_000),
    ("us", 1_000),
];

/// Fraction digits read from a duration's number; later ones are below a
/// nanosecond even for weeks and are ignored.
const FRACTION_DIGITS_MAX: usize = 18;

/// Why a size or duration did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Nothing (or only spaces) was given.
    #[error("empty")]
    Empty,
    /// Where a number was expected there was none.
    #[error("expected a number")]
    NotANumber,
    /// The unit is not one of the documented ones.
    #[error("unknown unit {0:?}")]
    UnknownUnit(String),
    /// A term of a sum has no unit (only a lone number may omit it).
    #[error("missing unit")]
    MissingUnit,
    /// The value does not fit.
    #[error("too large")]
    TooLarge,
}

/// A size in bytes (see the module docs). Zero is a valid size here.
pub fn parse_size(text: &str) -> Result<u64, QuantityError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(QuantityError::Empty);
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '_'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number = parse_grouped_integer(number).ok_or(QuantityError::NotANumber)?;
    let unit = unit.trim();
    let lowercase = unit.to_ascii_lowercase();
    let factor = SIZE_UNITS
        .iter()
        .find(|(name, _)| *name == lowercase)
        .map(|(_, factor)| *factor)
        .ok_or_else(|| QuantityError::UnknownUnit(unit.to_owned()))?;
    number.checked_mul(factor).ok_or(QuantityError::TooLarge)
}

/// A duration (see the module docs). Zero is a valid duration here.
pub fn parse_duration(text: &str) -> Result<Duration, QuantityError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(QuantityError::Empty);
    }
    let mut rest = text;
    let mut total: u128 = 0;
    let mut terms = 0;
    while !rest.is_empty() {
        let (whole, fraction, after) = split_number(rest).ok_or(QuantityError::NotANumber)?;
        let unit_len = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        terms += 1;
        let unit_ns = if unit.is_empty() {
            // A lone number is seconds; in a sum every term needs its unit.
            if terms > 1 || !after.is_empty() {
                return Err(QuantityError::MissingUnit);
            }
            NANOS_PER_SECOND
        } else {
            DURATION_UNITS
                .iter()
                .find(|(name, _)| *name == unit)
                .map(|(_, ns)| *ns)
                .ok_or_else(|| QuantityError::UnknownUnit(unit.to_owned()))?
        };
        let term = scaled(whole, fraction, unit_ns).ok_or(QuantityError::TooLarge)?;
        total = total.checked_add(term).ok_or(QuantityError::TooLarge)?;
        rest = after;
    }
    let seconds = u64::try_from(total / NANOS_PER_SECOND).map_err(|_| QuantityError::TooLarge)?;
    // The remainder is below one second, so it fits a u32.
    let nanos = (total % NANOS_PER_SECOND) as u32;
    Ok(Duration::new(seconds, nanos))
}

/// `digits[_digits...]` as a number; `None` when empty, not a number, or
/// with a `_` at either end.
fn parse_grouped_integer(text: &str) -> Option<u64> {
    if text.is_empty() || text.starts_with('_') || text.ends_with('_') {
        return None;
    }
    text.replace('_', "").parse().ok()
}

/// Splits `digits[.digits]` off the front of `text`: (whole part, fraction
/// digits, rest).
fn split_number(text: &str) -> Option<(&str, &str, &str)> {
    let whole_len = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (whole, after) = text.split_at(whole_len);
    if whole.is_empty() {
        return None;
    }
    let Some(after_point) = after.strip_prefix('.') else {
        return Some((whole, "", after));
    };
    let fraction_len = after_point
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(after_point.len());
    if fraction_len == 0 {
        return None;
    }
    let (fraction, after) = after_point.split_at(fraction_len);
    Some((whole, fraction, after))
}

/// `whole.fraction` × `unit_ns`, in nanoseconds; `None` on overflow.
fn scaled(whole: &str, fraction: &str, unit_ns: u128) -> Option<u128> {
    let whole: u128 = whole.parse().ok()?;
    let mut total = whole.checked_mul(unit_ns)?;
    let fraction = &fraction[..fraction.len().min(FRACTION_DIGITS_MAX)];
    if !fraction.is_empty() {
        let numerator: u128 = fraction.parse().ok()?;
        let denominator = 10u128.pow(fraction.len() as u32);
        total = total.checked_add(numerator.checked_mul(unit_ns)? / denominator)?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_accepted_by_either_tool_keep_their_meaning() {
        for (text, bytes) in [
            ("0", 0),
            ("128", 128),
            ("1_000", 1000),
            ("7B", 7),
            ("16k", 16 << 10),
            ("16K", 16 << 10),
            ("16KiB", 16 << 10),
            ("64kib", 64 << 10),
            ("2Ki", 2 << 10),
            ("1M", 1 << 20),
            ("1MiB", 1 << 20),
            ("10mib", 10 << 20),
            ("1G", 1 << 30),
            ("1GiB", 1 << 30),
            ("1T", 1 << 40),
            ("2 MB", 2_000_000),
            ("500MB", 500_000_000),
            ("1kB", 1_000),
            ("2 TB", 2_000_000_000_000),
            (" 4096 ", 4096),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn malformed_sizes_are_refused() {
        assert_eq!(parse_size(""), Err(QuantityError::Empty));
        assert_eq!(parse_size("MiB"), Err(QuantityError::NotANumber));
        assert_eq!(parse_size("-5"), Err(QuantityError::NotANumber));
        assert_eq!(parse_size("_1"), Err(QuantityError::NotANumber));
        assert_eq!(
            parse_size("12 parsecs"),
            Err(QuantityError::UnknownUnit("parsecs".into()))
        );
        assert!(matches!(
            parse_size("1.5GiB"),
            Err(QuantityError::UnknownUnit(_))
        ));
        assert_eq!(parse_size("99999999TiB"), Err(QuantityError::TooLarge));
        assert_eq!(
            parse_size("99999999999999999999"),
            Err(QuantityError::NotANumber)
        );
    }

    #[test]
    fn durations_accepted_by_either_tool_keep_their_meaning() {
        for (text, duration) in [
            ("10", Duration::from_secs(10)),
            ("0.5", Duration::from_millis(500)),
            ("0", Duration::ZERO),
            ("2.5s", Duration::from_millis(2500)),
            ("500ms", Duration::from_millis(500)),
            ("250us", Duration::from_micros(250)),
            ("1m", Duration::from_secs(60)),
            ("30m", Duration::from_secs(1800)),
            ("12h", Duration::from_secs(12 * 3600)),
            ("1.5h", Duration::from_secs(5400)),
            ("7d", Duration::from_secs(7 * 86_400)),
            ("2w", Duration::from_secs(14 * 86_400)),
            ("1h30m", Duration::from_secs(5400)),
            ("1s500ms", Duration::from_millis(1500)),
            (" 1d ", Duration::from_secs(86_400)),
            ("0.1234567891s", Duration::from_nanos(123_456_789)),
        ] {
            assert_eq!(parse_duration(text), Ok(duration), "{text}");
        }
    }

    #[test]
    fn malformed_durations_are_refused() {
        assert_eq!(parse_duration(""), Err(QuantityError::Empty));
        assert_eq!(parse_duration("d"), Err(QuantityError::NotANumber));
        assert_eq!(parse_duration("-1"), Err(QuantityError::NotANumber));
        assert_eq!(parse_duration("1."), Err(QuantityError::NotANumber));
        assert_eq!(parse_duration("1h30"), Err(QuantityError::MissingUnit));
        assert_eq!(parse_duration("7 d"), Err(QuantityError::MissingUnit));
        assert_eq!(
            parse_duration("7x"),
            Err(QuantityError::UnknownUnit("x".into()))
        );
        assert_eq!(
            parse_duration("1MS"),
            Err(QuantityError::UnknownUnit("MS".into()))
        );
        assert_eq!(
            parse_duration("99999999999999999999999999999999999999999w"),
            Err(QuantityError::TooLarge)
        );
    }
}
