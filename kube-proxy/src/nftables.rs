//! The nftables proxier (upstream `pkg/proxy/nftables/proxier.go`): one table per IP
//! family, `ip kube-proxy` and `ip6 kube-proxy`, programmed with atomic `nft -f -`
//! transactions.
//!
//! A packet's cost does not grow with the number of Services: the `services` chain looks
//! its destination up in verdict maps (`service-ips` keyed by `ipv4_addr . inet_proto .
//! inet_service` — `ipv6_addr` in `ip6` —, `service-nodeports` keyed by `inet_proto .
//! inet_service` on local addresses) that jump to one chain per Service port. That chain
//! DNATs in one rule, `dnat to numgen random mod N offset BASE map @endpoints-S`: each
//! Service port owns the slots `BASE..BASE+N` of one of a fixed number of shared
//! endpoint maps (slot → address . port). There are no per-endpoint chains and no set per
//! Service: on kernel 6.x both make a transaction's kernel time grow with the square of
//! the number of Services (set names are looked up by a list walk, and every element of a
//! map is validated against every rule bound to it, so the maps are sharded).
//! `sessionAffinity: ClientIP` Service ports keep upstream's layout (endpoint chains and a
//! dynamic set per endpoint); they are rare. Hairpin traffic (a pod reaching itself
//! through its Service) is masqueraded in `nat-postrouting` by `ct status dnat` and the
//! `hairpin` set of `endpoint . endpoint` pairs (only endpoints that may run on this node:
//! at 10,000 Services most run elsewhere). Other traffic that must be masqueraded
//! (off-cluster sources of a ClusterIP, external traffic under the Cluster policy) is
//! marked, and `nat-postrouting` masquerades marked packets. A Service without usable
//! endpoints is rejected (TCP reset / ICMP unreachable) or dropped in the filter hooks
//! through the `no-endpoint-*` maps.
//!
//! The proxier remembers what it applied per Service port; after the first (full) sync
//! only the Service ports of Services the change trackers marked dirty are rebuilt, and
//! the transaction rewrites only their chains and map elements.

use std::borrow::{Borrow, Cow};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ipnet::IpNet;

use crate::endpoints::{categorize, Endpoint};
use crate::service::{IpFamily, Protocol, ServicePort, ServicePortName};
use crate::tracker::{ports_of, ServiceKey};

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
const CLUSTER_CIDRS: &str = "cluster-cidrs";
const CLUSTER_IPS: &str = "cluster-ips";
const HAIRPIN: &str = "hairpin";
/// Endpoint maps shared by all Service ports: enough that one rule's bind and one
/// element's validation stay cheap at 10,000 Services, few enough that set lookups by
/// name (a list walk in the kernel) stay cheap too.
pub const ENDPOINT_MAP_SHARDS: usize = 64;

/// The protocols with endpoint maps: a map's value type names its protocol's port
/// (`typeof … tcp dport`), so each protocol has its own shards.
const MAP_PROTOCOLS: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

/// `endpoints-tcp-0` … `endpoints-sctp-63`.
fn endpoint_map(protocol: Protocol, shard: usize) -> &'static str {
    static NAMES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    sharded_map(&NAMES, "endpoints", protocol, shard)
}

/// `lb-tcp-0` … `lb-sctp-63`: the maps of the shared load-balancing chains, keyed by
/// `ClusterIP . port . index`.
fn lb_map(protocol: Protocol, shard: usize) -> &'static str {
    static NAMES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    sharded_map(&NAMES, "lb", protocol, shard)
}

/// The name of shard `shard` of `protocol`'s maps called `<prefix>-<protocol>-<shard>`,
/// from `names` (filled once: map names are written into every transaction).
fn sharded_map(
    names: &'static std::sync::OnceLock<Vec<&'static str>>,
    prefix: &str,
    protocol: Protocol,
    shard: usize,
) -> &'static str {
    let names = names.get_or_init(|| {
        MAP_PROTOCOLS
            .iter()
            .flat_map(|p| {
                (0..ENDPOINT_MAP_SHARDS)
                    .map(move |i| &*Box::leak(format!("{prefix}-{}-{i}", p.nft()).into_boxed_str()))
            })
            .collect()
    });
    let p = MAP_PROTOCOLS
        .iter()
        .position(|p| *p == protocol)
        .unwrap_or(0);
    names[p * ENDPOINT_MAP_SHARDS + shard % ENDPOINT_MAP_SHARDS]
}

/// FNV-1a of `bytes`: map shards are stable across runs and platforms.
fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u32 {
    bytes.into_iter().fold(0x811c_9dc5, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// A load-balancing chain shared by every plain ClusterIP Service port of one protocol
/// and map shard with the same number of endpoints: its one rule picks index
/// `numgen random mod endpoints` and DNATs to the element `ClusterIP . port . index` of
/// its map. A Service port needs no chain of its own, so a sync's `nft` fetches a few
/// dozen chains instead of one per Service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LbChain {
    pub protocol: Protocol,
    pub shard: u16,
    pub endpoints: u32,
}

impl LbChain {
    fn name(self) -> String {
        format!(
            "lb-{}-{}-{}",
            self.protocol.nft(),
            self.shard,
            self.endpoints
        )
    }

    fn map(self) -> &'static str {
        lb_map(self.protocol, usize::from(self.shard))
    }

    /// Its rule; `l3` is `ip` or `ip6`.
    fn rule(self, l3: &str) -> String {
        let proto = self.protocol.nft();
        format!(
            "meta l4proto {proto} dnat {l3} addr . port to {l3} daddr . {proto} dport . numgen random mod {} map @{}",
            self.endpoints,
            self.map()
        )
    }

    /// The shard of the ClusterIP `ip` port `port`.
    fn shard_of(ip: IpAddr, port: u16) -> u16 {
        let octets = match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        let h = fnv1a(octets.into_iter().chain(port.to_be_bytes()));
        u16::try_from(h as usize % ENDPOINT_MAP_SHARDS).unwrap_or(0)
    }
}

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
        component_base::nft::apply(&self.binary, transaction)
            .await
            .map_err(|e| match e {
                component_base::nft::Error::Spawn { binary, source } => {
                    Error::Spawn { binary, source }
                }
                component_base::nft::Error::Failed { status, stderr } => {
                    Error::Transaction { status, stderr }
                }
            })
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

/// One element of one of the maps (or sets) Service ports share; an empty value for a
/// set's element. Two Service ports may claim one key (an external IP, a node port): the
/// first in name order owns it. Endpoint slots are never contested.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Element {
    pub map: &'static str,
    /// Shared by a Service port's elements with the same key (its ClusterIP's in
    /// `service-ips` and `cluster-ips`).
    pub key: Arc<str>,
    pub value: Box<str>,
}

/// Where a policy chain's endpoint `i` is: slot `base + i` of an endpoint map (a chain
/// of its own), or `ClusterIP . port . i` of an lb map (a shared [`LbChain`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SlotBase {
    Offset(u32),
    Vip(IpAddr, u16),
}

/// One element key of an endpoint or lb map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum SlotKey {
    Offset(u32),
    Vip(IpAddr, u16, u32),
}

impl std::fmt::Display for SlotKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SlotKey::Offset(slot) => write!(f, "{slot}"),
            SlotKey::Vip(ip, port, i) => write!(f, "{ip} . {port} . {i}"),
        }
    }
}

/// A policy chain's endpoints in one map, in slot order. Kept as endpoints, not as
/// element text (there are 100,000 of them at 10,000 Services), and shared with the
/// model when the chain uses every endpoint of its Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotChain {
    pub map: &'static str,
    pub base: SlotBase,
    pub endpoints: Arc<[Endpoint]>,
}

/// A list of endpoints the proxier can keep a share of (the model's `Arc`s; tests'
/// `Vec`s are copied).
pub trait EndpointList: std::ops::Deref<Target = [Endpoint]> + Sync {
    fn shared(&self) -> Arc<[Endpoint]>;
}

