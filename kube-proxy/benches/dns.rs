//! Node-local cluster DNS under load: the DNS server on one core (a current-thread
//! runtime) answering a load generator on the node over UDP loopback, with 10,000
//! Services in its index. Prints queries per second and latency percentiles for
//! cluster names and for forwarded names served from the cache, and the memory the
//! index adds at 10,000 Services (resident set growth while it is filled from API
//! objects built beforehand).
//!
//! `cargo bench -p kube-proxy --bench dns` for the figures; without `--bench` (as
//! `cargo test --benches` runs it) a short smoke run.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube_proxy::dns::forward::Forwarder;
use kube_proxy::dns::metrics::DnsMetrics;
use kube_proxy::dns::records::Zone;
use kube_proxy::dns::server::{self, Handler};
use parking_lot::RwLock;

const SERVICES: usize = 10_000;
/// Queries in flight from the load generator.
const WINDOW: usize = 16;

/// Resident set size of this process in bytes.
fn rss() -> u64 {
    let text = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = text
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn service(i: usize) -> Service {
    let ns = format!("ns-{}", i % 100);
    let spec = if i.is_multiple_of(10) {
        serde_json::json!({"clusterIP": "None", "ports": [{"name": "http", "port": 80}]})
    } else {
        serde_json::json!({
            "clusterIP": format!("10.96.{}.{}", (i / 250) % 256, i % 250 + 1),
            "ports": [{"name": "http", "port": 80}, {"name": "metrics", "port": 9090}]
        })
    };
    serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": ns, "name": format!("svc-{i}")},
        "spec": spec,
    }))
    .unwrap()
}

fn slice(i: usize) -> EndpointSlice {
    let ns = format!("ns-{}", i % 100);
    // Two endpoints each; those of headless Services (StatefulSets) have hostnames.
    let endpoints: Vec<_> = (0..2)
        .map(|k| {
            let mut ep = serde_json::json!({
                "addresses": [format!("10.{}.{}.{}", 100 + k, (i / 250) % 256, i % 250 + 1)],
                "conditions": {"ready": true},
                "nodeName": "node-a",
            });
            if i.is_multiple_of(10) {
                ep["hostname"] = serde_json::json!(format!("pod-{k}"));
            }
            ep
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": ns, "name": format!("svc-{i}-abcde"),
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    }))
    .unwrap()
}

/// A resolver on loopback: every A question gets 192.0.2.1 with a long TTL.
fn upstream() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                return;
            };
            let Ok(req) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut resp = Message::new();
            resp.set_id(req.id())
                .set_message_type(MessageType::Response)
                .set_op_code(OpCode::Query)
                .add_queries(req.queries().iter().cloned());
            if let Some(q) = req.queries().first() {
                resp.add_answer(Record::from_rdata(
                    q.name().clone(),
                    300,
                    RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
                ));
            }
            let _ = socket.send_to(&resp.to_vec().unwrap(), from);
        }
    });
    addr
}

fn query_bytes(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(0)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m.to_vec().unwrap()
}

struct Figures {
    qps: f64,
    p50: Duration,
    p99: Duration,
    errors: usize,
}

