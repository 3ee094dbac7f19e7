//! host-gw routes (flannel's `host-gw` backend, kubenet's routes before the cloud route
//! controller took them over): in the kubelet's own network namespace, one route per
//! *other* Node's podCIDR via that Node's InternalIP, with no encapsulation, so pod
//! traffic crosses nodes with its pod addresses intact. The routes carry the kubelet's
//! own routing protocol number ([`ROUTE_PROTOCOL`]): a restarted kubelet finds the ones
//! it made and removes stale ones, and never touches a route someone else made.
//!
//! [`desired_routes`] and [`plan`] are the pure part (which routes, and what to add,
//! replace and delete); [`RouteTable`] is the kernel's side, over rtnetlink in
//! [`NetlinkRouteTable`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol,
};
use rtnetlink::RouteMessageBuilder;

/// The routing protocol number (`ip route ... proto 150`) of the kubelet's routes.
/// Unassigned in iproute2's `rt_protos`; `echo "150 pikube" >
/// /etc/iproute2/rt_protos.d/pikube.conf` names it for `ip route`.
pub const ROUTE_PROTOCOL: u8 = 150;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("opening a netlink socket: {0}")]
    Connect(#[source] std::io::Error),
    #[error("listing routes: {0}")]
    ListRoutes(#[source] rtnetlink::Error),
    #[error("listing addresses: {0}")]
    ListAddresses(#[source] rtnetlink::Error),
    #[error("route {route}: {reason}")]
    Invalid { route: Route, reason: String },
    #[error("adding route {route}: {source}")]
    Add {
        route: Route,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("replacing route {route}: {source}")]
    Replace {
        route: Route,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("deleting route {route}: {source}")]
    Delete {
        route: Route,
        #[source]
        source: rtnetlink::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A route to a peer's pod CIDR via its node IP.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    pub dst: IpNet,
    pub gateway: IpAddr,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} via {}", self.dst, self.gateway)
    }
}

/// What routing needs of a Node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    /// `spec.podCIDRs`, else `spec.podCIDR`; unparsable entries are left out.
    pub pod_cidrs: Vec<IpNet>,
    /// The node's `InternalIP` addresses, in status order.
    pub internal_ips: Vec<IpAddr>,
}

impl Peer {
    pub fn from_node(node: &Node) -> Peer {
        Peer {
            name: node.metadata.name.clone().unwrap_or_default(),
            pod_cidrs: node_pod_cidrs(node),
            internal_ips: node
                .status
                .as_ref()
                .and_then(|s| s.addresses.as_ref())
                .into_iter()
                .flatten()
                .filter(|a| a.type_ == "InternalIP")
                .filter_map(|a| a.address.parse().ok())
                .collect(),
        }
    }
}

/// A Node's pod CIDRs: `spec.podCIDRs`, else `spec.podCIDR`, truncated to their networks.
pub fn node_pod_cidrs(node: &Node) -> Vec<IpNet> {
    let Some(spec) = node.spec.as_ref() else {
        return Vec::new();
    };
    let texts: Vec<&str> = match spec.pod_cidrs.as_deref() {
        Some(list) if !list.is_empty() => list.iter().map(String::as_str).collect(),
        _ => spec.pod_cidr.as_deref().into_iter().collect(),
    };
    texts
        .into_iter()
        .filter_map(|t| t.parse::<IpNet>().ok())
        .map(|n| n.trunc())
        .collect()
}

