//! ControllerRevisions: the template history DaemonSets and StatefulSets keep (upstream's
//! pkg/controller/history). A revision holds a snapshot of the owner's template as a
//! patch (`data`), a revision number, and the hash that names it
//! (`<owner>-<hash>`, also the `controller-revision-hash` label of the owner's pods).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use super::controller_utils::only_uid;
use super::controller_utils::{controller_of, controller_ref};
use super::deployment::rollout::safe_encode;

/// The label a revision and the pods made from it carry (upstream's
/// `ControllerRevisionHashLabel`).
pub const CONTROLLER_REVISION_HASH_LABEL: &str = "controller-revision-hash";

/// Upstream's `HashControllerRevision`: FNV-32 (not 32a) over the revision's data and,
/// when set, the decimal collision count; rendered with `SafeEncodeString`.
pub fn hash_revision(data: &serde_json::Value, collision_count: Option<i32>) -> String {
    let raw = serde_json::to_vec(data).unwrap_or_default();
    let mut h: u32 = 0x811c_9dc5;
    let mut write = |bytes: &[u8]| {
        for b in bytes {
            h = h.wrapping_mul(0x0100_0193);
            h ^= u32::from(*b);
        }
    };
    write(&raw);
    if let Some(c) = collision_count {
        write(c.to_string().as_bytes());
    }
    safe_encode(&h.to_string())
}

/// Upstream's `ControllerRevisionName`: `<prefix>-<hash>`, the prefix cut to 223
/// characters so the name stays a valid DNS subdomain.
pub fn revision_name(prefix: &str, hash: &str) -> String {
    let prefix = if prefix.len() > 223 {
        &prefix[..223]
    } else {
        prefix
    };
    format!("{prefix}-{hash}")
}

/// Upstream's `NewControllerRevision`: a revision of `parent` holding `data`, labelled
/// with the template's labels and its hash, controlled by `parent`.
pub fn new_revision<K: Resource<DynamicType = ()>>(
    parent: &K,
    template_labels: &BTreeMap<String, String>,
    data: serde_json::Value,
    revision: i64,
    collision_count: Option<i32>,
) -> ControllerRevision {
    let hash = hash_revision(&data, collision_count);
    let mut labels = template_labels.clone();
    labels.insert(CONTROLLER_REVISION_HASH_LABEL.into(), hash.clone());
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(revision_name(&parent.name_any(), &hash)),
            namespace: parent.namespace(),
            labels: Some(labels),
            owner_references: Some(vec![controller_ref(parent)]),
            ..ObjectMeta::default()
        },
        data: Some(RawExtension(data)),
        revision,
    }
}

/// The revisions `parent` controls, oldest first (upstream's `ListControllerRevisions`
/// filtered by controller, then `SortControllerRevisions`).
pub fn owned_revisions<K: Resource>(
    store: &Store<ControllerRevision>,
    parent: &K,
) -> Vec<Arc<ControllerRevision>> {
    let ns = parent.namespace();
    let uid = parent.uid().unwrap_or_default();
    let mut revs: Vec<Arc<ControllerRevision>> = store
        .state()
        .into_iter()
        .filter(|r| r.namespace() == ns && controller_of(r.as_ref()).is_some_and(|c| c.uid == uid))
        .collect();
    sort_revisions(&mut revs);
    revs
}

