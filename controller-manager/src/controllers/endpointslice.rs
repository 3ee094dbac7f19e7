//! endpointslice: every Service with a selector gets EndpointSlices listing the pods it
//! selects (upstream's endpointslice-controller and the `k8s.io/endpointslice`
//! reconciler): at most [`MAX_ENDPOINTS_PER_SLICE`] endpoints a slice, grouped by address
//! type and by the ports the pod resolves, with as few writes as possible: slices are
//! reused and refilled, only changed ones are written, and a create is turned into an
//! update of a slice that would otherwise be deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Node, ObjectReference, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;
use tracing::{debug, warn};

use super::controller_utils::only_uid;
use super::service_endpoints::{self as se, PodServices, SliceTracker, TriggerTimeTracker};
use super::Context;
use crate::cache::Pod;
use crate::informers::key;

pub const NAME: &str = "endpointslice";
/// The `endpointslice.kubernetes.io/managed-by` value of this controller's slices.
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// Upstream's `--max-endpoints-per-slice` default.
/// Upstream's `--max-endpoints-per-slice` default.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the EndpointSlice cache of {0} is older than this controller's own writes")]
    StaleCache(String),
    #[error("creating an EndpointSlice for {service}: {source}")]
    Create {
        service: String,
        #[source]
        source: kube::Error,
    },
    #[error("updating EndpointSlice {slice} of {service}: {source}")]
    Update {
        service: String,
        slice: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting EndpointSlice {slice} of {service}: {source}")]
    Delete {
        service: String,
        slice: String,
        #[source]
        source: kube::Error,
    },
}

struct State {
    ctx: Context,
    pods: Store<Pod>,
    nodes: Store<Node>,
    slices: Store<EndpointSlice>,
    tracker: Arc<SliceTracker>,
    trigger_times: Arc<TriggerTimeTracker>,
}

pub fn start(ctx: &Context) -> BoxFuture<'static, ()> {
    let services = ctx.informers.subscribe::<Service>();
    let service_store = ctx.informers.store::<Service>();
    let pods = ctx.informers.subscribe::<Pod>();
    let pod_store = ctx.informers.store::<Pod>();
    let slices = ctx.informers.subscribe::<EndpointSlice>();
    let slice_store = ctx.informers.store::<EndpointSlice>();
    let state = Arc::new(State {
        ctx: ctx.clone(),
        pods: pod_store.clone(),
        nodes: ctx.informers.store::<Node>(),
        slices: slice_store.clone(),
        tracker: Arc::new(SliceTracker::default()),
        trigger_times: Arc::new(TriggerTimeTracker::default()),
    });
    let pod_services = PodServices::new(service_store.clone(), pod_store);
    let services = forget_deleted_services(
        services,
        service_store.clone(),
        state.tracker.clone(),
        state.trigger_times.clone(),
    );
    let tracker = state.tracker.clone();
    let config = Config::default()
        .concurrency(ctx.options.concurrent_service_endpoint_syncs)
        .debounce(ctx.options.endpointslice_updates_batch_period);
    Controller::for_shared_stream(services, service_store)
        .with_config(config)
        .watches_shared_stream(pods, move |pod: Arc<Pod>| pod_services.services_for(&pod))
        .watches_shared_stream(slices, move |slice: Arc<EndpointSlice>| {
            se::observe_slice(&tracker, &slice_store, &slice);
            owning_service(&slice, MANAGED_BY)
        })
        .run(reconcile, error_policy, state)
        .for_each(|_| async {})
        .boxed()
}

/// Drops the trackers' memory of Services that are gone (the store is updated before
/// subscribers hear of a change, so a Service missing from it has been deleted).
pub(crate) fn forget_deleted_services(
    services: impl futures::Stream<Item = Arc<Service>> + Send + 'static,
    store: Store<Service>,
    tracker: Arc<SliceTracker>,
    trigger_times: Arc<TriggerTimeTracker>,
) -> impl futures::Stream<Item = Arc<Service>> + Send + 'static {
    services.inspect(move |svc| {
        if store.get(&ObjectRef::from_obj(&**svc)).is_none() {
            let ns = svc.namespace().unwrap_or_default();
            tracker.forget_service(&ns, &svc.name_any());
            trigger_times.forget(&ns, &svc.name_any());
        }
    })
}

