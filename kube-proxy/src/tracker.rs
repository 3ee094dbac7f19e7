//! The change trackers (upstream `pkg/proxy/servicechangetracker.go` and
//! `endpointschangetracker.go`): watch events update a compact cache of what each
//! Service and EndpointSlice means to the proxy (not the API objects themselves, so
//! memory stays small at 10,000 Services) and mark their Service dirty; a sync folds
//! only the dirty Services into the per-family model the proxier reads.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::endpoints::{endpoints_by_service_port, Endpoint, SERVICE_NAME_LABEL};
use crate::service::{service_ports, IpFamily, Protocol, ServicePort, ServicePortName};

/// A Service: namespace and name (shared strings: the tracker's copies).
pub type ServiceKey = (Arc<str>, Arc<str>);

/// An EndpointSlice: namespace and name.
type SliceKey = (Arc<str>, Arc<str>);

const FAMILIES: [IpFamily; 2] = [IpFamily::V4, IpFamily::V6];

fn index(family: IpFamily) -> usize {
    match family {
        IpFamily::V4 => 0,
        IpFamily::V6 => 1,
    }
}

/// What the proxier of one family reads.
#[derive(Clone, Debug, Default)]
pub struct Model {
    /// Shared with the tracker's Service entry.
    pub services: BTreeMap<ServicePortName, Arc<ServicePort>>,
    /// Shared with the tracker's slice when one slice makes up the list.
    pub endpoints: BTreeMap<ServicePortName, Arc<[Endpoint]>>,
}

/// The first Service port name of a Service in the model's order.
fn first_port(key: &ServiceKey) -> ServicePortName {
    ServicePortName::new(key.0.clone(), key.1.clone(), "", Protocol::Tcp)
}

/// The Service port names of `key` in a map keyed by them.
pub fn ports_of<'a, V>(
    map: &'a BTreeMap<ServicePortName, V>,
    key: &'a ServiceKey,
) -> impl Iterator<Item = (&'a ServicePortName, &'a V)> + 'a {
    map.range(first_port(key)..)
        .take_while(move |(k, _)| *k.namespace == *key.0 && *k.name == *key.1)
}

/// Per family: a slice's endpoints per Service port, sorted by port (a slice names one
/// or two ports: a boxed slice, not a tree map's node, at 10,000 slices).
type SlicePorts = [Box<[(ServicePortName, Arc<[Endpoint]>)]>; 2];

/// Per family: a Service's ports, shared with the model.
type ServicePorts = [Box<[(ServicePortName, Arc<ServicePort>)]>; 2];

struct SliceEntry {
    /// Its Service's name (in the slice's namespace).
    service: Arc<str>,
    ports: SlicePorts,
}

/// A Service and the names of its EndpointSlices; either may be seen first.
#[derive(Default)]
struct ServiceEntry {
    /// Whether the Service itself was seen.
    exists: bool,
    /// Its ports per family (boxed: most Services have one port, a Vec would hold room
    /// for four).
    ports: ServicePorts,
    /// Its slices' names (one or two as a rule), shared with the slices' keys.
    slices: Box<[Arc<str>]>,
}

impl ServiceEntry {
    fn unused(&self) -> bool {
        !self.exists && self.slices.is_empty()
    }
}

/// The cache the watch events feed.
pub struct Tracker {
    hostname: String,
    services: HashMap<ServiceKey, ServiceEntry>,
    /// (namespace, slice name) → what it holds.
    slices: HashMap<SliceKey, SliceEntry>,
    /// The strings of Service port names, once each: a namespace or a port name is
    /// shared by thousands of them, a Service's name by its ports and its slices'.
    names: HashSet<Arc<str>>,
    /// The Service port names, once each: a Service's and its slices' share one.
    port_names: HashSet<ServicePortName>,
    dirty: HashSet<ServiceKey>,
    /// Keys seen during a re-list, per kind; None outside one.
    relist_services: Option<HashSet<ServiceKey>>,
    relist_slices: Option<HashSet<SliceKey>>,
    pub services_synced: bool,
    pub slices_synced: bool,
    /// `endpoints.kubernetes.io/last-change-trigger-time` of slices changed since.
    pub triggers: Vec<jiff::Timestamp>,
}

