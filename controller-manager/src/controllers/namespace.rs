//! namespace: a namespace being deleted is emptied of every namespaced resource the API
//! serves, then its `kubernetes` finalizer is removed through `namespaces/{name}/finalize`
//! so the apiserver can delete it (upstream's namespace-controller and its
//! `NamespacedResourcesDeleter`). While it works, the namespace carries upstream's
//! deletion conditions, so `kubectl describe namespace` says what is left and why.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{stream, FutureExt, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition, NamespaceStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::core::ApiResource;
use kube::discovery::{verbs, Discovery, Scope};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;
use parking_lot::Mutex;
use tracing::{debug, info, warn};

use super::Context;
use crate::cache::Pod;

pub const NAME: &str = "namespace";
/// The finalizer the apiserver puts in every namespace's spec and this controller removes.
pub const FINALIZER: &str = "kubernetes";
/// How long upstream waits for objects held by finalizers before looking again.
const FINALIZER_ESTIMATE_SECONDS: i64 = 15;
/// Resource types emptied at once, per namespace.
const PARALLEL_RESOURCES: usize = 4;
/// Upstream's per-namespace rate limiter: 5 ms doubling to 60 s.
const BACKOFF_BASE: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

pub const DISCOVERY_FAILURE: &str = "NamespaceDeletionDiscoveryFailure";
pub const GROUP_VERSION_PARSING_FAILURE: &str = "NamespaceDeletionGroupVersionParsingFailure";
pub const CONTENT_FAILURE: &str = "NamespaceDeletionContentFailure";
pub const CONTENT_REMAINING: &str = "NamespaceContentRemaining";
pub const FINALIZERS_REMAINING: &str = "NamespaceFinalizersRemaining";