/// The Service a slice managed by `manager` belongs to.
pub(crate) fn owning_service(slice: &EndpointSlice, manager: &str) -> Option<ObjectRef<Service>> {
    if slice.labels().get(se::LABEL_MANAGED_BY).map(String::as_str) != Some(manager) {
        return None;
    }
    let name = slice.labels().get(se::LABEL_SERVICE_NAME)?;
    Some(ObjectRef::new(name).within(&slice.namespace()?))
}

async fn reconcile(svc: Arc<Service>, state: Arc<State>) -> Result<Action, Error> {
    let metrics = state.ctx.metrics.clone();
    metrics.observe(NAME, sync_service(svc, state)).await
}

/// The Service's slices managed by `manager`, not being deleted, sorted by name.
pub(crate) fn managed_slices(
    store: &Store<EndpointSlice>,
    namespace: &str,
    service: &str,
    manager: &str,
) -> Vec<Arc<EndpointSlice>> {
    let mut out: Vec<Arc<EndpointSlice>> = store
        .state()
        .into_iter()
        .filter(|s| {
            s.namespace().as_deref() == Some(namespace)
                && s.labels().get(se::LABEL_SERVICE_NAME).map(String::as_str) == Some(service)
                && s.labels().get(se::LABEL_MANAGED_BY).map(String::as_str) == Some(manager)
        })
        .collect();
    out.sort_by_key(|s| s.name_any());
    out
}

async fn sync_service(svc: Arc<Service>, state: Arc<State>) -> Result<Action, Error> {
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let existing: Vec<Arc<EndpointSlice>> = managed_slices(&state.slices, &ns, &name, MANAGED_BY)
        .into_iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .collect();
    if state.tracker.stale(&ns, &name, &existing) {
        return Err(Error::StaleCache(key(&*svc)));
    }
    let plan = if se::selector(&svc).is_none() || se::is_external_name(&svc) {
        // Endpoints of these come from elsewhere (mirroring, or the user); slices this
        // controller once made for the Service (its selector was removed) must go.
        Plan {
            delete: existing.iter().map(|s| (**s).clone()).collect(),
            ..Plan::default()
        }
    } else {
        let pods = se::selected_pods(&svc, &state.pods);
        let nodes = &state.nodes;
        let desired = desired_endpoints(&svc, &pods, |node| {
            nodes
                .get(&ObjectRef::new(node))
                .map(|n| n.labels().get(ZONE_LABEL).cloned())
        });
        let mut plan = plan(
            &svc,
            desired.by_type,
            &existing,
            usize::from(state.ctx.options.max_endpoints_per_slice),
        );
        plan.missing_nodes = desired.missing_nodes;
        plan.trigger_time = state.trigger_times.compute(&svc, &pods);
        plan
    };
    apply(&state, &svc, plan).await
}

