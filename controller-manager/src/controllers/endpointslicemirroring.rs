//! endpointslicemirroring: a Service without a selector whose Endpoints its user writes
//! gets those Endpoints mirrored into EndpointSlices (upstream's
//! endpointslicemirroring-controller), so that consumers of EndpointSlices (kube-proxy)
//! see them. One slice per address type and port set of the repacked subsets, at most
//! [`MAX_ENDPOINTS_PER_SUBSET`] addresses per subset, owned by the Endpoints object and
//! carrying its labels and annotations.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;
use tracing::{debug, warn};

use super::controller_utils::only_uid;
use super::endpoint::repack_subsets;
use super::endpointslice::{
    endpoint_key, endpoints_equal_beyond_key, forget_deleted_services, managed_slices,
    owning_service, ports_key, EndpointSet, PortsKey,
};
use super::service_endpoints::{self as se, SliceTracker, TriggerTimeTracker};
use super::Context;
use crate::informers::key;

pub const NAME: &str = "endpointslicemirroring";
/// The `endpointslice.kubernetes.io/managed-by` value of mirrored slices.
pub const MANAGED_BY: &str = "endpointslicemirroring-controller.k8s.io";
/// Upstream's `--mirroring-max-endpoints-per-subset` default.
pub const MAX_ENDPOINTS_PER_SUBSET: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the EndpointSlice cache of {0} is older than this controller's own writes")]
    StaleCache(String),
    #[error("creating a mirrored EndpointSlice for {endpoints}: {source}")]
    Create {
        endpoints: String,
        #[source]
        source: kube::Error,
    },
    #[error("updating mirrored EndpointSlice {slice} of {endpoints}: {source}")]
    Update {
        endpoints: String,
        slice: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting mirrored EndpointSlice {slice} of {endpoints}: {source}")]
    Delete {
        endpoints: String,
        slice: String,
        #[source]
        source: kube::Error,
    },
}

struct State {
    ctx: Context,
    endpoints: Store<Endpoints>,
    slices: Store<EndpointSlice>,
    tracker: Arc<SliceTracker>,
}

pub fn start(ctx: &Context) -> BoxFuture<'static, ()> {
    let services = ctx.informers.subscribe::<Service>();
    let service_store = ctx.informers.store::<Service>();
    let endpoints = ctx.informers.subscribe::<Endpoints>();
    let slices = ctx.informers.subscribe::<EndpointSlice>();
    let slice_store = ctx.informers.store::<EndpointSlice>();
    let state = Arc::new(State {
        ctx: ctx.clone(),
        endpoints: ctx.informers.store::<Endpoints>(),
        slices: slice_store.clone(),
        tracker: Arc::new(SliceTracker::default()),
    });
    let services = forget_deleted_services(
        services,
        service_store.clone(),
        state.tracker.clone(),
        Arc::new(TriggerTimeTracker::default()),
    );
    let tracker = state.tracker.clone();
    let config = Config::default()
        .concurrency(ctx.options.mirroring_concurrent_service_endpoint_syncs)
        .debounce(ctx.options.mirroring_endpointslice_updates_batch_period);
    Controller::for_shared_stream(services, service_store)
        .with_config(config)
        .watches_shared_stream(endpoints, |ep: Arc<Endpoints>| {
            Some(ObjectRef::<Service>::new(&ep.name_any()).within(&ep.namespace()?))
        })
        .watches_shared_stream(slices, move |slice: Arc<EndpointSlice>| {
            se::observe_slice(&tracker, &slice_store, &slice);
            owning_service(&slice, MANAGED_BY)
        })
        .run(reconcile, error_policy, state)
        .for_each(|_| async {})
        .boxed()
}

async fn reconcile(svc: Arc<Service>, state: Arc<State>) -> Result<Action, Error> {
    let metrics = state.ctx.metrics.clone();
    metrics.observe(NAME, sync(svc, state)).await
}