/// Why a peer's pod CIDR gets no route.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Skip {
    /// The node has no InternalIP of the CIDR's family.
    NoInternalIp { node: String, cidr: IpNet },
    /// The node's InternalIP is not in a network this node is attached to: host-gw
    /// needs the nodes on one link (an overlay would be needed otherwise).
    NotOnLink { node: String, ip: IpAddr },
    /// The node's InternalIP is one of this node's own addresses.
    OwnAddress { node: String, ip: IpAddr },
    /// The CIDR overlaps this node's own pod CIDR.
    OverlapsOwn { node: String, cidr: IpNet },
    /// Another node (first by name) already claims an overlapping CIDR.
    Duplicate {
        node: String,
        cidr: IpNet,
        claimed_by: String,
    },
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skip::NoInternalIp { node, cidr } => {
                write!(f, "node {node} has no InternalIP for its pod CIDR {cidr}")
            }
            Skip::NotOnLink { node, ip } => write!(
                f,
                "node {node}'s InternalIP {ip} is not on a link of this node: no host-gw route to its pods"
            ),
            Skip::OwnAddress { node, ip } => {
                write!(f, "node {node}'s InternalIP {ip} is an address of this node")
            }
            Skip::OverlapsOwn { node, cidr } => {
                write!(f, "node {node}'s pod CIDR {cidr} overlaps this node's")
            }
            Skip::Duplicate {
                node,
                cidr,
                claimed_by,
            } => write!(
                f,
                "node {node}'s pod CIDR {cidr} overlaps node {claimed_by}'s"
            ),
        }
    }
}

/// The routes this node wants: for every peer other than `own_node`, each pod CIDR via
/// the peer's first InternalIP of the same family, when that address is on one of this
/// node's links (`local`: this node's interface addresses with their prefix lengths).
/// The routes come sorted by destination; `Skip`s say what was left out and why.
pub fn desired_routes(
    peers: &[Peer],
    own_node: &str,
    own_cidrs: &[IpNet],
    local: &[IpNet],
) -> (Vec<Route>, Vec<Skip>) {
    let mut peers: Vec<&Peer> = peers.iter().filter(|p| p.name != own_node).collect();
    peers.sort_by(|a, b| a.name.cmp(&b.name));
    let mut routes: BTreeMap<IpNet, (Route, &str)> = BTreeMap::new();
    let mut skips = Vec::new();
    for peer in peers {
        for cidr in &peer.pod_cidrs {
            if own_cidrs.iter().any(|own| overlaps(own, cidr)) {
                skips.push(Skip::OverlapsOwn {
                    node: peer.name.clone(),
                    cidr: *cidr,
                });
                continue;
            }
            if let Some((_, by)) = routes.values().find(|(r, _)| overlaps(&r.dst, cidr)) {
                skips.push(Skip::Duplicate {
                    node: peer.name.clone(),
                    cidr: *cidr,
                    claimed_by: (*by).to_owned(),
                });
                continue;
            }
            let Some(ip) = peer
                .internal_ips
                .iter()
                .copied()
                .find(|ip| ip.is_ipv4() == cidr.addr().is_ipv4())
            else {
                skips.push(Skip::NoInternalIp {
                    node: peer.name.clone(),
                    cidr: *cidr,
                });
                continue;
            };
            if local.iter().any(|a| a.addr() == ip) {
                skips.push(Skip::OwnAddress {
                    node: peer.name.clone(),
                    ip,
                });
                continue;
            }
            if !local.iter().any(|a| a.contains(&ip)) {
                skips.push(Skip::NotOnLink {
                    node: peer.name.clone(),
                    ip,
                });
                continue;
            }
            routes.insert(
                *cidr,
                (
                    Route {
                        dst: *cidr,
                        gateway: ip,
                    },
                    peer.name.as_str(),
                ),
            );
        }
    }
    skips.sort();
    skips.dedup();
    (routes.into_values().map(|(r, _)| r).collect(), skips)
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// What to change so the owned routes become the desired ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Destinations with no route of ours.
    pub add: Vec<Route>,
    /// Destinations with a route of ours via another gateway (the peer's IP changed).
    pub replace: Vec<Route>,
    /// Routes of ours no one wants (the node went, or lost its CIDR), and extra routes of
    /// ours to a destination that is replaced.
    pub delete: Vec<Route>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.replace.is_empty() && self.delete.is_empty()
    }
}