/// The conditions this controller owns, in upstream's order, with the reason and message
/// each has while nothing is wrong.
const CONDITIONS: [(&str, &str, &str); 5] = [
    (
        DISCOVERY_FAILURE,
        "ResourcesDiscovered",
        "All resources successfully discovered",
    ),
    (
        GROUP_VERSION_PARSING_FAILURE,
        "ParsedGroupVersions",
        "All legacy kube types successfully parsed",
    ),
    (
        CONTENT_FAILURE,
        "ContentDeleted",
        "All content successfully deleted, may be waiting on finalization",
    ),
    (
        CONTENT_REMAINING,
        "ContentRemoved",
        "All content successfully removed",
    ),
    (
        FINALIZERS_REMAINING,
        "ContentRemoved",
        "All content successfully removed",
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading namespace {name}: {source}")]
    Get {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("marking namespace {name} Terminating: {source}")]
    UpdateStatus {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("removing the {FINALIZER} finalizer from namespace {name}: {source}")]
    Finalize {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("namespace {name} changed its uid while being finalized")]
    UidChanged { name: String },
    #[error("deleting the content of namespace {name}: {}", errors.join("; "))]
    Content { name: String, errors: Vec<String> },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

struct State {
    ctx: Context,
    pods: Store<Pod>,
    /// Consecutive failures per namespace, for the error backoff.
    failures: Mutex<HashMap<String, u32>>,
}

pub fn start(ctx: &Context) -> BoxFuture<'static, ()> {
    let namespaces = ctx.informers.subscribe::<Namespace>();
    let namespace_store = ctx.informers.store::<Namespace>();
    let pods = ctx.informers.subscribe::<Pod>();
    let state = Arc::new(State {
        ctx: ctx.clone(),
        pods: ctx.informers.store::<Pod>(),
        failures: Mutex::new(HashMap::new()),
    });
    let terminating = namespace_store.clone();
    Controller::for_shared_stream(namespaces, namespace_store)
        .with_config(
            controller::Config::default().concurrency(ctx.options.concurrent_namespace_syncs),
        )
        // A pod that finishes terminating may be the last thing a namespace waits for;
        // looking again then beats waiting out upstream's grace-period estimate.
        .watches_shared_stream(pods, move |pod: Arc<Pod>| {
            let ns = pod.namespace()?;
            let deleting = terminating
                .get(&ObjectRef::new(&ns))?
                .metadata
                .deletion_timestamp
                .is_some();
            deleting.then(|| ObjectRef::new(&ns))
        })
        .run(reconcile, error_policy, state)
        .for_each(|_| async {})
        .boxed()
}

async fn reconcile(ns: Arc<Namespace>, state: Arc<State>) -> Result<Action> {
    if ns.metadata.deletion_timestamp.is_none() {
        return Ok(Action::await_change());
    }
    let metrics = state.ctx.metrics.clone();
    let name = ns.name_any();
    let result = metrics.observe(NAME, sync(&name, &state)).await;
    if result.is_ok() {
        state.failures.lock().remove(&name);
    }
    result
}

fn error_policy(ns: Arc<Namespace>, error: &Error, state: Arc<State>) -> Action {
    let mut failures = state.failures.lock();
    let n = failures.entry(ns.name_any()).or_default();
    *n = n.saturating_add(1);
    let delay = BACKOFF_BASE
        .saturating_mul(2u32.saturating_pow(*n - 1))
        .min(BACKOFF_MAX);
    warn!(%error, retry_in = ?delay, "namespace deletion incomplete");
    Action::requeue(delay)
}

/// Upstream's `NamespacedResourcesDeleter.Delete`.
async fn sync(name: &str, state: &State) -> Result<Action> {
    let api: Api<Namespace> = Api::all(state.ctx.client.clone());
    // Several controllers edit a namespace while it terminates: act on the live object.
    let Some(mut ns) = api.get_opt(name).await.map_err(|source| Error::Get {
        name: name.to_string(),
        source,
    })?
    else {
        return Ok(Action::await_change());
    };
    let Some(deleted_at) = ns.metadata.deletion_timestamp.clone() else {
        return Ok(Action::await_change());
    };
    if phase(&ns) != Some("Terminating") {
        ns.status.get_or_insert_with(Default::default).phase = Some("Terminating".into());
        ns = match replace_status(&api, &ns).await {
            Ok(ns) => ns,
            Err(e) if status_code(&e) == Some(404) => return Ok(Action::await_change()),
            Err(source) => {
                return Err(Error::UpdateStatus {
                    name: name.to_string(),
                    source,
                })
            }
        };
    }
    if !finalizers(&ns).iter().any(|f| f == FINALIZER) {
        // Ours is done; other finalizers belong to someone else.
        return Ok(Action::await_change());
    }

    let estimate = delete_all_content(state, &api, &mut ns, deleted_at.0).await?;
    if estimate > 0 {
        // Upstream's ResourcesRemainingError: look again in about half the estimate.
        let wait = Duration::from_secs((estimate / 2 + 1) as u64);
        debug!(namespace = name, ?wait, "content remains");
        return Ok(Action::requeue(wait));
    }
    finalize(&api, ns).await?;
    info!(namespace = name, "namespace emptied and finalized");
    Ok(Action::await_change())
}

fn phase(ns: &Namespace) -> Option<&str> {
    ns.status.as_ref()?.phase.as_deref()
}

fn finalizers(ns: &Namespace) -> Vec<String> {
    ns.spec
        .as_ref()
        .and_then(|s| s.finalizers.clone())
        .unwrap_or_default()
}

async fn replace_status(api: &Api<Namespace>, ns: &Namespace) -> kube::Result<Namespace> {
    api.replace_status(&ns.name_any(), &PostParams::default(), ns)
        .await
}

/// The HTTP status of an API error.
fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Removes our finalizer through the finalize subresource, retrying on conflicts with
/// the latest object as long as it is the same namespace.
async fn finalize(api: &Api<Namespace>, mut ns: Namespace) -> Result<()> {
    let name = ns.name_any();
    loop {
        let mut finalized = ns.clone();
        let mut kept = finalizers(&ns);
        kept.retain(|f| f != FINALIZER);
        kept.sort();
        kept.dedup();
        finalized
            .spec
            .get_or_insert_with(Default::default)
            .finalizers = Some(kept);
        match api
            .replace_subresource("finalize", &name, &PostParams::default(), &finalized)
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if status_code(&e) == Some(404) => return Ok(()),
            Err(e) if status_code(&e) == Some(409) => {
                let latest = match api.get_opt(&name).await {
                    Ok(Some(latest)) => latest,
                    Ok(None) => return Ok(()),
                    Err(source) => return Err(Error::Get { name, source }),
                };
                if latest.metadata.uid != ns.metadata.uid {
                    return Err(Error::UidChanged { name });
                }
                ns = latest;
            }
            Err(source) => return Err(Error::Finalize { name, source }),
        }
    }
}

