//! CronJob schedules: the standard five-field cron grammar and `@` descriptors, parsed the
//! way upstream's `robfig/cron` `ParseStandard` does, with its error messages.

use thiserror::Error;

/// A schedule that did not parse; the message is robfig/cron's.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct CronError(String);

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CronSchedule {
    /// Minute/hour/day-of-month/month/day-of-week bit sets (bit n set = value n allowed).
    Fields {
        minute: u64,
        hour: u64,
        day_of_month: u64,
        month: u64,
        day_of_week: u64,
        /// `*` or `?` in day-of-month (cron's "either day field matches" rule).
        day_of_month_star: bool,
        /// `*` or `?` in day-of-week.
        day_of_week_star: bool,
    },
    /// `@every <duration>`, in milliseconds.
    Every { millis: u64 },
}

impl CronSchedule {
    /// Whether the schedule fires at a wall-clock minute (`day_of_week` 0 = Sunday).
    /// Always false for `@every` schedules.
    pub fn matches(
        &self,
        minute: u32,
        hour: u32,
        day_of_month: u32,
        month: u32,
        day_of_week: u32,
    ) -> bool {
        let CronSchedule::Fields {
            minute: m,
            hour: h,
            day_of_month: dom,
            month: mon,
            day_of_week: dow,
            day_of_month_star,
            day_of_week_star,
        } = self
        else {
            return false;
        };
        let bit = |set: u64, v: u32| v < 64 && set & (1 << v) != 0;
        let dom_ok = bit(*dom, day_of_month);
        let dow_ok = bit(*dow, day_of_week);
        let day_ok = if *day_of_month_star || *day_of_week_star {
            dom_ok && dow_ok
        } else {
            dom_ok || dow_ok
        };
        bit(*m, minute) && bit(*h, hour) && bit(*mon, month) && day_ok
    }
}

struct Bounds {
    min: u32,
    max: u32,
    names: &'static [(&'static str, u32)],
}

const MINUTES: Bounds = Bounds {
    min: 0,
    max: 59,
    names: &[],
};
const HOURS: Bounds = Bounds {
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Bounds = Bounds {
    min: 1,
    max: 31,
    names: &[],
};
const MONTHS: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &[
        ("jan", 1),
        ("feb", 2),
        ("mar", 3),
        ("apr", 4),
        ("may", 5),
        ("jun", 6),
        ("jul", 7),
        ("aug", 8),
        ("sep", 9),
        ("oct", 10),
        ("nov", 11),
        ("dec", 12),
    ],
};
const DOW: Bounds = Bounds {
    min: 0,
    max: 6,
    names: &[
        ("sun", 0),
        ("mon", 1),
        ("tue", 2),
        ("wed", 3),
        ("thu", 4),
        ("fri", 5),
        ("sat", 6),
    ],
};

fn err(msg: String) -> CronError {
    CronError(msg)
}

/// Go's `strconv.Atoi` followed by robfig's non-negative check.
fn must_parse_int(expr: &str) -> Result<u32, CronError> {
    let digits = expr.strip_prefix(['+', '-']).unwrap_or(expr);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err(format!(
            "failed to parse int from {expr}: strconv.Atoi: parsing \"{expr}\": invalid syntax"
        )));
    }
    let num: i64 = expr.parse().map_err(|_| {
        err(format!(
            "failed to parse int from {expr}: strconv.Atoi: parsing \"{expr}\": value out of range"
        ))
    })?;
    if num < 0 {
        return Err(err(format!("negative number ({num}) not allowed: {expr}")));
    }
    u32::try_from(num).map_err(|_| {
        err(format!(
            "failed to parse int from {expr}: strconv.Atoi: parsing \"{expr}\": value out of range"
        ))
    })
}

fn parse_int_or_name(expr: &str, bounds: &Bounds) -> Result<u32, CronError> {
    let lower = expr.to_lowercase();
    if let Some((_, v)) = bounds.names.iter().find(|(n, _)| *n == lower) {
        return Ok(*v);
    }
    must_parse_int(expr)
}

/// One comma-separated term: `*`, `?`, `N`, `N-M`, with an optional `/step`.
/// Returns the bits and whether the term was a star.
fn get_range(expr: &str, bounds: &Bounds) -> Result<(u64, bool), CronError> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_and_high: Vec<&str> = range_and_step[0].split('-').collect();
    let single = low_and_high.len() == 1;
    let mut star = false;
    let (start, mut end) = if low_and_high[0] == "*" || low_and_high[0] == "?" {
        star = true;
        (bounds.min, bounds.max)
    } else {
        let start = parse_int_or_name(low_and_high[0], bounds)?;
        let end = match low_and_high.len() {
            1 => start,
            2 => parse_int_or_name(low_and_high[1], bounds)?,
            _ => return Err(err(format!("too many hyphens: {expr}"))),
        };
        (start, end)
    };
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            let step = must_parse_int(range_and_step[1])?;
            if single {
                end = bounds.max;
            }
            if step > 1 {
                star = false;
            }
            step
        }
        _ => return Err(err(format!("too many slashes: {expr}"))),
    };
    if start < bounds.min {
        return Err(err(format!(
            "beginning of range ({start}) below minimum ({}): {expr}",
            bounds.min
        )));
    }
    if end > bounds.max {
        return Err(err(format!(
            "end of range ({end}) above maximum ({}): {expr}",
            bounds.max
        )));
    }
    if start > end {
        return Err(err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        )));
    }
    if step == 0 {
        return Err(err(format!(
            "step of range should be a positive number: {expr}"
        )));
    }
    let mut bits = 0u64;
    let mut v = start;
    while v <= end {
        bits |= 1 << v;
        v += step;
    }
    Ok((bits, star))
}

