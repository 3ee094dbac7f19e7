//! The proxy's view of Services (upstream `pkg/proxy/serviceport.go` and
//! `servicechangetracker.go`): one [`ServicePort`] per (namespace/name, port name,
//! protocol), with the addresses it is reachable on and the policies that pick its
//! endpoints. The model is built per IP family: each family has its own table.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;

/// Upstream's default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT_SECONDS: u32 = 10800;

/// An IP family: the proxier programs one table per family (`ip` and `ip6`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    pub fn of(ip: &IpAddr) -> IpFamily {
        if ip.is_ipv4() {
            IpFamily::V4
        } else {
            IpFamily::V6
        }
    }

    pub fn matches(self, ip: &IpAddr) -> bool {
        IpFamily::of(ip) == self
    }

    /// The EndpointSlice `addressType` of this family.
    pub fn address_type(self) -> &'static str {
        match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        }
    }
}

/// A transport protocol a Service port can carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The API's spelling (`TCP`); absent means TCP. Unknown protocols are None.
    pub fn from_api(text: Option<&str>) -> Option<Protocol> {
        match text.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// nftables' keyword (`tcp`), also used in chain names as upstream does.
    pub fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// Upstream's `ServicePortName`: what identifies one port of one Service. One shared
/// allocation: the tracker, the model and the proxier each key a map by every Service
/// port at 10,000 Services, so a key is one pointer and a clone a reference count.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortName(Arc<PortNameParts>);

/// The parts of a [`ServicePortName`]; the strings are shared too (a namespace or a port
/// name by thousands of Service ports).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortNameParts {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    /// The port's name; empty for a Service's only, unnamed port.
    pub port: Arc<str>,
    pub protocol: Protocol,
}

impl ServicePortName {
    pub fn new(
        namespace: impl Into<Arc<str>>,
        name: impl Into<Arc<str>>,
        port: impl Into<Arc<str>>,
        protocol: Protocol,
    ) -> ServicePortName {
        ServicePortName(Arc::new(PortNameParts {
            namespace: namespace.into(),
            name: name.into(),
            port: port.into(),
            protocol,
        }))
    }

    /// Whether no one else holds this name (an interning table may drop it).
    pub fn unshared(&self) -> bool {
        Arc::strong_count(&self.0) == 1
    }
}

impl std::ops::Deref for ServicePortName {
    type Target = PortNameParts;
    fn deref(&self) -> &PortNameParts {
        &self.0
    }
}

impl fmt::Debug for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for ServicePortName {
    /// `ns/name/tcp/port`, the form upstream's nftables chain names use.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            self.namespace,
            self.name,
            self.protocol.nft(),
            self.port
        )
    }
}