async fn apply(state: &State, svc: &Service, plan: Plan) -> Result<Action, Error> {
    let service = key(svc);
    let api: Api<EndpointSlice> = Api::namespaced(
        state.ctx.client.clone(),
        &svc.namespace().unwrap_or_default(),
    );
    // Never create while the Service is being deleted: the garbage collector would race
    // this controller's replacements.
    if svc.metadata.deletion_timestamp.is_none() {
        for mut slice in plan.create {
            set_trigger_time(&mut slice, plan.trigger_time);
            match api.create(&PostParams::default(), &slice).await {
                Ok(created) => {
                    debug!(%service, slice = %created.name_any(), "created EndpointSlice");
                    state.tracker.written(&created);
                }
                // The namespace is terminating: creates keep failing, drop the item.
                Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("terminat") => {
                    return Ok(Action::await_change())
                }
                Err(source) => return Err(Error::Create { service, source }),
            }
        }
    }
    for mut slice in plan.update {
        set_trigger_time(&mut slice, plan.trigger_time);
        slice.metadata.managed_fields = None;
        let name = slice.name_any();
        match api.replace(&name, &PostParams::default(), &slice).await {
            Ok(updated) => {
                debug!(%service, slice = %name, "updated EndpointSlice");
                state.tracker.written(&updated);
            }
            Err(source) => {
                return Err(Error::Update {
                    service,
                    slice: name,
                    source,
                })
            }
        }
    }
    for slice in plan.delete {
        let name = slice.name_any();
        let dp = only_uid(slice.uid());
        match api.delete(&name, &dp).await {
            Ok(_) => {
                debug!(%service, slice = %name, "deleted EndpointSlice");
                state.tracker.deleted(&slice);
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(source) => {
                return Err(Error::Delete {
                    service,
                    slice: name,
                    source,
                })
            }
        }
    }
    if !plan.missing_nodes.is_empty() {
        // Upstream leaves such pods out and retries: the node may yet appear (or the pod
        // garbage collector remove the pod).
        warn!(%service, nodes = ?plan.missing_nodes, "skipped pods on nodes that do not exist");
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    Ok(Action::await_change())
}

fn error_policy(_svc: Arc<Service>, error: &Error, _state: Arc<State>) -> Action {
    match error {
        Error::StaleCache(_) => Action::requeue(Duration::from_millis(500)),
        _ => {
            warn!(%error, "syncing EndpointSlices failed");
            Action::requeue(Duration::from_secs(5))
        }
    }
}

/// Sets (or, with no new trigger, removes) the last-change-trigger-time annotation.
pub(crate) fn set_trigger_time(slice: &mut EndpointSlice, t: Option<jiff::Timestamp>) {
    let annotations = slice.metadata.annotations.get_or_insert_with(BTreeMap::new);
    match t {
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
    if annotations.is_empty() {
        slice.metadata.annotations = None;
    }
}

/// Slices a reconcile writes.
#[derive(Default, Debug)]
pub struct Plan {
    pub create: Vec<EndpointSlice>,
    pub update: Vec<EndpointSlice>,
    pub delete: Vec<EndpointSlice>,
    pub trigger_time: Option<jiff::Timestamp>,
    /// Nodes named by selected pods that do not exist (those pods were left out).
    pub missing_nodes: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// Identity of an endpoint across reconciles (upstream's endpoint hash): its addresses,
/// hostname and the object it points at.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct EndpointKey {
    addresses: Vec<String>,
    hostname: String,
    namespace: String,
    name: String,
}

pub(crate) fn endpoint_key(ep: &Endpoint) -> EndpointKey {
    let mut addresses = ep.addresses.clone();
    addresses.sort();
    let target = ep.target_ref.as_ref();
    EndpointKey {
        addresses,
        hostname: ep.hostname.clone().unwrap_or_default(),
        namespace: target.and_then(|t| t.namespace.clone()).unwrap_or_default(),
        name: target.and_then(|t| t.name.clone()).unwrap_or_default(),
    }
}

/// Upstream's `EndpointsEqualBeyondHash`: what can change about an endpoint of the same
/// identity.
pub(crate) fn endpoints_equal_beyond_key(a: &Endpoint, b: &Endpoint) -> bool {
    let conditions = |e: &Endpoint| e.conditions.clone().unwrap_or_default();
    a.node_name == b.node_name
        && a.zone == b.zone
        && conditions(a) == conditions(b)
        && a.hints == b.hints
        && a.target_ref == b.target_ref
}

/// Ports as a grouping key: order-independent, with the server's defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortsKey(Vec<(String, i32, String, Option<String>)>);

pub(crate) fn ports_key(ports: &[EndpointPort]) -> PortsKey {
    let mut v: Vec<_> = ports
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port.unwrap_or(0),
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.app_protocol.clone(),
            )
        })
        .collect();
    v.sort();
    PortsKey(v)
}

pub type EndpointSet = BTreeMap<EndpointKey, Endpoint>;

/// The endpoints a Service wants, by address type, then by ports.
#[derive(Default, Debug)]
pub struct Desired {
    pub by_type: BTreeMap<String, BTreeMap<PortsKey, (Vec<EndpointPort>, EndpointSet)>>,
    pub missing_nodes: Vec<String>,
}

/// Upstream's `getAddressTypesForService`: the Service's IP families, else its cluster
/// IP's, else (headless) both.
pub fn address_types(svc: &Service) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = svc
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.as_ref())
        .into_iter()
        .flatten()
        .filter(|f| *f == "IPv4" || *f == "IPv6")
        .cloned()
        .collect();
    if !out.is_empty() {
        return out;
    }
    if se::is_service_ip_set(svc) {
        let v6 = se::cluster_ip(svc).is_some_and(se::is_ipv6);
        out.insert(if v6 { "IPv6" } else { "IPv4" }.into());
        return out;
    }
    out.insert("IPv4".into());
    out.insert("IPv6".into());
    out
}