fn error_policy(_svc: Arc<Service>, error: &Error, _state: Arc<State>) -> Action {
    match error {
        Error::StaleCache(_) => Action::requeue(Duration::from_millis(500)),
        _ => {
            warn!(%error, "mirroring Endpoints failed");
            Action::requeue(Duration::from_secs(5))
        }
    }
}

/// Upstream's `shouldMirror`: not opted out, not a leader-election lock.
fn should_mirror(ep: &Endpoints) -> bool {
    ep.labels().get(se::LABEL_SKIP_MIRROR).map(String::as_str) != Some("true")
        && !ep.annotations().contains_key(se::ANNOTATION_LEADER)
}

async fn sync(svc: Arc<Service>, state: Arc<State>) -> Result<Action, Error> {
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let existing = managed_slices(&state.slices, &ns, &name, MANAGED_BY);
    let endpoints = state
        .endpoints
        .get(&ObjectRef::new(&name).within(&ns))
        .filter(|ep| should_mirror(ep));
    let endpoints = match endpoints {
        Some(ep) if se::selector(&svc).is_none() && !se::is_external_name(&svc) => ep,
        // A Service with a selector gets its slices from the endpointslice controller;
        // one without mirrorable Endpoints gets none.
        _ => {
            let plan = MirrorPlan {
                delete: existing.iter().map(|s| (**s).clone()).collect(),
                ..MirrorPlan::default()
            };
            return apply(&state, &ns, &key(&*svc), false, plan).await;
        }
    };
    let live: Vec<Arc<EndpointSlice>> = existing
        .into_iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .collect();
    if state.tracker.stale(&ns, &name, &live) {
        return Err(Error::StaleCache(key(&*svc)));
    }
    let plan = plan(
        &endpoints,
        &live,
        usize::from(state.ctx.options.mirroring_max_endpoints_per_subset),
    );
    if plan.skipped > 0 {
        warn!(endpoints = %key(&*endpoints), skipped = plan.skipped,
            "addresses were not mirrored (invalid IPs, or over the per-subset maximum)");
    }
    let deleting = endpoints.metadata.deletion_timestamp.is_some();
    apply(&state, &ns, &key(&*endpoints), deleting, plan).await
}

