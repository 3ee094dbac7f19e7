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

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use api_types::selector::LabelSelector;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    ObjectReference, PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, PodTemplateSpec,
    Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, warn, Instrument};

use super::controller_utils::{
    controller_of, controller_of_kind, controller_ref, is_pod_available, namespace_terminating,
    pod_from_template, ready_since, slow_start_batch,
};
use super::history::{
    equal_revision, equal_revisions, new_revision, next_revision, owned_revisions, prunable,
    CONTROLLER_REVISION_HASH_LABEL,
};
use super::Context;
use crate::cache::Pod;
use crate::informers::key;

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

    /// Publishes an event about `set` in the background. An event about one object names
    /// it as `related` and is its own Event: kube's recorder would otherwise fold every
    /// SuccessfulCreate of a set into one series keeping the first note.
    fn event(
        &self,
        set: &StatefulSet,
        related: Option<ObjectReference>,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let recorder = match related {
            Some(_) => self.ctx.recorder(COMPONENT),
            None => self.recorder.clone(),
        };
        let reference = set.object_ref(&());
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: related,
        };
        tokio::spawn(
            async move {
                if let Err(e) = recorder.publish(&event, &reference).await {
                    debug!(error = %e, "publishing an event");
                }
            }
            .in_current_span(),
        );
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

fn selector(set: &StatefulSet) -> Result<LabelSelector, String> {
    let spec = set.spec.as_ref().ok_or("no spec")?;
    LabelSelector::from_meta(&spec.selector).map_err(|e| e.to_string())
}

/// `<parent>-<ordinal>` (upstream's `getParentNameAndOrdinal`).
pub fn parent_and_ordinal(name: &str) -> Option<(&str, i32)> {
    let (parent, ordinal) = name.rsplit_once('-')?;
    if ordinal.is_empty() || !ordinal.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((parent, ordinal.parse().ok()?))
}

fn ordinal_of(pod: &Pod) -> Option<i32> {
    parent_and_ordinal(pod.metadata.name.as_deref()?).map(|(_, o)| o)
}

fn replicas(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1)
        .max(0)
}

fn start_ordinal(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.ordinals.as_ref())
        .and_then(|o| o.start)
        .unwrap_or(0)
        .max(0)
}

fn in_ordinal_range(set: &StatefulSet, ordinal: i32) -> bool {
    let start = start_ordinal(set);
    ordinal >= start && i64::from(ordinal) < i64::from(start) + i64::from(replicas(set))
}

fn pod_name(set: &StatefulSet, ordinal: i32) -> String {
    format!("{}-{ordinal}", set.name_any())
}

fn min_ready_seconds(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
}

fn is_parallel(set: &StatefulSet) -> bool {
    set.spec
        .as_ref()
        .and_then(|s| s.pod_management_policy.as_deref())
        == Some("Parallel")
}

fn strategy_type(set: &StatefulSet) -> &str {
    set.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref())
        .unwrap_or("RollingUpdate")
}

/// The rolling update's partition, when the strategy has a rollingUpdate block.
fn partition(set: &StatefulSet) -> Option<i32> {
    set.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref())
        .map(|r| r.partition.unwrap_or(0))
}

/// `(whenDeleted, whenScaled)`, Retain unless set.
fn retention_policy(set: &StatefulSet) -> (&str, &str) {
    let policy = set
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
    (
        policy
            .and_then(|p| p.when_deleted.as_deref())
            .unwrap_or(RETAIN),
        policy
            .and_then(|p| p.when_scaled.as_deref())
            .unwrap_or(RETAIN),
    )
}

fn claim_templates(set: &StatefulSet) -> &[PersistentVolumeClaim] {
    set.spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_deref())
        .unwrap_or(&[])
}

/// Upstream's `getPersistentVolumeClaimName`.
fn claim_name(template: &PersistentVolumeClaim, set: &StatefulSet, ordinal: i32) -> String {
    format!("{}-{}-{ordinal}", template.name_any(), set.name_any())
}

