//! A test resolver for names outside the cluster (feature `testing`): tests point the
//! forwarder at it, so no query ever leaves the machine.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// The name the test resolver knows.
pub const OUTSIDE_NAME: &str = "outside.example";
pub const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 77);

/// A tiny authoritative resolver: `outside.example` A 192.0.2.77, NXDOMAIN for the
/// rest; counts the queries it gets. Stops when dropped.
pub struct TestResolver {
    /// Where it listens (port 0 given: the port picked).
    pub addr: SocketAddr,
    /// How many queries it got.
    pub queries: Arc<AtomicUsize>,
    /// The names asked, lower-case.
    pub names: Arc<parking_lot::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestResolver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn resolver_answer(request: &Message) -> Message {
    let mut response = Message::new();
    response
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(true)
        .add_queries(request.queries().iter().cloned());
    let Some(query) = request.queries().first() else {
        response.set_response_code(ResponseCode::FormErr);
        return response;
    };
    let known = Name::from_ascii(format!("{OUTSIDE_NAME}.")).unwrap();
    if query.name().to_lowercase() == known {
        if query.query_type() == RecordType::A {
            response.add_answer(Record::from_rdata(
                query.name().clone(),
                60,
                RData::A(A(OUTSIDE_IP)),
            ));
        }
    } else {
        let apex = Name::from_ascii("example.").unwrap();
        response.set_response_code(ResponseCode::NXDomain);
        response.add_name_server(Record::from_rdata(
            apex.clone(),
            60,
            RData::SOA(SOA::new(apex.clone(), apex, 1, 60, 60, 60, 60)),
        ));
    }
    response
}

impl TestResolver {
    /// Serves on `addr` (UDP).
    pub async fn start(addr: SocketAddr) -> TestResolver {
        let socket = tokio::net::UdpSocket::bind(addr)
            .await
            .expect("binding the test resolver");
        let addr = socket.local_addr().expect("the test resolver's address");
        let queries = Arc::new(AtomicUsize::new(0));
        let counter = queries.clone();
        let names = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let seen = names.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                let Ok(request) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                if let Some(q) = request.queries().first() {
                    seen.lock().push(q.name().to_lowercase().to_string());
                }
                if let Ok(bytes) = resolver_answer(&request).to_vec() {
                    let _ = socket.send_to(&bytes, from).await;
                }
            }
        });
        TestResolver {
            addr,
            queries,
            names,
            task,
        }
    }
}

impl TestResolver {
    /// The names it was asked that lie under `zone` (a cluster's zone: none should).
    pub fn asked_under(&self, zone: &str) -> Vec<String> {
        self.names
            .lock()
            .iter()
            .filter(|n| n.contains(zone))
            .cloned()
            .collect()
    }

    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}