/// The changes from `installed` (the kernel's routes with our protocol) to `desired`.
pub fn plan(desired: &[Route], installed: &[Route]) -> Plan {
    let mut by_dst: BTreeMap<IpNet, BTreeSet<IpAddr>> = BTreeMap::new();
    for r in installed {
        by_dst.entry(r.dst).or_default().insert(r.gateway);
    }
    let wanted: BTreeSet<IpNet> = desired.iter().map(|r| r.dst).collect();
    let mut out = Plan::default();
    for r in desired {
        match by_dst.get(&r.dst) {
            None => out.add.push(r.clone()),
            Some(gateways) if gateways.contains(&r.gateway) => {
                // Right route; any other of ours to the same place goes.
                out.delete
                    .extend(gateways.iter().filter(|g| **g != r.gateway).map(|g| Route {
                        dst: r.dst,
                        gateway: *g,
                    }));
            }
            Some(gateways) => {
                out.replace.push(r.clone());
                // Replace rewrites one route to the destination; the rest go.
                out.delete.extend(gateways.iter().skip(1).map(|g| Route {
                    dst: r.dst,
                    gateway: *g,
                }));
            }
        }
    }
    for (dst, gateways) in &by_dst {
        if !wanted.contains(dst) {
            out.delete.extend(gateways.iter().map(|g| Route {
                dst: *dst,
                gateway: *g,
            }));
        }
    }
    out
}

/// The kernel's routing table as the kubelet sees it (youki's `Syscall` pattern: the real
/// one here, a recording one in tests).
#[async_trait::async_trait]
pub trait RouteTable: Send + Sync {
    /// This namespace's interface addresses with their prefix lengths, loopback and IPv6
    /// link-local ones left out.
    async fn local_addresses(&self) -> Result<Vec<IpNet>>;
    /// The main table's routes with [`ROUTE_PROTOCOL`] (or the table's own protocol).
    async fn owned_routes(&self) -> Result<Vec<Route>>;
    /// Adds a route; fails if any route to that destination exists (never clobbers one
    /// that is not ours).
    async fn add(&self, route: &Route) -> Result<()>;
    /// Rewrites our route to `route.dst` to go via `route.gateway`.
    async fn replace(&self, route: &Route) -> Result<()>;
    /// Deletes our route; a route with another protocol is left alone.
    async fn delete(&self, route: &Route) -> Result<()>;
}

/// The routing table of the kubelet's network namespace, over rtnetlink.
pub struct NetlinkRouteTable {
    handle: rtnetlink::Handle,
    protocol: u8,
}

impl NetlinkRouteTable {
    /// Opens a netlink socket in the current network namespace; needs a tokio runtime
    /// (the connection runs as a task of its own).
    pub fn connect(protocol: u8) -> Result<NetlinkRouteTable> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::Connect)?;
        tokio::spawn(connection);
        Ok(NetlinkRouteTable { handle, protocol })
    }

    fn message(&self, route: &Route) -> Result<RouteMessage> {
        let builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(route.dst.network(), route.dst.prefix_len())
            .and_then(|b| b.gateway(route.gateway))
            .map_err(|e| Error::Invalid {
                route: route.clone(),
                reason: e.to_string(),
            })?;
        Ok(builder.protocol(RouteProtocol::from(self.protocol)).build())
    }
}

/// Loopback and IPv6 link-local addresses say nothing about which peers are on a link
/// (a link-local gateway would need an interface named with it).
fn usable(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback(),
        IpAddr::V6(v6) => !v6.is_loopback() && !v6.is_unicast_link_local(),
    }
}

fn route_of(msg: &RouteMessage, protocol: u8) -> Option<Route> {
    if u8::from(msg.header.protocol) != protocol {
        return None;
    }
    let table = msg
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(msg.header.table));
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let ip = |a: &RouteAddress| match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    };
    let dst = msg.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(d) => ip(d),
        _ => None,
    })?;
    let gateway = msg.attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(g) => ip(g),
        _ => None,
    })?;
    let dst = IpNet::new(dst, msg.header.destination_prefix_length).ok()?;
    Some(Route { dst, gateway })
}

#[async_trait::async_trait]
impl RouteTable for NetlinkRouteTable {
    async fn local_addresses(&self) -> Result<Vec<IpNet>> {
        let messages: Vec<_> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(Error::ListAddresses)?;
        Ok(messages
            .iter()
            .flat_map(|m| {
                m.attributes.iter().filter_map(move |a| match a {
                    AddressAttribute::Address(ip) if usable(ip) => {
                        IpNet::new(*ip, m.header.prefix_len).ok()
                    }
                    _ => None,
                })
            })
            .collect())
    }

