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

/// A Service: namespace and name.
pub type ServiceKey = (String, String);

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
    pub services: BTreeMap<ServicePortName, ServicePort>,
    /// Shared with the tracker's slice when one slice makes up the list.
    pub endpoints: BTreeMap<ServicePortName, Arc<[Endpoint]>>,
}

/// The first Service port name of a Service in the model's order.
fn first_port(key: &ServiceKey) -> ServicePortName {
    ServicePortName {
        namespace: key.0.as_str().into(),
        name: key.1.as_str().into(),
        port: "".into(),
        protocol: Protocol::Tcp,
    }
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

struct SliceEntry {
    service: ServiceKey,
    ports: SlicePorts,
}

/// The cache the watch events feed.
pub struct Tracker {
    hostname: String,
    /// Per family (boxed: most Services have one port, a Vec would hold room for four).
    services: HashMap<ServiceKey, [Box<[(ServicePortName, ServicePort)]>; 2]>,
    /// (namespace, slice name) → what it holds.
    slices: HashMap<(String, String), SliceEntry>,
    /// A Service's slice names (one or two as a rule).
    slices_of: HashMap<ServiceKey, Vec<String>>,
    dirty: HashSet<ServiceKey>,
    /// Keys seen during a re-list, per kind; None outside one.
    relist_services: Option<HashSet<ServiceKey>>,
    relist_slices: Option<HashSet<(String, String)>>,
    pub services_synced: bool,
    pub slices_synced: bool,
    /// `endpoints.kubernetes.io/last-change-trigger-time` of slices changed since.
    pub triggers: Vec<jiff::Timestamp>,
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

impl Tracker {
    pub fn new(hostname: &str) -> Tracker {
        Tracker {
            hostname: hostname.to_string(),
            services: HashMap::new(),
            slices: HashMap::new(),
            slices_of: HashMap::new(),
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
        if let Some(seen) = self.relist_services.as_mut() {
            seen.insert(key.clone());
        }
        let ports = FAMILIES.map(|f| service_ports(svc, f).into_boxed_slice());
        if self.services.get(&key) != Some(&ports) {
            self.services.insert(key.clone(), ports);
            self.dirty.insert(key);
        }
    }

    pub fn delete_service(&mut self, svc: &Service) {
        let key = key_of(&svc.metadata);
        if self.services.remove(&key).is_some() {
            self.dirty.insert(key);
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
                .keys()
                .filter(|k| !seen.contains(*k))
                .cloned()
                .collect();
            for key in gone {
                self.services.remove(&key);
                self.dirty.insert(key);
            }
        }
        self.services_synced = true;
    }

    pub fn apply_slice(&mut self, slice: &EndpointSlice) {
        let key = key_of(&slice.metadata);
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
        let service = (key.0.clone(), service.clone());
        let ports: SlicePorts = FAMILIES.map(|f| {
            endpoints_by_service_port(std::iter::once(slice), &self.hostname, f)
                .into_iter()
                .map(|(name, eps)| (name, Arc::from(eps)))
                .collect()
        });
        if let Some(old) = self.slices.get(&key) {
            if old.service == service && old.ports == ports {
                return;
            }
        }
        self.remove_slice(&key);
        let names = self.slices_of.entry(service.clone()).or_default();
        if !names.contains(&key.1) {
            names.push(key.1.clone());
        }
        self.dirty.insert(service.clone());
        self.slices.insert(key, SliceEntry { service, ports });
    }

    pub fn delete_slice(&mut self, slice: &EndpointSlice) {
        self.remove_slice(&key_of(&slice.metadata));
    }

    fn remove_slice(&mut self, key: &(String, String)) {
        if let Some(old) = self.slices.remove(key) {
            if let Some(names) = self.slices_of.get_mut(&old.service) {
                names.retain(|n| *n != key.1);
                if names.is_empty() {
                    self.slices_of.remove(&old.service);
                }
            }
            self.dirty.insert(old.service);
        }
    }

    pub fn relist_slices_started(&mut self) {
        self.relist_slices = Some(HashSet::new());
    }

    pub fn relist_slices_done(&mut self) {
        if let Some(seen) = self.relist_slices.take() {
            let gone: Vec<(String, String)> = self
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
                let Some(ports) = self.services.get(key) else {
                    continue;
                };
                // Endpoints of every slice of the Service, per port: one slice's list as
                // it is (sorted, each address once); several merged, an address listed
                // twice (two slices during a handover) counting once, ready if any is.
                let mut lists: BTreeMap<&ServicePortName, Vec<&Arc<[Endpoint]>>> = BTreeMap::new();
                for slice in self.slices_of.get(key).into_iter().flatten() {
                    let Some(entry) = self.slices.get(&(key.0.clone(), slice.clone())) else {
                        continue;
                    };
                    for (name, eps) in &entry.ports[i] {
                        lists.entry(name).or_default().push(eps);
                    }
                }
                for (name, port) in &ports[i] {
                    model.services.insert(name.clone(), port.clone());
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
                                        if ep.ready && !e.ready {
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
        assert!(web.iter().all(|e| e.ready), "{web:?}");
        assert!(web[0].is_local && !web[1].is_local);
        assert!(!web[0].on_other_node && web[1].on_other_node);
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
        assert_eq!(
            dirty,
            HashSet::from([("ns".to_string(), "web".to_string())])
        );
        let v4 = Tracker::model(&models, IpFamily::V4);
        let web: Vec<&Endpoint> = v4.endpoints.values().flat_map(|e| e.iter()).collect();
        assert!(!web[1].ready, "only the unready copy is left: {web:?}");

        // A deleted Service leaves the model.
        t.delete_service(&svc("metadata: {namespace: ns, name: web}"));
        t.flush(&mut models);
        let v4 = Tracker::model(&models, IpFamily::V4);
        assert_eq!(v4.services.len(), 1);
        assert!(v4.endpoints.is_empty());
    }
}
