//! The nftables proxier (upstream `pkg/proxy/nftables/proxier.go`): one table per IP
//! family, `ip kube-proxy` and `ip6 kube-proxy`, programmed with atomic `nft -f -`
//! transactions.
//!
//! A packet's cost does not grow with the number of Services: the `services` chain looks
//! its destination up in verdict maps (`service-ips` keyed by `ipv4_addr . inet_proto .
//! inet_service` — `ipv6_addr` in `ip6` —, `service-nodeports` keyed by `inet_proto . inet_service` on local
//! addresses) that jump to one chain per Service port. That chain picks an endpoint chain
//! with `numgen random mod N` (after the `ClientIP` affinity sets), and the endpoint chain
//! DNATs. Traffic that must be masqueraded (hairpin, off-cluster sources of a ClusterIP,
//! external traffic under the Cluster policy) is marked, and `nat-postrouting` masquerades
//! marked packets. A Service without usable endpoints is rejected (TCP reset / ICMP
//! unreachable) or dropped in the filter hooks through the `no-endpoint-*` maps.
//!
//! The proxier remembers what it applied per Service port; after the first (full) sync a
//! transaction only rewrites the chains, sets and map elements of Service ports that
//! changed, so one change among thousands of Services stays a small transaction.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Stdio;

use ipnet::IpNet;
use tokio::io::AsyncWriteExt;

use crate::endpoints::{categorize, Endpoint};
use crate::service::{IpFamily, ServicePort, ServicePortName};

/// The table kube-proxy owns in each family. Nothing outside them is ever touched.
pub const TABLE: &str = "kube-proxy";

/// nft's name of a family's table: `ip kube-proxy`, `ip6 kube-proxy`.
pub fn table(family: IpFamily) -> String {
    match family {
        IpFamily::V4 => format!("ip {TABLE}"),
        IpFamily::V6 => format!("ip6 {TABLE}"),
    }
}
/// Upstream's default masquerade bit (14).
const MASQUERADE_MARK: &str = "0x4000";
/// The filter hooks run after DNAT (-100), as upstream's: a connection that was DNATed
/// to an endpoint no longer matches the no-endpoint maps (its destination changed), so
/// a drop there only hits traffic nothing handled.
const FILTER_PRIORITY: i32 = 0;
/// nft 1.0.6 refuses `priority dstnat` on the output hook: the number is used everywhere.
const DSTNAT_PRIORITY: i32 = -100;
const SRCNAT_PRIORITY: i32 = 100;

const SERVICE_IPS: &str = "service-ips";
const SERVICE_NODEPORTS: &str = "service-nodeports";
const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
const NODEPORT_IPS: &str = "nodeport-ips";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("running {binary}: {source}")]
    Spawn {
        binary: String,
        #[source]
        source: std::io::Error,
    },
    #[error("nft -f - failed ({status}): {stderr}")]
    Transaction { status: String, stderr: String },
    #[error("nftables is not usable: {0}")]
    Unusable(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Applies nftables transactions: the real `nft` binary, or a recorder in unit tests.
#[async_trait::async_trait]
pub trait Nft: Send + Sync {
    /// Applies `transaction` (nft's text syntax) atomically: all of it or nothing.
    async fn apply(&self, transaction: &str) -> Result<()>;
}

/// `nft -f -`.
#[derive(Clone, Debug)]
pub struct NftCommand {
    pub binary: PathBuf,
}

impl Default for NftCommand {
    fn default() -> Self {
        NftCommand {
            binary: PathBuf::from("nft"),
        }
    }
}

#[async_trait::async_trait]
impl Nft for NftCommand {
    async fn apply(&self, transaction: &str) -> Result<()> {
        let spawn_err = |source| Error::Spawn {
            binary: self.binary.display().to_string(),
            source,
        };
        let mut child = tokio::process::Command::new(&self.binary)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn_err)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(transaction.as_bytes())
                .await
                .map_err(spawn_err)?;
        }
        let out = child.wait_with_output().await.map_err(spawn_err)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(Error::Transaction {
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }
}

impl NftCommand {
    /// Whether nftables mode can work here, as upstream's probe: `nft --version` at least
    /// 1.0 and an `ip` table can be created (then removed) in this network namespace.
    pub async fn check_usable(&self) -> Result<String> {
        let out = tokio::process::Command::new(&self.binary)
            .arg("--version")
            .output()
            .await
            .map_err(|source| Error::Spawn {
                binary: self.binary.display().to_string(),
                source,
            })?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let version = parse_version(&text)
            .ok_or_else(|| Error::Unusable(format!("unrecognised nft --version {text:?}")))?;
        if version < (1, 0) {
            return Err(Error::Unusable(format!(
                "nft {}.{} is older than 1.0",
                version.0, version.1
            )));
        }
        self.check_family(IpFamily::V4).await?;
        Ok(text)
    }

    /// Whether a table of `family` can be created here (IPv6 may be off).
    pub async fn check_family(&self, family: IpFamily) -> Result<()> {
        let tbl = table(family);
        let probe = format!("add table {tbl}-probe\ndelete table {tbl}-probe\n");
        self.apply(&probe)
            .await
            .map_err(|e| Error::Unusable(format!("cannot create a {tbl} table: {e}")))
    }
}

/// `nftables v1.0.6 (Lester Gooch #5)` → (1, 0).
fn parse_version(text: &str) -> Option<(u32, u32)> {
    let v = text.split_whitespace().find_map(|w| w.strip_prefix('v'))?;
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// A transaction that removes kube-proxy's table of `family` if it exists (`--cleanup`).
pub fn cleanup_transaction(family: IpFamily) -> String {
    let tbl = table(family);
    format!("add table {tbl}\ndelete table {tbl}\n")
}

/// One element of one of the table's maps.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Element {
    pub map: &'static str,
    pub key: String,
    pub value: String,
}

/// The objects one Service port owns in the table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceRules {
    /// Chain name → its rules, in order.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Affinity set name → its declaration body.
    pub sets: BTreeMap<String, String>,
    pub elements: BTreeSet<Element>,
}

