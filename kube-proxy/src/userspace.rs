//! The userspace proxier (upstream's former `pkg/proxy/userspace`, for nodes without a
//! usable nftables): kube-proxy itself listens on every NodePort (on all addresses, or
//! on the local addresses inside `--nodeport-addresses`) and on each external IP and
//! LoadBalancer ingress IP it can bind, and copies TCP streams and UDP datagrams to a
//! ready endpoint — picked at random, or the client's previous one under
//! `sessionAffinity: ClientIP` — with the same endpoint selection as the nftables mode
//! (`externalTrafficPolicy: Local` uses this node's endpoints only).
//!
//! Documented limits: ClusterIPs need the packet filter (there is no local address to
//! listen on), and the backend sees kube-proxy's address, not the client's.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use parking_lot::Mutex;
use rand::Rng;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::endpoints::categorize;
use crate::service::{Protocol, ServicePort, ServicePortName};
use crate::tracker::Model;

/// How long a UDP client's flow to its endpoint lives without traffic.
const UDP_IDLE: Duration = Duration::from_secs(60);
/// How long a TCP connect to an endpoint may take before the next one is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Where one listener sends its traffic.
#[derive(Debug, Default)]
struct Backends {
    endpoints: Vec<SocketAddr>,
    affinity: Option<Duration>,
    /// Client address → its endpoint and when it was last used.
    sticky: HashMap<IpAddr, (SocketAddr, Instant)>,
}

impl Backends {
    /// An endpoint for `client`: its sticky one while that is still an endpoint and
    /// fresh, else a random one.
    fn pick(&mut self, client: IpAddr) -> Option<SocketAddr> {
        if self.endpoints.is_empty() {
            return None;
        }
        let now = Instant::now();
        if let Some(timeout) = self.affinity {
            if let Some((ep, at)) = self.sticky.get(&client) {
                if now.duration_since(*at) < timeout && self.endpoints.contains(ep) {
                    let ep = *ep;
                    self.sticky.insert(client, (ep, now));
                    return Some(ep);
                }
            }
        }
        let ep = self.endpoints[rand::rng().random_range(0..self.endpoints.len())];
        if let Some(timeout) = self.affinity {
            self.sticky
                .retain(|_, (_, at)| now.duration_since(*at) < timeout);
            self.sticky.insert(client, (ep, now));
        }
        Some(ep)
    }
}

/// A listening socket and its task.
struct Listener {
    backends: Arc<Mutex<Backends>>,
    task: JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The listeners kube-proxy holds, kept in step with the model.
pub struct UserspaceProxier {
    nodeport_addresses: Vec<IpNet>,
    listeners: HashMap<(Protocol, SocketAddr), Listener>,
}

/// This node's addresses, for `--nodeport-addresses` (`ip -o addr show`).
pub(crate) async fn local_addresses() -> Vec<IpAddr> {
    let out = match tokio::process::Command::new("ip")
        .args(["-o", "addr", "show"])
        .output()
        .await
    {
        Ok(out) => out,
        Err(e) => {
            warn!(error = %e, "listing local addresses failed");
            return Vec::new();
        }
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "inet" || *w == "inet6")?;
            words.next()?.split('/').next()?.parse().ok()
        })
        .collect()
}

impl UserspaceProxier {
    pub fn new(nodeport_addresses: &[IpNet]) -> Self {
        UserspaceProxier {
            nodeport_addresses: nodeport_addresses.to_vec(),
            listeners: HashMap::new(),
        }
    }

    /// The addresses a NodePort listens on.
    async fn nodeport_ips(&self) -> Vec<IpAddr> {
        if self.nodeport_addresses.is_empty() {
            return vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)];
        }
        local_addresses()
            .await
            .into_iter()
            .filter(|ip| self.nodeport_addresses.iter().any(|n| n.contains(ip)))
            .collect()
    }

    /// Opens, updates and closes listeners so that every externally reachable Service
    /// port of `models` is served. Returns how many listeners are open.
    pub async fn sync(&mut self, models: &[&Model]) -> usize {
        let nodeport_ips = self.nodeport_ips().await;
        let mut desired: BTreeMap<(Protocol, SocketAddr), (Vec<SocketAddr>, Option<Duration>)> =
            BTreeMap::new();
        for model in models {
            for (name, port) in &model.services {
                let eps = model.endpoints.get(name).map(|e| &**e).unwrap_or(&[]);
                let cat = categorize(eps);
                let targets: Vec<SocketAddr> = cat
                    .external(port)
                    .iter()
                    .map(|e| SocketAddr::new(e.ip, e.port))
                    .collect();
                let affinity = port
                    .affinity_timeout_seconds
                    .map(|s| Duration::from_secs(u64::from(s)));
                for addr in listen_addresses(port, &nodeport_ips) {
                    if name.protocol == Protocol::Sctp {
                        continue;
                    }
                    desired
                        .entry((name.protocol, addr))
                        .or_insert_with(|| (targets.clone(), affinity));
                }
                log_unserved(name, port);
            }
        }
        self.listeners.retain(|key, _| desired.contains_key(key));
        for (key, (endpoints, affinity)) in desired {
            if let Some(l) = self.listeners.get(&key) {
                let mut b = l.backends.lock();
                b.endpoints = endpoints;
                b.affinity = affinity;
                continue;
            }
            let backends = Arc::new(Mutex::new(Backends {
                endpoints,
                affinity,
                sticky: HashMap::new(),
            }));
            let (protocol, addr) = key;
            let task = match protocol {
                Protocol::Tcp => match TcpListener::bind(addr).await {
                    Ok(l) => tokio::spawn(serve_tcp(l, backends.clone())),
                    Err(e) => {
                        debug!(%addr, error = %e, "cannot listen (not a local address?)");
                        continue;
                    }
                },
                Protocol::Udp => match UdpSocket::bind(addr).await {
                    Ok(s) => tokio::spawn(serve_udp(Arc::new(s), backends.clone())),
                    Err(e) => {
                        debug!(%addr, error = %e, "cannot listen (not a local address?)");
                        continue;
                    }
                },
                Protocol::Sctp => continue,
            };
            info!(?protocol, %addr, "userspace proxy listening");
            self.listeners.insert(key, Listener { backends, task });
        }
        self.listeners.len()
    }
}

