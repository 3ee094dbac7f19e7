//! The cluster zone (upstream: CoreDNS's `kubernetes` plugin, following the Kubernetes
//! DNS specification, <https://github.com/kubernetes/dns/blob/master/docs/specification.md>):
//! a compact index of Services and EndpointSlices kept from the watches, and the answer
//! to one question about a name in `<cluster domain>` or a reverse name.
//!
//! - `<svc>.<ns>.svc.<zone>`: A/AAAA of a ClusterIP Service; of each ready endpoint of a
//!   headless Service; a CNAME to `spec.externalName` of an ExternalName Service.
//! - `<hostname>.<svc>.<ns>.svc.<zone>`: an endpoint of a headless Service by its
//!   `hostname` (else its address with dashes, as CoreDNS names it).
//! - `_<port>._<proto>.<svc>.<ns>.svc.<zone>`: SRV per named port (one per ready endpoint
//!   for headless Services), targets' addresses in the additional section.
//! - `<a-b-c-d>.<ns>.pod.<zone>`: the address itself (CoreDNS `pods insecure`).
//! - PTR for ClusterIPs and headless endpoints; other reverse names are not ours
//!   (forwarded, as CoreDNS's `fallthrough in-addr.arpa ip6.arpa`).
//! - Anything else in the zone: NXDOMAIN (a name that exists with no record of the type:
//!   NOERROR and no answer), SOA in the authority section; TTL 5 s.
//!
//! The zone is also what makes search-path amplification cheap: `example.com.ns.svc.<zone>`
//! and friends are answered NXDOMAIN here, never forwarded.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use smallvec::SmallVec;

use hickory_proto::rr::rdata::{CNAME, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::endpoints::SERVICE_NAME_LABEL;

/// The TTL of every record of the zone (CoreDNS's `kubernetes` plugin default).
pub const TTL: u32 = 5;
/// The schema version answered at `dns-version.<zone>` (spec 2.2).
pub const SCHEMA_VERSION: &str = "1.1.0";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid cluster domain {domain:?}: {reason}")]
    Domain { domain: String, reason: String },
}

/// What a Service means to DNS.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// `spec.clusterIPs` (one or two families).
    ClusterIp(Box<[IpAddr]>),
    /// `clusterIP: None`: the ready endpoints.
    Headless,
    /// `type: ExternalName`: the target, an FQDN.
    ExternalName(Box<Name>),
}

/// A port name, lower-case, kept inline: an IANA service name, at most 15 characters
/// (the API's validation); empty for an unnamed port (no SRV record).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PortName {
    len: u8,
    bytes: [u8; 15],
}

