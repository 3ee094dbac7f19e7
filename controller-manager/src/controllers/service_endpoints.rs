//! What the endpoint, endpointslice and endpointslicemirroring controllers share: which
//! pods back a Service and how a pod's address, ports and conditions are read
//! (upstream's `k8s.io/endpointslice/util` and `pkg/api/v1/pod`), the last-change trigger
//! time, and the trackers that tell a stale informer cache from a settled one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Service, ServicePort};

use crate::cache::{Owned, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use parking_lot::Mutex;

/// The Service an EndpointSlice belongs to.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Which controller manages an EndpointSlice.
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// On Endpoints and EndpointSlices of a Service without a cluster IP.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// Endpoints the mirroring controller leaves alone.
pub const LABEL_SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";
/// When the change that this write reflects happened (pod readiness, service creation).
pub const ANNOTATION_LAST_CHANGE_TRIGGER_TIME: &str =
    "endpoints.kubernetes.io/last-change-trigger-time";
/// Set to `truncated` on Endpoints cut down to [`MAX_ENDPOINTS_CAPACITY`] addresses.
pub const ANNOTATION_OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";
/// Endpoints used as a leader-election lock by old components: never managed.
pub const ANNOTATION_LEADER: &str = "control-plane.alpha.kubernetes.io/leader";
pub const ANNOTATION_LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A Service's selector as the controllers read it: a Service without one (or with an
/// empty one, which upstream's storage turns into none) gets its endpoints out of band.
pub fn selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    svc.spec
        .as_ref()?
        .selector
        .as_ref()
        .filter(|s| !s.is_empty())
}

pub fn is_external_name(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("ExternalName")
}

pub fn cluster_ip(svc: &Service) -> Option<&str> {
    svc.spec.as_ref()?.cluster_ip.as_deref()
}

/// Upstream's `IsServiceIPSet`: a cluster IP that is neither empty nor `None`.
pub fn is_service_ip_set(svc: &Service) -> bool {
    cluster_ip(svc).is_some_and(|ip| !ip.is_empty() && ip != "None")
}

pub fn is_headless(svc: &Service) -> bool {
    cluster_ip(svc) == Some("None")
}

pub fn service_ports(svc: &Service) -> &[ServicePort] {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_deref())
        .unwrap_or_default()
}

pub fn publish_not_ready(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

fn matches(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The pods in the Service's namespace its selector picks, sorted by name.
pub fn selected_pods(svc: &Service, pods: &Store<Pod>) -> Vec<Arc<Pod>> {
    let Some(sel) = selector(svc) else {
        return Vec::new();
    };
    let ns = svc.namespace();
    let mut out: Vec<Arc<Pod>> = pods
        .state()
        .into_iter()
        .filter(|p| p.namespace() == ns && matches(sel, p.labels()))
        .collect();
    out.sort_by_key(|p| p.name_any());
    out
}

/// Which Services a pod event concerns: those selecting the pod now and those that
/// selected it the last time it was seen (its labels may have changed, and the event
/// carries only the new state).
pub struct PodServices {
    services: Store<Service>,
    pods: Store<Pod>,
    last: Mutex<HashMap<ObjectRef<Pod>, Vec<ObjectRef<Service>>>>,
}

impl PodServices {
    pub fn new(services: Store<Service>, pods: Store<Pod>) -> PodServices {
        PodServices {
            services,
            pods,
            last: Mutex::new(HashMap::new()),
        }
    }

    pub fn services_for(&self, pod: &Pod) -> Vec<ObjectRef<Service>> {
        let ns = pod.namespace();
        let now: Vec<ObjectRef<Service>> = self
            .services
            .state()
            .iter()
            .filter(|s| s.namespace() == ns)
            .filter(|s| selector(s).is_some_and(|sel| matches(sel, pod.labels())))
            .map(|s| ObjectRef::from_obj(&**s))
            .collect();
        let key = ObjectRef::from_obj(pod);
        let mut last = self.last.lock();
        // The store is updated before subscribers hear of a change: a pod missing from it
        // has been deleted, and needs no memory of its Services; nor does a pod of no
        // Service (most pods of a homelab: remembering them cost ~200 bytes each).
        let previous = if self.pods.get(&key).is_some() && !now.is_empty() {
            last.insert(key, now.clone())
        } else {
            last.remove(&key)
        };
        let mut all = now;
        for s in previous.into_iter().flatten() {
            if !all.contains(&s) {
                all.push(s);
            }
        }
        all
    }
}

/// The pod's IPs, `status.podIPs` or else `status.podIP`.
pub fn pod_ips(pod: &Pod) -> Vec<String> {
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    let ips: Vec<String> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|ip| ip.ip.clone())
        .filter(|ip| !ip.is_empty())
        .collect();
    if !ips.is_empty() {
        return ips;
    }
    status
        .pod_ip
        .iter()
        .filter(|ip| !ip.is_empty())
        .cloned()
        .collect()
}

pub fn is_ipv6(ip: &str) -> bool {
    ip.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_ipv6())
}