/// The ports a pod serves for the Service (upstream's `getEndpointPorts`): a service port
/// whose named target the pod lacks is left out for that pod.
pub(crate) fn endpoint_ports(svc: &Service, pod: &Pod) -> Vec<EndpointPort> {
    se::service_ports(svc)
        .iter()
        .filter_map(|sp| {
            let port = se::find_port(pod, sp)?;
            Some(EndpointPort {
                name: Some(sp.name.clone().unwrap_or_default()),
                port: Some(port),
                protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect()
}

/// Upstream's `podToEndpoint`. A terminating pod is not ready (unless the Service
/// publishes not-ready addresses) but still says whether it is serving.
pub(crate) fn pod_to_endpoint(
    svc: &Service,
    pod: &Pod,
    zone: Option<String>,
    address_type: &str,
) -> Endpoint {
    let serving = se::is_pod_ready(pod);
    let terminating = se::is_terminating(pod);
    let ready = se::publish_not_ready(svc) || (serving && !terminating);
    let want_v6 = address_type == "IPv6";
    Endpoint {
        addresses: se::pod_ips(pod)
            .into_iter()
            .filter(|ip| se::is_ipv6(ip) == want_v6)
            .collect(),
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname: se::should_set_hostname(pod, svc)
            .then(|| se::pod_hostname(pod))
            .flatten(),
        node_name: se::node_name(pod),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.namespace(),
            name: Some(pod.name_any()),
            uid: pod.uid(),
            ..ObjectReference::default()
        }),
        zone,
        ..Endpoint::default()
    }
}

/// The endpoints of `pods` for `svc`. `node_zone(name)` is None for a node that does not
/// exist, else the node's zone label.
pub fn desired_endpoints(
    svc: &Service,
    pods: &[Arc<Pod>],
    node_zone: impl Fn(&str) -> Option<Option<String>>,
) -> Desired {
    let mut out = Desired::default();
    let types = address_types(svc);
    for t in &types {
        out.by_type.entry(t.clone()).or_default();
    }
    for pod in pods {
        if !se::should_pod_be_in_endpoints(pod, true) {
            continue;
        }
        let node = se::node_name(pod).unwrap_or_default();
        let zone = match node_zone(&node) {
            Some(zone) => zone,
            // Upstream publishes such pods only when asked to publish not-ready ones.
            None if se::publish_not_ready(svc) => None,
            None => {
                out.missing_nodes.push(node);
                continue;
            }
        };
        let ports = endpoint_ports(svc, pod);
        let pk = ports_key(&ports);
        for t in &types {
            let ep = pod_to_endpoint(svc, pod, zone.clone(), t);
            if ep.addresses.is_empty() {
                continue;
            }
            let group = out
                .by_type
                .get_mut(t)
                .expect("every address type has a group")
                .entry(pk.clone())
                .or_insert_with(|| (ports.clone(), EndpointSet::new()));
            group.1.insert(endpoint_key(&ep), ep);
        }
    }
    out.missing_nodes.sort();
    out.missing_nodes.dedup();
    out
}

/// The labels of the Service's slices: the Service's own (less the reserved ones), the
/// headless marker, the service name and the manager.
pub fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = svc
        .labels()
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                se::LABEL_SERVICE_NAME | se::LABEL_MANAGED_BY | se::LABEL_HEADLESS
            )
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !se::is_service_ip_set(svc) {
        labels.insert(se::LABEL_HEADLESS.into(), String::new());
    }
    labels.insert(se::LABEL_SERVICE_NAME.into(), svc.name_any());
    labels.insert(se::LABEL_MANAGED_BY.into(), MANAGED_BY.into());
    labels
}

fn new_slice(svc: &Service, ports: Vec<EndpointPort>, address_type: &str) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", svc.name_any())),
            namespace: svc.namespace(),
            labels: Some(slice_labels(svc)),
            owner_references: Some(vec![super::controller_utils::controller_ref(svc)]),
            ..ObjectMeta::default()
        },
        address_type: address_type.into(),
        endpoints: Vec::new(),
        ports: Some(ports),
    }
}

fn is_placeholder(slice: &EndpointSlice, svc: &Service, address_type: &str) -> bool {
    slice.endpoints.is_empty()
        && slice.ports.as_ref().is_none_or(|p| p.is_empty())
        && slice.address_type == address_type
        && se::owned_by(slice, svc)
        && slice.metadata.labels.as_ref() == Some(&slice_labels(svc))
}