impl PortName {
    fn new(text: &str) -> Option<PortName> {
        let mut bytes = [0u8; 15];
        let len = text.len();
        if len > bytes.len() || !text.is_ascii() {
            return None;
        }
        bytes[..len].copy_from_slice(text.to_ascii_lowercase().as_bytes());
        Some(PortName {
            len: u8::try_from(len).ok()?,
            bytes,
        })
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct ServicePort {
    name: PortName,
    protocol: Protocol,
    port: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    fn parse(text: Option<&str>) -> Option<Protocol> {
        match text.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    fn label(self) -> &'static [u8] {
        match self {
            Protocol::Tcp => b"_tcp",
            Protocol::Udp => b"_udp",
            Protocol::Sctp => b"_sctp",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct ServiceEntry {
    kind: Kind,
    ports: Box<[ServicePort]>,
}

/// One ready endpoint address, as the answers see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct EndpointEntry<'a> {
    ip: IpAddr,
    /// `hostname` of the endpoint, lower-case.
    hostname: Option<&'a str>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct SliceEntry {
    service: Box<str>,
    /// The slice's ports: name → port (an endpoint's port for SRV targets).
    ports: Box<[ServicePort]>,
    /// Ready endpoint addresses only (nothing else is ever published).
    ips: Box<[IpAddr]>,
    /// The hostnames of those that have one: (index into `ips`, hostname). Empty for
    /// most Services (only StatefulSet-like pods set one), so it costs nothing.
    hostnames: Box<[(u32, Box<str>)]>,
}

impl SliceEntry {
    fn endpoints(&self) -> impl Iterator<Item = EndpointEntry<'_>> + '_ {
        self.ips
            .iter()
            .enumerate()
            .map(move |(i, ip)| EndpointEntry {
                ip: *ip,
                hostname: self
                    .hostnames
                    .iter()
                    .find(|(k, _)| usize::try_from(*k).ok() == Some(i))
                    .map(|(_, h)| &**h),
            })
    }
}

/// A name shared between the index's maps (one allocation, counted references).
type Shared = Arc<str>;

/// Services and endpoint slices of one namespace.
#[derive(Default)]
struct Namespace {
    services: HashMap<Shared, ServiceEntry>,
    /// Slice name → what it holds.
    slices: HashMap<Box<str>, SliceEntry>,
}

/// Whose address a reverse name asks for: Service `ns/service` (its ClusterIP, or one
/// of its endpoints when it is headless).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Owner {
    ns: Shared,
    service: Shared,
}

/// The index the watches keep.
pub struct Zone {
    /// The cluster domain, lower-case and fully qualified (`cluster.local.`).
    domain: Name,
    soa: Record,
    namespaces: HashMap<Shared, Namespace>,
    /// ClusterIPs and headless endpoints → their Services (PTR).
    reverse: HashMap<IpAddr, SmallVec<[Owner; 1]>>,
    /// Hashes of the keys seen during a re-list, per kind; None outside one. (A hash
    /// collision would keep a deleted object until the next re-list: at 10,000 keys,
    /// about one chance in 10^11.)
    relist_services: Option<HashSet<u64>>,
    relist_slices: Option<HashSet<u64>>,
    pub services_synced: bool,
    pub slices_synced: bool,
}

/// The answer to one question.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// NOERROR with these records (answers, additionals).
    Records {
        answers: Vec<Record>,
        additionals: Vec<Record>,
    },
    /// The name exists but has no record of the type: NOERROR, SOA in authority.
    NoData(Record),
    /// NXDOMAIN, SOA in authority.
    NxDomain(Record),
    /// An ExternalName: the CNAME; the target is resolved elsewhere for `qtype`
    /// (outside the zone: by the forwarder).
    Alias { cname: Record, target: Name },
    /// Not a name of the zone: forward it.
    NotOurs,
}

fn key_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> (Box<str>, Box<str>) {
    (
        meta.namespace.as_deref().unwrap_or_default().into(),
        meta.name.as_deref().unwrap_or_default().into(),
    )
}

/// A hash of an object's namespace and name (std's SipHash, fixed keys).
fn key_hash(ns: &str, name: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    ns.hash(&mut h);
    name.hash(&mut h);
    h.finish()
}

/// `10-0-0-1` for 10.0.0.1; `fd00--1` for fd00::1 (CoreDNS's endpoint names).
pub fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

/// The address a dashed label names.
fn undashed(label: &str) -> Option<IpAddr> {
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

fn service_entry(svc: &Service) -> Option<ServiceEntry> {
    let spec = svc.spec.as_ref()?;
    let kind = if spec.type_.as_deref() == Some("ExternalName") {
        let target = spec.external_name.as_deref()?.trim_end_matches('.');
        let mut name = Name::from_ascii(target).ok()?.to_lowercase();
        name.set_fqdn(true);
        Kind::ExternalName(Box::new(name))
    } else if spec.cluster_ip.as_deref() == Some("None") {
        Kind::Headless
    } else {
        let ips: Vec<IpAddr> = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .filter_map(|ip| ip.parse().ok())
            .fold(Vec::new(), |mut v, ip| {
                if !v.contains(&ip) {
                    v.push(ip);
                }
                v
            });
        if ips.is_empty() {
            return None;
        }
        Kind::ClusterIp(ips.into())
    };
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(ServicePort {
                name: PortName::new(p.name.as_deref().unwrap_or_default())?,
                protocol: Protocol::parse(p.protocol.as_deref())?,
                port: u16::try_from(p.port).ok()?,
            })
        })
        .collect();
    Some(ServiceEntry { kind, ports })
}

fn slice_entry(slice: &EndpointSlice) -> Option<SliceEntry> {
    let service = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    if slice.address_type == "FQDN" {
        return None;
    }
    let ports = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(ServicePort {
                name: PortName::new(p.name.as_deref().unwrap_or_default())?,
                protocol: Protocol::parse(p.protocol.as_deref())?,
                port: u16::try_from(p.port?).ok()?,
            })
        })
        .collect();
    let mut ips = Vec::new();
    let mut hostnames = Vec::new();
    for ep in &slice.endpoints {
        // A missing `ready` means ready (the EndpointSlice API's rule).
        let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
        if !ready {
            continue;
        }
        let hostname: Option<Box<str>> = ep
            .hostname
            .as_deref()
            .filter(|h| !h.is_empty())
            .map(|h| h.to_lowercase().into());
        for address in &ep.addresses {
            if let Ok(ip) = address.parse::<IpAddr>() {
                if let Some(h) = &hostname {
                    hostnames.push((u32::try_from(ips.len()).ok()?, h.clone()));
                }
                ips.push(ip);
            }
        }
    }
    Some(SliceEntry {
        service: service.as_str().into(),
        ports,
        ips: ips.into(),
        hostnames: hostnames.into(),
    })
}

fn record(name: Name, rdata: RData) -> Record {
    Record::from_rdata(name, TTL, rdata)
}

fn address_record(name: Name, ip: IpAddr) -> Record {
    match ip {
        IpAddr::V4(v4) => record(name, RData::A(v4.into())),
        IpAddr::V6(v6) => record(name, RData::AAAA(v6.into())),
    }
}

fn wants(qtype: RecordType, ip: IpAddr) -> bool {
    matches!(
        (qtype, ip),
        (RecordType::A | RecordType::ANY, IpAddr::V4(_))
            | (RecordType::AAAA | RecordType::ANY, IpAddr::V6(_))
    )
}

