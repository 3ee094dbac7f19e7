//! Names outside the cluster zone (upstream: CoreDNS's `forward . /etc/resolv.conf` behind
//! its `cache` plugin, as NodeLocal DNSCache runs them): the node's upstream resolvers
//! from a resolv.conf, tried in order over UDP (TCP when the answer is truncated), and a
//! small cache in front: positive answers for their smallest TTL capped at
//! [`MAX_POSITIVE_TTL`], NXDOMAIN and NODATA for the SOA's negative TTL capped at
//! [`MAX_NEGATIVE_TTL`]. Server failures are not cached.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::metrics::DnsMetrics;

/// Positive answers are kept at most this long (NodeLocal DNSCache's `cache 30`).
pub const MAX_POSITIVE_TTL: u32 = 30;
/// Negative answers are kept at most this long.
pub const MAX_NEGATIVE_TTL: u32 = 5;
/// How many answers the cache holds.
pub const CACHE_CAPACITY: usize = 10_000;
/// How long one upstream gets to answer before the next is tried.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    ReadResolvConf {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no upstream resolver answered {name} {qtype}")]
    NoAnswer { name: Name, qtype: RecordType },
    #[error("no upstream resolvers configured")]
    NoUpstreams,
}

/// The `nameserver` lines of a resolv.conf, port 53, leaving out `exclude` (the
/// cluster DNS address itself: forwarding to it would loop). None listed: 127.0.0.1,
/// as the C library assumes.
pub fn read_resolv_conf(path: &Path, exclude: &[IpAddr]) -> Result<Vec<SocketAddr>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ReadResolvConf {
        path: path.display().to_string(),
        source,
    })?;
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        // A zone index (fe80::1%eth0) is dropped: rare, and std cannot parse it.
        let Some(ip) = words
            .next()
            .and_then(|w| w.split('%').next())
            .and_then(|w| w.parse::<IpAddr>().ok())
        else {
            continue;
        };
        if !exclude.contains(&ip) {
            out.push(SocketAddr::new(ip, 53));
        }
    }
    if out.is_empty() {
        out.push(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53));
    }
    Ok(out)
}

/// What the cache is keyed by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    name: Name,
    qtype: RecordType,
    qclass: DNSClass,
}

struct Entry {
    /// The upstream's answer sections and response code (header id unused).
    message: Message,
    stored: Instant,
    ttl: u32,
    denial: bool,
}

/// The answer cache.
pub struct Cache {
    entries: HashMap<Key, Entry>,
    capacity: usize,
}

/// Whether an answer came from the cache or the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Cache,
    Upstream,
}

fn key(query: &Query) -> Key {
    Key {
        name: query.name().to_lowercase(),
        qtype: query.query_type(),
        qclass: query.query_class(),
    }
}

/// How long `message` may be cached and whether it is a denial; None: not cacheable.
fn cache_ttl(message: &Message) -> Option<(u32, bool)> {
    let negative_ttl = || {
        message
            .name_servers()
            .iter()
            .find_map(|r| match r.data() {
                RData::SOA(soa) => Some(r.ttl().min(soa.minimum())),
                _ => None,
            })
            .unwrap_or(MAX_NEGATIVE_TTL)
            .min(MAX_NEGATIVE_TTL)
    };
    match message.response_code() {
        ResponseCode::NXDomain => Some((negative_ttl(), true)),
        ResponseCode::NoError if message.answers().is_empty() => Some((negative_ttl(), true)),
        ResponseCode::NoError => message
            .answers()
            .iter()
            .map(hickory_proto::rr::Record::ttl)
            .min()
            .map(|ttl| (ttl.min(MAX_POSITIVE_TTL), false)),
        _ => None,
    }
    .filter(|(ttl, _)| *ttl > 0)
}

