//! Container logs as the kubelet serves them (upstream `pkg/kubelet/kuberuntime/logs`):
//! the runtime writes each line as `<RFC3339Nano time> <stream> <P|F> <content>` (P: a
//! partial line continued by the next entry); the kubelet returns the content, optionally
//! with timestamps, from `sinceSeconds`/`sinceTime`, the last `tailLines` lines, at most
//! `limitBytes`, and follows the file while the container runs.

/// The query of `/containerLogs/{ns}/{pod}/{container}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<usize>,
    pub limit_bytes: Option<usize>,
    pub since: Option<jiff::Timestamp>,
}

fn flag(v: &str) -> bool {
    matches!(v, "true" | "1" | "True" | "TRUE")
}

impl LogOptions {
    /// Parses the query string; `now` resolves `sinceSeconds`.
    pub fn parse(query: &str, now: jiff::Timestamp) -> Result<LogOptions, String> {
        let mut o = LogOptions::default();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "follow" => o.follow = flag(&v),
                "previous" => o.previous = flag(&v),
                "timestamps" => o.timestamps = flag(&v),
                "tailLines" => {
                    let n: i64 = v.parse().map_err(|_| format!("invalid tailLines {v:?}"))?;
                    o.tail_lines = Some(usize::try_from(n.max(0)).unwrap_or(0));
                }
                "limitBytes" => {
                    let n: i64 = v.parse().map_err(|_| format!("invalid limitBytes {v:?}"))?;
                    if n < 1 {
                        return Err("limitBytes must be a positive integer".into());
                    }
                    o.limit_bytes = Some(usize::try_from(n).unwrap_or(usize::MAX));
                }
                "sinceSeconds" => {
                    let n: i64 = v
                        .parse()
                        .map_err(|_| format!("invalid sinceSeconds {v:?}"))?;
                    if n < 1 {
                        return Err("sinceSeconds must be a positive integer".into());
                    }
                    o.since = now.checked_sub(jiff::SignedDuration::from_secs(n)).ok();
                }
                "sinceTime" => {
                    o.since = Some(v.parse().map_err(|_| format!("invalid sinceTime {v:?}"))?);
                }
                _ => {}
            }
        }
        Ok(o)
    }
}

/// One entry of a CRI log file.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub time: &'a str,
    pub stream: &'a str,
    pub partial: bool,
    pub content: &'a [u8],
}

/// Parses one line (without its newline); None for a malformed one.
pub fn parse_line(line: &[u8]) -> Option<Entry<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let stream = std::str::from_utf8(parts.next()?).ok()?;
    let tag = parts.next()?;
    let content = parts.next().unwrap_or(b"");
    Some(Entry {
        time,
        stream,
        partial: tag.first() == Some(&b'P'),
        content,
    })
}

/// Renders entries to the client's bytes, keeping state across calls (following).
#[derive(Debug)]
pub struct Renderer {
    options: LogOptions,
    /// Bytes still allowed by limitBytes.
    budget: Option<usize>,
    /// Whether the previous entry ended its line.
    at_line_start: bool,
}

impl Renderer {
    pub fn new(options: LogOptions) -> Renderer {
        Renderer {
            budget: options.limit_bytes,
            options,
            at_line_start: true,
        }
    }

    /// True once limitBytes is used up.
    pub fn exhausted(&self) -> bool {
        self.budget == Some(0)
    }

    fn push(&mut self, out: &mut Vec<u8>, bytes: &[u8]) {
        let n = self.budget.map_or(bytes.len(), |b| b.min(bytes.len()));
        out.extend_from_slice(&bytes[..n]);
        if let Some(b) = &mut self.budget {
            *b -= n;
        }
    }

    fn entry(&mut self, e: &Entry<'_>, out: &mut Vec<u8>) {
        if let Some(since) = self.options.since {
            if e.time.parse::<jiff::Timestamp>().is_ok_and(|t| t < since) {
                return;
            }
        }
        if self.options.timestamps && self.at_line_start {
            let stamp = format!("{} ", e.time);
            self.push(out, stamp.as_bytes());
        }
        self.push(out, e.content);
        if !e.partial {
            self.push(out, b"\n");
        }
        self.at_line_start = !e.partial;
    }

    /// Renders the complete lines of `data` (a whole file, or what was appended since the
    /// last call), applying tailLines the first time only.
    pub fn render(&mut self, data: &[u8], first: bool) -> Vec<u8> {
        let lines: Vec<&[u8]> = data
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        let entries: Vec<Entry<'_>> = lines.iter().filter_map(|l| parse_line(l)).collect();
        let skip = match (first, self.options.tail_lines) {
            (true, Some(n)) => {
                // Count whole lines from the end: a run of partials plus its final entry.
                let mut seen = 0;
                let mut start = entries.len();
                for (i, e) in entries.iter().enumerate().rev() {
                    if !e.partial {
                        if seen == n {
                            break;
                        }
                        seen += 1;
                    }
                    start = i;
                }
                if n == 0 {
                    entries.len()
                } else {
                    start
                }
            }
            _ => 0,
        };
        let mut out = Vec::new();
        for e in &entries[skip..] {
            if self.exhausted() {
                break;
            }
            self.entry(e, &mut out);
        }
        out
    }
}

/// Splits `data` after its last newline: the complete lines and the rest.
pub fn complete_lines(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().rposition(|b| *b == b'\n') {
        Some(i) => data.split_at(i + 1),
        None => (&[], data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &[u8] = b"2026-12-01T10:00:00.000000001Z stdout F one\n\
2026-12-01T10:00:01.000000001Z stderr F two\n\
2026-12-01T10:00:02.000000001Z stdout P thr\n\
2026-12-01T10:00:02.500000001Z stdout F ee\n\
2026-12-01T10:00:03.000000001Z stdout F four\n";

    fn now() -> jiff::Timestamp {
        "2026-12-01T10:00:04Z".parse().unwrap()
    }

    fn render(query: &str) -> String {
        let o = LogOptions::parse(query, now()).unwrap();
        String::from_utf8(Renderer::new(o).render(LOG, true)).unwrap()
    }

    #[test]
    fn renders_as_upstream() {
        assert_eq!(render(""), "one\ntwo\nthree\nfour\n");
        assert_eq!(render("tailLines=2"), "three\nfour\n");
        assert_eq!(render("tailLines=0"), "");
        assert_eq!(render("tailLines=10"), "one\ntwo\nthree\nfour\n");
        assert_eq!(render("limitBytes=6"), "one\ntw");
        assert_eq!(render("sinceSeconds=2"), "three\nfour\n");
        assert_eq!(
            render("sinceTime=2026-12-01T10:00:01Z"),
            "two\nthree\nfour\n"
        );
        assert_eq!(
            render("timestamps=true&tailLines=1"),
            "2026-12-01T10:00:03.000000001Z four\n"
        );
        let o = LogOptions::parse("follow=true&previous=1", now()).unwrap();
        assert!(o.follow && o.previous);
        assert!(LogOptions::parse("tailLines=x", now()).is_err());
        assert!(LogOptions::parse("limitBytes=0", now()).is_err());
    }

    #[test]
    fn following_renders_appended_lines() {
        let (done, rest) = complete_lines(b"a\nb\nc");
        assert_eq!((done, rest), (&b"a\nb\n"[..], &b"c"[..]));
        let mut r = Renderer::new(LogOptions::default());
        let first = r.render(b"2026-12-01T10:00:00Z stdout P ab\n", true);
        let next = r.render(b"2026-12-01T10:00:01Z stdout F cd\n", false);
        assert_eq!([first, next].concat(), b"abcd\n");
    }
}
