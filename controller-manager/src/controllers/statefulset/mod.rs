//! statefulset: runs a StatefulSet's pods with stable identities and storage (upstream's
//! pkg/controller/statefulset).
//!
//! - Identity: the pod of ordinal `n` is `<set>-<n>` (ordinals from `spec.ordinals.start`),
//!   its hostname is its name and its subdomain `spec.serviceName`; it carries the labels
//!   `statefulset.kubernetes.io/pod-name`, `apps.kubernetes.io/pod-index` and
//!   `controller-revision-hash` (the name of the revision it was made from).
//! - Storage: each volumeClaimTemplate gives the pod a claim `<template>-<set>-<n>`,
//!   created before the pod; `persistentVolumeClaimRetentionPolicy` decides whether the
//!   claims are owned by the set (deleted with it) or by a scaled-down pod (deleted with
//!   it), through ownerReferences the garbage collector acts on.
//! - `podManagementPolicy: OrderedReady` (the default) creates pods one at a time in
//!   ordinal order, each once its predecessors are Running and Ready (and available after
//!   `minReadySeconds`), and removes them from the highest ordinal down, one at a time;
//!   `Parallel` creates and deletes them all at once. Failed and succeeded pods are
//!   deleted, and recreated under the same name.
//! - Revisions: every template the set has had is a ControllerRevision (upstream's
//!   `getPatch` as data). `RollingUpdate` replaces pods at or above the partition whose
//!   revision is not the update revision, the highest ordinal first, one at a time, each
//!   after the one before is healthy at the new revision; pods below the partition are
//!   (re)created at the current revision. `OnDelete` only gives the update revision to
//!   pods that are recreated. Once every pod is updated and ready, the update revision
//!   becomes the current one. History beyond `revisionHistoryLimit` is pruned.
//!
//! Pod names are the expectations here: a creation the cache has not shown yet fails with
//! AlreadyExists and is simply waited for, so the controller keeps none.