/// Builds one family's table contents from Services and endpoints.
#[derive(Clone, Debug)]
pub struct RuleBuilder {
    family: IpFamily,
    /// Pod CIDRs of this family.
    cluster_cidrs: Vec<IpNet>,
    /// `--nodeport-addresses` of this family.
    nodeport_addresses: Vec<IpNet>,
}

fn cidr_set(cidrs: &[IpNet]) -> String {
    let list: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
    format!("{{ {} }}", list.join(", "))
}

impl RuleBuilder {
    /// A builder for `family`; CIDRs of the other family are left out.
    pub fn new(family: IpFamily, cluster_cidrs: &[IpNet], nodeport_addresses: &[IpNet]) -> Self {
        let of_family = |nets: &[IpNet]| -> Vec<IpNet> {
            nets.iter()
                .filter(|n| family.matches(&n.addr()))
                .map(IpNet::trunc)
                .collect()
        };
        RuleBuilder {
            family,
            cluster_cidrs: of_family(cluster_cidrs),
            nodeport_addresses: of_family(nodeport_addresses),
        }
    }

    pub fn family(&self) -> IpFamily {
        self.family
    }

    /// `ip kube-proxy` or `ip6 kube-proxy`.
    pub fn table(&self) -> String {
        table(self.family)
    }

