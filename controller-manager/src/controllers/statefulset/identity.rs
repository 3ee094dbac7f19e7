//! A set's pods: names and ordinals, pods and claims from the set, whether a pod still
//! has its identity and storage, and the revision data (upstream's stateful_set_utils.go).

use std::collections::{BTreeMap, HashSet};

use api_types::selector::LabelSelector;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use serde_json::json;

use super::{Error, K8sPod, Result, DELETE, POD_INDEX_LABEL, POD_NAME_LABEL, RETAIN};
use crate::cache::Pod;
use crate::controllers::controller_utils::{is_pod_available, pod_from_template, ready_since};
use crate::controllers::history::CONTROLLER_REVISION_HASH_LABEL;
use crate::informers::key;

pub(super) fn selector(set: &StatefulSet) -> Result<LabelSelector, String> {
    let spec = set.spec.as_ref().ok_or("no spec")?;
    LabelSelector::from_meta(&spec.selector).map_err(|e| e.to_string())
}

/// `<parent>-<ordinal>` (upstream's `getParentNameAndOrdinal`).
pub(super) fn parent_and_ordinal(name: &str) -> Option<(&str, i32)> {
    let (parent, ordinal) = name.rsplit_once('-')?;
    if ordinal.is_empty() || !ordinal.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((parent, ordinal.parse().ok()?))
}

pub(super) fn ordinal_of(pod: &Pod) -> Option<i32> {
    parent_and_ordinal(pod.metadata.name.as_deref()?).map(|(_, o)| o)
}

pub(super) fn replicas(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1)
        .max(0)
}

pub(super) fn start_ordinal(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.ordinals.as_ref())
        .and_then(|o| o.start)
        .unwrap_or(0)
        .max(0)
}

pub(super) fn in_ordinal_range(set: &StatefulSet, ordinal: i32) -> bool {
    let start = start_ordinal(set);
    ordinal >= start && i64::from(ordinal) < i64::from(start) + i64::from(replicas(set))
}

pub(super) fn pod_name(set: &StatefulSet, ordinal: i32) -> String {
    format!("{}-{ordinal}", set.name_any())
}

pub(super) fn min_ready_seconds(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
}

pub(super) fn is_parallel(set: &StatefulSet) -> bool {
    set.spec
        .as_ref()
        .and_then(|s| s.pod_management_policy.as_deref())
        == Some("Parallel")
}

pub(super) fn strategy_type(set: &StatefulSet) -> &str {
    set.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref())
        .unwrap_or("RollingUpdate")
}

/// The rolling update's partition, when the strategy has a rollingUpdate block.
pub(super) fn partition(set: &StatefulSet) -> Option<i32> {
    set.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref())
        .map(|r| r.partition.unwrap_or(0))
}

/// `(whenDeleted, whenScaled)`, Retain unless set.
pub(super) fn retention_policy(set: &StatefulSet) -> (&str, &str) {
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

pub(super) fn claim_templates(set: &StatefulSet) -> &[PersistentVolumeClaim] {
    set.spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_deref())
        .unwrap_or(&[])
}

/// Upstream's `getPersistentVolumeClaimName`.
pub(super) fn claim_name(
    template: &PersistentVolumeClaim,
    set: &StatefulSet,
    ordinal: i32,
) -> String {
    format!("{}-{}-{ordinal}", template.name_any(), set.name_any())
}

/// Upstream's `getPersistentVolumeClaims`: the claims of the pod of `ordinal`, by
/// template name, labelled with the template's labels and the selector's matchLabels.
pub(super) fn claims_for(set: &StatefulSet, ordinal: i32) -> Vec<(String, PersistentVolumeClaim)> {
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
pub(super) fn revision_data(set: &StatefulSet) -> serde_json::Value {
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
pub(super) fn apply_revision(
    set: &StatefulSet,
    revision: &ControllerRevision,
) -> Result<StatefulSet> {
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
pub(super) fn new_pod(set: &StatefulSet, ordinal: i32, revision: &str) -> K8sPod {
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
pub(super) fn identity_matches(set: &StatefulSet, pod: &Pod) -> bool {
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
pub(super) fn storage_matches(set: &StatefulSet, pod: &Pod) -> bool {
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

pub(super) fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Upstream's `isCreated`: the apiserver gave it a phase.
pub(super) fn is_created(pod: &Pod) -> bool {
    !phase(pod).is_empty()
}

pub(super) fn is_finished(pod: &Pod) -> bool {
    matches!(phase(pod), "Failed" | "Succeeded")
}

pub(super) fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

pub(super) fn is_running_and_ready(pod: &Pod) -> bool {
    phase(pod) == "Running" && ready_since(pod).is_some()
}

pub(super) fn is_running_and_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    phase(pod) == "Running" && is_pod_available(pod, min_ready_seconds, now)
}

/// Upstream's `isHealthy`.
pub(super) fn is_healthy(pod: &Pod) -> bool {
    is_running_and_ready(pod) && !is_terminating(pod)
}

pub(super) fn revision_of(pod: &Pod) -> &str {
    pod.labels()
        .get(CONTROLLER_REVISION_HASH_LABEL)
        .map(String::as_str)
        .unwrap_or("")
}

/// Upstream's `updateClaimOwnerRefForSetAndPod`: sets or removes the claim's
/// ownerReferences to the set and to the pod (`pod`: name, uid) as the retention policy
/// says. Whether anything changed.
pub(super) fn claim_owner_refs(
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