/// What to write so that `existing` (the Service's slices, sorted by name) hold exactly
/// the desired endpoints (upstream's `Reconciler.Reconcile`).
pub fn plan(
    svc: &Service,
    desired: BTreeMap<String, BTreeMap<PortsKey, (Vec<EndpointPort>, EndpointSet)>>,
    existing: &[Arc<EndpointSlice>],
    max: usize,
) -> Plan {
    let mut plan = Plan::default();
    // Slices of an address type the Service no longer has go.
    for slice in existing {
        if !desired.contains_key(&slice.address_type) {
            plan.delete.push((**slice).clone());
        }
    }
    for (address_type, groups) in desired {
        let of_type: Vec<&EndpointSlice> = existing
            .iter()
            .map(|s| &**s)
            .filter(|s| s.address_type == address_type)
            .collect();
        let (create, update, delete) = plan_address_type(svc, &address_type, groups, &of_type, max);
        plan.create.extend(create);
        plan.update.extend(update);
        plan.delete.extend(delete);
    }
    recycle(svc, &mut plan);
    plan
}

type Changes = (Vec<EndpointSlice>, Vec<EndpointSlice>, Vec<EndpointSlice>);

fn plan_address_type(
    svc: &Service,
    address_type: &str,
    desired: BTreeMap<PortsKey, (Vec<EndpointPort>, EndpointSet)>,
    existing: &[&EndpointSlice],
    max: usize,
) -> Changes {
    let (mut create, mut update, mut delete) = (Vec::new(), Vec::new(), Vec::new());
    let mut by_ports: BTreeMap<PortsKey, Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in existing {
        if se::owned_by(*slice, svc) {
            by_ports
                .entry(ports_key(slice.ports.as_deref().unwrap_or_default()))
                .or_default()
                .push(slice);
        } else {
            // Left by an earlier Service of the same name.
            delete.push((*slice).clone());
        }
    }
    for (pk, (ports, endpoints)) in &desired {
        let slices = by_ports.get(pk).map(Vec::as_slice).unwrap_or_default();
        let (c, u, d) = plan_ports(svc, address_type, slices, endpoints.clone(), ports, max);
        create.extend(c);
        update.extend(u);
        delete.extend(d);
    }
    for (pk, slices) in &by_ports {
        if !desired.contains_key(pk) {
            delete.extend(slices.iter().map(|s| (*s).clone()));
        }
    }
    // A Service with no endpoints of this type keeps one empty placeholder slice.
    if existing.len() == delete.len() && create.is_empty() {
        if delete.len() == 1 && is_placeholder(&delete[0], svc, address_type) {
            delete.clear();
        } else {
            create.push(new_slice(svc, Vec::new(), address_type));
        }
    }
    (create, update, delete)
}