/// An object's namespace and name, not yet shared.
fn key_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> (Arc<str>, Arc<str>) {
    (
        meta.namespace.as_deref().unwrap_or_default().into(),
        meta.name.as_deref().unwrap_or_default().into(),
    )
}

impl Tracker {
    pub fn new(hostname: &str) -> Tracker {
        Tracker {
            hostname: hostname.to_string(),
            services: HashMap::new(),
            slices: HashMap::new(),
            names: HashSet::new(),
            port_names: HashSet::new(),
            dirty: HashSet::new(),
            relist_services: None,
            relist_slices: None,
            services_synced: false,
            slices_synced: false,
            triggers: Vec::new(),
        }
    }

    pub fn synced(&self) -> bool {
        self.services_synced && self.slices_synced
    }

    pub fn apply_service(&mut self, svc: &Service) {
        let key = key_of(&svc.metadata);
        let key = (self.intern_str(&key.0), self.intern_str(&key.1));
        if let Some(seen) = self.relist_services.as_mut() {
            seen.insert(key.clone());
        }
        let ports = FAMILIES.map(|f| {
            let ports = service_ports(svc, f);
            ports
                .into_iter()
                .map(|(name, port)| (self.intern(&name), Arc::new(port)))
                .collect::<Box<[_]>>()
        });
        let entry = self.services.entry(key.clone()).or_default();
        if !entry.exists || entry.ports != ports {
            entry.exists = true;
            entry.ports = ports;
            self.dirty.insert(key);
        }
    }

    /// The shared copy of `name` (its strings shared too).
    fn intern(&mut self, name: &ServicePortName) -> ServicePortName {
        if let Some(shared) = self.port_names.get(name) {
            return shared.clone();
        }
        let shared = ServicePortName::new(
            self.intern_str(&name.namespace),
            self.intern_str(&name.name),
            self.intern_str(&name.port),
            name.protocol,
        );
        self.port_names.insert(shared.clone());
        shared
    }

    fn intern_str(&mut self, s: &Arc<str>) -> Arc<str> {
        match self.names.get(&**s) {
            Some(shared) => Arc::clone(shared),
            None => {
                self.names.insert(Arc::clone(s));
                Arc::clone(s)
            }
        }
    }

    pub fn delete_service(&mut self, svc: &Service) {
        self.remove_service(key_of(&svc.metadata));
    }

    fn remove_service(&mut self, key: ServiceKey) {
        if let Some(entry) = self.services.get_mut(&key) {
            if entry.exists {
                entry.exists = false;
                entry.ports = Default::default();
                if entry.unused() {
                    self.services.remove(&key);
                }
                self.dirty.insert(key);
            }
        }
    }

    pub fn relist_services_started(&mut self) {
        self.relist_services = Some(HashSet::new());
    }

    /// Services not listed again were deleted while the watch was down.
    pub fn relist_services_done(&mut self) {
        if let Some(seen) = self.relist_services.take() {
            let gone: Vec<ServiceKey> = self
                .services
                .iter()
                .filter(|(k, e)| e.exists && !seen.contains(*k))
                .map(|(k, _)| k.clone())
                .collect();
            for key in gone {
                self.remove_service(key);
            }
        }
        self.services_synced = true;
    }

