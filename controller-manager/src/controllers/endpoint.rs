//! endpoint: the legacy core/v1 Endpoints object of every Service with a selector
//! (upstream's endpoint-controller): one object named after the Service whose subsets
//! hold the ready (`addresses`) and not-ready (`notReadyAddresses`) pods per port set,
//! cut to [`MAX_CAPACITY`] addresses with the over-capacity annotation. Endpoints whose
//! Service is deleted are deleted too (and, at start, those whose Service went while the
//! controller was down).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Service,
};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;
use parking_lot::Mutex;
use tracing::{debug, warn};

use super::controller_utils::only_uid;
use super::service_endpoints::{self as se, PodServices, TriggerTimeTracker};
use super::Context;
use crate::cache::Pod;
use crate::informers::key;

pub const NAME: &str = "endpoint";
/// Upstream's `maxCapacity`: addresses an Endpoints object holds at most.
pub const MAX_CAPACITY: usize = 1000;
const TRUNCATED: &str = "truncated";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the Endpoints cache of {0} is older than this controller's own update")]
    StaleCache(String),
    #[error("creating Endpoints {endpoints}: {source}")]
    Create {
        endpoints: String,
        #[source]
        source: kube::Error,
    },
    #[error("updating Endpoints {endpoints}: {source}")]
    Update {
        endpoints: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting Endpoints {endpoints} of a deleted Service: {source}")]
    Delete {
        endpoints: String,
        #[source]
        source: kube::Error,
    },
}

struct State {
    ctx: Context,
    pods: Store<Pod>,
    services: Store<Service>,
    endpoints: Store<Endpoints>,
    trigger_times: Arc<TriggerTimeTracker>,
    /// Resource versions this process replaced: seeing one again in the cache means the
    /// cache has not caught up (upstream's staleEndpointsTracker).
    replaced: Mutex<HashMap<ObjectRef<Endpoints>, String>>,
}

pub fn start(ctx: &Context) -> BoxFuture<'static, ()> {
    let services = ctx.informers.subscribe::<Service>();
    let services_for_orphans = ctx.informers.subscribe::<Service>();
    let service_store = ctx.informers.store::<Service>();
    let pods = ctx.informers.subscribe::<Pod>();
    let pod_store = ctx.informers.store::<Pod>();
    let endpoints = ctx.informers.subscribe::<Endpoints>();
    let endpoints_store = ctx.informers.store::<Endpoints>();
    let state = Arc::new(State {
        ctx: ctx.clone(),
        pods: pod_store.clone(),
        services: service_store.clone(),
        endpoints: endpoints_store.clone(),
        trigger_times: Arc::new(TriggerTimeTracker::default()),
        replaced: Mutex::new(HashMap::new()),
    });
    let pod_services = PodServices::new(service_store.clone(), pod_store);
    let trigger_times = state.trigger_times.clone();
    let forget_store = service_store.clone();
    let services = services.inspect(move |svc| {
        if forget_store.get(&ObjectRef::from_obj(&**svc)).is_none() {
            trigger_times.forget(&svc.namespace().unwrap_or_default(), &svc.name_any());
        }
    });
    let config = Config::default()
        .concurrency(ctx.options.concurrent_endpoint_syncs)
        .debounce(ctx.options.endpoint_updates_batch_period);
    let sync = Controller::for_shared_stream(services, service_store.clone())
        .with_config(config.clone())
        .watches_shared_stream(pods, move |pod: Arc<Pod>| pod_services.services_for(&pod))
        .watches_shared_stream(endpoints, |ep: Arc<Endpoints>| {
            Some(ObjectRef::<Service>::new(&ep.name_any()).within(&ep.namespace()?))
        })
        .run(reconcile, error_policy, state.clone())
        .for_each(|_| async {});
    // Endpoints left behind by a deleted Service: checked when a Service changes (its
    // deletion included) and once at start for Services deleted while this was down
    // (upstream's checkLeftoverEndpoints).
    let synced = [
        ctx.informers.synced_signal::<Endpoints>(),
        ctx.informers.synced_signal::<Service>(),
    ];
    let at_start = futures::stream::once(async move {
        for kind in &synced {
            kind.wait().await;
        }
    });
    let orphans = Controller::for_shared_stream(
        futures::stream::pending::<Arc<Endpoints>>(),
        endpoints_store,
    )
    .with_config(config)
    .watches_shared_stream(services_for_orphans, |svc: Arc<Service>| {
        Some(ObjectRef::<Endpoints>::new(&svc.name_any()).within(&svc.namespace()?))
    })
    .reconcile_all_on(at_start)
    .run(reconcile_orphan, orphan_error_policy, state)
    .for_each(|_| async {});
    futures::future::join(sync, orphans).map(|_| ()).boxed()
}