/// Sends `total` queries (round robin over `queries`) with [`WINDOW`] in flight.
fn load(server: SocketAddr, queries: &[Vec<u8>], total: usize) -> Figures {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(server).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut sent_at = vec![None::<Instant>; 65536];
    let mut latencies = Vec::with_capacity(total);
    let mut errors = 0;
    let mut next = 0usize;
    let send = |next: &mut usize, sent_at: &mut Vec<Option<Instant>>| {
        let id = u16::try_from(*next % 65536).unwrap();
        let mut bytes = queries[*next % queries.len()].clone();
        bytes[..2].copy_from_slice(&id.to_be_bytes());
        sent_at[usize::from(id)] = Some(Instant::now());
        socket.send(&bytes).unwrap();
        *next += 1;
    };
    let started = Instant::now();
    for _ in 0..WINDOW.min(total) {
        send(&mut next, &mut sent_at);
    }
    let mut buf = [0u8; 4096];
    let mut received = 0;
    while received < total {
        let Ok(n) = socket.recv(&mut buf) else {
            // A lost datagram: count it and keep the window full.
            errors += 1;
            received += 1;
            if next < total {
                send(&mut next, &mut sent_at);
            }
            continue;
        };
        received += 1;
        let id = u16::from_be_bytes([buf[0], buf[1]]);
        if let Some(t) = sent_at[usize::from(id)].take() {
            latencies.push(t.elapsed());
        }
        let rcode = buf[3] & 0x0f;
        if n < 12 || rcode == 2 {
            errors += 1;
        }
        if next < total {
            send(&mut next, &mut sent_at);
        }
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Figures {
        qps: total as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
        errors,
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let total = if full { 200_000 } else { 5_000 };

    // The index at 10,000 Services (a tenth headless, each with a 2-endpoint slice).
    // The API objects are built first, so the growth measured is the index's.
    let services: Vec<Service> = (0..SERVICES).map(service).collect();
    let slices: Vec<EndpointSlice> = (0..SERVICES).map(slice).collect();
    let before = rss();
    let zone = Arc::new(RwLock::new(Zone::new("cluster.local").unwrap()));
    {
        let mut z = zone.write();
        z.relist_services_started();
        z.relist_slices_started();
        for (svc, slice) in services.iter().zip(&slices) {
            z.apply_service(svc);
            z.apply_slice(slice);
        }
        z.relist_services_done();
        z.relist_slices_done();
    }
    let added = rss().saturating_sub(before);
    drop(services);
    drop(slices);
    println!(
        "dns index: {} Services, {:.2} MiB resident added (target <= 10 MiB)",
        zone.read().service_count(),
        added as f64 / (1024.0 * 1024.0)
    );

    // The server on one core.
    let registry = prometheus::Registry::new();
    let metrics = DnsMetrics::new(&registry).unwrap();
    let forwarder = Arc::new(Forwarder::new(vec![upstream()], metrics.clone()));
    let handler = Arc::new(Handler::new(zone, forwarder, metrics));
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (_trigger, shutdown) = component_base::shutdown::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(socket.local_addr().unwrap()).unwrap();
            server::serve_udp(socket, handler, shutdown).await;
        });
    });
    let server = addr_rx.recv().unwrap();

    let cluster: Vec<Vec<u8>> = (0..SERVICES)
        .step_by(7)
        .map(|i| {
            query_bytes(
                &format!("svc-{i}.ns-{}.svc.cluster.local.", i % 100),
                RecordType::A,
            )
        })
        .collect();
    let forwarded: Vec<Vec<u8>> = (0..200)
        .map(|i| query_bytes(&format!("host-{i}.example.org."), RecordType::A))
        .collect();
    // Warm the cache (and the sockets).
    let warm = load(server, &forwarded, forwarded.len());
    assert_eq!(warm.errors, 0, "the upstream did not answer");

    let mode = match (full, cfg!(debug_assertions)) {
        (true, false) => "full run, optimized build",
        (true, true) => "full run, debug build",
        (false, false) => "smoke run, optimized build",
        (false, true) => "smoke run, debug build",
    };
    for (what, queries) in [
        ("cluster names", &cluster),
        ("cached forwarded names", &forwarded),
    ] {
        let f = load(server, queries, total);
        println!(
            "dns {what} ({mode}, {total} queries, {WINDOW} in flight, server on one core): {:.0} qps, p50 {:.3} ms, p99 {:.3} ms, {} errors (targets: >= 20000 qps, p99 <= 2 ms)",
            f.qps,
            f.p50.as_secs_f64() * 1000.0,
            f.p99.as_secs_f64() * 1000.0,
            f.errors
        );
        assert_eq!(f.errors, 0, "{what}: errors");
    }
}
