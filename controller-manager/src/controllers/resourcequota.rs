//! resourcequota: keeps every ResourceQuota's `status` true to what exists in its
//! namespace (upstream's pkg/controller/resourcequota): `status.hard` mirrors
//! `spec.hard`, `status.used` sums, for each resource named there, what the namespace's
//! objects use (pods still running, Services, claims, objects counted by kind), within
//! the quota's scopes. The apiserver's ResourceQuota admission refuses creates beyond the
//! limits and charges the quota as they happen; this controller recomputes from the
//! objects, which also gives back what deleted or finished objects held.
//!
//! Pods, Services and PersistentVolumeClaims come from the shared informers, and their
//! changes re-sync the quotas of their namespace (upstream's replenishment); other kinds
//! (`configmaps`, `secrets`, `count/<resource>.<group>`...) are counted with a list of
//! their metadata at each sync. Every quota is recomputed at least every
//! `--resource-quota-sync-period` (5 minutes).

use std::sync::Arc;
use std::time::Duration;

use api_types::quota::{self, ResourceList};
use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, ResourceQuota, Service};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use tracing::warn;

use super::Context;
use crate::cache::Pod;
use crate::informers::{key, Kind};

pub const NAME: &str = "resourcequota";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("counting {resource} in {namespace}: {source}")]
    Count {
        resource: String,
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("updating the status of ResourceQuota {quota}: {source}")]
    Status {
        quota: String,
        #[source]
        source: kube::Error,
    },
}

struct State {
    ctx: Context,
    quotas: Store<ResourceQuota>,
    pods: Store<Pod>,
    services: Store<Service>,
    claims: Store<PersistentVolumeClaim>,
}

impl State {
    /// The quotas of a namespace, to re-sync when something in it changes.
    fn quotas_in(&self, ns: Option<String>) -> Vec<ObjectRef<ResourceQuota>> {
        let Some(ns) = ns else {
            return Vec::new();
        };
        self.quotas
            .state()
            .iter()
            .filter(|q| q.namespace().as_deref() == Some(ns.as_str()))
            .map(|q| ObjectRef::from_obj(q.as_ref()))
            .collect()
    }
}

pub fn start(ctx: &Context) -> BoxFuture<'static, ()> {
    let quotas = ctx.informers.store::<ResourceQuota>();
    let state = Arc::new(State {
        ctx: ctx.clone(),
        quotas: quotas.clone(),
        pods: ctx.informers.store::<Pod>(),
        services: ctx.informers.store::<Service>(),
        claims: ctx.informers.store::<PersistentVolumeClaim>(),
    });
    fn replenish<K: Kind>(
        ctx: &Context,
        state: &Arc<State>,
    ) -> (
        impl Stream<Item = Arc<K>> + Send + 'static,
        impl Fn(Arc<K>) -> Vec<ObjectRef<ResourceQuota>> + Send + Sync + 'static,
    ) {
        let state = state.clone();
        (ctx.informers.subscribe::<K>(), move |o: Arc<K>| {
            state.quotas_in(o.namespace())
        })
    }
    let (pods, on_pod) = replenish::<Pod>(ctx, &state);
    let (services, on_service) = replenish::<Service>(ctx, &state);
    let (claims, on_claim) = replenish::<PersistentVolumeClaim>(ctx, &state);
    Controller::for_shared_stream(ctx.informers.subscribe::<ResourceQuota>(), quotas)
        .with_config(
            controller::Config::default().concurrency(ctx.options.concurrent_resource_quota_syncs),
        )
        .watches_shared_stream(pods, on_pod)
        .watches_shared_stream(services, on_service)
        .watches_shared_stream(claims, on_claim)
        .run(reconcile, error_policy, state)
        .for_each(|_| async {})
        .boxed()
}

async fn reconcile(q: Arc<ResourceQuota>, state: Arc<State>) -> Result<Action, Error> {
    let metrics = state.ctx.metrics.clone();
    metrics.observe(NAME, sync(q, state)).await
}

