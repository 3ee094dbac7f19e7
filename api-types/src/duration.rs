//! Go's `time.Duration` text form, which upstream uses in flags (`--etcd-compaction-interval=5m0s`),
//! `metav1.Duration` fields and cron `@every` schedules.

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// Go's `time.Duration.String()`: `1h2m3.5s`, `1m0s`, `1.5ms`, `300µs`, `10ns`, `0s`.
pub fn format_go(nanos: i64) -> String {
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
pub fn parse_go(text: &str) -> Option<i64> {
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
