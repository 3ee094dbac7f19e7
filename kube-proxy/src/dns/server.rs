//! The DNS server on the cluster DNS address (upstream: CoreDNS's server with the
//! `kubernetes`, `cache` and `forward` plugins in that order): UDP and TCP port 53,
//! one question per message. Names of the cluster zone (and reverse names of Service
//! and headless endpoint addresses) are answered from the [`Zone`] without waiting on
//! anything; the rest from the forwarder's cache, and only cache misses wait on an
//! upstream resolver, in their own task so one slow upstream never stalls the others.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use component_base::shutdown::Shutdown;
use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Record, RecordType};
use parking_lot::RwLock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tracing::{debug, Instrument};

use super::forward::Forwarder;
use super::metrics::{rcode_label, DnsMetrics};
use super::records::{Answer, Zone};

/// The largest UDP answer without EDNS (RFC 1035).
const PLAIN_UDP_SIZE: usize = 512;
/// The EDNS payload size this server offers and honours at most (DNS flag day 2020).
const EDNS_UDP_SIZE: u16 = 1232;
/// An idle TCP connection is closed after this long (CoreDNS's read timeout is 3 s
/// for the first query, 10 s idle).
const TCP_IDLE: Duration = Duration::from_secs(10);
/// UDP receive loops sharing the socket.
const UDP_WORKERS: usize = 2;
/// Queries waiting on an upstream at once; more are REFUSED (CoreDNS forward's
/// `max_concurrent`), so a flood of unique names cannot pile up tasks and memory.
pub const MAX_CONCURRENT_FORWARDS: usize = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    fn label(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// Answers queries from the zone, the cache and the upstreams.
pub struct Handler {
    pub zone: Arc<RwLock<Zone>>,
    pub forwarder: Arc<Forwarder>,
    metrics: DnsMetrics,
    /// The zone as CoreDNS labels it in metrics (`cluster.local.`).
    zone_label: String,
    forwards: Arc<tokio::sync::Semaphore>,
}

/// A query that waits on an upstream.
pub struct Pending {
    response: Message,
    /// What to ask the upstream.
    upstream: Query,
    /// An ExternalName's CNAME, put before the upstream's answers.
    cname: Option<Record>,
    started: Instant,
    limit: usize,
}

/// What to do with one query.
pub enum Step {
    /// Send this (None: nothing to send).
    Reply(Option<Vec<u8>>),
    /// Ask an upstream first ([`Handler::finish`]).
    Forward(Box<Pending>),
}

fn type_label(qtype: RecordType) -> &'static str {
    match qtype {
        RecordType::A => "A",
        RecordType::AAAA => "AAAA",
        RecordType::SRV => "SRV",
        RecordType::PTR => "PTR",
        RecordType::CNAME => "CNAME",
        RecordType::TXT => "TXT",
        RecordType::SOA => "SOA",
        RecordType::MX => "MX",
        RecordType::NS => "NS",
        RecordType::HTTPS => "HTTPS",
        RecordType::ANY => "ANY",
        _ => "other",
    }
}

/// The response's bytes; for UDP, truncated (TC set, no records) when they exceed
/// `limit`, so the client retries over TCP.
fn encode(response: &Message, limit: usize) -> Option<Vec<u8>> {
    let bytes = response.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    response.truncate().to_vec().ok()
}