async fn reconcile(svc: Arc<Service>, state: Arc<State>) -> Result<Action, Error> {
    let metrics = state.ctx.metrics.clone();
    metrics.observe(NAME, sync_service(svc, state)).await
}

fn error_policy(_svc: Arc<Service>, error: &Error, _state: Arc<State>) -> Action {
    match error {
        Error::StaleCache(_) => Action::requeue(Duration::from_millis(500)),
        _ => {
            warn!(%error, "syncing Endpoints failed");
            Action::requeue(Duration::from_secs(5))
        }
    }
}

async fn reconcile_orphan(ep: Arc<Endpoints>, state: Arc<State>) -> Result<Action, Error> {
    let metrics = state.ctx.metrics.clone();
    metrics.observe(NAME, delete_if_orphaned(ep, state)).await
}

fn orphan_error_policy(_ep: Arc<Endpoints>, error: &Error, _state: Arc<State>) -> Action {
    warn!(%error, "deleting leftover Endpoints failed");
    Action::requeue(Duration::from_secs(5))
}

async fn delete_if_orphaned(ep: Arc<Endpoints>, state: Arc<State>) -> Result<Action, Error> {
    let ns = ep.namespace().unwrap_or_default();
    let service = ObjectRef::<Service>::new(&ep.name_any()).within(&ns);
    // Old components used Endpoints as leader-election locks: they have no Service.
    if state.services.get(&service).is_some()
        || ep.annotations().contains_key(se::ANNOTATION_LEADER)
    {
        return Ok(Action::await_change());
    }
    let api: Api<Endpoints> = Api::namespaced(state.ctx.client.clone(), &ns);
    let dp = only_uid(ep.uid());
    match api.delete(&ep.name_any(), &dp).await {
        Ok(_) => debug!(endpoints = %key(&*ep), "deleted the Endpoints of a deleted Service"),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(source) => {
            return Err(Error::Delete {
                endpoints: key(&*ep),
                source,
            })
        }
    }
    Ok(Action::await_change())
}

async fn sync_service(svc: Arc<Service>, state: Arc<State>) -> Result<Action, Error> {
    // ExternalName Services and Services without a selector get no Endpoints from here
    // (the latter's come from their users).
    if se::is_external_name(&svc) || se::selector(&svc).is_none() {
        return Ok(Action::await_change());
    }
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let pods = se::selected_pods(&svc, &state.pods);
    let trigger_time = state.trigger_times.compute(&svc, &pods);
    let subsets = desired_subsets(&svc, &pods);
    let ep_ref = ObjectRef::<Endpoints>::new(&name).within(&ns);
    let current = state.endpoints.get(&ep_ref);
    if let Some(cur) = &current {
        let replaced = state.replaced.lock().get(&ep_ref).cloned();
        if replaced.is_some() && replaced == cur.metadata.resource_version {
            return Err(Error::StaleCache(key(&*svc)));
        }
    }
    let Some(new) = next_endpoints(&svc, current.as_deref(), subsets, trigger_time) else {
        return Ok(Action::await_change());
    };
    let api: Api<Endpoints> = Api::namespaced(state.ctx.client.clone(), &ns);
    let endpoints = key(&*svc);
    match &current {
        None => match api.create(&PostParams::default(), &new).await {
            Ok(_) => debug!(%endpoints, "created Endpoints"),
            // The namespace is terminating: creates keep failing, drop the item.
            Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("terminat") => {}
            Err(source) => return Err(Error::Create { endpoints, source }),
        },
        Some(cur) => match api.replace(&name, &PostParams::default(), &new).await {
            Ok(_) => {
                debug!(%endpoints, "updated Endpoints");
                if let Some(rv) = cur.metadata.resource_version.clone() {
                    state.replaced.lock().insert(ep_ref, rv);
                }
            }
            Err(source) => return Err(Error::Update { endpoints, source }),
        },
    }
    Ok(Action::await_change())
}

