//! THE duration parser of ferry: CLI flags (`--timeout`), agent options (`--min-interval`) and
//! the duration fields of every CRD (`spec.interval`, `spec.timeout`, ...) all read durations
//! here, so `5m` means the same thing everywhere.
//!
//! Grammar (the union of what the CLI and the CRDs accepted before they shared this parser):
//! - a Go-style sequence of `<number><unit>` with units `ms`, `s`, `m`, `h` (`30s`, `1h30m`,
//!   `500ms`); the number may have a fraction (`1.5h`, `.5s`), as Go's `time.ParseDuration`;
//! - or a bare whole number, read as seconds (`120`), as `ferry apply --timeout` always took.
//!
//! Zero (`0s`, `0`) parses; callers that need a positive duration use
//! [`parse_positive_duration`]. Arithmetic is exact (nanoseconds, checked): an absurdly long
//! duration is an error, never a panic.

use std::time::Duration;

/// Why a duration did not parse. The display names the text and says what would work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration: use e.g. 90s, 5m or 1h30m")]
    Empty,
    #[error("duration {0:?} is missing a unit (ms, s, m, h): use e.g. 90s, 5m or 1h30m")]
    MissingUnit(String),
    #[error("duration {0:?} is not like 90s, 5m or 1h30m")]
    Malformed(String),
    #[error("duration {text:?} has unknown unit {unit:?} (use ms, s, m or h)")]
    UnknownUnit { text: String, unit: String },
    #[error("duration {0:?} is too long")]
    TooLong(String),
    #[error("duration {0:?} must be positive")]
    NotPositive(String),
}

const NANOS_PER_MILLI: u128 = 1_000_000;
const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// Parse a duration (see the module documentation for the grammar).
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(DurationError::Empty);
    }
    if trimmed.bytes().all(|b| b.is_ascii_digit()) {
        let seconds: u64 = trimmed
            .parse()
            .map_err(|_| DurationError::TooLong(trimmed.to_string()))?;
        return Ok(Duration::from_secs(seconds));
    }
    let mut nanos: u128 = 0;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| DurationError::MissingUnit(trimmed.to_string()))?;
        let number = &rest[..number_len];
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let per_unit = match unit {
            "ms" => NANOS_PER_MILLI,
            "s" => NANOS_PER_SECOND,
            "m" => 60 * NANOS_PER_SECOND,
            "h" => 3600 * NANOS_PER_SECOND,
            _ => {
                return Err(DurationError::UnknownUnit {
                    text: trimmed.to_string(),
                    unit: unit.to_string(),
                });
            }
        };
        let part = scaled(number, per_unit).ok_or_else(|| match number {
            "" => DurationError::Malformed(trimmed.to_string()),
            _ if number.matches('.').count() > 1 || number == "." => {
                DurationError::Malformed(trimmed.to_string())
            }
            _ => DurationError::TooLong(trimmed.to_string()),
        })?;
        nanos = nanos
            .checked_add(part)
            .ok_or_else(|| DurationError::TooLong(trimmed.to_string()))?;
    }
    let seconds = u64::try_from(nanos / NANOS_PER_SECOND)
        .map_err(|_| DurationError::TooLong(trimmed.to_string()))?;
    // The remainder is below one second, so it fits in u32.
    let subsec = (nanos % NANOS_PER_SECOND) as u32;
    Ok(Duration::new(seconds, subsec))
}

/// [`parse_duration`], refusing zero: for timeouts and intervals where zero means nothing
/// useful (`ferry apply --timeout 0` would give up at once; a zero scan interval would spin).
pub fn parse_positive_duration(text: &str) -> Result<Duration, DurationError> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err(DurationError::NotPositive(text.trim().to_string()));
    }
    Ok(duration)
}

/// `number` (digits with at most one `.`) times `per_unit` nanoseconds; `None` when the number
/// is malformed or the product overflows. Fractions below a nanosecond are dropped, as Go does.
fn scaled(number: &str, per_unit: u128) -> Option<u128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return None;
    }
    let whole_value: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut total = whole_value.checked_mul(per_unit)?;
    // Fraction digits beyond the 18th cannot change a nanosecond count of any unit we have
    // (an hour is 3.6e12 ns), and 18 digits times an hour's nanoseconds cannot overflow.
    let fraction = &fraction[..fraction.len().min(18)];
    if !fraction.is_empty() {
        let digits: u128 = fraction.parse().ok()?;
        let scale = 10u128.checked_pow(fraction.len() as u32)?;
        total = total.checked_add(digits.checked_mul(per_unit)? / scale)?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn go_style_sequences() {
        assert_eq!(parse_duration("30s"), Ok(secs(30)));
        assert_eq!(parse_duration("5m"), Ok(secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(secs(5400)));
        assert_eq!(parse_duration("1h30m15s"), Ok(secs(5415)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1s500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration(" 90s "), Ok(secs(90)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn fractions_like_go() {
        assert_eq!(parse_duration("1.5h"), Ok(secs(5400)));
        assert_eq!(parse_duration(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5.s"), Ok(secs(5)));
        assert_eq!(parse_duration("0.001s"), Ok(Duration::from_millis(1)));
    }

    #[test]
    fn bare_numbers_are_seconds() {
        // `ferry apply --timeout 120` has always meant two minutes.
        assert_eq!(parse_duration("120"), Ok(secs(120)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn refusals_say_why() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(parse_duration("  "), Err(DurationError::Empty));
        assert!(matches!(
            parse_duration("5d"),
            Err(DurationError::UnknownUnit { unit, .. }) if unit == "d"
        ));
        assert!(matches!(
            parse_duration("5x"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("m"),
            Err(DurationError::Malformed(_))
        ));
        assert!(matches!(
            parse_duration("1.2.3s"),
            Err(DurationError::Malformed(_))
        ));
        assert!(matches!(
            parse_duration("1h30"),
            Err(DurationError::MissingUnit(_))
        ));
        assert!(matches!(
            parse_duration("-5s"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("1 h"),
            Err(DurationError::UnknownUnit { .. })
        ));
        let message = parse_duration("5d").unwrap_err().to_string();
        assert!(message.contains("\"5d\"") && message.contains("ms, s, m or h"));
    }

    #[test]
    fn huge_values_are_errors_not_panics() {
        let huge = format!("{}h", "9".repeat(40));
        assert!(matches!(
            parse_duration(&huge),
            Err(DurationError::TooLong(_))
        ));
        assert!(matches!(
            parse_duration(&"9".repeat(30)),
            Err(DurationError::TooLong(_))
        ));
        let long_fraction = format!("1.{}s", "9".repeat(60));
        assert_eq!(
            parse_duration(&long_fraction),
            Ok(Duration::new(1, 999_999_999))
        );
    }

    #[test]
    fn positive_refuses_zero() {
        assert_eq!(parse_positive_duration("90s"), Ok(secs(90)));
        assert_eq!(
            parse_positive_duration("0s"),
            Err(DurationError::NotPositive("0s".to_string()))
        );
        assert_eq!(
            parse_positive_duration("0"),
            Err(DurationError::NotPositive("0".to_string()))
        );
    }
}