    async fn owned_routes(&self) -> Result<Vec<Route>> {
        let mut routes = Vec::new();
        for request in [
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            RouteMessageBuilder::<Ipv6Addr>::new().build(),
        ] {
            let messages: Vec<_> = self
                .handle
                .route()
                .get(request)
                .execute()
                .try_collect()
                .await
                .map_err(Error::ListRoutes)?;
            routes.extend(messages.iter().filter_map(|m| route_of(m, self.protocol)));
        }
        routes.sort();
        Ok(routes)
    }

    async fn add(&self, route: &Route) -> Result<()> {
        let msg = self.message(route)?;
        self.handle
            .route()
            .add(msg)
            .execute()
            .await
            .map_err(|source| Error::Add {
                route: route.clone(),
                source,
            })
    }

    async fn replace(&self, route: &Route) -> Result<()> {
        let msg = self.message(route)?;
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(|source| Error::Replace {
                route: route.clone(),
                source,
            })
    }

    async fn delete(&self, route: &Route) -> Result<()> {
        // The kernel deletes only a route whose protocol matches a non-zero one in the
        // request: a user's route to the same place stays.
        let msg = self.message(route)?;
        self.handle
            .route()
            .del(msg)
            .execute()
            .await
            .map_err(|source| Error::Delete {
                route: route.clone(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn route(dst: &str, gw: &str) -> Route {
        Route {
            dst: net(dst),
            gateway: ip(gw),
        }
    }

    fn peer(name: &str, cidrs: &[&str], ips: &[&str]) -> Peer {
        Peer {
            name: name.into(),
            pod_cidrs: cidrs.iter().map(|c| net(c)).collect(),
            internal_ips: ips.iter().map(|i| ip(i)).collect(),
        }
    }

    const LOCAL: &[&str] = &["192.168.1.10/24", "fd00::10/64"];

    fn local() -> Vec<IpNet> {
        LOCAL.iter().map(|a| net(a)).collect()
    }

    #[test]
    fn one_route_per_other_node_via_its_internal_ip() {
        let peers = [
            peer("pi-1", &["10.244.1.0/24"], &["192.168.1.10"]),
            peer("pi-3", &["10.244.3.0/24"], &["192.168.1.13"]),
            peer("pi-2", &["10.244.2.0/24"], &["192.168.1.12"]),
            // No podCIDR yet: nothing to route.
            peer("pi-4", &[], &["192.168.1.14"]),
        ];
        let (routes, skips) = desired_routes(&peers, "pi-1", &[net("10.244.1.0/24")], &local());
        assert_eq!(
            routes,
            vec![
                route("10.244.2.0/24", "192.168.1.12"),
                route("10.244.3.0/24", "192.168.1.13")
            ]
        );
        assert!(skips.is_empty(), "{skips:?}");
    }

    #[test]
    fn dual_stack_peers_get_a_route_per_family() {
        let peers = [peer(
            "pi-2",
            &["10.244.2.0/24", "fd10:2::/64"],
            &["192.168.1.12", "fd00::12"],
        )];
        let (routes, skips) = desired_routes(&peers, "pi-1", &[], &local());
        assert_eq!(
            routes,
            vec![
                route("10.244.2.0/24", "192.168.1.12"),
                route("fd10:2::/64", "fd00::12")
            ]
        );
        assert!(skips.is_empty());

        // IPv4 only: the IPv6 CIDR is skipped, not routed via an IPv4 address.
        let peers = [peer(
            "pi-2",
            &["10.244.2.0/24", "fd10:2::/64"],
            &["192.168.1.12"],
        )];
        let (routes, skips) = desired_routes(&peers, "pi-1", &[], &local());
        assert_eq!(routes, vec![route("10.244.2.0/24", "192.168.1.12")]);
        assert_eq!(
            skips,
            vec![Skip::NoInternalIp {
                node: "pi-2".into(),
                cidr: net("fd10:2::/64")
            }]
        );
    }

    #[test]
    fn peers_off_link_own_address_and_overlaps_are_skipped() {
        let peers = [
            peer("far", &["10.244.5.0/24"], &["10.9.9.9"]),
            peer("me-too", &["10.244.6.0/24"], &["192.168.1.10"]),
            peer("clash", &["10.244.1.0/25"], &["192.168.1.20"]),
            peer("a-first", &["10.244.7.0/24"], &["192.168.1.21"]),
            peer("b-second", &["10.244.7.128/25"], &["192.168.1.22"]),
            peer("no-ip", &["10.244.8.0/24"], &[]),
        ];
        let (routes, skips) = desired_routes(&peers, "pi-1", &[net("10.244.1.0/24")], &local());
        assert_eq!(routes, vec![route("10.244.7.0/24", "192.168.1.21")]);
        let text: Vec<String> = skips.iter().map(ToString::to_string).collect();
        assert_eq!(skips.len(), 5, "{text:#?}");
        assert!(skips.contains(&Skip::NotOnLink {
            node: "far".into(),
            ip: ip("10.9.9.9")
        }));
        assert!(skips.contains(&Skip::OwnAddress {
            node: "me-too".into(),
            ip: ip("192.168.1.10")
        }));
        assert!(skips.contains(&Skip::OverlapsOwn {
            node: "clash".into(),
            cidr: net("10.244.1.0/25")
        }));
        assert!(skips.contains(&Skip::Duplicate {
            node: "b-second".into(),
            cidr: net("10.244.7.128/25"),
            claimed_by: "a-first".into()
        }));
        assert!(skips.contains(&Skip::NoInternalIp {
            node: "no-ip".into(),
            cidr: net("10.244.8.0/24")
        }));
        assert!(text.iter().any(|t| t.contains("not on a link")), "{text:?}");
    }

    #[test]
    fn plan_adds_replaces_and_deletes() {
        let desired = [
            route("10.244.2.0/24", "192.168.1.12"), // new node
            route("10.244.3.0/24", "192.168.1.33"), // IP changed
            route("10.244.4.0/24", "192.168.1.14"), // unchanged
        ];
        let installed = [
            route("10.244.3.0/24", "192.168.1.13"),
            route("10.244.4.0/24", "192.168.1.14"),
            route("10.244.9.0/24", "192.168.1.19"), // node deleted
        ];
        assert_eq!(
            plan(&desired, &installed),
            Plan {
                add: vec![route("10.244.2.0/24", "192.168.1.12")],
                replace: vec![route("10.244.3.0/24", "192.168.1.33")],
                delete: vec![route("10.244.9.0/24", "192.168.1.19")],
            }
        );
    }

    #[test]
    fn plan_in_sync_is_empty_and_everything_goes_when_no_peer_is_left() {
        let routes = [
            route("10.244.2.0/24", "192.168.1.12"),
            route("fd10:2::/64", "fd00::12"),
        ];
        assert!(plan(&routes, &routes).is_empty());
        assert!(plan(&[], &[]).is_empty());
        let p = plan(&[], &routes);
        assert_eq!(p.delete, routes.to_vec());
        assert!(p.add.is_empty() && p.replace.is_empty());
    }

    #[test]
    fn plan_removes_duplicates_of_ours_to_one_destination() {
        let installed = [
            route("10.244.2.0/24", "192.168.1.12"),
            route("10.244.2.0/24", "192.168.1.99"),
        ];
        let p = plan(&[route("10.244.2.0/24", "192.168.1.12")], &installed);
        assert_eq!(p.delete, vec![route("10.244.2.0/24", "192.168.1.99")]);
        assert!(p.add.is_empty() && p.replace.is_empty());
    }

    #[test]
    fn peers_from_nodes() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pi-2"},
            "spec": {"podCIDR": "10.244.2.0/24", "podCIDRs": ["10.244.2.0/24", "fd10:2::/64"]},
            "status": {"addresses": [
                {"type": "Hostname", "address": "pi-2"},
                {"type": "InternalIP", "address": "192.168.1.12"},
                {"type": "ExternalIP", "address": "203.0.113.2"}
            ]}
        }))
        .unwrap();
        assert_eq!(
            Peer::from_node(&node),
            peer("pi-2", &["10.244.2.0/24", "fd10:2::/64"], &["192.168.1.12"])
        );
        let old: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pi-3"},
            "spec": {"podCIDR": "10.244.3.7/24"}
        }))
        .unwrap();
        assert_eq!(node_pod_cidrs(&old), vec![net("10.244.3.0/24")]);
    }
}