    /// The network-layer keyword of matches: `ip saddr`, `ip6 saddr`.
    fn l3(&self) -> &'static str {
        match self.family {
            IpFamily::V4 => "ip",
            IpFamily::V6 => "ip6",
        }
    }

    fn addr_type(&self) -> &'static str {
        match self.family {
            IpFamily::V4 => "ipv4_addr",
            IpFamily::V6 => "ipv6_addr",
        }
    }

    /// Local addresses that never accept NodePorts.
    fn loopback(&self) -> &'static str {
        match self.family {
            IpFamily::V4 => "127.0.0.0/8",
            IpFamily::V6 => "::1",
        }
    }

    /// The table and its fixed chains and maps (created by the first, full sync).
    pub fn base(&self) -> String {
        let (tbl, l3, addr_type, loopback) =
            (self.table(), self.l3(), self.addr_type(), self.loopback());
        let mut t = String::new();
        let mut chain = |name: &str, hook: Option<(&str, &str, i32)>, rules: &[String]| {
            match hook {
                Some((kind, hook, prio)) => {
                    let _ = writeln!(
                        t,
                        "add chain {tbl} {name} {{ type {kind} hook {hook} priority {prio} ; }}"
                    );
                }
                None => {
                    let _ = writeln!(t, "add chain {tbl} {name}");
                }
            }
            for r in rules {
                let _ = writeln!(t, "add rule {tbl} {name} {r}");
            }
        };
        let nodeport_match = if self.nodeport_addresses.is_empty() {
            format!("fib daddr type local {l3} daddr != {loopback}")
        } else {
            format!("{l3} daddr @{NODEPORT_IPS} fib daddr type local {l3} daddr != {loopback}")
        };
        let mut head = format!("add table {tbl} {{ comment \"rules for kube-proxy\" ; }}\n");
        let _ = writeln!(
            head,
            "add map {tbl} {SERVICE_IPS} {{ type {addr_type} . inet_proto . inet_service : verdict ; comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\" ; }}"
        );
        let _ = writeln!(
            head,
            "add map {tbl} {SERVICE_NODEPORTS} {{ type inet_proto . inet_service : verdict ; comment \"NodePort traffic\" ; }}"
        );
        let _ = writeln!(
            head,
            "add map {tbl} {NO_ENDPOINT_SERVICES} {{ type {addr_type} . inet_proto . inet_service : verdict ; comment \"vmap to drop or reject packets to services with no endpoints\" ; }}"
        );
        let _ = writeln!(
            head,
            "add map {tbl} {NO_ENDPOINT_NODEPORTS} {{ type inet_proto . inet_service : verdict ; comment \"vmap to drop or reject packets to service nodeports with no endpoints\" ; }}"
        );
        if !self.nodeport_addresses.is_empty() {
            let _ = writeln!(
                head,
                "add set {tbl} {NODEPORT_IPS} {{ type {addr_type} ; flags interval ; comment \"--nodeport-addresses\" ; }}"
            );
            let _ = writeln!(
                head,
                "add element {tbl} {NODEPORT_IPS} {}",
                cidr_set(&self.nodeport_addresses)
            );
        }
        chain(
            "mark-for-masquerade",
            None,
            &[format!("meta mark set meta mark | {MASQUERADE_MARK}")],
        );
        chain(
            "masquerading",
            None,
            &[
                format!("meta mark & {MASQUERADE_MARK} == 0 return"),
                format!("meta mark set meta mark ^ {MASQUERADE_MARK}"),
                "masquerade fully-random".into(),
            ],
        );
        chain(
            "reject-chain",
            None,
            &[
                "meta l4proto tcp reject with tcp reset".into(),
                "reject".into(),
            ],
        );
        chain(
            "services",
            None,
            &[
                format!("{l3} daddr . meta l4proto . th dport vmap @{SERVICE_IPS}"),
                format!("{nodeport_match} meta l4proto . th dport vmap @{SERVICE_NODEPORTS}"),
            ],
        );
        chain(
            "service-endpoints-check",
            None,
            &[format!(
                "{l3} daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_SERVICES}"
            )],
        );
        chain(
            "nodeport-endpoints-check",
            None,
            &[format!(
                "{nodeport_match} meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS}"
            )],
        );
        let check_services = "ct state new jump service-endpoints-check".to_string();
        let check_nodeports = "ct state new jump nodeport-endpoints-check".to_string();
        chain(
            "filter-input",
            Some(("filter", "input", FILTER_PRIORITY)),
            &[check_nodeports.clone(), check_services.clone()],
        );
        chain(
            "filter-forward",
            Some(("filter", "forward", FILTER_PRIORITY)),
            std::slice::from_ref(&check_services),
        );
        chain(
            "filter-output",
            Some(("filter", "output", FILTER_PRIORITY)),
            &[check_services, check_nodeports],
        );
        chain(
            "nat-prerouting",
            Some(("nat", "prerouting", DSTNAT_PRIORITY)),
            &["jump services".into()],
        );
        chain(
            "nat-output",
            Some(("nat", "output", DSTNAT_PRIORITY)),
            &["jump services".into()],
        );
        chain(
            "nat-postrouting",
            Some(("nat", "postrouting", SRCNAT_PRIORITY)),
            &["jump masquerading".into()],
        );
        head + &t
    }

    /// What one Service port needs in the table, given all its endpoints.
    pub fn service(
        &self,
        name: &ServicePortName,
        port: &ServicePort,
        endpoints: &[Endpoint],
    ) -> ServiceRules {
        let mut out = ServiceRules::default();
        let cat = categorize(endpoints);
        let internal = cat.internal(port);
        let external = cat.external(port);
        let proto = name.protocol.nft();
        let (l3, addr_type) = (self.l3(), self.addr_type());
        let cluster_chain = format!("service-{name}");
        let local_chain = format!("local-{name}");
        let external_chain = format!("external-{name}");
        // nft names may not hold ':', so IPv6 addresses are written with '.' there.
        let ep_name = |ep: &Endpoint| {
            format!(
                "{name}__{}/{}",
                ep.ip.to_string().replace(':', "."),
                ep.port
            )
        };
        let endpoint_chain = |ep: &Endpoint| format!("endpoint-{}", ep_name(ep));
        let affinity_set = |ep: &Endpoint| format!("affinity-{}", ep_name(ep));
        // External traffic has its chain when it has endpoints, and under the Local
        // policy also when only other nodes have some: pods and the node itself may
        // still use those.
        let uses_external = port.externally_accessible()
            && (!external.is_empty() || (port.external_policy_local && !cat.cluster.is_empty()));

        // The policy chains: load balancing over a set of endpoints.
        let policy_chain = |chain: &str, eps: &[Endpoint], out: &mut ServiceRules| {
            let mut rules = Vec::new();
            if port.affinity_timeout_seconds.is_some() {
                for ep in eps {
                    rules.push(format!(
                        "{l3} saddr @{} goto {}",
                        affinity_set(ep),
                        endpoint_chain(ep)
                    ));
                }
            }
            let arms: Vec<String> = eps
                .iter()
                .enumerate()
                .map(|(i, ep)| format!("{i} : goto {}", endpoint_chain(ep)))
                .collect();
            rules.push(format!(
                "numgen random mod {} vmap {{ {} }}",
                eps.len(),
                arms.join(", ")
            ));
            out.chains.insert(chain.to_string(), rules);
        };
        let needs_cluster = (!port.internal_policy_local && !internal.is_empty())
            || (uses_external && (!port.external_policy_local || !cat.cluster.is_empty()));
        if needs_cluster && !cat.cluster.is_empty() {
            policy_chain(&cluster_chain, &cat.cluster, &mut out);
        }
        let needs_local = (port.internal_policy_local && !internal.is_empty())
            || (port.external_policy_local && uses_external && !cat.local.is_empty());
        if needs_local {
            policy_chain(&local_chain, &cat.local, &mut out);
        }
        let internal_chain = if port.internal_policy_local {
            &local_chain
        } else {
            &cluster_chain
        };
        // ClusterIP traffic from outside the pod network is masqueraded so replies come
        // back through this node.
        if let (Some(ip), false, false) = (
            port.cluster_ip,
            self.cluster_cidrs.is_empty(),
            internal.is_empty(),
        ) {
            if let Some(rules) = out.chains.get_mut(internal_chain) {
                rules.insert(
                    0,
                    format!(
                        "{l3} daddr {ip} meta l4proto {proto} th dport {} {l3} saddr != {} jump mark-for-masquerade",
                        port.port,
                        cidr_set(&self.cluster_cidrs)
                    ),
                );
            }
        }
        if uses_external {
            let mut rules = Vec::new();
            if port.external_policy_local {
                // Pods and the node itself may use any endpoint; outside clients keep
                // their source address and reach only this node's endpoints.
                if !self.cluster_cidrs.is_empty() {
                    rules.push(format!(
                        "{l3} saddr {} goto {cluster_chain}",
                        cidr_set(&self.cluster_cidrs)
                    ));
                }
                rules.push("fib saddr type local jump mark-for-masquerade".to_string());
                rules.push(format!("fib saddr type local goto {cluster_chain}"));
                if !cat.local.is_empty() {
                    rules.push(format!("goto {local_chain}"));
                }
            } else {
                rules.push("jump mark-for-masquerade".to_string());
                rules.push(format!("goto {cluster_chain}"));
            }
            out.chains.insert(external_chain.clone(), rules);
        }
        // Endpoint chains for every endpoint a policy chain names.
        let mut used: BTreeSet<&Endpoint> = BTreeSet::new();
        if out.chains.contains_key(&cluster_chain) {
            used.extend(cat.cluster.iter());
        }
        if out.chains.contains_key(&local_chain) {
            used.extend(cat.local.iter());
        }
        for ep in used {
            let mut rules = vec![format!("{l3} saddr {} jump mark-for-masquerade", ep.ip)];
            if let Some(timeout) = port.affinity_timeout_seconds {
                let set = affinity_set(ep);
                rules.push(format!("update @{set} {{ {l3} saddr }}"));
                out.sets.insert(
                    set,
                    format!("type {addr_type} ; flags dynamic,timeout ; timeout {timeout}s ;"),
                );
            }
            rules.push(format!("meta l4proto {proto} dnat to {}", ep.addr()));
            out.chains.insert(endpoint_chain(ep), rules);
        }
        // Map elements: where each destination goes.
        let unusable = if cat.cluster.is_empty() {
            "goto reject-chain".to_string()
        } else {
            // Endpoints exist but the Local policy rules them all out here.
            "drop".to_string()
        };
        if let Some(ip) = port.cluster_ip {
            let key = format!("{ip} . {proto} . {}", port.port);
            out.elements.insert(if internal.is_empty() {
                Element {
                    map: NO_ENDPOINT_SERVICES,
                    key,
                    value: unusable.clone(),
                }
            } else {
                Element {
                    map: SERVICE_IPS,
                    key,
                    value: format!("goto {internal_chain}"),
                }
            });
        }
        // External destinations: to the external chain when it exists; to the
        // no-endpoint maps when no endpoint serves outside clients (with the Local
        // policy both: what the external chain does not short-circuit to another node
        // is dropped by the filter hooks).
        let mut external_targets = Vec::new();
        if uses_external {
            external_targets.push((
                SERVICE_IPS,
                SERVICE_NODEPORTS,
                format!("goto {external_chain}"),
            ));
        }
        if external.is_empty() {
            external_targets.push((NO_ENDPOINT_SERVICES, NO_ENDPOINT_NODEPORTS, unusable));
        }
        for (ips_map, nodeports_map, value) in external_targets {
            for ip in port.external_ips.iter().chain(&port.load_balancer_ips) {
                out.elements.insert(Element {
                    map: ips_map,
                    key: format!("{ip} . {proto} . {}", port.port),
                    value: value.clone(),
                });
            }
            if let Some(np) = port.node_port {
                out.elements.insert(Element {
                    map: nodeports_map,
                    key: format!("{proto} . {np}"),
                    value,
                });
            }
        }
        out
    }

    /// The desired contents for every Service port.
    ///
    /// A map key may have one value only (nft refuses a second with "File exists", and
    /// the whole transaction with it), but the API lets two Services claim the same
    /// external IP and port: the first Service port in name order keeps the key, the
    /// others lose that destination until it is free again.
    pub fn build(
        &self,
        services: &BTreeMap<ServicePortName, ServicePort>,
        endpoints: &BTreeMap<ServicePortName, Vec<Endpoint>>,
    ) -> BTreeMap<ServicePortName, ServiceRules> {
        let mut owned: HashSet<(&'static str, String)> = HashSet::new();
        services
            .iter()
            .map(|(name, port)| {
                let eps = endpoints.get(name).map(Vec::as_slice).unwrap_or(&[]);
                let mut rules = self.service(name, port, eps);
                let mut conflicts = Vec::new();
                rules.elements.retain(|e| {
                    let fresh = owned.insert((e.map, e.key.clone()));
                    if !fresh {
                        conflicts.push(format!("{} in {}", e.key, e.map));
                    }
                    fresh
                });
                if !conflicts.is_empty() {
                    tracing::warn!(service_port = %name, ?conflicts, "destination already used by another Service port; ignored");
                }
                (name.clone(), rules)
            })
            .collect()
    }
}