fn error_policy(_q: Arc<ResourceQuota>, error: &Error, _state: Arc<State>) -> Action {
    warn!(%error, "sync failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// The kind a resource name in `hard` counts, as (group, plural).
fn kind_of(resource: &str) -> Option<(String, String)> {
    if let Some(counted) = resource.strip_prefix("count/") {
        return Some(match counted.split_once('.') {
            Some((plural, group)) => (group.to_string(), plural.to_string()),
            None => (String::new(), counted.to_string()),
        });
    }
    let core = |p: &str| Some((String::new(), p.to_string()));
    match resource {
        "pods" | "cpu" | "memory" | "ephemeral-storage" => core("pods"),
        r if r.starts_with("requests.") && r != "requests.storage" => core("pods"),
        r if r.starts_with("limits.") || r.starts_with("hugepages-") => core("pods"),
        "services" | "services.nodeports" | "services.loadbalancers" => core("services"),
        "persistentvolumeclaims" | "requests.storage" => core("persistentvolumeclaims"),
        r if r.contains(".storageclass.storage.k8s.io/") => core("persistentvolumeclaims"),
        "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas" => core(resource),
        _ => None,
    }
}

/// What the objects of `group`/`plural` in `ns` use, within the quota's scopes.
async fn usage_of(
    state: &State,
    spec: &serde_json::Value,
    ns: &str,
    group: &str,
    plural: &str,
) -> Result<ResourceList, Error> {
    fn sum<K: Resource + Serialize>(
        objs: Vec<Arc<K>>,
        ns: &str,
        spec: &serde_json::Value,
        group: &str,
        plural: &str,
    ) -> ResourceList {
        let mut total = ResourceList::new();
        for o in objs
            .iter()
            .filter(|o| o.meta().namespace.as_deref() == Some(ns))
        {
            let v = serde_json::to_value(o.as_ref()).unwrap_or_default();
            if quota::scopes_match(spec, plural, group, &v) {
                total = quota::add(&total, &quota::usage(group, plural, &v));
            }
        }
        total
    }
    Ok(match (group, plural) {
        ("", "pods") => sum(state.pods.state(), ns, spec, group, plural),
        ("", "services") => sum(state.services.state(), ns, spec, group, plural),
        ("", "persistentvolumeclaims") => sum(state.claims.state(), ns, spec, group, plural),
        _ => {
            let Some(info) = api_types::resources::versions_of(group)
                .into_iter()
                .find_map(|v| api_types::resources::find(group, v, plural))
            else {
                // A kind this cluster does not serve: none of it exists.
                return Ok(ResourceList::new());
            };
            let resource = ApiResource {
                group: info.group.into(),
                version: info.version.into(),
                api_version: info.api_version(),
                kind: info.kind.into(),
                plural: info.plural.into(),
            };
            let api: Api<DynamicObject> =
                Api::namespaced_with(state.ctx.client.clone(), ns, &resource);
            let listed = api
                .list_metadata(&ListParams::default())
                .await
                .map_err(|source| Error::Count {
                    resource: quota::count_name(group, plural),
                    namespace: ns.to_string(),
                    source,
                })?;
            let mut total = ResourceList::new();
            if quota::scopes_match(spec, plural, group, &serde_json::Value::Null) {
                for _ in &listed.items {
                    total = quota::add(
                        &total,
                        &quota::usage(group, plural, &serde_json::Value::Null),
                    );
                }
            }
            total
        }
    })
}

/// Upstream's `syncResourceQuota`.
async fn sync(q: Arc<ResourceQuota>, state: Arc<State>) -> Result<Action, Error> {
    let resync = Action::requeue(state.ctx.options.resource_quota_sync_period);
    if q.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = q.namespace().unwrap_or_default();
    let spec = serde_json::to_value(q.spec.clone().unwrap_or_default()).unwrap_or_default();
    let hard = quota::parse_list(spec.get("hard"));
    let mut kinds: Vec<(String, String)> = hard.keys().filter_map(|k| kind_of(k)).collect();
    kinds.sort();
    kinds.dedup();
    let mut used_all = ResourceList::new();
    for (group, plural) in &kinds {
        used_all = quota::add(
            &used_all,
            &usage_of(&state, &spec, &ns, group, plural).await?,
        );
    }
    // Every limited resource has a usage, zero when nothing uses it.
    let used: ResourceList = hard
        .iter()
        .map(|(k, h)| {
            let zero = api_types::quantity::Quantity::from_units(0, h.format());
            (k.clone(), used_all.get(k).copied().unwrap_or(zero))
        })
        .collect();
    let status = q.status.clone().unwrap_or_default();
    let as_list = |m: Option<
        &std::collections::BTreeMap<
            String,
            k8s_openapi::apimachinery::pkg::api::resource::Quantity,
        >,
    >|
     -> ResourceList {
        m.into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.0.parse().ok()?)))
            .collect()
    };
    if as_list(status.hard.as_ref()) == hard && as_list(status.used.as_ref()) == used {
        return Ok(resync);
    }
    let mut updated = (*q).clone();
    updated.status = Some(
        serde_json::from_value(serde_json::json!({
            "hard": quota::to_json(&hard),
            "used": quota::to_json(&used),
        }))
        .unwrap_or_default(),
    );
    let api: Api<ResourceQuota> = Api::namespaced(state.ctx.client.clone(), &ns);
    match api
        .replace_status(&q.name_any(), &PostParams::default(), &updated)
        .await
    {
        Ok(_) => Ok(resync),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(Action::await_change()),
        // Admission charged it meanwhile: look again at once.
        Err(kube::Error::Api(s)) if s.is_conflict() => {
            Ok(Action::requeue(Duration::from_millis(100)))
        }
        Err(source) => Err(Error::Status {
            quota: key(q.as_ref()),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names_map_to_the_kinds_they_count() {
        let core = |p: &str| Some((String::new(), p.to_string()));
        assert_eq!(kind_of("requests.cpu"), core("pods"));
        assert_eq!(kind_of("limits.memory"), core("pods"));
        assert_eq!(kind_of("requests.storage"), core("persistentvolumeclaims"));
        assert_eq!(
            kind_of("fast.storageclass.storage.k8s.io/requests.storage"),
            core("persistentvolumeclaims")
        );
        assert_eq!(kind_of("services.nodeports"), core("services"));
        assert_eq!(kind_of("secrets"), core("secrets"));
        assert_eq!(
            kind_of("count/deployments.apps"),
            Some(("apps".to_string(), "deployments".to_string()))
        );
        assert_eq!(kind_of("count/configmaps"), core("configmaps"));
        assert_eq!(kind_of("bogus"), None);
    }
}