/// Everything the proxier needs to know about one Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// The ClusterIP of this family, if the Service has one (not headless).
    pub cluster_ip: Option<IpAddr>,
    pub port: u16,
    pub node_port: Option<u16>,
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress[].ip`.
    pub load_balancer_ips: Vec<IpAddr>,
    /// `sessionAffinity: ClientIP` and its timeout in seconds.
    pub affinity_timeout_seconds: Option<u32>,
    /// `externalTrafficPolicy: Local` on an externally reachable Service.
    pub external_policy_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_policy_local: bool,
    pub health_check_node_port: Option<u16>,
}

impl ServicePort {
    /// Reachable from outside the cluster: a NodePort, an external IP or a load balancer.
    pub fn externally_accessible(&self) -> bool {
        self.node_port.is_some()
            || !self.external_ips.is_empty()
            || !self.load_balancer_ips.is_empty()
    }
}

/// The Service's ports as the proxy programs them for `family` (addresses of the other
/// family are left out). ExternalName Services, headless Services and ports of unknown
/// protocols yield nothing.
pub fn service_ports(svc: &Service, family: IpFamily) -> Vec<(ServicePortName, ServicePort)> {
    let (Some(namespace), Some(name), Some(spec)) = (
        svc.metadata.namespace.as_deref(),
        svc.metadata.name.as_deref(),
        svc.spec.as_ref(),
    ) else {
        return Vec::new();
    };
    let svc_type = spec.type_.as_deref().unwrap_or("ClusterIP");
    if svc_type == "ExternalName" {
        return Vec::new();
    }
    let mut cluster_ips: Vec<&str> = spec
        .cluster_ips
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    if cluster_ips.is_empty() {
        cluster_ips.extend(spec.cluster_ip.as_deref());
    }
    let cluster_ip = cluster_ips
        .iter()
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
        .find(|ip| family.matches(ip));
    let headless = cluster_ips.first().is_some_and(|ip| *ip == "None");
    // A Service without a ClusterIP of this family is not of this family (upstream's
    // single-stack Services are invisible to the other family's proxier).
    if headless || cluster_ip.is_none() {
        return Vec::new();
    }
    let external_ips: Vec<IpAddr> = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.parse().ok())
        .filter(|ip| family.matches(ip))
        .collect();
    let load_balancer_ips: Vec<IpAddr> = if svc_type == "LoadBalancer" {
        svc.status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.as_deref()?.parse().ok())
            .filter(|ip| family.matches(ip))
            .collect()
    } else {
        Vec::new()
    };
    let affinity_timeout_seconds =
        (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u32::try_from(t).ok())
                .filter(|t| *t > 0)
                .unwrap_or(DEFAULT_AFFINITY_TIMEOUT_SECONDS)
        });
    let internal_policy_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let etp_local = spec.external_traffic_policy.as_deref() == Some("Local");
    let port_u16 = |p: i32| u16::try_from(p).ok().filter(|p| *p != 0);
    let with_node_ports = matches!(svc_type, "NodePort" | "LoadBalancer");
    let mut out = Vec::new();
    for p in spec.ports.iter().flatten() {
        let (Some(protocol), Some(port)) =
            (Protocol::from_api(p.protocol.as_deref()), port_u16(p.port))
        else {
            continue;
        };
        let info = ServicePort {
            cluster_ip,
            port,
            node_port: p.node_port.and_then(port_u16).filter(|_| with_node_ports),
            external_ips: external_ips.clone(),
            load_balancer_ips: load_balancer_ips.clone(),
            affinity_timeout_seconds,
            external_policy_local: false,
            internal_policy_local,
            health_check_node_port: spec
                .health_check_node_port
                .and_then(port_u16)
                .filter(|_| etp_local),
        };
        let info = ServicePort {
            external_policy_local: etp_local && info.externally_accessible(),
            ..info
        };
        out.push((
            ServicePortName::new(
                namespace,
                name,
                p.name.as_deref().unwrap_or_default(),
                protocol,
            ),
            info,
        ));
    }
    out
}

/// Every Service port of `services` for `family`, keyed and sorted.
pub fn service_port_map<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    family: IpFamily,
) -> BTreeMap<ServicePortName, ServicePort> {
    services
        .into_iter()
        .flat_map(|s| service_ports(s, family))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(yaml: &str) -> Service {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn ports_are_keyed_by_name_and_protocol() {
        let s = svc("metadata: {namespace: ns, name: dns}\n\
             spec: {clusterIP: 10.96.0.10, clusterIPs: [10.96.0.10], ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53}]}");
        let ports = service_ports(&s, IpFamily::V4);
        assert_eq!(ports.len(), 2);
        assert_eq!(ports[0].0.to_string(), "ns/dns/udp/dns");
        assert_eq!(ports[1].0.to_string(), "ns/dns/tcp/dns-tcp");
        assert_eq!(ports[0].1.cluster_ip, Some("10.96.0.10".parse().unwrap()));
        assert!(!ports[0].1.externally_accessible());
    }

    #[test]
    fn node_ports_external_addresses_and_policies() {
        let s = svc("metadata: {namespace: ns, name: web}\n\
             spec: {type: LoadBalancer, clusterIP: 10.96.0.20, externalIPs: [192.0.2.7], externalTrafficPolicy: Local, healthCheckNodePort: 32000,\n\
               internalTrafficPolicy: Local, sessionAffinity: ClientIP, sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}},\n\
               ports: [{port: 80, nodePort: 30080}]}\n\
             status: {loadBalancer: {ingress: [{ip: 192.0.2.100}, {hostname: lb.example}]}}");
        let (name, p) = service_ports(&s, IpFamily::V4).pop().unwrap();
        assert_eq!(name.to_string(), "ns/web/tcp/");
        assert_eq!(p.node_port, Some(30080));
        assert_eq!(p.external_ips, vec!["192.0.2.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(
            p.load_balancer_ips,
            vec!["192.0.2.100".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(p.affinity_timeout_seconds, Some(60));
        assert!(p.external_policy_local && p.internal_policy_local);
        assert_eq!(p.health_check_node_port, Some(32000));
    }

    #[test]
    fn clusterip_services_ignore_node_ports_and_local_external_policy() {
        let s = svc("metadata: {namespace: ns, name: a}\n\
             spec: {clusterIP: 10.96.0.21, externalTrafficPolicy: Local, sessionAffinity: ClientIP, ports: [{port: 80, nodePort: 30081}]}");
        let (_, p) = service_ports(&s, IpFamily::V4).pop().unwrap();
        assert_eq!(p.node_port, None);
        assert!(!p.external_policy_local);
        assert_eq!(
            p.affinity_timeout_seconds,
            Some(DEFAULT_AFFINITY_TIMEOUT_SECONDS)
        );
    }

    #[test]
    fn each_family_gets_its_own_addresses() {
        let s = svc("metadata: {namespace: ns, name: dual}\n\
             spec: {type: NodePort, clusterIP: 10.96.0.30, clusterIPs: [10.96.0.30, 'fd00:96::30'], externalIPs: [192.0.2.8, '2001:db8::8'],\n\
               ports: [{port: 80, nodePort: 30090}]}");
        let (_, v4) = service_ports(&s, IpFamily::V4).pop().unwrap();
        let (_, v6) = service_ports(&s, IpFamily::V6).pop().unwrap();
        assert_eq!(v4.cluster_ip, Some("10.96.0.30".parse().unwrap()));
        assert_eq!(v6.cluster_ip, Some("fd00:96::30".parse().unwrap()));
        assert_eq!(
            v6.external_ips,
            vec!["2001:db8::8".parse::<IpAddr>().unwrap()]
        );
        assert_eq!((v4.node_port, v6.node_port), (Some(30090), Some(30090)));
        // A single-stack Service does not exist for the other family.
        let single = svc("metadata: {namespace: ns, name: a}\nspec: {type: NodePort, clusterIP: 10.96.0.31, ports: [{port: 80, nodePort: 30091}]}");
        assert!(service_ports(&single, IpFamily::V6).is_empty());
    }

    #[test]
    fn headless_and_external_name_services_are_skipped() {
        assert!(service_ports(
            &svc(
                "metadata: {namespace: ns, name: h}\nspec: {clusterIP: None, ports: [{port: 80}]}"
            ),
            IpFamily::V4
        )
        .is_empty());
        assert!(service_ports(&svc(
            "metadata: {namespace: ns, name: e}\nspec: {type: ExternalName, externalName: example.org, ports: [{port: 80}]}"
        ), IpFamily::V4)
        .is_empty());
    }
}
