//! Go's text forms of `metav1.Time`, `metav1.MicroTime` and `metav1.Duration`, which the
//! protobuf codec converts to and from their `{seconds, nanos}` / nanosecond wire forms.

use jiff::Timestamp;

/// The RFC 3339 form of a `metav1.Time`: UTC, whole seconds (`2006-01-02T15:04:05Z`).
pub(super) fn format_time(seconds: i64, nanos: i32) -> Option<String> {
    let ts = Timestamp::new(seconds, nanos).ok()?;
    Some(ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// The RFC 3339 form of a `metav1.MicroTime`: UTC with six fractional digits
/// (`2006-01-02T15:04:05.000000Z`).
pub(super) fn format_micro_time(seconds: i64, nanos: i32) -> Option<String> {
    let ts = Timestamp::new(seconds, nanos).ok()?;
    let micros = ts.subsec_nanosecond() / 1000;
    Some(format!("{}.{micros:06}Z", ts.strftime("%Y-%m-%dT%H:%M:%S")))
}

/// Parses an RFC 3339 time (any offset, any fractional precision) into `(seconds, nanos)`.
pub(super) fn parse_time(text: &str) -> Option<(i64, i32)> {
    let ts: Timestamp = text.parse().ok()?;
    Some((ts.as_second(), ts.subsec_nanosecond()))
}

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// Go's `time.Duration.String()`: `1h2m3.5s`, `1m0s`, `1.5ms`, `300µs`, `10ns`, `0s`.
pub(super) fn format_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let u = nanos.unsigned_abs();
    if u < 1_000 {
        return format!("{sign}{u}ns");
    }
    if u < 1_000_000 {
        return format!("{sign}{}µs", decimal(u, 3));
    }
    if u < NANOS_PER_SECOND {
        return format!("{sign}{}ms", decimal(u, 6));
    }
    let seconds = decimal(u % (60 * NANOS_PER_SECOND), 9);
    let minutes = u / (60 * NANOS_PER_SECOND);
    if minutes == 0 {
        return format!("{sign}{seconds}s");
    }
    let (hours, minutes) = (minutes / 60, minutes % 60);
    if hours == 0 {
        format!("{sign}{minutes}m{seconds}s")
    } else {
        format!("{sign}{hours}h{minutes}m{seconds}s")
    }
}

/// `value / 10^places` in decimal, trailing fractional zeros trimmed.
fn decimal(value: u64, places: u32) -> String {
    let scale = 10u64.pow(places);
    let (int, frac) = (value / scale, value % scale);
    if frac == 0 {
        return int.to_string();
    }
    let frac = format!("{frac:0width$}", width = places as usize);
    format!("{int}.{}", frac.trim_end_matches('0'))
}

/// Parses a Go duration string (`1h2m3.5s`, `-1.5ms`, `300us`, `0`) into nanoseconds.
pub(super) fn parse_duration(text: &str) -> Option<i64> {
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(after) = rest.strip_prefix('.') {
            let frac_len = after.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &after[..frac_len];
            rest = &after[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(rest.len(), |(i, _)| i);
        let unit: u128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().ok()?
        };
        total = total.checked_add(int.checked_mul(unit)?)?;
        if !frac_part.is_empty() {
            // Digits beyond nanosecond precision of the hour unit cannot matter.
            let digits = &frac_part[..frac_part.len().min(18)];
            let frac: u128 = digits.parse().ok()?;
            let scale = 10u128.pow(u32::try_from(digits.len()).ok()?);
            total = total.checked_add(frac * unit / scale)?;
        }
    }
    let total = i64::try_from(total).ok()?;
    Some(if negative { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_like_go() {
        for (nanos, text) in [
            (0, "0s"),
            (1, "1ns"),
            (1_500, "1.5µs"),
            (1_500_000, "1.5ms"),
            (1_000_000_000, "1s"),
            (1_500_000_000, "1.5s"),
            (60_000_000_000, "1m0s"),
            (3_723_000_000_000, "1h2m3s"),
            (3_600_000_000_000, "1h0m0s"),
            (-90_000_000_000, "-1m30s"),
        ] {
            assert_eq!(format_duration(nanos), text);
            assert_eq!(parse_duration(text), Some(nanos), "{text}");
        }
        assert_eq!(parse_duration("1h30m"), Some(5_400_000_000_000));
        assert_eq!(parse_duration("300us"), Some(300_000));
        assert_eq!(parse_duration(".5s"), Some(500_000_000));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("1x"), None);
    }

    #[test]
    fn times_print_like_metav1() {
        assert_eq!(
            format_time(1_700_000_000, 123_000_000).as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
        assert_eq!(
            format_micro_time(1_700_000_000, 123_456_789).as_deref(),
            Some("2023-11-14T22:13:20.123456Z")
        );
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Some((1_700_000_000, 0)));
        assert_eq!(
            parse_time("2023-11-14T23:13:20.5+01:00"),
            Some((1_700_000_000, 500_000_000))
        );
    }
}