impl Cache {
    pub fn new(capacity: usize) -> Cache {
        Cache {
            entries: HashMap::new(),
            capacity,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A copy of the cached answer with its TTLs counted down; and whether it is a
    /// denial.
    pub fn get(&self, query: &Query, now: Instant) -> Option<(Message, bool)> {
        let entry = self.entries.get(&key(query))?;
        let age = u32::try_from(now.saturating_duration_since(entry.stored).as_secs())
            .unwrap_or(u32::MAX);
        if age >= entry.ttl {
            return None;
        }
        let mut message = entry.message.clone();
        let count_down = |records: &mut Vec<hickory_proto::rr::Record>| {
            for r in records {
                let ttl = r.ttl().saturating_sub(age).min(entry.ttl - age);
                r.set_ttl(ttl);
            }
        };
        count_down(message.answers_mut());
        count_down(message.name_servers_mut());
        count_down(message.additionals_mut());
        Some((message, entry.denial))
    }

    /// Keeps `message` (the upstream's answer to `query`) when it is cacheable.
    pub fn put(&mut self, query: &Query, message: &Message, now: Instant) {
        let Some((ttl, denial)) = cache_ttl(message) else {
            return;
        };
        if self.entries.len() >= self.capacity {
            self.entries.retain(|_, e| {
                now.saturating_duration_since(e.stored).as_secs() < u64::from(e.ttl)
            });
            // Still full: make room by dropping an arbitrary tenth.
            if self.entries.len() >= self.capacity {
                let drop: Vec<Key> = self
                    .entries
                    .keys()
                    .take(self.capacity / 10 + 1)
                    .cloned()
                    .collect();
                for k in drop {
                    self.entries.remove(&k);
                }
            }
        }
        let mut stored = Message::new();
        stored
            .set_response_code(message.response_code())
            .set_message_type(MessageType::Response);
        stored.insert_answers(message.answers().to_vec());
        stored.insert_name_servers(message.name_servers().to_vec());
        stored.insert_additionals(
            message
                .additionals()
                .iter()
                .filter(|r| r.record_type() != RecordType::OPT)
                .cloned()
                .collect(),
        );
        self.entries.insert(
            key(query),
            Entry {
                message: stored,
                stored: now,
                ttl,
                denial,
            },
        );
    }
}

/// The forwarder with its cache.
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    cache: Mutex<Cache>,
    metrics: DnsMetrics,
    timeout: Duration,
}

/// The request sent upstream for `query`: recursion desired, EDNS with a 1232-byte
/// payload (the DNS flag day size) so most answers fit in one datagram.
fn upstream_request(query: &Query) -> Message {
    let mut m = Message::new();
    m.set_id(rand::random())
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(query.clone());
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    m.set_edns(edns);
    m
}

fn unspecified_for(addr: &SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    }
}

fn answers(request: &Message, response: &Message) -> bool {
    response.id() == request.id()
        && response.message_type() == MessageType::Response
        && response.queries() == request.queries()
}

async fn exchange_udp(to: SocketAddr, request: &Message, bytes: &[u8]) -> std::io::Result<Message> {
    let sock = UdpSocket::bind(unspecified_for(&to)).await?;
    sock.connect(to).await?;
    sock.send(bytes).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await?;
        // Anything else (a late or spoofed datagram) is ignored.
        if let Ok(m) = Message::from_vec(&buf[..n]) {
            if answers(request, &m) {
                return Ok(m);
            }
        }
    }
}

async fn exchange_tcp(to: SocketAddr, request: &Message, bytes: &[u8]) -> std::io::Result<Message> {
    let mut stream = TcpStream::connect(to).await?;
    let len = u16::try_from(bytes.len()).map_err(|_| std::io::Error::other("query too long"))?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    stream.write_all(&framed).await?;
    loop {
        let len = stream.read_u16().await?;
        let mut buf = vec![0u8; usize::from(len)];
        stream.read_exact(&mut buf).await?;
        if let Ok(m) = Message::from_vec(&buf) {
            if answers(request, &m) {
                return Ok(m);
            }
        }
    }
}