fn label_str(label: &[u8]) -> Option<&str> {
    std::str::from_utf8(label).ok()
}

impl Zone {
    /// An empty zone for `domain` (`cluster.local`, with or without the final dot).
    pub fn new(domain: &str) -> Result<Zone, Error> {
        let err = |reason: String| Error::Domain {
            domain: domain.to_string(),
            reason,
        };
        let trimmed = domain.trim().trim_end_matches('.');
        if trimmed.is_empty() {
            return Err(err("empty".into()));
        }
        let mut name = Name::from_ascii(trimmed)
            .map_err(|e| err(e.to_string()))?
            .to_lowercase();
        name.set_fqdn(true);
        let soa_name = |prefix: &str| {
            Name::from_ascii(prefix)
                .and_then(|p| p.append_domain(&name))
                .map_err(|e| err(e.to_string()))
        };
        // As CoreDNS's kubernetes plugin: ns.dns.<zone>, hostmaster.<zone>, and its
        // refresh/retry/expire; the minimum (negative TTL) is the records' TTL.
        let soa = record(
            name.clone(),
            RData::SOA(SOA::new(
                soa_name("ns.dns")?,
                soa_name("hostmaster")?,
                1,
                7200,
                1800,
                86400,
                TTL,
            )),
        );
        Ok(Zone {
            domain: name,
            soa,
            namespaces: HashMap::new(),
            reverse: HashMap::new(),
            relist_services: None,
            relist_slices: None,
            services_synced: false,
            slices_synced: false,
        })
    }

    /// The cluster domain, fully qualified.
    pub fn domain(&self) -> &Name {
        &self.domain
    }