impl Handler {
    pub fn new(zone: Arc<RwLock<Zone>>, forwarder: Arc<Forwarder>, metrics: DnsMetrics) -> Handler {
        let zone_label = zone.read().domain().to_string();
        Handler {
            zone,
            forwarder,
            metrics,
            zone_label,
            forwards: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_FORWARDS)),
        }
    }

    fn count(&self, zone: &str, response: &Message, plugin: &str, started: Instant) {
        self.metrics
            .responses
            .with_label_values(&[zone, rcode_label(response.response_code()), plugin])
            .inc();
        let qtype = response
            .queries()
            .first()
            .map_or("other", |q| type_label(q.query_type()));
        self.metrics
            .request_duration
            .with_label_values(&[zone, qtype])
            .observe(started.elapsed().as_secs_f64());
    }

    /// Everything that needs no upstream: parsing, the zone, the cache.
    pub fn begin(&self, bytes: &[u8], transport: Transport, from: SocketAddr) -> Step {
        let started = Instant::now();
        let request = match Message::from_vec(bytes) {
            Ok(m) => m,
            Err(e) => {
                debug!(%from, error = %e, "unparsable query");
                if bytes.len() < 12 {
                    return Step::Reply(None);
                }
                let id = u16::from_be_bytes([bytes[0], bytes[1]]);
                return Step::Reply(
                    Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
                        .to_vec()
                        .ok(),
                );
            }
        };
        if request.message_type() != MessageType::Query {
            return Step::Reply(None);
        }
        let mut response = Message::new();
        response.set_header(Header::response_from_request(request.header()));
        response.set_recursion_available(true);
        response.add_queries(request.queries().iter().cloned());
        let limit = match (transport, request.extensions()) {
            (Transport::Tcp, _) => usize::from(u16::MAX),
            (Transport::Udp, Some(edns)) => {
                usize::from(edns.max_payload().clamp(512, EDNS_UDP_SIZE))
            }
            (Transport::Udp, None) => PLAIN_UDP_SIZE,
        };
        if request.extensions().is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(EDNS_UDP_SIZE);
            response.set_edns(edns);
        }
        let family = if from.is_ipv4() { "1" } else { "2" };
        let [query] = request.queries() else {
            response.set_response_code(ResponseCode::FormErr);
            return Step::Reply(encode(&response, limit));
        };
        let in_zone = self.zone.read().contains(query.name());
        let zone_label = if in_zone {
            self.zone_label.as_str()
        } else {
            "."
        };
        self.metrics
            .requests
            .with_label_values(&[
                zone_label,
                transport.label(),
                family,
                type_label(query.query_type()),
            ])
            .inc();
        if request.op_code() != OpCode::Query {
            response.set_response_code(ResponseCode::NotImp);
            self.count(zone_label, &response, "", started);
            return Step::Reply(encode(&response, limit));
        }
        let answer = self.zone.read().answer(query.name(), query.query_type());
        let (cname, upstream) = match answer {
            Answer::Records {
                answers,
                additionals,
            } => {
                response.set_authoritative(true);
                response.insert_answers(answers);
                response.insert_additionals(additionals);
                self.count(&self.zone_label, &response, "kubernetes", started);
                return Step::Reply(encode(&response, limit));
            }
            Answer::NoData(soa) => {
                response.set_authoritative(true);
                response.add_name_server(soa);
                self.count(&self.zone_label, &response, "kubernetes", started);
                return Step::Reply(encode(&response, limit));
            }
            Answer::NxDomain(soa) => {
                response.set_authoritative(true);
                response.set_response_code(ResponseCode::NXDomain);
                response.add_name_server(soa);
                self.count(&self.zone_label, &response, "kubernetes", started);
                return Step::Reply(encode(&response, limit));
            }
            Answer::Alias { cname, target } => {
                response.set_authoritative(true);
                let mut upstream = query.clone();
                upstream.set_name(target.clone());
                // A target inside the zone is chased here, once.
                if self.zone.read().contains(&target) {
                    response.add_answer(cname);
                    match self.zone.read().answer(&target, query.query_type()) {
                        Answer::Records { answers, .. } => response.insert_answers(
                            response.answers().iter().cloned().chain(answers).collect(),
                        ),
                        Answer::NxDomain(soa) => {
                            response.set_response_code(ResponseCode::NXDomain);
                            response.add_name_server(soa);
                        }
                        Answer::NoData(soa) => {
                            response.add_name_server(soa);
                        }
                        Answer::Alias { .. } | Answer::NotOurs => {}
                    }
                    self.count(&self.zone_label, &response, "kubernetes", started);
                    return Step::Reply(encode(&response, limit));
                }
                (Some(cname), upstream)
            }
            Answer::NotOurs => (None, query.clone()),
        };
        let pending = Pending {
            response,
            upstream,
            cname,
            started,
            limit,
        };
        match self.forwarder.cached(&pending.upstream) {
            Some(upstream) => Step::Reply(self.complete(pending, Ok(upstream), "cache")),
            None => Step::Forward(Box::new(pending)),
        }
    }

    /// Asks the upstreams for a query [`Handler::begin`] could not answer (REFUSED
    /// when [`MAX_CONCURRENT_FORWARDS`] are already waiting).
    pub async fn finish(&self, mut pending: Pending) -> Option<Vec<u8>> {
        let Ok(_permit) = self.forwards.clone().try_acquire_owned() else {
            pending.response.set_response_code(ResponseCode::Refused);
            let zone = if pending.cname.is_some() {
                self.zone_label.clone()
            } else {
                ".".into()
            };
            self.count(&zone, &pending.response, "forward", pending.started);
            return encode(&pending.response, pending.limit);
        };
        let result = self.forwarder.fetch(&pending.upstream).await;
        if let Err(e) = &result {
            debug!(error = %e, "forwarding failed");
        }
        self.complete(pending, result.map_err(|_| ()), "forward")
    }

    fn complete(
        &self,
        mut pending: Pending,
        upstream: Result<Message, ()>,
        plugin: &str,
    ) -> Option<Vec<u8>> {
        let response = &mut pending.response;
        let zone = if pending.cname.is_some() {
            self.zone_label.clone()
        } else {
            ".".to_string()
        };
        let mut answers: Vec<Record> = pending.cname.take().into_iter().collect();
        match upstream {
            Ok(m) => {
                response.set_response_code(m.response_code());
                answers.extend(m.answers().iter().cloned());
                response.insert_name_servers(m.name_servers().to_vec());
                response.insert_additionals(
                    m.additionals()
                        .iter()
                        .filter(|r| r.record_type() != RecordType::OPT)
                        .cloned()
                        .collect(),
                );
            }
            Err(()) => {
                response.set_response_code(ResponseCode::ServFail);
            }
        }
        response.insert_answers(answers);
        self.count(&zone, response, plugin, pending.started);
        encode(response, pending.limit)
    }

    /// One query, start to end (the TCP path and tests).
    pub async fn handle(
        &self,
        bytes: &[u8],
        transport: Transport,
        from: SocketAddr,
    ) -> Option<Vec<u8>> {
        match self.begin(bytes, transport, from) {
            Step::Reply(reply) => reply,
            Step::Forward(pending) => self.finish(*pending).await,
        }
    }
}