impl EndpointList for Arc<[Endpoint]> {
    fn shared(&self) -> Arc<[Endpoint]> {
        Arc::clone(self)
    }
}

impl EndpointList for Vec<Endpoint> {
    fn shared(&self) -> Arc<[Endpoint]> {
        Arc::from(self.as_slice())
    }
}

impl SlotChain {
    /// `(map, key, endpoint)` of every slot.
    fn slots(&self) -> impl Iterator<Item = (&'static str, SlotKey, (IpAddr, u16))> + '_ {
        (0u32..).zip(self.endpoints.iter()).map(|(i, ep)| {
            let key = match self.base {
                SlotBase::Offset(base) => SlotKey::Offset(base + i),
                SlotBase::Vip(ip, port) => SlotKey::Vip(ip, port, i),
            };
            (self.map, key, (ep.ip, ep.port))
        })
    }
}

/// Named objects sorted by name, each with its text (a chain's rules one per line, a
/// set's declaration): a Service port has one or two, so a sorted boxed slice costs
/// far less than a tree map's node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Named(Box<[(Box<str>, Box<str>)]>);

impl Named {
    fn from_map(map: BTreeMap<String, String>) -> Named {
        Named(
            map.into_iter()
                .map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str()))
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(name))
            .ok()
            .map(|i| &*self.0[i].1)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| &**k)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }
}

/// The objects one Service port owns in the table, as the proxier remembers them
/// between syncs (compact: it holds one per Service port).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceRules {
    /// Chain name → its rules, one per line.
    pub chains: Named,
    /// Affinity set name → its declaration body.
    pub sets: Named,
    /// Elements of the maps and sets Service ports share (sorted).
    pub elements: Box<[Element]>,
    /// The policy chains' endpoint map slots.
    pub slots: Box<[SlotChain]>,
    /// The slots' addresses that may be on this node, sorted, once each (the `hairpin`
    /// set; affinity chains masquerade hairpin traffic in their endpoint chains).
    pub hairpin: Box<[IpAddr]>,
    /// The shared chain its ClusterIP traffic goes to, instead of chains of its own.
    pub lb: Option<LbChain>,
}

/// [`ServiceRules`] while [`RuleBuilder::service`] puts them together.
#[derive(Default)]
struct Draft {
    chains: BTreeMap<String, Vec<String>>,
    sets: BTreeMap<String, String>,
    elements: BTreeSet<Element>,
    slots: Vec<SlotChain>,
    hairpin: BTreeSet<IpAddr>,
    lb: Option<LbChain>,
}

impl Draft {
    fn finish(self) -> ServiceRules {
        ServiceRules {
            chains: Named::from_map(
                self.chains
                    .into_iter()
                    .map(|(k, rules)| (k, rules.join("\n")))
                    .collect(),
            ),
            sets: Named::from_map(self.sets),
            elements: self.elements.into_iter().collect(),
            slots: self.slots.into_boxed_slice(),
            hairpin: self.hairpin.into_iter().collect(),
            lb: self.lb,
        }
    }
}

/// A Service port's slots in one endpoint map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SlotRange {
    shard: usize,
    base: u32,
    capacity: u32,
}

/// Hands out slot ranges of the endpoint maps, one per policy chain. A range has a
/// power-of-two capacity so a chain keeps its range while its endpoint count changes a
/// little; freed ranges are reused by later chains of that size.
#[derive(Clone, Debug, Default)]
pub struct Slots {
    by_chain: HashMap<String, SlotRange>,
    next: Vec<u32>,
    free: HashMap<(usize, u32), Vec<u32>>,
}

impl Slots {
    fn shard_of(chain: &str) -> usize {
        fnv1a(chain.bytes()) as usize % ENDPOINT_MAP_SHARDS
    }

    /// The range of `chain` for `n` endpoints: its current one when it still fits.
    fn assign(&mut self, chain: &str, n: usize) -> SlotRange {
        let n = u32::try_from(n).unwrap_or(u32::MAX).max(1);
        if let Some(r) = self.by_chain.get(chain) {
            if r.capacity >= n && r.capacity / 4 < n.max(2) {
                return *r;
            }
        }
        if let Some(old) = self.by_chain.remove(chain) {
            self.release_range(old);
        }
        let shard = Self::shard_of(chain);
        let capacity = n.next_power_of_two();
        let base = match self.free.get_mut(&(shard, capacity)).and_then(Vec::pop) {
            Some(base) => base,
            None => {
                if self.next.len() < ENDPOINT_MAP_SHARDS {
                    self.next.resize(ENDPOINT_MAP_SHARDS, 0);
                }
                let base = self.next[shard];
                self.next[shard] = base.saturating_add(capacity);
                base
            }
        };
        let r = SlotRange {
            shard,
            base,
            capacity,
        };
        self.by_chain.insert(chain.to_string(), r);
        r
    }

    fn release_range(&mut self, r: SlotRange) {
        self.free
            .entry((r.shard, r.capacity))
            .or_default()
            .push(r.base);
    }

    /// Frees the range of a chain that no longer exists.
    pub fn release(&mut self, chain: &str) {
        if let Some(r) = self.by_chain.remove(chain) {
            self.release_range(r);
        }
    }
}

