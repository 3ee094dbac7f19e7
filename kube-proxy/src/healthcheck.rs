//! Health-check node ports (upstream `pkg/proxy/healthcheck/service_health.go`, the
//! `ServiceHealthServer`): every Service with `externalTrafficPolicy: Local` and a
//! `spec.healthCheckNodePort` gets a plain-HTTP listener on that port (on every address,
//! or on the local addresses inside `--nodeport-addresses`). Any GET answers 200 while
//! this node has at least one ready local endpoint of the Service and the proxy rules
//! are fresh, else 503, so an external load balancer sends traffic only to nodes that
//! can serve it without SNAT. The body is upstream's JSON
//! (`{"service":{"namespace":..,"name":..},"localEndpoints":N,"serviceProxyHealthy":..}`)
//! with `X-Content-Type-Options: nosniff` and `X-Load-Balancing-Endpoint-Weight: N`.
//!
//! The server is fed from the same model the proxier programs, after every sync, in
//! both proxy modes; listeners open and close as Services come and go, and a port that
//! could not be bound is tried again at the next sync.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{info, warn, Instrument};

use crate::endpoints::Endpoint;
use crate::healthz::ProxierHealth;
use crate::service::ServicePort;
use crate::tracker::{ports_of, Model, ServiceKey};

/// What one Service's health check reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceHealth {
    pub node_port: u16,
    /// This node's ready endpoints of the Service (distinct addresses over its ports).
    pub local_endpoints: usize,
}

/// The health check of Service `key` as the models of both families say: None when it
/// has no health-check node port (not `externalTrafficPolicy: Local`, or none set).
pub fn service_health(models: &[&Model], key: &ServiceKey) -> Option<ServiceHealth> {
    let mut node_port = None;
    let mut local: BTreeSet<IpAddr> = BTreeSet::new();
    for model in models {
        for (name, port) in ports_of(&model.services, key) {
            node_port = node_port.or_else(|| health_check_port(port));
            let eps = model.endpoints.get(name).map(|e| &**e).unwrap_or(&[]);
            local.extend(eps.iter().filter(|e| counts(e)).map(|e| e.ip));
        }
    }
    node_port.map(|node_port| ServiceHealth {
        node_port,
        local_endpoints: local.len(),
    })
}

fn health_check_port(port: &ServicePort) -> Option<u16> {
    port.health_check_node_port
        .filter(|_| port.external_policy_local)
}