impl Forwarder {
    pub fn new(upstreams: Vec<SocketAddr>, metrics: DnsMetrics) -> Forwarder {
        Forwarder {
            upstreams,
            cache: Mutex::new(Cache::new(CACHE_CAPACITY)),
            metrics,
            timeout: UPSTREAM_TIMEOUT,
        }
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// Answers `query` from the cache, else from the first upstream that answers.
    pub async fn resolve(&self, query: &Query) -> Result<(Message, Source), Error> {
        if let Some(message) = self.cached(query) {
            return Ok((message, Source::Cache));
        }
        Ok((self.fetch(query).await?, Source::Upstream))
    }

    /// The cached answer to `query`, if any (counted as a hit).
    pub fn cached(&self, query: &Query) -> Option<Message> {
        let (message, denial) = self.cache.lock().get(query, Instant::now())?;
        self.metrics
            .cache_hits
            .with_label_values(&[if denial { "denial" } else { "success" }])
            .inc();
        Some(message)
    }

    /// Asks the upstreams in order (a cache miss); the answer is cached.
    pub async fn fetch(&self, query: &Query) -> Result<Message, Error> {
        self.metrics.cache_misses.inc();
        if self.upstreams.is_empty() {
            return Err(Error::NoUpstreams);
        }
        let request = upstream_request(query);
        let no_answer = || Error::NoAnswer {
            name: query.name().clone(),
            qtype: query.query_type(),
        };
        let bytes = request.to_vec().map_err(|_| no_answer())?;
        for to in &self.upstreams {
            let started = Instant::now();
            let mut result =
                tokio::time::timeout(self.timeout, exchange_udp(*to, &request, &bytes)).await;
            if let Ok(Ok(m)) = &result {
                if m.truncated() {
                    result =
                        tokio::time::timeout(self.timeout, exchange_tcp(*to, &request, &bytes))
                            .await;
                }
            }
            match result {
                Ok(Ok(message)) => {
                    self.metrics
                        .forward_duration
                        .with_label_values(&[
                            to.to_string().as_str(),
                            super::metrics::rcode_label(message.response_code()),
                        ])
                        .observe(started.elapsed().as_secs_f64());
                    self.cache.lock().put(query, &message, Instant::now());
                    return Ok(message);
                }
                Ok(Err(e)) => tracing::debug!(%to, error = %e, "upstream resolver failed"),
                Err(_) => tracing::debug!(%to, "upstream resolver timed out"),
            }
        }
        Err(no_answer())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::Record;

    fn query(name: &str) -> Query {
        Query::query(Name::from_ascii(name).unwrap(), RecordType::A)
    }

    fn answer(ttl: u32) -> Message {
        let mut m = Message::new();
        m.set_message_type(MessageType::Response);
        m.add_answer(Record::from_rdata(
            Name::from_ascii("example.com.").unwrap(),
            ttl,
            RData::A(A::new(192, 0, 2, 1)),
        ));
        m
    }

    fn nxdomain(soa_min: u32) -> Message {
        let mut m = Message::new();
        m.set_message_type(MessageType::Response)
            .set_response_code(ResponseCode::NXDomain);
        let apex = Name::from_ascii("com.").unwrap();
        m.add_name_server(Record::from_rdata(
            apex.clone(),
            900,
            RData::SOA(SOA::new(apex.clone(), apex, 1, 1, 1, 1, soa_min)),
        ));
        m
    }

    #[test]
    fn positive_answers_are_capped_and_counted_down() {
        let mut c = Cache::new(10);
        let t0 = Instant::now();
        c.put(&query("Example.COM."), &answer(300), t0);
        let (m, denial) = c
            .get(&query("example.com."), t0 + Duration::from_secs(10))
            .unwrap();
        assert!(!denial);
        assert_eq!(m.answers()[0].ttl(), MAX_POSITIVE_TTL - 10);
        assert!(c
            .get(&query("example.com."), t0 + Duration::from_secs(30))
            .is_none());
        c.put(&query("short.example."), &answer(3), t0);
        assert!(c
            .get(&query("short.example."), t0 + Duration::from_secs(3))
            .is_none());
    }

    #[test]
    fn denials_are_cached_briefly_and_failures_not_at_all() {
        let mut c = Cache::new(10);
        let t0 = Instant::now();
        c.put(&query("nope.com."), &nxdomain(3600), t0);
        let (m, denial) = c
            .get(&query("nope.com."), t0 + Duration::from_secs(1))
            .unwrap();
        assert!(denial);
        assert_eq!(m.response_code(), ResponseCode::NXDomain);
        assert!(c
            .get(
                &query("nope.com."),
                t0 + Duration::from_secs(u64::from(MAX_NEGATIVE_TTL))
            )
            .is_none());
        let mut fail = Message::new();
        fail.set_response_code(ResponseCode::ServFail);
        c.put(&query("broken.com."), &fail, t0);
        assert!(c.get(&query("broken.com."), t0).is_none());
    }

    #[test]
    fn a_full_cache_makes_room() {
        let mut c = Cache::new(10);
        let t0 = Instant::now();
        for i in 0..25 {
            c.put(&query(&format!("n{i}.example.")), &answer(60), t0);
        }
        assert!(c.len() <= 10);
        assert!(c.get(&query("n24.example."), t0).is_some());
    }

    #[test]
    fn resolv_conf_nameservers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(
            &path,
            "# comment\nsearch example\nnameserver 10.0.0.53\nnameserver 10.96.0.10\nnameserver fd00::53\nnameserver bogus\n",
        )
        .unwrap();
        let got = read_resolv_conf(&path, &["10.96.0.10".parse().unwrap()]).unwrap();
        assert_eq!(
            got,
            vec![
                "10.0.0.53:53".parse::<SocketAddr>().unwrap(),
                "[fd00::53]:53".parse().unwrap()
            ]
        );
        std::fs::write(&path, "search x\n").unwrap();
        assert_eq!(
            read_resolv_conf(&path, &[]).unwrap(),
            vec!["127.0.0.1:53".parse().unwrap()]
        );
        assert!(read_resolv_conf(Path::new("/does/not/exist"), &[]).is_err());
    }
}
