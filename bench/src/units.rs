//! Parsing and printing of the quantities the harness deals in: byte sizes
//! (`128`, `16KiB`, `1MiB`), durations (`10`, `500ms`, `2s`), rates and
//! grouped counts.

use std::time::Duration;

/// Longest duration any of the harness's time flags accepts.
const DURATION_MAX: Duration = Duration::from_secs(86_400);

/// Parses a byte size as `sluice` does ([`sluice::units::parse_size`]:
/// `128`, `16KiB`, `16k`, `1M` = 1 MiB, `2MB` = 2,000,000).
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let bytes = sluice::units::parse_size(text).map_err(|e| match e {
        sluice::units::QuantityError::UnknownUnit(unit) => {
            format!("unknown size unit '{unit}' in '{}'", text.trim())
        }
        sluice::units::QuantityError::TooLarge => format!("size '{}' is too large", text.trim()),
        _ => format!("'{}' is not a size (try 128, 16KiB, 1MiB)", text.trim()),
    })?;
    usize::try_from(bytes).map_err(|_| format!("size '{}' is too large", text.trim()))
}

/// Parses a duration as `sluice` does ([`sluice::units::parse_duration`]:
/// `10` = 10 s, `2.5s`, `500ms`, `1m`, `1h30m`), from 0 to one day.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let duration = sluice::units::parse_duration(text).map_err(|e| match e {
        sluice::units::QuantityError::TooLarge => {
            format!("duration '{text}' is out of range (0 s to 1 day)")
        }
        e => format!("'{text}' is not a duration: {e} (try 10, 2.5s, 500ms)"),
    })?;
    if duration > DURATION_MAX {
        return Err(format!("duration '{text}' is out of range (0 s to 1 day)"));
    }
    Ok(duration)
}

/// Parses a count such as `1000000`, `1_000_000`, `100k` or `2M` (powers of
/// 1000).
pub fn parse_count(text: &str) -> Result<u64, String> {
    let text = text.trim().replace('_', "");
    let (number, factor) = match text.chars().last() {
        Some('k' | 'K') => (&text[..text.len() - 1], 1_000.0),
        Some('M') => (&text[..text.len() - 1], 1_000_000.0),
        Some('G') => (&text[..text.len() - 1], 1_000_000_000.0),
        _ => (text.as_str(), 1.0),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a count (try 100000, 100k, 1M)"))?;
    let value = value * factor;
    if !(0.0..=1e15).contains(&value) {
        return Err(format!("count '{text}' is out of range"));
    }
    Ok(value.round() as u64)
}

/// Parses a rate in messages per second (`50000`, `50k`).
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let rate = parse_count(text)? as f64;
    if rate <= 0.0 {
        return Err("--rate must be positive".into());
    }
    Ok(rate)
}

/// `16 KiB`, `128 B`, `1 MiB`: exact binary units where they fit.
pub fn format_bytes(bytes: usize) -> String {
    const UNITS: [(usize, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (factor, unit) in UNITS {
        if bytes >= factor && bytes.is_multiple_of(factor) {
            return format!("{} {unit}", bytes / factor);
        }
    }
    for (factor, unit) in UNITS {
        if bytes >= factor {
            return format!("{:.1} {unit}", bytes as f64 / factor as f64);
        }
    }
    format!("{bytes} B")
}

/// A count with thousands separators: `1,234,567`.
pub fn group(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate or large number in short form: `118k`, `1.25M`, `950`.
pub fn short(value: f64) -> String {
    let abs = value.abs();
    if abs >= 1e9 {
        format!("{:.2}G", value / 1e9)
    } else if abs >= 1e6 {
        format!("{:.2}M", value / 1e6)
    } else if abs >= 1e4 {
        format!("{:.0}k", value / 1e3)
    } else if abs >= 1e3 {
        format!("{:.1}k", value / 1e3)
    } else {
        format!("{value:.0}")
    }
}

/// A latency given in microseconds, printed in the unit that suits it.
pub fn format_latency_us(us: f64) -> String {
    if us >= 1e6 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{us:.0} µs")
    }
}

/// A latency in microseconds as milliseconds with sensible precision, for
/// table columns that all share the unit `ms`.
pub fn ms_cell(us: f64) -> String {
    let ms = us / 1e3;
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 10.0 {
        format!("{ms:.1}")
    } else if ms >= 0.1 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("128").unwrap(), 128);
        assert_eq!(parse_bytes("16KiB").unwrap(), 16 << 10);
        assert_eq!(parse_bytes("16k").unwrap(), 16 << 10);
        assert_eq!(parse_bytes("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_bytes("2 MB").unwrap(), 2_000_000);
        assert!(parse_bytes("12 parsecs").is_err());
        assert!(parse_bytes("").is_err());
    }

    #[test]
    fn durations_and_counts() {
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("-1").is_err());
        assert_eq!(parse_count("100k").unwrap(), 100_000);
        assert_eq!(parse_count("1_000").unwrap(), 1000);
        assert_eq!(parse_count("2M").unwrap(), 2_000_000);
        assert!(parse_rate("0").is_err());
    }

    #[test]
    fn printing() {
        assert_eq!(format_bytes(128), "128 B");
        assert_eq!(format_bytes(16 << 10), "16 KiB");
        assert_eq!(format_bytes(1 << 20), "1 MiB");
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(group(12), "12");
        assert_eq!(short(118_200.0), "118k");
        assert_eq!(format_latency_us(2_500.0), "2.50 ms");
        assert_eq!(ms_cell(2_500.0), "2.50");
    }
}