/// Upstream's `reconcileByPortMapping`: keep endpoints where they are, drop the ones no
/// longer wanted, fill the slices being written anyway, then fit what is left into one
/// unchanged slice with room, and only then create new slices.
fn plan_ports(
    svc: &Service,
    address_type: &str,
    existing: &[&EndpointSlice],
    mut wanted: EndpointSet,
    ports: &[EndpointPort],
    max: usize,
) -> Changes {
    let labels = slice_labels(svc);
    let mut by_name: BTreeMap<String, EndpointSlice> = BTreeMap::new();
    let mut unchanged: BTreeSet<String> = BTreeSet::new();
    let mut to_update: BTreeSet<String> = BTreeSet::new();
    let mut to_delete: BTreeSet<String> = BTreeSet::new();
    // 1. Existing slices keep the endpoints still wanted, updated in place.
    for slice in existing {
        let name = slice.name_any();
        let mut kept = Vec::with_capacity(slice.endpoints.len());
        let mut changed = false;
        for ep in &slice.endpoints {
            if let Some(want) = wanted.remove(&endpoint_key(ep)) {
                if !endpoints_equal_beyond_key(&want, ep) {
                    changed = true;
                }
                kept.push(want);
            }
        }
        let labels_changed = slice.metadata.labels.as_ref() != Some(&labels);
        if changed || kept.len() != slice.endpoints.len() {
            if kept.is_empty() {
                to_delete.insert(name.clone());
                by_name.insert(name, (*slice).clone());
            } else {
                let mut s = (*slice).clone();
                s.endpoints = kept;
                s.metadata.labels = Some(labels.clone());
                to_update.insert(name.clone());
                by_name.insert(name, s);
            }
        } else if labels_changed {
            let mut s = (*slice).clone();
            s.metadata.labels = Some(labels.clone());
            to_update.insert(name.clone());
            by_name.insert(name, s);
        } else {
            unchanged.insert(name.clone());
            by_name.insert(name, (*slice).clone());
        }
    }
    // 2. Fill the slices being written anyway, fullest first.
    if !wanted.is_empty() && !to_update.is_empty() {
        let mut names: Vec<String> = to_update.iter().cloned().collect();
        names.sort_by_key(|n| std::cmp::Reverse(by_name[n].endpoints.len()));
        for n in names {
            let s = by_name.get_mut(&n).expect("slice to update is known");
            while s.endpoints.len() < max {
                let Some((_, ep)) = wanted.pop_first() else {
                    break;
                };
                s.endpoints.push(ep);
            }
        }
    }
    // 3. Fit the rest into one unchanged slice with room, or new slices.
    let mut create = Vec::new();
    while !wanted.is_empty() {
        let mut fill: Option<String> = None;
        if wanted.len() < max {
            // The fullest unchanged slice the rest fits in.
            fill = unchanged
                .iter()
                .filter(|n| by_name[*n].endpoints.len() + wanted.len() <= max)
                .max_by_key(|n| by_name[*n].endpoints.len())
                .cloned();
        }
        let mut slice = match &fill {
            Some(n) => by_name.remove(n).expect("unchanged slice is known"),
            None => new_slice(svc, ports.to_vec(), address_type),
        };
        while slice.endpoints.len() < max {
            let Some((_, ep)) = wanted.pop_first() else {
                break;
            };
            slice.endpoints.push(ep);
        }
        match fill {
            Some(n) => {
                unchanged.remove(&n);
                to_update.insert(n.clone());
                by_name.insert(n, slice);
            }
            None => create.push(slice),
        }
    }
    let update = to_update.iter().map(|n| by_name[n].clone()).collect();
    let delete = to_delete.iter().map(|n| by_name[n].clone()).collect();
    (create, update, delete)
}