/// What traffic to a destination no endpoint may serve gets: a reject when the Service
/// port has no usable endpoint at all, a drop when it has some but the Local policy
/// rules them all out here.
fn unusable(cat: &crate::endpoints::Categorized) -> String {
    if cat.cluster.is_empty() {
        "goto reject-chain".to_string()
    } else {
        "drop".to_string()
    }
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
        if !self.cluster_cidrs.is_empty() {
            let _ = writeln!(
                head,
                "add set {tbl} {CLUSTER_CIDRS} {{ type {addr_type} ; flags interval ; comment \"--cluster-cidr\" ; }}"
            );
            let _ = writeln!(
                head,
                "add element {tbl} {CLUSTER_CIDRS} {}",
                cidr_set(&self.cluster_cidrs)
            );
            let _ = writeln!(
                head,
                "add set {tbl} {CLUSTER_IPS} {{ type {addr_type} . inet_proto . inet_service ; comment \"ClusterIPs masqueraded for sources outside the pod network\" ; }}"
            );
        }
        let _ = writeln!(
            head,
            "add set {tbl} {HAIRPIN} {{ type {addr_type} . {addr_type} ; comment \"endpoint . endpoint: a pod reaching itself through a Service\" ; }}"
        );
        for protocol in MAP_PROTOCOLS {
            let proto = protocol.nft();
            for shard in 0..ENDPOINT_MAP_SHARDS {
                let _ = writeln!(
                    head,
                    "add map {tbl} {} {{ typeof numgen random mod 1 : {l3} daddr . {proto} dport ; }}",
                    endpoint_map(protocol, shard),
                );
                let _ = writeln!(
                    head,
                    "add map {tbl} {} {{ typeof {l3} daddr . {proto} dport . numgen random mod 1 : {l3} daddr . {proto} dport ; }}",
                    lb_map(protocol, shard),
                );
            }
        }
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
        let mut services = Vec::new();
        if !self.cluster_cidrs.is_empty() {
            services.push(format!(
                "{l3} daddr . meta l4proto . th dport @{CLUSTER_IPS} {l3} saddr != @{CLUSTER_CIDRS} jump mark-for-masquerade"
            ));
        }
        services.extend([
            format!("{l3} daddr . meta l4proto . th dport vmap @{SERVICE_IPS}"),
            format!("{nodeport_match} meta l4proto . th dport vmap @{SERVICE_NODEPORTS}"),
        ]);
        chain("services", None, &services);
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
            &[
                format!(
                    "ct status dnat {l3} saddr . {l3} daddr @{HAIRPIN} jump mark-for-masquerade"
                ),
                "jump masquerading".into(),
            ],
        );
        head + &t
    }

    /// What one Service port needs in the table, given all its endpoints. `share`: its
    /// ClusterIP . port is its own (no other Service port claims it), so a plain
    /// ClusterIP Service port may use a shared [`LbChain`].
    pub fn service(
        &self,
        name: &ServicePortName,
        port: &ServicePort,
        endpoints: &Arc<[Endpoint]>,
        slots: &mut Slots,
        share: bool,
    ) -> ServiceRules {
        let mut out = Draft::default();
        let cat = categorize(endpoints);
        let internal = cat.internal(port);
        let external = cat.external(port);
        let proto = name.protocol.nft();
        let (l3, addr_type) = (self.l3(), self.addr_type());
        let affinity = port.affinity_timeout_seconds.is_some();
        if let (true, false, false, Some(ip)) = (
            share,
            affinity,
            port.externally_accessible(),
            port.cluster_ip,
        ) {
            let key: Arc<str> = format!("{ip} . {proto} . {}", port.port).into();
            if internal.is_empty() {
                out.elements.insert(Element {
                    map: NO_ENDPOINT_SERVICES,
                    key,
                    value: unusable(&cat).into(),
                });
                return out.finish();
            }
            let lb = LbChain {
                protocol: name.protocol,
                shard: LbChain::shard_of(ip, port.port),
                endpoints: u32::try_from(internal.len()).unwrap_or(u32::MAX),
            };
            out.slots.push(SlotChain {
                map: lb.map(),
                base: SlotBase::Vip(ip, port.port),
                endpoints: share_of(endpoints, internal),
            });
            out.hairpin.extend(
                internal
                    .iter()
                    .filter(|ep| !ep.on_other_node())
                    .map(|ep| ep.ip),
            );
            if !self.cluster_cidrs.is_empty() {
                out.elements.insert(Element {
                    map: CLUSTER_IPS,
                    key: Arc::clone(&key),
                    value: "".into(),
                });
            }
            out.elements.insert(Element {
                map: SERVICE_IPS,
                key,
                value: format!("goto {}", lb.name()).into(),
            });
            out.lb = Some(lb);
            return out.finish();
        }
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
        let mut policy_chain = |chain: &str, eps: &[Endpoint], out: &mut Draft| {
            let mut rules = Vec::new();
            if affinity {
                for ep in eps {
                    rules.push(format!(
                        "{l3} saddr @{} goto {}",
                        affinity_set(ep),
                        endpoint_chain(ep)
                    ));
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
            } else {
                let r = slots.assign(chain, eps.len());
                let map = endpoint_map(name.protocol, r.shard);
                rules.push(format!(
                    "meta l4proto {proto} dnat {l3} addr . port to numgen random mod {} offset {} map @{map}",
                    eps.len(),
                    r.base
                ));
                out.slots.push(SlotChain {
                    map,
                    base: SlotBase::Offset(r.base),
                    endpoints: share_of(endpoints, eps),
                });
                // A pod reaching itself: only endpoints that may run here can be one.
                out.hairpin
                    .extend(eps.iter().filter(|ep| !ep.on_other_node()).map(|ep| ep.ip));
            }
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
        // back through this node: one rule in `services` for all of them, and an element
        // of `cluster-ips` per Service port (far cheaper to load than a rule each).
        if let (Some(ip), false, true) = (
            port.cluster_ip,
            self.cluster_cidrs.is_empty(),
            out.chains.contains_key(internal_chain),
        ) {
            out.elements.insert(Element {
                map: CLUSTER_IPS,
                key: format!("{ip} . {proto} . {}", port.port).into(),
                value: "".into(),
            });
        }
        if uses_external {
            let mut rules = Vec::new();
            if port.external_policy_local {
                // Pods and the node itself may use any endpoint; outside clients keep
                // their source address and reach only this node's endpoints.
                if !self.cluster_cidrs.is_empty() {
                    rules.push(format!("{l3} saddr @{CLUSTER_CIDRS} goto {cluster_chain}"));
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
        // Endpoint chains for every endpoint a policy chain names (affinity only).
        let mut used: BTreeSet<&Endpoint> = BTreeSet::new();
        if affinity && out.chains.contains_key(&cluster_chain) {
            used.extend(cat.cluster.iter());
        }
        if affinity && out.chains.contains_key(&local_chain) {
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
        let unusable = unusable(&cat);
        if let Some(ip) = port.cluster_ip {
            let key: Arc<str> = format!("{ip} . {proto} . {}", port.port).into();
            out.elements.insert(if internal.is_empty() {
                Element {
                    map: NO_ENDPOINT_SERVICES,
                    key,
                    value: unusable.as_str().into(),
                }
            } else {
                Element {
                    map: SERVICE_IPS,
                    key,
                    value: format!("goto {internal_chain}").into(),
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
                    key: format!("{ip} . {proto} . {}", port.port).into(),
                    value: value.as_str().into(),
                });
            }
            if let Some(np) = port.node_port {
                out.elements.insert(Element {
                    map: nodeports_map,
                    key: format!("{proto} . {np}").into(),
                    value: value.into(),
                });
            }
        }
        out.finish()
    }

    /// The contents every Service port asks for, with fresh slot ranges (tests and the
    /// first sync). Keys two Service ports claim are sorted out by [`TableState`].
    pub fn build(
        &self,
        services: &BTreeMap<ServicePortName, impl Borrow<ServicePort>>,
        endpoints: &BTreeMap<ServicePortName, impl EndpointList>,
    ) -> BTreeMap<ServicePortName, ServiceRules> {
        let mut slots = Slots::default();
        let claimed = claimed_twice(services);
        let none: Arc<[Endpoint]> = Arc::new([]);
        services
            .iter()
            .map(|(name, port)| {
                let eps = endpoints
                    .get(name)
                    .map_or_else(|| none.clone(), |e| e.shared());
                let share = !claimed.contains(&vip_of(name, port.borrow()));
                (
                    name.clone(),
                    self.service(name, port.borrow(), &eps, &mut slots, share),
                )
            })
            .collect()
    }
}

/// `list` (a subsequence of `all`, in order) as a shared list: `all` itself when it is
/// all of it (every endpoint ready, the common case), else a copy.
fn share_of(all: &Arc<[Endpoint]>, list: &[Endpoint]) -> Arc<[Endpoint]> {
    if list.len() == all.len() {
        Arc::clone(all)
    } else {
        Arc::from(list)
    }
}

/// A Service port's `ClusterIP . protocol . port`, if it has a ClusterIP.
fn vip_of(name: &ServicePortName, port: &ServicePort) -> Option<(IpAddr, Protocol, u16)> {
    port.cluster_ip.map(|ip| (ip, name.protocol, port.port))
}

/// The `ClusterIP . protocol . port` destinations more than one Service port claims
/// (the apiserver never allocates a ClusterIP twice; a conflict may still be written by
/// hand): those Service ports keep chains of their own, whose claims are sorted out by
/// [`TableState`], and never share an lb map key.
fn claimed_twice(
    services: &BTreeMap<ServicePortName, impl Borrow<ServicePort>>,
) -> HashSet<Option<(IpAddr, Protocol, u16)>> {
    let mut seen = HashSet::with_capacity(services.len());
    let mut twice = HashSet::new();
    for (name, port) in services {
        let vip = vip_of(name, port.borrow());
        if vip.is_some() && !seen.insert(vip) {
            twice.insert(vip);
        }
    }
    twice
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

/// Writes a chain; `rules` one per line.
fn write_chain(t: &mut String, tbl: &str, name: &str, rules: &str, existed: bool) {
    let _ = writeln!(t, "add chain {tbl} {name}");
    if existed {
        let _ = writeln!(t, "flush chain {tbl} {name}");
    }
    for r in rules.lines() {
        let _ = writeln!(t, "add rule {tbl} {name} {r}");
    }
}

/// Writes `add element` / `delete element` lines for `items` (sorted by map), grouped
/// per map in lines of at most 1,000 elements (nft's parser memory stays small at
/// 10,000 Services); `item` writes one element.
fn write_grouped<T>(
    t: &mut String,
    tbl: &str,
    verb: &str,
    items: &[T],
    map_of: impl Fn(&T) -> &str,
    item: impl Fn(&mut String, &T),
) {
    for group in items.chunk_by(|a, b| map_of(a) == map_of(b)) {
        for chunk in group.chunks(1000) {
            let _ = write!(t, "{verb} element {tbl} {} {{ ", map_of(&chunk[0]));
            for (i, e) in chunk.iter().enumerate() {
                if i > 0 {
                    t.push_str(", ");
                }
                item(t, e);
            }
            t.push_str(" }\n");
        }
    }
}

/// A shared map's element to write: its map, key and value (empty: a set's element),
/// borrowed from the rules where possible.
type ElementWrite<'a> = (&'static str, Cow<'a, str>, Option<Cow<'a, str>>);

/// The element changes of one transaction, typed until they are written: a cold start
/// at 10,000 Services writes 100,000 slots and as many hairpin pairs, and a String each
/// would outweigh the whole table state.
#[derive(Default)]
struct ElementChanges<'a> {
    shared: Vec<ElementWrite<'a>>,
    slots: Vec<(&'static str, SlotKey, (IpAddr, u16))>,
    /// Policy chains whose every slot is written (new or gone chains: a cold start
    /// lists 10,000 of these instead of 100,000 slots).
    chains: Vec<&'a SlotChain>,
    hairpin: Vec<IpAddr>,
}

impl ElementChanges<'_> {
    /// Writes them in a deterministic order; values only when adding.
    fn write(&mut self, t: &mut String, tbl: &str, verb: &str) {
        self.shared.sort();
        self.slots.sort_unstable();
        self.hairpin.sort_unstable();
        let add = verb == "add";
        write_grouped(
            t,
            tbl,
            verb,
            &self.shared,
            |e| e.0,
            |t, (_, key, value)| {
                t.push_str(key);
                if let (true, Some(v)) = (add, value.as_deref().filter(|v| !v.is_empty())) {
                    t.push_str(" : ");
                    t.push_str(v);
                }
            },
        );
        write_grouped(
            t,
            tbl,
            verb,
            &self.slots,
            |e| e.0,
            |t, (_, key, (ip, port))| {
                let _ = if add {
                    write!(t, "{key} : {ip} . {port}")
                } else {
                    write!(t, "{key}")
                };
            },
        );
        self.chains
            .sort_unstable_by_key(|c| (c.map, c.base, c.endpoints.len()));
        for group in self.chains.chunk_by(|a, b| a.map == b.map) {
            let mut slots = group.iter().flat_map(|c| c.slots()).peekable();
            while slots.peek().is_some() {
                let _ = write!(t, "{verb} element {tbl} {} {{ ", group[0].map);
                for (i, (_, key, (ip, port))) in slots.by_ref().take(1000).enumerate() {
                    if i > 0 {
                        t.push_str(", ");
                    }
                    let _ = if add {
                        write!(t, "{key} : {ip} . {port}")
                    } else {
                        write!(t, "{key}")
                    };
                }
                t.push_str(" }\n");
            }
        }
        write_grouped(
            t,
            tbl,
            verb,
            &self.hairpin,
            |_| HAIRPIN,
            |t, ip| {
                let _ = write!(t, "{ip} . {ip}");
            },
        );
    }
}

/// A map key's identity in [`TableState`]'s claim counts (a collision only sends the
/// key down the slow path that looks at the rules themselves).
fn claim_hash(map: &str, key: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    map.hash(&mut h);
    key.hash(&mut h);
    h.finish()
}

/// The first Service port in name order of `rules` with an element `key` in `map`, and
/// its value.
fn first_claimant<'a>(
    rules: &'a BTreeMap<ServicePortName, ServiceRules>,
    map: &str,
    key: &str,
) -> Option<(&'a ServicePortName, &'a str)> {
    rules.iter().find_map(|(name, r)| {
        r.elements
            .binary_search_by(|e| (e.map, &*e.key).cmp(&(map, key)))
            .ok()
            .map(|i| (name, &*r.elements[i].value))
    })
}

/// The value of the owner of `key` in `map` with `count` claimants: `first`, the first
/// claimant in name order among the Service ports being changed, or one of `others`.
fn owner<'a>(
    others: &'a BTreeMap<ServicePortName, ServiceRules>,
    count: u32,
    first: Option<(&'a ServicePortName, &'a str)>,
    map: &str,
    key: &str,
) -> Option<&'a str> {
    match (count, first) {
        (0, _) => None,
        (1, Some((_, value))) => Some(value),
        _ => match (first, first_claimant(others, map, key)) {
            (Some((n, v)), Some((on, ov))) => Some(if n < on { v } else { ov }),
            (Some((_, v)), None) => Some(v),
            (None, other) => other.map(|(_, v)| v),
        },
    }
}

/// What the table holds: the objects of every Service port, who owns each contested map
/// key, and how many Service ports use each endpoint address (the `hairpin` set).
#[derive(Clone, Debug, Default)]
pub struct TableState {
    rules: BTreeMap<ServicePortName, ServiceRules>,
    /// How many Service ports claim each map key (by [`claim_hash`]); the first in name
    /// order owns it.
    claims: HashMap<u64, u32>,
    hairpin: HashMap<IpAddr, u32>,
    /// Shared load-balancing chains and how many Service ports use each; a chain exists
    /// while one does.
    lb_chains: HashMap<LbChain, u32>,
}

impl TableState {
    /// Replaces the objects of the Service ports in `changes` (None: removed), appends
    /// the transaction that takes the table there to `t` (nothing when nothing changed)
    /// and returns how many Service ports changed.
    pub fn update(
        &mut self,
        tbl: &str,
        changes: Vec<(ServicePortName, Option<ServiceRules>)>,
        t: &mut String,
    ) -> usize {
        let blank = ServiceRules::default();
        let mut pairs: Vec<(ServicePortName, Option<ServiceRules>, Option<ServiceRules>)> =
            Vec::new();
        for (name, new) in changes {
            let old = self.rules.remove(&name);
            if old == new {
                if let Some(old) = old {
                    self.rules.insert(name, old);
                }
                continue;
            }
            pairs.push((name, old, new));
        }
        if pairs.is_empty() {
            return 0;
        }
        // Every element's key may be claimed by more than one Service port (an external
        // IP, a node port); the first claimant in name order owns it. The state keeps only
        // how many claim each key: with one claimant the owner is known without a search,
        // and a contested key (rare: a destination written twice by hand) is resolved by
        // a walk over the rules.
        struct Touched<'a> {
            map: &'static str,
            key: &'a str,
            hash: u64,
            /// The first changed Service port claiming it before / after, and its value.
            before: Option<(&'a ServicePortName, &'a str)>,
            after: Option<(&'a ServicePortName, &'a str)>,
        }
        let mut touched: Vec<Touched<'_>> = Vec::new();
        let mut index: HashMap<(&'static str, &str), usize> = HashMap::new();
        let mut hairpin_before: HashMap<IpAddr, bool> = HashMap::new();
        let mut lb_before: HashMap<LbChain, bool> = HashMap::new();
        for (name, old, new) in &pairs {
            for (rules, is_new) in [(old.as_ref(), false), (new.as_ref(), true)] {
                for e in rules.into_iter().flat_map(|r| r.elements.iter()) {
                    let i = *index.entry((e.map, &*e.key)).or_insert_with(|| {
                        touched.push(Touched {
                            map: e.map,
                            key: &e.key,
                            hash: claim_hash(e.map, &e.key),
                            before: None,
                            after: None,
                        });
                        touched.len() - 1
                    });
                    let first = if is_new {
                        &mut touched[i].after
                    } else {
                        &mut touched[i].before
                    };
                    if first.is_none_or(|(n, _)| name < n) {
                        *first = Some((name, &*e.value));
                    }
                }
            }
            for lb in [old.as_ref(), new.as_ref()]
                .into_iter()
                .flatten()
                .filter_map(|r| r.lb)
            {
                lb_before
                    .entry(lb)
                    .or_insert_with(|| self.lb_chains.contains_key(&lb));
            }
            if let Some(lb) = old.as_ref().and_then(|o| o.lb) {
                if let Some(n) = self.lb_chains.get_mut(&lb) {
                    *n -= 1;
                    if *n == 0 {
                        self.lb_chains.remove(&lb);
                    }
                }
            }
            if let Some(lb) = new.as_ref().and_then(|n| n.lb) {
                *self.lb_chains.entry(lb).or_default() += 1;
            }
            for rules in [old.as_ref(), new.as_ref()].into_iter().flatten() {
                for &ip in &rules.hairpin {
                    hairpin_before
                        .entry(ip)
                        .or_insert_with(|| self.hairpin.get(&ip).is_some_and(|n| *n > 0));
                }
            }
            if let Some(old) = old {
                for ip in &old.hairpin {
                    if let Some(n) = self.hairpin.get_mut(ip) {
                        *n -= 1;
                        if *n == 0 {
                            self.hairpin.remove(ip);
                        }
                    }
                }
            }
            if let Some(new) = new {
                for &ip in &new.hairpin {
                    *self.hairpin.entry(ip).or_default() += 1;
                }
            }
        }
        drop(index);
        let before_counts: Vec<u32> = touched
            .iter()
            .map(|k| self.claims.get(&k.hash).copied().unwrap_or(0))
            .collect();
        for (_, old, new) in &pairs {
            for e in old.iter().flat_map(|o| o.elements.iter()) {
                let h = claim_hash(e.map, &e.key);
                if let Some(n) = self.claims.get_mut(&h) {
                    *n -= 1;
                    if *n == 0 {
                        self.claims.remove(&h);
                    }
                }
            }
            for e in new.iter().flat_map(|n| n.elements.iter()) {
                *self.claims.entry(claim_hash(e.map, &e.key)).or_default() += 1;
            }
        }
        // The Service ports that did not change, in name order.
        let others = &self.rules;
        let owner = |count: u32, first, map: &str, key: &str| owner(others, count, first, map, key);
        let mut deletes = ElementChanges::default();
        let mut adds = ElementChanges::default();
        let mut conflicts = Vec::new();
        for (k, before_count) in touched.iter().zip(before_counts) {
            let after_count = self.claims.get(&k.hash).copied().unwrap_or(0);
            if after_count > 1 {
                conflicts.push(format!("{} in {}", k.key, k.map));
            }
            let was = owner(before_count, k.before, k.map, k.key);
            let is = owner(after_count, k.after, k.map, k.key);
            if was == is {
                continue;
            }
            if was.is_some() {
                deletes.shared.push((k.map, Cow::Borrowed(k.key), None));
            }
            if let Some(v) = is {
                adds.shared
                    .push((k.map, Cow::Borrowed(k.key), Some(Cow::Borrowed(v))));
            }
        }
        if !conflicts.is_empty() {
            conflicts.sort();
            tracing::warn!(
                ?conflicts,
                "destination claimed by more than one Service port; the first in name order keeps it"
            );
        }
        for (ip, was) in hairpin_before {
            let is = self.hairpin.contains_key(&ip);
            if was && !is {
                deletes.hairpin.push(ip);
            } else if is && !was {
                adds.hairpin.push(ip);
            }
        }
        // Endpoint slots belong to one Service port: what changed between its old and
        // new slots.
        for (_, old, new) in &pairs {
            let o = old.as_ref().unwrap_or(&blank);
            let n = new.as_ref().unwrap_or(&blank);
            if o.slots.is_empty() || n.slots.is_empty() {
                adds.chains.extend(n.slots.iter());
                deletes.chains.extend(o.slots.iter());
                continue;
            }
            let old_slots: HashSet<_> = o.slots.iter().flat_map(SlotChain::slots).collect();
            let new_slots: HashSet<_> = n.slots.iter().flat_map(SlotChain::slots).collect();
            // A slot whose endpoint changed is deleted and added again.
            deletes.slots.extend(old_slots.difference(&new_slots));
            adds.slots.extend(new_slots.difference(&old_slots));
        }
        // 1. Elements that go away or change value.
        deletes.write(t, tbl, "delete");
        // An affinity set whose timeout changed cannot be altered in place: its Service's
        // chains are flushed (nothing references the set any more), the set is deleted
        // and re-created below, and every chain of that Service is rewritten.
        let recreate: Vec<bool> = pairs
            .iter()
            .map(|(_, o, n)| {
                let (o, n) = (o.as_ref().unwrap_or(&blank), n.as_ref().unwrap_or(&blank));
                n.sets
                    .iter()
                    .any(|(set, decl)| o.sets.get(set).is_some_and(|d| d != decl))
            })
            .collect();
        for ((_, o, n), _) in pairs.iter().zip(&recreate).filter(|(_, r)| **r) {
            let (o, n) = (o.as_ref().unwrap_or(&blank), n.as_ref().unwrap_or(&blank));
            for chain in o.chains.keys() {
                let _ = writeln!(t, "flush chain {tbl} {chain}");
            }
            for (set, decl) in o.sets.iter() {
                if n.sets.get(set).is_some_and(|d| d != decl) {
                    let _ = writeln!(t, "delete set {tbl} {set}");
                }
            }
        }
        // 2. New sets, and new or changed chains.
        for (_, o, n) in &pairs {
            let (o, n) = (o.as_ref().unwrap_or(&blank), n.as_ref().unwrap_or(&blank));
            for (set, decl) in n.sets.iter() {
                if o.sets.get(set) != Some(decl) {
                    let _ = writeln!(t, "add set {tbl} {set} {{ {decl} }}");
                }
            }
        }
        // Shared chains that come into use, then go out of use.
        let l3 = tbl.split(' ').next().unwrap_or("ip");
        let mut lb_new: Vec<LbChain> = Vec::new();
        let mut lb_gone: Vec<LbChain> = Vec::new();
        for (lb, was) in lb_before {
            match (was, self.lb_chains.contains_key(&lb)) {
                (false, true) => lb_new.push(lb),
                (true, false) => lb_gone.push(lb),
                _ => {}
            }
        }
        lb_new.sort_unstable();
        lb_gone.sort_unstable();
        for lb in lb_new {
            write_chain(t, tbl, &lb.name(), &lb.rule(l3), false);
        }
        let mut writes: Vec<(&str, &str, bool)> = Vec::new();
        for ((_, o, n), recreate) in pairs.iter().zip(&recreate) {
            let (o, n) = (o.as_ref().unwrap_or(&blank), n.as_ref().unwrap_or(&blank));
            for (chain, rules) in n.chains.iter() {
                match o.chains.get(chain) {
                    Some(old_rules) if old_rules == rules && !recreate => {}
                    existing => writes.push((chain, rules, existing.is_some())),
                }
            }
        }
        writes.sort_by_key(|(c, _, _)| chain_rank(c));
        for (chain, rules, existed) in writes {
            write_chain(t, tbl, chain, rules, existed);
        }
        // 3. Elements that are new or changed value (after the rules that bind their
        // maps: a rule bound to a map walks its elements, an element is checked against
        // every bound rule; the map shards keep both small).
        adds.write(t, tbl, "add");
        // 4. Chains and sets no longer needed: flushed first so none references another.
        let gone: Vec<&str> = pairs
            .iter()
            .flat_map(|(_, o, n)| {
                let n = n.as_ref().unwrap_or(&blank);
                o.iter()
                    .flat_map(|o| o.chains.keys())
                    .filter(|c| !n.chains.contains_key(c))
                    .collect::<Vec<_>>()
            })
            .collect();
        let gone: Vec<Cow<'_, str>> = gone
            .into_iter()
            .map(Cow::Borrowed)
            .chain(lb_gone.into_iter().map(|lb| Cow::Owned(lb.name())))
            .collect();
        for chain in &gone {
            let _ = writeln!(t, "flush chain {tbl} {chain}");
        }
        for chain in &gone {
            let _ = writeln!(t, "delete chain {tbl} {chain}");
        }
        for (_, o, n) in &pairs {
            let n = n.as_ref().unwrap_or(&blank);
            for set in o.iter().flat_map(|o| o.sets.keys()) {
                if !n.sets.contains_key(set) {
                    let _ = writeln!(t, "delete set {tbl} {set}");
                }
            }
        }
        let changed = pairs.len();
        for (name, _, new) in pairs {
            if let Some(new) = new {
                self.rules.insert(name, new);
            }
        }
        changed
    }
}

/// The transaction that takes the table from `old` (what was applied; None: unknown,
/// rebuild everything) to `new`. Empty when nothing changed.
pub fn transaction(
    builder: &RuleBuilder,
    old: Option<&BTreeMap<ServicePortName, ServiceRules>>,
    new: &BTreeMap<ServicePortName, ServiceRules>,
) -> String {
    let tbl = builder.table();
    let mut state = TableState::default();
    let mut t = String::new();
    match old {
        Some(old) => {
            let _ = state.update(
                &tbl,
                old.iter()
                    .map(|(k, v)| (k.clone(), Some(v.clone())))
                    .collect(),
                &mut String::new(),
            );
        }
        None => {
            // Start from nothing in one atomic step: whatever a previous kube-proxy
            // left in our table goes, nothing else is touched.
            let _ = writeln!(t, "add table {tbl}");
            let _ = writeln!(t, "delete table {tbl}");
            t.push_str(&builder.base());
        }
    }
    let mut changes: Vec<(ServicePortName, Option<ServiceRules>)> = new
        .iter()
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    if let Some(old) = old {
        changes.extend(
            old.keys()
                .filter(|k| !new.contains_key(*k))
                .map(|k| (k.clone(), None)),
        );
    }
    let changed = state.update(&tbl, changes, &mut t);
    if changed == 0 && old.is_some() {
        return String::new();
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

/// What was applied.
#[derive(Default)]
struct Applied {
    state: TableState,
    slots: Slots,
}

/// Keeps the table in step with the Services and endpoints it is given.
pub struct Proxier<N> {
    nft: N,
    builder: RuleBuilder,
    /// What the table holds; None until a full sync succeeded.
    applied: Option<Applied>,
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
    /// `endpoints` ask for; only Service ports whose objects changed are written. After
    /// a failed transaction the next sync rebuilds the table.
    pub async fn sync(
        &mut self,
        services: &BTreeMap<ServicePortName, impl Borrow<ServicePort>>,
        endpoints: &BTreeMap<ServicePortName, impl EndpointList>,
    ) -> Result<SyncResult> {
        self.sync_dirty(services, endpoints, None).await
    }

    /// As [`Proxier::sync`], rebuilding only the Service ports of the `dirty` Services
    /// (None: all) — the change trackers know which Services changed, so a sync among
    /// 10,000 Services looks at one.
    pub async fn sync_dirty(
        &mut self,
        services: &BTreeMap<ServicePortName, impl Borrow<ServicePort>>,
        endpoints: &BTreeMap<ServicePortName, impl EndpointList>,
        dirty: Option<&HashSet<ServiceKey>>,
    ) -> Result<SyncResult> {
        let full = self.applied.is_none();
        let mut applied = self.applied.take().unwrap_or_default();
        let dirty = if full { None } else { dirty };
        // The Service ports to rebuild: all, or those of dirty Services (now or before).
        let candidates: BTreeSet<ServicePortName> = match dirty {
            None => services
                .keys()
                .chain(applied.state.rules.keys())
                .cloned()
                .collect(),
            Some(keys) => keys
                .iter()
                .flat_map(|key| {
                    ports_of(services, key)
                        .map(|(k, _)| k.clone())
                        .chain(ports_of(&applied.state.rules, key).map(|(k, _)| k.clone()))
                        .collect::<Vec<_>>()
                })
                .collect(),
        };
        let claimed = claimed_twice(services);
        let none: Arc<[Endpoint]> = Arc::new([]);
        let mut changes = Vec::with_capacity(candidates.len());
        let mut released: Vec<String> = Vec::new();
        for name in candidates {
            let old = applied.state.rules.get(&name);
            let Some(port) = services.get(&name) else {
                if let Some(old) = old {
                    released.extend(old.chains.keys().map(str::to_owned));
                    changes.push((name, None));
                }
                continue;
            };
            let eps = endpoints
                .get(&name)
                .map_or_else(|| none.clone(), |e| e.shared());
            let share = !claimed.contains(&vip_of(&name, port.borrow()));
            let rules = self
                .builder
                .service(&name, port.borrow(), &eps, &mut applied.slots, share);
            if let Some(old) = old {
                released.extend(
                    old.chains
                        .keys()
                        .filter(|c| !rules.chains.contains_key(c))
                        .map(str::to_owned),
                );
            }
            changes.push((name, Some(rules)));
        }
        for chain in &released {
            applied.slots.release(chain);
        }
        let tbl = self.builder.table();
        // One String for the whole transaction (a cold start writes ~9 MB at 10,000
        // Services: no second copy).
        let mut text = String::new();
        if full {
            let _ = writeln!(text, "add table {tbl}\ndelete table {tbl}");
            text.push_str(&self.builder.base());
        }
        let changed_service_ports = applied.state.update(&tbl, changes, &mut text);
        if !text.is_empty() {
            self.nft.apply(&text).await?;
        }
        self.applied = Some(applied);
        Ok(SyncResult {
            full,
            changed_service_ports: if full {
                services.len()
            } else {
                changed_service_ports
            },
            transaction_bytes: text.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::Conditions;
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
        ServicePortName::new("ns", svc, port, Protocol::Tcp)
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
        Endpoint::new(
            IpAddr::from([10, 244, 1, last]),
            port,
            Conditions {
                ready: true,
                serving: true,
                is_local: local,
                ..Conditions::default()
            },
        )
    }

    /// Services svc0…svc49 (ClusterIP 10.96.0.<i+1>, port 80, NodePort 30000+i when
    /// `node_ports`), each with the one endpoint 10.244.1.<i>:80.
    #[allow(clippy::type_complexity)]
    fn fifty_services(
        node_ports: bool,
    ) -> (
        BTreeMap<ServicePortName, ServicePort>,
        BTreeMap<ServicePortName, Vec<Endpoint>>,
    ) {
        let mut services = BTreeMap::new();
        let mut endpoints = BTreeMap::new();
        for i in 0..50u8 {
            let mut port = cluster_ip(i + 1, 80);
            if node_ports {
                port.node_port = Some(30000 + u16::from(i));
            }
            services.insert(name(&format!("svc{i}"), "p"), port);
            endpoints.insert(name(&format!("svc{i}"), "p"), vec![ep(i, 80, false)]);
        }
        (services, endpoints)
    }

    fn builder() -> RuleBuilder {
        RuleBuilder::new(IpFamily::V4, &["10.244.0.0/16".parse().unwrap()], &[])
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    /// Every line of `text` contains one of `about` (a transaction that touches only
    /// what it should).
    fn only_lines_about(text: &str, about: &[&str]) {
        for line in lines(text) {
            assert!(
                about.iter().any(|a| line.contains(a)),
                "line about something else: {line}\n{text}"
            );
        }
    }

    fn has(text: &str, line: &str) {
        assert!(
            lines(text).contains(&line),
            "missing line {line:?} in:\n{text}"
        );
    }

    #[test]
    fn clusterip_service_load_balances_through_a_shared_chain() {
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
        // Off-cluster sources of a ClusterIP are masqueraded by one rule and a set.
        has(&t, "add rule ip kube-proxy services ip daddr . meta l4proto . th dport @cluster-ips ip saddr != @cluster-cidrs jump mark-for-masquerade");
        has(
            &t,
            "add element ip kube-proxy cluster-ips { 10.96.0.10 . tcp . 80 }",
        );
        let shard = LbChain::shard_of(IpAddr::from([10, 96, 0, 10]), 80);
        let map = lb_map(Protocol::Tcp, usize::from(shard));
        let chain = format!("lb-tcp-{shard}-2");
        has(&t, &format!("add map ip kube-proxy {map} {{ typeof ip daddr . tcp dport . numgen random mod 1 : ip daddr . tcp dport ; }}"));
        // A plain ClusterIP Service port has no chain of its own: the shared chain of
        // its map shard for two endpoints picks one by ClusterIP . port . index.
        has(&t, &format!("add chain ip kube-proxy {chain}"));
        has(&t, &format!("add rule ip kube-proxy {chain} meta l4proto tcp dnat ip addr . port to ip daddr . tcp dport . numgen random mod 2 map @{map}"));
        has(&t, &format!("add element ip kube-proxy {map} {{ 10.96.0.10 . 80 . 0 : 10.244.1.1 . 8080, 10.96.0.10 . 80 . 1 : 10.244.1.2 . 8080 }}"));
        has(&t, "add element ip kube-proxy hairpin { 10.244.1.1 . 10.244.1.1, 10.244.1.2 . 10.244.1.2 }");
        has(&t, "add rule ip kube-proxy nat-postrouting ct status dnat ip saddr . ip daddr @hairpin jump mark-for-masquerade");
        has(
            &t,
            &format!(
                "add element ip kube-proxy service-ips {{ 10.96.0.10 . tcp . 80 : goto {chain} }}"
            ),
        );
        assert!(!t.contains("service-ns/"), "no chain of its own:\n{t}");
        assert!(
            !t.contains("endpoint-ns/"),
            "no endpoint chains without affinity:\n{t}"
        );
        // The map elements come after the chain.
        let pos = |needle: &str| t.find(needle).unwrap();
        assert!(
            pos(&format!("add chain ip kube-proxy {chain}"))
                < pos(&format!("add element ip kube-proxy {map}"))
        );
        assert!(
            pos(&format!("add chain ip kube-proxy {chain}"))
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
        has(&t, "add element ip kube-proxy no-endpoint-nodeports { tcp . 30012 : goto reject-chain, tcp . 30014 : drop }");
        has(&t, "add element ip kube-proxy no-endpoint-services { 10.96.0.12 . tcp . 80 : goto reject-chain, 10.96.0.13 . tcp . 80 : drop }");
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
        has(&t, "add rule ip kube-proxy external-ns/web/tcp/ ip saddr @cluster-cidrs goto service-ns/web/tcp/");
        has(&t, "add rule ip kube-proxy external-ns/web/tcp/ fib saddr type local jump mark-for-masquerade");
        has(
            &t,
            "add rule ip kube-proxy external-ns/web/tcp/ goto local-ns/web/tcp/",
        );
        let map = endpoint_map(Protocol::Tcp, Slots::shard_of("local-ns/web/tcp/"));
        has(&t, &format!("add rule ip kube-proxy local-ns/web/tcp/ meta l4proto tcp dnat ip addr . port to numgen random mod 1 offset 0 map @{map}"));
        has(
            &t,
            &format!("add element ip kube-proxy {map} {{ 0 : 10.244.1.2 . 80 }}"),
        );
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
    async fn a_second_sync_rewrites_only_the_changed_node_port_service() {
        let recorder = Recorder::default();
        let mut proxier = Proxier::new(recorder.clone(), builder());
        // NodePort Service ports have chains of their own.
        let (mut services, mut endpoints) = fifty_services(true);
        let first = proxier.sync(&services, &endpoints).await.unwrap();
        assert!(first.full);
        assert_eq!(first.changed_service_ports, 50);
        // Nothing changed: nothing to apply.
        let idle = proxier.sync(&services, &endpoints).await.unwrap();
        assert_eq!((idle.full, idle.transaction_bytes), (false, 0));
        assert_eq!(recorder.0.lock().len(), 1);

        // svc7 gains an endpoint: its chain's rule and its slots change, nothing else.
        endpoints
            .get_mut(&name("svc7", "p"))
            .unwrap()
            .push(ep(200, 80, false));
        let second = proxier.sync(&services, &endpoints).await.unwrap();
        assert_eq!((second.full, second.changed_service_ports), (false, 1));
        let t = recorder.0.lock().last().unwrap().clone();
        assert!(!t.contains("delete table"), "{t}");
        let map = endpoint_map(Protocol::Tcp, Slots::shard_of("service-ns/svc7/tcp/p"));
        // Its slot range grew (capacity 1 → 2): the old slot goes, both endpoints get
        // new slots in the same map.
        has(&t, "flush chain ip kube-proxy service-ns/svc7/tcp/p");
        has(
            &t,
            "add element ip kube-proxy hairpin { 10.244.1.200 . 10.244.1.200 }",
        );
        let dnat = lines(&t)
            .into_iter()
            .find(|l| l.contains("dnat ip addr . port to numgen random mod 2 offset "))
            .unwrap_or_else(|| panic!("no dnat rule:\n{t}"));
        assert!(dnat.ends_with(&format!("map @{map}")), "{dnat}");
        only_lines_about(
            &t,
            &[
                "ns/svc7/",
                &format!("add element ip kube-proxy {map} "),
                &format!("delete element ip kube-proxy {map} "),
                "10.244.1.200 . 10.244.1.200",
            ],
        );
        assert!(
            t.contains("10.244.1.7 . 80") && t.contains("10.244.1.200 . 80"),
            "{t}"
        );

        // svc3 loses its endpoints and svc9 is deleted.
        endpoints.remove(&name("svc3", "p"));
        services.remove(&name("svc9", "p"));
        let third = proxier.sync(&services, &endpoints).await.unwrap();
        assert_eq!(third.changed_service_ports, 2);
        let t = recorder.0.lock().last().unwrap().clone();
        has(&t, "delete element ip kube-proxy service-ips { 10.96.0.10 . tcp . 80, 10.96.0.4 . tcp . 80 }");
        has(
            &t,
            "delete element ip kube-proxy service-nodeports { tcp . 30003, tcp . 30009 }",
        );
        has(&t, "add element ip kube-proxy no-endpoint-services { 10.96.0.4 . tcp . 80 : goto reject-chain }");
        has(&t, "delete element ip kube-proxy hairpin { 10.244.1.3 . 10.244.1.3, 10.244.1.9 . 10.244.1.9 }");
        has(&t, "flush chain ip kube-proxy service-ns/svc9/tcp/p");
        has(&t, "delete chain ip kube-proxy service-ns/svc9/tcp/p");
        has(&t, "delete chain ip kube-proxy service-ns/svc3/tcp/p");
        only_lines_about(
            &t,
            &[
                "ns/svc3/",
                "ns/svc9/",
                "10.96.0.4 ",
                "tcp . 30003",
                "tcp . 30009",
                "10.96.0.10 ",
                "10.244.1.3 ",
                "10.244.1.9 ",
                "delete element ip kube-proxy endpoints-",
            ],
        );
        // A later full sync of the same state from scratch yields the same table
        // contents as the deltas did (checked against real nft in the integration tests).
    }

    #[tokio::test]
    async fn a_second_sync_rewrites_only_the_changed_clusterip_service() {
        let recorder = Recorder::default();
        let mut proxier = Proxier::new(recorder.clone(), builder());
        let (mut services, mut endpoints) = fifty_services(false);
        let first = proxier.sync(&services, &endpoints).await.unwrap();
        assert_eq!((first.full, first.changed_service_ports), (true, 50));
        let t = recorder.0.lock().last().unwrap().clone();
        assert!(!t.contains("service-ns/"), "{t}");

        // svc7 (10.96.0.8) gains an endpoint: it moves to the shared chain for two
        // endpoints; its first element stays, its second is added.
        endpoints
            .get_mut(&name("svc7", "p"))
            .unwrap()
            .push(ep(200, 80, false));
        let second = proxier.sync(&services, &endpoints).await.unwrap();
        assert_eq!((second.full, second.changed_service_ports), (false, 1));
        let t = recorder.0.lock().last().unwrap().clone();
        let shard = LbChain::shard_of(IpAddr::from([10, 96, 0, 8]), 80);
        let map = lb_map(Protocol::Tcp, usize::from(shard));
        has(&t, &format!("add chain ip kube-proxy lb-tcp-{shard}-2"));
        has(
            &t,
            "delete element ip kube-proxy service-ips { 10.96.0.8 . tcp . 80 }",
        );
        has(&t, &format!("add element ip kube-proxy service-ips {{ 10.96.0.8 . tcp . 80 : goto lb-tcp-{shard}-2 }}"));
        has(
            &t,
            &format!(
                "add element ip kube-proxy {map} {{ 10.96.0.8 . 80 . 1 : 10.244.1.200 . 80 }}"
            ),
        );
        only_lines_about(
            &t,
            &[
                "10.96.0.8 ",
                &format!("lb-tcp-{shard}-"),
                "10.244.1.200 . 10.244.1.200",
            ],
        );
        assert!(!t.contains("10.96.0.8 . 80 . 0"), "{t}");

        // svc3 (10.96.0.4) loses its endpoints and svc9 (10.96.0.10) is deleted: their
        // elements go; a shared chain no one uses any more goes too.
        endpoints.remove(&name("svc3", "p"));
        services.remove(&name("svc9", "p"));
        let third = proxier.sync(&services, &endpoints).await.unwrap();
        assert_eq!(third.changed_service_ports, 2);
        let t = recorder.0.lock().last().unwrap().clone();
        has(&t, "delete element ip kube-proxy service-ips { 10.96.0.10 . tcp . 80, 10.96.0.4 . tcp . 80 }");
        has(&t, "add element ip kube-proxy no-endpoint-services { 10.96.0.4 . tcp . 80 : goto reject-chain }");
        only_lines_about(
            &t,
            &[
                "10.96.0.4 ",
                "10.96.0.10 ",
                "10.244.1.3 ",
                "10.244.1.9 ",
                " chain ip kube-proxy lb-tcp-",
            ],
        );
        // Deleting every Service port of the one-endpoint chains deletes them.
        let before = services.len();
        services.retain(|n, _| n.name.as_ref() == "svc7");
        let fourth = proxier.sync(&services, &endpoints).await.unwrap();
        assert_eq!(fourth.changed_service_ports, before - 1);
        let t = recorder.0.lock().last().unwrap().clone();
        for shard in 0..ENDPOINT_MAP_SHARDS {
            if t.contains(&format!("add chain ip kube-proxy lb-tcp-{shard}-1\n")) {
                panic!("{t}");
            }
        }
        assert!(t.contains("delete chain ip kube-proxy lb-tcp-"), "{t}");
        assert!(
            !t.contains(&format!("delete chain ip kube-proxy lb-tcp-{shard}-2\n")),
            "{t}"
        );
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
        has(&t, "add rule ip6 kube-proxy services ip6 daddr . meta l4proto . th dport @cluster-ips ip6 saddr != @cluster-cidrs jump mark-for-masquerade");
        has(
            &t,
            "add element ip6 kube-proxy cluster-ips { fd00:96::1 . tcp . 80 }",
        );
        has(
            &t,
            "add element ip6 kube-proxy cluster-cidrs { fd00:244::/48 }",
        );
        has(&t, "add set ip6 kube-proxy affinity-ns/web/tcp/__fd00.244..5/8080 { type ipv6_addr ; flags dynamic,timeout ; timeout 60s ; }");
        has(&t, "add rule ip6 kube-proxy endpoint-ns/web/tcp/__fd00.244..5/8080 meta l4proto tcp dnat to [fd00:244::5]:8080");
        has(&t, "add element ip6 kube-proxy service-ips { fd00:96::1 . tcp . 80 : goto service-ns/web/tcp/ }");
        assert!(
            !t.contains(" ip kube-proxy") && !t.contains("10.244."),
            "{t}"
        );
    }

    #[test]
    fn a_destination_claimed_three_times_moves_to_the_next_claimant() {
        let b = builder();
        let x = IpAddr::from([192, 0, 2, 9]);
        let port = |last: u8| {
            let mut p = cluster_ip(last, 80);
            p.external_ips = vec![x];
            p
        };
        let mut services = BTreeMap::from([
            (name("a", ""), port(20)),
            (name("b", ""), port(21)),
            (name("c", ""), port(22)),
        ]);
        let mut endpoints = BTreeMap::from([
            (name("a", ""), vec![ep(1, 80, false)]),
            (name("b", ""), vec![ep(2, 80, false)]),
            (name("c", ""), vec![ep(3, 80, false)]),
        ]);
        let first = b.build(&services, &endpoints);
        let t = transaction(&b, None, &first);
        assert_eq!(t.matches("192.0.2.9 . tcp . 80").count(), 1, "{t}");
        has(&t, "add element ip kube-proxy service-ips { 10.96.0.20 . tcp . 80 : goto service-ns/a/tcp/, 10.96.0.21 . tcp . 80 : goto service-ns/b/tcp/, 10.96.0.22 . tcp . 80 : goto service-ns/c/tcp/, 192.0.2.9 . tcp . 80 : goto external-ns/a/tcp/ }");

        // b, not the owner, goes: nothing about the destination is written.
        services.remove(&name("b", ""));
        let second = b.build(&services, &endpoints);
        let t = transaction(&b, Some(&first), &second);
        assert!(!t.contains("192.0.2.9"), "{t}");

        // a loses its endpoints: it claims the destination in no-endpoint-services now,
        // so c (unchanged) owns it in service-ips.
        endpoints.remove(&name("a", ""));
        let third = b.build(&services, &endpoints);
        let t = transaction(&b, Some(&second), &third);
        has(&t, "delete element ip kube-proxy service-ips { 10.96.0.20 . tcp . 80, 192.0.2.9 . tcp . 80 }");
        has(&t, "add element ip kube-proxy service-ips { 192.0.2.9 . tcp . 80 : goto external-ns/c/tcp/ }");
        has(&t, "add element ip kube-proxy no-endpoint-services { 10.96.0.20 . tcp . 80 : goto reject-chain, 192.0.2.9 . tcp . 80 : goto reject-chain }");
    }

    #[test]
    fn only_endpoints_that_may_run_here_are_hairpin_candidates() {
        let b = builder();
        let services = BTreeMap::from([(name("web", "http"), cluster_ip(10, 80))]);
        let elsewhere = Endpoint::new(
            IpAddr::from([10, 244, 1, 2]),
            8080,
            Conditions {
                ready: true,
                serving: true,
                on_other_node: true,
                ..Conditions::default()
            },
        );
        let endpoints = BTreeMap::from([(
            name("web", "http"),
            vec![ep(1, 8080, true), elsewhere, ep(3, 8080, false)],
        )]);
        let t = transaction(&b, None, &b.build(&services, &endpoints));
        // Here, and of no known node: candidates. On another node: not.
        has(
            &t,
            "add element ip kube-proxy hairpin { 10.244.1.1 . 10.244.1.1, 10.244.1.3 . 10.244.1.3 }",
        );
        assert!(!t.contains("10.244.1.2 . 10.244.1.2"), "{t}");
        assert!(t.contains("10.244.1.2 . 8080"), "{t}");
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
        let none: BTreeMap<ServicePortName, Vec<Endpoint>> = BTreeMap::new();
        let err = proxier.sync(&services, &none).await.unwrap_err();
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
