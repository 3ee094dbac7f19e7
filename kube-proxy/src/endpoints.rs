//! Endpoints per Service port from EndpointSlices (upstream `pkg/proxy/endpointslicecache.go`,
//! `endpoint.go` and `topology.go`): slices of one Service are merged, each endpoint keeps
//! its ready / serving / terminating conditions and whether it runs on this node, and
//! [`categorize`] applies upstream's selection rules.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::service::{IpFamily, Protocol, ServicePort, ServicePortName};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One backend of one Service port: 20 bytes (100,000 of them at 10,000 Services), its
/// conditions packed in one byte.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
    conditions: u8,
}

const _: () = assert!(std::mem::size_of::<Endpoint>() == 20);

/// What is known of an [`Endpoint`] besides its address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conditions {
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// Runs on this node (its `nodeName` is our hostname).
    pub is_local: bool,
    /// Its `nodeName` names another node: it cannot be the client of a connection this
    /// node's hooks see with it as destination (no hairpin masquerade needed).
    pub on_other_node: bool,
}

const READY: u8 = 1;
const SERVING: u8 = 2;
const TERMINATING: u8 = 4;
const IS_LOCAL: u8 = 8;
const ON_OTHER_NODE: u8 = 16;

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?}", self.addr(), self.conditions())
    }
}

impl Endpoint {
    pub fn new(ip: IpAddr, port: u16, c: Conditions) -> Endpoint {
        let bit = |on: bool, bit: u8| if on { bit } else { 0 };
        Endpoint {
            ip,
            port,
            conditions: bit(c.ready, READY)
                | bit(c.serving, SERVING)
                | bit(c.terminating, TERMINATING)
                | bit(c.is_local, IS_LOCAL)
                | bit(c.on_other_node, ON_OTHER_NODE),
        }
    }

    pub fn conditions(&self) -> Conditions {
        Conditions {
            ready: self.ready(),
            serving: self.serving(),
            terminating: self.terminating(),
            is_local: self.is_local(),
            on_other_node: self.on_other_node(),
        }
    }

    pub fn ready(&self) -> bool {
        self.conditions & READY != 0
    }

    pub fn serving(&self) -> bool {
        self.conditions & SERVING != 0
    }

    pub fn terminating(&self) -> bool {
        self.conditions & TERMINATING != 0
    }

    pub fn is_local(&self) -> bool {
        self.conditions & IS_LOCAL != 0
    }

    pub fn on_other_node(&self) -> bool {
        self.conditions & ON_OTHER_NODE != 0
    }

    /// `10.0.0.1:80`, `[fd00::1]:80`.
    pub fn addr(&self) -> String {
        std::net::SocketAddr::new(self.ip, self.port).to_string()
    }
}

/// Every endpoint of `family` of every Service port named by `slices`, merged across
/// the slices of each Service and sorted. An address listed twice (two slices during a
/// handover) counts once, ready if any copy is ready.
pub fn endpoints_by_service_port<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    hostname: &str,
    family: IpFamily,
) -> BTreeMap<ServicePortName, Vec<Endpoint>> {
    let mut merged: BTreeMap<ServicePortName, BTreeMap<(IpAddr, u16), Endpoint>> = BTreeMap::new();
    for slice in slices {
        if slice.address_type != family.address_type() {
            continue;
        }
        let (Some(namespace), Some(service)) = (
            slice.metadata.namespace.as_deref(),
            slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL)),
        ) else {
            continue;
        };
        for port in slice.ports.iter().flatten() {
            let (Some(protocol), Some(number)) = (
                Protocol::from_api(port.protocol.as_deref()),
                port.port
                    .and_then(|p| u16::try_from(p).ok())
                    .filter(|p| *p != 0),
            ) else {
                continue;
            };
            let key = ServicePortName::new(
                namespace,
                service.as_str(),
                port.name.as_deref().unwrap_or_default(),
                protocol,
            );
            let entry = merged.entry(key).or_default();
            for ep in &slice.endpoints {
                let conditions = ep.conditions.as_ref();
                // Upstream: an unset ready or serving condition means ready/serving.
                let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
                let serving = conditions.and_then(|c| c.serving).unwrap_or(true);
                let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
                let is_local = ep.node_name.as_deref() == Some(hostname);
                let on_other_node = ep.node_name.as_deref().is_some_and(|n| n != hostname);
                // Every address of an endpoint is the same backend; the first is used.
                let Some(ip) = ep
                    .addresses
                    .iter()
                    .filter_map(|a| a.parse::<IpAddr>().ok())
                    .find(|ip| family.matches(ip))
                else {
                    continue;
                };
                let candidate = Endpoint::new(
                    ip,
                    number,
                    Conditions {
                        ready,
                        serving,
                        terminating,
                        is_local,
                        on_other_node,
                    },
                );
                entry
                    .entry((ip, number))
                    .and_modify(|e| {
                        if candidate.ready() && !e.ready() {
                            *e = candidate.clone();
                        }
                    })
                    .or_insert(candidate);
            }
        }
    }
    merged
        .into_iter()
        .map(|(k, eps)| (k, eps.into_values().collect()))
        .collect()
}