/// Chains are created endpoint chains first, then policy chains, then external chains,
/// so every `goto` names a chain that exists.
fn chain_rank(name: &str) -> u8 {
    if name.starts_with("endpoint-") {
        0
    } else if name.starts_with("external-") {
        2
    } else {
        1
    }
}

fn write_chain(t: &mut String, tbl: &str, name: &str, rules: &[String], existed: bool) {
    let _ = writeln!(t, "add chain {tbl} {name}");
    if existed {
        let _ = writeln!(t, "flush chain {tbl} {name}");
    }
    for r in rules {
        let _ = writeln!(t, "add rule {tbl} {name} {r}");
    }
}

fn write_elements<'a>(
    t: &mut String,
    tbl: &str,
    verb: &str,
    elements: impl Iterator<Item = &'a Element>,
) {
    let mut by_map: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for e in elements {
        let item = if verb == "delete" {
            e.key.clone()
        } else {
            format!("{} : {}", e.key, e.value)
        };
        by_map.entry(e.map).or_default().push(item);
    }
    for (map, items) in by_map {
        // Bounded lines keep nft's parser memory small at 10,000 Services.
        for chunk in items.chunks(1000) {
            let _ = writeln!(t, "{verb} element {tbl} {map} {{ {} }}", chunk.join(", "));
        }
    }
}