/// Upstream's `SortControllerRevisions`: by revision number, then creation time, then
/// name.
pub fn sort_revisions(revs: &mut [Arc<ControllerRevision>]) {
    revs.sort_by(|a, b| {
        a.revision
            .cmp(&b.revision)
            .then_with(|| {
                let t =
                    |r: &ControllerRevision| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
                t(a).cmp(&t(b))
            })
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
}

/// Upstream's `nextRevision`: one more than the newest, 1 for the first.
pub fn next_revision(revs: &[Arc<ControllerRevision>]) -> i64 {
    revs.iter().map(|r| r.revision).max().unwrap_or(0) + 1
}

/// Upstream's `EqualRevision`: the same hash label and the same data.
pub fn equal_revision(a: &ControllerRevision, b: &ControllerRevision) -> bool {
    let hash = |r: &ControllerRevision| {
        r.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(CONTROLLER_REVISION_HASH_LABEL).cloned())
    };
    hash(a) == hash(b) && a.data.as_ref().map(|d| &d.0) == b.data.as_ref().map(|d| &d.0)
}

/// Upstream's `FindEqualRevisions`, newest last.
pub fn equal_revisions(
    revs: &[Arc<ControllerRevision>],
    needle: &ControllerRevision,
) -> Vec<Arc<ControllerRevision>> {
    revs.iter()
        .filter(|r| equal_revision(r, needle))
        .cloned()
        .collect()
}

/// The Api for `parent`'s namespace.
fn api<K: Resource<Scope = NamespaceResourceScope>>(
    client: &Client,
    parent: &K,
) -> Api<ControllerRevision> {
    Api::namespaced(client.clone(), &parent.namespace().unwrap_or_default())
}

/// Upstream's `CreateControllerRevision`: creates `revision` (already named for
/// `*collision_count`); when a different revision holds that name, bumps the count and
/// tries the next name. An identical existing revision is returned as is.
pub async fn create_revision<K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>>(
    client: &Client,
    parent: &K,
    template_labels: &BTreeMap<String, String>,
    data: serde_json::Value,
    revision: i64,
    collision_count: &mut i32,
) -> Result<ControllerRevision, kube::Error> {
    let api = api(client, parent);
    loop {
        let candidate = new_revision(
            parent,
            template_labels,
            data.clone(),
            revision,
            Some(*collision_count),
        );
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

/// Upstream's `UpdateControllerRevision`: gives an existing revision a new number (a
/// rollback to an old template makes its revision the newest).
pub async fn renumber_revision<K: Resource<Scope = NamespaceResourceScope>>(
    client: &Client,
    parent: &K,
    revision: &ControllerRevision,
    number: i64,
) -> Result<ControllerRevision, kube::Error> {
    if revision.revision == number {
        return Ok(revision.clone());
    }
    api(client, parent)
        .patch(
            &revision.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"revision": number})),
        )
        .await
}

/// Deletes a revision (history beyond `revisionHistoryLimit`); already gone is fine.
pub async fn delete_revision<K: Resource<Scope = NamespaceResourceScope>>(
    client: &Client,
    parent: &K,
    revision: &ControllerRevision,
) -> Result<(), kube::Error> {
    let params = only_uid(revision.uid());
    match api(client, parent)
        .delete(&revision.name_any(), &params)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Revisions ordered for pruning: the oldest first, skipping those `keep` names.
pub fn prunable<'a>(
    revs: &'a [Arc<ControllerRevision>],
    keep: impl Fn(&ControllerRevision) -> bool + 'a,
    limit: usize,
) -> Vec<Arc<ControllerRevision>> {
    let candidates: Vec<Arc<ControllerRevision>> =
        revs.iter().filter(|r| !keep(r)).cloned().collect();
    let excess = candidates.len().saturating_sub(limit);
    let mut sorted = candidates;
    sorted.sort_by(|a, b| match a.revision.cmp(&b.revision) {
        Ordering::Equal => a.name_any().cmp(&b.name_any()),
        o => o,
    });
    sorted.truncate(excess);
    sorted
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSet;

    fn parent() -> StatefulSet {
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "default",
            "uid": "u-1"}}))
        .unwrap()
    }

    #[test]
    fn revisions_are_named_by_a_stable_hash_of_their_data() {
        let data = json!({"spec": {"template": {"$patch": "replace"}}});
        let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
        let a = new_revision(&parent(), &labels, data.clone(), 1, None);
        let b = new_revision(&parent(), &labels, data.clone(), 2, None);
        assert_eq!(a.name_any(), b.name_any());
        assert!(a.name_any().starts_with("web-"));
        assert!(equal_revision(&a, &b));
        assert_eq!(
            a.labels()[CONTROLLER_REVISION_HASH_LABEL],
            a.name_any().trim_start_matches("web-")
        );
        let c = new_revision(&parent(), &labels, data.clone(), 1, Some(1));
        assert_ne!(a.name_any(), c.name_any());
        let d = new_revision(&parent(), &labels, json!({"spec": {}}), 1, None);
        assert!(!equal_revision(&a, &d));
        assert_eq!(controller_of(&a).unwrap().uid, "u-1");
    }

    #[test]
    fn next_revision_and_pruning_follow_revision_numbers() {
        let labels = BTreeMap::new();
        let revs: Vec<Arc<ControllerRevision>> = (1..=4)
            .map(|n| Arc::new(new_revision(&parent(), &labels, json!({"n": n}), n, None)))
            .collect();
        assert_eq!(next_revision(&revs), 5);
        assert_eq!(next_revision(&[]), 1);
        // Keep the newest; two allowed in history: only revision 1 goes.
        let live = revs[3].name_any();
        let pruned = prunable(&revs, |r| r.name_any() == live, 2);
        assert_eq!(pruned.iter().map(|r| r.revision).collect::<Vec<_>>(), [1]);
    }
}