    /// The labels of `name` before the cluster domain; None when it is not in it.
    /// (Compared in place: this runs for every query.)
    fn relative_labels<'a>(&self, name: &'a Name) -> Option<SmallVec<[&'a [u8]; 8]>> {
        let labels: SmallVec<[&[u8]; 8]> = name.iter().collect();
        let own = usize::from(self.domain.num_labels());
        if labels.len() < own {
            return None;
        }
        let split = labels.len() - own;
        if !labels[split..]
            .iter()
            .zip(self.domain.iter())
            .all(|(a, b)| a.eq_ignore_ascii_case(b))
        {
            return None;
        }
        let mut labels = labels;
        labels.truncate(split);
        Some(labels)
    }

    /// Whether `name` is in the cluster domain.
    pub fn contains(&self, name: &Name) -> bool {
        self.relative_labels(name).is_some()
    }

    pub fn synced(&self) -> bool {
        self.services_synced && self.slices_synced
    }

    /// How many Services the index holds.
    pub fn service_count(&self) -> usize {
        self.namespaces.values().map(|n| n.services.len()).sum()
    }

    /// The ClusterIPs of Service `ns/name` (empty: none, or not a ClusterIP Service).
    pub fn cluster_ips(&self, ns: &str, name: &str) -> Vec<IpAddr> {
        match self
            .namespaces
            .get(ns)
            .and_then(|n| n.services.get(name))
            .map(|s| &s.kind)
        {
            Some(Kind::ClusterIp(ips)) => ips.to_vec(),
            _ => Vec::new(),
        }
    }

    fn bump_serial(&mut self) {
        if let RData::SOA(soa) = self.soa.data_mut() {
            let next = soa.serial().wrapping_add(1);
            *soa = SOA::new(
                soa.mname().clone(),
                soa.rname().clone(),
                next,
                soa.refresh(),
                soa.retry(),
                soa.expire(),
                soa.minimum(),
            );
        }
    }

    /// The addresses PTR names for Service `ns/svc`: its ClusterIPs, or the ready
    /// endpoints of all its slices when it is headless.
    fn owned_ips(&self, ns: &str, svc: &str) -> Vec<IpAddr> {
        let Some(n) = self.namespaces.get(ns) else {
            return Vec::new();
        };
        match n.services.get(svc).map(|s| &s.kind) {
            Some(Kind::ClusterIp(ips)) => ips.to_vec(),
            Some(Kind::Headless) => self
                .endpoints_of(n, svc)
                .into_iter()
                .map(|(ep, _)| ep.ip)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Runs `change`, which may touch Service `ns/svc` or its slices, and brings the
    /// reverse index of that Service up to date.
    fn update(&mut self, ns: &str, svc: &str, change: impl FnOnce(&mut Self)) {
        let before = self.owned_ips(ns, svc);
        change(self);
        let after = self.owned_ips(ns, svc);
        for ip in before.iter().filter(|ip| !after.contains(ip)) {
            if let Some(owners) = self.reverse.get_mut(ip) {
                owners.retain(|o| !(&*o.ns == ns && &*o.service == svc));
                if owners.is_empty() {
                    self.reverse.remove(ip);
                }
            }
        }
        let gained: Vec<IpAddr> = after
            .into_iter()
            .filter(|ip| !before.contains(ip))
            .collect();
        if gained.is_empty() {
            return;
        }
        // Both exist: `after` is not empty only for a Service in the index.
        let Some((ns_key, n)) = self.namespaces.get_key_value(ns) else {
            return;
        };
        let Some((svc_key, _)) = n.services.get_key_value(svc) else {
            return;
        };
        let owner = Owner {
            ns: ns_key.clone(),
            service: svc_key.clone(),
        };
        for ip in gained {
            let owners = self.reverse.entry(ip).or_default();
            if !owners.contains(&owner) {
                owners.push(owner.clone());
            }
        }
    }

    fn namespace_mut(&mut self, ns: &str) -> &mut Namespace {
        if !self.namespaces.contains_key(ns) {
            self.namespaces.insert(ns.into(), Namespace::default());
        }
        self.namespaces.get_mut(ns).expect("inserted above")
    }

    fn drop_namespace_if_empty(&mut self, ns: &str) {
        if self
            .namespaces
            .get(ns)
            .is_some_and(|n| n.services.is_empty() && n.slices.is_empty())
        {
            self.namespaces.remove(ns);
        }
    }

    pub fn apply_service(&mut self, svc: &Service) {
        let (ns, name) = key_of(&svc.metadata);
        if let Some(seen) = self.relist_services.as_mut() {
            seen.insert(key_hash(&ns, &name));
        }
        let Some(entry) = service_entry(svc) else {
            self.remove_service(&ns, &name);
            return;
        };
        if self
            .namespaces
            .get(&*ns)
            .and_then(|n| n.services.get(&*name))
            == Some(&entry)
        {
            return;
        }
        self.update(&ns, &name, |z| {
            z.namespace_mut(&ns)
                .services
                .insert(name.as_ref().into(), entry);
        });
        self.bump_serial();
    }

    pub fn delete_service(&mut self, svc: &Service) {
        let (ns, name) = key_of(&svc.metadata);
        self.remove_service(&ns, &name);
    }

    fn remove_service(&mut self, ns: &str, name: &str) {
        if !self
            .namespaces
            .get(ns)
            .is_some_and(|n| n.services.contains_key(name))
        {
            return;
        }
        self.update(ns, name, |z| {
            if let Some(n) = z.namespaces.get_mut(ns) {
                n.services.remove(name);
            }
            z.drop_namespace_if_empty(ns);
        });
        self.bump_serial();
    }

    pub fn apply_slice(&mut self, slice: &EndpointSlice) {
        let (ns, name) = key_of(&slice.metadata);
        if let Some(seen) = self.relist_slices.as_mut() {
            seen.insert(key_hash(&ns, &name));
        }
        let Some(entry) = slice_entry(slice) else {
            self.remove_slice(&ns, &name);
            return;
        };
        let old = self.namespaces.get(&*ns).and_then(|n| n.slices.get(&*name));
        if old == Some(&entry) {
            return;
        }
        // A slice moved to another Service (its label changed) leaves the old one.
        if let Some(old_service) = old
            .map(|o| o.service.clone())
            .filter(|s| *s != entry.service)
        {
            self.update(&ns, &old_service, |z| {
                if let Some(n) = z.namespaces.get_mut(&*ns) {
                    n.slices.remove(&*name);
                }
            });
        }
        let service = entry.service.clone();
        self.update(&ns, &service, |z| {
            z.namespace_mut(&ns).slices.insert(name, entry);
        });
        self.bump_serial();
    }

    pub fn delete_slice(&mut self, slice: &EndpointSlice) {
        let (ns, name) = key_of(&slice.metadata);
        self.remove_slice(&ns, &name);
    }

    fn remove_slice(&mut self, ns: &str, name: &str) {
        let Some(service) = self
            .namespaces
            .get(ns)
            .and_then(|n| n.slices.get(name))
            .map(|s| s.service.clone())
        else {
            return;
        };
        self.update(ns, &service, |z| {
            if let Some(n) = z.namespaces.get_mut(ns) {
                n.slices.remove(name);
            }
            z.drop_namespace_if_empty(ns);
        });
        self.bump_serial();
    }

    pub fn relist_services_started(&mut self) {
        self.relist_services = Some(HashSet::new());
    }

    /// Services not listed again were deleted while the watch was down.
    pub fn relist_services_done(&mut self) {
        if let Some(seen) = self.relist_services.take() {
            let gone: Vec<(Box<str>, Box<str>)> = self
                .namespaces
                .iter()
                .flat_map(|(ns, n)| {
                    n.services
                        .keys()
                        .map(move |s| (Box::<str>::from(&**ns), Box::<str>::from(&**s)))
                })
                .filter(|(ns, name)| !seen.contains(&key_hash(ns, name)))
                .collect();
            for (ns, name) in gone {
                self.remove_service(&ns, &name);
            }
        }
        self.services_synced = true;
    }

    pub fn relist_slices_started(&mut self) {
        self.relist_slices = Some(HashSet::new());
    }

    pub fn relist_slices_done(&mut self) {
        if let Some(seen) = self.relist_slices.take() {
            let gone: Vec<(Box<str>, Box<str>)> = self
                .namespaces
                .iter()
                .flat_map(|(ns, n)| {
                    n.slices
                        .keys()
                        .map(move |s| (Box::<str>::from(&**ns), s.clone()))
                })
                .filter(|(ns, name)| !seen.contains(&key_hash(ns, name)))
                .collect();
            for (ns, name) in gone {
                self.remove_slice(&ns, &name);
            }
        }
        self.slices_synced = true;
    }

    fn nxdomain(&self) -> Answer {
        Answer::NxDomain(self.soa.clone())
    }

    fn nodata(&self) -> Answer {
        Answer::NoData(self.soa.clone())
    }

    /// `<labels>.<zone>` as a name.
    fn name_in_zone(&self, labels: &[&str]) -> Option<Name> {
        Name::from_labels(labels.iter().map(|l| l.as_bytes()))
            .and_then(|n| n.append_domain(&self.domain))
            .ok()
    }

    /// The ready endpoints of headless Service `ns/svc`, each address once, with the
    /// slice they are listed in.
    fn endpoints_of<'a>(
        &'a self,
        n: &'a Namespace,
        svc: &str,
    ) -> Vec<(EndpointEntry<'a>, &'a SliceEntry)> {
        let mut out: Vec<(EndpointEntry<'a>, &'a SliceEntry)> = Vec::new();
        for slice in n.slices.values().filter(|s| &*s.service == svc) {
            for ep in slice.endpoints() {
                if !out.iter().any(|(e, _)| e.ip == ep.ip) {
                    out.push((ep, slice));
                }
            }
        }
        out.sort_by_key(|(e, _)| e.ip);
        out
    }

    /// The first label of an endpoint's name: its hostname, else its dashed address.
    fn endpoint_label(ep: &EndpointEntry<'_>) -> String {
        ep.hostname.map_or_else(|| dashed(ep.ip), str::to_string)
    }

    /// Answers `qtype` for `qname`.
    pub fn answer(&self, qname: &Name, qtype: RecordType) -> Answer {
        if let Some(rel) = self.relative_labels(qname) {
            // Names are matched lower-case; most queries already are (no copy then).
            let lowered: SmallVec<[std::borrow::Cow<'_, str>; 6]> = rel
                .iter()
                .map(|l| match label_str(l) {
                    Some(t) if !t.bytes().any(|b| b.is_ascii_uppercase()) => {
                        Some(std::borrow::Cow::Borrowed(t))
                    }
                    Some(t) => Some(std::borrow::Cow::Owned(t.to_ascii_lowercase())),
                    None => None,
                })
                .collect::<Option<_>>()
                .unwrap_or_default();
            if lowered.len() != rel.len() {
                return self.nxdomain();
            }
            let labels: SmallVec<[&str; 6]> = lowered.iter().map(|l| &**l).collect();
            return self.answer_in_zone(qname, qtype, &labels);
        }
        if qtype == RecordType::PTR || qtype == RecordType::ANY {
            if let Some(answer) = self.answer_reverse(qname) {
                return answer;
            }
        }
        Answer::NotOurs
    }

    fn answer_in_zone(&self, qname: &Name, qtype: RecordType, labels: &[&str]) -> Answer {
        match labels {
            [] => match qtype {
                RecordType::SOA => Answer::Records {
                    answers: vec![self.soa.clone()],
                    additionals: Vec::new(),
                },
                _ => self.nodata(),
            },
            ["dns-version"] => match qtype {
                RecordType::TXT => Answer::Records {
                    answers: vec![record(
                        qname.clone(),
                        RData::TXT(TXT::new(vec![SCHEMA_VERSION.to_string()])),
                    )],
                    additionals: Vec::new(),
                },
                _ => self.nodata(),
            },
            ["svc"] | ["pod"] => self.nodata(),
            [ns, "svc"] => {
                if self.namespaces.contains_key(*ns) {
                    self.nodata()
                } else {
                    self.nxdomain()
                }
            }
            [svc, ns, "svc"] => self.answer_service(qname, qtype, ns, svc),
            [host, svc, ns, "svc"] => self.answer_endpoint(qname, qtype, ns, svc, host),
            [port, proto, svc, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
                self.answer_srv(qname, qtype, ns, svc, &port[1..], proto)
            }
            [ip, _ns, "pod"] => match undashed(ip) {
                Some(ip) if wants(qtype, ip) => Answer::Records {
                    answers: vec![address_record(qname.clone(), ip)],
                    additionals: Vec::new(),
                },
                Some(_) => self.nodata(),
                None => self.nxdomain(),
            },
            _ => self.nxdomain(),
        }
    }

    fn service(&self, ns: &str, svc: &str) -> Option<(&Namespace, &ServiceEntry)> {
        let n = self.namespaces.get(ns)?;
        Some((n, n.services.get(svc)?))
    }

    fn answer_service(&self, qname: &Name, qtype: RecordType, ns: &str, svc: &str) -> Answer {
        let Some((n, entry)) = self.service(ns, svc) else {
            return self.nxdomain();
        };
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        match &entry.kind {
            Kind::ExternalName(target) => {
                let cname = record(qname.clone(), RData::CNAME(CNAME((**target).clone())));
                if qtype == RecordType::CNAME {
                    answers.push(cname);
                } else {
                    return Answer::Alias {
                        cname,
                        target: (**target).clone(),
                    };
                }
            }
            Kind::ClusterIp(ips) => {
                if qtype == RecordType::SRV {
                    for port in entry.ports.iter().filter(|p| !p.name.is_empty()) {
                        answers.push(record(
                            qname.clone(),
                            RData::SRV(SRV::new(0, 100, port.port, qname.clone())),
                        ));
                    }
                    if !answers.is_empty() {
                        additionals.extend(ips.iter().map(|ip| address_record(qname.clone(), *ip)));
                    }
                } else {
                    answers.extend(
                        ips.iter()
                            .filter(|ip| wants(qtype, **ip))
                            .map(|ip| address_record(qname.clone(), *ip)),
                    );
                }
            }
            Kind::Headless => {
                let eps = self.endpoints_of(n, svc);
                if qtype == RecordType::SRV {
                    for (ep, slice) in &eps {
                        let Some(target) = self.endpoint_name(ns, svc, ep) else {
                            continue;
                        };
                        for port in slice.ports.iter().filter(|p| !p.name.is_empty()) {
                            answers.push(record(
                                qname.clone(),
                                RData::SRV(SRV::new(
                                    0,
                                    srv_weight(eps.len()),
                                    port.port,
                                    target.clone(),
                                )),
                            ));
                        }
                        additionals.push(address_record(target, ep.ip));
                    }
                } else {
                    answers.extend(
                        eps.iter()
                            .filter(|(ep, _)| wants(qtype, ep.ip))
                            .map(|(ep, _)| address_record(qname.clone(), ep.ip)),
                    );
                }
            }
        }
        if answers.is_empty() {
            return self.nodata();
        }
        Answer::Records {
            answers,
            additionals,
        }
    }

    fn endpoint_name(&self, ns: &str, svc: &str, ep: &EndpointEntry<'_>) -> Option<Name> {
        self.name_in_zone(&[&Self::endpoint_label(ep), svc, ns, "svc"])
    }

    fn answer_endpoint(
        &self,
        qname: &Name,
        qtype: RecordType,
        ns: &str,
        svc: &str,
        host: &str,
    ) -> Answer {
        let Some((n, entry)) = self.service(ns, svc) else {
            return self.nxdomain();
        };
        if entry.kind != Kind::Headless {
            return self.nxdomain();
        }
        let matching: Vec<IpAddr> = self
            .endpoints_of(n, svc)
            .into_iter()
            .filter(|(ep, _)| Self::endpoint_label(ep) == host)
            .map(|(ep, _)| ep.ip)
            .collect();
        if matching.is_empty() {
            return self.nxdomain();
        }
        let answers: Vec<Record> = matching
            .into_iter()
            .filter(|ip| wants(qtype, *ip))
            .map(|ip| address_record(qname.clone(), ip))
            .collect();
        if answers.is_empty() {
            return self.nodata();
        }
        Answer::Records {
            answers,
            additionals: Vec::new(),
        }
    }

    fn answer_srv(
        &self,
        qname: &Name,
        qtype: RecordType,
        ns: &str,
        svc: &str,
        port_name: &str,
        proto: &str,
    ) -> Answer {
        let Some((n, entry)) = self.service(ns, svc) else {
            return self.nxdomain();
        };
        let Some(port) = entry.ports.iter().find(|p| {
            !p.name.is_empty()
                && p.name.as_str() == port_name
                && p.protocol.label() == proto.as_bytes()
        }) else {
            return self.nxdomain();
        };
        if !matches!(qtype, RecordType::SRV | RecordType::ANY) {
            return self.nodata();
        }
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        match &entry.kind {
            Kind::ClusterIp(ips) => {
                let Some(target) = self.name_in_zone(&[svc, ns, "svc"]) else {
                    return self.nxdomain();
                };
                answers.push(record(
                    qname.clone(),
                    RData::SRV(SRV::new(0, 100, port.port, target.clone())),
                ));
                additionals.extend(ips.iter().map(|ip| address_record(target.clone(), *ip)));
            }
            Kind::Headless => {
                let eps = self.endpoints_of(n, svc);
                for (ep, slice) in &eps {
                    let Some(ep_port) = slice
                        .ports
                        .iter()
                        .find(|p| p.name == port.name && p.protocol == port.protocol)
                    else {
                        continue;
                    };
                    let Some(target) = self.endpoint_name(ns, svc, ep) else {
                        continue;
                    };
                    answers.push(record(
                        qname.clone(),
                        RData::SRV(SRV::new(
                            0,
                            srv_weight(eps.len()),
                            ep_port.port,
                            target.clone(),
                        )),
                    ));
                    additionals.push(address_record(target, ep.ip));
                }
            }
            Kind::ExternalName(_) => return self.nodata(),
        }
        if answers.is_empty() {
            return self.nodata();
        }
        Answer::Records {
            answers,
            additionals,
        }
    }

    /// PTR for a ClusterIP or a headless endpoint; None when the address is not ours.
    fn answer_reverse(&self, qname: &Name) -> Option<Answer> {
        let net = qname.parse_arpa_name().ok()?;
        let full = match net.addr() {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if net.prefix_len() != full {
            return None;
        }
        let ip = net.addr();
        let owners = self.reverse.get(&ip)?;
        let mut answers = Vec::new();
        for owner in owners {
            let Some(n) = self.namespaces.get(&owner.ns) else {
                continue;
            };
            let target = match n.services.get(&owner.service).map(|s| &s.kind) {
                Some(Kind::ClusterIp(_)) => self.name_in_zone(&[&owner.service, &owner.ns, "svc"]),
                Some(Kind::Headless) => self
                    .endpoints_of(n, &owner.service)
                    .into_iter()
                    .find(|(ep, _)| ep.ip == ip)
                    .and_then(|(ep, _)| self.endpoint_name(&owner.ns, &owner.service, &ep)),
                _ => None,
            };
            if let Some(target) = target {
                let rec = record(qname.clone(), RData::PTR(PTR(target)));
                if !answers.contains(&rec) {
                    answers.push(rec);
                }
            }
        }
        if answers.is_empty() {
            return None;
        }
        Some(Answer::Records {
            answers,
            additionals: Vec::new(),
        })
    }
}

/// Equal weights summing to about 100 (as CoreDNS spreads them).
fn srv_weight(n: usize) -> u16 {
    u16::try_from(100 / n.max(1)).unwrap_or(100).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(yaml: &str) -> Service {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn slice(yaml: &str) -> EndpointSlice {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn zone() -> Zone {
        let mut z = Zone::new("cluster.local").unwrap();
        z.apply_service(&svc(
            "metadata: {namespace: ns, name: web}\nspec: {clusterIP: 10.96.0.20, clusterIPs: [10.96.0.20, 'fd00::20'], ports: [{name: http, port: 80}, {port: 81}, {name: dns, port: 53, protocol: UDP}]}",
        ));
        z.apply_service(&svc(
            "metadata: {namespace: ns, name: db}\nspec: {clusterIP: None, ports: [{name: pg, port: 5432}]}",
        ));
        z.apply_slice(&slice(
            "metadata: {namespace: ns, name: db-a, labels: {kubernetes.io/service-name: db}}\n\
             addressType: IPv4\nports: [{name: pg, port: 15432}]\n\
             endpoints: [{addresses: [10.244.0.5], hostname: db-0}, {addresses: [10.244.0.6], conditions: {ready: false}}, {addresses: [10.244.0.7]}]",
        ));
        z.apply_service(&svc(
            "metadata: {namespace: ns, name: ext}\nspec: {type: ExternalName, externalName: example.org}",
        ));
        z
    }

    fn addresses(answer: &Answer) -> Vec<String> {
        match answer {
            Answer::Records { answers, .. } => {
                answers.iter().map(|r| r.data().to_string()).collect()
            }
            other => panic!("not records: {other:?}"),
        }
    }

    #[test]
    fn cluster_ip_services_answer_a_and_aaaa_with_ttl_5() {
        let z = zone();
        let a = z.answer(&name("Web.NS.svc.cluster.local."), RecordType::A);
        assert_eq!(addresses(&a), ["10.96.0.20"]);
        if let Answer::Records { answers, .. } = &a {
            assert_eq!(answers[0].ttl(), TTL);
            assert_eq!(
                answers[0].name(),
                &name("Web.NS.svc.cluster.local."),
                "the query's case is kept"
            );
        }
        let aaaa = z.answer(&name("web.ns.svc.cluster.local."), RecordType::AAAA);
        assert_eq!(addresses(&aaaa), ["fd00::20"]);
        assert!(matches!(
            z.answer(&name("web.ns.svc.cluster.local."), RecordType::MX),
            Answer::NoData(_)
        ));
    }

    #[test]
    fn headless_services_answer_every_ready_endpoint_and_endpoint_names() {
        let z = zone();
        let a = z.answer(&name("db.ns.svc.cluster.local."), RecordType::A);
        assert_eq!(addresses(&a), ["10.244.0.5", "10.244.0.7"]);
        let one = z.answer(&name("db-0.db.ns.svc.cluster.local."), RecordType::A);
        assert_eq!(addresses(&one), ["10.244.0.5"]);
        let dashed = z.answer(&name("10-244-0-7.db.ns.svc.cluster.local."), RecordType::A);
        assert_eq!(addresses(&dashed), ["10.244.0.7"]);
        assert!(matches!(
            z.answer(&name("10-244-0-6.db.ns.svc.cluster.local."), RecordType::A),
            Answer::NxDomain(_)
        ));
        // Endpoint names exist only for headless Services.
        assert!(matches!(
            z.answer(&name("x.web.ns.svc.cluster.local."), RecordType::A),
            Answer::NxDomain(_)
        ));
    }

    #[test]
    fn srv_for_named_ports() {
        let z = zone();
        let srv = z.answer(
            &name("_http._tcp.web.ns.svc.cluster.local."),
            RecordType::SRV,
        );
        match srv {
            Answer::Records {
                answers,
                additionals,
            } => {
                assert_eq!(answers.len(), 1);
                assert_eq!(
                    answers[0].data().to_string(),
                    "0 100 80 web.ns.svc.cluster.local."
                );
                assert_eq!(additionals.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        let udp = z.answer(
            &name("_dns._udp.web.ns.svc.cluster.local."),
            RecordType::SRV,
        );
        assert_eq!(addresses(&udp), ["0 100 53 web.ns.svc.cluster.local."]);
        assert!(matches!(
            z.answer(
                &name("_dns._tcp.web.ns.svc.cluster.local."),
                RecordType::SRV
            ),
            Answer::NxDomain(_)
        ));
        let headless = z.answer(&name("_pg._tcp.db.ns.svc.cluster.local."), RecordType::SRV);
        assert_eq!(
            addresses(&headless),
            [
                "0 50 15432 db-0.db.ns.svc.cluster.local.",
                "0 50 15432 10-244-0-7.db.ns.svc.cluster.local."
            ]
        );
    }

    #[test]
    fn ptr_for_cluster_ips_and_headless_endpoints_others_are_forwarded() {
        let z = zone();
        let ptr = z.answer(&name("20.0.96.10.in-addr.arpa."), RecordType::PTR);
        assert_eq!(addresses(&ptr), ["web.ns.svc.cluster.local."]);
        let ep = z.answer(&name("5.0.244.10.in-addr.arpa."), RecordType::PTR);
        assert_eq!(addresses(&ep), ["db-0.db.ns.svc.cluster.local."]);
        let v6: IpAddr = "fd00::20".parse().unwrap();
        let IpAddr::V6(v6) = v6 else { unreachable!() };
        let arpa: String = v6
            .octets()
            .iter()
            .rev()
            .map(|b| format!("{:x}.{:x}.", b & 0xf, b >> 4))
            .collect::<String>()
            + "ip6.arpa.";
        assert_eq!(
            addresses(&z.answer(&name(&arpa), RecordType::PTR)),
            ["web.ns.svc.cluster.local."]
        );
        assert_eq!(
            z.answer(&name("1.1.168.192.in-addr.arpa."), RecordType::PTR),
            Answer::NotOurs
        );
    }

    #[test]
    fn external_name_is_a_cname() {
        let z = zone();
        match z.answer(&name("ext.ns.svc.cluster.local."), RecordType::A) {
            Answer::Alias { cname, target } => {
                assert_eq!(target, name("example.org."));
                assert_eq!(cname.data().to_string(), "example.org.");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            addresses(&z.answer(&name("ext.ns.svc.cluster.local."), RecordType::CNAME)),
            ["example.org."]
        );
    }

    #[test]
    fn missing_names_are_nxdomain_with_soa_and_search_paths_never_leave_the_zone() {
        let z = zone();
        for missing in [
            "nope.ns.svc.cluster.local.",
            "web.other.svc.cluster.local.",
            "example.com.ns.svc.cluster.local.",
            "web.ns.svc.cluster.local.ns.svc.cluster.local.",
            "example.com.cluster.local.",
            "other.svc.cluster.local.",
        ] {
            match z.answer(&name(missing), RecordType::A) {
                Answer::NxDomain(soa) => {
                    assert_eq!(soa.record_type(), RecordType::SOA);
                    assert_eq!(soa.name(), &name("cluster.local."));
                }
                other => panic!("{missing}: {other:?}"),
            }
        }
        assert!(matches!(
            z.answer(&name("ns.svc.cluster.local."), RecordType::A),
            Answer::NoData(_)
        ));
        assert_eq!(
            z.answer(&name("example.com."), RecordType::A),
            Answer::NotOurs
        );
        assert_eq!(
            addresses(&z.answer(&name("dns-version.cluster.local."), RecordType::TXT)),
            ["1.1.0"]
        );
        assert_eq!(
            addresses(&z.answer(&name("10-1-2-3.ns.pod.cluster.local."), RecordType::A)),
            ["10.1.2.3"]
        );
    }

    #[test]
    fn deletes_and_relists_remove_names() {
        let mut z = zone();
        z.delete_service(&svc("metadata: {namespace: ns, name: web}"));
        assert!(matches!(
            z.answer(&name("web.ns.svc.cluster.local."), RecordType::A),
            Answer::NxDomain(_)
        ));
        assert_eq!(
            z.answer(&name("20.0.96.10.in-addr.arpa."), RecordType::PTR),
            Answer::NotOurs
        );
        z.relist_slices_started();
        z.relist_slices_done();
        assert!(matches!(
            z.answer(&name("db.ns.svc.cluster.local."), RecordType::A),
            Answer::NoData(_)
        ));
        z.relist_services_started();
        z.relist_services_done();
        assert_eq!(z.service_count(), 0);
        assert!(matches!(
            z.answer(&name("ns.svc.cluster.local."), RecordType::A),
            Answer::NxDomain(_)
        ));
        assert!(z.reverse.is_empty());
    }
}