/// Upstream's `getPersistentVolumeClaims`: the claims of the pod of `ordinal`, by
/// template name, labelled with the template's labels and the selector's matchLabels.
fn claims_for(set: &StatefulSet, ordinal: i32) -> Vec<(String, PersistentVolumeClaim)> {
    let match_labels = set
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default();
    claim_templates(set)
        .iter()
        .map(|template| {
            let mut claim = template.clone();
            claim.metadata.name = Some(claim_name(template, set, ordinal));
            claim.metadata.namespace = set.namespace();
            claim.metadata.resource_version = None;
            claim.metadata.uid = None;
            claim.status = None;
            let labels = claim.metadata.labels.get_or_insert_with(BTreeMap::new);
            labels.extend(match_labels.clone());
            (template.name_any(), claim)
        })
        .collect()
}

/// Upstream's `getPatch`: the revision data, the set's template to replace the one a
/// set has.
pub fn revision_data(set: &StatefulSet) -> serde_json::Value {
    let mut template = set
        .spec
        .as_ref()
        .map(|s| serde_json::to_value(&s.template).unwrap_or_default())
        .unwrap_or_else(|| json!({}));
    if let Some(t) = template.as_object_mut() {
        t.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": template}})
}

/// Upstream's `ApplyRevision`: the set with the template a revision holds.
fn apply_revision(set: &StatefulSet, revision: &ControllerRevision) -> Result<StatefulSet> {
    let mut template = revision
        .data
        .as_ref()
        .and_then(|d| d.0.pointer("/spec/template"))
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Some(t) = template.as_object_mut() {
        t.remove("$patch");
    }
    let template: PodTemplateSpec =
        serde_json::from_value(template).map_err(|source| Error::BadRevision {
            set: key(set),
            revision: revision.name_any(),
            source,
        })?;
    let mut applied = set.clone();
    if let Some(spec) = applied.spec.as_mut() {
        spec.template = template;
    }
    Ok(applied)
}

/// Upstream's `newStatefulSetPod` + `setPodRevision`: the pod of `ordinal` from the
/// set's template, with its identity and claims.
fn new_pod(set: &StatefulSet, ordinal: i32, revision: &str) -> K8sPod {
    let template = set
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let mut pod = pod_from_template(set, &template);
    let name = pod_name(set, ordinal);
    pod.metadata.generate_name = None;
    pod.metadata.name = Some(name.clone());
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(CONTROLLER_REVISION_HASH_LABEL.into(), revision.into());
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.hostname = Some(name);
    spec.subdomain = set
        .spec
        .as_ref()
        .and_then(|s| s.service_name.clone())
        .filter(|s| !s.is_empty());
    // Upstream's updateStorage: a claim volume per template, replacing any template
    // volume of the same name.
    let claims = claims_for(set, ordinal);
    let mut volumes: Vec<Volume> = claims
        .iter()
        .map(|(template, claim)| Volume {
            name: template.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.name_any(),
                read_only: None,
            }),
            ..Volume::default()
        })
        .collect();
    let claimed: HashSet<&str> = claims.iter().map(|(t, _)| t.as_str()).collect();
    volumes.extend(
        spec.volumes
            .take()
            .unwrap_or_default()
            .into_iter()
            .filter(|v| !claimed.contains(v.name.as_str())),
    );
    spec.volumes = (!volumes.is_empty()).then_some(volumes);
    pod
}

/// Upstream's `identityMatches`.
fn identity_matches(set: &StatefulSet, pod: &Pod) -> bool {
    let Some((parent, ordinal)) = pod.metadata.name.as_deref().and_then(parent_and_ordinal) else {
        return false;
    };
    let labels = pod.labels();
    parent == set.name_any()
        && pod.namespace() == set.namespace()
        && labels.get(POD_NAME_LABEL) == pod.metadata.name.as_ref()
        && labels.get(POD_INDEX_LABEL) == Some(&ordinal.to_string())
}