/// Upstream counts this node's ready endpoints only (not serving-terminating ones): a
/// node whose pods are all terminating drains from the load balancer.
fn counts(ep: &Endpoint) -> bool {
    ep.is_local() && ep.ready()
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listening on {addr} for the health check of {namespace}/{name}: {source}")]
    Bind {
        addr: SocketAddr,
        namespace: String,
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// A Service's health state, shared with its listeners' handlers.
type Shared = Arc<Mutex<HashMap<ServiceKey, ServiceHealth>>>;

/// The listeners of one Service's health-check node port.
struct Listeners {
    port: u16,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Listeners {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Serves every health-check node port the model asks for.
pub struct ServiceHealthServer {
    nodeport_addresses: Vec<IpNet>,
    proxier: Arc<ProxierHealth>,
    services: Shared,
    listeners: HashMap<ServiceKey, Listeners>,
}

impl ServiceHealthServer {
    pub fn new(nodeport_addresses: &[IpNet], proxier: Arc<ProxierHealth>) -> Self {
        ServiceHealthServer {
            nodeport_addresses: nodeport_addresses.to_vec(),
            proxier,
            services: Arc::default(),
            listeners: HashMap::new(),
        }
    }

    /// Folds in the Services a sync changed (`dirty`, as the models now hold them),
    /// then opens and closes listeners to match. Returns the bind failures (they are
    /// retried at the next sync).
    pub async fn sync<'a>(
        &mut self,
        models: &[&Model],
        dirty: impl IntoIterator<Item = &'a ServiceKey>,
    ) -> Vec<Error> {
        {
            let mut services = self.services.lock();
            for key in dirty {
                match service_health(models, key) {
                    Some(h) => {
                        services.insert(key.clone(), h);
                    }
                    None => {
                        services.remove(key);
                    }
                }
            }
        }
        self.reconcile().await
    }

    /// The Services whose health check is served, and their state.
    pub fn services(&self) -> BTreeMap<ServiceKey, ServiceHealth> {
        self.services
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    async fn reconcile(&mut self) -> Vec<Error> {
        let wanted: Vec<(ServiceKey, u16)> = self
            .services
            .lock()
            .iter()
            .map(|(k, h)| (k.clone(), h.node_port))
            .collect();
        let keep: HashSet<(&ServiceKey, u16)> = wanted.iter().map(|(k, p)| (k, *p)).collect();
        self.listeners.retain(|key, l| {
            let keep = keep.contains(&(key, l.port));
            if !keep {
                info!(service = %format!("{}/{}", key.0, key.1), port = l.port, "closing health check node port");
            }
            keep
        });
        let mut errors = Vec::new();
        let missing: Vec<(ServiceKey, u16)> = wanted
            .into_iter()
            .filter(|(k, _)| !self.listeners.contains_key(k))
            .collect();
        if missing.is_empty() {
            return errors;
        }
        let ips = self.listen_ips().await;
        for (key, port) in missing {
            let mut tasks = Vec::new();
            for ip in &ips {
                let addr = SocketAddr::new(*ip, port);
                match TcpListener::bind(addr).await {
                    Ok(l) => tasks.push(tokio::spawn(
                        serve(l, key.clone(), self.services.clone(), self.proxier.clone())
                            .instrument(tracing::info_span!("healthcheck", %addr)),
                    )),
                    // `[::]` where the node has no IPv6: the IPv4 wildcard is next.
                    Err(_) if ip.is_unspecified() && ip.is_ipv6() => {}
                    Err(source) => errors.push(Error::Bind {
                        addr,
                        namespace: key.0.to_string(),
                        name: key.1.to_string(),
                        source,
                    }),
                }
                // A dual-stack `[::]` socket takes IPv4 too.
                if ip.is_unspecified() && !tasks.is_empty() {
                    break;
                }
            }
            if tasks.is_empty() {
                continue;
            }
            info!(service = %format!("{}/{}", key.0, key.1), port, "serving health check node port");
            self.listeners.insert(key, Listeners { port, tasks });
        }
        for e in &errors {
            warn!(error = %e, "health check node port not served; retrying at the next sync");
        }
        errors
    }

    /// Every address (`[::]`, else `0.0.0.0`), or the local addresses inside
    /// `--nodeport-addresses`.
    async fn listen_ips(&self) -> Vec<IpAddr> {
        if self.nodeport_addresses.is_empty() {
            return vec![
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            ];
        }
        crate::userspace::local_addresses()
            .await
            .into_iter()
            .filter(|ip| self.nodeport_addresses.iter().any(|n| n.contains(ip)))
            .collect()
    }
}

async fn serve(
    listener: TcpListener,
    key: ServiceKey,
    services: Shared,
    proxier: Arc<ProxierHealth>,
) {
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (key, services, proxier) = (key.clone(), services.clone(), proxier.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |_req: Request<Incoming>| {
                let local = services.lock().get(&key).map(|h| h.local_endpoints);
                let healthy = proxier.status(Instant::now()).healthy;
                let response = respond(&key, local, healthy);
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

/// Upstream's answer for any path: `local` is None once the Service is gone (the
/// listener is closing).
fn respond(key: &ServiceKey, local: Option<usize>, proxy_healthy: bool) -> Response<Full<Bytes>> {
    let count = local.unwrap_or(0);
    let body = serde_json::json!({
        "service": {"namespace": &*key.0, "name": &*key.1},
        "localEndpoints": count,
        "serviceProxyHealthy": proxy_healthy,
    });
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = if count > 0 && proxy_healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        "X-Load-Balancing-Endpoint-Weight",
        header::HeaderValue::from(count),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::IpFamily;
    use crate::tracker::Tracker;
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;

    fn model(objects: &[&str]) -> (Tracker, [Model; 2]) {
        let mut t = Tracker::new("node-a");
        for yaml in objects {
            if yaml.contains("addressType") {
                t.apply_slice(&serde_yaml::from_str::<EndpointSlice>(yaml).unwrap());
            } else {
                t.apply_service(&serde_yaml::from_str::<Service>(yaml).unwrap());
            }
        }
        let mut models: [Model; 2] = Default::default();
        t.flush(&mut models);
        (t, models)
    }

    const LB: &str = "metadata: {namespace: ns, name: web}\n\
        spec: {type: LoadBalancer, clusterIP: 10.96.0.20, externalTrafficPolicy: Local, healthCheckNodePort: 32000,\n\
          ports: [{name: http, port: 80, nodePort: 30080}, {name: alt, port: 81, nodePort: 30081}]}";

    fn key() -> ServiceKey {
        ("ns".into(), "web".into())
    }

    #[test]
    fn counts_distinct_ready_local_endpoints() {
        let (_, models) = model(&[
            LB,
            "metadata: {namespace: ns, name: web-a, labels: {kubernetes.io/service-name: web}}\n\
             addressType: IPv4\nports: [{name: http, port: 8080}, {name: alt, port: 8081}]\n\
             endpoints: [{addresses: [10.0.0.1], nodeName: node-a}, {addresses: [10.0.0.2], nodeName: node-a},\n\
               {addresses: [10.0.0.3], nodeName: node-a, conditions: {ready: false, serving: true, terminating: true}},\n\
               {addresses: [10.0.0.4], nodeName: node-b}]",
        ]);
        let v4 = Tracker::model(&models, IpFamily::V4);
        let v6 = Tracker::model(&models, IpFamily::V6);
        assert_eq!(
            service_health(&[v4, v6], &key()),
            Some(ServiceHealth {
                node_port: 32000,
                local_endpoints: 2
            })
        );
    }

    #[test]
    fn only_local_policy_services_with_a_port_are_served() {
        let cluster = LB.replace(
            "externalTrafficPolicy: Local",
            "externalTrafficPolicy: Cluster",
        );
        let (_, models) = model(&[&cluster]);
        let v4 = Tracker::model(&models, IpFamily::V4);
        assert_eq!(service_health(&[v4], &key()), None);
        let (_, models) = model(&[LB]);
        let v4 = Tracker::model(&models, IpFamily::V4);
        assert_eq!(
            service_health(&[v4], &key()),
            Some(ServiceHealth {
                node_port: 32000,
                local_endpoints: 0
            })
        );
    }

    #[test]
    fn answers_follow_upstream() {
        let r = respond(&key(), Some(1), true);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert_eq!(r.headers()["x-load-balancing-endpoint-weight"], "1");
        assert_eq!(
            respond(&key(), Some(0), true).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            respond(&key(), Some(3), false).status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "stale rules fail the check too"
        );
    }

    #[tokio::test]
    async fn listeners_follow_the_services() {
        let mut server = ServiceHealthServer::new(
            &["127.0.0.0/8".parse().unwrap()],
            ProxierHealth::new(Duration::from_secs(60)),
        );
        // A free port for the health check.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let lb = LB.replace("32000", &port.to_string());
        let (_, models) = model(&[&lb]);
        let v4 = Tracker::model(&models, IpFamily::V4);
        let errors = server.sync(&[v4], [&key()]).await;
        assert!(errors.is_empty(), "{errors:?}");
        assert!(tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok());
        // The Service goes: its port closes.
        let empty = Model::default();
        server.sync(&[&empty], [&key()]).await;
        assert!(server.services().is_empty());
        let deadline = Instant::now() + Duration::from_secs(5);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            assert!(Instant::now() < deadline, "port {port} still open");
            tokio::task::yield_now().await;
        }
    }
}