/// The endpoints a Service port's traffic may go to, as upstream's `CategorizeEndpoints`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Categorized {
    /// For `Cluster` policies: ready endpoints, or when none is ready the serving
    /// terminating ones (so connections drain instead of failing during a rollout).
    pub cluster: Vec<Endpoint>,
    /// For `Local` policies: the same rule applied to this node's endpoints only.
    pub local: Vec<Endpoint>,
}

impl Categorized {
    /// Where ClusterIP traffic goes (`internalTrafficPolicy`).
    pub fn internal<'a>(&'a self, port: &ServicePort) -> &'a [Endpoint] {
        if port.internal_policy_local {
            &self.local
        } else {
            &self.cluster
        }
    }

    /// Where NodePort, external IP and load balancer traffic goes (`externalTrafficPolicy`).
    pub fn external<'a>(&'a self, port: &ServicePort) -> &'a [Endpoint] {
        if port.external_policy_local {
            &self.local
        } else {
            &self.cluster
        }
    }
}

/// Splits `endpoints` by upstream's rules: ready endpoints first, serving-terminating
/// ones only when no endpoint (of that category) is ready; never endpoints that are
/// neither.
pub fn categorize(endpoints: &[Endpoint]) -> Categorized {
    fn usable<'a>(eps: impl Iterator<Item = &'a Endpoint> + Clone) -> Vec<Endpoint> {
        let ready: Vec<Endpoint> = eps.clone().filter(|e| e.ready()).cloned().collect();
        if !ready.is_empty() {
            return ready;
        }
        eps.filter(|e| e.serving() && e.terminating())
            .cloned()
            .collect()
    }
    Categorized {
        cluster: usable(endpoints.iter()),
        local: usable(endpoints.iter().filter(|e| e.is_local())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(yaml: &str) -> EndpointSlice {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn ep(ip: [u8; 4], ready: bool, serving: bool, terminating: bool, local: bool) -> Endpoint {
        Endpoint::new(
            IpAddr::from(ip),
            80,
            Conditions {
                ready,
                serving,
                terminating,
                is_local: local,
                on_other_node: false,
            },
        )
    }

    #[test]
    fn slices_of_one_service_merge_per_port() {
        let a = slice(
            "metadata: {namespace: ns, name: web-a, labels: {kubernetes.io/service-name: web}}\n\
             addressType: IPv4\nports: [{name: http, port: 8080}, {name: dns, port: 53, protocol: UDP}]\n\
             endpoints: [{addresses: [10.0.0.1], nodeName: node-a}, {addresses: [10.0.0.2], conditions: {ready: false}, nodeName: node-b}]",
        );
        let b = slice(
            "metadata: {namespace: ns, name: web-b, labels: {kubernetes.io/service-name: web}}\n\
             addressType: IPv4\nports: [{name: http, port: 8080}]\n\
             endpoints: [{addresses: [10.0.0.3], conditions: {ready: true}}, {addresses: [10.0.0.2], conditions: {ready: true}}]",
        );
        let v6 = slice(
            "metadata: {namespace: ns, name: web-c, labels: {kubernetes.io/service-name: web}}\n\
             addressType: IPv6\nports: [{name: http, port: 8080}]\nendpoints: [{addresses: ['fd00::1']}]",
        );
        let orphan = slice(
            "metadata: {namespace: ns, name: x}\naddressType: IPv4\nports: [{port: 1}]\nendpoints: [{addresses: [10.9.9.9]}]",
        );
        let all = endpoints_by_service_port([&a, &b, &v6, &orphan], "node-a", IpFamily::V4);
        assert_eq!(all.len(), 2, "{all:?}");
        let http = &all[&ServicePortName::new("ns", "web", "http", Protocol::Tcp)];
        let addrs: Vec<String> = http.iter().map(Endpoint::addr).collect();
        assert_eq!(addrs, ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"]);
        assert!(http[0].is_local() && !http[2].is_local());
        assert!(http[1].ready(), "the ready copy of a duplicate wins");
        let dns = &all[&ServicePortName::new("ns", "web", "dns", Protocol::Udp)];
        assert_eq!(dns.len(), 2);
        assert!(!dns[1].ready());
    }

    #[test]
    fn ipv6_slices_feed_the_ipv6_family() {
        let v6 = slice(
            "metadata: {namespace: ns, name: web-c, labels: {kubernetes.io/service-name: web}}\n\
             addressType: IPv6\nports: [{name: http, port: 8080}]\nendpoints: [{addresses: ['fd00::1']}]",
        );
        let v4 = slice(
            "metadata: {namespace: ns, name: web-a, labels: {kubernetes.io/service-name: web}}\n\
             addressType: IPv4\nports: [{name: http, port: 8080}]\nendpoints: [{addresses: [10.0.0.1]}]",
        );
        let all = endpoints_by_service_port([&v4, &v6], "node-a", IpFamily::V6);
        let eps: Vec<String> = all.values().flatten().map(Endpoint::addr).collect();
        assert_eq!(eps, ["[fd00::1]:8080"]);
    }

    #[test]
    fn ready_endpoints_are_preferred() {
        let eps = [
            ep([10, 0, 0, 1], true, true, false, false),
            ep([10, 0, 0, 2], false, true, true, true),
            ep([10, 0, 0, 3], false, false, false, true),
        ];
        let c = categorize(&eps);
        assert_eq!(c.cluster, vec![eps[0].clone()]);
        // No local endpoint is ready: the serving terminating one is used.
        assert_eq!(c.local, vec![eps[1].clone()]);
    }

    #[test]
    fn terminating_endpoints_only_when_none_is_ready() {
        let eps = [
            ep([10, 0, 0, 1], false, true, true, false),
            ep([10, 0, 0, 2], false, false, true, false),
            ep([10, 0, 0, 3], false, false, false, false),
        ];
        let c = categorize(&eps);
        assert_eq!(c.cluster, vec![eps[0].clone()]);
        assert!(c.local.is_empty());
        let none = categorize(&[]);
        assert!(none.cluster.is_empty() && none.local.is_empty());
    }

    #[test]
    fn local_policies_select_local_endpoints() {
        let eps = [
            ep([10, 0, 0, 1], true, true, false, false),
            ep([10, 0, 0, 2], true, true, false, true),
        ];
        let c = categorize(&eps);
        let mut port = ServicePort {
            cluster_ip: None,
            port: 80,
            node_port: Some(30080),
            external_ips: vec![],
            load_balancer_ips: vec![],
            affinity_timeout_seconds: None,
            external_policy_local: true,
            internal_policy_local: false,
            health_check_node_port: None,
        };
        assert_eq!(c.external(&port), &eps[1..]);
        assert_eq!(c.internal(&port), &eps[..]);
        port.internal_policy_local = true;
        port.external_policy_local = false;
        assert_eq!(c.internal(&port), &eps[1..]);
        assert_eq!(c.external(&port), &eps[..]);
    }
}