    pub fn apply_slice(&mut self, slice: &EndpointSlice) {
        let key = key_of(&slice.metadata);
        // The namespace shared; the slice's name shared with its Service's list of slices.
        let key = match self.slices.get_key_value(&key) {
            Some((k, _)) => k.clone(),
            None => (self.intern_str(&key.0), key.1),
        };
        if let Some(seen) = self.relist_slices.as_mut() {
            seen.insert(key.clone());
        }
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            self.remove_slice(&key);
            return;
        };
        if self.slices_synced {
            if let Some(t) = slice
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(crate::app::TRIGGER_TIME_ANNOTATION))
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            {
                self.triggers.push(t);
            }
        }
        let service = self.intern_str(&Arc::from(service.as_str()));
        let ports: SlicePorts = FAMILIES.map(|f| {
            endpoints_by_service_port(std::iter::once(slice), &self.hostname, f)
                .into_iter()
                .map(|(name, eps)| (self.intern(&name), Arc::from(eps)))
                .collect()
        });
        if let Some(old) = self.slices.get(&key) {
            if old.service == service && old.ports == ports {
                return;
            }
        }
        self.remove_slice(&key);
        let service_key = (key.0.clone(), service.clone());
        let entry = self.services.entry(service_key.clone()).or_default();
        if !entry.slices.iter().any(|n| **n == *key.1) {
            let mut names = std::mem::take(&mut entry.slices).into_vec();
            names.push(key.1.clone());
            entry.slices = names.into_boxed_slice();
        }
        self.dirty.insert(service_key);
        self.slices.insert(key, SliceEntry { service, ports });
    }

    pub fn delete_slice(&mut self, slice: &EndpointSlice) {
        self.remove_slice(&key_of(&slice.metadata));
    }

    fn remove_slice(&mut self, key: &SliceKey) {
        if let Some(old) = self.slices.remove(key) {
            let service_key = (key.0.clone(), old.service);
            if let Some(entry) = self.services.get_mut(&service_key) {
                let names: Vec<Arc<str>> = std::mem::take(&mut entry.slices)
                    .into_vec()
                    .into_iter()
                    .filter(|n| **n != *key.1)
                    .collect();
                entry.slices = names.into_boxed_slice();
                if entry.unused() {
                    self.services.remove(&service_key);
                }
            }
            self.dirty.insert(service_key);
        }
    }

    pub fn relist_slices_started(&mut self) {
        self.relist_slices = Some(HashSet::new());
    }

    pub fn relist_slices_done(&mut self) {
        if let Some(seen) = self.relist_slices.take() {
            let gone: Vec<SliceKey> = self
                .slices
                .keys()
                .filter(|k| !seen.contains(*k))
                .cloned()
                .collect();
            for key in gone {
                self.remove_slice(&key);
            }
        }
        self.slices_synced = true;
    }

    /// Folds the dirty Services into `models` (one per family: V4, V6) and returns them.
    pub fn flush(&mut self, models: &mut [Model; 2]) -> HashSet<ServiceKey> {
        let dirty = std::mem::take(&mut self.dirty);
        for key in &dirty {
            for family in FAMILIES {
                let i = index(family);
                let model = &mut models[i];
                let old: Vec<ServicePortName> = ports_of(&model.services, key)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in old {
                    model.services.remove(&k);
                }
                let old: Vec<ServicePortName> = ports_of(&model.endpoints, key)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in old {
                    model.endpoints.remove(&k);
                }
                let Some(entry) = self.services.get(key) else {
                    continue;
                };
                // Endpoints of every slice of the Service, per port: one slice's list as
                // it is (sorted, each address once); several merged, an address listed
                // twice (two slices during a handover) counting once, ready if any is.
                let mut lists: BTreeMap<&ServicePortName, Vec<&Arc<[Endpoint]>>> = BTreeMap::new();
                for slice in &entry.slices {
                    let Some(slice) = self.slices.get(&(key.0.clone(), slice.clone())) else {
                        continue;
                    };
                    for (name, eps) in &slice.ports[i] {
                        lists.entry(name).or_default().push(eps);
                    }
                }
                for (name, port) in &entry.ports[i] {
                    model.services.insert(name.clone(), Arc::clone(port));
                    match lists.get(name).map(Vec::as_slice) {
                        None | Some([]) => {}
                        Some([one]) => {
                            model.endpoints.insert(name.clone(), Arc::clone(one));
                        }
                        Some(several) => {
                            let mut merged: BTreeMap<(IpAddr, u16), &Endpoint> = BTreeMap::new();
                            for ep in several.iter().flat_map(|l| l.iter()) {
                                merged
                                    .entry((ep.ip, ep.port))
                                    .and_modify(|e| {
                                        if ep.ready() && !e.ready() {
                                            *e = ep;
                                        }
                                    })
                                    .or_insert(ep);
                            }
                            model
                                .endpoints
                                .insert(name.clone(), merged.into_values().cloned().collect());
                        }
                    }
                }
            }
        }
        if !dirty.is_empty() {
            // Names and strings no Service port uses any more (the keys of the dirty
            // set returned hold the deleted Services' strings a little longer).
            self.port_names.retain(|n| !n.unshared());
            let mut held: HashMap<*const u8, usize> = HashMap::new();
            for (ns, name) in &dirty {
                for s in [ns, name] {
                    *held.entry(s.as_ptr()).or_default() += 1;
                }
            }
            self.names
                .retain(|s| Arc::strong_count(s) > 1 + held.get(&s.as_ptr()).copied().unwrap_or(0));
        }
        dirty
    }

    /// The model of `family` in `models`.
    pub fn model(models: &[Model; 2], family: IpFamily) -> &Model {
        &models[index(family)]
    }
}