mod control;
mod identity;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use api_types::selector::LabelSelector;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim};
use kube::api::{Api, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use tracing::warn;

use super::controller_utils::{adopt as adopt_object, publish_event, release as release_object};
use super::controller_utils::{controller_of, controller_of_kind, controller_ref, ready_since};
use super::history::{
    equal_revision, equal_revisions, new_revision, next_revision, owned_revisions, prunable,
};
use super::Context;
use crate::cache::Pod;
use crate::informers::key;
use control::SetSync;
use identity::*;

pub const NAME: &str = "statefulset";
const COMPONENT: &str = "statefulset-controller";

/// Upstream's `StatefulSetPodNameLabel`.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// Upstream's `PodIndexLabel`.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
const DEFAULT_REVISION_HISTORY_LIMIT: i32 = 10;
const RETAIN: &str = "Retain";
const DELETE: &str = "Delete";
/// How soon to look again while something outside our own writes is awaited (a claim
/// of a deleted pod being collected, a creation the cache has not shown).
const RECHECK: Duration = Duration::from_secs(5);

type K8sPod = k8s_openapi::api::core::v1::Pod;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("revision {revision} of {set} does not hold a pod template: {source}")]
    BadRevision {
        set: String,
        revision: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing controller revisions of {set}: {source}")]
    Revision {
        set: String,
        #[source]
        source: kube::Error,
    },
    #[error("create Pod {pod} in StatefulSet {set} failed error: {source}")]
    CreatePod {
        set: String,
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to create PVC {claim}: {source}")]
    CreateClaim {
        claim: String,
        #[source]
        source: kube::Error,
    },
    #[error("pvc {claim} is being deleted")]
    ClaimDeleting { claim: String },
    #[error("updating the ownerReferences of PVC {claim}: {source}")]
    UpdateClaim {
        claim: String,
        #[source]
        source: kube::Error,
    },
    #[error("delete Pod {pod} in StatefulSet {set} failed error: {source}")]
    DeletePod {
        set: String,
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("update Pod {pod} in StatefulSet {set} failed error: {source}")]
    UpdatePod {
        set: String,
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("adopting {what}: {source}")]
    Adopt {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("releasing pod {pod}: {source}")]
    Release {
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("reading {set} before adopting: {source}")]
    Recheck {
        set: String,
        #[source]
        source: kube::Error,
    },
    #[error("{set} is gone or being deleted: not adopting")]
    CannotAdopt { set: String },
    #[error("updating the status of {set}: {source}")]
    Status {
        set: String,
        #[source]
        source: kube::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub fn start(ctx: &Context) -> BoxFuture<'static, ()> {
    let sets = ctx.informers.store::<StatefulSet>();
    let state = Arc::new(State {
        ctx: ctx.clone(),
        recorder: ctx.recorder(COMPONENT),
        sets: sets.clone(),
        pods: ctx.informers.store::<Pod>(),
        claims: ctx.informers.store::<PersistentVolumeClaim>(),
        revisions: ctx.informers.store::<ControllerRevision>(),
    });
    let set_events = ctx.informers.subscribe::<StatefulSet>();
    let pod_events = ctx.informers.subscribe::<Pod>();
    let claim_events = ctx.informers.subscribe::<PersistentVolumeClaim>();
    let for_pods = state.clone();
    Controller::for_shared_stream(set_events, sets)
        .with_config(
            controller::Config::default().concurrency(ctx.options.concurrent_statefulset_syncs),
        )
        .watches_shared_stream(pod_events, move |pod: Arc<Pod>| for_pods.sets_of_pod(&pod))
        .watches_shared_stream(claim_events, |claim: Arc<PersistentVolumeClaim>| {
            sets_of_claim(&claim)
        })
        .run(reconcile, error_policy, state)
        .for_each(|_| async {})
        .boxed()
}

struct State {
    ctx: Context,
    recorder: Recorder,
    sets: Store<StatefulSet>,
    pods: Store<Pod>,
    claims: Store<PersistentVolumeClaim>,
    revisions: Store<ControllerRevision>,
}

impl State {
    /// The sets a pod change concerns (upstream's pod event handlers): its controller, or
    /// for an orphan every set in its namespace whose selector matches it.
    fn sets_of_pod(&self, pod: &Pod) -> Vec<ObjectRef<StatefulSet>> {
        let ns = pod.namespace().unwrap_or_default();
        if let Some(c) = controller_of(pod) {
            return match controller_of_kind::<StatefulSet, _>(pod) {
                Some(_) => vec![ObjectRef::new(&c.name).within(&ns)],
                None => Vec::new(),
            };
        }
        if pod.metadata.deletion_timestamp.is_some() {
            return Vec::new();
        }
        self.sets
            .state()
            .into_iter()
            .filter(|s| {
                s.namespace().as_deref() == Some(ns.as_str())
                    && selector(s).is_ok_and(|sel| sel.matches(pod.labels()))
            })
            .map(|s| ObjectRef::from_obj(s.as_ref()))
            .collect()
    }

    /// Publishes an event about `set` in the background, naming the pod or claim it is
    /// about as `related`. The same event again (a pod failing to be created at every
    /// retry) becomes a series of one Event, as upstream's recorder aggregates them.
    fn event(
        &self,
        set: &StatefulSet,
        related: Option<ObjectReference>,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let recorder = self.recorder.clone();
        let reference = set.object_ref(&());
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: related,
        };
        publish_event(recorder, reference, event);
    }

    fn pod_event(&self, set: &StatefulSet, verb: &str, pod: &str, error: Option<&Error>) {
        let related = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(pod.into()),
            namespace: set.namespace(),
            ..ObjectReference::default()
        };
        let title = title(verb);
        match error {
            None => self.event(
                set,
                Some(related),
                EventType::Normal,
                &format!("Successful{title}"),
                format!(
                    "{verb} Pod {pod} in StatefulSet {} successful",
                    set.name_any()
                ),
            ),
            Some(e) => {
                // Upstream's note names the pod and set, then the cause.
                let cause = match e {
                    Error::CreatePod { source, .. }
                    | Error::DeletePod { source, .. }
                    | Error::UpdatePod { source, .. } => source.to_string(),
                    other => other.to_string(),
                };
                self.event(
                    set,
                    Some(related),
                    EventType::Warning,
                    &format!("Failed{title}"),
                    format!(
                        "{verb} Pod {pod} in StatefulSet {} failed error: {cause}",
                        set.name_any()
                    ),
                )
            }
        }
    }

    fn claim_event(
        &self,
        set: &StatefulSet,
        verb: &str,
        claim: &str,
        pod: &str,
        error: Option<&kube::Error>,
    ) {
        let related = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("PersistentVolumeClaim".into()),
            name: Some(claim.into()),
            namespace: set.namespace(),
            ..ObjectReference::default()
        };
        let title = title(verb);
        let set_name = set.name_any();
        match error {
            None => self.event(
                set,
                Some(related),
                EventType::Normal,
                &format!("Successful{title}"),
                format!("{verb} Claim {claim} Pod {pod} in StatefulSet {set_name} success"),
            ),
            Some(e) => self.event(
                set,
                Some(related),
                EventType::Warning,
                &format!("Failed{title}"),
                format!(
                    "{verb} Claim {claim} for Pod {pod} in StatefulSet {set_name} failed error: {e}"
                ),
            ),
        }
    }

    fn claim(&self, ns: &str, name: &str) -> Option<Arc<PersistentVolumeClaim>> {
        self.claims.get(&ObjectRef::new(name).within(ns))
    }
}