/// The transaction that takes the table from `old` (what was applied; None: unknown,
/// rebuild everything) to `new`. Empty when nothing changed.
pub fn transaction(
    builder: &RuleBuilder,
    old: Option<&BTreeMap<ServicePortName, ServiceRules>>,
    new: &BTreeMap<ServicePortName, ServiceRules>,
) -> String {
    let empty = BTreeMap::new();
    let tbl = builder.table();
    let mut t = String::new();
    let old = match old {
        Some(old) => old,
        None => {
            // Start from nothing in one atomic step: whatever a previous kube-proxy
            // left in our table goes, nothing else is touched.
            let _ = writeln!(t, "add table {tbl}");
            let _ = writeln!(t, "delete table {tbl}");
            t.push_str(&builder.base());
            &empty
        }
    };
    let blank = ServiceRules::default();
    let changed: Vec<(&ServiceRules, &ServiceRules)> = old
        .keys()
        .chain(new.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter_map(|k| {
            let o = old.get(k).unwrap_or(&blank);
            let n = new.get(k).unwrap_or(&blank);
            (o != n).then_some((o, n))
        })
        .collect();
    if changed.is_empty() {
        return t;
    }
    // 1. Elements that go away or change value.
    write_elements(
        &mut t,
        &tbl,
        "delete",
        changed
            .iter()
            .flat_map(|(o, n)| o.elements.difference(&n.elements)),
    );
    // An affinity set whose timeout changed cannot be altered in place: its Service's
    // chains are flushed (nothing references the set any more), the set is deleted and
    // re-created below, and every chain of that Service is rewritten.
    let recreate: Vec<bool> = changed
        .iter()
        .map(|(o, n)| {
            n.sets
                .iter()
                .any(|(set, decl)| o.sets.get(set).is_some_and(|d| d != decl))
        })
        .collect();
    for ((o, n), _) in changed.iter().zip(&recreate).filter(|(_, r)| **r) {
        for chain in o.chains.keys() {
            let _ = writeln!(t, "flush chain {tbl} {chain}");
        }
        for (set, decl) in &o.sets {
            if n.sets.get(set).is_some_and(|d| d != decl) {
                let _ = writeln!(t, "delete set {tbl} {set}");
            }
        }
    }
    // 2. New sets, and new or changed chains.
    for (o, n) in &changed {
        for (set, decl) in &n.sets {
            if o.sets.get(set) != Some(decl) {
                let _ = writeln!(t, "add set {tbl} {set} {{ {decl} }}");
            }
        }
    }
    let mut writes: Vec<(&String, &Vec<String>, bool)> = Vec::new();
    for ((o, n), recreate) in changed.iter().zip(&recreate) {
        for (chain, rules) in &n.chains {
            match o.chains.get(chain) {
                Some(old_rules) if old_rules == rules && !recreate => {}
                existing => writes.push((chain, rules, existing.is_some())),
            }
        }
    }
    writes.sort_by_key(|(c, _, _)| chain_rank(c));
    for (chain, rules, existed) in writes {
        write_chain(&mut t, &tbl, chain, rules, existed);
    }
    // 3. Elements that are new or changed value.
    write_elements(
        &mut t,
        &tbl,
        "add",
        changed
            .iter()
            .flat_map(|(o, n)| n.elements.difference(&o.elements)),
    );
    // 4. Chains and sets no longer needed: flushed first so none references another.
    let gone: Vec<&String> = changed
        .iter()
        .flat_map(|(o, n)| o.chains.keys().filter(|c| !n.chains.contains_key(*c)))
        .collect();
    for chain in &gone {
        let _ = writeln!(t, "flush chain {tbl} {chain}");
    }
    for chain in &gone {
        let _ = writeln!(t, "delete chain {tbl} {chain}");
    }
    for (o, n) in &changed {
        for set in o.sets.keys().filter(|s| !n.sets.contains_key(*s)) {
            let _ = writeln!(t, "delete set {tbl} {set}");
        }
    }
    t
}

/// Counts of one sync, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncResult {
    /// Whether the whole table was rebuilt.
    pub full: bool,
    /// Service ports whose objects were written or removed.
    pub changed_service_ports: usize,
    /// Bytes of the transaction (0: nothing to apply).
    pub transaction_bytes: usize,
}

/// Keeps the table in step with the Services and endpoints it is given.
pub struct Proxier<N> {
    nft: N,
    builder: RuleBuilder,
    /// What the table holds, per Service port; None until a full sync succeeded.
    applied: Option<BTreeMap<ServicePortName, ServiceRules>>,
}

impl<N: Nft> Proxier<N> {
    pub fn new(nft: N, builder: RuleBuilder) -> Self {
        Proxier {
            nft,
            builder,
            applied: None,
        }
    }

    pub fn nft(&self) -> &N {
        &self.nft
    }

    pub fn family(&self) -> IpFamily {
        self.builder.family()
    }