/// Upstream's finalize step: rather than create one slice and delete another, update the
/// one that would be deleted (same address type, owned by the Service).
fn recycle(svc: &Service, plan: &mut Plan) {
    let mut i = 0;
    while i < plan.delete.len() && !plan.create.is_empty() {
        let old = &plan.delete[i];
        let last = plan.create.last().expect("not empty");
        if old.address_type == last.address_type && se::owned_by(old, svc) {
            let old = plan.delete.remove(i);
            let mut slice = plan.create.pop().expect("not empty");
            slice.metadata.name = old.metadata.name.clone();
            slice.metadata.generate_name = None;
            slice.metadata.resource_version = old.metadata.resource_version.clone();
            plan.update.push(slice);
        } else {
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn svc() -> Service {
        service(json!({
            "metadata": {"name": "web", "namespace": "d", "uid": "svc-uid"},
            "spec": {"clusterIP": "10.43.0.10", "ipFamilies": ["IPv4"],
                "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
        }))
    }

    fn pod(i: usize, ready: bool) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": format!("p{i:04}"), "namespace": "d",
                    "uid": format!("uid-{i}"), "labels": {"app": "web"}},
                "spec": {"nodeName": "n1", "containers": [{"name": "c",
                    "ports": [{"name": "http", "containerPort": 8080}]}]},
                "status": {"phase": "Running",
                    "podIP": format!("10.42.{}.{}", i / 250, i % 250 + 1),
                    "conditions": [{"type": "Ready",
                        "status": if ready { "True" } else { "False" }}]}
            }))
            .unwrap(),
        )
    }

    fn desired(svc: &Service, pods: &[Arc<Pod>]) -> Desired {
        desired_endpoints(svc, pods, |_| Some(Some("z1".into())))
    }

    /// Applies a plan as the server would, naming created slices.
    fn apply(existing: &mut Vec<Arc<EndpointSlice>>, plan: Plan, next: &mut usize) {
        for d in &plan.delete {
            existing.retain(|s| s.metadata.name != d.metadata.name);
        }
        for u in plan.update {
            existing.retain(|s| s.metadata.name != u.metadata.name);
            existing.push(Arc::new(u));
        }
        for mut c in plan.create {
            *next += 1;
            c.metadata.name = Some(format!("web-{next:03}"));
            existing.push(Arc::new(c));
        }
        existing.sort_by_key(|s| s.name_any());
    }

    #[test]
    fn endpoints_split_at_the_slice_maximum_and_settle() {
        let svc = svc();
        let pods: Vec<_> = (0..250).map(|i| pod(i, true)).collect();
        let mut existing = Vec::new();
        let mut n = 0;
        let p = plan(&svc, desired(&svc, &pods).by_type, &existing, 100);
        assert_eq!(p.create.len(), 3);
        apply(&mut existing, p, &mut n);
        let sizes: Vec<usize> = existing.iter().map(|s| s.endpoints.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 250);
        assert!(sizes.iter().all(|s| *s <= 100));
        let again = plan(&svc, desired(&svc, &pods).by_type, &existing, 100);
        assert!(again.is_empty(), "{again:?}");
        let port = &existing[0].ports.as_ref().unwrap()[0];
        assert_eq!(port.port, Some(8080));
        assert_eq!(port.name.as_deref(), Some("http"));
    }

    #[test]
    fn one_change_writes_one_slice() {
        let svc = svc();
        let mut pods: Vec<_> = (0..250).map(|i| pod(i, true)).collect();
        let mut existing = Vec::new();
        let mut n = 0;
        let p = plan(&svc, desired(&svc, &pods).by_type, &existing, 100);
        apply(&mut existing, p, &mut n);
        pods[7] = pod(7, false);
        let p = plan(&svc, desired(&svc, &pods).by_type, &existing, 100);
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0));
        let ep = p.update[0]
            .endpoints
            .iter()
            .find(|e| e.target_ref.as_ref().unwrap().name.as_deref() == Some("p0007"))
            .unwrap();
        assert_eq!(ep.conditions.as_ref().unwrap().ready, Some(false));
        // Removing one pod and adding another reuses the slice being written.
        apply(&mut existing, p, &mut n);
        pods.remove(3);
        pods.push(pod(900, true));
        let p = plan(&svc, desired(&svc, &pods).by_type, &existing, 100);
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0));
    }

    #[test]
    fn no_endpoints_keep_one_placeholder() {
        let svc = svc();
        let mut existing = Vec::new();
        let mut n = 0;
        let p = plan(&svc, desired(&svc, &[]).by_type, &existing, 100);
        assert_eq!(p.create.len(), 1);
        assert!(p.create[0].endpoints.is_empty());
        apply(&mut existing, p, &mut n);
        assert!(plan(&svc, desired(&svc, &[]).by_type, &existing, 100).is_empty());
        // A pod appears: the placeholder is reused (recycled), not replaced.
        let p = plan(&svc, desired(&svc, &[pod(1, true)]).by_type, &existing, 100);
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0));
        apply(&mut existing, p, &mut n);
        // And gone again: back to a placeholder, through an update.
        let p = plan(&svc, desired(&svc, &[]).by_type, &existing, 100);
        assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0));
        assert!(p.update[0].endpoints.is_empty());
    }

    #[test]
    fn terminating_pods_serve_but_are_not_ready() {
        let svc = svc();
        let mut p = (*pod(1, true)).clone();
        p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::UNIX_EPOCH,
        ));
        let ep = pod_to_endpoint(&svc, &p, None, "IPv4");
        let c = ep.conditions.unwrap();
        assert_eq!(
            (c.ready, c.serving, c.terminating),
            (Some(false), Some(true), Some(true))
        );
    }

    #[test]
    fn pods_on_missing_nodes_are_skipped_unless_published_anyway() {
        let svc = svc();
        let d = desired_endpoints(&svc, &[pod(1, true)], |_| None);
        assert_eq!(d.missing_nodes, ["n1"]);
        assert!(d.by_type["IPv4"].is_empty());
    }

    #[test]
    fn headless_services_get_both_address_types_and_the_label() {
        let headless = service(json!({"metadata": {"name": "h", "namespace": "d"},
            "spec": {"clusterIP": "None", "selector": {"app": "web"}}}));
        assert_eq!(address_types(&headless).len(), 2);
        assert_eq!(
            slice_labels(&headless)
                .get(se::LABEL_HEADLESS)
                .map(String::as_str),
            Some("")
        );
        assert!(!slice_labels(&svc()).contains_key(se::LABEL_HEADLESS));
    }
}