/// The Endpoints to write, or None when the current object already says it (subsets,
/// labels and capacity annotation; the trigger time alone is no reason to write).
pub fn next_endpoints(
    svc: &Service,
    current: Option<&Endpoints>,
    subsets: Vec<EndpointSubset>,
    trigger_time: Option<jiff::Timestamp>,
) -> Option<Endpoints> {
    let svc_labels = svc.metadata.labels.clone().unwrap_or_default();
    if let Some(cur) = current {
        let mut compare_labels = cur.metadata.labels.clone().unwrap_or_default();
        compare_labels.remove(se::LABEL_HEADLESS);
        let cur_subsets = cur.subsets.clone().unwrap_or_default();
        if normalize(&cur_subsets) == normalize(&subsets)
            && compare_labels == svc_labels
            && capacity_annotation_set_correctly(cur.annotations(), &cur_subsets)
        {
            return None;
        }
    }
    let mut new = match current {
        Some(cur) => cur.clone(),
        None => Endpoints {
            metadata: ObjectMeta {
                name: svc.metadata.name.clone(),
                namespace: svc.metadata.namespace.clone(),
                ..ObjectMeta::default()
            },
            ..Endpoints::default()
        },
    };
    new.metadata.managed_fields = None;
    let mut subsets = subsets;
    let truncated = truncate(&mut subsets);
    new.subsets = (!subsets.is_empty()).then_some(subsets);
    let annotations = new.metadata.annotations.get_or_insert_with(BTreeMap::new);
    match trigger_time {
        Some(t) => {
            annotations.insert(
                se::ANNOTATION_LAST_CHANGE_TRIGGER_TIME.into(),
                se::format_trigger_time(t),
            );
        }
        None => {
            annotations.remove(se::ANNOTATION_LAST_CHANGE_TRIGGER_TIME);
        }
    }
    if truncated {
        annotations.insert(se::ANNOTATION_OVER_CAPACITY.into(), TRUNCATED.into());
    } else {
        annotations.remove(se::ANNOTATION_OVER_CAPACITY);
    }
    if annotations.is_empty() {
        new.metadata.annotations = None;
    }
    let mut labels = svc_labels;
    if se::is_service_ip_set(svc) {
        labels.remove(se::LABEL_HEADLESS);
    } else {
        labels.insert(se::LABEL_HEADLESS.into(), String::new());
    }
    new.metadata.labels = Some(labels);
    Some(new)
}

/// The address of a pod for the Service: the pod IP of the Service's (primary) family
/// (upstream's `podToEndpointAddressForService`).
fn pod_address(svc: &Service, pod: &Pod) -> Option<EndpointAddress> {
    let families = svc.spec.as_ref().and_then(|s| s.ip_families.as_ref());
    let ips = se::pod_ips(pod);
    let want_v6 = match families.and_then(|f| f.first()) {
        Some(family) => family == "IPv6",
        None if se::is_service_ip_set(svc) => se::cluster_ip(svc).is_some_and(se::is_ipv6),
        None => ips.first().is_some_and(|ip| se::is_ipv6(ip)),
    };
    let ip = ips.into_iter().find(|ip| se::is_ipv6(ip) == want_v6)?;
    Some(EndpointAddress {
        ip,
        node_name: se::node_name(pod),
        hostname: se::should_set_hostname(pod, svc)
            .then(|| se::pod_hostname(pod))
            .flatten(),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.namespace(),
            name: Some(pod.name_any()),
            uid: pod.uid(),
            ..ObjectReference::default()
        }),
    })
}