/// Serves UDP on `socket` until shutdown.
pub async fn serve_udp(socket: UdpSocket, handler: Arc<Handler>, mut shutdown: Shutdown) {
    let socket = Arc::new(socket);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..UDP_WORKERS {
        let socket = socket.clone();
        let handler = handler.clone();
        workers.spawn(
            async move {
                let mut buf = vec![0u8; 65535];
                loop {
                    let (n, from) = match socket.recv_from(&mut buf).await {
                        Ok(x) => x,
                        Err(e) => {
                            debug!(error = %e, "udp receive failed");
                            continue;
                        }
                    };
                    match handler.begin(&buf[..n], Transport::Udp, from) {
                        Step::Reply(Some(reply)) => {
                            let _ = socket.send_to(&reply, from).await;
                        }
                        Step::Reply(None) => {}
                        Step::Forward(pending) => {
                            let socket = socket.clone();
                            let handler = handler.clone();
                            tokio::spawn(
                                async move {
                                    if let Some(reply) = handler.finish(*pending).await {
                                        let _ = socket.send_to(&reply, from).await;
                                    }
                                }
                                .in_current_span(),
                            );
                        }
                    }
                }
            }
            .in_current_span(),
        );
    }
    shutdown.signaled().await;
    workers.abort_all();
}

/// Serves TCP (length-prefixed messages, RFC 7766) on `listener` until shutdown.
pub async fn serve_tcp(listener: TcpListener, handler: Arc<Handler>, mut shutdown: Shutdown) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, from)) => {
                    let handler = handler.clone();
                    tokio::spawn(connection(stream, from, handler).in_current_span());
                }
                Err(e) => debug!(error = %e, "tcp accept failed"),
            },
            () = shutdown.signaled() => return,
        }
    }
}

