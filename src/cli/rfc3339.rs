//! A small RFC 3339 timestamp parser, so `--from time:...` needs no date
//! library: `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`.
//!
//! Accepted as RFC 3339 allows: `t` or a space for `T`, `z` for `Z`, a
//! fraction of 1 to 9 digits (truncated to milliseconds), second 60 (a leap
//! second, read as the first second of the next minute).

/// Milliseconds since the Unix epoch of an RFC 3339 timestamp.
pub fn parse_rfc3339_ms(text: &str) -> Result<i64, String> {
    let scan = Scanner { text };
    let year = scan.digits(0, 4)?;
    scan.expect(4, b"-")?;
    let month = scan.digits(5, 2)?;
    scan.expect(7, b"-")?;
    let day = scan.digits(8, 2)?;
    scan.expect(10, b"Tt ")?;
    let hour = scan.digits(11, 2)?;
    scan.expect(13, b":")?;
    let minute = scan.digits(14, 2)?;
    scan.expect(16, b":")?;
    let second = scan.digits(17, 2)?;
    let (millis, at) = scan.fraction_ms(19)?;
    let (offset_minutes, at) = scan.utc_offset_minutes(at)?;
    if at != text.len() {
        return Err(scan.invalid("unexpected characters after the time zone"));
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err(scan.invalid("no such date"));
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err(scan.invalid("no such time of day"));
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second
        - offset_minutes * 60;
    Ok(seconds * 1_000 + millis)
}

/// Reads fields at fixed byte positions of the text being parsed.
struct Scanner<'a> {
    text: &'a str,
}

impl Scanner<'_> {
    fn invalid(&self, why: &str) -> String {
        format!(
            "invalid time {:?}: {why} (expected RFC 3339, e.g. 2024-05-01T12:00:00Z or 2024-05-01T14:00:00.250+02:00)",
            self.text
        )
    }

    /// The number written with `len` ASCII digits at `at`.
    fn digits(&self, at: usize, len: usize) -> Result<i64, String> {
        let digits = self
            .text
            .as_bytes()
            .get(at..at + len)
            .filter(|digits| digits.iter().all(u8::is_ascii_digit))
            .ok_or_else(|| self.invalid("expected digits"))?;
        Ok(digits
            .iter()
            .fold(0i64, |value, digit| value * 10 + i64::from(digit - b'0')))
    }

    fn expect(&self, at: usize, allowed: &[u8]) -> Result<(), String> {
        match self.text.as_bytes().get(at) {
            Some(byte) if allowed.contains(byte) => Ok(()),
            _ => Err(self.invalid(&format!(
                "expected {:?} at position {}",
                allowed.iter().map(|b| char::from(*b)).collect::<String>(),
                at + 1
            ))),
        }
    }

    /// An optional `.fraction` at `at`: (milliseconds, position after it).
    fn fraction_ms(&self, at: usize) -> Result<(i64, usize), String> {
        if self.text.as_bytes().get(at) != Some(&b'.') {
            return Ok((0, at));
        }
        let start = at + 1;
        let digits = self
            .text
            .as_bytes()
            .get(start..)
            .unwrap_or_default()
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits == 0 || digits > 9 {
            return Err(self.invalid("the fraction of a second needs 1 to 9 digits"));
        }
        let kept = digits.min(3);
        let millis = self.digits(start, kept)? * 10i64.pow(3 - kept as u32);
        Ok((millis, start + digits))
    }

    /// `Z` or `±HH:MM` at `at`: (minutes east of UTC, position after it).
    fn utc_offset_minutes(&self, at: usize) -> Result<(i64, usize), String> {
        match self.text.as_bytes().get(at) {
            Some(b'Z' | b'z') => Ok((0, at + 1)),
            Some(sign @ (b'+' | b'-')) => {
                let sign = if *sign == b'-' { -1 } else { 1 };
                let hours = self.digits(at + 1, 2)?;
                self.expect(at + 3, b":")?;
                let minutes = self.digits(at + 4, 2)?;
                if hours > 23 || minutes > 59 {
                    return Err(self.invalid("the UTC offset is out of range"));
                }
                Ok((sign * (hours * 60 + minutes), at + 6))
            }
            _ => Err(self.invalid("missing time zone: end with Z or ±HH:MM")),
        }
    }
}

fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (Howard
/// Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC) for milliseconds since the Unix epoch.
pub fn format_rfc3339_ms(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1_000 % 60,
        in_day % 1_000
    )
}

/// Inverse of `days_from_civil` (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn civil_days_match_the_calendar() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(1970, 3, 1), 59);
        assert_eq!(
            days_from_civil(2000, 2, 29) + 1,
            days_from_civil(2000, 3, 1)
        );
        assert_eq!(
            days_from_civil(1900, 2, 28) + 1,
            days_from_civil(1900, 3, 1)
        );
        assert_eq!(days_from_civil(1969, 12, 31), -1);
    }
}
