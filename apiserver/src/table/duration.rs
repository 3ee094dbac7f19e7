//! Ages and durations as upstream prints them: apimachinery's `duration.HumanDuration` and
//! the printers' `translateTimestampSince`.

use jiff::{SignedDuration, Timestamp};

/// What upstream prints for a zero (unset) time.
const UNKNOWN: &str = "<unknown>";

/// Parses a `metav1.Time` or `metav1.MicroTime` (RFC 3339); `None` for unset or invalid.
pub(super) fn parse_time(value: &str) -> Option<Timestamp> {
    if value.is_empty() {
        return None;
    }
    value.parse().ok()
}

/// Upstream's translateTimestampSince / HumanDuration formatting: the time elapsed from
/// `since` (RFC 3339) to `now` ("5s", "2m3s", "90m", "3h4m", "2d3h", "45d", "3y20d"), or
/// "<unknown>" when `since` is missing.
pub fn human_age(since: Option<&str>, now: Timestamp) -> String {
    match since.and_then(parse_time) {
        Some(since) => human_duration(now.duration_since(since)),
        None => UNKNOWN.to_string(),
    }
}

/// [`human_age`] of an optional parsed time.
pub(super) fn age_of(since: Option<Timestamp>, now: Timestamp) -> String {
    match since {
        Some(since) => human_duration(now.duration_since(since)),
        None => UNKNOWN.to_string(),
    }
}

/// A succinct duration with 2–3 significant figures, as apimachinery's `HumanDuration`.
///
/// Up to two seconds in the past still reads "0s", to tolerate clock skew between machines;
/// further back is "<invalid>".
pub(super) fn human_duration(d: SignedDuration) -> String {
    // Go durations are int64 nanoseconds, so `time.Since` saturates at about 292 years.
    let nanos = d
        .as_nanos()
        .clamp(i128::from(i64::MIN), i128::from(i64::MAX));
    let seconds = nanos / 1_000_000_000;
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{days}d"),
            h => format!("{days}d{h}h"),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        return match days % 365 {
            0 => format!("{years}y"),
            d => format!("{years}y{d}d"),
        };
    }
    format!("{years}y")
}

/// A creation timestamp as the default table convertor prints it: RFC 3339 in UTC at second
/// precision, with Go's zero time for an unset value.
pub(super) fn rfc3339_utc(value: &str) -> String {
    match parse_time(value) {
        Some(t) => t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => "0001-01-01T00:00:00Z".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: i64) -> String {
        human_duration(SignedDuration::from_secs(s))
    }

    const MIN: i64 = 60;
    const HOUR: i64 = 60 * MIN;
    const DAY: i64 = 24 * HOUR;

    #[test]
    fn negative_durations_tolerate_two_seconds_of_skew() {
        assert_eq!(secs(-2), "<invalid>");
        assert_eq!(human_duration(SignedDuration::from_millis(-1999)), "0s");
        assert_eq!(secs(-1), "0s");
        assert_eq!(secs(0), "0s");
    }

    #[test]
    fn seconds_up_to_two_minutes() {
        assert_eq!(secs(5), "5s");
        assert_eq!(human_duration(SignedDuration::from_millis(5999)), "5s");
        assert_eq!(secs(119), "119s");
        assert_eq!(secs(2 * MIN), "2m");
    }

    #[test]
    fn minutes_and_seconds_below_ten_minutes() {
        assert_eq!(secs(2 * MIN + 3), "2m3s");
        assert_eq!(secs(9 * MIN + 59), "9m59s");
        assert_eq!(secs(10 * MIN), "10m");
        assert_eq!(secs(10 * MIN + 59), "10m");
        assert_eq!(secs(90 * MIN), "90m");
        assert_eq!(secs(179 * MIN + 59), "179m");
    }

    #[test]
    fn hours_and_minutes_below_eight_hours() {
        assert_eq!(secs(3 * HOUR), "3h");
        assert_eq!(secs(3 * HOUR + 4 * MIN + 30), "3h4m");
        assert_eq!(secs(7 * HOUR + 59 * MIN), "7h59m");
        assert_eq!(secs(8 * HOUR + 30 * MIN), "8h");
        assert_eq!(secs(47 * HOUR + 59 * MIN), "47h");
    }

    #[test]
    fn days_and_hours_below_eight_days() {
        assert_eq!(secs(2 * DAY), "2d");
        assert_eq!(secs(2 * DAY + 3 * HOUR), "2d3h");
        assert_eq!(secs(7 * DAY + 23 * HOUR + 59 * MIN), "7d23h");
        assert_eq!(secs(8 * DAY), "8d");
        assert_eq!(secs(45 * DAY + 5 * HOUR), "45d");
        assert_eq!(secs(729 * DAY), "729d");
    }

    #[test]
    fn years_and_days_below_eight_years() {
        assert_eq!(secs(730 * DAY), "2y");
        assert_eq!(secs(3 * 365 * DAY + 20 * DAY), "3y20d");
        assert_eq!(secs(8 * 365 * DAY - DAY), "7y364d");
        assert_eq!(secs(8 * 365 * DAY), "8y");
        assert_eq!(secs(100 * 365 * DAY + 100 * DAY), "100y");
    }

    #[test]
    fn durations_saturate_like_go() {
        assert_eq!(secs(1000 * 365 * DAY), "292y");
    }

    #[test]
    fn human_age_of_timestamps() {
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().expect("valid");
        assert_eq!(human_age(Some("2024-05-01T11:59:55Z"), now), "5s");
        assert_eq!(human_age(Some("2024-05-01T11:57:57Z"), now), "2m3s");
        assert_eq!(human_age(Some("2024-04-29T09:00:00Z"), now), "2d3h");
        assert_eq!(human_age(Some("2024-05-01T12:00:01.500000Z"), now), "0s");
        assert_eq!(human_age(Some("2024-05-01T12:00:05Z"), now), "<invalid>");
        assert_eq!(human_age(None, now), "<unknown>");
        assert_eq!(human_age(Some(""), now), "<unknown>");
        assert_eq!(human_age(Some("yesterday"), now), "<unknown>");
    }

    #[test]
    fn creation_timestamps_in_rfc3339_utc() {
        assert_eq!(
            rfc3339_utc("2024-05-01T14:00:00+02:00"),
            "2024-05-01T12:00:00Z"
        );
        assert_eq!(
            rfc3339_utc("2024-05-01T12:00:00.123456Z"),
            "2024-05-01T12:00:00Z"
        );
        assert_eq!(rfc3339_utc(""), "0001-01-01T00:00:00Z");
    }
}