/// What deleting one resource type left behind.
#[derive(Debug, Default, PartialEq)]
struct Remaining {
    /// Seconds to wait before looking again (0: nothing to wait for).
    estimate: i64,
    count: usize,
    /// finalizer → how many remaining objects carry it.
    finalizers: BTreeMap<String, usize>,
}

/// Deletes everything in the namespace, updates its conditions, and returns how many
/// seconds to wait for what remains (0 when the namespace is empty).
async fn delete_all_content(
    state: &State,
    api: &Api<Namespace>,
    ns: &mut Namespace,
    deleted_at: Timestamp,
) -> Result<i64> {
    let name = ns.name_any();
    let client = state.ctx.client.clone();
    let mut conditions = Conditions::default();
    let mut errors = Vec::new();

    let resources: Vec<(ApiResource, Vec<String>)> =
        match Discovery::new(client.clone()).run().await {
            Ok(discovery) => discovery
                .groups()
                .flat_map(|g| g.recommended_resources())
                .filter(|(_, caps)| {
                    caps.scope == Scope::Namespaced && caps.supports_operation(verbs::DELETE)
                })
                .map(|(ar, caps)| (ar, caps.operations))
                .collect(),
            Err(e) => {
                // Upstream goes on with what it found; kube's discovery is all or nothing.
                conditions.discovery_failed(e.to_string());
                errors.push(format!("discovering resources: {e}"));
                Vec::new()
            }
        };

    let pod_estimate = estimate_for_pods(&state.pods, &name, deleted_at);
    let results: Vec<_> = stream::iter(resources)
        .map(|(ar, verbs)| {
            let client = client.clone();
            let name = name.clone();
            async move {
                let estimate = if ar.group.is_empty() && ar.plural == "pods" {
                    pod_estimate
                } else {
                    0
                };
                let result = delete_resource(client, &name, &ar, &verbs, estimate).await;
                (ar, result)
            }
        })
        .buffer_unordered(PARALLEL_RESOURCES)
        .collect()
        .await;

    let mut estimate = 0;
    let mut remaining: BTreeMap<String, usize> = BTreeMap::new();
    let mut remaining_finalizers: BTreeMap<String, usize> = BTreeMap::new();
    for (ar, (left, error)) in results {
        if let Some(e) = error {
            conditions.content_failed(e.clone());
            errors.push(e);
        }
        estimate = estimate.max(left.estimate);
        if left.count > 0 {
            remaining.insert(format!("{}.{}", ar.plural, ar.group), left.count);
            for (f, n) in left.finalizers {
                *remaining_finalizers.entry(f).or_default() += n;
            }
        }
    }
    conditions.remaining(&remaining, &remaining_finalizers);

    // Always written when changed: a condition that went back to "ok" must say so.
    let status = ns.status.get_or_insert_with(NamespaceStatus::default);
    if conditions.apply(status, Timestamp::now()) {
        match replace_status(api, ns).await {
            Ok(updated) => *ns = updated,
            Err(e) => {
                warn!(namespace = %name, error = %e, "could not update the namespace's conditions")
            }
        }
    }
    if !errors.is_empty() {
        return Err(Error::Content { name, errors });
    }
    Ok(estimate)
}

/// Upstream's `estimateGracefulTerminationForPods`: the longest grace period of a pod
/// still running, or 0 once that long has passed since the namespace was deleted.
fn estimate_for_pods(pods: &Store<Pod>, namespace: &str, deleted_at: Timestamp) -> i64 {
    let estimate = pods
        .state()
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
        .filter(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            !matches!(phase, Some("Succeeded") | Some("Failed"))
        })
        .filter_map(|p| p.spec.as_ref()?.termination_grace_period_seconds)
        .max()
        .unwrap_or(0);
    let waited = Timestamp::now().duration_since(deleted_at).as_secs();
    if waited >= estimate {
        0
    } else {
        estimate
    }
}