fn get_field(field: &str, bounds: &Bounds) -> Result<(u64, bool), CronError> {
    let mut bits = 0;
    let mut star = false;
    for expr in field.split(',').filter(|s| !s.is_empty()) {
        let (b, s) = get_range(expr, bounds)?;
        bits |= b;
        star |= s;
    }
    Ok((bits, star))
}

/// Go's `time.ParseDuration`, to milliseconds, with Go's error messages.
fn parse_go_duration(s: &str) -> Result<u64, String> {
    match crate::duration::parse_go(s) {
        Some(nanos) => Ok(u64::try_from(nanos).map(|n| n / 1_000_000).unwrap_or(0)),
        None if !s.is_empty()
            && s.trim_start_matches(['+', '-'])
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'.') =>
        {
            Err(format!("time: missing unit in duration \"{s}\""))
        }
        None => Err(format!("time: invalid duration \"{s}\"")),
    }
}

fn parse_descriptor(spec: &str) -> Result<CronSchedule, CronError> {
    let fields = |expr: &str| parse_fields(expr);
    match spec {
        "@yearly" | "@annually" => fields("0 0 1 1 *"),
        "@monthly" => fields("0 0 1 * *"),
        "@weekly" => fields("0 0 * * 0"),
        "@daily" | "@midnight" => fields("0 0 * * *"),
        "@hourly" => fields("0 * * * *"),
        _ => match spec.strip_prefix("@every ") {
            Some(d) => parse_go_duration(d)
                .map(|millis| CronSchedule::Every { millis })
                .map_err(|e| err(format!("failed to parse duration {spec}: {e}"))),
            None => Err(err(format!("unrecognized descriptor: {spec}"))),
        },
    }
}

fn parse_fields(spec: &str) -> Result<CronSchedule, CronError> {
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(err(format!(
            "expected exactly 5 fields, found {}: [{}]",
            fields.len(),
            fields.join(" ")
        )));
    }
    let (minute, _) = get_field(fields[0], &MINUTES)?;
    let (hour, _) = get_field(fields[1], &HOURS)?;
    let (day_of_month, day_of_month_star) = get_field(fields[2], &DOM)?;
    let (month, _) = get_field(fields[3], &MONTHS)?;
    let (day_of_week, day_of_week_star) = get_field(fields[4], &DOW)?;
    Ok(CronSchedule::Fields {
        minute,
        hour,
        day_of_month,
        month,
        day_of_week,
        day_of_month_star,
        day_of_week_star,
    })
}

/// Parses a schedule like robfig/cron's `ParseStandard`: five fields (minute, hour,
/// day of month, month, day of week) or a descriptor (`@hourly`, `@every 1h30m`, ...).
/// A leading `TZ=zone` / `CRON_TZ=zone` is accepted and skipped (the zone is not looked
/// up: this crate does no I/O).
pub fn parse_schedule(spec: &str) -> Result<CronSchedule, CronError> {
    if spec.is_empty() {
        return Err(err("empty spec string".to_string()));
    }
    let mut spec = spec;
    if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
        let Some(space) = spec.find(' ') else {
            return Err(err(format!(
                "provided bad location {spec}: unknown time zone"
            )));
        };
        spec = spec[space..].trim();
    }
    if spec.starts_with('@') {
        return parse_descriptor(spec);
    }
    parse_fields(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(s: &str) -> String {
        parse_schedule(s).unwrap_err().to_string()
    }

    #[test]
    fn valid_schedules() {
        for s in [
            "* * * * *",
            "*/5 * * * *",
            "0 0 * * 0",
            "0 9-17 * * MON-FRI",
            "30 2 1,15 * ?",
            "0 0 1 jan,jul *",
            "@hourly",
            "@daily",
            "@midnight",
            "@weekly",
            "@monthly",
            "@yearly",
            "@annually",
            "@every 1h30m",
            "TZ=UTC 0 0 * * *",
            "5/15 * * * *",
        ] {
            assert!(parse_schedule(s).is_ok(), "{s}: {:?}", parse_schedule(s));
        }
        let s = parse_schedule("*/15 9 * * 1").unwrap();
        assert!(s.matches(30, 9, 3, 6, 1));
        assert!(!s.matches(31, 9, 3, 6, 1));
        assert!(!s.matches(30, 9, 3, 6, 2));
        assert_eq!(
            parse_schedule("@every 90s").unwrap(),
            CronSchedule::Every { millis: 90_000 }
        );
    }

    #[test]
    fn errors_match_robfig_cron() {
        assert_eq!(e(""), "empty spec string");
        assert_eq!(e("foo"), "expected exactly 5 fields, found 1: [foo]");
        assert_eq!(
            e("* * * *"),
            "expected exactly 5 fields, found 4: [* * * *]"
        );
        assert_eq!(e("60 * * * *"), "end of range (60) above maximum (59): 60");
        assert_eq!(
            e("* * 0 * *"),
            "beginning of range (0) below minimum (1): 0"
        );
        assert_eq!(
            e("5-1 * * * *"),
            "beginning of range (5) beyond end of range (1): 5-1"
        );
        assert_eq!(
            e("*/0 * * * *"),
            "step of range should be a positive number: */0"
        );
        assert_eq!(e("1-2-3 * * * *"), "too many hyphens: 1-2-3");
        assert_eq!(e("*/2/3 * * * *"), "too many slashes: */2/3");
        assert_eq!(
            e("x * * * *"),
            "failed to parse int from x: strconv.Atoi: parsing \"x\": invalid syntax"
        );
        assert_eq!(e("@fortnightly"), "unrecognized descriptor: @fortnightly");
        assert!(e("@every forever")
            .starts_with("failed to parse duration @every forever: time: invalid duration"));
    }
}