async fn connection(mut stream: TcpStream, from: SocketAddr, handler: Arc<Handler>) {
    loop {
        let Ok(Ok(len)) = tokio::time::timeout(TCP_IDLE, stream.read_u16()).await else {
            return;
        };
        let mut buf = vec![0u8; usize::from(len)];
        if !matches!(
            tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut buf)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let Some(reply) = handler.handle(&buf, Transport::Tcp, from).await else {
            continue;
        };
        let Ok(len) = u16::try_from(reply.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&reply);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Name;

    fn handler() -> Handler {
        let mut zone = Zone::new("cluster.local").unwrap();
        zone.apply_service(
            &serde_yaml::from_str(
                "metadata: {namespace: ns, name: many}\nspec: {clusterIP: None, ports: [{name: http, port: 80}]}",
            )
            .unwrap(),
        );
        let endpoints: Vec<String> = (1..=60)
            .map(|i| format!("{{addresses: [10.244.1.{i}]}}"))
            .collect();
        zone.apply_slice(
            &serde_yaml::from_str(&format!(
                "metadata: {{namespace: ns, name: many-1, labels: {{kubernetes.io/service-name: many}}}}\n\
                 addressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{}]",
                endpoints.join(", ")
            ))
            .unwrap(),
        );
        let metrics = DnsMetrics::new(&prometheus::Registry::new()).unwrap();
        let forwarder = Arc::new(Forwarder::new(Vec::new(), metrics.clone()));
        Handler::new(Arc::new(RwLock::new(zone)), forwarder, metrics)
    }

    fn query(name: &str, qtype: RecordType, edns: bool) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(7)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(4096);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    fn from() -> SocketAddr {
        "10.244.0.9:5353".parse().unwrap()
    }

    async fn ask(h: &Handler, bytes: &[u8], transport: Transport) -> Message {
        Message::from_vec(&h.handle(bytes, transport, from()).await.unwrap()).unwrap()
    }

    #[tokio::test]
    async fn big_answers_are_truncated_over_udp_and_whole_over_tcp() {
        let h = handler();
        let q = query("many.ns.svc.cluster.local.", RecordType::A, false);
        let udp = ask(&h, &q, Transport::Udp).await;
        assert_eq!(udp.id(), 7);
        assert!(udp.truncated() && udp.answers().is_empty());
        let tcp = ask(&h, &q, Transport::Tcp).await;
        assert!(!tcp.truncated());
        assert_eq!(tcp.answers().len(), 60);
        assert!(tcp.authoritative() && tcp.recursion_available());
        // With EDNS (capped at 1232 bytes) all 60 fit in one datagram.
        let edns = ask(
            &h,
            &query("many.ns.svc.cluster.local.", RecordType::A, true),
            Transport::Udp,
        )
        .await;
        assert!(!edns.truncated());
        assert_eq!(edns.answers().len(), 60);
        assert_eq!(edns.max_payload(), EDNS_UDP_SIZE);
    }

    #[tokio::test]
    async fn errors_are_answered_not_dropped() {
        let h = handler();
        // Garbage with a header: FORMERR with the same id.
        let mut junk = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
        junk.extend_from_slice(&[0xff; 5]);
        let m = ask(&h, &junk, Transport::Udp).await;
        assert_eq!((m.id(), m.response_code()), (0x1234, ResponseCode::FormErr));
        // Less than a header: nothing to answer.
        assert!(h.handle(&[1, 2, 3], Transport::Udp, from()).await.is_none());
        // Another opcode: NOTIMP.
        let mut notify = Message::from_vec(&query("x.", RecordType::SOA, false)).unwrap();
        notify.set_op_code(OpCode::Notify);
        let m = ask(&h, &notify.to_vec().unwrap(), Transport::Udp).await;
        assert_eq!(m.response_code(), ResponseCode::NotImp);
        // No upstream: SERVFAIL for names outside the zone, the zone still answers.
        let m = ask(
            &h,
            &query("example.com.", RecordType::A, false),
            Transport::Udp,
        )
        .await;
        assert_eq!(m.response_code(), ResponseCode::ServFail);
        let m = ask(
            &h,
            &query("nope.ns.svc.cluster.local.", RecordType::A, false),
            Transport::Udp,
        )
        .await;
        assert_eq!(m.response_code(), ResponseCode::NXDomain);
        assert_eq!(m.name_servers()[0].record_type(), RecordType::SOA);
    }
}