/// Upstream's `deleteAllContentForGroupVersionResource`: deletecollection where served,
/// else list and delete each, then list what remains.
async fn delete_resource(
    client: kube::Client,
    namespace: &str,
    ar: &ApiResource,
    verbs: &[String],
    estimate: i64,
) -> (Remaining, Option<String>) {
    let api: Api<DynamicObject> = Api::namespaced_with(client, namespace, ar);
    let can = |verb: &str| verbs.iter().any(|v| v == verb);
    let fail = |what: &str, e: kube::Error| {
        let remaining = Remaining {
            estimate,
            ..Remaining::default()
        };
        let message = format!("{what} {}.{}: {e}", ar.plural, ar.group);
        (remaining, Some(message))
    };
    // The namespace controller deletes generically: no orphaning, the garbage collector
    // deletes dependents in the background.
    let dp = DeleteParams::background();
    let mut collection_done = false;
    if can(verbs::DELETE_COLLECTION) {
        match api.delete_collection(&dp, &ListParams::default()).await {
            Ok(_) => collection_done = true,
            Err(e) if matches!(status_code(&e), Some(404 | 405)) => {}
            Err(e) => return fail("deleting the collection of", e),
        }
    }
    if !can(verbs::LIST) {
        return (
            Remaining {
                estimate,
                ..Remaining::default()
            },
            None,
        );
    }
    if !collection_done {
        let items = match api.list_metadata(&ListParams::default()).await {
            Ok(list) => list.items,
            Err(e) => return fail("listing", e),
        };
        for item in items {
            match api.delete(&item.name_any(), &dp).await {
                Ok(_) => {}
                Err(e) if matches!(status_code(&e), Some(404 | 405)) => {}
                Err(e) => return fail("deleting", e),
            }
        }
    }
    let items = match api.list_metadata(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(e) => return fail("listing", e),
    };
    if items.is_empty() {
        return (Remaining::default(), None);
    }
    let mut finalizers: BTreeMap<String, usize> = BTreeMap::new();
    for item in &items {
        for f in item.finalizers() {
            *finalizers.entry(f.clone()).or_default() += 1;
        }
    }
    let count = items.len();
    if estimate != 0 {
        return (
            Remaining {
                estimate,
                count,
                finalizers,
            },
            None,
        );
    }
    if !finalizers.is_empty() {
        // Finalizers are normal; give their controllers (and the GC) time.
        return (
            Remaining {
                estimate: FINALIZER_ESTIMATE_SECONDS,
                count,
                finalizers,
            },
            None,
        );
    }
    let message = format!(
        "unexpected items still remain in namespace: {namespace} for gvr: {}/{}, Resource={}",
        ar.group, ar.version, ar.plural
    );
    (
        Remaining {
            estimate,
            count,
            finalizers,
        },
        Some(message),
    )
}

/// Upstream's `namespaceConditionUpdater`: the failing conditions found in one pass;
/// every other condition this controller owns is set to its "ok" variant.
#[derive(Debug, Default)]
struct Conditions {
    failing: Vec<(&'static str, &'static str, String)>,
    content_errors: Vec<String>,
}

impl Conditions {
    fn discovery_failed(&mut self, message: String) {
        self.failing
            .push((DISCOVERY_FAILURE, "DiscoveryFailed", message));
    }

    fn content_failed(&mut self, message: String) {
        self.content_errors.push(message);
    }

    fn remaining(
        &mut self,
        resources: &BTreeMap<String, usize>,
        finalizers: &BTreeMap<String, usize>,
    ) {
        if !resources.is_empty() {
            let mut each: Vec<String> = resources
                .iter()
                .map(|(r, n)| format!("{r} has {n} resource instances"))
                .collect();
            each.sort();
            self.failing.push((
                CONTENT_REMAINING,
                "SomeResourcesRemain",
                format!("Some resources are remaining: {}", each.join(", ")),
            ));
        }
        if !finalizers.is_empty() {
            let mut each: Vec<String> = finalizers
                .iter()
                .map(|(f, n)| format!("{f} in {n} resource instances"))
                .collect();
            each.sort();
            self.failing.push((
                FINALIZERS_REMAINING,
                "SomeFinalizerRemain",
                format!("Some finalizers are remaining: {}", each.join(", ")),
            ));
        }
    }