impl crate::feed::Fed<Service> for Tracker {
    fn apply(&mut self, s: &Service) {
        self.apply_service(s);
    }
    fn delete(&mut self, s: &Service) {
        self.delete_service(s);
    }
    fn relist_started(&mut self) {
        self.relist_services_started();
    }
    fn relist_done(&mut self) {
        self.relist_services_done();
    }
}

impl crate::feed::Fed<EndpointSlice> for Tracker {
    fn apply(&mut self, s: &EndpointSlice) {
        self.apply_slice(s);
    }
    fn delete(&mut self, s: &EndpointSlice) {
        self.delete_slice(s);
    }
    fn relist_started(&mut self) {
        self.relist_slices_started();
    }
    fn relist_done(&mut self) {
        self.relist_slices_done();
    }
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

    #[test]
    fn only_dirty_services_are_folded_in_and_slices_merge() {
        let mut t = Tracker::new("node-a");
        let mut models: [Model; 2] = Default::default();
        t.apply_service(&svc(
            "metadata: {namespace: ns, name: web}\nspec: {clusterIP: 10.96.0.1, ports: [{name: http, port: 80}]}",
        ));
        t.apply_service(&svc(
            "metadata: {namespace: ns, name: db}\nspec: {clusterIP: 10.96.0.2, ports: [{port: 5432}]}",
        ));
        t.apply_slice(&slice(
            "metadata: {namespace: ns, name: web-a, labels: {kubernetes.io/service-name: web}}\n\
             addressType: IPv4\nports: [{name: http, port: 8080}]\n\
             endpoints: [{addresses: [10.0.0.1], nodeName: node-a}, {addresses: [10.0.0.2], conditions: {ready: false}}]",
        ));
        t.apply_slice(&slice(
            "metadata: {namespace: ns, name: web-b, labels: {kubernetes.io/service-name: web}}\n\
             addressType: IPv4\nports: [{name: http, port: 8080}]\n\
             endpoints: [{addresses: [10.0.0.2], conditions: {ready: true}, nodeName: node-b}]",
        ));
        let dirty = t.flush(&mut models);
        assert_eq!(dirty.len(), 2);
        let v4 = Tracker::model(&models, IpFamily::V4);
        assert_eq!(v4.services.len(), 2);
        let web: Vec<&Endpoint> = v4.endpoints.values().flat_map(|e| e.iter()).collect();
        assert_eq!(web.len(), 2);
        assert!(web.iter().all(|e| e.ready()), "{web:?}");
        assert!(web[0].is_local() && !web[1].is_local());
        assert!(!web[0].on_other_node() && web[1].on_other_node());
        assert!(Tracker::model(&models, IpFamily::V6).services.is_empty());

        // The same object again changes nothing; a slice going away dirties its Service.
        t.apply_service(&svc(
            "metadata: {namespace: ns, name: db}\nspec: {clusterIP: 10.96.0.2, ports: [{port: 5432}]}",
        ));
        assert!(t.flush(&mut models).is_empty());
        t.relist_slices_started();
        t.apply_slice(&slice(
            "metadata: {namespace: ns, name: web-a, labels: {kubernetes.io/service-name: web}}\n\
             addressType: IPv4\nports: [{name: http, port: 8080}]\n\
             endpoints: [{addresses: [10.0.0.1], nodeName: node-a}, {addresses: [10.0.0.2], conditions: {ready: false}}]",
        ));
        t.relist_slices_done();
        let dirty = t.flush(&mut models);
        assert_eq!(dirty, HashSet::from([("ns".into(), "web".into())]));
        let v4 = Tracker::model(&models, IpFamily::V4);
        let web: Vec<&Endpoint> = v4.endpoints.values().flat_map(|e| e.iter()).collect();
        assert!(!web[1].ready(), "only the unready copy is left: {web:?}");

        // A deleted Service leaves the model.
        t.delete_service(&svc("metadata: {namespace: ns, name: web}"));
        t.flush(&mut models);
        let v4 = Tracker::model(&models, IpFamily::V4);
        assert_eq!(v4.services.len(), 1);
        assert!(v4.endpoints.is_empty());

        // Its slice is still known: the Service coming back finds its endpoints.
        t.apply_service(&svc(
            "metadata: {namespace: ns, name: web}\nspec: {clusterIP: 10.96.0.1, ports: [{name: http, port: 80}]}",
        ));
        t.flush(&mut models);
        let v4 = Tracker::model(&models, IpFamily::V4);
        assert_eq!(v4.endpoints.values().map(|e| e.len()).sum::<usize>(), 2);
    }