/// Upstream's `storageMatches`.
fn storage_matches(set: &StatefulSet, pod: &Pod) -> bool {
    let Some(ordinal) = ordinal_of(pod) else {
        return false;
    };
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or(&[]);
    claim_templates(set).iter().all(|template| {
        volumes.iter().any(|v| {
            v.name == template.name_any()
                && v.persistent_volume_claim
                    .as_ref()
                    .is_some_and(|c| c.claim_name == claim_name(template, set, ordinal))
        })
    })
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Upstream's `isCreated`: the apiserver gave it a phase.
fn is_created(pod: &Pod) -> bool {
    !phase(pod).is_empty()
}

fn is_finished(pod: &Pod) -> bool {
    matches!(phase(pod), "Failed" | "Succeeded")
}

fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn is_running_and_ready(pod: &Pod) -> bool {
    phase(pod) == "Running" && ready_since(pod).is_some()
}

fn is_running_and_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    phase(pod) == "Running" && is_pod_available(pod, min_ready_seconds, now)
}

/// Upstream's `isHealthy`.
fn is_healthy(pod: &Pod) -> bool {
    is_running_and_ready(pod) && !is_terminating(pod)
}

fn revision_of(pod: &Pod) -> &str {
    pod.labels()
        .get(CONTROLLER_REVISION_HASH_LABEL)
        .map(String::as_str)
        .unwrap_or("")
}

/// Upstream's `updateClaimOwnerRefForSetAndPod`: sets or removes the claim's
/// ownerReferences to the set and to the pod (`pod`: name, uid) as the retention policy
/// says. Whether anything changed.
fn claim_owner_refs(
    claim: &mut PersistentVolumeClaim,
    set: &StatefulSet,
    pod: (&str, &str),
    ordinal: i32,
) -> bool {
    let set_ref = OwnerReference {
        api_version: "apps/v1".into(),
        kind: "StatefulSet".into(),
        name: set.name_any(),
        uid: set.uid().unwrap_or_default(),
        ..OwnerReference::default()
    };
    let pod_ref = OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: pod.0.into(),
        uid: pod.1.into(),
        ..OwnerReference::default()
    };
    let scaled_down = !in_ordinal_range(set, ordinal);
    let (when_deleted, when_scaled) = retention_policy(set);
    let mut refs = claim.metadata.owner_references.take().unwrap_or_default();
    let before = refs.clone();
    let set_owner = |refs: &mut Vec<OwnerReference>, r: &OwnerReference, own: bool| {
        if own {
            if !r.uid.is_empty() && !refs.iter().any(|x| x.uid == r.uid) {
                refs.push(r.clone());
            }
        } else {
            refs.retain(|x| x.uid != r.uid || r.uid.is_empty());
        }
    };
    match (when_scaled, when_deleted) {
        (RETAIN, RETAIN) => {
            set_owner(&mut refs, &set_ref, false);
            set_owner(&mut refs, &pod_ref, false);
        }
        (RETAIN, DELETE) => {
            set_owner(&mut refs, &set_ref, true);
            set_owner(&mut refs, &pod_ref, false);
        }
        (DELETE, RETAIN) => {
            set_owner(&mut refs, &set_ref, false);
            set_owner(&mut refs, &pod_ref, scaled_down);
        }
        (DELETE, DELETE) => {
            set_owner(&mut refs, &set_ref, !scaled_down);
            set_owner(&mut refs, &pod_ref, scaled_down);
        }
        // Validation keeps other values out; leave the claim as it is.
        _ => {}
    }
    let changed = refs != before;
    claim.metadata.owner_references = (!refs.is_empty()).then_some(refs);
    changed
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
        let patch = json!({"metadata": {"ownerReferences": [reference], "uid": revision.uid()}});
        match api
            .patch(
                &revision.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(source) => {
                return Err(Error::Adopt {
                    what: format!("controllerrevision {}", key(revision.as_ref())),
                    source,
                })
            }
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
            let patch = json!({"metadata": {"ownerReferences": [reference], "uid": pod.uid()}});
            match api
                .patch(
                    &pod.name_any(),
                    &PatchParams::default(),
                    &Patch::Strategic(&patch),
                )
                .await
            {
                Ok(_) => claimed.push(pod),
                Err(kube::Error::Api(s)) if s.is_not_found() => {}
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
        let patch = json!({"metadata": {
            "ownerReferences": [{"$patch": "delete", "uid": uid}],
            "uid": pod.uid(),
        }});
        match api
            .patch(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() || s.is_invalid() => {}
            Err(source) => {
                return Err(Error::Release {
                    pod: key(pod.as_ref()),
                    source,
                })
            }
        }
    }
    Ok(claimed)
}