fn log_unserved(name: &ServicePortName, port: &ServicePort) {
    if port.cluster_ip.is_some() && !port.externally_accessible() {
        debug!(service_port = %name, "ClusterIP-only Service port: not served in userspace mode");
    }
}

/// Where a Service port is served: its node port on `nodeport_ips`, its external IPs
/// and load balancer IPs on its port.
fn listen_addresses(port: &ServicePort, nodeport_ips: &[IpAddr]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    if let Some(np) = port.node_port {
        for ip in nodeport_ips {
            // A NodePort of an IPv6 Service listens on [::] only when asked for.
            let ip = match (ip, port.cluster_ip) {
                (IpAddr::V4(v4), Some(IpAddr::V6(_))) if v4.is_unspecified() => {
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                }
                _ => *ip,
            };
            out.push(SocketAddr::new(ip, np));
        }
    }
    for ip in port.external_ips.iter().chain(&port.load_balancer_ips) {
        out.push(SocketAddr::new(*ip, port.port));
    }
    out
}

async fn serve_tcp(listener: TcpListener, backends: Arc<Mutex<Backends>>) {
    loop {
        let (mut client, from) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let backends = backends.clone();
        tokio::spawn(async move {
            // Up to three endpoints are tried, as upstream's userspace proxier did.
            for _ in 0..3 {
                let Some(ep) = backends.lock().pick(from.ip()) else {
                    // No endpoint: the connection is reset at once, not left hanging. A
                    // zero linger never blocks on drop (it discards and resets).
                    #[allow(deprecated)]
                    let _ = client.set_linger(Some(Duration::ZERO));
                    return;
                };
                match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(ep)).await {
                    Ok(Ok(mut upstream)) => {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                        return;
                    }
                    Ok(Err(e)) => debug!(%ep, error = %e, "endpoint refused"),
                    Err(_) => debug!(%ep, "endpoint connect timed out"),
                }
            }
        });
    }
}

async fn serve_udp(socket: Arc<UdpSocket>, backends: Arc<Mutex<Backends>>) {
    // Client address → the socket connected to its endpoint.
    let flows: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                debug!(error = %e, "udp receive failed");
                continue;
            }
        };
        let existing = flows.lock().get(&from).cloned();
        let upstream = match existing {
            Some(u) => u,
            None => {
                let Some(ep) = backends.lock().pick(from.ip()) else {
                    continue;
                };
                let bind: SocketAddr = if ep.is_ipv4() {
                    (Ipv4Addr::UNSPECIFIED, 0).into()
                } else {
                    (Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let Ok(u) = UdpSocket::bind(bind).await else {
                    continue;
                };
                if u.connect(ep).await.is_err() {
                    continue;
                }
                let u = Arc::new(u);
                flows.lock().insert(from, u.clone());
                // Replies go back to the client until the flow idles out.
                let (socket, flows, reply) = (socket.clone(), flows.clone(), u.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65_535];
                    while let Ok(Ok(n)) = tokio::time::timeout(UDP_IDLE, reply.recv(&mut buf)).await
                    {
                        if socket.send_to(&buf[..n], from).await.is_err() {
                            break;
                        }
                    }
                    flows.lock().remove(&from);
                });
                u
            }
        };
        let _ = upstream.send(&buf[..n]).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_keeps_a_client_on_its_endpoint_until_it_goes() {
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let mut backends = Backends {
            endpoints: vec![a, b],
            affinity: Some(Duration::from_secs(60)),
            sticky: HashMap::new(),
        };
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        let first = backends.pick(client).unwrap();
        for _ in 0..20 {
            assert_eq!(backends.pick(client), Some(first));
        }
        backends.endpoints.retain(|e| *e != first);
        let second = backends.pick(client).unwrap();
        assert_ne!(second, first);
        backends.endpoints.clear();
        assert_eq!(backends.pick(client), None);
    }

    #[test]
    fn without_affinity_every_endpoint_gets_picked() {
        let eps: Vec<SocketAddr> = (1..=3)
            .map(|i| SocketAddr::new(IpAddr::from([10, 0, 0, i]), 80))
            .collect();
        let mut backends = Backends {
            endpoints: eps.clone(),
            ..Backends::default()
        };
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        let seen: std::collections::HashSet<SocketAddr> =
            (0..200).filter_map(|_| backends.pick(client)).collect();
        assert_eq!(seen.len(), 3);
        assert!(backends.sticky.is_empty());
    }

    #[test]
    fn node_ports_external_and_load_balancer_ips_are_listened_on() {
        let port = ServicePort {
            cluster_ip: Some("10.96.0.1".parse().unwrap()),
            port: 80,
            node_port: Some(30080),
            external_ips: vec!["192.0.2.7".parse().unwrap()],
            load_balancer_ips: vec!["192.0.2.100".parse().unwrap()],
            affinity_timeout_seconds: None,
            external_policy_local: false,
            internal_policy_local: false,
            health_check_node_port: None,
        };
        let addrs = listen_addresses(&port, &[IpAddr::V4(Ipv4Addr::UNSPECIFIED)]);
        let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        assert_eq!(addrs, ["0.0.0.0:30080", "192.0.2.7:80", "192.0.2.100:80"]);
    }
}