    /// Sets the namespace's conditions; whether anything changed.
    fn apply(mut self, status: &mut NamespaceStatus, now: Timestamp) -> bool {
        if !self.content_errors.is_empty() {
            self.content_errors.sort();
            self.failing.push((
                CONTENT_FAILURE,
                "ContentDeletionFailed",
                format!(
                    "Failed to delete all resource types, {} remaining: {}",
                    self.content_errors.len(),
                    self.content_errors.join(", ")
                ),
            ));
        }
        let conditions = status.conditions.get_or_insert_with(Vec::new);
        let mut changed = false;
        for (kind, ok_reason, ok_message) in CONDITIONS {
            let (status, reason, message) = match self.failing.iter().find(|f| f.0 == kind) {
                Some((_, reason, message)) => ("True", *reason, message.clone()),
                None => ("False", ok_reason, ok_message.to_string()),
            };
            match conditions.iter_mut().find(|c| c.type_ == kind) {
                None => {
                    conditions.push(NamespaceCondition {
                        type_: kind.to_string(),
                        status: status.to_string(),
                        reason: Some(reason.to_string()),
                        message: Some(message),
                        last_transition_time: Some(Time(now)),
                    });
                    changed = true;
                }
                Some(old) => {
                    if old.status != status
                        || old.reason.as_deref() != Some(reason)
                        || old.message.as_deref() != Some(message.as_str())
                    {
                        if old.status != status {
                            old.last_transition_time = Some(Time(now));
                        }
                        old.status = status.to_string();
                        old.reason = Some(reason.to_string());
                        old.message = Some(message);
                        changed = true;
                    }
                }
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition<'a>(status: &'a NamespaceStatus, kind: &str) -> &'a NamespaceCondition {
        status
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == kind)
            .unwrap()
    }

    #[test]
    fn conditions_follow_upstream() {
        let mut status = NamespaceStatus::default();
        let mut c = Conditions::default();
        c.remaining(
            &BTreeMap::from([("configmaps.".to_string(), 2), ("pods.".to_string(), 1)]),
            &BTreeMap::from([("example.com/hold".to_string(), 2)]),
        );
        c.content_failed("deleting secrets.: boom".into());
        assert!(c.apply(&mut status, Timestamp::now()));
        let remaining = condition(&status, CONTENT_REMAINING);
        assert_eq!(remaining.status, "True");
        assert_eq!(remaining.reason.as_deref(), Some("SomeResourcesRemain"));
        assert_eq!(
            remaining.message.as_deref(),
            Some("Some resources are remaining: configmaps. has 2 resource instances, pods. has 1 resource instances")
        );
        let finalizers = condition(&status, FINALIZERS_REMAINING);
        assert_eq!(finalizers.reason.as_deref(), Some("SomeFinalizerRemain"));
        assert_eq!(
            finalizers.message.as_deref(),
            Some("Some finalizers are remaining: example.com/hold in 2 resource instances")
        );
        let failure = condition(&status, CONTENT_FAILURE);
        assert_eq!(failure.reason.as_deref(), Some("ContentDeletionFailed"));
        assert_eq!(
            failure.message.as_deref(),
            Some("Failed to delete all resource types, 1 remaining: deleting secrets.: boom")
        );
        let discovered = condition(&status, DISCOVERY_FAILURE);
        assert_eq!(discovered.status, "False");
        assert_eq!(discovered.reason.as_deref(), Some("ResourcesDiscovered"));

        // The same pass again changes nothing; a clean pass resets every condition.
        let mut again = Conditions::default();
        again.remaining(
            &BTreeMap::from([("configmaps.".to_string(), 2), ("pods.".to_string(), 1)]),
            &BTreeMap::from([("example.com/hold".to_string(), 2)]),
        );
        again.content_failed("deleting secrets.: boom".into());
        assert!(!again.apply(&mut status, Timestamp::now()));
        assert!(Conditions::default().apply(&mut status, Timestamp::now()));
        assert_eq!(status.conditions.as_ref().unwrap().len(), 5);
        assert!(status
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .all(|c| c.status == "False"));
        assert_eq!(
            condition(&status, CONTENT_REMAINING).reason.as_deref(),
            Some("ContentRemoved")
        );
    }
}