async fn apply(
    state: &State,
    ns: &str,
    endpoints: &str,
    deleting: bool,
    plan: MirrorPlan,
) -> Result<Action, Error> {
    let api: Api<EndpointSlice> = Api::namespaced(state.ctx.client.clone(), ns);
    let endpoints = endpoints.to_string();
    // No new slices for Endpoints being deleted.
    if !deleting {
        for slice in plan.create {
            match api.create(&PostParams::default(), &slice).await {
                Ok(created) => {
                    debug!(%endpoints, slice = %created.name_any(), "created mirrored EndpointSlice");
                    state.tracker.written(&created);
                }
                Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("terminat") => {
                    return Ok(Action::await_change())
                }
                Err(source) => return Err(Error::Create { endpoints, source }),
            }
        }
    }
    for slice in plan.update {
        let name = slice.name_any();
        match api.replace(&name, &PostParams::default(), &slice).await {
            Ok(updated) => state.tracker.written(&updated),
            Err(source) => {
                return Err(Error::Update {
                    endpoints,
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
            Ok(_) => state.tracker.deleted(&slice),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(source) => {
                return Err(Error::Delete {
                    endpoints,
                    slice: name,
                    source,
                })
            }
        }
    }
    Ok(Action::await_change())
}

#[derive(Default, Debug)]
pub struct MirrorPlan {
    pub create: Vec<EndpointSlice>,
    pub update: Vec<EndpointSlice>,
    pub delete: Vec<EndpointSlice>,
    /// Addresses left out: not an IP, or beyond the per-subset maximum.
    pub skipped: usize,
}

/// Upstream's `addressToEndpoint`: the address (re-formatted as parsed) and its type, or
/// None for something that is not an IP.
fn address_to_endpoint(a: &EndpointAddress, ready: bool) -> Option<(Endpoint, &'static str)> {
    let ip: std::net::IpAddr = a.ip.parse().ok()?;
    let address_type = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
    Some((
        Endpoint {
            addresses: vec![ip.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(ready),
                ..EndpointConditions::default()
            }),
            target_ref: a.target_ref.clone(),
            node_name: a.node_name.clone(),
            hostname: a.hostname.clone().filter(|h| !h.is_empty()),
            ..Endpoint::default()
        },
        address_type,
    ))
}

/// Labels and annotations mirrored from the Endpoints onto its slices.
fn mirrored_meta(ep: &Endpoints) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut labels = ep.labels().clone();
    labels.insert(se::LABEL_SERVICE_NAME.into(), ep.name_any());
    labels.insert(se::LABEL_MANAGED_BY.into(), MANAGED_BY.into());
    let annotations = ep
        .annotations()
        .iter()
        .filter(|(k, _)| {
            k.as_str() != se::ANNOTATION_LAST_CHANGE_TRIGGER_TIME
                && k.as_str() != se::ANNOTATION_LAST_APPLIED
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (labels, annotations)
}

fn new_slice(
    ep: &Endpoints,
    ports: Vec<EndpointPort>,
    address_type: &str,
    name: Option<String>,
) -> EndpointSlice {
    let (labels, annotations) = mirrored_meta(ep);
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: name.is_none().then(|| format!("{}-", ep.name_any())),
            name,
            namespace: ep.namespace(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: Some(vec![super::controller_utils::controller_ref(ep)]),
            ..ObjectMeta::default()
        },
        address_type: address_type.into(),
        endpoints: Vec::new(),
        ports: Some(ports),
    }
}

type Key = (String, PortsKey);

/// What to write so that `existing` (the mirrored slices, sorted by name) mirror `ep`
/// (upstream's mirroring reconciler): per address type and port set one slice, the
/// first existing one rewritten when anything differs, the rest deleted.
pub fn plan(ep: &Endpoints, existing: &[Arc<EndpointSlice>], max_per_subset: usize) -> MirrorPlan {
    let mut out = MirrorPlan::default();
    let mut desired: BTreeMap<Key, (Vec<EndpointPort>, EndpointSet)> = BTreeMap::new();
    for subset in repack_subsets(ep.subsets.as_deref().unwrap_or_default()) {
        let ports: Vec<EndpointPort> = subset
            .ports
            .iter()
            .flatten()
            .map(|p| EndpointPort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(p.port),
                protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: p.app_protocol.clone(),
            })
            .collect();
        let pk = ports_key(&ports);
        let addresses = subset.addresses.iter().flatten().map(|a| (a, true)).chain(
            subset
                .not_ready_addresses
                .iter()
                .flatten()
                .map(|a| (a, false)),
        );
        let mut added = 0;
        for (a, ready) in addresses {
            if added >= max_per_subset {
                out.skipped += 1;
                continue;
            }
            let Some((endpoint, address_type)) = address_to_endpoint(a, ready) else {
                out.skipped += 1;
                continue;
            };
            added += 1;
            desired
                .entry((address_type.to_string(), pk.clone()))
                .or_insert_with(|| (ports.clone(), EndpointSet::new()))
                .1
                .insert(endpoint_key(&endpoint), endpoint);
        }
    }
    let mut by_key: BTreeMap<Key, Vec<&EndpointSlice>> = BTreeMap::new();
    for s in existing {
        let k = (
            s.address_type.clone(),
            ports_key(s.ports.as_deref().unwrap_or_default()),
        );
        by_key.entry(k).or_default().push(s);
    }
    let (labels, annotations) = mirrored_meta(ep);
    for (k, (ports, wanted)) in &desired {
        let slices = by_key.get(k).map(Vec::as_slice).unwrap_or_default();
        let first = slices.first();
        out.delete
            .extend(slices.iter().skip(1).map(|s| (*s).clone()));
        if let Some(first) = first {
            let same_endpoints = first.endpoints.len() == wanted.len()
                && first.endpoints.iter().all(|e| {
                    wanted
                        .get(&endpoint_key(e))
                        .is_some_and(|w| endpoints_equal_beyond_key(w, e))
                });
            let same_meta = first.metadata.labels.as_ref() == Some(&labels)
                && first.metadata.annotations.clone().unwrap_or_default() == annotations;
            if same_endpoints && same_meta {
                continue;
            }
        }
        let mut slice = new_slice(ep, ports.clone(), &k.0, first.map(|s| s.name_any()));
        if let Some(first) = first {
            slice.metadata.resource_version = first.metadata.resource_version.clone();
        }
        slice.endpoints = wanted.values().take(max_per_subset).cloned().collect();
        if first.is_some() {
            out.update.push(slice);
        } else {
            out.create.push(slice);
        }
    }
    for (k, slices) in &by_key {
        if !desired.contains_key(k) {
            out.delete.extend(slices.iter().map(|s| (*s).clone()));
        }
    }
    // Rather than create one slice and delete another, rewrite the one to be deleted.
    let types: BTreeSet<String> = out.delete.iter().map(|s| s.address_type.clone()).collect();
    for t in types {
        while let (Some(ci), Some(di)) = (
            out.create.iter().position(|s| s.address_type == t),
            out.delete.iter().position(|s| s.address_type == t),
        ) {
            let old = out.delete.remove(di);
            let mut slice = out.create.remove(ci);
            slice.metadata.generate_name = None;
            slice.metadata.name = old.metadata.name.clone();
            slice.metadata.resource_version = old.metadata.resource_version.clone();
            out.update.push(slice);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn endpoints(v: serde_json::Value) -> Endpoints {
        serde_json::from_value(v).unwrap()
    }

    fn apply(existing: &mut Vec<Arc<EndpointSlice>>, plan: MirrorPlan) {
        for d in &plan.delete {
            existing.retain(|s| s.metadata.name != d.metadata.name);
        }
        for u in plan.update {
            existing.retain(|s| s.metadata.name != u.metadata.name);
            existing.push(Arc::new(u));
        }
        for (i, mut c) in plan.create.into_iter().enumerate() {
            c.metadata.name = Some(format!("m-{i}-{}", existing.len()));
            existing.push(Arc::new(c));
        }
        existing.sort_by_key(|s| s.name_any());
    }

    #[test]
    fn subsets_are_mirrored_per_address_type_and_settle() {
        let ep = endpoints(
            json!({"metadata": {"name": "ext", "namespace": "d", "uid": "u",
            "labels": {"x": "y"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "a": "b"}},
            "subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}, {"ip": "bogus"}],
                "notReadyAddresses": [{"ip": "10.0.0.2"}],
                "ports": [{"name": "p", "port": 5432}]}]}),
        );
        let mut existing = Vec::new();
        let p = plan(&ep, &existing, 1000);
        assert_eq!((p.create.len(), p.skipped), (2, 1));
        let v4 = p.create.iter().find(|s| s.address_type == "IPv4").unwrap();
        assert_eq!(v4.endpoints.len(), 2);
        assert_eq!(v4.labels().get("x").map(String::as_str), Some("y"));
        assert_eq!(
            v4.labels().get(se::LABEL_MANAGED_BY).map(String::as_str),
            Some(MANAGED_BY)
        );
        assert_eq!(
            v4.metadata.annotations,
            Some(BTreeMap::from([("a".into(), "b".into())]))
        );
        apply(&mut existing, p);
        let again = plan(&ep, &existing, 1000);
        assert!(again.create.is_empty() && again.update.is_empty() && again.delete.is_empty());
    }

    #[test]
    fn addresses_beyond_the_subset_maximum_are_skipped() {
        let addrs: Vec<_> = (0..5)
            .map(|i| json!({"ip": format!("10.0.0.{i}")}))
            .collect();
        let ep = endpoints(json!({"metadata": {"name": "ext", "namespace": "d"},
            "subsets": [{"addresses": addrs, "ports": [{"port": 80}]}]}));
        let p = plan(&ep, &[], 3);
        assert_eq!((p.create[0].endpoints.len(), p.skipped), (3, 2));
    }
}