    /// Applies the difference between what the table holds and what `services` and
    /// `endpoints` ask for. After a failed transaction the next sync rebuilds the table.
    pub async fn sync(
        &mut self,
        services: &BTreeMap<ServicePortName, ServicePort>,
        endpoints: &BTreeMap<ServicePortName, Vec<Endpoint>>,
    ) -> Result<SyncResult> {
        let desired = self.builder.build(services, endpoints);
        let full = self.applied.is_none();
        let changed_service_ports = match &self.applied {
            None => desired.len(),
            Some(old) => old
                .keys()
                .chain(desired.keys())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .filter(|k| old.get(*k) != desired.get(*k))
                .count(),
        };
        let text = transaction(&self.builder, self.applied.as_ref(), &desired);
        if !text.is_empty() {
            if let Err(e) = self.nft.apply(&text).await {
                self.applied = None;
                return Err(e);
            }
        }
        self.applied = Some(desired);
        Ok(SyncResult {
            full,
            changed_service_ports,
            transaction_bytes: text.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{IpFamily, Protocol};
    use parking_lot::Mutex;
    use std::net::IpAddr;
    use std::sync::Arc;

    /// Records every transaction instead of running nft.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<String>>>);

    #[async_trait::async_trait]
    impl Nft for Recorder {
        async fn apply(&self, transaction: &str) -> Result<()> {
            self.0.lock().push(transaction.to_string());
            Ok(())
        }
    }

    fn name(svc: &str, port: &str) -> ServicePortName {
        ServicePortName {
            namespace: "ns".into(),
            name: svc.into(),
            port: port.into(),
            protocol: Protocol::Tcp,
        }
    }

    fn cluster_ip(last: u8, port: u16) -> ServicePort {
        ServicePort {
            cluster_ip: Some(IpAddr::from([10, 96, 0, last])),
            port,
            node_port: None,
            external_ips: vec![],
            load_balancer_ips: vec![],
            affinity_timeout_seconds: None,
            external_policy_local: false,
            internal_policy_local: false,
            health_check_node_port: None,
        }
    }

    fn ep(last: u8, port: u16, local: bool) -> Endpoint {
        Endpoint {
            ip: IpAddr::from([10, 244, 1, last]),
            port,
            ready: true,
            serving: true,
            terminating: false,
            is_local: local,
        }
    }

    fn builder() -> RuleBuilder {
        RuleBuilder::new(IpFamily::V4, &["10.244.0.0/16".parse().unwrap()], &[])
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    fn has(text: &str, line: &str) {
        assert!(
            lines(text).contains(&line),
            "missing line {line:?} in:\n{text}"
        );
    }

    #[test]
    fn clusterip_service_load_balances_over_endpoint_chains() {
        let b = builder();
        let services = BTreeMap::from([(name("web", "http"), cluster_ip(10, 80))]);
        let endpoints = BTreeMap::from([(
            name("web", "http"),
            vec![ep(1, 8080, false), ep(2, 8080, true)],
        )]);
        let t = transaction(&b, None, &b.build(&services, &endpoints));
        has(&t, "add table ip kube-proxy");
        has(&t, "delete table ip kube-proxy");
        has(
            &t,
            "add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }",
        );
        has(
            &t,
            "add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips",
        );
        has(&t, "add rule ip kube-proxy service-ns/web/tcp/http ip daddr 10.96.0.10 meta l4proto tcp th dport 80 ip saddr != { 10.244.0.0/16 } jump mark-for-masquerade");
        has(&t, "add rule ip kube-proxy service-ns/web/tcp/http numgen random mod 2 vmap { 0 : goto endpoint-ns/web/tcp/http__10.244.1.1/8080, 1 : goto endpoint-ns/web/tcp/http__10.244.1.2/8080 }");
        has(&t, "add rule ip kube-proxy endpoint-ns/web/tcp/http__10.244.1.2/8080 ip saddr 10.244.1.2 jump mark-for-masquerade");
        has(&t, "add rule ip kube-proxy endpoint-ns/web/tcp/http__10.244.1.2/8080 meta l4proto tcp dnat to 10.244.1.2:8080");
        has(&t, "add element ip kube-proxy service-ips { 10.96.0.10 . tcp . 80 : goto service-ns/web/tcp/http }");
        // Endpoint chains exist before the chain that jumps to them, and the map
        // element comes after both.
        let pos = |needle: &str| t.find(needle).unwrap();
        assert!(
            pos("add chain ip kube-proxy endpoint-") < pos("add chain ip kube-proxy service-ns/")
        );
        assert!(
            pos("add chain ip kube-proxy service-ns/")
                < pos("add element ip kube-proxy service-ips")
        );
    }

    #[test]
    fn nodeport_and_external_ips_go_through_the_external_chain() {
        let b = builder();
        let mut port = cluster_ip(11, 80);
        port.node_port = Some(30080);
        port.external_ips = vec![IpAddr::from([192, 0, 2, 7])];
        port.load_balancer_ips = vec![IpAddr::from([192, 0, 2, 100])];
        let services = BTreeMap::from([(name("web", ""), port)]);
        let endpoints = BTreeMap::from([(name("web", ""), vec![ep(1, 80, false)])]);
        let t = transaction(&b, None, &b.build(&services, &endpoints));
        has(&t, "add rule ip kube-proxy services fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports");
        has(
            &t,
            "add rule ip kube-proxy external-ns/web/tcp/ jump mark-for-masquerade",
        );
        has(
            &t,
            "add rule ip kube-proxy external-ns/web/tcp/ goto service-ns/web/tcp/",
        );
        has(&t, "add element ip kube-proxy service-nodeports { tcp . 30080 : goto external-ns/web/tcp/ }");
        has(&t, "add element ip kube-proxy service-ips { 10.96.0.11 . tcp . 80 : goto service-ns/web/tcp/, 192.0.2.100 . tcp . 80 : goto external-ns/web/tcp/, 192.0.2.7 . tcp . 80 : goto external-ns/web/tcp/ }");
    }

    #[test]
    fn nodeport_addresses_restrict_the_nodeport_match() {
        let b = RuleBuilder::new(
            IpFamily::V4,
            &[],
            &[
                "192.168.1.0/24".parse().unwrap(),
                "fd00::/64".parse().unwrap(),
            ],
        );
        let base = b.base();
        has(
            &base,
            "add element ip kube-proxy nodeport-ips { 192.168.1.0/24 }",
        );
        has(&base, "add rule ip kube-proxy services ip daddr @nodeport-ips fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports");
    }

    #[test]
    fn services_without_endpoints_are_rejected_and_local_policies_drop() {
        let b = builder();
        let mut none = cluster_ip(12, 80);
        none.node_port = Some(30012);
        let mut itp_local = cluster_ip(13, 80);
        itp_local.internal_policy_local = true;
        let mut etp_local = cluster_ip(14, 80);
        etp_local.node_port = Some(30014);
        etp_local.external_policy_local = true;
        let services = BTreeMap::from([
            (name("none", ""), none),
            (name("itp", ""), itp_local),
            (name("etp", ""), etp_local),
        ]);
        let remote = vec![ep(1, 80, false)];
        let endpoints =
            BTreeMap::from([(name("itp", ""), remote.clone()), (name("etp", ""), remote)]);
        let t = transaction(&b, None, &b.build(&services, &endpoints));
        has(
            &t,
            "add rule ip kube-proxy reject-chain meta l4proto tcp reject with tcp reset",
        );
        has(
            &t,
            "add chain ip kube-proxy filter-output { type filter hook output priority 0 ; }",
        );
        has(
            &t,
            "add rule ip kube-proxy filter-forward ct state new jump service-endpoints-check",
        );
        has(&t, "add element ip kube-proxy no-endpoint-nodeports { tcp . 30014 : drop, tcp . 30012 : goto reject-chain }");
        has(&t, "add element ip kube-proxy no-endpoint-services { 10.96.0.13 . tcp . 80 : drop, 10.96.0.12 . tcp . 80 : goto reject-chain }");
        // The ETP=Local service still serves its ClusterIP from the remote endpoint, and
        // its NodePort to pods and the node itself; outside clients are dropped.
        has(&t, "add element ip kube-proxy service-ips { 10.96.0.14 . tcp . 80 : goto service-ns/etp/tcp/ }");
        has(&t, "add element ip kube-proxy service-nodeports { tcp . 30014 : goto external-ns/etp/tcp/ }");
        has(&t, "add rule ip kube-proxy external-ns/etp/tcp/ fib saddr type local goto service-ns/etp/tcp/");
        assert!(!t.contains("local-ns/etp/"), "{t}");
        assert!(!t.contains("chain ip kube-proxy service-ns/none/"), "{t}");
    }

    #[test]
    fn external_traffic_policy_local_keeps_outside_clients_on_local_endpoints() {
        let b = builder();
        let mut port = cluster_ip(15, 80);
        port.node_port = Some(30015);
        port.external_policy_local = true;
        let services = BTreeMap::from([(name("web", ""), port)]);
        let endpoints =
            BTreeMap::from([(name("web", ""), vec![ep(1, 80, false), ep(2, 80, true)])]);
        let t = transaction(&b, None, &b.build(&services, &endpoints));
        has(&t, "add rule ip kube-proxy external-ns/web/tcp/ ip saddr { 10.244.0.0/16 } goto service-ns/web/tcp/");
        has(&t, "add rule ip kube-proxy external-ns/web/tcp/ fib saddr type local jump mark-for-masquerade");
        has(
            &t,
            "add rule ip kube-proxy external-ns/web/tcp/ goto local-ns/web/tcp/",
        );
        has(&t, "add rule ip kube-proxy local-ns/web/tcp/ numgen random mod 1 vmap { 0 : goto endpoint-ns/web/tcp/__10.244.1.2/80 }");
        assert!(
            !t.contains("external-ns/web/tcp/ jump mark-for-masquerade\n"),
            "{t}"
        );
    }

    #[test]
    fn client_ip_affinity_uses_a_dynamic_set_per_endpoint() {
        let b = builder();
        let mut port = cluster_ip(16, 80);
        port.affinity_timeout_seconds = Some(60);
        let services = BTreeMap::from([(name("sticky", ""), port)]);
        let endpoints = BTreeMap::from([(name("sticky", ""), vec![ep(1, 80, false)])]);
        let t = transaction(&b, None, &b.build(&services, &endpoints));
        has(&t, "add set ip kube-proxy affinity-ns/sticky/tcp/__10.244.1.1/80 { type ipv4_addr ; flags dynamic,timeout ; timeout 60s ; }");
        has(&t, "add rule ip kube-proxy service-ns/sticky/tcp/ ip saddr @affinity-ns/sticky/tcp/__10.244.1.1/80 goto endpoint-ns/sticky/tcp/__10.244.1.1/80");
        has(&t, "add rule ip kube-proxy endpoint-ns/sticky/tcp/__10.244.1.1/80 update @affinity-ns/sticky/tcp/__10.244.1.1/80 { ip saddr }");
    }

    #[tokio::test]
    async fn a_second_sync_rewrites_only_the_changed_service() {
        let recorder = Recorder::default();
        let mut proxier = Proxier::new(recorder.clone(), builder());
        let mut services = BTreeMap::new();
        let mut endpoints = BTreeMap::new();
        for i in 0..50u8 {
            services.insert(name(&format!("svc{i}"), "p"), cluster_ip(i + 1, 80));
            endpoints.insert(name(&format!("svc{i}"), "p"), vec![ep(i, 80, false)]);
        }
        let first = proxier.sync(&services, &endpoints).await.unwrap();
        assert!(first.full);
        assert_eq!(first.changed_service_ports, 50);
        // Nothing changed: nothing to apply.
        let idle = proxier.sync(&services, &endpoints).await.unwrap();
        assert_eq!((idle.full, idle.transaction_bytes), (false, 0));
        assert_eq!(recorder.0.lock().len(), 1);

        // svc7 gains an endpoint.
        endpoints
            .get_mut(&name("svc7", "p"))
            .unwrap()
            .push(ep(200, 80, false));
        let second = proxier.sync(&services, &endpoints).await.unwrap();
        assert_eq!((second.full, second.changed_service_ports), (false, 1));
        let t = recorder.0.lock().last().unwrap().clone();
        assert!(!t.contains("delete table"), "{t}");
        for line in t.lines() {
            assert!(
                line.contains("ns/svc7/"),
                "line about another service: {line}\n{t}"
            );
        }
        has(
            &t,
            "add chain ip kube-proxy endpoint-ns/svc7/tcp/p__10.244.1.200/80",
        );
        has(&t, "flush chain ip kube-proxy service-ns/svc7/tcp/p");
        has(&t, "add rule ip kube-proxy service-ns/svc7/tcp/p numgen random mod 2 vmap { 0 : goto endpoint-ns/svc7/tcp/p__10.244.1.7/80, 1 : goto endpoint-ns/svc7/tcp/p__10.244.1.200/80 }");
        assert!(
            !t.contains("endpoint-ns/svc7/tcp/p__10.244.1.7/80 ip saddr"),
            "unchanged endpoint chain rewritten:\n{t}"
        );

        // svc3 loses its endpoints and svc9 is deleted.
        endpoints.remove(&name("svc3", "p"));
        services.remove(&name("svc9", "p"));
        proxier.sync(&services, &endpoints).await.unwrap();
        let t = recorder.0.lock().last().unwrap().clone();
        for line in t.lines() {
            assert!(
                line.contains("ns/svc3/")
                    || line.contains("ns/svc9/")
                    || line.contains("10.96.0.4 ")
                    || line.contains("10.96.0.10 "),
                "unexpected line {line}\n{t}"
            );
        }
        has(&t, "delete element ip kube-proxy service-ips { 10.96.0.4 . tcp . 80, 10.96.0.10 . tcp . 80 }");
        has(&t, "add element ip kube-proxy no-endpoint-services { 10.96.0.4 . tcp . 80 : goto reject-chain }");
        has(&t, "delete chain ip kube-proxy service-ns/svc9/tcp/p");
        has(
            &t,
            "delete chain ip kube-proxy endpoint-ns/svc3/tcp/p__10.244.1.3/80",
        );
        let flush = t
            .find("flush chain ip kube-proxy service-ns/svc9/tcp/p")
            .unwrap();
        let delete = t
            .find("delete chain ip kube-proxy endpoint-ns/svc9/tcp/p__10.244.1.9/80")
            .unwrap();
        assert!(flush < delete, "{t}");
    }

    #[test]
    fn a_new_affinity_timeout_recreates_the_sets() {
        let b = builder();
        let mut port = cluster_ip(17, 80);
        port.affinity_timeout_seconds = Some(60);
        let mut services = BTreeMap::from([(name("sticky", ""), port.clone())]);
        let endpoints = BTreeMap::from([(name("sticky", ""), vec![ep(1, 80, false)])]);
        let old = b.build(&services, &endpoints);
        port.affinity_timeout_seconds = Some(120);
        services.insert(name("sticky", ""), port);
        let t = transaction(&b, Some(&old), &b.build(&services, &endpoints));
        let pos = |needle: &str| {
            t.find(needle)
                .unwrap_or_else(|| panic!("missing {needle:?} in:\n{t}"))
        };
        let flush = pos("flush chain ip kube-proxy endpoint-ns/sticky/tcp/__10.244.1.1/80");
        let flush_svc = pos("flush chain ip kube-proxy service-ns/sticky/tcp/");
        let delete = pos("delete set ip kube-proxy affinity-ns/sticky/tcp/__10.244.1.1/80");
        let add = pos("add set ip kube-proxy affinity-ns/sticky/tcp/__10.244.1.1/80 { type ipv4_addr ; flags dynamic,timeout ; timeout 120s ; }");
        let rule = pos("add rule ip kube-proxy endpoint-ns/sticky/tcp/__10.244.1.1/80 update @affinity-ns/sticky/tcp/__10.244.1.1/80 { ip saddr }");
        assert!(
            flush < delete && flush_svc < delete && delete < add && add < rule,
            "{t}"
        );
    }

    #[test]
    fn ipv6_rules_use_the_ip6_table() {
        let b = RuleBuilder::new(
            IpFamily::V6,
            &[
                "10.244.0.0/16".parse().unwrap(),
                "fd00:244::/48".parse().unwrap(),
            ],
            &[],
        );
        let mut port = cluster_ip(1, 80);
        port.cluster_ip = Some("fd00:96::1".parse().unwrap());
        port.affinity_timeout_seconds = Some(60);
        let mut endpoint = ep(1, 8080, false);
        endpoint.ip = "fd00:244::5".parse().unwrap();
        let services = BTreeMap::from([(name("web", ""), port)]);
        let endpoints = BTreeMap::from([(name("web", ""), vec![endpoint])]);
        let t = transaction(&b, None, &b.build(&services, &endpoints));
        has(
            &t,
            "add table ip6 kube-proxy { comment \"rules for kube-proxy\" ; }",
        );
        has(&t, "add rule ip6 kube-proxy services ip6 daddr . meta l4proto . th dport vmap @service-ips");
        has(&t, "add rule ip6 kube-proxy services fib daddr type local ip6 daddr != ::1 meta l4proto . th dport vmap @service-nodeports");
        has(&t, "add rule ip6 kube-proxy service-ns/web/tcp/ ip6 daddr fd00:96::1 meta l4proto tcp th dport 80 ip6 saddr != { fd00:244::/48 } jump mark-for-masquerade");
        has(&t, "add set ip6 kube-proxy affinity-ns/web/tcp/__fd00.244..5/8080 { type ipv6_addr ; flags dynamic,timeout ; timeout 60s ; }");
        has(&t, "add rule ip6 kube-proxy endpoint-ns/web/tcp/__fd00.244..5/8080 meta l4proto tcp dnat to [fd00:244::5]:8080");
        has(&t, "add element ip6 kube-proxy service-ips { fd00:96::1 . tcp . 80 : goto service-ns/web/tcp/ }");
        assert!(
            !t.contains(" ip kube-proxy") && !t.contains("10.244."),
            "{t}"
        );
    }

    #[test]
    fn a_destination_claimed_twice_is_programmed_once() {
        let b = builder();
        let mut first = cluster_ip(20, 80);
        first.external_ips = vec![IpAddr::from([192, 0, 2, 9])];
        let mut second = cluster_ip(21, 80);
        second.external_ips = vec![IpAddr::from([192, 0, 2, 9])];
        let mut services = BTreeMap::from([(name("a", ""), first), (name("b", ""), second)]);
        let endpoints = BTreeMap::from([
            (name("a", ""), vec![ep(1, 80, false)]),
            (name("b", ""), vec![ep(2, 80, false)]),
        ]);
        let old = b.build(&services, &endpoints);
        let t = transaction(&b, None, &old);
        assert_eq!(t.matches("192.0.2.9 . tcp . 80").count(), 1, "{t}");
        assert!(
            t.contains("192.0.2.9 . tcp . 80 : goto external-ns/a/tcp/"),
            "{t}"
        );
        // Once the first Service is gone, the second gets the destination.
        services.remove(&name("a", ""));
        let t = transaction(&b, Some(&old), &b.build(&services, &endpoints));
        has(&t, "delete element ip kube-proxy service-ips { 10.96.0.20 . tcp . 80, 192.0.2.9 . tcp . 80 }");
        has(&t, "add element ip kube-proxy service-ips { 192.0.2.9 . tcp . 80 : goto external-ns/b/tcp/ }");
    }

    #[tokio::test]
    async fn a_failed_transaction_makes_the_next_sync_full() {
        struct Failing;
        #[async_trait::async_trait]
        impl Nft for Failing {
            async fn apply(&self, _: &str) -> Result<()> {
                Err(Error::Transaction {
                    status: "exit status: 1".into(),
                    stderr: "Error: No such file or directory".into(),
                })
            }
        }
        let mut proxier = Proxier::new(Failing, builder());
        let services = BTreeMap::from([(name("a", ""), cluster_ip(1, 80))]);
        let err = proxier.sync(&services, &BTreeMap::new()).await.unwrap_err();
        assert!(err.to_string().contains("No such file"), "{err}");
        assert!(proxier.applied.is_none());
    }

    #[test]
    fn nft_versions_parse() {
        assert_eq!(
            parse_version("nftables v1.0.6 (Lester Gooch #5)"),
            Some((1, 0))
        );
        assert_eq!(parse_version("nftables v0.9.8 (E.D.S.)"), Some((0, 9)));
        assert_eq!(parse_version("nothing"), None);
    }
}