/// A slot of the ordinal range: the pod there, or the pod to create.
struct Replica {
    pod: Arc<Pod>,
    /// The pod to create, when none exists.
    create: Option<Box<K8sPod>>,
}

/// One sync of one set (upstream's `updateStatefulSet` and its helpers).
struct SetSync<'a> {
    state: &'a State,
    set: &'a StatefulSet,
    /// The set with the current revision's template.
    current_set: StatefulSet,
    /// The set with the update revision's template.
    update_set: StatefulSet,
    current_revision: String,
    update_revision: String,
    /// OrderedReady: one pod at a time, waiting for health.
    monotonic: bool,
    min_ready_seconds: i32,
    now: Timestamp,
}

impl SetSync<'_> {
    /// Upstream's `newVersionedStatefulSetPod`: below the partition a pod is made at the
    /// current revision, otherwise at the update revision.
    fn versioned_pod(&self, ordinal: i32) -> K8sPod {
        let start = start_ordinal(self.set);
        let below_current = strategy_type(self.set) == "RollingUpdate"
            && match partition(self.set) {
                None => {
                    let current = self
                        .set
                        .status
                        .as_ref()
                        .and_then(|s| s.current_replicas)
                        .unwrap_or(0);
                    i64::from(ordinal) < i64::from(start) + i64::from(current)
                }
                Some(p) => i64::from(ordinal) < i64::from(start) + i64::from(p),
            };
        if below_current {
            new_pod(&self.current_set, ordinal, &self.current_revision)
        } else {
            new_pod(&self.update_set, ordinal, &self.update_revision)
        }
    }

    /// Brings the pods to the spec; returns the status the pods show and whether the
    /// sync waits on something only time or other actors bring (or the error).
    async fn update(&self, pods: &[Arc<Pod>]) -> (StatefulSetStatus, Result<bool>) {
        let start = start_ordinal(self.set);
        let count = replicas(self.set) as usize;
        let mut slots: Vec<Option<Arc<Pod>>> = vec![None; count];
        let mut condemned: Vec<Arc<Pod>> = Vec::new();
        for pod in pods {
            match ordinal_of(pod) {
                Some(o) if in_ordinal_range(self.set, o) => {
                    slots[(o - start) as usize] = Some(pod.clone());
                }
                _ => condemned.push(pod.clone()),
            }
        }
        let replicas: Vec<Replica> = slots
            .into_iter()
            .enumerate()
            .map(|(i, slot)| match slot {
                Some(pod) => Replica { pod, create: None },
                None => {
                    let pod = self.versioned_pod(start + i as i32);
                    let cached = serde_json::to_value(&pod)
                        .ok()
                        .and_then(|v| serde_json::from_value(v).ok())
                        .unwrap_or_default();
                    Replica {
                        pod: Arc::new(cached),
                        create: Some(Box::new(pod)),
                    }
                }
            })
            .collect();
        // Highest ordinal first.
        condemned.sort_by_key(|p| std::cmp::Reverse(ordinal_of(p).unwrap_or(-1)));
        let status = replica_status(
            &pods.iter().map(Arc::as_ref).collect::<Vec<_>>(),
            &self.current_revision,
            &self.update_revision,
            self.min_ready_seconds,
            self.now,
        );
        let result = self.manage(&replicas, &condemned).await;
        (status, result)
    }

    async fn manage(&self, replicas: &[Replica], condemned: &[Arc<Pod>]) -> Result<bool> {
        let first_unhealthy = replicas
            .iter()
            .map(|r| &r.pod)
            .chain(condemned.iter())
            .find(|p| !is_healthy(p))
            .and_then(|p| p.metadata.name.clone());
        let waiting = AtomicUsize::new(0);
        let waited = || waiting.load(Ordering::Relaxed) > 0;
        // Every pod of the range exists, runs and is ready (one at a time when ordered).
        if self
            .run_for_all(replicas.len(), |i| {
                self.process_replica(&replicas[i], &waiting)
            })
            .await?
        {
            return Ok(waited());
        }
        // Claims of pods about to go follow the retention policy before the pods do.
        if self
            .run_for_all(condemned.len(), |i| async move {
                self.fix_claims(&condemned[i]).await?;
                Ok(false)
            })
            .await?
        {
            return Ok(waited());
        }
        // Scale down from the highest ordinal; ordered: one at a time, once healthy.
        if self
            .run_for_all(condemned.len(), |i| {
                self.process_condemned(&condemned[i], first_unhealthy.as_deref())
            })
            .await?
        {
            return Ok(waited());
        }
        if strategy_type(self.set) == "OnDelete" {
            return Ok(waited());
        }
        // Rolling update: the highest ordinal at or above the partition that is not at
        // the update revision goes, once every pod above it is healthy.
        let min = partition(self.set).unwrap_or(0).max(0) as usize;
        for target in (min..replicas.len()).rev() {
            let pod = &replicas[target].pod;
            if revision_of(pod) != self.update_revision && !is_terminating(pod) {
                self.delete_pod(pod).await?;
                return Ok(waited());
            }
            if !is_healthy(pod) {
                return Ok(waited());
            }
        }
        Ok(waited())
    }

    /// Upstream's `runForAll`: ordered, one after the other until one says to stop;
    /// parallel, all of them in slow-start batches. Whether to stop here.
    async fn run_for_all<'f, F, Fut>(&self, n: usize, f: F) -> Result<bool>
    where
        F: Fn(usize) -> Fut,
        Fut: std::future::Future<Output = Result<bool>> + 'f,
    {
        if self.monotonic {
            for i in 0..n {
                if f(i).await? {
                    return Ok(true);
                }
            }
            return Ok(false);
        }
        let next = AtomicUsize::new(0);
        let (_, result) = slow_start_batch(n, 1, || {
            let i = next.fetch_add(1, Ordering::Relaxed);
            f(i).map(|r| r.map(|_| ()))
        })
        .await;
        result.map(|_| false)
    }

    /// Upstream's `processReplica`: whether the ordered sync stops at this pod.
    async fn process_replica(&self, replica: &Replica, waiting: &AtomicUsize) -> Result<bool> {
        let pod = &replica.pod;
        if let Some(new) = &replica.create {
            if self.claim_is_stale(new) {
                // The claim of a pod of this name is being collected: wait for it to go.
                waiting.fetch_add(1, Ordering::Relaxed);
                return Ok(true);
            }
            if !self.create_pod(new).await? {
                waiting.fetch_add(1, Ordering::Relaxed);
            }
            return Ok(self.monotonic);
        }
        if is_finished(pod) {
            let (type_, reason, what) = if phase(pod) == "Failed" {
                (EventType::Warning, "RecreatingFailedPod", "failed")
            } else {
                (EventType::Normal, "RecreatingTerminatedPod", "terminated")
            };
            if !is_terminating(pod) {
                self.state.event(
                    self.set,
                    None,
                    type_,
                    reason,
                    format!(
                        "StatefulSet {} is recreating {what} Pod {}",
                        key(self.set),
                        pod.name_any()
                    ),
                );
                self.delete_pod(pod).await?;
            }
            // Its successor is made once it is gone.
            return Ok(true);
        }
        if self.monotonic
            && (is_terminating(pod)
                || !is_running_and_ready(pod)
                || !is_running_and_available(pod, self.min_ready_seconds, self.now))
        {
            return Ok(true);
        }
        if identity_matches(self.set, pod)
            && storage_matches(self.set, pod)
            && self.claims_match_policy(pod)
        {
            return Ok(false);
        }
        self.update_pod(pod).await?;
        Ok(false)
    }

    /// Upstream's `processCondemned`.
    async fn process_condemned(
        &self,
        pod: &Arc<Pod>,
        first_unhealthy: Option<&str>,
    ) -> Result<bool> {
        if is_terminating(pod) {
            return Ok(self.monotonic);
        }
        let first = first_unhealthy == pod.metadata.name.as_deref();
        if self.monotonic
            && !first
            && (!is_running_and_ready(pod)
                || !is_running_and_available(pod, self.min_ready_seconds, self.now))
        {
            return Ok(true);
        }
        self.delete_pod(pod).await?;
        Ok(self.monotonic)
    }

    /// Upstream's `PodClaimIsStale`: with claims deleted on scale-down, a claim still
    /// owned by an earlier pod of the same name is waiting for the garbage collector.
    fn claim_is_stale(&self, pod: &K8sPod) -> bool {
        if retention_policy(self.set).1 == RETAIN {
            return false;
        }
        let Some((_, ordinal)) = pod.metadata.name.as_deref().and_then(parent_and_ordinal) else {
            return false;
        };
        let ns = self.set.namespace().unwrap_or_default();
        let name = pod.name_any();
        claims_for(self.set, ordinal).iter().any(|(_, claim)| {
            self.state.claim(&ns, &claim.name_any()).is_some_and(|c| {
                c.owner_references().iter().any(|r| {
                    r.kind == "Pod" && r.name == name && Some(&r.uid) != pod.uid().as_ref()
                })
            })
        })
    }

    /// Upstream's `createPersistentVolumeClaims`: the pod's missing claims.
    async fn create_claims(&self, pod_name: &str, ordinal: i32) -> Result<()> {
        let ns = self.set.namespace().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.state.ctx.client.clone(), &ns);
        let mut first_error = None;
        for (_, claim) in claims_for(self.set, ordinal) {
            let name = claim.name_any();
            match self.state.claim(&ns, &name) {
                Some(c) if c.metadata.deletion_timestamp.is_some() => {
                    first_error.get_or_insert(Error::ClaimDeleting { claim: name });
                }
                Some(_) => {}
                None => match api.create(&PostParams::default(), &claim).await {
                    Ok(_) => self
                        .state
                        .claim_event(self.set, "create", &name, pod_name, None),
                    // Made already; the cache has not shown it yet.
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(source) => {
                        self.state
                            .claim_event(self.set, "create", &name, pod_name, Some(&source));
                        first_error.get_or_insert(Error::CreateClaim {
                            claim: name,
                            source,
                        });
                    }
                },
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Upstream's `CreateStatefulPod`: the claims, then the pod, then the claims'
    /// ownerReferences. False when a pod of that name exists already (the cache lags).
    async fn create_pod(&self, pod: &K8sPod) -> Result<bool> {
        let name = pod.name_any();
        let ordinal = pod
            .metadata
            .name
            .as_deref()
            .and_then(parent_and_ordinal)
            .map_or(0, |(_, o)| o);
        if let Err(e) = self.create_claims(&name, ordinal).await {
            self.state.pod_event(self.set, "create", &name, Some(&e));
            return Err(e);
        }
        let api: Api<K8sPod> = Api::namespaced(
            self.state.ctx.client.clone(),
            &self.set.namespace().unwrap_or_default(),
        );
        match api.create(&PostParams::default(), pod).await {
            Ok(created) => {
                self.state.pod_event(self.set, "create", &name, None);
                let created_uid = created.uid().unwrap_or_default();
                self.update_claim_refs(&name, &created_uid, ordinal).await?;
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            // The namespace is going away: nothing to report.
            Err(kube::Error::Api(s)) if namespace_terminating(&s) => Ok(false),
            Err(source) => {
                let e = Error::CreatePod {
                    set: self.set.name_any(),
                    pod: name.clone(),
                    source,
                };
                self.state.pod_event(self.set, "create", &name, Some(&e));
                Err(e)
            }
        }
    }

    /// Upstream's `DeleteStatefulPod`.
    async fn delete_pod(&self, pod: &Pod) -> Result<()> {
        let name = pod.name_any();
        let api: Api<Pod> = Api::namespaced(
            self.state.ctx.client.clone(),
            &self.set.namespace().unwrap_or_default(),
        );
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => {
                self.state.pod_event(self.set, "delete", &name, None);
                Ok(())
            }
            // Gone already, or a new pod holds the name.
            Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => Ok(()),
            Err(source) => {
                let e = Error::DeletePod {
                    set: self.set.name_any(),
                    pod: name.clone(),
                    source,
                };
                self.state.pod_event(self.set, "delete", &name, Some(&e));
                Err(e)
            }
        }
    }

    /// Upstream's `ClaimsMatchRetentionPolicy`; a claim not seen yet counts as matching.
    fn claims_match_policy(&self, pod: &Pod) -> bool {
        let Some(ordinal) = ordinal_of(pod) else {
            return true;
        };
        let ns = self.set.namespace().unwrap_or_default();
        let uid = pod.uid().unwrap_or_default();
        claims_for(self.set, ordinal).iter().all(|(_, claim)| {
            self.state.claim(&ns, &claim.name_any()).is_none_or(|c| {
                !claim_owner_refs(
                    &mut (*c).clone(),
                    self.set,
                    (&pod.name_any(), &uid),
                    ordinal,
                )
            })
        })
    }

    /// Upstream's `UpdatePodClaimForRetentionPolicy`: rewrites the claims'
    /// ownerReferences where the policy says otherwise.
    async fn update_claim_refs(&self, pod_name: &str, pod_uid: &str, ordinal: i32) -> Result<()> {
        let ns = self.set.namespace().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.state.ctx.client.clone(), &ns);
        for (_, template_claim) in claims_for(self.set, ordinal) {
            let name = template_claim.name_any();
            let current = match self.state.claim(&ns, &name) {
                Some(c) => c.as_ref().clone(),
                // Just created: read it.
                None => match api.get_opt(&name).await {
                    Ok(Some(c)) => c,
                    Ok(None) => continue,
                    Err(source) => {
                        return Err(Error::UpdateClaim {
                            claim: name,
                            source,
                        })
                    }
                },
            };
            let mut claim = current;
            if claim_owner_refs(&mut claim, self.set, (pod_name, pod_uid), ordinal) {
                claim.metadata.managed_fields = None;
                api.replace(&name, &PostParams::default(), &claim)
                    .await
                    .map_err(|source| Error::UpdateClaim {
                        claim: name.clone(),
                        source,
                    })?;
            }
        }
        Ok(())
    }

    async fn fix_claims(&self, pod: &Pod) -> Result<()> {
        let Some(ordinal) = ordinal_of(pod) else {
            return Ok(());
        };
        if self.claims_match_policy(pod) {
            return Ok(());
        }
        self.update_claim_refs(&pod.name_any(), &pod.uid().unwrap_or_default(), ordinal)
            .await
    }

    /// Upstream's `UpdateStatefulPod`: restores the pod's identity labels, creates its
    /// missing claims and fixes their ownerReferences. (A pod's volumes cannot change
    /// once it exists; storage is fixed through the claims only.)
    async fn update_pod(&self, pod: &Pod) -> Result<()> {
        let name = pod.name_any();
        let Some(ordinal) = ordinal_of(pod) else {
            return Ok(());
        };
        let result = async {
            if !storage_matches(self.set, pod) {
                self.create_claims(&name, ordinal).await?;
            }
            self.update_claim_refs(&name, &pod.uid().unwrap_or_default(), ordinal)
                .await?;
            if identity_matches(self.set, pod) {
                return Ok(false);
            }
            let api: Api<Pod> = Api::namespaced(
                self.state.ctx.client.clone(),
                &self.set.namespace().unwrap_or_default(),
            );
            let patch = json!({"metadata": {
                "labels": {POD_NAME_LABEL: name, POD_INDEX_LABEL: ordinal.to_string()},
                "uid": pod.uid(),
            }});
            api.patch(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
                .map_err(|source| Error::UpdatePod {
                    set: self.set.name_any(),
                    pod: name.clone(),
                    source,
                })?;
            Ok(true)
        }
        .await;
        match &result {
            Ok(true) => self.state.pod_event(self.set, "update", &name, None),
            Ok(false) => {}
            Err(e) => self.state.pod_event(self.set, "update", &name, Some(e)),
        }
        result.map(|_| ())
    }
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
    use super::*;

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
        bare.metadata
            .labels
            .as_mut()
            .unwrap()
            .remove(POD_NAME_LABEL);
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
            .metadata
            .labels
            .as_mut()
            .unwrap()
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