/// The Service's subsets from its pods: ready pods in `addresses`, others (or all, with
/// `publishNotReadyAddresses`) in `notReadyAddresses`; terminating pods only when
/// not-ready addresses are published.
pub fn desired_subsets(svc: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSubset> {
    let publish = se::publish_not_ready(svc);
    let ports = se::service_ports(svc);
    let mut subsets = Vec::new();
    for pod in pods {
        if !se::should_pod_be_in_endpoints(pod, publish) {
            continue;
        }
        let Some(address) = pod_address(svc, pod) else {
            continue;
        };
        let ready = publish || se::is_pod_ready(pod);
        let subset = |port: Option<EndpointPort>| {
            let addresses = Some(vec![address.clone()]);
            EndpointSubset {
                addresses: if ready { addresses.clone() } else { None },
                not_ready_addresses: if ready { None } else { addresses },
                ports: port.map(|p| vec![p]),
            }
        };
        if ports.is_empty() {
            // A headless Service may have no ports.
            if se::is_headless(svc) {
                subsets.push(subset(None));
            }
            continue;
        }
        for sp in ports {
            let Some(port) = se::find_port(pod, sp) else {
                continue;
            };
            subsets.push(subset(Some(EndpointPort {
                name: sp.name.clone(),
                port,
                protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: sp.app_protocol.clone(),
            })));
        }
    }
    repack_subsets(&subsets)
}

type PortKey = (String, i32, String, Option<String>);
type AddressKey = (String, String);
/// A port (None: the no-ports sentinel) and the readiness of each address serving it.
type PortAddresses = (Option<EndpointPort>, BTreeMap<AddressKey, bool>);

fn port_key(p: &EndpointPort) -> PortKey {
    (
        p.name.clone().unwrap_or_default(),
        p.port,
        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
        p.app_protocol.clone(),
    )
}

fn address_key(a: &EndpointAddress) -> AddressKey {
    let uid = a.target_ref.as_ref().and_then(|t| t.uid.clone());
    (a.ip.clone(), uid.unwrap_or_default())
}

/// Upstream's `RepackSubsets`: one subset per distinct set of (address, readiness)
/// sharing the same ports, with not-ready winning over ready for an address on a port;
/// sorted, so equal contents compare equal.
pub fn repack_subsets(subsets: &[EndpointSubset]) -> Vec<EndpointSubset> {
    let mut all: BTreeMap<AddressKey, EndpointAddress> = BTreeMap::new();
    // Port (None: the no-ports sentinel) → address → ready.
    let mut by_port: BTreeMap<Option<PortKey>, PortAddresses> = BTreeMap::new();
    for s in subsets {
        let ports: Vec<Option<&EndpointPort>> = match s.ports.as_deref() {
            Some(p) if !p.is_empty() => p.iter().map(Some).collect(),
            _ => vec![None],
        };
        for port in ports {
            let entry = by_port
                .entry(port.map(port_key))
                .or_insert_with(|| (port.cloned(), BTreeMap::new()));
            let mut add = |a: &EndpointAddress, ready: bool| {
                let k = address_key(a);
                all.entry(k.clone()).or_insert_with(|| a.clone());
                let was = entry.1.entry(k).or_insert(ready);
                *was = *was && ready;
            };
            for a in s.addresses.iter().flatten() {
                add(a, true);
            }
            for a in s.not_ready_addresses.iter().flatten() {
                add(a, false);
            }
        }
    }
    // Address sets → the ports they serve.
    let mut groups: BTreeMap<Vec<(AddressKey, bool)>, Vec<EndpointPort>> = BTreeMap::new();
    for (_, (port, addrs)) in by_port {
        let key: Vec<(AddressKey, bool)> = addrs.into_iter().collect();
        let ports = groups.entry(key).or_default();
        if let Some(p) = port {
            ports.push(p);
        }
    }
    groups
        .into_iter()
        .map(|(addrs, mut ports)| {
            ports.sort_by_key(port_key);
            let pick = |want: bool| {
                let v: Vec<EndpointAddress> = addrs
                    .iter()
                    .filter(|(_, ready)| *ready == want)
                    .map(|(k, _)| all[k].clone())
                    .collect();
                (!v.is_empty()).then_some(v)
            };
            EndpointSubset {
                addresses: pick(true),
                not_ready_addresses: pick(false),
                ports: (!ports.is_empty()).then_some(ports),
            }
        })
        .collect()
}

/// Subsets as compared: empty lists as absent, target references without resource
/// versions (upstream ignores those, so pod updates it does not care about are no
/// reason to write).
fn normalize(subsets: &[EndpointSubset]) -> Vec<EndpointSubset> {
    let addrs = |v: &Option<Vec<EndpointAddress>>| {
        let v: Vec<EndpointAddress> = v
            .iter()
            .flatten()
            .map(|a| {
                let mut a = a.clone();
                if let Some(t) = a.target_ref.as_mut() {
                    t.resource_version = None;
                }
                a
            })
            .collect();
        (!v.is_empty()).then_some(v)
    };
    subsets
        .iter()
        .map(|s| EndpointSubset {
            addresses: addrs(&s.addresses),
            not_ready_addresses: addrs(&s.not_ready_addresses),
            ports: s.ports.clone().filter(|p| !p.is_empty()),
        })
        .collect()
}

fn count(subsets: &[EndpointSubset]) -> (usize, usize) {
    subsets.iter().fold((0, 0), |(r, n), s| {
        (
            r + s.addresses.as_ref().map_or(0, Vec::len),
            n + s.not_ready_addresses.as_ref().map_or(0, Vec::len),
        )
    })
}

fn capacity_annotation_set_correctly(
    annotations: &BTreeMap<String, String>,
    subsets: &[EndpointSubset],
) -> bool {
    let (ready, not_ready) = count(subsets);
    if ready + not_ready > MAX_CAPACITY {
        return false;
    }
    !annotations.contains_key(se::ANNOTATION_OVER_CAPACITY)
}

/// Upstream's `truncateEndpoints`: cut to [`MAX_CAPACITY`] addresses, not-ready ones
/// first, each subset keeping its share (rounded up). True if anything was cut.
pub fn truncate(subsets: &mut [EndpointSubset]) -> bool {
    let (ready, not_ready) = count(subsets);
    if ready + not_ready <= MAX_CAPACITY {
        return false;
    }
    let truncate_ready = ready > MAX_CAPACITY;
    let (max, total) = if truncate_ready {
        (MAX_CAPACITY, ready)
    } else {
        (MAX_CAPACITY - ready, not_ready)
    };
    let mut can_be_added = max;
    for s in subsets.iter_mut() {
        let list = if truncate_ready {
            s.not_ready_addresses = None;
            &mut s.addresses
        } else {
            &mut s.not_ready_addresses
        };
        let in_subset = list.as_ref().map_or(0, Vec::len);
        let share = (in_subset * max).div_ceil(total).min(can_be_added);
        if let Some(v) = list.as_mut() {
            v.truncate(share);
            can_be_added -= v.len();
            if v.is_empty() {
                *list = None;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(extra: serde_json::Value) -> Service {
        let mut v = json!({"metadata": {"name": "web", "namespace": "d", "labels": {"a": "b"}},
            "spec": {"clusterIP": "10.43.0.1", "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}});
        if let (Some(spec), serde_json::Value::Object(e)) = (v["spec"].as_object_mut(), extra) {
            spec.extend(e);
        }
        serde_json::from_value(v).unwrap()
    }

    fn pod(i: usize, ready: bool) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": format!("p{i}"), "namespace": "d", "uid": format!("u{i}")},
                "spec": {"nodeName": "n1", "containers": []},
                "status": {"phase": "Running", "podIP": format!("10.42.{}.{}", i / 250, i % 250),
                    "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn ready_and_not_ready_pods_share_one_subset() {
        let s = desired_subsets(&svc(json!({})), &[pod(1, true), pod(2, false)]);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].addresses.as_ref().unwrap()[0].ip, "10.42.0.1");
        assert_eq!(
            s[0].not_ready_addresses.as_ref().unwrap()[0].ip,
            "10.42.0.2"
        );
        assert_eq!(s[0].ports.as_ref().unwrap()[0].port, 8080);
        let published = desired_subsets(
            &svc(json!({"publishNotReadyAddresses": true})),
            &[pod(1, true), pod(2, false)],
        );
        assert_eq!(published[0].addresses.as_ref().unwrap().len(), 2);
    }

    #[test]
    fn equal_endpoints_are_not_rewritten_but_label_changes_are() {
        let service = svc(json!({}));
        let subsets = desired_subsets(&service, &[pod(1, true)]);
        let first = next_endpoints(&service, None, subsets.clone(), None).unwrap();
        assert!(next_endpoints(&service, Some(&first), subsets.clone(), None).is_none());
        let mut relabelled = service.clone();
        relabelled
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("c".into(), "d".into());
        assert!(next_endpoints(&relabelled, Some(&first), subsets, None).is_some());
    }

    #[test]
    fn over_capacity_endpoints_are_truncated_and_annotated() {
        let service = svc(json!({}));
        let pods: Vec<_> = (0..1200).map(|i| pod(i, i % 2 == 0)).collect();
        let subsets = desired_subsets(&service, &pods);
        let ep = next_endpoints(&service, None, subsets.clone(), None).unwrap();
        let (ready, not_ready) = count(ep.subsets.as_deref().unwrap());
        assert_eq!((ready, not_ready), (600, 400));
        assert_eq!(
            ep.annotations()
                .get(se::ANNOTATION_OVER_CAPACITY)
                .map(String::as_str),
            Some("truncated")
        );
        // Over capacity is never "equal": upstream rewrites it each sync.
        assert!(next_endpoints(&service, Some(&ep), subsets, None).is_some());
    }

    #[test]
    fn headless_endpoints_are_labelled() {
        let headless = svc(json!({"clusterIP": "None", "ports": []}));
        let subsets = desired_subsets(&headless, &[pod(1, true)]);
        assert_eq!(subsets.len(), 1);
        assert!(subsets[0].ports.is_none());
        let ep = next_endpoints(&headless, None, subsets, None).unwrap();
        assert_eq!(
            ep.labels().get(se::LABEL_HEADLESS).map(String::as_str),
            Some("")
        );
    }
}
