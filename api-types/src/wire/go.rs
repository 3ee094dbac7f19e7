//! Go's text forms of `metav1.Time`, `metav1.MicroTime` and `metav1.Duration`, which the
//! protobuf codec converts to and from their `{seconds, nanos}` / nanosecond wire forms.

use jiff::Timestamp;

pub(super) use crate::duration::{format_go as format_duration, parse_go as parse_duration};

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