/// Upstream's `ShouldPodBeInEndpoints`: not terminal, has an IP, and (unless terminating
/// pods are wanted) not being deleted.
pub fn should_pod_be_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return false;
    }
    if pod_ips(pod).is_empty() {
        return false;
    }
    include_terminating || pod.metadata.deletion_timestamp.is_none()
}

fn ready_condition(pod: &Pod) -> Option<&crate::cache::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

pub fn is_pod_ready(pod: &Pod) -> bool {
    ready_condition(pod).is_some_and(|c| c.status == "True")
}

pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Upstream's `FindPort`: a named target port is looked up among the pod's container
/// ports of the same protocol; a number is taken as is.
pub fn find_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    match port.target_port.as_ref() {
        None => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse::<i32>() {
                return Some(n);
            }
            let protocol = port.protocol.as_deref().unwrap_or("TCP");
            pod.spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

/// Upstream's `ShouldSetHostname`: the pod names this Service as its subdomain.
pub fn should_set_hostname(pod: &Pod, svc: &Service) -> bool {
    let spec = pod.spec.as_ref();
    spec.and_then(|s| s.hostname.as_deref())
        .is_some_and(|h| !h.is_empty())
        && spec.and_then(|s| s.subdomain.as_deref()) == svc.metadata.name.as_deref()
        && pod.namespace() == svc.namespace()
}

pub fn pod_hostname(pod: &Pod) -> Option<String> {
    pod.spec.as_ref()?.hostname.clone()
}

pub fn node_name(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()?
        .node_name
        .as_deref()
        .filter(|n| !n.is_empty())
        .map(String::from)
}

/// Whether `obj`'s controller ownerReference points at `owner` (by uid).
pub fn owned_by<K: Owned + ?Sized, O: Resource>(obj: &K, owner: &O) -> bool {
    let uid = owner.meta().uid.as_deref();
    obj.owners()
        .iter()
        .any(|r| r.controller == Some(true) && Some(r.uid.as_str()) == uid)
}

/// Upstream's `TriggerTimeTracker`: the earliest change (a pod's readiness transition,
/// or the Service's creation) not yet reflected in a write for the Service. None when
/// nothing changed since the last computation.
#[derive(Default)]
pub struct TriggerTimeTracker {
    state: Mutex<HashMap<(String, String), TriggerState>>,
}

#[derive(Default)]
struct TriggerState {
    service: Option<jiff::Timestamp>,
    pods: HashMap<String, Option<jiff::Timestamp>>,
}

impl TriggerTimeTracker {
    pub fn compute(&self, svc: &Service, pods: &[Arc<Pod>]) -> Option<jiff::Timestamp> {
        let key = (svc.namespace().unwrap_or_default(), svc.name_any());
        let mut all = self.state.lock();
        let first = !all.contains_key(&key);
        let state = all.entry(key).or_default();
        let mut min: Option<jiff::Timestamp> = None;
        let mut note = |t: Option<jiff::Timestamp>| {
            if let Some(t) = t {
                min = Some(min.map_or(t, |m| m.min(t)));
            }
        };
        let mut pod_times = HashMap::with_capacity(pods.len());
        for pod in pods {
            let current = ready_condition(pod)
                .and_then(|c| c.last_transition_time.as_ref())
                .map(|t| t.0);
            let changed = match state.pods.get(&pod.name_any()) {
                None => true,
                Some(last) => current > *last,
            };
            if changed {
                note(current);
            }
            pod_times.insert(pod.name_any(), current);
        }
        state.pods = pod_times;
        let svc_time = svc.metadata.creation_timestamp.as_ref().map(|t| t.0);
        if first || svc_time > state.service {
            note(svc_time);
        }
        state.service = svc_time;
        min
    }

    pub fn forget(&self, namespace: &str, name: &str) {
        self.state
            .lock()
            .remove(&(namespace.to_string(), name.to_string()));
    }
}

/// Formats a trigger time as upstream does (RFC 3339 with nanoseconds, UTC).
pub fn format_trigger_time(t: jiff::Timestamp) -> String {
    t.to_string()
}

/// Upstream's `EndpointSliceTracker`: the generation this process last wrote for each
/// EndpointSlice of a Service, and the slices it deleted, so that a reconcile against a
/// cache that has not caught up with its own writes waits instead of creating twice.
#[derive(Default)]
pub struct SliceTracker {
    by_service: Mutex<HashMap<(String, String), HashMap<String, Expect>>>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    Generation(i64),
    Deleted,
}

impl SliceTracker {
    fn key(slice: &EndpointSlice) -> Option<(String, String)> {
        Some((
            slice.namespace()?,
            slice.labels().get(LABEL_SERVICE_NAME)?.clone(),
        ))
    }

    /// A slice this process created or updated (the server's answer).
    pub fn written(&self, slice: &EndpointSlice) {
        let (Some(key), Some(uid)) = (Self::key(slice), slice.uid()) else {
            return;
        };
        let generation = slice.metadata.generation.unwrap_or(0);
        self.by_service
            .lock()
            .entry(key)
            .or_default()
            .insert(uid, Expect::Generation(generation));
    }

    pub fn deleted(&self, slice: &EndpointSlice) {
        let (Some(key), Some(uid)) = (Self::key(slice), slice.uid()) else {
            return;
        };
        self.by_service
            .lock()
            .entry(key)
            .or_default()
            .insert(uid, Expect::Deleted);
    }

    /// The informer saw the slice go: nothing more to expect of it.
    pub fn gone(&self, slice: &EndpointSlice) {
        let (Some(key), Some(uid)) = (Self::key(slice), slice.uid()) else {
            return;
        };
        let mut all = self.by_service.lock();
        if let Some(m) = all.get_mut(&key) {
            m.remove(&uid);
            if m.is_empty() {
                all.remove(&key);
            }
        }
    }

    pub fn forget_service(&self, namespace: &str, name: &str) {
        self.by_service
            .lock()
            .remove(&(namespace.to_string(), name.to_string()));
    }

    /// Whether `cached` (the Service's slices in the cache) lags behind this process's
    /// own writes.
    pub fn stale(&self, namespace: &str, name: &str, cached: &[Arc<EndpointSlice>]) -> bool {
        let all = self.by_service.lock();
        let Some(expected) = all.get(&(namespace.to_string(), name.to_string())) else {
            return false;
        };
        let mut seen = HashSet::new();
        for slice in cached {
            let Some(uid) = slice.metadata.uid.as_deref() else {
                continue;
            };
            seen.insert(uid);
            match expected.get(uid) {
                Some(Expect::Deleted) => return true,
                Some(Expect::Generation(g)) if *g > slice.metadata.generation.unwrap_or(0) => {
                    return true
                }
                _ => {}
            }
        }
        expected
            .iter()
            .any(|(uid, e)| matches!(e, Expect::Generation(_)) && !seen.contains(uid.as_str()))
    }
}

/// What an EndpointSlice event means for the tracker: a slice gone from the store has
/// been deleted (the store is updated before subscribers hear of a change).
pub fn observe_slice(tracker: &SliceTracker, store: &Store<EndpointSlice>, slice: &EndpointSlice) {
    if store.get(&ObjectRef::from_obj(slice)).is_none() {
        tracker.gone(slice);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn named_target_ports_resolve_per_pod_and_protocol() {
        let p = pod(json!({"metadata": {"name": "a"}, "spec": {"containers": [
            {"name": "c", "ports": [
                {"name": "http", "containerPort": 8080},
                {"name": "dns", "containerPort": 5353, "protocol": "UDP"}]}]}}));
        let sp = |v| serde_json::from_value::<ServicePort>(v).unwrap();
        assert_eq!(
            find_port(&p, &sp(json!({"port": 80, "targetPort": "http"}))),
            Some(8080)
        );
        assert_eq!(
            find_port(
                &p,
                &sp(json!({"port": 53, "targetPort": "dns", "protocol": "UDP"}))
            ),
            Some(5353)
        );
        assert_eq!(
            find_port(&p, &sp(json!({"port": 53, "targetPort": "dns"}))),
            None
        );
        assert_eq!(
            find_port(&p, &sp(json!({"port": 80, "targetPort": 9000}))),
            Some(9000)
        );
        assert_eq!(find_port(&p, &sp(json!({"port": 80}))), Some(80));
    }

    #[test]
    fn terminal_and_unaddressed_pods_are_left_out() {
        let running = pod(json!({"metadata": {"name": "a"},
            "status": {"phase": "Running", "podIP": "10.0.0.1"}}));
        assert!(should_pod_be_in_endpoints(&running, false));
        let done = pod(json!({"metadata": {"name": "a"},
            "status": {"phase": "Succeeded", "podIP": "10.0.0.1"}}));
        assert!(!should_pod_be_in_endpoints(&done, true));
        let no_ip = pod(json!({"metadata": {"name": "a"}, "status": {"phase": "Running"}}));
        assert!(!should_pod_be_in_endpoints(&no_ip, true));
        let deleting = pod(json!({"metadata": {"name": "a",
            "deletionTimestamp": "2024-01-01T00:00:00Z"},
            "status": {"phase": "Running", "podIP": "10.0.0.1"}}));
        assert!(!should_pod_be_in_endpoints(&deleting, false));
        assert!(should_pod_be_in_endpoints(&deleting, true));
    }

    #[test]
    fn trigger_time_is_the_earliest_unreflected_change() {
        let tracker = TriggerTimeTracker::default();
        let svc: Service = serde_json::from_value(json!({"metadata": {"name": "s",
            "namespace": "d", "creationTimestamp": "2024-01-01T00:00:00Z"}}))
        .unwrap();
        let ready_at = |t: &str| {
            Arc::new(pod(json!({"metadata": {"name": "p", "namespace": "d"},
                "status": {"conditions": [{"type": "Ready", "status": "True",
                    "lastTransitionTime": t}]}})))
        };
        let first = tracker.compute(&svc, &[ready_at("2024-01-01T00:00:05Z")]);
        assert_eq!(first.unwrap().to_string(), "2024-01-01T00:00:00Z");
        assert_eq!(
            tracker.compute(&svc, &[ready_at("2024-01-01T00:00:05Z")]),
            None
        );
        let later = tracker.compute(&svc, &[ready_at("2024-01-01T00:00:09Z")]);
        assert_eq!(later.unwrap().to_string(), "2024-01-01T00:00:09Z");
    }
}