    #[test]
    fn a_slice_before_its_service_and_shared_name_strings() {
        let mut t = Tracker::new("node-a");
        let mut models: [Model; 2] = Default::default();
        t.apply_slice(&slice(
            "metadata: {namespace: ns, name: web-a, labels: {kubernetes.io/service-name: web}}\n\
             addressType: IPv4\nports: [{name: http, port: 8080}]\n\
             endpoints: [{addresses: [10.0.0.1]}]",
        ));
        t.flush(&mut models);
        assert!(Tracker::model(&models, IpFamily::V4).services.is_empty());
        t.apply_service(&svc(
            "metadata: {namespace: ns, name: web}\nspec: {clusterIP: 10.96.0.1, ports: [{name: http, port: 80}]}",
        ));
        t.apply_service(&svc(
            "metadata: {namespace: ns, name: db}\nspec: {clusterIP: 10.96.0.2, ports: [{name: http, port: 5432}]}",
        ));
        t.flush(&mut models);
        let v4 = Tracker::model(&models, IpFamily::V4);
        let (web, eps) = v4.endpoints.iter().next().unwrap();
        assert_eq!(eps.len(), 1);
        // The slice's Service port name and the Service's share their strings, and two
        // Services share their namespace and port name.
        let (service_name, _) = v4.services.iter().find(|(n, _)| *n.name == *"web").unwrap();
        assert!(Arc::ptr_eq(&web.name, &service_name.name));
        let (db, _) = v4.services.iter().find(|(n, _)| *n.name == *"db").unwrap();
        assert!(Arc::ptr_eq(&db.namespace, &web.namespace) && Arc::ptr_eq(&db.port, &web.port));

        // Gone slice and gone Service: nothing is left behind.
        t.delete_slice(&slice(
            "metadata: {namespace: ns, name: web-a, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4",
        ));
        t.delete_service(&svc("metadata: {namespace: ns, name: web}"));
        t.delete_service(&svc("metadata: {namespace: ns, name: db}"));
        t.flush(&mut models);
        assert!(t.services.is_empty() && t.slices.is_empty());
        assert!(Tracker::model(&models, IpFamily::V4).services.is_empty());
        assert!(t.names.is_empty(), "{:?}", t.names);
    }
}