/// The set a claim change concerns: the set or pod its ownerReferences name (a stale
/// claim of a deleted pod going away unblocks that pod's successor).
fn sets_of_claim(claim: &PersistentVolumeClaim) -> Vec<ObjectRef<StatefulSet>> {
    let ns = claim.namespace().unwrap_or_default();
    claim
        .owner_references()
        .iter()
        .filter_map(|r| match r.kind.as_str() {
            "StatefulSet" => Some(r.name.as_str()),
            "Pod" => parent_and_ordinal(&r.name).map(|(parent, _)| parent),
            _ => None,
        })
        .map(|name| ObjectRef::new(name).within(&ns))
        .collect()
}

fn title(verb: &str) -> String {
    let mut chars = verb.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

async fn reconcile(set: Arc<StatefulSet>, state: Arc<State>) -> Result<Action> {
    let metrics = state.ctx.metrics.clone();
    metrics.observe(NAME, sync(set, state)).await
}

fn error_policy(_set: Arc<StatefulSet>, error: &Error, _state: Arc<State>) -> Action {
    warn!(%error, "sync failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Upstream's `computeReplicaStatus` over the pods the sync saw.
fn replica_status(
    pods: &[&Pod],
    current_revision: &str,
    update_revision: &str,
    min_ready_seconds: i32,
    now: Timestamp,
) -> StatefulSetStatus {
    let mut status = StatefulSetStatus::default();
    let (mut ready, mut available, mut current, mut updated) = (0, 0, 0, 0);
    for pod in pods.iter().filter(|p| is_created(p)) {
        status.replicas += 1;
        if is_running_and_ready(pod) {
            ready += 1;
            if is_running_and_available(pod, min_ready_seconds, now) {
                available += 1;
            }
        }
        if !is_terminating(pod) {
            if revision_of(pod) == current_revision {
                current += 1;
            }
            if revision_of(pod) == update_revision {
                updated += 1;
            }
        }
    }
    status.ready_replicas = Some(ready);
    status.available_replicas = Some(available);
    status.current_replicas = Some(current);
    status.updated_replicas = Some(updated);
    status.current_revision = Some(current_revision.into());
    status.update_revision = Some(update_revision.into());
    status
}

/// Upstream's `completeRollingUpdate`.
fn complete_rolling_update(set: &StatefulSet, status: &mut StatefulSetStatus) {
    if strategy_type(set) == "RollingUpdate"
        && status.updated_replicas == Some(status.replicas)
        && status.ready_replicas == Some(status.replicas)
    {
        status.current_replicas = status.updated_replicas;
        status.current_revision = status.update_revision.clone();
    }
}

/// Upstream's `StatefulSetController.sync` + `UpdateStatefulSet`.
async fn sync(set: Arc<StatefulSet>, state: Arc<State>) -> Result<Action> {
    let selector = match selector(&set) {
        Ok(s) => s,
        Err(error) => {
            // Validation keeps these out; nothing can be done until the spec changes.
            warn!(set = %key(set.as_ref()), %error, "invalid selector");
            return Ok(Action::await_change());
        }
    };
    if set.metadata.deletion_timestamp.is_some() {
        // Its pods and revisions go with it (the garbage collector).
        return Ok(Action::await_change());
    }
    adopt_orphan_revisions(&set, &selector, &state).await?;
    let pods = claim_pods(&set, &selector, &state).await?;
    let revisions = owned_revisions(&state.revisions, set.as_ref());
    let (current, update, collision_count) = set_revisions(&set, &revisions, &state).await?;
    let current_set = apply_revision(&set, &current)?;
    let update_set = apply_revision(&set, &update)?;
    let now = Timestamp::now();
    let run = SetSync {
        state: &state,
        set: &set,
        current_set,
        update_set,
        current_revision: current.name_any(),
        update_revision: update.name_any(),
        monotonic: !is_parallel(&set),
        min_ready_seconds: min_ready_seconds(&set),
        now,
    };
    let (mut status, managed) = run.update(&pods).await;
    status.observed_generation = set.metadata.generation;
    status.collision_count = Some(collision_count);
    status.conditions = set.status.as_ref().and_then(|s| s.conditions.clone());
    complete_rolling_update(&set, &mut status);
    let status_result = update_status(&set, &status, &state).await;
    let waiting = managed?;
    status_result?;
    // Prune what no pod, nor the current or update revision, uses.
    let mut live: HashSet<String> = pods.iter().map(|p| revision_of(p).to_string()).collect();
    live.insert(current.name_any());
    live.insert(update.name_any());
    let limit = set
        .spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .unwrap_or(DEFAULT_REVISION_HISTORY_LIMIT)
        .max(0) as usize;
    for old in prunable(&revisions, |r| live.contains(&r.name_any()), limit) {
        super::history::delete_revision(&state.ctx.client, set.as_ref(), &old)
            .await
            .map_err(|source| Error::Revision {
                set: key(set.as_ref()),
                source,
            })?;
    }
    // Ready pods turn available with time alone (upstream enqueues after minReadySeconds).
    let min_ready = min_ready_seconds(&set);
    let mut again = (min_ready > 0)
        .then(|| {
            pods.iter()
                .filter(|p| is_running_and_ready(p) && !is_running_and_available(p, min_ready, now))
                .filter_map(|p| ready_since(p).flatten())
                .map(|t| (t.as_second() + i64::from(min_ready) + 1 - now.as_second()).max(1))
                .min()
                .map(|s| Duration::from_secs(s as u64))
        })
        .flatten();
    if waiting {
        again = Some(again.map_or(RECHECK, |a| a.min(RECHECK)));
    }
    Ok(again.map_or_else(Action::await_change, Action::requeue))
}

/// Upstream's `getStatefulSetRevisions`: the current and update revisions (creating or
/// renumbering the update revision as needed) and the collision count.
async fn set_revisions(
    set: &StatefulSet,
    revisions: &[Arc<ControllerRevision>],
    state: &State,
) -> Result<(ControllerRevision, ControllerRevision, i32)> {
    let mut collision_count = set
        .status
        .as_ref()
        .and_then(|s| s.collision_count)
        .unwrap_or(0);
    let revision_error = |source| Error::Revision {
        set: key(set),
        source,
    };
    let candidate = set_revision(set, next_revision(revisions), collision_count);
    let equal = equal_revisions(revisions, &candidate);
    let update = match (equal.last(), revisions.last()) {
        // The newest revision is the template: nothing changed.
        (Some(e), Some(newest)) if equal_revision(newest, e) => newest.as_ref().clone(),
        // An older template again (a rollback): its revision becomes the newest.
        (Some(e), _) => {
            super::history::renumber_revision(&state.ctx.client, set, e, candidate.revision)
                .await
                .map_err(revision_error)?
        }
        (None, _) => create_revision(set, candidate.revision, &mut collision_count, state)
            .await
            .map_err(revision_error)?,
    };
    let current_name = set
        .status
        .as_ref()
        .and_then(|s| s.current_revision.as_deref());
    let current = revisions
        .iter()
        .find(|r| Some(r.name_any().as_str()) == current_name)
        .map(|r| r.as_ref().clone())
        .unwrap_or_else(|| update.clone());
    Ok((current, update, collision_count))
}

/// Upstream's `newRevision`: a revision of the set's template, with the set's
/// annotations (kubectl's change-cause among them).
fn set_revision(set: &StatefulSet, number: i64, collision_count: i32) -> ControllerRevision {
    let template_labels = set
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let mut revision = new_revision(
        set,
        &template_labels,
        revision_data(set),
        number,
        Some(collision_count),
    );
    let annotations = set.annotations();
    if !annotations.is_empty() {
        revision.metadata.annotations = Some(annotations.clone());
    }
    revision
}

/// Upstream's `CreateControllerRevision`: on a name taken by different data, counts a
/// collision and tries the next name; an identical revision is taken as it is.
async fn create_revision(
    set: &StatefulSet,
    number: i64,
    collision_count: &mut i32,
    state: &State,
) -> Result<ControllerRevision, kube::Error> {
    let api: Api<ControllerRevision> = Api::namespaced(
        state.ctx.client.clone(),
        &set.namespace().unwrap_or_default(),
    );
    loop {
        let candidate = set_revision(set, number, *collision_count);
        match api.create(&PostParams::default(), &candidate).await {
            Ok(created) => return Ok(created),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let existing = api.get(&candidate.name_any()).await?;
                if equal_revision(&existing, &candidate) {
                    return Ok(existing);
                }
                *collision_count = collision_count.saturating_add(1);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Upstream's `canAdoptFunc`: the set read fresh is the same object, not being deleted.
async fn can_adopt(set: &StatefulSet, state: &State) -> Result<()> {
    let api: Api<StatefulSet> = Api::namespaced(
        state.ctx.client.clone(),
        &set.namespace().unwrap_or_default(),
    );
    let fresh = api
        .get_opt(&set.name_any())
        .await
        .map_err(|source| Error::Recheck {
            set: key(set),
            source,
        })?;
    match fresh {
        Some(f) if f.uid() == set.uid() && f.metadata.deletion_timestamp.is_none() => Ok(()),
        _ => Err(Error::CannotAdopt { set: key(set) }),
    }
}

/// Upstream's `adoptOrphanRevisions`: revisions matching the selector with no controller
/// become the set's.
async fn adopt_orphan_revisions(
    set: &StatefulSet,
    selector: &LabelSelector,
    state: &State,
) -> Result<()> {
    let ns = set.namespace();
    let orphans: Vec<Arc<ControllerRevision>> = state
        .revisions
        .state()
        .into_iter()
        .filter(|r| {
            r.namespace() == ns
                && controller_of(r.as_ref()).is_none()
                && selector.matches(r.labels())
        })
        .collect();
    if orphans.is_empty() {
        return Ok(());
    }
    can_adopt(set, state).await?;
    let api: Api<ControllerRevision> =
        Api::namespaced(state.ctx.client.clone(), &ns.unwrap_or_default());
    let reference = controller_ref(set);
    for revision in orphans {
        if let Err(source) = adopt_object(&api, &reference, revision.as_ref()).await {
            return Err(Error::Adopt {
                what: format!("controllerrevision {}", key(revision.as_ref())),
                source,
            });
        }
    }
    Ok(())
}

/// Upstream's `getPodsForStatefulSet`: the pods the set controls (whatever their
/// phase), after adopting orphans that match the selector and are named as its members,
/// and releasing owned pods that no longer are.
async fn claim_pods(
    set: &Arc<StatefulSet>,
    selector: &LabelSelector,
    state: &State,
) -> Result<Vec<Arc<Pod>>> {
    let ns = set.namespace().unwrap_or_default();
    let uid = set.uid().unwrap_or_default();
    let set_name = set.name_any();
    let mut claimed = Vec::new();
    let mut adopt = Vec::new();
    let mut release = Vec::new();
    for pod in state.pods.state() {
        if pod.metadata.namespace.as_deref() != Some(ns.as_str()) {
            continue;
        }
        let member = pod
            .metadata
            .name
            .as_deref()
            .and_then(parent_and_ordinal)
            .is_some_and(|(parent, _)| parent == set_name);
        let matches = member && selector.matches(pod.labels());
        match controller_of(pod.as_ref()) {
            Some(c) if c.uid != uid => {}
            Some(_) if matches => claimed.push(pod),
            Some(_) => release.push(pod),
            None if matches && pod.metadata.deletion_timestamp.is_none() => adopt.push(pod),
            None => {}
        }
    }
    let api: Api<Pod> = Api::namespaced(state.ctx.client.clone(), &ns);
    if !adopt.is_empty() {
        can_adopt(set, state).await?;
        let reference = controller_ref(set.as_ref());
        for pod in adopt {
            match adopt_object(&api, &reference, pod.as_ref()).await {
                Ok(Some(_)) => claimed.push(pod),
                Ok(None) => {}
                Err(source) => {
                    return Err(Error::Adopt {
                        what: format!("pod {}", key(pod.as_ref())),
                        source,
                    })
                }
            }
        }
    }
    for pod in release {
        if let Err(source) = release_object(&api, &uid, pod.as_ref()).await {
            return Err(Error::Release {
                pod: key(pod.as_ref()),
                source,
            });
        }
    }
    Ok(claimed)
}

/// Upstream's `updateStatefulSetStatus`: writes the status when it differs.
async fn update_status(set: &StatefulSet, status: &StatefulSetStatus, state: &State) -> Result<()> {
    if set.status.as_ref() == Some(status) {
        return Ok(());
    }
    let api: Api<StatefulSet> = Api::namespaced(
        state.ctx.client.clone(),
        &set.namespace().unwrap_or_default(),
    );
    let name = set.name_any();
    let mut current = set.clone();
    for attempt in 0..2 {
        current.status = Some(status.clone());
        match api
            .replace_status(&name, &PostParams::default(), &current)
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.is_not_found() => return Ok(()),
            Err(source) if attempt == 1 => {
                return Err(Error::Status {
                    set: key(set),
                    source,
                })
            }
            Err(_) => {}
        }
        match api.get_opt(&name).await {
            // A newer generation is this sync's to describe no more.
            Ok(Some(fresh)) if fresh.metadata.generation != set.metadata.generation => {
                return Ok(())
            }
            Ok(Some(fresh)) => current = fresh,
            Ok(None) => return Ok(()),
            Err(source) => {
                return Err(Error::Status {
                    set: key(set),
                    source,
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::identity::*;
    use super::*;
    use crate::controllers::history::CONTROLLER_REVISION_HASH_LABEL;
    use serde_json::json;

    fn set(extra: serde_json::Value) -> StatefulSet {
        let mut v = json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "set-uid"},
            "spec": {
                "replicas": 3,
                "serviceName": "nginx",
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "nginx"}],
                        "volumes": [{"name": "data", "emptyDir": {}}, {"name": "cfg", "emptyDir": {}}]},
                },
                "volumeClaimTemplates": [{"metadata": {"name": "data", "labels": {"tier": "db"}},
                    "spec": {"accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}}}}],
            },
        });
        json_merge(&mut v, extra);
        serde_json::from_value(v).unwrap()
    }

    fn json_merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    json_merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn cached(pod: &K8sPod) -> Pod {
        serde_json::from_value(serde_json::to_value(pod).unwrap()).unwrap()
    }

    #[test]
    fn ordinals_come_from_the_last_dash() {
        assert_eq!(parent_and_ordinal("web-0"), Some(("web", 0)));
        assert_eq!(parent_and_ordinal("my-web-12"), Some(("my-web", 12)));
        assert_eq!(parent_and_ordinal("web-x"), None);
        assert_eq!(parent_and_ordinal("web-"), None);
        assert_eq!(parent_and_ordinal("web"), None);
        assert_eq!(parent_and_ordinal("web-99999999999"), None);
    }

    #[test]
    fn pods_get_stable_identity_and_claim_volumes() {
        let s = set(json!({}));
        let pod = new_pod(&s, 2, "web-abc");
        assert_eq!(pod.name_any(), "web-2");
        let labels = pod.labels();
        assert_eq!(labels[POD_NAME_LABEL], "web-2");
        assert_eq!(labels[POD_INDEX_LABEL], "2");
        assert_eq!(labels[CONTROLLER_REVISION_HASH_LABEL], "web-abc");
        assert_eq!(labels["app"], "web");
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("web-2"));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        let volumes = spec.volumes.as_ref().unwrap();
        // The template's volume of the claim's name is replaced; the others stay.
        assert_eq!(volumes.len(), 2);
        assert_eq!(volumes[0].name, "data");
        assert_eq!(
            volumes[0]
                .persistent_volume_claim
                .as_ref()
                .unwrap()
                .claim_name,
            "data-web-2"
        );
        assert_eq!(volumes[1].name, "cfg");
        let r = &pod.owner_references()[0];
        assert_eq!((r.kind.as_str(), r.controller), ("StatefulSet", Some(true)));
        let c = cached(&pod);
        assert!(identity_matches(&s, &c));
        assert!(storage_matches(&s, &c));
        assert!(!is_created(&c));
        // Claims: named per template and ordinal, template labels plus matchLabels.
        let claims = claims_for(&s, 2);
        assert_eq!(claims[0].1.name_any(), "data-web-2");
        assert_eq!(claims[0].1.labels()["tier"], "db");
        assert_eq!(claims[0].1.labels()["app"], "web");
        // A pod missing its labels or its claim volume does not match.
        let mut bare = c.clone();
        bare.labels_mut().remove(POD_NAME_LABEL);
        assert!(!identity_matches(&s, &bare));
        let mut unclaimed = c.clone();
        unclaimed.spec.as_mut().unwrap().volumes = None;
        assert!(!storage_matches(&s, &unclaimed));
    }

    #[test]
    fn revisions_hold_the_template_and_apply_back() {
        let s = set(json!({"metadata": {"annotations": {"kubernetes.io/change-cause": "v1"}}}));
        let data = revision_data(&s);
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        assert_eq!(data["spec"]["template"]["metadata"]["labels"]["app"], "web");
        let rev = set_revision(&s, 1, 0);
        assert_eq!(rev.annotations()["kubernetes.io/change-cause"], "v1");
        assert_eq!(rev.labels()["app"], "web");
        assert!(rev.name_any().starts_with("web-"));
        let changed = set(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "c", "image": "nginx:2"}]}}}}));
        let rev2 = set_revision(&changed, 2, 0);
        assert_ne!(rev.name_any(), rev2.name_any());
        // Applying the old revision to the changed set gives back the old template.
        let back = apply_revision(&changed, &rev).unwrap();
        assert_eq!(
            back.spec.as_ref().unwrap().template,
            s.spec.as_ref().unwrap().template
        );
        let mut broken = rev.clone();
        broken.data = Some(k8s_openapi::apimachinery::pkg::runtime::RawExtension(
            json!({"spec": {"template": {"spec": 5}}}),
        ));
        assert!(matches!(
            apply_revision(&s, &broken),
            Err(Error::BadRevision { .. })
        ));
    }

    #[test]
    fn status_counts_revisions_readiness_and_completes_rolling_updates() {
        let s = set(json!({}));
        let now = Timestamp::now();
        let mut pods: Vec<Pod> = (0..3)
            .map(|o| cached(&new_pod(&s, o, if o == 0 { "web-old" } else { "web-new" })))
            .collect();
        for p in &mut pods {
            p.status = Some(
                serde_json::from_value(json!({"phase": "Running",
                    "conditions": [{"type": "Ready", "status": "True"}]}))
                .unwrap(),
            );
        }
        let refs: Vec<&Pod> = pods.iter().collect();
        let mut status = replica_status(&refs, "web-old", "web-new", 0, now);
        assert_eq!(status.replicas, 3);
        assert_eq!(status.ready_replicas, Some(3));
        assert_eq!(status.available_replicas, Some(3));
        assert_eq!(status.current_replicas, Some(1));
        assert_eq!(status.updated_replicas, Some(2));
        complete_rolling_update(&s, &mut status);
        assert_eq!(status.current_revision.as_deref(), Some("web-old"));
        pods[0]
            .labels_mut()
            .insert(CONTROLLER_REVISION_HASH_LABEL.into(), "web-new".into());
        let refs: Vec<&Pod> = pods.iter().collect();
        let mut status = replica_status(&refs, "web-old", "web-new", 0, now);
        complete_rolling_update(&s, &mut status);
        assert_eq!(status.current_revision.as_deref(), Some("web-new"));
        assert_eq!(status.current_replicas, Some(3));
        // minReadySeconds: ready but not yet available.
        let status = replica_status(&refs, "web-old", "web-new", 30, now);
        assert_eq!(status.available_replicas, Some(0));
    }

    #[test]
    fn claim_owners_follow_the_retention_policy() {
        let claim = || claims_for(&set(json!({})), 4).remove(0).1;
        let pod = ("web-4", "pod-uid");
        let uids = |c: &PersistentVolumeClaim| {
            c.owner_references()
                .iter()
                .map(|r| r.uid.clone())
                .collect::<Vec<_>>()
        };
        // Retain/Retain: nobody owns it.
        let mut c = claim();
        assert!(!claim_owner_refs(&mut c, &set(json!({})), pod, 4));
        assert!(uids(&c).is_empty());
        // whenDeleted Delete: the set owns it.
        let del = set(json!({"spec": {"persistentVolumeClaimRetentionPolicy":
            {"whenDeleted": "Delete", "whenScaled": "Retain"}}}));
        assert!(claim_owner_refs(&mut c, &del, pod, 4));
        assert_eq!(uids(&c), ["set-uid"]);
        assert!(!claim_owner_refs(&mut c, &del, pod, 4));
        // whenScaled Delete, ordinal 4 out of 3 replicas: the pod owns it, not the set.
        let scaled = set(json!({"spec": {"persistentVolumeClaimRetentionPolicy":
            {"whenDeleted": "Delete", "whenScaled": "Delete"}}}));
        assert!(claim_owner_refs(&mut c, &scaled, pod, 4));
        assert_eq!(uids(&c), ["pod-uid"]);
        // In range again: back to the set.
        let mut c2 = c.clone();
        assert!(claim_owner_refs(&mut c2, &scaled, ("web-1", "pod-uid"), 1));
        assert_eq!(uids(&c2), ["set-uid"]);
        assert_eq!(c2.owner_references()[0].kind, "StatefulSet");
    }
}
